"""Priorities for journald: "<N>" line prefixes when stderr is the journal stream."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from support import ROOT, config_xml, daemon_env, metric, wait_for
from vhostmd.process import JournalFormatter

URI = "test:///default"


def run_daemon(tmp_path: Path, journal_stream: str | None) -> str:
    """Run the daemon with stderr on a file: a warning, debug lines, a failed reload (error)."""
    conf = tmp_path / "vhostmd.conf"
    disk = tmp_path / "vhostmd0"
    conf.write_text(config_xml(metric("Good", "echo 1", "uint32") + metric("Broken", "exit 3", "uint32"),
                               disk=disk))
    log = tmp_path / "stderr.log"
    env = daemon_env()
    env.pop("JOURNAL_STREAM", None)
    with open(log, "w") as err:
        if journal_stream == "match":
            info = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        elif journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        proc = subprocess.Popen(
            [sys.executable, "-m", "vhostmd", "-d", "-v", "-c", URI, "-f", str(conf),
             "-p", str(tmp_path / "pid")],
            stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT,
        )
    try:
        wait_for(lambda: disk.exists() and b"Good" in disk.read_bytes())
        conf.write_text("<vhostmd>not valid")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in log.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0
    return log.read_text()


def test_every_line_has_its_priority_when_stderr_is_the_journal(tmp_path):
    text = run_daemon(tmp_path, "match")
    lines = text.splitlines()
    assert lines and all(re.match(r"<[3-7]>", line) for line in lines), text
    prefix = {line[3:]: line[:3] for line in lines}
    assert any(p == "<4>" and "metric 'Broken'" in t for t, p in prefix.items())
    assert any(p == "<3>" and "reload failed" in t for t, p in prefix.items())
    assert any(p == "<6>" and "started" in t for t, p in prefix.items())
    assert any(p == "<7>" and t.startswith("DEBUG: update:") for t, p in prefix.items())


def test_plain_lines_when_journal_stream_names_another_file(tmp_path):
    other = os.stat(ROOT / "README.md")
    for i, stream in enumerate((f"{other.st_dev}:{other.st_ino}", "garbage", None)):
        (tmp_path / str(i)).mkdir()
        text = run_daemon(tmp_path / str(i), stream)
        assert all(line.startswith("vhostmd: ") for line in text.splitlines()), (stream, text)
        assert "vhostmd: WARNING: metric 'Broken'" in text


def test_a_traceback_gets_the_prefix_on_every_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("vhostmd", logging.ERROR, __file__, 1, "update failed", (), sys.exc_info())
    lines = JournalFormatter("%(levelname)s: %(message)s").format(record).split("\n")
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[0] == "<3>ERROR: update failed" and lines[-1] == "<3>ValueError: boom"
