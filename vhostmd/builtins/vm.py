"""VM built-ins: each reads one domain's sample from the update's bulk stats call."""

from __future__ import annotations

from ..domain_stats import DomainSample
from ..host_sources import SourceUnavailable


_LABELS = {
    "cpu_time_ns": "cpu.time", "vcpus": "vcpu.current",
    "memory_kib": "balloon.current", "max_memory_kib": "balloon.maximum",
}


def _field(sample: DomainSample, name: str) -> int:
    value = getattr(sample, name)
    if value is None:
        raise SourceUnavailable(f"libvirt's stats gave no {_LABELS[name]} for this domain in this update")
    return value


def _b(name, kind, read, unit, doc, groups):
    from . import Builtin

    return Builtin(name, "vm", kind, 1, read, unit, doc, frozenset(groups))


BUILTINS = (
    _b("vm.cpu_time_s", "real", lambda s: _field(s, "cpu_time_ns") / 1e9, "s",
       "CPU time the domain used: stats 'cpu.time' (virsh dominfo 'CPU time')", ("cpu",)),
    _b("vm.vcpus", "int", lambda s: _field(s, "vcpus"), "",
       "the domain's current vCPU count: stats 'vcpu.current' (virsh dominfo 'CPU(s)')", ("vcpu",)),
    _b("vm.memory_max_mib", "int", lambda s: _field(s, "max_memory_kib") // 1024, "MiB",
       "the domain's maximum memory: stats 'balloon.maximum' (virsh dominfo 'Max memory')",
       ("balloon",)),
    _b("vm.memory_current_mib", "int", lambda s: _field(s, "memory_kib") // 1024, "MiB",
       "the domain's current memory: stats 'balloon.current' (virsh dominfo 'Used memory')",
       ("balloon",)),
)
