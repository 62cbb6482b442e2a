"""Grouped reads, as the reference's libmetrics offers them.

Each group gathers a few metrics of one context into a record. A field is
``None`` when the document lacks the metric or its value cannot be read as
its type (the reference leaves such fields at zero).

Field names and the metrics they come from:

======================== ================ =====================
field                    metric           group
======================== ================ =====================
total_physical_memory    TotalPhyMem      MemoryMetrics
used_physical_memory     UsedMem          MemoryMetrics
free_physical_memory     FreeMem          MemoryMetrics
paged_in_memory          PagedInMemory    MemoryMetrics
paged_out_memory         PagedOutMemory   MemoryMetrics
page_in_rate             PageInRate       MemoryMetrics
page_fault_rate          PageFaultRate    MemoryMetrics
total_phys_cpus          TotalPhyCPUs     CpuMetrics
num_phys_cpus_utilized   NumCPUs          CpuMetrics
total_cpu_time           TotalCPUTime     CpuMetrics
======================== ================ =====================

The vm groups read the same names in the vm context. (The reference's vm
memory read fills total and free memory both from ``FreeMem`` and paged-out
memory from ``PageFaultRate``, and truncates the vm CPU time to an integer;
here each field comes from its own metric.)
"""

from typing import Callable, NamedTuple, Optional

from .document import HOST, VM, MetricsDocument
from .errors import MetricNotFoundError, MetricValueError


class MemoryMetrics(NamedTuple):
    """Memory metrics of the host or of a VM (integers, as the host reports them)."""

    total_physical_memory: Optional[int]
    used_physical_memory: Optional[int]
    free_physical_memory: Optional[int]
    paged_in_memory: Optional[int]
    paged_out_memory: Optional[int]
    page_in_rate: Optional[int]
    page_fault_rate: Optional[int]


class CpuMetrics(NamedTuple):
    """CPU metrics of the host or of a VM."""

    total_phys_cpus: Optional[int]
    num_phys_cpus_utilized: Optional[int]
    total_cpu_time: Optional[float]


MEMORY_METRIC_NAMES = (
    "TotalPhyMem",
    "UsedMem",
    "FreeMem",
    "PagedInMemory",
    "PagedOutMemory",
    "PageInRate",
    "PageFaultRate",
)
"""Metric names of the :class:`MemoryMetrics` fields, in field order."""

CPU_METRIC_NAMES = ("TotalPhyCPUs", "NumCPUs", "TotalCPUTime")
"""Metric names of the :class:`CpuMetrics` fields, in field order."""


def _read(doc: MetricsDocument, name: str, context: str, uuid: Optional[str],
          convert: Callable):
    try:
        return convert(doc.value(name, context, uuid))
    except (MetricNotFoundError, MetricValueError, ValueError, TypeError):
        return None


def memory_metrics(doc: MetricsDocument, context: str = HOST,
                   uuid: Optional[str] = None) -> MemoryMetrics:
    """The memory group of ``context`` (``uuid`` chooses a VM, see
    :meth:`MetricsDocument.get`; an ambiguous vm lookup raises
    ``AmbiguousMetricError``)."""
    return MemoryMetrics(*(_read(doc, n, context, uuid, int) for n in MEMORY_METRIC_NAMES))


def cpu_metrics(doc: MetricsDocument, context: str = HOST,
                uuid: Optional[str] = None) -> CpuMetrics:
    """The CPU group of ``context`` (``uuid`` chooses a VM)."""
    total, used, cpu_time = CPU_METRIC_NAMES
    return CpuMetrics(
        _read(doc, total, context, uuid, int),
        _read(doc, used, context, uuid, int),
        _read(doc, cpu_time, context, uuid, float),
    )


def host_memory_metrics(doc: MetricsDocument) -> MemoryMetrics:
    """libmetrics' ``get_host_memory_metrics``."""
    return memory_metrics(doc, HOST)


def host_cpu_metrics(doc: MetricsDocument) -> CpuMetrics:
    """libmetrics' ``get_host_cpu_metrics``."""
    return cpu_metrics(doc, HOST)


def vm_memory_metrics(doc: MetricsDocument, uuid: Optional[str] = None) -> MemoryMetrics:
    """libmetrics' ``get_vm_memory_metrics``, for VM ``uuid``."""
    return memory_metrics(doc, VM, uuid)


def vm_cpu_metrics(doc: MetricsDocument, uuid: Optional[str] = None) -> CpuMetrics:
    """libmetrics' ``get_vm_cpu_metrics``, for VM ``uuid``."""
    return cpu_metrics(doc, VM, uuid)


__all__ = [
    "CpuMetrics",
    "MemoryMetrics",
    "CPU_METRIC_NAMES",
    "MEMORY_METRIC_NAMES",
    "cpu_metrics",
    "host_cpu_metrics",
    "host_memory_metrics",
    "memory_metrics",
    "vm_cpu_metrics",
    "vm_memory_metrics",
]
