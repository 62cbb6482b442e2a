"""The metrics as Prometheus text exposition format 0.0.4 (pure).

:func:`exposition` turns a :class:`MetricsDocument` into the text
node_exporter's textfile collector reads. Two families:

- ``vhostmd_metric`` (gauge): one sample per numeric metric, labelled
  ``name`` (the metric's name as the host publishes it), ``context``
  (``host`` or ``vm``), ``uuid`` (the VM's, for vm metrics) and ``unit``
  (as the host declares it). A value that cannot be read as its type is
  ``NaN``.
- ``vhostmd_metric_info`` (gauge, always 1): one sample per string metric
  (or metric of a type that is not a number), labelled ``name``,
  ``context``, ``uuid`` and ``value`` (the text, surrounding whitespace
  removed).

Why one family with the name as a label rather than a family per metric:
the names are whatever the host's configuration says, in any characters;
turned into metric names they would have to be rewritten (``Free-Mem`` and
``Free_Mem`` would collide), while a label value carries any name exactly.
Every sample of a family has the same label names (empty when they do not
apply, which Prometheus treats as absent).

A document that names the same metric twice (same name, context and uuid)
gives the first only: a repeated series makes Prometheus refuse the whole
file.
"""

import math
from typing import List, Tuple, Union

from .document import INTEGER_RANGES, REAL_TYPES, VM, Metric, MetricsDocument
from .errors import MetricValueError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of the exposition."""

NUMERIC_FAMILY = "vhostmd_metric"
INFO_FAMILY = "vhostmd_metric_info"

_HELP = {
    NUMERIC_FAMILY: "Numeric metric the virtualization host publishes to this VM, "
                    "by name, context (host or vm), uuid (vm metrics) and unit.",
    INFO_FAMILY: "String metric the virtualization host publishes to this VM; "
                 "its value is the label value.",
}


def escape_label_value(text: str) -> str:
    """Escape a label value: backslash, double quote and line feed."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: Union[int, float]) -> str:
    """A sample value as the format spells it (``NaN``, ``+Inf``, ``-Inf``)."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))


def _sample(family: str, labels: List[Tuple[str, str]], value: Union[int, float]) -> str:
    body = ",".join('{}="{}"'.format(k, escape_label_value(v)) for k, v in labels)
    return "{}{{{}}} {}\n".format(family, body, format_value(value))


_NUMERIC_TYPES = tuple(INTEGER_RANGES) + REAL_TYPES


def _numeric(metric: Metric) -> Union[int, float]:
    try:
        value = metric.value
    except MetricValueError:
        return float("nan")
    return value  # type: ignore[return-value]


def exposition(document: MetricsDocument) -> str:
    """The document's metrics as Prometheus text exposition format 0.0.4."""
    numeric = []  # type: List[str]
    info = []  # type: List[str]
    seen = set()
    for metric in document:
        context = metric.context.lower()
        uuid = (metric.uuid or "") if context == VM else ""
        key = (metric.name, context, uuid.lower())
        if key in seen:
            continue
        seen.add(key)
        base = [("name", metric.name), ("context", context), ("uuid", uuid)]
        if metric.type.lower() in _NUMERIC_TYPES:
            numeric.append(
                _sample(NUMERIC_FAMILY, base + [("unit", metric.unit or "")], _numeric(metric)))
        else:
            info.append(_sample(INFO_FAMILY, base + [("value", metric.text.strip())], 1))
    out = []  # type: List[str]
    for family, samples in ((NUMERIC_FAMILY, numeric), (INFO_FAMILY, info)):
        if not samples:
            continue
        out.append("# HELP {} {}\n".format(family, _escape_help(_HELP[family])))
        out.append("# TYPE {} gauge\n".format(family))
        out.extend(samples)
    return "".join(out)


__all__ = ["CONTENT_TYPE", "INFO_FAMILY", "NUMERIC_FAMILY", "escape_label_value",
           "exposition", "format_value"]
