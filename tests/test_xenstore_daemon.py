"""The daemon's xenstore transport end to end: libvirt's test driver, a real
oxenstored, the Xen tools and the guest's ``vm-dump-metrics -x``.

The test plays libxl: it creates ``/local/domain/<id>`` (``n0,r<id>``, with
``vm``, ``name`` and ``domid``) for the test driver's domains, whose ids are
1..N in the node file's order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from support import (ROOT, config_xml, disk_document, metric, start_vhostmd, stop, vhostmd,
                     wait_for, write_node)
from xenstored import xenstored, xenstored_kit  # noqa: F401  (fixtures)

NAMES = ["web&<1>", "db", "not-in-xenstore"]
METRICS = (
    metric("HostName", "echo 'host<&>'")
    + metric("NumCPUs", "echo 4", "uint32")
    + metric("TotalCPUTime", "echo VMID.25", "real64", context="vm", attrs=' unit="s"')
    + metric("VmName", "echo NAME", context="vm")
)


@pytest.fixture
def env(xenstored, monkeypatch):
    """The daemon's environment: xenstored found through XENSTORED_PATH."""
    monkeypatch.setenv("XENSTORED_PATH", str(xenstored.socket))
    monkeypatch.delenv("XENSTORED_RUNDIR", raising=False)


def setup(tmp_path, xenstored, metrics=METRICS, known=2, transports=("xenstore",)):
    vms = write_node(tmp_path / "node.xml", NAMES)
    for domid, vm in enumerate(vms[:known], 1):
        xenstored.add_domain(domid, vm.uuid, vm.name)
    conf = tmp_path / "vhostmd.conf"
    disk = tmp_path / "vhostmd0" if "vbd" in transports else None
    conf.write_text(config_xml(metrics, disk=disk, transports=transports))
    return conf, vms


def guest_dump(xenstored, domid: int, *args: str) -> subprocess.CompletedProcess:
    """``vm-dump-metrics -x`` as domain *domid* would run it.

    The guest reads its own id from the relative key ``domid``. Over the
    socket every client is dom0, whose relative paths resolve under
    /local/domain/0: the id is put there, where the guest looks.
    """
    xenstored.write("/local/domain/0/domid", str(domid))
    return subprocess.run(
        [sys.executable, "-m", "vhostmd_guest", "-x", *args], capture_output=True, timeout=30,
        env={"PYTHONPATH": str(ROOT / "guest"), "PATH": "/usr/bin:/bin",
             "XENSTORED_PATH": str(xenstored.socket)},
    )


def test_once_writes_each_vm_its_own_document_and_the_guest_reads_it(tmp_path, xenstored, env):
    conf, vms = setup(tmp_path, xenstored)
    result = vhostmd("--once", "-c", f"test://{tmp_path}/node.xml", "-f", str(conf))
    assert result.returncode == 0, result.stderr
    for domid, vm in enumerate(vms[:2], 1):
        path = f"/local/domain/{domid}/metrics"
        value = xenstored.read(path)
        root = ET.fromstring(value)  # well-formed, names and values escaped
        host = {m.findtext("name"): m.findtext("value") for m in root if m.get("context") == "host"}
        assert host == {"HostName": "host<&>", "NumCPUs": "4"}
        own = [m for m in root if m.get("context") == "vm"]
        assert {m.get("uuid") for m in own} == {vm.uuid}
        assert {m.findtext("name"): m.findtext("value") for m in own} == {
            "TotalCPUTime": f"{domid}.25", "VmName": vm.name}
        assert xenstored.perms(path) == f"n0,r{domid}"
        # The guest tool prints the value it read, byte for byte.
        dumped = guest_dump(xenstored, domid)
        assert dumped.returncode == 0, dumped.stderr
        assert dumped.stdout == value
        records = json.loads(guest_dump(xenstored, domid, "--json").stdout)["metrics"]
        assert {r["name"]: r["value"] for r in records if r["context"] == "vm"}["VmName"] == vm.name
    # libvirt lists the third VM, xenstored does not know it: nothing is created.
    assert not xenstored.exists("/local/domain/3")
    assert "VM not-in-xenstore (id 3) has no /local/domain/3/vm" in result.stderr


