"""VM built-ins: each reads one domain's sample of the update.

The sample's figures come from virDomainGetInfo, which libvirt answers
without asking QEMU; only ``vm.memory_rss_mib`` needs the bulk stats call's
balloon group, for which libvirt's QEMU driver sends monitor commands to
every domain (see vhostmd.domain_stats).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..host_sources import SourceUnavailable
from .spec import Builtin

if TYPE_CHECKING:  # domain_stats imports libvirt: parsing a configuration must not need it
    from ..domain_stats import DomainSample


_LABELS = {
    "cpu_time_ns": "CPU time", "vcpus": "vCPU count",
    "memory_kib": "current memory", "max_memory_kib": "maximum memory",
    "rss_kib": "balloon.rss (bulk stats)",
}


def _unanswered(name: str) -> SourceUnavailable:
    return SourceUnavailable(f"libvirt gave no {_LABELS[name]} for this domain in this update")


# One plain function per built-in, reading its field directly: they run
# for every VM on every update.
def _cpu_time_s(s: DomainSample) -> float:
    if s.cpu_time_ns is None:
        raise _unanswered("cpu_time_ns")
    return s.cpu_time_ns / 1e9


def _vcpus(s: DomainSample) -> int:
    if s.vcpus is None:
        raise _unanswered("vcpus")
    return s.vcpus


def _memory_max_mib(s: DomainSample) -> int:
    if s.max_memory_kib is None:
        raise _unanswered("max_memory_kib")
    return s.max_memory_kib // 1024


def _memory_current_mib(s: DomainSample) -> int:
    if s.memory_kib is None:
        raise _unanswered("memory_kib")
    return s.memory_kib // 1024


def _memory_rss_mib(s: DomainSample) -> int:
    if s.rss_kib is None:
        raise _unanswered("rss_kib")
    return s.rss_kib // 1024


def _b(name, kind, read, unit, doc, groups):
    return Builtin(name, "vm", kind, 1, read, unit, doc, frozenset(groups))


BUILTINS = (
    _b("vm.cpu_time_s", "real", _cpu_time_s, "s",
       "CPU time the domain used: virDomainGetInfo's cpuTime (virsh dominfo 'CPU time')",
       ("cpu",)),
    _b("vm.vcpus", "int", _vcpus, "",
       "the domain's current vCPU count: virDomainGetInfo's nrVirtCpu (virsh dominfo 'CPU(s)')",
       ("vcpu",)),
    _b("vm.memory_max_mib", "int", _memory_max_mib, "MiB",
       "the domain's maximum memory: virDomainGetInfo's maxMem (virsh dominfo 'Max memory')",
       ("balloon",)),
    _b("vm.memory_current_mib", "int", _memory_current_mib, "MiB",
       "the domain's current memory: virDomainGetInfo's memory (virsh dominfo 'Used memory')",
       ("balloon",)),
    _b("vm.memory_rss_mib", "int", _memory_rss_mib, "MiB",
       "resident memory of the domain's process: bulk stats 'balloon.rss' (virsh domstats "
       "--balloon); costs QEMU monitor commands per domain per update on libvirt's QEMU driver",
       ("memory_stats",)),
)
