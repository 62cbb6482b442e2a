"""Debian's cloud kernel for the guests, and the modules its virtio devices need.

The cloud flavour is small and boots fast under TCG, but builds virtio,
virtio_pci, virtio_blk and virtio_console as modules, so the initramfs must
carry them. The .deb has no modules.dep (depmod runs at install time), so
the dependencies are read from each module's own .modinfo section.
"""

import lzma
import re
from dataclasses import dataclass
from pathlib import Path

from . import debian

META_PACKAGE = "linux-image-cloud-amd64"

# What the guest's devices need; their dependencies are added by modules_in_load_order.
WANTED_MODULES = ["virtio_pci", "virtio_blk", "virtio_console"]


@dataclass(frozen=True)
class Kernel:
    release: str
    vmlinuz: Path
    modules_dir: Path  # lib/modules/<release>


def cloud_kernel() -> Kernel:
    """The newest cloud kernel image package that the meta package points at, unpacked."""
    image_packages = [p for p in debian.depends_of(META_PACKAGE) if p.startswith("linux-image-")]
    if not image_packages:
        raise RuntimeError(f"{META_PACKAGE} depends on no linux-image package")
    root = debian.unpacked(image_packages[0])
    vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise RuntimeError(f"no vmlinuz in {image_packages[0]}")
    release = vmlinuz[0].name.removeprefix("vmlinuz-")
    for base in (root / "lib" / "modules", root / "usr" / "lib" / "modules"):
        if (base / release).is_dir():
            return Kernel(release, vmlinuz[0], base / release)
    raise RuntimeError(f"no modules directory for {release}")


def _module_name(path: Path) -> str:
    name = path.name.split(".ko")[0]
    return name.replace("-", "_")


def module_bytes(path: Path) -> bytes:
    """A module's ELF image; newer Debian kernels ship them xz-compressed."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        data = lzma.decompress(data)
    return data


def _depends(data: bytes) -> list[str]:
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    if not match or not match.group(1):
        return []
    return [d.decode().replace("-", "_") for d in match.group(1).split(b",")]


def modules_in_load_order(kernel: Kernel, wanted: list[str] = WANTED_MODULES) -> list[Path]:
    """The wanted modules and everything they depend on, dependencies first."""
    index = {_module_name(p): p for p in (kernel.modules_dir / "kernel").rglob("*.ko*")}
    builtin_file = kernel.modules_dir / "modules.builtin"
    builtin = set()
    if builtin_file.exists():
        builtin = {_module_name(Path(line)) for line in builtin_file.read_text().split()}

    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name in builtin:
            return
        if name not in index:
            raise RuntimeError(f"module {name} is neither built in nor shipped in {kernel.release}")
        for dep in _depends(module_bytes(index[name])):
            visit(dep)
        order.append(index[name])

    for name in wanted:
        visit(name)
    return order
