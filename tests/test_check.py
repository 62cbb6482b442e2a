"""``vhostmd check``: the monitoring plugin's four states, from real daemons and state files."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from support import config_xml, metric, start_vhostmd, stop, vhostmd, wait_for

URI = "test:///default"

#: A plugin line: VHOSTMD STATE - text | perfdata (monitoring-plugins guidelines).
LINE = re.compile(r"^VHOSTMD (OK|WARNING|CRITICAL|UNKNOWN) - ([^|\n]+?)(?: \| (.*))?$")
#: One perfdata item: 'label'=value[UOM];[warn];[crit];[min];[max]
PERFDATA = re.compile(r"^'?[^'=]+'?=-?[0-9.]+(s|%|B|KB|MB|c)?(;(-?[0-9.]*)){0,4}$")
STATES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def check(*args: str) -> tuple[str, str, dict[str, str]]:
    """Run the plugin: its state, its text and its perfdata; the exit status must match the state."""
    result = vhostmd("check", *args)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    match = LINE.match(lines[0])
    assert match, lines[0]
    state, text, perf = match.groups()
    assert result.returncode == STATES[state], (result.returncode, lines[0])
    items = perf.split() if perf else []
    assert all(PERFDATA.match(item) for item in items), items
    return state, text, dict(item.split("=", 1) for item in items)


def conf(tmp_path: Path, metrics: str, *, period: int = 1, size: str = '<size unit="k">64</size>') -> Path:
    path = tmp_path / "vhostmd.conf"
    path.write_text(config_xml(metrics, disk=tmp_path / "vhostmd0", period=period, size=size))
    return path


def running(tmp_path: Path, metrics: str, **kwargs):
    """A real daemon with a state file; returns the process and the state file's path."""
    state = tmp_path / "status.json"
    proc = start_vhostmd("-c", URI, "-f", str(conf(tmp_path, metrics, **kwargs)), "--status-file", str(state))
    wait_for(lambda: state.exists() and json.loads(state.read_text()).get("last_update"))
    return proc, state


GOOD = metric("HostAnswer", "echo 42", "uint32")


def test_ok_while_healthy_then_critical_when_stopped_or_killed(tmp_path):
    proc, state = running(tmp_path, GOOD)
    try:
        status, text, perf = check("--status-file", str(state))
        assert status == "OK", text
        assert text.startswith("1 VMs, 1 metrics, last update ")
        assert perf["failed"] == "0;0;;0" and perf["vms"] == "1;;;0"
        assert perf["age"].endswith("s;2;3;0")  # warning at 2 periods, critical at 3
        assert perf["disk_fill"].endswith("%;90;;0;100")
    finally:
        stop(proc)
    status, text, _ = check("--status-file", str(state))
    assert status == "CRITICAL" and "not running (stopped" in text

    state.unlink()
    proc, state = running(tmp_path, GOOD)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    status, text, _ = check("--status-file", str(state))
    assert status == "CRITICAL" and f"pid {proc.pid}" in text and "is gone" in text


def test_critical_without_a_state_file_and_unknown_when_it_is_unreadable(tmp_path):
    status, text, perf = check("--status-file", str(tmp_path / "none.json"))
    assert status == "CRITICAL" and "no state file" in text and perf == {}
    garbled = tmp_path / "status.json"
    garbled.write_text('{"pid": ')
    status, text, _ = check("--status-file", str(garbled))
    assert status == "UNKNOWN" and "cannot read" in text
    garbled.write_text("[]")
    assert check("--status-file", str(garbled))[0] == "UNKNOWN"


def test_usage_errors_are_unknown(tmp_path):
    for bad in (["--max-age", "soon"], ["--max-age", "-5"], ["--no-such-flag"]):
        result = vhostmd("check", "--status-file", str(tmp_path / "s.json"), *bad)
        assert result.returncode == 3, (bad, result.stdout, result.stderr)
        assert result.stdout.startswith("VHOSTMD UNKNOWN - ")


def test_warning_for_left_out_metrics_and_a_nearly_full_disk(tmp_path):
    # 850 characters fill about 96% of a 1 KiB disk.
    metrics = metric("Pad", "printf '%0850d' 0") + metric("Broken", "echo oops; exit 3", "uint32")
    proc, state = running(tmp_path, metrics, size='<size unit="k">1</size>')
    try:
        status, text, perf = check("--status-file", str(state))
    finally:
        stop(proc)
    assert status == "WARNING", text
    assert "1 metric(s) left out: metric 'Broken'" in text
    assert f"disk {tmp_path / 'vhostmd0'} is 9" in text and "% full" in text
    assert perf["failed"] == "1;0;;0"


def test_critical_when_the_last_update_was_not_published(tmp_path):
    # 1000 characters do not fit a 1 KiB disk.
    proc, state = running(tmp_path, metric("Pad", "printf '%01000d' 0"), size='<size unit="k">1</size>')
    try:
        status, text, perf = check("--status-file", str(state))
    finally:
        stop(proc)
    assert status == "CRITICAL"
    assert "the last update was not published: metrics disk" in text and "1024 bytes" in text
    assert text.count("1024 bytes") == 1, text  # said once, not again as the disk's error
    assert perf["publish_failures"].endswith("c")


def test_warning_when_an_update_is_late_and_critical_past_max_age(tmp_path):
    # Updates every second, but from the second on one hangs for 8 s.
    flag = tmp_path / "hang"
    slow = metric("Slow", f"if [ -e {flag} ]; then sleep 8; fi; echo 1", "uint32", attrs=' timeout="10"')
    proc, state = running(tmp_path, slow)
    try:
        assert check("--status-file", str(state))[0] == "OK"
        flag.touch()
        # The last finished update ages: a warning after 2 periods ...
        status, text, _ = wait_for(
            lambda: (lambda r: r if r[0] == "WARNING" else None)(check("--status-file", str(state))))
        assert "s old, but updates are due every 1 s" in text
        # ... and critical past --max-age.
        status, text, perf = wait_for(
            lambda: (lambda r: r if r[0] == "CRITICAL" else None)(
                check("--status-file", str(state), "--max-age", "4")))
        assert "nothing published for" in text and "(max age 4 s)" in text
        assert perf["age"].endswith(";2;4;0")
    finally:
        stop(proc)
