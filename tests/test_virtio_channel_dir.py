"""A virtio channel directory that does not exist yet, or cannot be listed.

On a fresh host libvirt makes ``/var/lib/libvirt/qemu/channel/target`` only
when the first VM with a channel starts. Until then the daemon has no
channels, which is no failure: the update is published (on the disk),
status says why there are no channels, and the channels are served as soon
as the directory and QEMU's sockets appear. The test plays QEMU.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fake_qemu import FakeQemu
from support import ROOT, config_xml, disk_document, metric, start_vhostmd, stop, wait_for
from test_virtio import (
    DEFAULT_UUID, TEST_UUID, async_test, one_vm, parse, running, until, virtio, virtio_xml, vm_metrics,
)

MISSING_NOTE = "does not exist yet; no channels"


@pytest.fixture
def base():
    # Unix socket paths are short (108 bytes): tmp_path is too deep.
    path = Path(tempfile.mkdtemp(prefix="vhostmd-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def vhostmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vhostmd", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def start(tmp_path: Path, channels: Path) -> tuple[subprocess.Popen, Path]:
    """The daemon with the shipped transports (vbd and virtio); its state file."""
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(
        metric("HostName", "echo host-a") + metric("VmName", "echo NAME", context="vm"),
        disk=tmp_path / "vhostmd0", period=1, transports=("vbd", "virtio"),
        virtio=virtio_xml(channels),
    ))
    state = tmp_path / "status.json"
    proc = start_vhostmd("-c", "test:///default", "-f", str(conf), "--status-file", str(state))
    return proc, state


def updates(state: Path) -> int:
    try:
        return json.loads(state.read_text())["updates"]
    except (OSError, ValueError, KeyError):
        return 0


@async_test
async def test_a_missing_channel_directory_is_no_failure_and_is_served_once_made(tmp_path, base):
    channels = base / "channel" / "target"  # neither level exists, as on a fresh host
    proc, state = start(tmp_path, channels)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, lambda: wait_for(lambda: updates(state) >= 2))
        assert "VmName" in disk_document(tmp_path / "vhostmd0")

        shown = vhostmd("status", "--status-file", str(state))
        assert shown.returncode == 0, shown.stdout
        assert "document" in shown.stdout and ", published" in shown.stdout
        assert "NOT published" not in shown.stdout
        assert f"  note: channel directory {channels} {MISSING_NOTE}" in shown.stdout
        checked = vhostmd("check", "--status-file", str(state))
        assert checked.returncode == 0, checked.stdout
        assert checked.stdout.startswith("VHOSTMD OK - "), checked.stdout
        last = json.loads(state.read_text())
        assert last["last_update"]["published"] is True and last["publish_failures"] == 0

        # libvirt makes the directory, then QEMU its socket: served without a restart.
        qemu = await FakeQemu(channels, 1, "test").start()
        guest = await qemu.guest(timeout=20)
        assert ("VmName", "test", "1", DEFAULT_UUID) in vm_metrics(await guest.ask())
        seen = updates(state)
        await loop.run_in_executor(None, lambda: wait_for(lambda: updates(state) > seen + 1))
        shown = vhostmd("status", "--status-file", str(state))
        assert MISSING_NOTE not in shown.stdout
        assert "virtio: 1 channels connected" in shown.stdout
    finally:
        log = await loop.run_in_executor(None, stop, proc)
    assert proc.returncode == 0, log
    missing = [line for line in log.splitlines() if MISSING_NOTE in line]
    assert len(missing) == 1, log
    assert "WARNING" in missing[0] and "libvirt creates it" in missing[0]
    assert "<transport>virtio</transport>" in missing[0]
    assert "ERROR" not in log and "not published" not in log.lower(), log


def test_a_channel_path_that_cannot_be_listed_is_one_transport_problem(tmp_path, base):
    channels = base / "target"
    channels.write_text("not a directory\n")
    proc, state = start(tmp_path, channels)
    try:
        wait_for(lambda: updates(state) >= 3)
        shown = vhostmd("status", "--status-file", str(state))
        checked = vhostmd("check", "--status-file", str(state))
    finally:
        log = stop(proc)
    assert proc.returncode == 0, log
    problem = f"cannot list channel directory {channels}: Not a directory"
    # The disk was written: published; the transport's problem is its error line.
    assert ", published" in shown.stdout and "NOT published" not in shown.stdout
    assert f"  error: {problem}" in shown.stdout
    assert shown.stdout.count(problem) == 1, shown.stdout
    # Said once, with the transport's name once: WARNING, not CRITICAL.
    assert checked.returncode == 1, checked.stdout
    assert checked.stdout.startswith(f"VHOSTMD WARNING - virtio: {problem}"), checked.stdout
    assert checked.stdout.count("cannot list") == 1 and "virtio: virtio:" not in checked.stdout
    lines = [line for line in log.splitlines() if "cannot list" in line]
    assert len(lines) == 1 and "WARNING" in lines[0] and "virtio: virtio:" not in lines[0], log


@async_test
async def test_the_directory_is_watched_for_until_it_appears(tmp_path, monkeypatch, caplog):
    # No update (period 60) and no retry (back-off 60 s) after the first:
    # only the watch on the nearest existing parent can find the channel.
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(virtio, "BACKOFF_INITIAL", 60.0)
    monkeypatch.setattr(virtio, "BACKOFF_MAX", 60.0)
    base = Path(tempfile.mkdtemp(prefix="vhostmd-test-"))
    channels = base / "a" / "b"
    try:
        async with running(tmp_path, one_vm(tmp_path), period=60, channels=channels) as d:
            await until(lambda: d.daemon.last_report is not None)
            assert d.daemon.last_report.published
            status = d.server.status()
            assert status.errors == ()
            assert status.notes == (f"channel directory {channels} {MISSING_NOTE}",)
            vm = d.server._vms[TEST_UUID]
            await until(lambda: vm.retry_at > 0)  # looked, found no directory
            (base / "a").mkdir()  # one level at a time, as mkdir -p does
            await asyncio.sleep(0.2)
            qemu = await FakeQemu(channels, 1, "test").start()
            guest = await qemu.guest(timeout=20)
            assert parse(await guest.ask())
            assert d.server.status().notes == ()

            # Removed (libvirt reinstalled?) and made again: found again.
            await qemu.stop()
            await until(lambda: vm.channel is None)
            shutil.rmtree(channels)
            await until(lambda: any(f"{channels} {MISSING_NOTE}" in n for n in d.server.status().notes))
            # Only a watch can find it now (no hold after the early close either).
            vm.hold_until, vm.retry_at = 0.0, d.server.clock() + 60
            qemu = await FakeQemu(channels, 1, "test").start()
            guest = await qemu.guest(timeout=20)
            assert parse(await guest.ask())
    finally:
        shutil.rmtree(base, ignore_errors=True)
    missing = [r for r in caplog.records if MISSING_NOTE in r.getMessage()]
    assert [r.levelno for r in missing] == [logging.WARNING, logging.WARNING]  # once each time
    assert sum("exists now" in r.getMessage() for r in caplog.records) == 2


@async_test
async def test_without_inotify_an_update_notices_the_directory(tmp_path, monkeypatch):
    def no_inotify():
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(virtio, "Inotify", no_inotify)
    base = Path(tempfile.mkdtemp(prefix="vhostmd-test-"))
    channels = base / "target"
    try:
        async with running(tmp_path, one_vm(tmp_path), period=1, channels=channels) as d:
            await until(lambda: MISSING_NOTE in " ".join(d.server.status().notes))
            qemu = await FakeQemu(channels, 1, "test").start()
            guest = await qemu.guest(timeout=20)
            assert parse(await guest.ask())
            assert d.server.status().notes == ()
    finally:
        shutil.rmtree(base, ignore_errors=True)
