"""systemd's watchdog: WATCHDOG=1 while the update loop makes progress, none while it is stuck.

A datagram socket stands in for systemd's notification socket; the daemon is
the real one, made stuck in two real ways: an update waiting for a slow
action (a long per-metric timeout), and an event loop blocked writing its log
to a full pipe (as when the journal stops reading).
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support import ROOT, config_xml, daemon_env, metric, wait_for

URI = "test:///default"
#: WatchdogSec= of these tests: pings due every 2 s, sent every 1 s; an
#: update running 2 s counts as stuck.
WATCHDOG_USEC = 4_000_000
F_SETPIPE_SZ = 1031


class NotifySocket:
    """systemd's side: every datagram, with the time it arrived."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, dict]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.received.append(
                (time.monotonic(), dict(line.split("=", 1) for line in data.split("\n") if line)))

    def pings(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [t for t, msg in list(self.received) if msg.get("WATCHDOG") == "1" and since <= t <= until]

    def ready_at(self) -> float | None:
        return next((t for t, msg in list(self.received) if msg.get("READY") == "1"), None)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def start(tmp_path: Path, notify: NotifySocket, metrics: str, stderr, watchdog_pid: str | None = None,
          verbose: bool = False, size: str = '<size unit="k">64</size>') -> subprocess.Popen:
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(metrics, disk=tmp_path / "vhostmd0", size=size))
    env = daemon_env()
    env.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(WATCHDOG_USEC))
    env.pop("JOURNAL_STREAM", None)
    if watchdog_pid is not None:
        env["WATCHDOG_PID"] = watchdog_pid
    args = [sys.executable, "-m", "vhostmd", "-d", "-c", URI, "-f", str(conf), "-p", str(tmp_path / "pid")]
    return subprocess.Popen(args + (["-v"] if verbose else []), stdout=subprocess.DEVNULL,
                            stderr=stderr, env=env, cwd=ROOT)


def finish(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(20)
    assert proc.returncode == 0


def test_pings_while_updates_go_on_and_none_while_one_hangs(tmp_path, notify):
    flag = tmp_path / "hang"
    metrics = (
        metric("Slow", f"if [ -e {flag} ]; then rm {flag}; sleep 6; fi; echo 1", "uint32",
               attrs=' timeout="10"')
        + metric("Inherited", 'echo "x${WATCHDOG_USEC:-unset}${WATCHDOG_PID:-}"')
    )
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = start(tmp_path, notify, metrics, err)
    try:
        ready = wait_for(notify.ready_at)
        time.sleep(4)
        steady = notify.pings(since=ready)
        assert len(steady) >= 3
        assert max(gaps([ready, *steady])) < WATCHDOG_USEC / 2e6  # at least every half
        # Actions do not inherit the watchdog's variables.
        assert b"<value>xunset</value>" in (tmp_path / "vhostmd0").read_bytes()

        flag.touch()  # the next update waits 6 s for its action
        hang = time.monotonic()
        wait_for(lambda: not flag.exists())
        wait_for(lambda: "pings resumed" in log.read_text(), timeout=15)
        resumed = time.monotonic()
        time.sleep(2)
        around = notify.pings(since=hang)
        # Silence from 2 s into the update (stuck) until it ended 6 s in.
        assert max(gaps(around)) >= 3.5, gaps(around)
        assert notify.pings(since=resumed), "pings did not resume"
    finally:
        finish(proc)
    text = log.read_text()
    assert text.count("no longer telling systemd the daemon is alive") == 1, text
    assert "raise WatchdogSec above" in text  # libvirt's 15 s + 10 s do not fit 4 s


def test_a_blocked_event_loop_sends_no_pings(tmp_path, notify):
    # The daemon logs to a pipe that stops being read (a journal that
    # hangs): its next log line blocks the event loop.
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    draining = threading.Event()
    draining.set()

    def drain():
        while True:
            if not draining.is_set():
                time.sleep(0.02)
                continue
            if select.select([read_end], [], [], 0.05)[0]:
                if not os.read(read_end, 65536):
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    proc = start(tmp_path, notify, metric("Good", "echo 1", "uint32"), write_end, verbose=True)
    try:
        ready = wait_for(notify.ready_at)
        time.sleep(2)
        assert notify.pings(since=ready)
        draining.clear()
        time.sleep(0.2)  # the reader is idle
        # A non-blocking file description of our own: the daemon's stays blocking.
        filler = os.open(f"/proc/self/fd/{write_end}", os.O_WRONLY | os.O_NONBLOCK)
        try:
            while True:
                os.write(filler, b"x" * 64)
        except BlockingIOError:
            pass
        finally:
            os.close(filler)
        blocked = time.monotonic()
        time.sleep(5)
        during = notify.pings(since=blocked + 1.5)  # one update's debug line blocks within 1 s
        draining.set()
        wait_for(lambda: notify.pings(since=blocked + 5), timeout=10)
    finally:
        draining.set()
        finish(proc)
        os.close(write_end)
        reader.join(10)
        os.close(read_end)
    assert during == [], during


def test_no_pings_when_watchdog_pid_is_another_process(tmp_path, notify):
    proc = start(tmp_path, notify, metric("Good", "echo 1", "uint32"), subprocess.DEVNULL,
                 watchdog_pid=str(os.getpid()))
    try:
        ready = wait_for(notify.ready_at)
        time.sleep(2.5)
        assert notify.pings() == []
    finally:
        finish(proc)


def test_ready_after_an_update_that_could_not_be_published(tmp_path, notify):
    # The document cannot fit a 1 KiB disk: the daemon is up all the same,
    # says why, and keeps trying; never becoming ready would only get it
    # restarted in a loop by systemd.
    metrics = metric("Big", "head -c 3000 /dev/zero | tr '\\0' x")
    with open(tmp_path / "stderr.log", "w") as err:
        proc = start(tmp_path, notify, metrics, err, size='<size unit="k">1</size>')
    try:
        wait_for(notify.ready_at)
        ready = next(msg for _, msg in list(notify.received) if msg.get("READY") == "1")
        assert "NOT PUBLISHED" in ready.get("STATUS", ""), ready
    finally:
        finish(proc)
