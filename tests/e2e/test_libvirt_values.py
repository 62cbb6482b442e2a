"""The daemon against a real libvirtd with paused QEMU domains.

Not a timing test: it checks that the VM values the shipped configuration
publishes are exactly libvirt's own answers, and that an update sends QEMU
no monitor command (libvirtd logs every monitor message it sends, so the
count is exact, not a CPU figure that could flake). A built-in that needs
the bulk stats call's balloon group still gets its monitor commands, once
per domain per update.
"""

import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from benchmarks.real_host_cost import MONITOR_SEND, domain_xml
from support import ROOT, disk_document, vhostmd

from . import libvirtd

pytestmark = pytest.mark.e2e

#: name, MiB, vCPUs: different values per domain, so a mix-up shows.
DOMAINS = [("vhostmd-lv-a", 32, 1), ("vhostmd-lv-b", 48, 2), ("vhostmd-lv-c", 40, 3)]


class Host:
    def __init__(self, daemon: libvirtd.SessionLibvirtd, conn: libvirt.virConnect, top: Path):
        self.daemon, self.conn, self.top = daemon, conn, top

    def monitor_messages(self) -> int:
        """QEMU monitor messages libvirtd has sent so far (its debug log of the monitor)."""
        return self.daemon.log.read_bytes().count(MONITOR_SEND)

    def update(self, config: Path) -> str:
        """One update of the daemon (vhostmd --once) with *config*; the published document."""
        disk = self.top / "vhostmd0"
        text = config.read_text().replace("/dev/shm/vhostmd0", str(disk))
        conf = self.top / "vhostmd.conf"
        conf.write_text(text)
        run = vhostmd("--once", "-c", self.daemon.uri, "-f", str(conf))
        assert run.returncode == 0, run.stderr
        return disk_document(disk)


@pytest.fixture(scope="module")
def host(host_ready):
    top = Path(tempfile.mkdtemp(prefix="vmlv-", dir="/tmp"))
    top.chmod(0o755)
    daemon = libvirtd.SessionLibvirtd(top, libvirtd.unprivileged_account(),
                                      log_filters="1:qemu.qemu_monitor")
    try:
        daemon.start()
        conn = daemon.connect()
        for name, mib, vcpus in DOMAINS:
            conn.createXML(domain_xml(name, mib, vcpus), libvirt.VIR_DOMAIN_START_PAUSED)
        host = Host(daemon, conn, top)
        # The first connection that asks for the hypervisor's version makes
        # libvirtd probe QEMU's capabilities (some fifty monitor commands to
        # a QEMU of its own), once: not part of any update.
        host.update(ROOT / "conf" / "vhostmd.conf")
        yield host
        conn.close()
    finally:
        daemon.stop()
        shutil.rmtree(top, ignore_errors=True)


def vm_values(document: str) -> dict[str, dict[str, str]]:
    """Each VM's metrics by name, keyed by the VM's uuid (read with ElementTree)."""
    vms: dict[str, dict[str, str]] = {}
    for element in ET.fromstring(document).findall("metric"):
        if element.get("context") == "vm":
            vms.setdefault(element.get("uuid"), {})[element.findtext("name")] = (
                element.findtext("value") or "").strip()
    return vms


def libvirt_values(conn: libvirt.virConnect) -> dict[str, dict[str, str]]:
    """What the shipped configuration should publish, from libvirt's own answers."""
    expected = {}
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        _state, max_kib, kib, vcpus, cpu_ns = dom.info()
        expected[dom.UUIDString()] = {
            "TotalCPUTime": f"{cpu_ns / 1e9:f}",
            "ResourceProcessorLimit": str(vcpus),
            "ResourceMemoryLimit": str(max_kib // 1024),
            "PhysicalMemoryAllocatedToVirtualSystem": str(kib // 1024),
        }
    return expected


def test_published_vm_values_are_libvirts_and_no_monitor_command_is_sent(host):
    before = libvirt_values(host.conn)
    sent = host.monitor_messages()
    document = host.update(ROOT / "conf" / "vhostmd.conf")
    assert host.monitor_messages() == sent, "an update sent QEMU monitor commands"
    after = libvirt_values(host.conn)
    # A paused QEMU uses (almost) no CPU; should its CPU time move in
    # between, the comparison would not say which value was current.
    assert before == after
    assert vm_values(document) == after
    assert len(after) == len(DOMAINS)
    # The same values as libvirt's bulk call answers (which asks QEMU for them).
    stats = host.conn.getAllDomainStats(
        libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON,
        libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
    for dom, record in stats:
        values = after[dom.UUIDString()]
        assert values["ResourceProcessorLimit"] == str(record["vcpu.current"])
        assert values["ResourceMemoryLimit"] == str(record["balloon.maximum"] // 1024)
        assert values["PhysicalMemoryAllocatedToVirtualSystem"] == str(
            record["balloon.current"] // 1024)
    # The log does show monitor traffic when there is some: that bulk call made it.
    assert host.monitor_messages() > sent


def test_a_builtin_that_needs_the_balloon_group_asks_qemu_once_per_update(host):
    shipped = (ROOT / "conf" / "vhostmd.conf").read_text()
    rss = ("<metric type=\"uint64\" context=\"vm\"><name>ResidentMemory</name>"
           "<builtin>vm.memory_rss_mib</builtin></metric>\n  </metrics>")
    config = host.top / "rss.conf"
    config.write_text(shipped.replace("</metrics>", rss))
    host.update(config)  # the first time, libvirt also looks up each balloon's QOM path
    counts = []
    for _ in range(2):
        sent = host.monitor_messages()
        document = host.update(config)
        counts.append(host.monitor_messages() - sent)
    # One bulk call per update: the same commands each time, a few per domain.
    assert counts[0] == counts[1] and len(DOMAINS) <= counts[0] <= 3 * len(DOMAINS), counts
    values = vm_values(document)
    assert len(values) == len(DOMAINS)
    for uuid, metrics in values.items():
        assert re.fullmatch(r"[1-9][0-9]*", metrics["ResidentMemory"]), (uuid, metrics)
    # Back to the shipped set: silent again.
    sent = host.monitor_messages()
    host.update(ROOT / "conf" / "vhostmd.conf")
    assert host.monitor_messages() == sent


def test_the_real_host_benchmark_runs(host_ready):
    """The command in docs/performance.md works (a short run; its figures are not checked)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "real_host_cost.py"), "--vms", "2",
         "--updates", "1", "--warmup", "0", "--idle", "0.1"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = run.stdout[run.stdout.rindex("| VMs |"):]
    rows = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert rows["update (shipped config)"].rstrip().endswith("| 0 | 0 |")  # QEMU CPU, commands
    assert "info() per domain, on the event loop's thread" in rows
    # The balloon group does ask QEMU (and its first call also finds the balloons).
    assert int(rows["bulk stats: state, balloon"].split("|")[-2]) >= 4
    assert "teardown" in run.stdout
