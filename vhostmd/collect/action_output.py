"""Turning what an action printed into checked metric values (pure, no I/O)."""

from __future__ import annotations

from lxml import etree

from ..config import MetricDef, dtd_path
from ..metric_types import BadValue, normalize
from ..model import Metric


class OutputError(ValueError):
    """Output that cannot be published; the message says why."""


_metric_dtd: etree.DTD | None = None


def _dtd() -> etree.DTD:
    global _metric_dtd
    if _metric_dtd is None:
        _metric_dtd = etree.DTD(str(dtd_path("metric.dtd")))
    return _metric_dtd


def interpret(metric: MetricDef, output: str | tuple[str, ...]) -> tuple[Metric, ...]:
    """The metric values *metric*'s action or built-in *output* stands for.

    A ``group`` takes comma-separated values (or a tuple from a built-in), one
    per variable; ``xml`` takes ``<metric>`` elements valid per metric.dtd;
    every other type takes one value. Raises OutputError, naming the value.
    """
    if metric.type == "xml":
        return _xml_metrics(metric, output if isinstance(output, str) else "".join(output))
    outputs = metric.outputs()
    if metric.type == "group":
        values = output.split(",") if isinstance(output, str) else list(output)
        if len(values) != len(outputs):
            raise OutputError(f"gave {len(values)} value(s) for {len(outputs)} variable(s)")
    else:
        values = [output if isinstance(output, str) else output[0]]
    result = []
    for var, text in zip(outputs, values):
        try:
            result.append(Metric(var.name, var.type, normalize(var.type, text), var.unit))
        except BadValue as err:
            label = f"{var.name}: " if metric.type == "group" else ""
            raise OutputError(f"{label}{err} (type {var.type})") from None
    return tuple(result)


def _xml_metrics(metric: MetricDef, output: str) -> tuple[Metric, ...]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(f"<metrics>{output}</metrics>".encode(), parser)
    except etree.XMLSyntaxError as err:
        raise OutputError(f"xml output is not well-formed: {err.msg}") from None
    dtd = _dtd()
    result = []
    for elem in root:
        if not isinstance(elem.tag, str):
            continue  # comments, processing instructions
        if not dtd.validate(elem):
            raise OutputError(f"xml output does not match metric.dtd: {dtd.error_log.last_error.message}")
        if elem.get("context") != metric.context:
            raise OutputError(
                f"xml output has a {elem.get('context')} metric in a {metric.context} action"
            )
        name = (elem.findtext("name") or "").strip()
        type_ = elem.get("type")
        try:
            value = normalize(type_, elem.findtext("value") or "")
        except BadValue as err:
            raise OutputError(f"{name}: {err} (type {type_})") from None
        result.append(Metric(name, type_, value, (elem.get("unit") or "").strip() or None))
    if not result:
        raise OutputError("xml output holds no <metric> element")
    return tuple(result)
