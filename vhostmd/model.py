"""The values that flow from collection to rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class Domain:
    """A running VM as libvirt names it."""

    # One per VM, kept as long as it runs: no per-instance dict. (Declared
    # by hand: dataclass(slots=True) needs Python 3.10; fields given here
    # must have no defaults.)
    __slots__ = ("id", "name", "uuid")

    id: int
    name: str
    uuid: str


class Metric(NamedTuple):
    """One published value, already checked against its type.

    Metric and VmMetrics are tuples rather than frozen dataclasses: they are
    built for every changed value of every VM on every update, and a tuple
    is about twice as cheap to build.
    """

    name: str
    type: str
    value: str
    unit: str | None = None


class VmMetrics(NamedTuple):
    """A VM and the metrics collected for it in one update."""

    domain: Domain
    metrics: tuple[Metric, ...]


@dataclass
class Snapshot:
    """The outcome of one update: what to publish, and what went wrong."""

    #: Host metrics; None when they could not be collected at all.
    host: tuple[Metric, ...] | None
    #: Per-VM metrics, in libvirt's domain id order.
    vms: tuple[VmMetrics, ...] = ()
    #: One line per metric or source that failed in this update.
    problems: list[str] = field(default_factory=list)
    #: Whether the VM list is known (False while libvirt is unreachable).
    vms_known: bool = True
