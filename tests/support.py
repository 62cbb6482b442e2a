"""Test helpers: configurations, libvirt test-driver nodes, an independent disk reader."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

ROOT = Path(__file__).resolve().parent.parent


def config_xml(
    metrics: str,
    *,
    disk: Path | str | None = None,
    size: str = '<size unit="k">64</size>',
    period: int = 1,
    transports: tuple[str, ...] = ("vbd",),
    extra_globals: str = "",
    virtio: str = "",
    path: str = "/usr/bin:/bin",
) -> str:
    """A configuration document in the C vhostmd's format."""
    disk_xml = (
        f"<disk><name>host-metrics-disk</name><path>{escape(str(disk))}</path>{size}</disk>"
        if disk is not None else ""
    )
    transport_xml = "".join(f"<transport>{t}</transport>" for t in transports)
    return (
        '<?xml version="1.0" ?>\n'
        '<!DOCTYPE vhostmd SYSTEM "vhostmd.dtd">\n'
        "<vhostmd>\n"
        "  <globals>\n"
        f"    {disk_xml}\n"
        f"    {virtio}\n"
        f"    <update_period>{period}</update_period>\n"
        f"    <path>{path}</path>\n"
        f"    {transport_xml}\n"
        f"    {extra_globals}\n"
        "  </globals>\n"
        "  <metrics>\n"
        f"{metrics}\n"
        "  </metrics>\n"
        "</vhostmd>\n"
    )


def metric(name: str, action: str, type_: str = "string", context: str = "host", attrs: str = "") -> str:
    """One <metric> element with a shell action (escaped as the file needs)."""
    return (
        f'    <metric type="{type_}" context="{context}"{attrs}>'
        f"<name>{escape(name)}</name><action>{escape(action)}</action></metric>"
    )


@dataclass
class Vm:
    name: str
    uuid: str
    memory_kib: int = 1048576
    vcpus: int = 2


def write_node(path: Path, names: list[str]) -> list[Vm]:
    """A libvirt test-driver node file whose running domains get ids 1..N in order."""
    vms = [Vm(name, str(uuidlib.uuid5(uuidlib.NAMESPACE_OID, name))) for name in names]
    body = "".join(
        "<domain type='test'>"
        f"<name>{escape(vm.name)}</name><uuid>{vm.uuid}</uuid>"
        f"<memory>{vm.memory_kib}</memory><vcpu>{vm.vcpus}</vcpu>"
        "<os><type>hvm</type></os></domain>\n"
        for vm in vms
    )
    path.write_text(f"<node>\n{body}</node>\n")
    return vms


@dataclass
class Disk:
    signature: bytes
    busy: int
    sum: int
    length: int
    content: bytes
    size: int


def read_disk(path: Path) -> Disk:
    """Parse a metrics disk per the spec, with no help from the daemon's code."""
    data = Path(path).read_bytes()
    signature = data[:4]
    busy, checksum, length = struct.unpack(">III", data[4:16])
    return Disk(signature, busy, checksum, length, data[16:16 + length], len(data))


def signed_sum(content: bytes) -> int:
    """The spec's checksum: bytes as signed chars, summed into a wrapping uint32."""
    total = 0
    for byte in content:
        total += byte - 256 if byte >= 0x80 else byte
    return total % 2**32


def daemon_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def vhostmd(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run the daemon's command line to completion."""
    return subprocess.run(
        [sys.executable, "-m", "vhostmd", *args],
        capture_output=True, text=True, timeout=timeout, env=daemon_env(), **kwargs,
    )


def start_vhostmd(*args: str, **kwargs) -> subprocess.Popen:
    """Start the daemon in the foreground; stderr is a pipe of text lines.

    Without -p (--status-file) a pid file (state file) in a fresh temporary
    directory is used, so that tests run as root never touch
    /var/run/vhostmd.pid or /run/vhostmd.
    """
    private = None
    if "-p" not in args:
        private = tempfile.mkdtemp(prefix="vhostmd-test-")
        args = (*args, "-p", os.path.join(private, "vhostmd.pid"))
    if "--status-file" not in args:
        private = private or tempfile.mkdtemp(prefix="vhostmd-test-")
        args = (*args, "--status-file", os.path.join(private, "status.json"))
    return subprocess.Popen(
        [sys.executable, "-m", "vhostmd", "-d", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=daemon_env(), **kwargs,
    )


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    """Poll *predicate* until it returns a true value; fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> str:
    """Signal the daemon, wait for it, and return what it logged."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"daemon did not stop within {timeout} s:\n{err}")
    return err


def disk_document(path: Path, timeout: float = 5) -> str:
    """The document on a disk, once one has been published (header checked).

    Like a guest, it reads again while the daemon is writing (busy set):
    a running daemon may be half-way through the next update.
    """
    deadline = time.monotonic() + timeout
    disk = read_disk(path)
    while disk.busy and time.monotonic() < deadline:
        time.sleep(0.01)
        disk = read_disk(path)
    assert disk.signature == b"mvbd"
    assert disk.busy == 0
    assert disk.sum == signed_sum(disk.content)
    return disk.content.decode()


def process_alive(pid: int) -> bool:
    """True while *pid* runs (a zombie awaiting its reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "zombie" not in state


def systemd_analyze() -> str:
    """The systemd-analyze command, installing Debian's systemd when missing (else skip)."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    subprocess.run([*apt, "update", "-q"], capture_output=True, env=env)
    install = subprocess.run([*apt, "install", "-y", "-q", "systemd"], capture_output=True, text=True, env=env)
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.skip(f"systemd-analyze missing and systemd cannot be installed: {install.stderr[-300:]}")
    return found
