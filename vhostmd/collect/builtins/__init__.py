"""Built-in collectors: metric values computed in the daemon, without forking.

A configuration selects one with ``<builtin>NAME</builtin>`` in place of
``<action>``. Host built-ins read from the update's :class:`HostView` (the
host sample, read once per update however many metrics use it, and the
previous one for rates); vm built-ins read from the domain's
:class:`~vhostmd.collect.domain_stats.DomainSample`, filled from virDomainGetInfo
(and a bulk stats call only for groups info() lacks) once per update.
docs/builtins.md lists them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...metric_types import BadValue, format_value
from ...model import Metric
from . import host, vm
from .spec import KIND_TYPES, Builtin, Value

if TYPE_CHECKING:
    from ...config import MetricDef

__all__ = ["KIND_TYPES", "REGISTRY", "Builtin", "Value", "host_sources", "metrics_of", "vm_groups"]


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


REGISTRY: dict[str, Builtin] = {b.name: b for b in (*host.BUILTINS, *vm.BUILTINS)}


def host_sources(metrics) -> frozenset[str]:
    """The host sources the built-ins among *metrics* read."""
    return frozenset().union(*(REGISTRY[m.builtin].needs for m in metrics if m.builtin))


def vm_groups(metrics) -> frozenset[str]:
    """The stats groups (vhostmd.collect.domain_stats.GROUPS) the vm built-ins among *metrics* need."""
    return host_sources(metrics)
