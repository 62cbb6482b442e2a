"""This checkout's guest/ distribution, installed by pip as it would be in a real guest.

pip builds from a copy, because setuptools writes build/ and *.egg-info
into the tree it builds. The result is cached by the content of guest/,
so pip runs again only when the guest code changed.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .cache import subdir

REPO = Path(__file__).resolve().parent.parent.parent
SOURCE = REPO / "guest"

_IGNORED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "build", "dist", "*.egg-info", ".hypothesis", ".pytest_cache")


def _content_key() -> str:
    """A hash of the files that would be copied for the build, names and contents."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(SOURCE):
        ignored = _IGNORED(dirpath, dirnames + filenames)
        dirnames[:] = sorted(d for d in dirnames if d not in ignored)
        for name in sorted(f for f in filenames if f not in ignored):
            path = Path(dirpath) / name
            digest.update(str(path.relative_to(SOURCE)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _pip_install(source: Path, target: Path) -> None:
    base = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-compile", "--target", str(target)]
    # Offline with the build tools this environment already has; failing
    # that (no setuptools here), let pip fetch them into an isolated build.
    result = subprocess.run(base + ["--no-index", "--no-build-isolation", str(source)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        result = subprocess.run(base + [str(source)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pip could not install guest/:\n{result.stdout}{result.stderr}")


def installed_tree() -> Path:
    """A directory laid out like pip --target leaves it: packages, *.dist-info, bin/."""
    out = subdir("guest-install") / _content_key()
    if (out / ".done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "guest"
        shutil.copytree(SOURCE, copy, ignore=_IGNORED)
        _pip_install(copy, out)
    (out / ".done").touch()
    return out


def install_into(site_packages: Path, bin_dir: Path, interpreter: str) -> None:
    """Copy the installed tree into an image's site-packages; console scripts into bin_dir."""
    tree = installed_tree()
    for entry in tree.iterdir():
        if entry.name in ("bin", ".done"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, site_packages / entry.name, ignore=_IGNORED)
        else:
            shutil.copy(entry, site_packages / entry.name)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for script in sorted((tree / "bin").glob("*")):
        # pip wrote this interpreter's path; the guest has its own.
        body = script.read_bytes().split(b"\n", 1)[1]
        dest = bin_dir / script.name
        dest.write_bytes(f"#!{interpreter}\n".encode() + body)
        os.chmod(dest, 0o755)
