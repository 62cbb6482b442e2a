"""The guest tools reading what the daemon published: the two halves together."""

from __future__ import annotations

import json
import subprocess
import sys

from support import ROOT, config_xml, metric, vhostmd, write_node
from vhostmd_guest.disk import DiskReader

NAMES = ["web 1", "db;2", "café"]


def publish(tmp_path, metrics: str):
    vms = write_node(tmp_path / "node.xml", NAMES)
    disk = tmp_path / "vhostmd0"
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(metrics, disk=disk))
    result = vhostmd("--once", "-c", f"test://{tmp_path}/node.xml", "-f", str(conf))
    assert result.returncode == 0, result.stderr
    return disk, vms


def dump(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vhostmd_guest", *args],
        capture_output=True, env={"PYTHONPATH": str(ROOT / "guest"), "PATH": "/usr/bin:/bin"}, timeout=30,
    )


METRICS = (
    metric("NumCPUs", "echo 4", "uint32")
    + metric("TotalCPUTime", "echo 12.5", "real64", attrs=' unit="s"')
    + metric("HostName", "echo 'host<&>'")
    + metric("TotalCPUTime", "echo VMID.25", "real64", context="vm", attrs=' unit="s"')
    + metric("VmName", "echo NAME", context="vm")
)


def test_vm_dump_metrics_prints_the_daemon_disk_byte_for_byte(tmp_path):
    disk, _ = publish(tmp_path, METRICS)
    raw = disk.read_bytes()
    length = int.from_bytes(raw[12:16], "big")
    result = dump("-b", "--device", str(disk))
    assert result.returncode == 0, result.stderr
    assert result.stdout == raw[16:16 + length]


def test_vm_dump_metrics_json_types_every_value(tmp_path):
    disk, vms = publish(tmp_path, METRICS)
    result = dump("--json", "--device", str(disk))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["source"] == "disk"
    records = answer["metrics"]
    host = {r["name"]: r for r in records if r["context"] == "host"}
    assert host["NumCPUs"]["value"] == 4
    assert host["TotalCPUTime"]["value"] == 12.5 and host["TotalCPUTime"]["unit"] == "s"
    assert host["HostName"]["value"] == "host<&>"
    vm_names = {r["uuid"]: r["value"] for r in records if r["name"] == "VmName"}
    assert vm_names == {vm.uuid: vm.name for vm in vms}


def test_library_reads_host_and_each_vm(tmp_path):
    disk, vms = publish(tmp_path, METRICS)
    reader = DiskReader(str(disk))
    assert reader.value("NumCPUs") == 4
    assert reader.host_cpu().total_cpu_time == 12.5
    for i, vm in enumerate(vms, start=1):
        assert reader.value("VmName", "vm", uuid=vm.uuid) == vm.name
        assert reader.value("TotalCPUTime", "vm", uuid=vm.uuid) == float(f"{i}.25")
