"""``vhostmd status`` names the daemon by its pid and its start time, not its command line.

A daemon killed without a chance to say so leaves a state file claiming it
runs; once its pid is reused, by anything (even a program whose command
line says vhostmd), status must still say it is not running.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from support import config_xml, metric, start_vhostmd, vhostmd, wait_for
from vhostmd.pidfile import process_start


def test_a_reused_pid_is_not_the_daemon_even_if_it_says_vhostmd(tmp_path):
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(metric("A", "echo a"), disk=tmp_path / "vhostmd0"))
    state = tmp_path / "status.json"
    daemon = start_vhostmd("-c", "test:///default", "-f", str(conf), "--status-file", str(state),
                           "-p", str(tmp_path / "pid"))
    impostor = None
    try:
        wait_for(lambda: state.exists() and json.loads(state.read_text())["last_update"])
        running = vhostmd("status", "--status-file", str(state))
        assert running.returncode == 0, running.stdout
        assert f"running (pid {daemon.pid}" in running.stdout
        recorded = json.loads(state.read_text())
        assert recorded["process_start"] == process_start(daemon.pid)

        # Killed outright: the state file still says it runs.
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        # Its pid taken by another process whose command line names vhostmd.
        impostor = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; time.sleep(60)", "/usr/sbin/vhostmd", "-d"])
        # (Empty until the child has exec'd.)
        wait_for(lambda: b"vhostmd" in open(f"/proc/{impostor.pid}/cmdline", "rb").read())
        recorded["pid"] = impostor.pid
        state.write_text(json.dumps(recorded))
        reused = vhostmd("status", "--status-file", str(state))
        assert reused.returncode == 3, reused.stdout
        assert f"pid {impostor.pid}, which wrote {state}, is gone" in reused.stdout
        as_json = json.loads(vhostmd("status", "--json", "--status-file", str(state)).stdout)
        assert as_json["running"] is False
        # The monitoring plugin judges it the same way.
        check = vhostmd("check", "--status-file", str(state))
        assert check.returncode == 2, check.stdout
        assert check.stdout.startswith("VHOSTMD CRITICAL")
    finally:
        for proc in (daemon, impostor):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_state_file_with_a_pid_that_is_not_a_number_is_garbled(tmp_path):
    state = tmp_path / "status.json"
    state.write_text(json.dumps({"pid": "1", "started": 1.0, "written": 2.0, "config": "c",
                                 "update_period": 5, "running": True}))
    result = vhostmd("status", "--status-file", str(state))
    assert result.returncode == 4
    assert "not a vhostmd state file (pid is not an integer)" in result.stderr
    assert "Traceback" not in result.stderr
