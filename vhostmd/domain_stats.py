"""Per-VM figures from libvirt's bulk statistics call.

One ``virConnectGetAllDomainStats`` / ``virDomainListGetStats`` call per
update answers for every domain at once, as typed parameters keyed
``group.field`` (``cpu.time``, ``balloon.current``, ...). This module names
the groups the built-ins need and turns one domain's answer into a
:class:`DomainSample` (pure functions); :mod:`vhostmd.virt` makes the call.

Where a driver leaves a group out (libvirt's test driver answers only
``state``), the missing fields are filled from ``virDomainGetInfo``, the
cheapest per-domain call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import libvirt

from .model import Domain

#: Stats groups by the name built-ins use, with libvirt's flag and the
#: fields of DomainSample the group fills.
GROUPS: dict[str, tuple[int, tuple[str, ...]]] = {
    "state": (libvirt.VIR_DOMAIN_STATS_STATE, ("state",)),
    "cpu": (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL, ("cpu_time_ns",)),
    "vcpu": (libvirt.VIR_DOMAIN_STATS_VCPU, ("vcpus",)),
    "balloon": (libvirt.VIR_DOMAIN_STATS_BALLOON, ("memory_kib", "max_memory_kib")),
}

#: Domain states that count as running: everything but shut off (and "no
#: state"), as the reference's list of active domains.
_INACTIVE = (libvirt.VIR_DOMAIN_NOSTATE, libvirt.VIR_DOMAIN_SHUTOFF)


@dataclass(frozen=True, slots=True)
class DomainSample:
    """One running domain's figures in one update; None where not answered."""

    domain: Domain
    state: int | None = None
    cpu_time_ns: int | None = None
    vcpus: int | None = None
    memory_kib: int | None = None
    max_memory_kib: int | None = None

    @property
    def running(self) -> bool:
        return self.state not in _INACTIVE

    def missing(self, groups: frozenset[str]) -> tuple[str, ...]:
        """The groups among *groups* whose fields this sample lacks, sorted."""
        return tuple(
            sorted(g for g in groups if any(getattr(self, f) is None for f in GROUPS[g][1]))
        )


def flags_for(groups: frozenset[str]) -> int:
    """libvirt's stats bit mask for *groups* (``state`` is always asked for)."""
    mask = libvirt.VIR_DOMAIN_STATS_STATE
    for group in groups:
        mask |= GROUPS[group][0]
    return mask


def _int(stats: dict, key: str) -> int | None:
    value = stats.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_record(domain: Domain, stats: dict) -> DomainSample:
    """A sample from one domain's typed parameters, as libvirt-python returns them."""
    return DomainSample(
        domain=domain,
        state=_int(stats, "state.state"),
        cpu_time_ns=_int(stats, "cpu.time"),
        vcpus=_int(stats, "vcpu.current"),
        memory_kib=_int(stats, "balloon.current"),
        max_memory_kib=_int(stats, "balloon.maximum"),
    )


def fill_from_info(sample: DomainSample, info: list[int]) -> DomainSample:
    """*sample* with its missing fields taken from ``virDomainGetInfo``'s answer.

    ``info`` is ``[state, maxMem KiB, memory KiB, nrVirtCpu, cpuTime ns]``.
    Fields the bulk call did answer are kept.
    """
    state, max_mem, mem, vcpus, cpu_time = info[:5]
    return replace(
        sample,
        state=sample.state if sample.state is not None else state,
        cpu_time_ns=sample.cpu_time_ns if sample.cpu_time_ns is not None else cpu_time,
        vcpus=sample.vcpus if sample.vcpus is not None else vcpus,
        memory_kib=sample.memory_kib if sample.memory_kib is not None else mem,
        max_memory_kib=sample.max_memory_kib if sample.max_memory_kib is not None else max_mem,
    )
