"""The running daemon: signals, reload, pid file, privileges, libvirt outages."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
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
        time.sleep(3.5)  # more updates, every one too long
    finally:
        log = stop(proc)
    # Said once while it persists, not once per update.
    assert log.count("longer than update_period 1 s") == 1, log


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


def test_a_second_daemon_says_so_before_detaching(tmp_path):
    disk = tmp_path / "vhostmd0"
    conf = write_conf(tmp_path / "c.conf", disk, metric("A", "echo a"))
    pid_file = tmp_path / "vhostmd.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # a live process holds it
    # Without -d: it would detach, and only syslog would hear why it stopped.
    result = vhostmd("-f", str(conf), "-c", "test:///default", "-p", str(pid_file),
                     "--status-file", str(tmp_path / "status.json"))
    assert result.returncode == 1
    assert f"already running as pid {os.getpid()}" in result.stderr
    assert not disk.exists()  # nothing opened
    assert pid_file.read_text() == f"{os.getpid()}\n"


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


def test_relative_paths_hold_after_detaching(tmp_path):
    """-f, -p and --status-file relative to where vhostmd was started, not to /."""
    disk = tmp_path / "vhostmd0"
    conf = write_conf(tmp_path / "c.conf", disk, metric("A", "echo a"), period=1)
    # Names no real file in / has: where they would land if taken relative to /.
    pid_name, state_name = "run/vhostmd-relative-test.pid", "run/vhostmd-relative-test.json"
    pid_file, state = tmp_path / pid_name, tmp_path / state_name
    pid_file.parent.mkdir()
    result = vhostmd("-f", "c.conf", "-c", "test:///default", "-p", pid_name,
                     "--status-file", state_name, cwd=tmp_path, timeout=20)
    assert result.returncode == 0, result.stderr
    try:
        pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip()))
    except AssertionError:
        stray = Path("/", pid_name)
        if stray.exists():  # the pid file went to /: stop that daemon
            stray_pid = int(stray.read_text())
            os.kill(stray_pid, signal.SIGTERM)
            wait_for(lambda: not process_alive(stray_pid), timeout=10)
        raise
    finally:
        Path("/", state_name).unlink(missing_ok=True)
    try:
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        wait_for(lambda: names_on_disk(disk) == ["A"])
        wait_for(lambda: state.exists() and json.loads(state.read_text())["pid"] == pid)
        write_conf(conf, disk, metric("A", "echo a") + metric("B", "echo b"), period=1)
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: names_on_disk(disk) == ["A", "B"])
        assert process_alive(pid)
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_file.exists(), timeout=10)
    assert not Path("/", pid_name).exists() and not Path("/", state_name).exists()


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


@pytest.fixture
def service_user():
    """A real user whose only supplementary group is a channel-socket group."""
    suffix = f"{os.getpid() % 100000}"
    user, group = f"vhmd-u{suffix}", f"vhmd-g{suffix}"
    for tool in ("useradd", "groupadd"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], stdout=subprocess.DEVNULL).returncode:
            pytest.skip(f"no {tool} (package passwd)")
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["useradd", "--no-create-home", "--user-group", "--groups", group,
                        "--shell", "/usr/sbin/nologin", user], check=True)
        try:
            yield pwd.getpwnam(user), grp.getgrnam(group)
        finally:
            subprocess.run(["userdel", user], check=True)
    finally:
        subprocess.run(["groupdel", group], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_option_keeps_the_users_supplementary_groups(tmp_path, service_user):
    user, group = service_user
    # What only members of the group may read, as a channel socket's directory
    # is for libvirt's qemu group; its parent is open to all (tmp_path is not).
    shared = Path(tempfile.mkdtemp(prefix="vhostmd-groups-"))
    try:
        shared.chmod(0o755)
        secret = shared / "for-the-group"
        secret.write_text("42\n")
        os.chown(secret, 0, group.gr_gid)
        secret.chmod(0o640)
        disk = tmp_path / "vhostmd0"
        conf = write_conf(tmp_path / "c.conf", disk, metric("Secret", f"cat {secret}", "uint32"))
        proc = start_vhostmd("-f", str(conf), "-c", "test:///default", "-u", user.pw_name)
        try:
            wait_for(lambda: names_on_disk(disk) == ["Secret"])
            status = Path(f"/proc/{proc.pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines())
            assert fields["Uid"].split() == [str(user.pw_uid)] * 4
            assert fields["Gid"].split() == [str(user.pw_gid)] * 4
            # Its own groups: primary and the channel group, none of root's.
            assert sorted(map(int, fields["Groups"].split())) == sorted({user.pw_gid, group.gr_gid})
            values = [m.findtext("value") for m in ET.fromstring(disk_document(disk))]
            assert values == ["42"]
        finally:
            stop(proc)
    finally:
        shutil.rmtree(shared)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_option_refuses_a_member_of_group_0(tmp_path, service_user):
    user, _ = service_user
    subprocess.run(["usermod", "--append", "--groups", "root", user.pw_name], check=True)
    conf = write_conf(tmp_path / "c.conf", tmp_path / "vhostmd0", metric("A", "echo a"))
    result = vhostmd("--once", "-f", str(conf), "-u", user.pw_name)
    assert result.returncode == 1
    assert "member of group 0" in result.stderr


def test_user_option_refuses_root(tmp_path):
    conf = write_conf(tmp_path / "c.conf", tmp_path / "vhostmd0", metric("A", "echo a"))
    result = vhostmd("--once", "-f", str(conf), "-u", "root")
    assert result.returncode == 1
    assert "uid or gid 0" in result.stderr


def test_a_failed_reload_shows_in_status_check_and_prometheus_until_a_reload_succeeds(tmp_path):
    disk, state, prom = tmp_path / "vhostmd0", tmp_path / "status.json", tmp_path / "vhostmd.prom"
    good = config_xml(metric("Tick", "date +%s%N", "uint64"), disk=disk, period=1)
    conf = tmp_path / "c.conf"
    conf.write_text(good)
    proc = start_vhostmd("-c", "test:///default", "-f", str(conf), "--status-file", str(state),
                         "--prometheus-file", str(prom))

    def reload_failure():
        return json.loads(state.read_text()).get("reload_failure") if state.exists() else None

    def gauges() -> dict[str, str]:
        # Read as plain text, independently of the exposition code.
        return dict(line.split(" ", 1) for line in prom.read_text().splitlines() if not line.startswith("#"))

    try:
        wait_for(lambda: names_on_disk(disk) == ["Tick"] and state.exists())
        assert vhostmd("status", "--status-file", str(state)).returncode == 0
        assert gauges()["vhostmd_config_reload_failed"] == "0"

        conf.write_text(good.replace("</update_period>", ""))  # a tag left open
        before = time.time()
        proc.send_signal(signal.SIGHUP)
        failure = wait_for(reload_failure)
        assert failure["config"] == str(conf)
        assert failure["error"].startswith(f"{conf}:")  # file and line, as logged
        assert before - 1 <= failure["at"] <= time.time()

        shown = vhostmd("status", "--status-file", str(state))
        assert shown.returncode == 1, shown.stdout  # running, but degraded
        warning = next(line for line in shown.stdout.splitlines() if line.startswith("warning: "))
        assert f"reload of {conf} failed" in warning and "running configuration kept" in warning
        assert failure["error"] in warning

        checked = vhostmd("check", "--status-file", str(state))
        assert checked.returncode == 1 and checked.stdout.startswith("VHOSTMD WARNING - "), checked.stdout
        assert "reload of" in checked.stdout and failure["error"] in checked.stdout

        for text in (prom.read_text(), vhostmd("status", "--format", "prometheus",
                                                "--status-file", str(state)).stdout):
            values = dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))
            assert values["vhostmd_config_reload_failed"] == "1"
            assert float(values["vhostmd_last_reload_failure_timestamp_seconds"]) == failure["at"]

        # Still publishing with the configuration it had, and still saying so.
        document = disk_document(disk)
        wait_for(lambda: disk_document(disk) != document)
        assert reload_failure() == failure

        conf.write_text(good)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: reload_failure() is None)
        shown = vhostmd("status", "--status-file", str(state))
        assert shown.returncode == 0 and "warning:" not in shown.stdout, shown.stdout
        checked = vhostmd("check", "--status-file", str(state))
        assert checked.returncode == 0 and checked.stdout.startswith("VHOSTMD OK - "), checked.stdout
        wait_for(lambda: gauges()["vhostmd_config_reload_failed"] == "0")
        assert "vhostmd_last_reload_failure_timestamp_seconds" not in gauges()
    finally:
        log = stop(proc)
    assert proc.returncode == 0, log
    assert log.count("reload failed, keeping the running configuration") == 1
    assert f"reload failed, keeping the running configuration: {failure['error']}" in log
