"""Built-in collectors: metric values computed in the daemon, without forking.

A configuration selects one with ``<builtin>NAME</builtin>`` in place of
``<action>``. Host built-ins read from the update's :class:`HostView` (the
host sample, read once per update however many metrics use it, and the
previous one for rates); vm built-ins read from the domain's
:class:`~vhostmd.domain_stats.DomainSample`, filled by one bulk libvirt call
per update. docs/builtins.md lists them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

from ..metric_types import INTEGER_RANGES, REAL_LIMITS, BadValue, format_real, normalize
from ..model import Metric

if TYPE_CHECKING:
    from ..config import MetricDef

Value = Union[int, float, str]

#: Value kinds, and the metric types each may be published as.
KIND_TYPES: dict[str, tuple[str, ...]] = {
    "int": (*INTEGER_RANGES, *REAL_LIMITS, "string"),
    "real": (*REAL_LIMITS, "string"),
    "string": ("string",),
}


@dataclass(frozen=True)
class Builtin:
    """A built-in collector."""

    name: str
    context: str
    #: "int", "real" or "string": what read() returns.
    kind: str
    #: How many values it gives (a ``group`` metric takes one per variable).
    values: int
    read: Callable[[object], Value | tuple[Value, ...]]
    #: Unit of the value, for the documentation.
    unit: str
    doc: str
    #: Host sources (see host_sources) or vm stats groups (see domain_stats).
    needs: frozenset[str] = frozenset()

    def type_error(self, type_: str) -> str | None:
        """Why a metric of *type_* cannot publish this built-in, or None."""
        if type_ in ("group", "xml"):
            return None  # the value count decides (checked by the config)
        if type_ not in KIND_TYPES[self.kind]:
            allowed = ", ".join(KIND_TYPES[self.kind])
            return f"builtin {self.name!r} gives a {self.kind} value; type {type_} needs one of: {allowed}"
        return None


def format_value(type_: str, value: Value) -> str:
    """*value* as published for a metric of *type_*; raises BadValue when it does not fit."""
    if type_ in INTEGER_RANGES:
        if not isinstance(value, int):
            raise BadValue(f"{value!r} is not an integer")
        low, high = INTEGER_RANGES[type_]
        if not low <= value <= high:
            raise BadValue(f"{value} is out of range for {type_}")
        return str(value)
    if type_ in REAL_LIMITS:
        if isinstance(value, int):
            return str(value)
        if not math.isfinite(value) or abs(value) > REAL_LIMITS[type_]:
            raise BadValue(f"{value} is out of range for {type_}")
        return format_real(value)
    if isinstance(value, float):
        return format_real(value)
    return normalize("string", str(value))


def formatter(type_: str) -> Callable[[Value], str]:
    """A fast format_value for one type: the common case inline, the rest delegated."""
    if type_ in INTEGER_RANGES:
        low, high = INTEGER_RANGES[type_]

        def integer(value: Value) -> str:
            if value.__class__ is int and low <= value <= high:
                return str(value)
            return format_value(type_, value)

        return integer
    if type_ in REAL_LIMITS:
        limit = REAL_LIMITS[type_]

        def real(value: Value) -> str:
            if value.__class__ is float and -limit <= value <= limit:
                return f"{value:f}"
            return format_value(type_, value)

        return real
    return lambda value: format_value(type_, value)


def metrics_of(metric: "MetricDef", output: Value | tuple[Value, ...]) -> tuple[Metric, ...]:
    """The Metric elements *metric* publishes for a built-in's *output*.

    Raises BadValue naming the variable when a value does not fit its type.
    """
    if metric.type != "group":
        return (Metric(metric.name, metric.type, format_value(metric.type, output), metric.unit),)
    result = []
    for var, value in zip(metric.outputs(), output):
        try:
            result.append(Metric(var.name, var.type, format_value(var.type, value), var.unit))
        except BadValue as err:
            raise BadValue(f"{var.name}: {err}") from None
    return tuple(result)


from . import host, vm  # noqa: E402  (the registry is built from both)

REGISTRY: dict[str, Builtin] = {b.name: b for b in (*host.BUILTINS, *vm.BUILTINS)}


def host_sources(metrics) -> frozenset[str]:
    """The host sources the built-ins among *metrics* read."""
    return frozenset().union(*(REGISTRY[m.builtin].needs for m in metrics if m.builtin))


def vm_groups(metrics) -> frozenset[str]:
    """The bulk-stats groups the vm built-ins among *metrics* need."""
    return host_sources(metrics)
