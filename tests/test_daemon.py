"""The running daemon: signals, reload, pid file, privileges, libvirt outages."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support import (
    config_xml, disk_document, metric, process_alive, read_disk, start_vhostmd, stop, vhostmd, wait_for,
    write_node,
)


def names_on_disk(disk: Path) -> list[str]:
    if not disk.exists() or read_disk(disk).length == 0:
        return []
    return [m.findtext("name") for m in ET.fromstring(disk_document(disk))]


def write_conf(path: Path, disk: Path, metrics: str, **kwargs) -> Path:
    path.write_text(config_xml(metrics, disk=disk, **kwargs))
    return path


def test_sigterm_stops_promptly_mid_update_and_kills_actions(tmp_path):
    disk = tmp_path / "vhostmd0"
    marker = tmp_path / "slow.pid"
    conf = write_conf(tmp_path / "c.conf", disk,
                      metric("Fast", "echo 1") + metric("Slow", f"echo $$ > {marker}; exec sleep 60", attrs=' timeout="60"'),
                      period=1)
    pid_file = tmp_path / "vhostmd.pid"
    proc = start_vhostmd("-c", "test:///default", "-f", str(conf), "-p", str(pid_file))
    try:
        wait_for(marker.exists)
        wait_for(lambda: marker.read_text().strip())
        assert pid_file.read_text().strip() == str(proc.pid)
        started = time.monotonic()
        log = stop(proc, timeout=5)
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    slow = int(marker.read_text())
    wait_for(lambda: not process_alive(slow), timeout=5)
    assert not pid_file.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_sigint_and_sigquit_stop_cleanly(tmp_path, sig):
    disk = tmp_path / "vhostmd0"
    conf = write_conf(tmp_path / "c.conf", disk, metric("A", "echo a"))
    pid_file = tmp_path / "p.pid"
    proc = start_vhostmd("-f", str(conf), "-c", "test:///default", "-p", str(pid_file))
    wait_for(lambda: names_on_disk(disk) == ["A"])
    stop(proc, sig, timeout=5)
    assert proc.returncode == 0
    assert not pid_file.exists()


def test_sighup_reloads_a_good_config_and_keeps_running_on_a_bad_one(tmp_path):
    disk = tmp_path / "vhostmd0"
    tick = metric("Tick", "date +%s%N", "uint64")
    conf = write_conf(tmp_path / "c.conf", disk, tick, period=1)
    proc = start_vhostmd("-c", "test:///default", "-f", str(conf))
    try:
        wait_for(lambda: names_on_disk(disk) == ["Tick"])
        write_conf(conf, disk, tick + metric("Second", "echo 2"), period=1)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: names_on_disk(disk) == ["Tick", "Second"])
        conf.write_text("<vhostmd><globals>")  # broken
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None
        # Still publishing, with the configuration it had.
        before = disk_document(disk)
        wait_for(lambda: disk_document(disk) != before)
        assert names_on_disk(disk) == ["Tick", "Second"]
    finally:
        log = stop(proc)
    assert "reload failed, keeping the running configuration" in log
    assert "c.conf:1: not well-formed XML" in log


def test_unreachable_libvirt_still_publishes_host_metrics_then_vms(tmp_path):
    node = tmp_path / "node.xml"  # does not exist yet: the connection fails
    disk = tmp_path / "vhostmd0"
    conf = write_conf(tmp_path / "c.conf", disk,
                      metric("H", "echo host") + metric("V", "echo NAME", context="vm"), period=1)
    proc = start_vhostmd("-c", f"test://{node}", "-f", str(conf))
    try:
        wait_for(lambda: names_on_disk(disk) == ["H"])
        write_node(node, ["late-vm"])
        wait_for(lambda: names_on_disk(disk) == ["H", "V"])
        values = [m.findtext("value") for m in ET.fromstring(disk_document(disk))]
        assert values == ["host", "late-vm"]
    finally:
        log = stop(proc)
    assert f"cannot open libvirt connection test://{node}" in log


def test_failures_are_logged_once_not_every_update(tmp_path):
    disk = tmp_path / "vhostmd0"
    conf = write_conf(tmp_path / "c.conf", disk, metric("Bad", "exit 1") + metric("Good", "echo 1"), period=1)
    proc = start_vhostmd("-c", "test:///default", "-f", str(conf))
    try:
        wait_for(lambda: names_on_disk(disk) == ["Good"])
        time.sleep(3)  # several more updates
    finally:
        log = stop(proc)
    assert log.count("metric 'Bad' (line") == 1


def test_overrunning_update_is_logged_with_its_duration(tmp_path):
    disk = tmp_path / "vhostmd0"
    conf = write_conf(tmp_path / "c.conf", disk, metric("Slow", "sleep 1.5; echo 1", attrs=' timeout="5"'), period=1)
    proc = start_vhostmd("-c", "test:///default", "-f", str(conf))
    try:
        wait_for(lambda: names_on_disk(disk) == ["Slow"])
    finally:
        log = stop(proc)
    assert "longer than update_period 1 s" in log


def test_pid_file_exclusive_stale_and_symlink(tmp_path):
    disk = tmp_path / "vhostmd0"
    conf = write_conf(tmp_path / "c.conf", disk, metric("A", "echo a"))
    pid_file = tmp_path / "vhostmd.pid"

    # A live process's pid file is not taken over.
    pid_file.write_text(f"{os.getpid()}\n")
    result = vhostmd("--once", "-f", str(conf), "-c", "test:///default", "-p", str(pid_file))
    assert result.returncode == 1
    assert f"already running as pid {os.getpid()}" in result.stderr

    # A stale one (its process gone) is replaced with a warning.
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file.write_text(f"{dead.pid}\n")
    proc = start_vhostmd("-f", str(conf), "-c", "test:///default", "-p", str(pid_file))
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() == str(proc.pid))
    finally:
        log = stop(proc)
    assert "replacing stale pid file" in log
    assert not pid_file.exists()

    # A symlink is refused, its target untouched.
    target = tmp_path / "target"
    target.write_text("precious")
    pid_file.symlink_to(target)
    result = vhostmd("--once", "-f", str(conf), "-c", "test:///default", "-p", str(pid_file))
    assert result.returncode == 1
    assert "symbolic link" in result.stderr
    assert target.read_text() == "precious"


def test_daemon_mode_detaches_and_writes_its_pid(tmp_path):
    disk = tmp_path / "vhostmd0"
    conf = write_conf(tmp_path / "c.conf", disk, metric("A", "echo a"))
    pid_file = tmp_path / "vhostmd.pid"
    result = vhostmd("-f", str(conf), "-c", "test:///default", "-p", str(pid_file),
                     "--status-file", str(tmp_path / "status.json"), timeout=20)
    assert result.returncode == 0, result.stderr
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip()))
    try:
        wait_for(lambda: names_on_disk(disk) == ["A"])
        assert os.getsid(pid) == pid or os.getsid(pid) != os.getsid(0)
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_file.exists(), timeout=10)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_option_drops_root_after_opening_the_disk(tmp_path):
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    disk = tmp_path / "vhostmd0"
    conf = write_conf(tmp_path / "c.conf", disk, metric("Uid", "id -u"))
    proc = start_vhostmd("-f", str(conf), "-c", "test:///default", "-u", "nobody")
    try:
        wait_for(lambda: names_on_disk(disk) == ["Uid"])
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
        values = [m.findtext("value") for m in ET.fromstring(disk_document(disk))]
        assert values == [str(nobody.pw_uid)]  # actions run as the user too
        assert disk.stat().st_uid == 0  # created as root, still written through the open fd
    finally:
        stop(proc)


def test_user_option_refuses_root(tmp_path):
    conf = write_conf(tmp_path / "c.conf", tmp_path / "vhostmd0", metric("A", "echo a"))
    result = vhostmd("--once", "-f", str(conf), "-u", "root")
    assert result.returncode == 1
    assert "uid or gid 0" in result.stderr
