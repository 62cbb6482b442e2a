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


@pytest.mark.parametrize("mode, hostile", [
    ("server", 2), ("daemon", 2), ("floor", 0), ("asyncio-floor", 0),
])
def test_virtio_benchmark_runs(mode, hostile):
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "virtio_serve.py"), "--mode", mode,
         "--channels", "4", "--hostile", str(hostile), "--seconds", "1", "--warmup", "0.5"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    row = run.stdout.strip().splitlines()[-1].split()
    assert row[0] == "4" and float(row[1]) == pytest.approx(4.0, rel=0.3), run.stdout
    assert "skipped" not in run.stdout and "lost" not in run.stdout


def test_xenstore_benchmark_runs(xenstored_kit):
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "xenstore_publish.py"), "--vms", "3", "--updates", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    rows = run.stdout.strip().splitlines()
    assert len(rows) == 2 and all("3 VMs" in r and "ms CPU per update" in r for r in rows), rows
