"""The vhostmd command serving virtio channels: stopping with channels open."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from fake_qemu import FakeQemu
from support import config_xml, metric, start_vhostmd, stop
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


# Run the daemon's command line with an audit hook that records, in the file
# named by the first argument, every way Python has to start a process.
_AUDITED = """
import runpy, sys
log = open(sys.argv.pop(1), "a", buffering=1)
STARTS = ("subprocess.Popen", "os.posix_spawn", "os.fork", "os.forkpty", "os.exec",
          "os.spawn", "os.system", "pty.spawn")
def hook(event, args):
    if event.startswith(STARTS):
        log.write(f"{event} {args!r}\\n")
sys.addaudithook(hook)
sys.argv[0] = "vhostmd"
runpy.run_module("vhostmd", run_name="__main__", alter_sys=True)
"""


def test_daemon_with_built_ins_and_virtio_starts_no_process(tmp_path, channels):
    import re
    import subprocess
    import sys

    from support import ROOT, daemon_env, disk_document, wait_for

    # The shipped configuration (built-ins only), its disk and channels moved here.
    conf = tmp_path / "vhostmd.conf"
    text = (ROOT / "conf" / "vhostmd.conf").read_text()
    text = text.replace("/dev/shm/vhostmd0", str(tmp_path / "vhostmd0"))
    text = re.sub(r"<channel_path>[^<]*</channel_path>", f"<channel_path>{channels}</channel_path>", text)
    conf.write_text(text.replace("<update_period>5</update_period>", "<update_period>1</update_period>"))
    starts = tmp_path / "starts.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", _AUDITED, str(starts), "-d", "-c", "test:///default",
         "-f", str(conf), "-p", str(tmp_path / "vhostmd.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=daemon_env(),
    )
    def document() -> str:
        try:
            return disk_document(tmp_path / "vhostmd0")
        except (OSError, AssertionError):  # not there yet, or caught mid-write
            return ""

    try:
        first = wait_for(lambda: "TotalCPUTime" in document() and document())
        # A later update too, so that anything done lazily on the first has happened.
        wait_for(lambda: document() not in ("", first))
    finally:
        log = stop(proc)
    assert proc.returncode == 0, log
    assert starts.read_text() == "", starts.read_text()
