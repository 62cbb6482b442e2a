"""systemd integration: sd_notify over a real datagram socket, and the unit file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from support import systemd_analyze
from vhostmd.collect.virt import CALL_TIMEOUT
from vhostmd.config import ACTION_TIMEOUT_CAP
from vhostmd.sdnotify import Notifier

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "packaging" / "vhostmd.service"
URI = "test:///default"


@pytest.fixture
def listener(tmp_path):
    """A datagram socket standing in for systemd's notification socket."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    yield path, sock
    sock.close()


def messages(sock: socket.socket):
    """Each datagram as a dict of its KEY=value lines."""
    while True:
        data = sock.recv(4096).decode()
        yield dict(line.split("=", 1) for line in data.split("\n") if line)


def test_notifier_sends_ready_and_status(listener):
    path, sock = listener
    notifier = Notifier(str(path))
    notifier.ready("3 VMs")
    notifier.status("4 VMs")
    got = messages(sock)
    assert next(got) == {"READY": "1", "STATUS": "3 VMs"}
    assert next(got) == {"STATUS": "4 VMs"}


def test_notifier_abstract_socket():
    name = f"vhostmd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(30)
        assert Notifier("@" + name).send("READY=1")
        assert sock.recv(100) == b"READY=1"


def test_notifier_without_systemd_and_with_a_dead_socket(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier.from_environment().send("READY=1")
    assert not Notifier(str(tmp_path / "nobody-listens")).send("READY=1")


def test_daemon_notifies_ready_status_reload_and_stop(tmp_path, listener):
    path, sock = listener
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(f"""<vhostmd>
  <globals>
    <disk><name>m</name><path>{tmp_path}/vhostmd0</path><size unit="k">64</size></disk>
    <update_period>1</update_period>
    <transport>vbd</transport>
  </globals>
  <metrics>
    <metric type="string" context="host"><name>Inherited</name><action>echo "x${{NOTIFY_SOCKET:-unset}}"</action></metric>
  </metrics>
</vhostmd>
""")
    env = dict(os.environ, NOTIFY_SOCKET=str(path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vhostmd", "-d", "-c", URI, "-f", str(conf), "-p", str(tmp_path / "pid"),
         "--status-file", str(tmp_path / "status.json")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    stopped = False
    try:
        got = messages(sock)
        first = next(got)
        assert first["READY"] == "1"
        assert first["STATUS"].startswith("1 VMs, 1 metrics,")
        # Actions do not inherit the notification socket.
        assert b"<value>xunset</value>" in (tmp_path / "vhostmd0").read_bytes()
        proc.send_signal(signal.SIGHUP)
        msg = next(got)
        while "RELOADING" not in msg:
            msg = next(got)
        msg = next(got)
        while "READY" not in msg:
            msg = next(got)
        assert msg["STATUS"].startswith("configuration reloaded")
        proc.send_signal(signal.SIGTERM)
        stopped = True
        msg = next(got)
        while "STOPPING" not in msg:
            msg = next(got)
    finally:
        if not stopped:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_a_failed_reload_stays_in_the_status_line_until_a_reload_succeeds(tmp_path, listener):
    path, sock = listener
    conf = tmp_path / "vhostmd.conf"
    good = f"""<vhostmd>
  <globals>
    <disk><name>m</name><path>{tmp_path}/vhostmd0</path><size unit="k">64</size></disk>
    <update_period>1</update_period>
    <transport>vbd</transport>
  </globals>
  <metrics>
    <metric type="string" context="host"><name>A</name><action>echo a</action></metric>
  </metrics>
</vhostmd>
"""
    conf.write_text(good)
    env = dict(os.environ, NOTIFY_SOCKET=str(path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vhostmd", "-d", "-c", URI, "-f", str(conf), "-p", str(tmp_path / "pid"),
         "--status-file", str(tmp_path / "status.json")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def after_reload(got) -> tuple[str, str]:
        """STATUS= of the READY=1 that ends the reload, and of the update after it."""
        msg = next(got)
        while "RELOADING" not in msg:
            msg = next(got)
        while "READY" not in msg:
            msg = next(got)
        update = next(got)
        while "STATUS" not in update:
            update = next(got)
        return msg["STATUS"], update["STATUS"]

    try:
        got = messages(sock)
        assert next(got)["READY"] == "1"
        conf.write_text(good.replace("</vhostmd>", ""))
        proc.send_signal(signal.SIGHUP)
        ready, update = after_reload(got)
        assert ready.startswith("RELOAD FAILED, running configuration kept: ")
        assert f"{conf}:" in ready
        # Each update's line keeps saying so, not only the one after SIGHUP.
        assert update.startswith("1 VMs, 1 metrics,")
        assert "; RELOAD FAILED, running configuration kept: " in update
        conf.write_text(good)
        proc.send_signal(signal.SIGHUP)
        ready, update = after_reload(got)
        assert ready.startswith("configuration reloaded")
        assert update.startswith("1 VMs, 1 metrics,") and "RELOAD" not in update
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_unit_file_verifies_clean(tmp_path):
    analyze = systemd_analyze()
    # The unit as shipped, with only its ExecStart pointed at this checkout's
    # daemon (not installed here); the man pages it names are this checkout's.
    daemon = tmp_path / "vhostmd"
    daemon.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m vhostmd \"$@\"\n")
    daemon.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/usr/sbin/vhostmd " in text
    unit = tmp_path / "vhostmd.service"
    unit.write_text(text.replace("ExecStart=/usr/sbin/vhostmd ", f"ExecStart={daemon} "))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, MANPATH=str(ROOT / "docs" / "man")),
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_unit_file_settings():
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    assert settings["Type"] == ["notify"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["Restart"] == ["on-failure"]
    # Actions that leave their process group (setsid) are still killed.
    assert settings["KillMode"] == ["control-group"]
    for key in ("ProtectSystem", "PrivateTmp", "NoNewPrivileges", "ProtectHome"):
        assert key in settings
    assert "/dev/shm" in settings["ReadWritePaths"][0]
    # The watchdog: an update running past half of it counts as stuck, so it
    # must leave room for libvirt's timeout and the longest default action.
    (watchdog,) = settings["WatchdogSec"]
    assert watchdog.endswith("s") and float(watchdog[:-1]) / 2 > CALL_TIMEOUT + ACTION_TIMEOUT_CAP
    # node_exporter's textfile directories, optional, for --prometheus-file.
    assert "-/var/lib/prometheus/node-exporter" in settings["ReadWritePaths"][1].split()
    assert "--no-daemonize" in settings["ExecStart"][0]
