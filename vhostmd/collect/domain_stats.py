"""Per-VM figures from libvirt: virDomainGetInfo, and the bulk stats call.

The four figures the shipped configurations publish (CPU time, vCPUs,
current and maximum memory) are exactly ``virDomainGetInfo``'s answer, and
libvirt's QEMU driver answers it from what libvirtd already holds: the CPU
time from /proc, the memory from the balloon's events. The bulk stats call
(``virConnectGetAllDomainStats`` / ``virDomainListGetStats``) with the
``cpu``, ``vcpu`` or ``balloon`` group sends one or two QEMU monitor
commands per group per domain (docs/performance.md has the measurements),
so these figures are taken from info(), one call per domain, on every
driver. The bulk call is made only for a group that info() cannot answer
(``memory_stats``), once per update, and asks for that group alone.

This module names the groups, says which of them need the bulk call, and
turns one domain's answers into a :class:`DomainSample` (pure functions);
:mod:`vhostmd.virt` makes the calls.
"""

from __future__ import annotations

from typing import NamedTuple

import libvirt

from ..model import Domain

#: Stats groups by the name built-ins use, with libvirt's flag and the
#: fields of DomainSample the group fills.
GROUPS: dict[str, tuple[int, tuple[str, ...]]] = {
    "state": (libvirt.VIR_DOMAIN_STATS_STATE, ("state",)),
    "cpu": (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL, ("cpu_time_ns",)),
    "vcpu": (libvirt.VIR_DOMAIN_STATS_VCPU, ("vcpus",)),
    "balloon": (libvirt.VIR_DOMAIN_STATS_BALLOON, ("memory_kib", "max_memory_kib")),
    # The balloon group's figures beyond info(): libvirt's QEMU driver asks
    # QEMU's monitor for them, per domain.
    "memory_stats": (libvirt.VIR_DOMAIN_STATS_BALLOON, ("rss_kib",)),
}

#: The DomainSample fields virDomainGetInfo answers.
INFO_FIELDS = frozenset({"state", "cpu_time_ns", "vcpus", "memory_kib", "max_memory_kib"})


def bulk_groups(groups: frozenset[str]) -> frozenset[str]:
    """The groups among *groups* that info() cannot answer: only they need the bulk call."""
    return frozenset(g for g in groups if not INFO_FIELDS.issuperset(GROUPS[g][1]))

#: Domain states that count as running: everything but shut off (and "no
#: state"), as the reference's list of active domains.
_INACTIVE = (libvirt.VIR_DOMAIN_NOSTATE, libvirt.VIR_DOMAIN_SHUTOFF)


class DomainSample(NamedTuple):
    """One running domain's figures in one update; None where not answered.

    A tuple rather than a frozen dataclass: one is built per domain per
    update, and a tuple is several times cheaper to build.
    """

    domain: Domain
    state: int | None = None
    cpu_time_ns: int | None = None
    vcpus: int | None = None
    memory_kib: int | None = None
    max_memory_kib: int | None = None
    #: Resident memory of the domain's process (bulk stats ``balloon.rss``).
    rss_kib: int | None = None

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


#: The key that tells whether a driver answered each group at all.
ANSWER_KEYS = {"state": "state.state", "cpu": "cpu.time", "vcpu": "vcpu.current",
               "balloon": "balloon.current", "memory_stats": "balloon.rss"}


def unanswered(groups: frozenset[str], records) -> frozenset[str]:
    """The groups among *groups* that no record of a bulk answer holds."""
    return frozenset(
        g for g in groups if not any(ANSWER_KEYS[g] in stats for _, stats in records)
    )


def parse_record(domain: Domain, stats: dict, info: list[int] | None = None) -> DomainSample:
    """A sample from one domain's typed parameters, as libvirt-python returns them.

    *info*, ``virDomainGetInfo``'s answer ``[state, maxMem KiB, memory KiB,
    nrVirtCpu, cpuTime ns]``, fills what the stats leave out.
    """
    get = stats.get
    state, cpu, vcpus, mem, max_mem = (
        get("state.state"), get("cpu.time"), get("vcpu.current"),
        get("balloon.current"), get("balloon.maximum"),
    )
    if info is not None:
        state = info[0] if state is None else state
        max_mem = info[1] if max_mem is None else max_mem
        mem = info[2] if mem is None else mem
        vcpus = info[3] if vcpus is None else vcpus
        cpu = info[4] if cpu is None else cpu
    return DomainSample(domain, state, cpu, vcpus, mem, max_mem, get("balloon.rss"))


def from_info(domain: Domain, info: list[int]) -> DomainSample:
    """A sample from ``virDomainGetInfo``'s answer alone (see parse_record)."""
    return DomainSample(domain, info[0], info[4], info[3], info[2], info[1])
