"""``vhostmd status`` and the state file the daemon keeps under /run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vhostmd.commands import status as status_mod
from vhostmd.state import DaemonStatus, ReloadFailure, StatusFile, UpdateStatus

ROOT = Path(__file__).resolve().parents[1]
URI = "test:///default"


def write_config(tmp_path: Path, size: str = "64") -> Path:
    path = tmp_path / "vhostmd.conf"
    path.write_text(f"""<vhostmd>
  <globals>
    <disk><name>m</name><path>{tmp_path}/vhostmd0</path><size unit="k">{size}</size></disk>
    <update_period>1</update_period>
    <transport>vbd</transport>
  </globals>
  <metrics>
    <metric type="uint32" context="host"><name>HostAnswer</name><action>echo 42</action></metric>
    <metric type="uint32" context="host"><name>Broken</name><action>echo oops; exit 3</action></metric>
    <metric type="string" context="vm"><name>VmName</name><action>echo NAME</action></metric>
  </metrics>
</vhostmd>
""")
    return path


def vhostmd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vhostmd", *args], cwd=ROOT,
        capture_output=True, text=True, timeout=timeout,
    )


def wait_for(predicate, what: str, limit: float = 30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def test_status_after_a_one_shot_run_shows_the_update_and_failures(tmp_path):
    state = tmp_path / "run" / "status.json"
    once = vhostmd("--once", "-c", URI, "-f", str(write_config(tmp_path)), "--status-file", str(state))
    assert once.returncode == 0, once.stderr

    text = vhostmd("status", "--status-file", str(state))
    assert text.returncode == 3
    assert "not running (stopped at" in text.stdout
    assert "1 VMs, 2 metrics" in text.stdout
    assert "failed metrics: 1" in text.stdout
    assert "metric 'Broken' (line 9) left out: exited with status 3" in text.stdout
    assert f"{tmp_path}/vhostmd0:" in text.stdout and "of 65536 bytes used" in text.stdout

    js = vhostmd("status", "--json", "--status-file", str(state))
    assert js.returncode == 3
    out = json.loads(js.stdout)
    assert out["running"] is False
    last = out["state"]["last_update"]
    assert last["vms"] == 1 and last["metrics"] == 2 and last["published"] is True
    assert len(last["failures"]) == 1 and "Broken" in last["failures"][0]
    (disk,) = out["state"]["transports"][0]["disks"]
    assert disk["size"] == 65536
    # The fill is what the disk's own header says is used.
    header_length = int.from_bytes((tmp_path / "vhostmd0").read_bytes()[12:16], "big")
    assert disk["used"] == 16 + header_length == 16 + last["document_bytes"]


def test_status_of_a_running_daemon_and_after_it_stops(tmp_path):
    state = tmp_path / "run" / "status.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vhostmd", "-d", "-c", URI, "-f", str(write_config(tmp_path)),
         "--status-file", str(state), "-p", str(tmp_path / "pid")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: state.exists(), "the state file")
        assert stat.S_IMODE(state.stat().st_mode) == 0o644
        assert stat.S_IMODE(state.parent.stat().st_mode) == 0o755
        running = vhostmd("status", "--status-file", str(state))
        assert running.returncode == 0, running.stdout
        assert f"vhostmd is running (pid {proc.pid}" in running.stdout
        assert "last update:" in running.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    stopped = vhostmd("status", "--status-file", str(state))
    assert stopped.returncode == 3
    assert "not running (stopped at" in stopped.stdout


def test_state_left_by_a_killed_daemon_says_not_running(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    state = tmp_path / "status.json"
    StatusFile(state).write(DaemonStatus(pid=gone.pid, started=1.0, written=2.0, config="c", update_period=5))
    result = vhostmd("status", "--status-file", str(state))
    assert result.returncode == 3
    assert f"pid {gone.pid}" in result.stdout and "is gone" in result.stdout


def test_no_state_file_and_a_garbled_one(tmp_path):
    missing = vhostmd("status", "--status-file", str(tmp_path / "none.json"))
    assert missing.returncode == 3
    assert "not running (no state file" in missing.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    garbled = vhostmd("status", "--status-file", str(bad))
    assert garbled.returncode == 4
    assert str(bad) in garbled.stderr and "not a vhostmd state file" in garbled.stderr


def _status(last_started: float, published: bool = True) -> DaemonStatus:
    return DaemonStatus(
        pid=1, started=0.0, written=last_started, config="c", update_period=5,
        last_update=UpdateStatus(
            started=last_started, duration=0.01, cpu=0.01, vms=3, metrics=9, document_bytes=900,
            published=published, publish_errors=() if published else ("disk full",),
        ),
    )


def test_verdicts_healthy_stale_unpublished_and_not_yet_updated():
    now = 1000.0
    path = Path("/run/x")
    assert status_mod.judge(_status(998), path, now, alive=True).exit == status_mod.EXIT_HEALTHY
    stale = status_mod.judge(_status(900), path, now, alive=True)
    assert stale.exit == status_mod.EXIT_DEGRADED and "100 s old" in stale.notes[0]
    unpublished = status_mod.judge(_status(999, published=False), path, now, alive=True)
    assert unpublished.exit == status_mod.EXIT_DEGRADED
    fresh = DaemonStatus(pid=1, started=0.0, written=0.0, config="c", update_period=5)
    assert status_mod.judge(fresh, path, now, alive=True).notes == ["no update has finished yet"]


def test_state_file_replaces_a_planted_symlink_without_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    state = tmp_path / "status.json"
    state.symlink_to(victim)
    assert StatusFile(state).write(_status(1.0))
    assert victim.read_text() == "precious"
    assert not state.is_symlink()
    assert DaemonStatus.from_json(state.read_text()).last_update.vms == 3


def test_state_file_round_trips_and_tolerates_unknown_keys():
    original = _status(5.0)
    data = json.loads(original.to_json())
    data["added_by_a_newer_version"] = 1
    data["last_update"]["also_new"] = True
    assert DaemonStatus.from_json(json.dumps(data)) == original


def test_a_failed_reload_round_trips_and_makes_the_daemon_degraded():
    failure = ReloadFailure(at=990.0, config="/etc/vhostmd/vhostmd.conf",
                            error="/etc/vhostmd/vhostmd.conf:35: not well-formed XML")
    status = dataclasses.replace(_status(998), reload_failure=failure)
    data = json.loads(status.to_json())
    assert data["reload_failure"] == {"at": 990.0, "config": "/etc/vhostmd/vhostmd.conf",
                                      "error": "/etc/vhostmd/vhostmd.conf:35: not well-formed XML"}
    assert DaemonStatus.from_json(json.dumps(data)) == status
    del data["reload_failure"]  # as files written before the field existed
    assert DaemonStatus.from_json(json.dumps(data)).reload_failure is None
    verdict = status_mod.judge(status, Path("/run/x"), 1000.0, alive=True)
    assert verdict.exit == status_mod.EXIT_DEGRADED
    assert verdict.notes == ["reload of /etc/vhostmd/vhostmd.conf failed at "
                             + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(990.0))
                             + " (10 s ago), running configuration kept: "
                             "/etc/vhostmd/vhostmd.conf:35: not well-formed XML"]
    data["reload_failure"] = {"at": 990.0}  # garbled: not taken for a state file
    with pytest.raises(ValueError):
        DaemonStatus.from_json(json.dumps(data))


def test_a_state_file_that_cannot_be_written_does_not_stop_the_daemon(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert StatusFile(blocker / "status.json").write(_status(1.0)) is False


@pytest.mark.parametrize("argv", [["--check"], []])
def test_flag_only_command_line_still_runs_the_daemon(tmp_path, argv):
    conf = write_config(tmp_path)
    if argv:
        result = vhostmd(*argv, "-f", str(conf))
        assert result.returncode == 0 and "valid" in result.stdout
    else:
        result = vhostmd("--once", "-c", URI, "-f", str(conf))
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "vhostmd0").read_bytes()[:4] == b"mvbd"
    assert not os.path.exists(tmp_path / "status.json")


def test_a_reused_pid_of_another_program_is_not_the_daemon():
    from vhostmd.pidfile import pid_alive

    assert pid_alive(os.getpid())
    assert not pid_alive(os.getpid(), program=b"no-such-program-\0")
    assert pid_alive(os.getpid(), program=b"python")
