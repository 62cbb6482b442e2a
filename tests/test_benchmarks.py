"""The benchmarks still run: a short run of each mode, every request answered.

These check that the commands in docs/virtio.md work, not how fast anything
is; the figures come from full runs (see the docs).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xenstored import xenstored_kit  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mode, extra", [
    ("server", ["--hostile", "2"]),
    ("daemon", ["--hostile", "2"]),
    ("server", ["--hostile", "2", "--hostile-kind", "garbage", "--churn", "2"]),
    ("daemon", ["--churn", "2"]),
    ("floor", []),
    ("asyncio-floor", []),
])
def test_virtio_benchmark_runs(mode, extra):
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "virtio_serve.py"), "--mode", mode,
         "--channels", "4", *extra, "--seconds", "1", "--warmup", "0.5"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    row = next(line.split() for line in run.stdout.splitlines() if line.split()[:1] == ["4"])
    assert float(row[1]) == pytest.approx(4.0, rel=0.3), run.stdout
    if "--churn" in extra:
        assert len(row) == 8 and "crash-looping QEMUs used" in run.stdout  # log lines a minute
    assert "skipped" not in run.stdout and "lost" not in run.stdout


def test_xenstore_benchmark_runs(xenstored_kit):
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "xenstore_publish.py"), "--vms", "3", "--updates", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    rows = run.stdout.strip().splitlines()
    assert len(rows) == 2 and all("3 VMs" in r and "ms CPU per update" in r for r in rows), rows
