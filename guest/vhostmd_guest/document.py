"""The metrics XML document: a pure parser and typed metric values.

:func:`parse_document` turns the bytes a host published into a
:class:`MetricsDocument`, a sequence of :class:`Metric` records. It does
no I/O and accepts bytes from any source (disk, virtio, xenstore, a file).
"""

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Iterator, List, NamedTuple, Optional, Sequence, Union
from xml.parsers import expat

from .errors import (
    AmbiguousMetricError,
    DocumentError,
    MetricNotFoundError,
    MetricValueError,
)

HOST = "host"
"""Context of metrics about the host."""

VM = "vm"
"""Context of metrics about one VM (they carry ``id`` and ``uuid``)."""

INTEGER_RANGES = {
    "int32": (-(2 ** 31), 2 ** 31 - 1),
    "uint32": (0, 2 ** 32 - 1),
    "int64": (-(2 ** 63), 2 ** 63 - 1),
    "uint64": (0, 2 ** 64 - 1),
}
"""Inclusive bounds of each integer metric type."""

REAL_TYPES = ("real32", "real64")
STRING_TYPES = ("string",)
METRIC_TYPES = tuple(INTEGER_RANGES) + REAL_TYPES + STRING_TYPES
"""Every metric type a document may declare."""

Value = Union[int, float, str]

_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")


def convert_value(metric_type: str, text: str) -> Value:
    """Convert a value's text to the Python type of ``metric_type``.

    Surrounding whitespace is ignored (the reference host keeps the trailing
    newline of its commands' output). Integer types give ``int``, checked
    against the type's range; a decimal such as ``0.000000`` (which the
    reference's page-rate script prints for uint64 metrics) is truncated
    toward zero, as C's ``atoll`` would. ``real32``/``real64`` give
    ``float`` and ``string`` gives ``str``.

    Raises :class:`MetricValueError` when the text is not a number of the
    type, is out of range, or the type is unknown.

    >>> convert_value("uint32", "4\\n")
    4
    >>> convert_value("uint64", "0.000000")
    0
    >>> convert_value("real64", "69.400000")
    69.4
    """
    kind = metric_type.lower()
    stripped = text.strip()
    if kind in STRING_TYPES:
        return stripped
    not_a_number = MetricValueError("{!r} is not a {} number".format(stripped, kind))
    if kind in REAL_TYPES:
        if "_" in stripped:
            raise not_a_number
        try:
            return float(stripped)
        except ValueError:
            raise not_a_number from None
    if kind in INTEGER_RANGES:
        if _INTEGER.match(stripped):
            number = int(stripped)
        elif _DECIMAL.match(stripped):
            try:
                number = int(Decimal(stripped))
            except (InvalidOperation, OverflowError):
                raise not_a_number from None
        else:
            raise not_a_number
        low, high = INTEGER_RANGES[kind]
        if not low <= number <= high:
            raise MetricValueError(
                "{} is out of range for {} ({}..{})".format(number, kind, low, high)
            )
        return number
    raise MetricValueError("unknown metric type {!r}".format(metric_type))


class Metric(NamedTuple):
    """One ``<metric>`` element.

    ``text`` is the value's text exactly as in the document; :attr:`value`
    is it converted to ``type``. ``id`` and ``uuid`` are set for vm metrics.
    """

    name: str
    context: str
    type: str
    text: str
    unit: Optional[str] = None
    id: Optional[int] = None
    uuid: Optional[str] = None

    @property
    def value(self) -> Value:
        """The typed value (see :func:`convert_value`)."""
        return convert_value(self.type, self.text)

    def to_dict(self) -> dict:
        """A JSON-ready dict: name, context, type, value, unit, and id/uuid
        for vm metrics. ``value`` is None when the text cannot be converted.
        """
        try:
            value = self.value  # type: Optional[Value]
        except MetricValueError:
            value = None
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN or infinity
        out = {
            "name": self.name,
            "context": self.context,
            "type": self.type,
            "value": value,
            "unit": self.unit,
        }
        if self.context == VM:
            out["id"] = self.id
            out["uuid"] = self.uuid
        return out


