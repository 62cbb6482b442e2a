"""Debian's python3.11 for the guest: the interpreter, its shared libraries, a trimmed stdlib.

The host's own /usr/bin/python3.11 is used when Debian's packages are
installed; otherwise the three packages that make it up are downloaded
and unpacked into the cache. Either way it is Debian's build, so it runs
under the guest's glibc, which is copied from the host along with it.
"""

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import debian

VERSION = "3.11"
PACKAGES = [f"python{VERSION}-minimal", f"libpython{VERSION}-minimal", f"libpython{VERSION}-stdlib"]

# Parts of the stdlib no guest tool needs; leaving them out keeps the image
# small, and a smaller image unpacks faster under TCG.
STDLIB_EXCLUDED = {
    "__pycache__", "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "ensurepip",
    "lib2to3", "pydoc_data", "pydoc.py", "distutils", "venv", "sqlite3", "dbm", "curses",
    "unittest", "doctest.py", "multiprocessing", "xmlrpc", "wsgiref", "__phello__",
    "config-3.11-x86_64-linux-gnu", "lib-dynload", "EXTERNALLY-MANAGED",
    # Debian's points at /etc/python3.11, which the guest does not have.
    "sitecustomize.py",
    "_pydecimal.py", "mailbox.py", "tarfile.py", "pdb.py", "imaplib.py", "smtplib.py",
    "ftplib.py", "nntplib.py", "telnetlib.py", "pickletools.py",
}


@dataclass(frozen=True)
class GuestPython:
    root: Path          # "/" or an unpacked tree holding usr/bin/python3.11
    version: str        # package version, for cache keys

    @property
    def interpreter(self) -> Path:
        return self.root / "usr" / "bin" / f"python{VERSION}"

    @property
    def stdlib(self) -> Path:
        return self.root / "usr" / "lib" / f"python{VERSION}"


def find() -> GuestPython:
    if all(debian.installed(p) for p in PACKAGES):
        version = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", PACKAGES[0]],
            capture_output=True, text=True, check=True,
        ).stdout
        return GuestPython(Path("/"), version)
    roots = [debian.unpacked(p) for p in PACKAGES]
    version = roots[0].name.split("_", 1)[1]
    merged = roots[0].parent / f"python{VERSION}-merged_{version}"
    if not (merged / ".merged").exists():
        # One tree, laid out like an installed system, so the interpreter
        # finds its stdlib relative to itself.
        subprocess.run(["rm", "-rf", str(merged)], check=True)
        merged.mkdir()
        for r in roots:
            subprocess.run(["cp", "-a", f"{r}/usr", str(merged)], check=True)
        (merged / ".merged").touch()
    return GuestPython(merged, version)


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries ldd says a binary loads, dynamic loader included (absolute host paths)."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ldd {binary} failed: {result.stderr}")
    libs = []
    for line in result.stdout.splitlines():
        if "not found" in line:
            raise RuntimeError(f"{binary}: {line.strip()}")
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            libs.append(Path(match.group(1)))
    return libs


def stdlib_files(python: GuestPython) -> list[Path]:
    """Source files of the trimmed stdlib, relative to the stdlib directory."""
    found = []
    for dirpath, dirnames, filenames in os.walk(python.stdlib):
        rel = Path(dirpath).relative_to(python.stdlib)
        if rel == Path("."):
            dirnames[:] = [d for d in dirnames if d not in STDLIB_EXCLUDED]
            filenames = [f for f in filenames if f not in STDLIB_EXCLUDED]
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "test", "tests")]
        found.extend(rel / f for f in filenames if f.endswith(".py"))
    return found


def extension_modules(python: GuestPython, allowed_libs: set[str]) -> list[Path]:
    """lib-dynload modules that need no library beyond the interpreter's own.

    That rule drops ssl, sqlite, curses, readline and friends, which would
    drag in their libraries, and keeps mmap, _json, _asyncio, termios and the like.
    """
    keep = []
    for so in sorted((python.stdlib / "lib-dynload").glob("*.so")):
        if so.name.startswith(("_test", "xx", "_ctypes_test")):
            continue
        names = {lib.name for lib in shared_libraries(so)} - {"linux-vdso.so.1"}
        if names <= allowed_libs:
            keep.append(so)
    return keep
