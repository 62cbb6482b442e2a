"""Built-ins against what the equivalent shell pipeline prints on this machine.

Values that move between the two reads (memory, CPU time, counters) are
compared within a tolerance stated next to each; fixed facts must match
exactly. The pipelines are the ones the C vhostmd's and RHEL's configurations
run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.nodes import write_node
from vhostmd import config as config_mod
from vhostmd.collect.actions import ActionRunner
from vhostmd.collect.collector import Collector
from vhostmd.collect.virt import Libvirt

ROOT = Path(__file__).resolve().parent.parent
SAP = ROOT / "conf" / "vhostmd.conf"
UPSTREAM = ROOT / "conf" / "vhostmd-upstream.conf"

#: Memory moves while tests of other programs run: MiB of slack.
MEM_TOLERANCE_MIB = 64
#: CPU seconds the host can accumulate between two reads, per CPU.
CPU_TOLERANCE_S = 2.0 * (os.cpu_count() or 1)


def sh(command: str) -> str:
    return subprocess.run(["/bin/sh", "-c", command], check=True, capture_output=True,
                          text=True, timeout=30).stdout.strip()


def collect(config_path: Path, uri: str, updates: int = 1, pause: float = 0.0):
    """Run *updates* collections; return the last snapshot and its problems."""
    config = config_mod.load(config_path)
    virt = Libvirt(uri)

    async def run():
        collector = Collector(config, ActionRunner(dict(os.environ)), virt)
        snapshot = None
        for i in range(updates):
            if i:
                await asyncio.sleep(pause)
            snapshot = await collector.collect()
        return snapshot

    try:
        return asyncio.run(run())
    finally:
        virt.close()


def host_values(snapshot) -> dict[str, str]:
    return {m.name: m.value for m in snapshot.host}


@pytest.fixture(scope="module")
def sap():
    snapshot = collect(SAP, "test:///default")
    assert snapshot.problems == []
    return host_values(snapshot)


@pytest.fixture(scope="module")
def upstream():
    snapshot = collect(UPSTREAM, "test:///default", updates=2, pause=0.2)
    assert snapshot.problems == []
    return host_values(snapshot)


def test_host_names_match_hostname(sap):
    assert sap["HostName"] == sh("hostname")
    assert sap["HostSystemInfo"] == sh("hostname -s")


def test_time_matches_date(sap):
    assert abs(int(sap["Time"]) - int(sh("date +%s"))) <= 5


@pytest.mark.skipif(not shutil.which("virsh"), reason="virsh not installed")
def test_libvirt_facts_match_virsh(sap, upstream):
    version = sh("virsh -c test:///default version | awk '/Running hypervisor/ {print $(NF-1),$NF}'")
    assert sap["VirtProductInfo"] == version == upstream["VirtualizationProductInfo"]
    cpus = sh("virsh -c test:///default nodeinfo | awk '/^CPU\\(s\\)/ {print $2}'")
    assert sap["NumberOfPhysicalCPUs"] == cpus == upstream["TotalPhyCPUs"] == upstream["NumCPUs"]
    mem = sh("echo $(( $(virsh -c test:///default nodeinfo | awk '/^Memory/ {print $3}') / 1024 ))")
    assert upstream["TotalPhyMem"] == mem


def test_vendor_is_the_os_name(sap):
    name = sh(". /etc/os-release && echo \"$NAME\"")
    assert sap["VirtualizationVendor"] == name


def test_host_cpu_time_matches_proc_stat_arithmetic(sap):
    shell = float(sh("awk -v hz=\"$(getconf CLK_TCK)\" '$1 == \"cpu\" "
                     "{printf \"%f\\n\", ($2 + $3 + $4) / hz}' /proc/stat"))
    assert abs(float(sap["TotalCPUTime"]) - shell) <= CPU_TOLERANCE_S


@pytest.mark.parametrize("metric, pipeline", [
    ("MemoryAllocatedToVirtualServers", "free -m | awk '/^Mem:/ {print $3}'"),
    ("FreePhysicalMemory", "free -m | awk '/^Mem:/ {print $4}'"),
    ("FreeVirtualMemory", "free -mt | awk '/^Total:/ {print $4}'"),
    ("UsedVirtualMemory", "free -mt | awk '/^Total:/ {print $3}'"),
])
def test_sap_memory_matches_free(sap, metric, pipeline):
    assert abs(int(sap[metric]) - int(sh(pipeline))) <= MEM_TOLERANCE_MIB


@pytest.mark.parametrize("metric, pipeline", [
    ("UsedMem", "free | awk '/^Mem:/ { printf \"%d\\n\", $3/1024; }'"),
    ("FreeMem", "free | awk '/^Mem:/ { printf \"%d\\n\", $7/1024; }'"),
])
def test_upstream_memory_matches_its_free_pipelines(upstream, metric, pipeline):
    assert abs(int(upstream[metric]) - int(sh(pipeline))) <= MEM_TOLERANCE_MIB


def test_sap_paging_matches_vmstat_pages_swapped(sap):
    page = int(sh("getconf PAGESIZE"))
    for metric, label in (("PagedInMemory", "pages swapped in"), ("PagedOutMemory", "pages swapped out")):
        pages = int(sh(f"vmstat -s | awk '/{label}/ {{print $1}}'"))
        # Swapping moves by at most a few MiB between the two reads.
        assert abs(int(sap[metric]) - pages * page // 2**20) <= 16


def test_upstream_paging_matches_vmstat_k_paged(upstream):
    for metric, label in (("PagedInMemory", "K paged in"), ("PagedOutMemory", "K paged out")):
        shell = int(sh(f"vmstat -s | awk '/{label}/ {{printf \"%d\\n\", $1;}}'"))
        # Disk I/O of other programs: 1 % or 16 MiB.
        assert abs(int(upstream[metric]) - shell) <= max(16384, shell // 100)


def test_rates_appear_from_the_second_update():
    first = host_values(collect(UPSTREAM, "test:///default", updates=1))
    assert "PageInRate" not in first and "PageFaultRate" not in first
    second = host_values(collect(UPSTREAM, "test:///default", updates=2, pause=0.2))
    assert int(second["PageInRate"]) >= 0 and int(second["PageFaultRate"]) >= 0


@pytest.mark.skipif(not shutil.which("virsh"), reason="virsh not installed")
def test_vm_values_match_virsh_dominfo(tmp_path):
    uri = write_node(tmp_path, 5)
    snapshot = collect(SAP, uri)
    assert snapshot.problems == []
    assert [vm.domain.id for vm in snapshot.vms] == [1, 2, 3, 4, 5]
    for vm in snapshot.vms:
        values = {m.name: m.value for m in vm.metrics}
        info = dict(
            line.split(":", 1) for line in
            sh(f"virsh -c '{uri}' dominfo {vm.domain.name}").splitlines() if ":" in line
        )
        assert values["ResourceProcessorLimit"] == info["CPU(s)"].strip()
        assert int(values["ResourceMemoryLimit"]) == int(info["Max memory"].split()[0]) // 1024
        assert int(values["PhysicalMemoryAllocatedToVirtualSystem"]) == \
            int(info["Used memory"].split()[0]) // 1024
        # The test driver's CPU time is the wall clock: seconds apart.
        cpu = float(info["CPU time"].strip().rstrip("s"))
        assert abs(float(values["TotalCPUTime"]) - cpu) <= 30


def test_shipped_config_has_the_sap_set_exactly():
    """SPEC section 8: names, contexts and types; no unit attributes."""
    expected = [
        ("host", "HostName", "string"), ("host", "HostSystemInfo", "string"),
        ("host", "Time", "uint64"), ("host", "VirtualizationVendor", "string"),
        ("host", "VirtProductInfo", "string"), ("host", "NumberOfPhysicalCPUs", "uint32"),
        ("host", "TotalCPUTime", "real64"), ("host", "MemoryAllocatedToVirtualServers", "uint64"),
        ("host", "FreePhysicalMemory", "uint64"), ("host", "FreeVirtualMemory", "uint64"),
        ("host", "UsedVirtualMemory", "uint64"), ("host", "PagedInMemory", "uint64"),
        ("host", "PagedOutMemory", "uint64"), ("vm", "TotalCPUTime", "real64"),
        ("vm", "ResourceProcessorLimit", "uint32"), ("vm", "ResourceMemoryLimit", "uint64"),
        ("vm", "PhysicalMemoryAllocatedToVirtualSystem", "uint64"),
    ]
    config = config_mod.load(SAP)
    assert sorted((m.context, m.name, m.type) for m in config.metrics) == sorted(expected)
    assert all(m.builtin and m.unit is None for m in config.metrics)
    assert config.transports == {"vbd", "virtio"}


def test_upstream_config_keeps_the_reference_units():
    config = config_mod.load(UPSTREAM)
    units = {(m.context, m.name): m.unit for m in config.metrics}
    assert units[("host", "TotalPhyMem")] == "MiB"
    assert units[("host", "TotalCPUTime")] == "s" and units[("vm", "TotalCPUTime")] == "s"
    assert all(m.builtin for m in config.metrics)
    group = next(m for m in config.metrics if m.type == "group")
    assert [v.name for v in group.outputs()] == ["PageInRate", "PageFaultRate"]


def test_builtins_and_actions_mix_in_config_order(tmp_path):
    conf = tmp_path / "mixed.conf"
    conf.write_text("""<vhostmd><globals><update_period>5</update_period><transport>vbd</transport></globals>
<metrics>
  <metric type="uint32" context="vm"><name>Cpus</name><builtin>vm.vcpus</builtin></metric>
  <metric type="string" context="vm"><name>Name</name><action>echo "NAME"</action></metric>
  <metric type="uint64" context="vm"><name>Max</name><builtin>vm.memory_max_mib</builtin></metric>
</metrics></vhostmd>""")
    config = config_mod.load(conf)
    virt = Libvirt(write_node(tmp_path, 3))
    runner = ActionRunner(dict(os.environ))

    async def run():
        collector = Collector(config, runner, virt)
        first = await collector.collect()
        return first, await collector.collect()

    try:
        first, second = asyncio.run(run())
    finally:
        virt.close()
    assert first.problems == []
    assert [[(m.name, m.value) for m in vm.metrics] for vm in first.vms] == [
        [("Cpus", str(i % 4 + 1)), ("Name", f"vm{i}"), ("Max", str((i % 8 + 1) * 1024))]
        for i in (1, 2, 3)
    ]
    # One shell per VM per update for the action; none for the built-ins.
    assert runner.started == 6
    # Unchanged built-in values are handed on as the same objects (cheap to compare).
    assert second.vms[0].metrics[0] is first.vms[0].metrics[0]
