"""Per-VM fragment reuse: what is reused must be exactly what a fresh render gives."""

from __future__ import annotations

from lxml import etree

from vhostmd.model import Domain, Metric, Snapshot, VmMetrics
from vhostmd.render import Renderer


def signed_sum(data: bytes) -> int:
    return sum(b - 256 if b > 127 else b for b in data) % 2**32


def snapshot(vms) -> Snapshot:
    return Snapshot(host=(Metric("HostName", "string", "h"),), vms=tuple(vms))


def vm(domain: Domain, cpu: str, mem: Metric) -> VmMetrics:
    return VmMetrics(domain, (Metric("TotalCPUTime", "real64", cpu, "s"), mem))


def parsed(document: bytes):
    root = etree.fromstring(document)
    return [(e.get("id"), e.findtext("name"), e.findtext("value")) for e in root]


def test_reused_and_changed_fragments_render_as_fresh_ones():
    renderer = Renderer()
    a = Domain(1, "a", "00000000-0000-0000-0000-00000000000a")
    b = Domain(2, "b&<c>", "00000000-0000-0000-0000-00000000000b")
    mem = Metric("Mem", "uint64", "1024")
    renderer.render(snapshot([vm(a, "1.000000", mem), vm(b, "2.000000", mem)]))
    # a's CPU time changes (same Metric object for Mem), b restarts with a
    # new id, and a value needs escaping.
    b2 = Domain(7, b.name, b.uuid)
    weird = Metric("Mem", "uint64", "1024")
    second = snapshot([vm(a, "1.500000", mem), vm(b2, "x<&>é", weird)])
    reused = renderer.render(second)
    fresh = Renderer().render(second)
    assert reused.document == fresh.document
    assert reused.document_sum == fresh.document_sum == signed_sum(fresh.document)
    assert parsed(reused.document) == [
        (None, "HostName", "h"), ("1", "TotalCPUTime", "1.500000"), ("1", "Mem", "1024"),
        ("7", "TotalCPUTime", "x<&>é"), ("7", "Mem", "1024"),
    ]


def test_unchanged_vm_keeps_its_fragment():
    renderer = Renderer()
    a = Domain(1, "a", "00000000-0000-0000-0000-00000000000a")
    mem = Metric("Mem", "uint64", "1024")
    first = renderer.render(snapshot([vm(a, "1.000000", mem)]))
    second = renderer.render(snapshot([vm(a, "1.000000", mem)]))
    assert second.vms[a.uuid] is first.vms[a.uuid]
