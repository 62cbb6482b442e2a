"""The package's layout keeps its promises: dependencies run one way, and what installs is whole."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vhostmd"


def test_parsing_a_configuration_does_not_need_libvirt():
    # A fresh interpreter: this test process has libvirt loaded already.
    code = ("import sys, vhostmd.config; "
            "print(sorted(m for m in sys.modules if m == 'libvirt' or m.startswith('libvirtmod')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def _imports_below_module_level(path: Path) -> list[str]:
    """Imports inside functions or classes (hidden import circles), except under TYPE_CHECKING."""
    found = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)) and nested:
                found.append(f"{path.relative_to(ROOT)}:{child.lineno}")
            visit(child, nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                      ast.ClassDef)))

    visit(ast.parse(path.read_text()), False)
    return found


def test_builtins_import_one_way():
    # host.py and vm.py take what they need from spec.py; the package face
    # imports them, never the other way round.
    modules = sorted((PACKAGE / "collect" / "builtins").glob("*.py"))
    assert [p for m in modules for p in _imports_below_module_level(m)] == []
    for name in ("host.py", "vm.py", "spec.py"):
        tree = ast.parse((PACKAGE / "collect" / "builtins" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module is not None, f"{name} imports the builtins package itself"


def test_every_package_is_in_the_distribution():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in PACKAGE.rglob("__init__.py")
    }
    assert on_disk <= listed, f"missing from pyproject.toml: {sorted(on_disk - listed)}"
