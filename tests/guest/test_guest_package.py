"""The guest package on its own: Python 3.6 compatible, installable, no host deps."""

import doctest
import glob
import importlib
import os
import shutil
import subprocess
import sys
import venv

import pytest

from guest_vectors import GUEST_DIR, reference
from guest_host import FakeHost, pty_port

PACKAGE = GUEST_DIR / "vhostmd_guest"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))


def run(argv, **kwargs):
    kwargs.setdefault("timeout", 120)
    return subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, **kwargs)


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module):
    mod = importlib.import_module("vhostmd_guest." + module)
    failures, _ = doctest.testmod(mod)
    assert failures == 0


def test_code_runs_on_python_3_6():
    """vermin finds nothing in the package that needs a Python newer than 3.6."""
    vermin = "import sys; from vermin.main import main; sys.exit(main())"
    result = run([sys.executable, "-c", vermin, "--no-config-file", "--target=3.6-",
                  "--violations", "--eval-annotations", "--no-tips", PACKAGE])
    assert b"No module named 'vermin'" not in result.stderr, "install vermin to run this test"
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def python36():
    candidates = [shutil.which("python3.6")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))
    for exe in filter(None, candidates):
        try:
            out = run([exe, "-c", "import sys; print(sys.version_info[:2])"], timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == b"(3, 6)":
            return exe
    pytest.skip("no Python 3.6 interpreter here")


def test_tool_on_a_real_python_3_6():
    exe = python36()
    env = dict(os.environ, PYTHONPATH=str(GUEST_DIR))
    disk = reference("c-vhostmd-10vms.disk")
    raw = run([exe, "-m", "vhostmd_guest", "--device", disk], env=env)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.startswith(b"<metrics>") and raw.stdout.endswith(b"</metrics>\n")
    as_json = run([exe, "-m", "vhostmd_guest", "--json", "--device", disk], env=env)
    assert as_json.returncode == 0, as_json.stderr
    with pty_port() as (host_fd, port):
        expected = reference("c-vhostmd-virtio-answer.txt").read_bytes()
        FakeHost(host_fd, expected, pieces=3)
        virtio = run([exe, "-m", "vhostmd_guest", "-i", "--port", port], env=env)
        assert virtio.returncode == 0, virtio.stderr
        assert virtio.stdout == expected


def test_installs_into_a_fresh_venv_without_libvirt(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(str(GUEST_DIR), str(source),
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    wheels = tmp_path / "wheels"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-index", "--no-build-isolation",
                 "--no-deps", "--wheel-dir", wheels, source])
    assert built.returncode == 0, built.stderr.decode()
    (wheel,) = wheels.glob("vhostmd_guest-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(str(env_dir), with_pip=True)
    bin_dir = env_dir / "bin"
    installed = run([bin_dir / "python", "-m", "pip", "install", "--no-index", wheel])
    assert installed.returncode == 0, installed.stderr.decode()

    check = run([bin_dir / "python", "-c",
                 "import importlib.util, sys, vhostmd_guest\n"
                 "assert importlib.util.find_spec('libvirt') is None\n"
                 "assert importlib.util.find_spec('lxml') is None\n"
                 "print(vhostmd_guest.__file__)"], cwd=str(tmp_path))
    assert check.returncode == 0, check.stderr.decode()
    assert str(env_dir) in check.stdout.decode()

    disk = reference("c-vhostmd-10vms.disk")
    dumped = run([bin_dir / "vm-dump-metrics", "--device", disk], cwd=str(tmp_path))
    assert dumped.returncode == 0, dumped.stderr.decode()
    assert dumped.stdout.endswith(b"</metrics>\n")
