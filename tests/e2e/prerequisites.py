"""What the host must have before a guest can boot, installed where it is missing."""

import platform
import shutil
import subprocess

from . import debian

HOST_PACKAGES = [
    "qemu-system-x86",
    "busybox-static",
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    # useradd, for the account libvirtd and QEMU run as.
    "passwd",
]


def ensure_host() -> None:
    """Install the host packages, or raise debian.Unavailable saying why QEMU cannot run here."""
    if platform.system() != "Linux":
        raise debian.Unavailable(f"QEMU guests need Linux, this is {platform.system()}")
    if platform.machine() != "x86_64":
        # The guest runs Debian's amd64 kernel and this host's amd64 glibc.
        raise debian.Unavailable(f"the guest image is built for x86_64, this host is {platform.machine()}")
    debian.ensure_installed(HOST_PACKAGES)
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise debian.Unavailable("qemu-system-x86_64 is not on PATH")
    result = subprocess.run([qemu, "-version"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise debian.Unavailable(f"qemu-system-x86_64 does not run: {result.stderr.strip()}")