class MetricsDocument(Sequence):
    """The metrics of one document, in document order.

    It is a sequence of :class:`Metric`; :meth:`get` and :meth:`value` look
    metrics up by name and context. Metric names are matched exactly,
    contexts case-insensitively.
    """

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self._metrics = tuple(metrics)

    def __getitem__(self, index):
        return self._metrics[index]

    def __len__(self) -> int:
        return len(self._metrics)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._metrics)

    def __repr__(self) -> str:
        return "<MetricsDocument of {} metrics>".format(len(self._metrics))

    def find(self, name: str, context: str = HOST, uuid: Optional[str] = None) -> List[Metric]:
        """All metrics called ``name`` in ``context`` (and of VM ``uuid``)."""
        context = context.lower()
        return [
            m for m in self._metrics
            if m.name == name and m.context.lower() == context
            and (uuid is None or (m.uuid or "").lower() == uuid.lower())
        ]

    def get(self, name: str, context: str = HOST, uuid: Optional[str] = None) -> Metric:
        """The one metric called ``name`` in ``context``.

        For vm metrics, ``uuid`` chooses the VM; without it the lookup works
        only when a single VM carries the metric (the virtio answer holds
        only the asking VM's metrics).

        Raises :class:`MetricNotFoundError` when there is none and
        :class:`AmbiguousMetricError` when several VMs carry it.
        """
        found = self.find(name, context, uuid)
        if not found:
            where = "{} context".format(context) + (" for uuid {}".format(uuid) if uuid else "")
            raise MetricNotFoundError("no metric {!r} in {}".format(name, where))
        if len(found) > 1:
            uuids = sorted({m.uuid or "" for m in found})
            if len(uuids) > 1:
                raise AmbiguousMetricError(
                    "{} VMs carry metric {!r}; pass uuid= one of {}".format(
                        len(uuids), name, ", ".join(uuids)
                    )
                )
        return found[0]

    def value(self, name: str, context: str = HOST, uuid: Optional[str] = None) -> Value:
        """The typed value of :meth:`get`'s metric."""
        return self.get(name, context, uuid).value

    def host_metrics(self) -> List[Metric]:
        """The host-context metrics."""
        return [m for m in self._metrics if m.context.lower() == HOST]

    def vm_metrics(self, uuid: Optional[str] = None) -> List[Metric]:
        """The vm-context metrics, of all VMs or of VM ``uuid``."""
        return [
            m for m in self._metrics
            if m.context.lower() == VM
            and (uuid is None or (m.uuid or "").lower() == uuid.lower())
        ]

    def uuids(self) -> List[str]:
        """The uuids of the VMs the document has metrics for, in order."""
        seen = []  # type: List[str]
        for m in self._metrics:
            if m.uuid and m.uuid not in seen:
                seen.append(m.uuid)
        return seen

    def to_list(self) -> List[dict]:
        """Every metric as :meth:`Metric.to_dict`, for JSON output."""
        return [m.to_dict() for m in self._metrics]


class _Builder:
    """Collects metrics from expat's callbacks."""

    def __init__(self) -> None:
        self.metrics = []  # type: List[Metric]
        self.stack = []  # type: List[str]
        self.attrs = {}  # type: dict
        self.fields = {}  # type: dict
        self.text = []  # type: List[str]

    def start(self, tag, attrs):
        depth = len(self.stack)
        if depth == 0 and tag != "metrics":
            raise DocumentError("the root element is <{}>, expected <metrics>".format(tag))
        if depth == 1 and tag == "metric":
            self.attrs = attrs
            self.fields = {}
        if depth == 2 and self.stack[1] == "metric":
            self.text = []
        self.stack.append(tag)

    def end(self, tag):
        self.stack.pop()
        depth = len(self.stack)
        if depth == 2 and self.stack[1] == "metric":
            self.fields[tag] = "".join(self.text)
        elif depth == 1 and tag == "metric":
            self.metrics.append(self._metric())

    def data(self, text):
        if len(self.stack) == 3 and self.stack[1] == "metric":
            self.text.append(text)

    def _metric(self) -> Metric:
        number = len(self.metrics) + 1
        for attr in ("type", "context"):
            if not self.attrs.get(attr):
                raise DocumentError("metric #{} has no {} attribute".format(number, attr))
        if "name" not in self.fields:
            raise DocumentError("metric #{} has no <name>".format(number))
        if "value" not in self.fields:
            raise DocumentError("metric #{} has no <value>".format(number))
        vm_id = self.attrs.get("id")
        if vm_id is not None:
            try:
                vm_id = int(vm_id)
            except ValueError:
                raise DocumentError(
                    "metric #{} has a non-numeric id {!r}".format(number, vm_id)
                ) from None
        return Metric(
            name=self.fields["name"].strip(),
            context=self.attrs["context"],
            type=self.attrs["type"],
            text=self.fields["value"],
            unit=self.attrs.get("unit"),
            id=vm_id,
            uuid=self.attrs.get("uuid"),
        )


def _refuse_doctype(*_args):
    raise DocumentError("document type declarations are not allowed in a metrics document")


def parse_document(data: Union[bytes, str]) -> MetricsDocument:
    """Parse a metrics document.

    Raises :class:`DocumentError` when ``data`` is not well-formed XML
    (the message gives line and column), carries a DTD, or is not shaped
    as ``<metrics><metric type= context=><name/><value/></metric>...``.
    Comments, such as the virtio answer's ``<!-- host metrics not
    available -->``, are ignored.

    >>> doc = parse_document(b"<metrics><metric type='uint32' context='host'>"
    ...                      b"<name>NumCPUs</name><value>2\\n</value></metric></metrics>")
    >>> doc.value("NumCPUs")
    2
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    builder = _Builder()
    parser = expat.ParserCreate()
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_doctype
    try:
        parser.Parse(bytes(data), True)
    except expat.ExpatError as err:
        raise DocumentError(
            "the metrics document is not well-formed XML: {} (line {}, column {})".format(
                expat.ErrorString(err.code), err.lineno, err.offset + 1
            )
        ) from None
    return MetricsDocument(builder.metrics)
