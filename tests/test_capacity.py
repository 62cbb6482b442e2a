"""How many VMs the metrics disk holds, and the warning before it fills."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

from benchmarks.nodes import write_node
from vhostmd.publish import capacity, disk_format
from vhostmd import config as config_mod
from vhostmd.publish.disk import MetricsDisk
from vhostmd.publish.shared_disk import DiskPublisher
from vhostmd.pipeline import Pipeline
from vhostmd.collect.virt import Libvirt

ROOT = Path(__file__).resolve().parent.parent
SAP = ROOT / "conf" / "vhostmd.conf"


def run_update(config, uri: str, disk_path: Path, size: int):
    virt = Libvirt(uri)
    disk = MetricsDisk(disk_path, size)

    async def run():
        pipeline = Pipeline(config, virt, [DiskPublisher(disk)])
        return pipeline, await pipeline.update()

    try:
        return asyncio.run(run())
    finally:
        virt.close()
        disk.close()


def test_estimate_covers_the_real_document(tmp_path):
    config = config_mod.load(SAP)
    pipeline, report = run_update(config, write_node(tmp_path, 100), tmp_path / "disk", 1024 * 1024)
    assert report.published and report.vms == 100
    per_vm = sum(len(f.data) for f in pipeline.rendered.vms.values()) / 100
    est = capacity.estimate(config)
    # Never promises room that is not there, and is not wasteful either.
    assert per_vm <= est.vm_bytes <= per_vm * 1.5
    assert est.vms == (disk_format.capacity(256 * 1024) - est.host_bytes) // est.vm_bytes
    # The SAP set at the default 256 KiB: a few hundred VMs.
    assert 300 <= est.vms <= 420
    assert capacity.size_for(config, 1000) * 1024 >= 16 + est.host_bytes + 1000 * per_vm


def test_warns_before_the_disk_fills(tmp_path, caplog):
    config = config_mod.load(SAP)
    uri = write_node(tmp_path, 12)
    with caplog.at_level(logging.WARNING, logger="vhostmd.publish.capacity"):
        _, report = run_update(config, uri, tmp_path / "disk", 10 * 1024)
    assert report.published
    (warning,) = [r.message for r in caplog.records]
    assert "is 9" in warning and "full" in warning and "12 VMs" in warning
    assert "raise <size>" in warning


def test_no_warning_with_room(tmp_path, caplog):
    config = config_mod.load(SAP)
    with caplog.at_level(logging.WARNING, logger="vhostmd.publish.capacity"):
        run_update(config, write_node(tmp_path, 12), tmp_path / "disk", 64 * 1024)
    assert caplog.records == []


def test_check_and_start_up_say_how_many_vms_fit(tmp_path):
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(SAP.read_text().replace("/dev/shm/vhostmd0", str(tmp_path / "disk")))
    check = subprocess.run([sys.executable, "-m", "vhostmd", "--check", "-f", str(conf)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0
    assert "holds about" in check.stdout and "VMs" in check.stdout
    once = subprocess.run([sys.executable, "-m", "vhostmd", "--once", "-c", "test:///default",
                           "-f", str(conf)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    assert "holds about" in once.stderr
