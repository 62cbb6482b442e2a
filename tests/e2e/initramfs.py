"""The guests' initramfs: a cached base image plus a small image of this checkout's guest code.

The base (busybox, virtio modules, Python with a compiled stdlib) depends
only on Debian's packages and on the code below, so it is built once and
kept in the cache. The overlay (/init, the guest package) is rebuilt on
every run from the working tree. The kernel unpacks both, one after the
other, as it does for any concatenation of compressed cpio archives.
"""

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import guest_install, guest_python, kernel as kernel_mod
from .cache import subdir
from .cpio import CpioWriter

HERE = Path(__file__).resolve().parent
BUSYBOX = Path("/bin/busybox")
SITE_PACKAGES = "usr/lib/python3/dist-packages"
MODULES_LIST = "etc/e2e/modules"


def _compile(python: guest_python.GuestPython, tree: Path, strip: Path) -> None:
    """Byte-compile a tree with the guest's own interpreter, so its magic number fits.

    unchecked-hash pycs are used without looking at the sources' mtimes,
    which a cpio round trip need not keep.
    """
    subprocess.run(
        [str(python.interpreter), "-m", "compileall", "-q", "-j0",
         "--invalidation-mode", "unchecked-hash",
         "-s", str(strip), "-p", "/", str(tree)],
        check=True, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
    )


def _add_tree(archive: CpioWriter, tree: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel = Path(dirpath).relative_to(tree)
        if str(rel) != ".":
            archive.directory(str(rel))
        for name in sorted(filenames):
            src = Path(dirpath) / name
            archive.file(str(rel / name), src.read_bytes(), src.stat().st_mode & 0o777)


def _add_host_file(archive: CpioWriter, path: Path, mode: int = 0o755) -> None:
    """A host file under the same path; symlinks are followed so the image holds the bytes."""
    archive.file(str(path), path.resolve().read_bytes(), mode)


def _base_key(kern: kernel_mod.Kernel, python: guest_python.GuestPython) -> str:
    digest = hashlib.sha256()
    digest.update(kern.release.encode())
    digest.update(python.version.encode())
    digest.update(hashlib.sha256(BUSYBOX.read_bytes()).digest())
    for name in ("cpio.py", "initramfs.py", "guest_python.py", "kernel.py"):
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()[:16]


def base_image(kern: kernel_mod.Kernel, python: guest_python.GuestPython) -> Path:
    """Busybox, the virtio modules and Python, built once per set of inputs."""
    out = subdir("initramfs") / f"base-{_base_key(kern, python)}.cpio.gz"
    if out.exists():
        return out
    buf = io.BytesIO()
    archive = CpioWriter(buf)
    for d in ("dev", "proc", "sys", "tmp", "run", "bin", "etc/e2e"):
        archive.directory(d)
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)

    modules = kernel_mod.modules_in_load_order(kern)
    paths = []
    for module in modules:
        target = f"lib/modules/{module.name.split('.ko')[0]}.ko"
        archive.file(target, kernel_mod.module_bytes(module), 0o644)
        paths.append("/" + target)
    archive.file(MODULES_LIST, ("\n".join(paths) + "\n").encode())

    libs = guest_python.shared_libraries(python.interpreter)
    for lib in libs:
        _add_host_file(archive, lib)
    archive.file(f"usr/bin/python{guest_python.VERSION}", python.interpreter.read_bytes(), 0o755)
    archive.symlink("usr/bin/python3", f"python{guest_python.VERSION}")

    stdlib_rel = f"usr/lib/python{guest_python.VERSION}"
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        stdlib = staging / stdlib_rel
        for rel in guest_python.stdlib_files(python):
            (stdlib / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(python.stdlib / rel, stdlib / rel)
        dynload = stdlib / "lib-dynload"
        dynload.mkdir()
        for so in guest_python.extension_modules(python, {lib.name for lib in libs}):
            shutil.copy(so, dynload / so.name)
        _compile(python, stdlib, staging)
        _add_tree(archive, staging)
    archive.close()

    partial = out.with_suffix(".partial")
    partial.write_bytes(gzip.compress(buf.getvalue(), compresslevel=6, mtime=0))
    partial.rename(out)
    return out


def overlay_image(python: guest_python.GuestPython) -> bytes:
    """/init, the trace hook and this checkout's guest package, installed by pip."""
    buf = io.BytesIO()
    archive = CpioWriter(buf)
    archive.file("init", (HERE / "guest_init.sh").read_bytes(), 0o755)

    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        site = staging / SITE_PACKAGES
        site.mkdir(parents=True)
        shutil.copyfile(HERE / "guest_sitecustomize.py", site / "sitecustomize.py")
        guest_install.install_into(site, staging / "usr" / "bin", f"/usr/bin/python{guest_python.VERSION}")
        _compile(python, staging / SITE_PACKAGES, staging)
        _add_tree(archive, staging)
    archive.close()
    return gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)


def build(kern: kernel_mod.Kernel, python: guest_python.GuestPython, dest: Path) -> Path:
    dest.write_bytes(base_image(kern, python).read_bytes() + overlay_image(python))
    return dest
