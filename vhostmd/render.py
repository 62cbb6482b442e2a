"""Rendering metrics into the document the guests read.

The shape is the C daemon's (two-space indentation, single-quoted attributes
in the order type, context, id, uuid, unit), with names, values and
attributes XML-escaped. Rendering is split into fragments (the host's, then
one per VM) so that an update re-renders only the VMs whose values changed,
and so that a virtio answer (``publish.virtio.protocol``) is the host
fragment plus one VM's fragment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .publish import disk_format
from .model import Domain, Metric, Snapshot, VmMetrics

DOCUMENT_START = b"<metrics>\n"
DOCUMENT_END = b"</metrics>\n"

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


class Fragment(NamedTuple):
    """Rendered bytes and their disk checksum (sums of parts add up).

    A tuple rather than a frozen dataclass: one is built per changed VM per
    update, and a tuple is several times cheaper to build.
    """

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


def _value_bytes(value: str) -> tuple[bytes, int]:
    data = escape_text(value).encode()
    # sum() is the signed-byte checksum for ASCII, and much cheaper.
    return data, (sum(data) if data.isascii() else disk_format.checksum(data))


class _Shape:
    """The bytes of a vm ``<metric>`` element around its id/uuid and its value.

    The same for every VM with that metric, so it is made once and shared:
    a VM holds only its own id/uuid attribute bytes and its values.
    """

    __slots__ = ("before", "after", "sum")

    def __init__(self, name: str, type_: str, unit: str | None):
        # metric_element() stays the one definition of the element's shape.
        marker = Domain(0, "", "\0")
        text = metric_element(Metric(name, type_, "", unit), "vm", marker)
        ident = _ident_text(marker)
        cut = text.index(ident)
        self.before = text[:cut].encode()
        self.after = text[cut + len(ident): text.rindex("</value>")].encode()
        self.sum = disk_format.combine(*(disk_format.checksum(b) for b in (
            self.before, self.after, _VALUE_END)))


def _ident_text(domain: Domain) -> str:
    return f" id='{domain.id}' uuid='{escape_attr(domain.uuid)}'"


class _VmElements:
    """One VM's rendered fragment, and what it was rendered from.

    The collector hands over the same Metric objects for the values that
    stay the same: only the values that changed (typically CPU time) are
    escaped and summed again, each replaces its piece of the fragment, and
    the fragment is joined again from its pieces (the shared shapes, this
    VM's id/uuid attributes and its values).
    """

    __slots__ = ("domain", "ident", "ident_sum", "metrics", "value_sums", "pieces", "fragment")

    #: Pieces per element: shape.before, ident, shape.after, value, _VALUE_END.
    STRIDE = 5
    VALUE = 3

    def __init__(self, domain: Domain):
        self.domain = domain
        self.ident = _ident_text(domain).encode()
        self.ident_sum = disk_format.checksum(self.ident)
        #: The Metrics last rendered, and their values' sums, in document order.
        self.metrics: tuple[Metric, ...] = ()
        self.value_sums: list[int] = []
        self.pieces: list[bytes] = []
        self.fragment = Fragment(b"", 0)

    def render(self, vm: VmMetrics, shapes: dict) -> Fragment:
        metrics = vm.metrics
        if metrics is self.metrics:
            return self.fragment
        if len(metrics) != len(self.metrics):
            return self._render_all(metrics, shapes)
        pieces, sums = self.pieces, self.value_sums
        total = self.fragment.sum
        changed = False
        for i, (old, m) in enumerate(zip(self.metrics, metrics)):
            if old is m:
                continue
            if old.name != m.name or old.type != m.type or old.unit != m.unit:
                return self._render_all(metrics, shapes)
            if old.value != m.value:
                value, value_sum = _value_bytes(m.value)
                pieces[i * self.STRIDE + self.VALUE] = value
                total += value_sum - sums[i]
                sums[i] = value_sum
                changed = True
        self.metrics = metrics
        if changed:
            self.fragment = Fragment(b"".join(pieces), total & 0xFFFFFFFF)
        return self.fragment

    def _render_all(self, metrics: tuple[Metric, ...], shapes: dict) -> Fragment:
        ident, ident_sum = self.ident, self.ident_sum
        pieces: list[bytes] = []
        sums: list[int] = []
        total = 0
        for m in metrics:
            key = (m.name, m.type, m.unit)
            shape = shapes.get(key)
            if shape is None:
                shape = shapes[key] = _Shape(*key)
            value, value_sum = _value_bytes(m.value)
            pieces += (shape.before, ident, shape.after, value, _VALUE_END)
            sums.append(value_sum)
            total += shape.sum + ident_sum + value_sum
        self.metrics, self.value_sums, self.pieces = metrics, sums, pieces
        self.fragment = Fragment(b"".join(pieces), total & 0xFFFFFFFF)
        return self.fragment


@dataclass
class Rendered:
    """One update's output: the whole document, and the fragments it is made of."""

    host: Fragment | None
    #: VM fragments by UUID, in document order.
    vms: dict[str, Fragment]
    domains: dict[str, Domain]
    document: bytes
    document_sum: int
    #: Whether the VM list is complete (False while libvirt is unreachable):
    #: a VM missing from ``vms`` is gone only if it is.
    vms_known: bool = True

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


class Renderer:
    """Renders snapshots, reusing each VM's fragment while its values stay the same."""

    def __init__(self) -> None:
        self._host: tuple[tuple[Metric, ...], Fragment] | None = None
        self._elements: dict[str, _VmElements] = {}
        #: Element shapes by (name, type, unit), shared by every VM.
        self._shapes: dict[tuple[str, str, str | None], _Shape] = {}

    def render(self, snapshot: Snapshot) -> Rendered:
        host: Fragment | None = None
        if snapshot.host is not None:
            if self._host is None or self._host[0] != snapshot.host:
                self._host = (snapshot.host, render_host(snapshot.host))
            host = self._host[1]
        elements: dict[str, _VmElements] = {}
        fragments: dict[str, Fragment] = {}
        domains: dict[str, Domain] = {}
        old_elements, shapes = self._elements, self._shapes
        for vm in snapshot.vms:
            domain = vm.domain
            uuid = domain.uuid
            kept = old_elements.get(uuid)
            # A VM restarted with a new id (or renamed) is rendered afresh.
            if kept is None or (kept.domain is not domain and kept.domain != domain):
                kept = _VmElements(domain)
            elements[uuid] = kept
            fragments[uuid] = kept.render(vm, shapes)
            domains[uuid] = domain
        self._elements = elements
        parts = [_START, *([host] if host is not None else []), *fragments.values(), _END]
        return Rendered(
            host=host,
            vms=fragments,
            domains=domains,
            document=b"".join([p.data for p in parts]),
            document_sum=disk_format.combine(*[p.sum for p in parts]),
            vms_known=snapshot.vms_known,
        )
