"""The guest tools reading what the daemon published: the two halves together."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

from support import ROOT, config_xml, metric, start_vhostmd, stop, vhostmd, write_node
from vhostmd_guest import request_metrics
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


def _bridge(listener: socket.socket, master: int, stop: threading.Event) -> None:
    """QEMU's part: accept the daemon's connection and copy bytes to and from the guest's port."""
    conn, _ = listener.accept()
    with conn:
        while not stop.is_set():
            ready, _, _ = select.select([conn, master], [], [], 0.05)
            if conn in ready:
                data = conn.recv(65536)
                if not data:
                    return
                os.write(master, data)
            if master in ready:
                conn.sendall(os.read(master, 65536))


def _listen(channels, domain_id: int, name: str) -> socket.socket:
    """A channel socket where libvirt has QEMU listen for this domain."""
    directory = channels / f"domain-{domain_id}-{name}"
    directory.mkdir(parents=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(directory / "org.github.vhostmd.1"))
    listener.listen(1)
    return listener


def test_guest_reads_its_own_metrics_over_the_daemon_virtio_channel(tmp_path):
    vms = write_node(tmp_path / "node.xml", ["alpha", "beta"])
    channels = tmp_path / "channels"
    listeners = [_listen(channels, i, vm.name) for i, vm in enumerate(vms, start=1)]
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(
        METRICS, period=1, transports=("virtio",),
        virtio=f"<virtio><channel_path>{channels}</channel_path><max_channels>8</max_channels>"
               "<expiration_time>15</expiration_time></virtio>",
    ))
    daemon = start_vhostmd("-c", f"test://{tmp_path}/node.xml", "-f", str(conf))
    master, slave = os.openpty()
    stop_bridge = threading.Event()
    bridge = threading.Thread(target=_bridge, args=(listeners[0], master, stop_bridge), daemon=True)
    bridge.start()
    try:
        answer = request_metrics(os.ttyname(slave), timeout=20, use_pyserial=False)
        assert answer.startswith(b"<metrics>\n") and answer.endswith(b"</metrics>\n\n")
        root = ET.fromstring(answer)
        assert {m.get("uuid") for m in root if m.get("context") == "vm"} == {vms[0].uuid}
        assert [m.findtext("value") for m in root if m.findtext("name") == "VmName"] == ["alpha"]
        assert [m.findtext("name") for m in root if m.get("context") == "host"] == [
            "NumCPUs", "TotalCPUTime", "HostName"]
        # The other guest, asking on its own channel, gets only its own.
        conn, _ = listeners[1].accept()
        with conn:
            conn.sendall(b"GET /metrics/XML\r\n\r\n")
            data = b""
            while not data.endswith(b"\n\n"):
                data += conn.recv(65536)
        assert vms[1].uuid.encode() in data and vms[0].uuid.encode() not in data
    finally:
        stop_bridge.set()
        bridge.join(5)
        stop(daemon)
        os.close(master)
        os.close(slave)
        for listener in listeners:
            listener.close()
