"""The host's own figures, read natively once per update.

Each source is a small file in /proc (or a libvirt call, made by
:mod:`vhostmd.virt`); its parser is a pure function of the text so it can be
checked against the shell tools that read the same file. A sample holds only
the sources the configuration's built-ins need.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Clock ticks per second of /proc/stat's counters (``getconf CLK_TCK``).
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: Bytes per page of /proc/vmstat's page counters (``getconf PAGESIZE``).
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

PROC = Path("/proc")
OS_RELEASE = (Path("/etc/os-release"), Path("/usr/lib/os-release"))

#: Source names, as built-ins declare them.
MEMINFO, STAT, VMSTAT, NODE, HYPERVISOR, OS = (
    "meminfo", "stat", "vmstat", "node", "hypervisor", "os",
)
#: Sources read from files by this module (the rest come from libvirt).
FILE_SOURCES = (MEMINFO, STAT, VMSTAT)


class SourceUnavailable(Exception):
    """A source could not be read in this update; the message says which and why."""


class NotYetAvailable(SourceUnavailable):
    """A value that needs more than one update (a rate); left out without a warning."""


@dataclass(frozen=True)
class MemInfo:
    """The /proc/meminfo fields free(1) uses, in KiB."""

    total: int
    free: int
    available: int | None
    buffers: int
    cached: int
    reclaimable: int
    swap_total: int
    swap_free: int

    @property
    def used(self) -> int:
        """free(1)'s "used" (procps-ng 4: total - available)."""
        if self.available is not None and self.available <= self.total:
            return self.total - self.available
        # Kernels before 3.14 have no MemAvailable: procps' older formula.
        return max(0, self.total - self.free - self.buffers - self.cached - self.reclaimable)

    @property
    def swap_used(self) -> int:
        return max(0, self.swap_total - self.swap_free)


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat, in clock ticks."""

    user: int
    nice: int
    system: int
    idle: int


@dataclass(frozen=True)
class VmStat:
    """The /proc/vmstat counters the built-ins use (cumulative since boot)."""

    pgpgin: int  # KiB read from disk
    pgpgout: int  # KiB written to disk
    pswpin: int  # pages swapped in
    pswpout: int  # pages swapped out
    pgfault: int  # page faults


@dataclass(frozen=True)
class NodeInfo:
    """libvirt's node info: what libvirt offers to VMs."""

    cpus: int
    memory_kib: int


@dataclass(frozen=True)
class Hypervisor:
    """libvirt's hypervisor driver and its version."""

    type: str
    version: int

    @property
    def product(self) -> str:
        """As ``virsh version`` prints it: ``QEMU 8.2.0``."""
        major, rest = divmod(self.version, 1_000_000)
        minor, release = divmod(rest, 1000)
        return f"{self.type} {major}.{minor}.{release}"


@dataclass(frozen=True)
class HostSample:
    """What one update read about the host; ``None`` where not needed or unreadable."""

    #: time.monotonic() when the sample was taken (for rates).
    taken: float
    #: Seconds since the epoch.
    time: float
    nodename: str
    meminfo: MemInfo | None = None
    cpu: CpuTimes | None = None
    vmstat: VmStat | None = None
    node: NodeInfo | None = None
    hypervisor: Hypervisor | None = None
    os_name: str | None = None
    #: Why a needed source is missing, by source name.
    errors: dict[str, str] = field(default_factory=dict)

    def need(self, source: str):
        """The parsed *source*; raises SourceUnavailable when it is missing."""
        value = getattr(self, {STAT: "cpu", OS: "os_name"}.get(source, source))
        if value is None:
            raise SourceUnavailable(self.errors.get(source, f"{source} was not sampled"))
        return value


def parse_meminfo(text: str) -> MemInfo:
    """Parse /proc/meminfo (values in kB); raises ValueError when a field is missing."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            fields[key] = int(parts[0])
    try:
        return MemInfo(
            total=fields["MemTotal"],
            free=fields["MemFree"],
            available=fields.get("MemAvailable"),
            buffers=fields.get("Buffers", 0),
            cached=fields.get("Cached", 0),
            reclaimable=fields.get("SReclaimable", 0),
            swap_total=fields.get("SwapTotal", 0),
            swap_free=fields.get("SwapFree", 0),
        )
    except KeyError as err:
        raise ValueError(f"no {err.args[0]} line") from None


def parse_stat(text: str) -> CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat; raises ValueError without one."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            user, nice, system, idle = (int(v) for v in line.split()[1:5])
            return CpuTimes(user, nice, system, idle)
    raise ValueError("no 'cpu' line")


def parse_vmstat(text: str) -> VmStat:
    """Parse /proc/vmstat; raises ValueError when a needed counter is missing."""
    wanted = {"pgpgin", "pgpgout", "pswpin", "pswpout", "pgfault"}
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in wanted:
            found[key] = int(value)
    missing = wanted - found.keys()
    if missing:
        raise ValueError(f"no {', '.join(sorted(missing))} counter")
    return VmStat(**found)


def parse_os_release(text: str) -> str | None:
    """NAME (else ID) of an os-release file, unquoted."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep:
            values[key] = value.strip().strip("'\"")
    return values.get("NAME") or values.get("ID") or None


_PARSERS = {MEMINFO: parse_meminfo, STAT: parse_stat, VMSTAT: parse_vmstat}
_FIELDS = {MEMINFO: "meminfo", STAT: "cpu", VMSTAT: "vmstat"}


def read_proc(source: str, proc: Path = PROC) -> MemInfo | CpuTimes | VmStat:
    """Read and parse one /proc source; raises SourceUnavailable naming the file."""
    path = proc / source
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
        return _PARSERS[source](text)
    except (OSError, ValueError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SourceUnavailable(f"cannot read {path}: {why}") from None


def read_os_name() -> str | None:
    """The operating system's name from os-release, or None."""
    for path in OS_RELEASE:
        try:
            return parse_os_release(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return None


def sample(
    sources: frozenset[str],
    *,
    node: NodeInfo | None = None,
    hypervisor: Hypervisor | None = None,
    libvirt_error: str | None = None,
    os_name: str | None = None,
    proc: Path = PROC,
) -> HostSample:
    """Read the file *sources* now; add the libvirt facts the caller fetched."""
    values: dict[str, object] = {}
    errors: dict[str, str] = {}
    for source in FILE_SOURCES:
        if source in sources:
            try:
                values[_FIELDS[source]] = read_proc(source, proc)
            except SourceUnavailable as err:
                errors[source] = str(err)
    for source, fact in ((NODE, node), (HYPERVISOR, hypervisor)):
        if source in sources and fact is None:
            errors[source] = f"libvirt {source} info unavailable: {libvirt_error or 'not fetched'}"
    if OS in sources and os_name is None:
        errors[OS] = "no NAME or ID in /etc/os-release"
    return HostSample(
        taken=time.monotonic(),
        time=time.time(),
        nodename=os.uname().nodename,
        node=node,
        hypervisor=hypervisor,
        os_name=os_name,
        errors=errors,
        **values,
    )
