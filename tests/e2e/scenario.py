"""One run of the whole arrangement: libvirtd, vhostmd, two guests; the guests' console reports.

Everything started here is stopped by pid in run()'s finally block,
whether the guests did what they should or not.
"""

import os
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import cache, console, daemon, domains, guest_python, initramfs, kernel, libvirtd

GUEST_NAMES = ("vhostmd-e2e-a", "vhostmd-e2e-b")
# Two TCG guests side by side on two cores boot in about ten seconds; the
# rest is room for a slow machine and for the guests' own retries.
BOOT_TIMEOUT = 150


@dataclass
class GuestResult:
    name: str
    uuid: str
    id: int
    report: console.ConsoleReport


@dataclass
class Outcome:
    token: str
    hostname: str
    channel_target: Path
    channel_sockets: list[Path] = field(default_factory=list)
    guests: list[GuestResult] = field(default_factory=list)
    still_running: list[str] = field(default_factory=list)
    daemon_log: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def _readable_copy(src: Path, dest: Path) -> Path:
    # QEMU runs as the unprivileged account and cannot read the cache
    # under root's home; a copy in the run's own directory it can.
    shutil.copyfile(src, dest)
    dest.chmod(0o644)
    return dest


def run(keep: Path) -> Outcome:
    """Boot the guests and collect what they printed; logs are copied into keep."""
    clock = time.monotonic()
    timings = {}

    with cache.locked():
        kern = kernel.cloud_kernel()
        python = guest_python.find()
    account = libvirtd.unprivileged_account()
    timings["assets"] = time.monotonic() - clock

    # Short path under /tmp: the channel sockets' paths must fit in 108 bytes.
    top = Path(tempfile.mkdtemp(prefix="vme2e-", dir="/tmp"))
    virt = libvirtd.SessionLibvirtd(top, account)
    token = secrets.token_hex(8)
    config = top / "vhostmd.conf"
    disk = top / "disk" / "vhostmd0"
    vhostmd = daemon.Daemon(config, virt.uri, top / "vhostmd.log", top / "vhostmd.pid")
    outcome = Outcome(token=token, hostname=socket.gethostname(), channel_target=virt.channel_target)
    guests = [domains.Guest(name, top / "con" / f"{name}.log") for name in GUEST_NAMES]
    try:
        top.chmod(0o755)
        for d in ("img", "con", "disk"):
            (top / d).mkdir(mode=0o755)
        if os.geteuid() == 0:
            # QEMU, as the account, writes the console logs.
            os.chown(top / "con", account.uid, account.gid)

        step = time.monotonic()
        with cache.locked():
            files = domains.GuestFiles(
                kernel=_readable_copy(kern.vmlinuz, top / "img" / "vmlinuz"),
                initrd=initramfs.build(kern, python, top / "img" / "initrd.img"),
                metrics_disk=disk,
            )
        files.initrd.chmod(0o644)
        timings["initramfs"] = time.monotonic() - step

        config.write_text(daemon.config_xml(disk, virt.channel_target, token))

        step = time.monotonic()
        virt.start()
        timings["libvirtd"] = time.monotonic() - step

        step = time.monotonic()
        vhostmd.start()
        vhostmd.wait_for_disk(disk)
        timings["first update"] = time.monotonic() - step

        step = time.monotonic()
        conn = virt.connect()
        for guest in guests:
            domains.define_and_start(conn, guest, files)
        timings["domains started"] = time.monotonic() - step
        outcome.channel_sockets = sorted(virt.channel_target.glob("*/*"))
        outcome.still_running = domains.wait_until_off(guests, BOOT_TIMEOUT)
        timings["guests"] = time.monotonic() - step
        conn.close()
    finally:
        vhostmd.stop()
        virt.stop()
        outcome.daemon_log = vhostmd.log_text()
        for log in [vhostmd.log, virt.log, config, *(g.console_log for g in guests)]:
            if log.exists():
                shutil.copy(log, keep / log.name)
        shutil.rmtree(top, ignore_errors=True)

    for guest in guests:
        kept = keep / guest.console_log.name
        raw = kept.read_bytes() if kept.exists() else b""
        outcome.guests.append(GuestResult(guest.name, guest.uuid, guest.id, console.parse(raw)))
    timings["total"] = time.monotonic() - clock
    outcome.timings = timings
    return outcome
