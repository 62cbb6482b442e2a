"""The vhostmd command serving virtio channels: stopping with channels open."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from fake_qemu import FakeQemu
from support import config_xml, metric, start_vhostmd
from test_virtio import DEFAULT_UUID, async_test, virtio_xml, vm_metrics


@pytest.fixture
def channels():
    path = Path(tempfile.mkdtemp(prefix="vhostmd-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start(tmp_path: Path, channels: Path, extra: str = "", period: int = 1):
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(
        metric("HostName", "echo host-a") + metric("VmName", "echo NAME", context="vm"),
        period=period, transports=("virtio",), virtio=virtio_xml(channels, extra=extra),
    ))
    # Not -v: the daemon's stderr is read only at the end.
    return start_vhostmd("-c", "test:///default", "-f", str(conf))


@async_test
async def test_sigterm_with_channels_open(tmp_path, channels):
    qemu = await FakeQemu(channels, 1, "test").start()
    proc = start(tmp_path, channels)
    try:
        guest = await qemu.guest(timeout=20)
        assert ("VmName", "test", "1", DEFAULT_UUID) in vm_metrics(await guest.ask())
        guest.send(b"GET /metr")  # a request half-way
        await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert await guest.closed(timeout=10)
        _, log = await asyncio.get_running_loop().run_in_executor(None, proc.communicate, None, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    assert "virtio: 1 channel(s) closed" in log
    for noise in ("Traceback", "ERROR", "Exception ignored"):  # a clean stop is quiet
        assert noise not in log, log