def test_once_over_the_limit_writes_nothing_exits_1_and_status_says_why(tmp_path, xenstored, env):
    long_value = "x" * 2100
    conf, _ = setup(tmp_path, xenstored, metrics=METRICS + metric("Big", f"echo {long_value}"))
    state = tmp_path / "status.json"
    result = vhostmd("--once", "-c", f"test://{tmp_path}/node.xml", "-f", str(conf),
                     "--status-file", str(state))
    assert result.returncode == 1
    assert "VM db's document of" in result.stderr
    assert "bytes is over the limit of 2048 bytes" in result.stderr
    assert not xenstored.exists("/local/domain/1/metrics")
    assert not xenstored.exists("/local/domain/2/metrics")
    shown = vhostmd("status", "--status-file", str(state)).stdout
    assert "xenstore: 3 values, fullest /local/domain/" in shown
    assert "over the limit of 2048 bytes" in shown
    saved = json.loads(state.read_text())
    xs = next(t for t in saved["transports"] if t["name"] == "xenstore")
    assert all(d["size"] == 2048 and d["used"] > 2048 for d in xs["disks"])


def test_check_says_how_close_a_vms_document_comes_to_the_limit(tmp_path):
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(METRICS, transports=("xenstore",)))
    out = vhostmd("--check", "-f", str(conf))
    assert out.returncode == 0, out.stderr
    line = next(li for li in out.stdout.splitlines() if li.startswith("xenstore:"))
    assert "of 2048 bytes" in line and "% of <xenstore><max_size>" in line
    assert "warning" not in out.stdout
    many = "".join(metric(f"Metric{i}", "echo 1", "uint64") for i in range(30))
    conf.write_text(config_xml(many, transports=("xenstore",)))
    out = vhostmd("--check", "-f", str(conf))
    assert "warning: VM documents will be over the xenstore limit and not written" in out.stdout


def test_a_running_daemon_rides_out_a_xenstored_restart(tmp_path, xenstored, env):
    changing = metric("Now", "date +%s%N", "uint64")
    conf, vms = setup(tmp_path, xenstored, metrics=METRICS + changing, transports=("vbd", "xenstore"))
    proc = start_vhostmd("-c", f"test://{tmp_path}/node.xml", "-f", str(conf))
    try:
        wait_for(lambda: xenstored.exists("/local/domain/2/metrics"))
        first = xenstored.read("/local/domain/1/metrics")
        wait_for(lambda: xenstored.read("/local/domain/1/metrics") != first)
        xenstored.stop()
        # The disk goes on being published while xenstored is away.
        seen = {disk_document(tmp_path / "vhostmd0")}
        wait_for(lambda: seen.add(disk_document(tmp_path / "vhostmd0")) or len(seen) >= 4)
        xenstored.start()  # empty, as after a host's xenstored restart: libxl fills it again
        for domid, vm in enumerate(vms[:2], 1):
            xenstored.add_domain(domid, vm.uuid, vm.name)
        wait_for(lambda: xenstored.exists("/local/domain/1/metrics")
                 and xenstored.exists("/local/domain/2/metrics"))
        assert xenstored.perms("/local/domain/2/metrics") == "n0,r2"
        time.sleep(1.5)
    finally:
        log = stop(proc)
    assert proc.returncode == 0, log
    # Logged once each, not once per update (later lines say it cleared).
    reported = [line.split(": ", 2)[2] for line in log.splitlines()
                if line.startswith(("vhostmd: WARNING: ", "vhostmd: ERROR: "))]
    assert sum(r.startswith("xenstore: cannot connect to xenstored at") for r in reported) == 1, log
    assert sum(r.startswith("xenstore: lost the connection to xenstored") for r in reported) <= 1, log
    assert "connected to xenstored at" in log and "again" in log
    assert log.count("has no /local/domain/3/vm") == 1, log
    assert os.path.exists(tmp_path / "vhostmd0")
