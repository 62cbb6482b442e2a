"""Host built-ins: each reads the update's host sample (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import host_sources as hs
from ..host_sources import HostSample, NotYetAvailable, SourceUnavailable
from .spec import Builtin

MIB = 1024 * 1024


@dataclass(frozen=True)
class HostView:
    """What a host built-in sees: this update's sample and the previous one."""

    sample: HostSample
    previous: HostSample | None = None


def _mem(view: HostView) -> hs.MemInfo:
    return view.sample.need(hs.MEMINFO)


def _vmstat(view: HostView) -> hs.VmStat:
    return view.sample.need(hs.VMSTAT)


def _rate(view: HostView, counter: str) -> int:
    """Per-second increase of a /proc/vmstat counter since the previous update."""
    now = _vmstat(view)
    prev = view.previous.vmstat if view.previous is not None else None
    if prev is None:
        raise NotYetAvailable("a rate needs two updates")
    seconds = view.sample.taken - view.previous.taken
    delta = getattr(now, counter) - getattr(prev, counter)
    if seconds <= 0 or delta < 0:
        raise SourceUnavailable(f"/proc/vmstat {counter} went backwards; skipped this update")
    return round(delta / seconds)


def _cpu_seconds(view: HostView) -> float:
    cpu = view.sample.need(hs.STAT)
    return (cpu.user + cpu.nice + cpu.system) / hs.CLK_TCK


def _b(name, kind, read, unit, doc, needs=(), values=1):
    return Builtin(name, "host", kind, values, read, unit, doc, frozenset(needs))


BUILTINS = (
    _b("host.name", "string", lambda v: v.sample.nodename, "",
       "the host's name, as hostname(1) prints it (uname nodename)"),
    _b("host.short_name", "string", lambda v: v.sample.nodename.split(".", 1)[0], "",
       "the host name up to the first dot, as hostname -s prints it"),
    _b("host.time", "int", lambda v: int(v.sample.time), "s",
       "seconds since the epoch at the time of the update"),
    _b("host.os_vendor", "string", lambda v: v.sample.need(hs.OS), "",
       "the operating system's name (NAME of /etc/os-release), read at start-up", (hs.OS,)),
    _b("host.hypervisor", "string", lambda v: v.sample.need(hs.HYPERVISOR).product, "",
       "hypervisor driver and version from libvirt, as 'virsh version' shows "
       "them on its 'Running hypervisor' line, e.g. 'QEMU 8.2.0'", (hs.HYPERVISOR,)),
    _b("host.cpus", "int", lambda v: v.sample.need(hs.NODE).cpus, "",
       "logical CPUs of the host, from libvirt's node info (virsh nodeinfo 'CPU(s)')", (hs.NODE,)),
    _b("host.memory_total_mib", "int", lambda v: v.sample.need(hs.NODE).memory_kib // 1024, "MiB",
       "host memory from libvirt's node info (virsh nodeinfo 'Memory size')", (hs.NODE,)),
    _b("host.memory_used_mib", "int", lambda v: _mem(v).used // 1024, "MiB",
       "memory in use: free(1)'s 'used' (MemTotal - MemAvailable of /proc/meminfo)", (hs.MEMINFO,)),
    _b("host.memory_free_mib", "int", lambda v: _mem(v).free // 1024, "MiB",
       "unused memory: MemFree of /proc/meminfo (free(1)'s 'free')", (hs.MEMINFO,)),
    _b("host.memory_available_mib", "int", lambda v: _mem(v).available // 1024
       if _mem(v).available is not None else _mem(v).free // 1024, "MiB",
       "memory available for new work: MemAvailable of /proc/meminfo (free(1)'s 'available')",
       (hs.MEMINFO,)),
    _b("host.virtual_memory_free_mib", "int", lambda v: (_mem(v).free + _mem(v).swap_free) // 1024,
       "MiB", "free memory plus free swap (free -t, 'Total:' line, 'free')", (hs.MEMINFO,)),
    _b("host.virtual_memory_used_mib", "int", lambda v: (_mem(v).used + _mem(v).swap_used) // 1024,
       "MiB", "used memory plus used swap (free -t, 'Total:' line, 'used')", (hs.MEMINFO,)),
    _b("host.swapped_in_mib", "int", lambda v: _vmstat(v).pswpin * hs.PAGE_SIZE // MIB, "MiB",
       "memory swapped in since boot: pswpin of /proc/vmstat x page size", (hs.VMSTAT,)),
    _b("host.swapped_out_mib", "int", lambda v: _vmstat(v).pswpout * hs.PAGE_SIZE // MIB, "MiB",
       "memory swapped out since boot: pswpout of /proc/vmstat x page size", (hs.VMSTAT,)),
    _b("host.paged_in_kib", "int", lambda v: _vmstat(v).pgpgin, "KiB",
       "KiB paged in from disk since boot: pgpgin of /proc/vmstat (vmstat -s 'K paged in')",
       (hs.VMSTAT,)),
    _b("host.paged_out_kib", "int", lambda v: _vmstat(v).pgpgout, "KiB",
       "KiB paged out to disk since boot: pgpgout of /proc/vmstat (vmstat -s 'K paged out')",
       (hs.VMSTAT,)),
    _b("host.page_in_rate", "int", lambda v: _rate(v, "pgpgin"), "KiB/s",
       "KiB paged in per second between the last two updates (pgpgin delta)", (hs.VMSTAT,)),
    _b("host.page_out_rate", "int", lambda v: _rate(v, "pgpgout"), "KiB/s",
       "KiB paged out per second between the last two updates (pgpgout delta)", (hs.VMSTAT,)),
    _b("host.page_fault_rate", "int", lambda v: _rate(v, "pgfault"), "1/s",
       "page faults per second between the last two updates (pgfault delta)", (hs.VMSTAT,)),
    _b("host.page_rates", "int", lambda v: (_rate(v, "pgpgin"), _rate(v, "pgfault")), "KiB/s, 1/s",
       "group of two: host.page_in_rate, host.page_fault_rate", (hs.VMSTAT,), values=2),
    _b("host.cpu_time_s", "real", _cpu_seconds, "s",
       "CPU time the host spent since boot: (user + nice + system) ticks of /proc/stat's "
       "'cpu' line / CLK_TCK", (hs.STAT,)),
)
