"""VM figures from virDomainGetInfo, the bulk stats call for what info() lacks, and the domain list."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import libvirt
import pytest

from benchmarks.nodes import domain_uuid, write_node
from vhostmd.collect import domain_stats
from vhostmd.collect.domain_stats import DomainSample
from vhostmd.model import Domain
from vhostmd.collect.virt import Libvirt

GROUPS = frozenset({"cpu", "vcpu", "balloon"})
DOMAIN = Domain(7, "web", "0f0e0d0c-0b0a-0908-0706-050403020100")

# Shaped as libvirt documents virConnectGetAllDomainStats' answer for a
# QEMU domain (libvirt-python gives the typed parameters as a dict).
QEMU_RECORD = {
    "state.state": 1, "state.reason": 1,
    "cpu.time": 123_456_789_000, "cpu.user": 100_000_000_000, "cpu.system": 20_000_000_000,
    "balloon.current": 2_097_152, "balloon.maximum": 4_194_304,
    "vcpu.current": 2, "vcpu.maximum": 4,
    "vcpu.0.state": 1, "vcpu.0.time": 60_000_000_000,
    "vcpu.1.state": 1, "vcpu.1.time": 61_000_000_000,
}


def test_record_of_a_driver_that_answers_every_group():
    sample = domain_stats.parse_record(DOMAIN, QEMU_RECORD)
    assert sample == DomainSample(DOMAIN, state=1, cpu_time_ns=123_456_789_000, vcpus=2,
                                  memory_kib=2_097_152, max_memory_kib=4_194_304)
    assert sample.missing(GROUPS) == ()
    assert sample.running


def test_missing_groups_are_named_and_filled_from_info():
    record = {"state.state": 3, "state.reason": 1}
    sample = domain_stats.parse_record(DOMAIN, record)
    assert sample.missing(GROUPS) == ("balloon", "cpu", "vcpu")
    assert domain_stats.unanswered(GROUPS, [(None, record), (None, QEMU_RECORD)]) == frozenset()
    assert domain_stats.unanswered(GROUPS, [(None, record)]) == GROUPS
    filled = domain_stats.parse_record(DOMAIN, record, [1, 8192, 4096, 3, 5_000_000_000])
    assert filled == DomainSample(DOMAIN, state=3, cpu_time_ns=5_000_000_000, vcpus=3,
                                  memory_kib=4096, max_memory_kib=8192)


def test_flags_ask_only_for_the_needed_groups():
    assert domain_stats.flags_for(frozenset()) == libvirt.VIR_DOMAIN_STATS_STATE
    assert domain_stats.flags_for(frozenset({"cpu"})) == (
        libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL)


def test_shut_off_domains_do_not_count_as_running():
    assert not DomainSample(DOMAIN, state=libvirt.VIR_DOMAIN_SHUTOFF).running
    assert DomainSample(DOMAIN, state=libvirt.VIR_DOMAIN_PAUSED).running


def fetch(virt: Libvirt, groups=GROUPS, node=False):
    return asyncio.run(virt.fetch(groups, node=node))


def test_info_answers_the_shipped_groups_without_a_bulk_call(tmp_path, caplog):
    uri = write_node(tmp_path, 50)
    virt = Libvirt(uri)
    try:
        with caplog.at_level(logging.INFO, logger="vhostmd.collect.virt"):
            first = fetch(virt, node=True)
            bulk_calls = _count_bulk_calls(virt)
            fetch(virt)
        assert bulk_calls == []
        assert [s.domain.id for s in first.samples] == list(range(1, 51))
        for i, sample in enumerate(first.samples, start=1):
            assert sample.domain.name == f"vm{i}" and sample.domain.uuid == domain_uuid(i)
            assert sample.vcpus == i % 4 + 1
            assert sample.max_memory_kib == (i % 8 + 1) * 1024 * 1024
            assert sample.memory_kib == sample.max_memory_kib // 2
            assert sample.cpu_time_ns > 0
            assert sample.rss_kib is None
        assert first.node.cpus == 16 and first.hypervisor.product == "TEST 0.0.2"
        assert not [r for r in caplog.records if "does not answer" in r.message]
    finally:
        virt.close()


def test_only_groups_info_lacks_take_the_bulk_call():
    assert domain_stats.bulk_groups(GROUPS) == frozenset()
    assert domain_stats.bulk_groups(GROUPS | {"memory_stats"}) == {"memory_stats"}
    record = {"state.state": 1, "balloon.current": 1, "balloon.maximum": 2, "balloon.rss": 40960}
    sample = domain_stats.parse_record(DOMAIN, record, [3, 8192, 4096, 2, 7])
    assert (sample.rss_kib, sample.memory_kib, sample.cpu_time_ns) == (40960, 1, 7)


def _count_bulk_calls(virt: Libvirt) -> list:
    """Record every domainListGetStats call made from now on, on the open connection."""
    calls = []
    conn = virt._conn
    original = conn.domainListGetStats
    conn.domainListGetStats = lambda *a: calls.append(a) or original(*a)
    return calls


def _wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_domain_list_follows_lifecycle_events_without_relisting():
    # test:///default is shared by every connection of one process, so a
    # read-write connection can start and stop domains the daemon sees.
    virt = Libvirt("test:///default")
    admin = libvirt.open("test:///default")
    try:
        names = lambda: [s.domain.name for s in fetch(virt).samples]  # noqa: E731
        assert names() == ["test"]
        assert virt.tracker.live
        admin.lookupByName("test").destroy()
        assert _wait_for(lambda: virt.tracker.tracked() == [])
        assert names() == []
        dom = admin.createXML(
            "<domain type='test'><name>fresh</name><memory>1048576</memory>"
            "<vcpu>3</vcpu><os><type>hvm</type></os></domain>", 0)
        assert _wait_for(lambda: len(virt.tracker.tracked()) == 1)
        (sample,) = fetch(virt).samples
        assert (sample.domain.name, sample.domain.id, sample.vcpus) == ("fresh", dom.ID(), 3)
        assert virt.opened == 1 and virt.tracker.events >= 2
        dom.destroy()
        admin.lookupByName("test").create()
    finally:
        virt.close()
        admin.close()


def test_reopened_connection_relists_the_domains(tmp_path):
    virt = Libvirt(write_node(tmp_path, 3))
    try:
        assert len(fetch(virt).samples) == 3
        # What libvirt's close callback does when the daemon's connection drops.
        virt._lost.set()
        samples = fetch(virt).samples
        assert virt.opened == 2
        assert [s.domain.name for s in samples] == ["vm1", "vm2", "vm3"]
    finally:
        virt.close()


def test_domain_list_alone_asks_only_for_state(tmp_path):
    virt = Libvirt(write_node(tmp_path, 4))
    try:
        samples = fetch(virt, groups=frozenset()).samples
        assert [s.domain.id for s in samples] == [1, 2, 3, 4]
        assert all(s.cpu_time_ns is None for s in samples)
        assert [d.name for d in asyncio.run(virt.domains())] == ["vm1", "vm2", "vm3", "vm4"]
    finally:
        virt.close()


def test_unreachable_libvirt_is_a_clear_error(tmp_path):
    from vhostmd.collect.virt import VirtError

    virt = Libvirt(f"test://{tmp_path}/missing.xml")
    try:
        with pytest.raises(VirtError, match="cannot open libvirt connection"):
            fetch(virt)
    finally:
        virt.close()


def test_driver_without_a_bulk_only_group_is_asked_info_alone_after_the_first_update(
        tmp_path, caplog):
    # The test driver answers only the state group of the bulk call.
    groups = GROUPS | {"memory_stats"}
    virt = Libvirt(write_node(tmp_path, 5))
    try:
        with caplog.at_level(logging.INFO, logger="vhostmd.collect.virt"):
            first = fetch(virt, groups)
            bulk_calls = _count_bulk_calls(virt)
            second = fetch(virt, groups)
        assert bulk_calls == []
        strip = lambda samples: [s._replace(cpu_time_ns=None) for s in samples]  # noqa: E731
        assert strip(second.samples) == strip(first.samples)
        assert all(s.cpu_time_ns > 0 and s.vcpus and s.rss_kib is None for s in second.samples)
        fallback = [r for r in caplog.records if "does not answer stats group" in r.message]
        assert len(fallback) == 1 and "memory_stats" in fallback[0].message
        # Asking for the domain list alone still takes the one bulk call.
        assert [s.domain.id for s in fetch(virt, groups=frozenset()).samples] == [1, 2, 3, 4, 5]
        assert len(bulk_calls) == 1
    finally:
        virt.close()


def test_info_alone_drops_domains_that_stopped_or_vanished():
    from vhostmd.collect.domain_events import Tracked

    # Real domains of the test driver, stopped and removed for real: a
    # persistent one destroyed stays defined and shut off, a transient one
    # destroyed is gone (its handle's info() fails with VIR_ERR_NO_DOMAIN).
    admin = libvirt.open("test:///default")
    xml = ("<domain type='test'><name>{}</name><memory>8192</memory><vcpu>2</vcpu>"
           "<os><type>hvm</type></os></domain>")
    virt = Libvirt(None)
    forgotten = []
    virt.tracker.forget = forgotten.extend  # what the tracker is told
    off = vanished = None
    try:
        running = admin.lookupByName("test")
        off = admin.defineXML(xml.format("stats-off"))
        off.create()
        vanished = admin.createXML(xml.format("stats-vanished"), 0)
        tracked = [Tracked(Domain(d.ID(), d.name(), d.UUIDString()), d, b"")
                   for d in (running, off, vanished)]
        off.destroy()
        vanished.destroy()
        with pytest.raises(libvirt.libvirtError) as gone:
            vanished.info()
        assert gone.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
        assert off.info()[0] == libvirt.VIR_DOMAIN_SHUTOFF

        samples = virt._infos(tracked)
        assert [s.domain.name for s in samples] == ["test"]
        assert samples[0].running and samples[0].vcpus == running.info()[3]
        assert forgotten == [off.UUIDString(), tracked[2].domain.uuid]
    finally:
        if off is not None:
            off.undefine()
        virt.close()
        admin.close()


def test_a_hung_libvirt_call_is_given_up_and_later_calls_fail_fast_until_it_returns(tmp_path):
    from vhostmd.collect.virt import VirtError

    virt = Libvirt(write_node(tmp_path, 2), timeout=0.3)
    released = threading.Event()

    def hang(conn):  # what a libvirtd that stopped answering looks like to the caller
        released.wait(10)
        return "late"

    async def scenario():
        with pytest.raises(VirtError, match="did not answer within 0.3 s"):
            await virt.call(hang)
        with pytest.raises(VirtError, match="has not returned yet"):
            await virt.fetch(GROUPS)
        released.set()
        for _ in range(500):  # until the hung call has returned
            try:
                return await virt.fetch(GROUPS)
            except VirtError:
                await asyncio.sleep(0.01)

    try:
        assert len(asyncio.run(scenario()).samples) == 2
    finally:
        released.set()
        virt.close()


def test_calls_run_on_the_event_loops_thread(tmp_path):
    # There libvirt's stop-and-restart of watching the socket around a call
    # needs no wake-up of the loop (docs/performance.md).
    virt = Libvirt(write_node(tmp_path, 1))
    try:
        name = asyncio.run(virt.call(lambda _conn: threading.current_thread().name))
        assert name == "libvirt-events"
        assert len(fetch(virt).samples) == 1
    finally:
        virt.close()
