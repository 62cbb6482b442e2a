"""Rendering metrics into the document the guests read.

The shape is the C daemon's (two-space indentation, single-quoted attributes
in the order type, context, id, uuid, unit), with names, values and
attributes XML-escaped. Rendering is split into fragments (the host's, then
one per VM) so that an update re-renders only the VMs whose values changed,
and so that a virtio answer is the host fragment plus one VM's fragment.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import disk_format
from .model import Domain, Metric, Snapshot, VmMetrics

DOCUMENT_START = b"<metrics>\n"
DOCUMENT_END = b"</metrics>\n"
#: A virtio answer ends with a blank line: that is how the guest knows it is whole.
ANSWER_END = b"</metrics>\n\n"
HOST_UNAVAILABLE = b"  <!-- host metrics not available -->\n"
VM_UNAVAILABLE = b"  <!-- VM metrics not available -->\n"

_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", '"': "&quot;"})


def escape_text(text: str) -> str:
    # Most values are numbers: a substring test is far cheaper than translate().
    if "&" in text or "<" in text or ">" in text:
        return text.translate(_TEXT_ESCAPES)
    return text


def escape_attr(text: str) -> str:
    if "&" in text or "<" in text or ">" in text or "'" in text or '"' in text:
        return text.translate(_ATTR_ESCAPES)
    return text


def metric_element(metric: Metric, context: str, domain: Domain | None = None) -> str:
    """One ``<metric>`` element, indented as the C daemon indents it."""
    attrs = f"type='{metric.type}' context='{context}'"
    if domain is not None:
        attrs += f" id='{domain.id}' uuid='{escape_attr(domain.uuid)}'"
    if metric.unit:
        attrs += f" unit='{escape_attr(metric.unit)}'"
    return (
        f"  <metric {attrs}>\n"
        f"    <name>{escape_text(metric.name)}</name>\n"
        f"    <value>{escape_text(metric.value)}</value>\n"
        f"  </metric>\n"
    )


@dataclass(frozen=True, slots=True)
class Fragment:
    """Rendered bytes and their disk checksum (sums of parts add up)."""

    data: bytes
    sum: int

    @classmethod
    def of(cls, data: bytes) -> "Fragment":
        return cls(data, disk_format.checksum(data))


_START = Fragment.of(DOCUMENT_START)
_END = Fragment.of(DOCUMENT_END)


def render_host(metrics: tuple[Metric, ...]) -> Fragment:
    return Fragment.of("".join(metric_element(m, "host") for m in metrics).encode())


def render_vm(vm: VmMetrics) -> Fragment:
    return Fragment.of(
        "".join(metric_element(m, "vm", vm.domain) for m in vm.metrics).encode()
    )


_VALUE_END = b"</value>\n  </metric>\n"
_VALUE_END_SUM = disk_format.checksum(_VALUE_END)


class _VmElements:
    """One VM's rendered elements, each kept while its Metric object is the same.

    A VM's id, uuid and metric names rarely change, and the collector hands
    over the very same Metric object while a value stays unchanged: only
    the elements whose values changed (typically CPU time) are rendered, and
    of those only the value is escaped and summed; the head before the value
    is rendered once.
    """

    __slots__ = ("domain", "elements")

    def __init__(self, domain: Domain):
        self.domain = domain
        #: (name, type, unit) -> [head, head sum, last Metric, its element, its sum]
        self.elements: dict[tuple[str, str, str | None], list] = {}

    def render(self, vm: VmMetrics) -> Fragment:
        parts: list[bytes] = []
        total = 0
        elements = self.elements
        for m in vm.metrics:
            key = (m.name, m.type, m.unit)
            entry = elements.get(key)
            if entry is None:
                text = metric_element(Metric(m.name, m.type, "", m.unit), "vm", self.domain)
                head = text[: text.rindex("</value>")].encode()
                entry = elements[key] = [head, disk_format.checksum(head), None, b"", 0]
            elif entry[2] is m:
                parts.append(entry[3])
                total += entry[4]
                continue
            value = escape_text(m.value).encode()
            data = b"".join((entry[0], value, _VALUE_END))
            summed = entry[1] + _VALUE_END_SUM + (
                sum(value) if value.isascii() else disk_format.checksum(value))
            entry[2:] = (m, data, summed)
            parts.append(data)
            total += summed
        return Fragment(b"".join(parts), total & 0xFFFFFFFF)


@dataclass(slots=True)
class Rendered:
    """One update's output: the whole document, and the fragments it is made of."""

    host: Fragment | None
    #: VM fragments by UUID, in document order.
    vms: dict[str, Fragment]
    domains: dict[str, Domain]
    document: bytes
    document_sum: int

    def document_for(self, uuid: str) -> tuple[bytes, int]:
        """A document holding the host metrics and only VM *uuid*'s, with its sum."""
        parts = [_START]
        if self.host is not None:
            parts.append(self.host)
        if uuid in self.vms:
            parts.append(self.vms[uuid])
        parts.append(_END)
        return (
            b"".join(p.data for p in parts),
            disk_format.combine(*(p.sum for p in parts)),
        )


def virtio_answer(host: Fragment | None, vm: Fragment | None) -> bytes:
    """A VM's answer on its virtio channel: the host's metrics and its own.

    As in the C vhostmd, a part that is unknown or empty (not collected yet,
    or every metric of it failed) is replaced by a "not available" comment.
    """
    return b"".join((
        DOCUMENT_START,
        host.data if host is not None and host.data else HOST_UNAVAILABLE,
        vm.data if vm is not None and vm.data else VM_UNAVAILABLE,
        ANSWER_END,
    ))


#: The answer a channel gives before the first update has been rendered.
UNAVAILABLE_ANSWER = virtio_answer(None, None)


class Renderer:
    """Renders snapshots, reusing each VM's fragment while its values stay the same."""

    def __init__(self) -> None:
        self._host: tuple[tuple[Metric, ...], Fragment] | None = None
        self._vms: dict[str, tuple[VmMetrics, Fragment]] = {}
        self._elements: dict[str, _VmElements] = {}

    def render(self, snapshot: Snapshot) -> Rendered:
        host: Fragment | None = None
        if snapshot.host is not None:
            if self._host is None or self._host[0] != snapshot.host:
                self._host = (snapshot.host, render_host(snapshot.host))
            host = self._host[1]
        cache: dict[str, tuple[VmMetrics, Fragment]] = {}
        elements: dict[str, _VmElements] = {}
        for vm in snapshot.vms:
            # Frozen dataclasses compare by value: an unchanged VM (same id,
            # name, uuid and values) keeps its rendered bytes and checksum.
            uuid = vm.domain.uuid
            old = self._vms.get(uuid)
            heads = self._elements.get(uuid)
            if heads is None or heads.domain != vm.domain:
                heads = _VmElements(vm.domain)
            elements[uuid] = heads
            cache[uuid] = old if old is not None and old[0] == vm else (vm, heads.render(vm))
        self._vms = cache
        self._elements = elements
        vm_fragments = {uuid: frag for uuid, (_, frag) in cache.items()}
        parts = [_START, *([host] if host is not None else []), *vm_fragments.values(), _END]
        return Rendered(
            host=host,
            vms=vm_fragments,
            domains={uuid: vm.domain for uuid, (vm, _) in cache.items()},
            document=b"".join(p.data for p in parts),
            document_sum=disk_format.combine(*(p.sum for p in parts)),
        )
