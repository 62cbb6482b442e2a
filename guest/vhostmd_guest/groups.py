"""Grouped reads: the SAP set, and the groups of the reference's libmetrics.

Each group gathers a few metrics of one context into a record. A field is
``None`` when the document lacks the metric or its value cannot be read as
its type (the reference leaves such fields at zero), so a group read against
a host that publishes another metric set gives mostly ``None`` fields.

**The SAP set** (the host's shipped default, ``conf/vhostmd.conf``):
:func:`sap_host_metrics` and :func:`sap_vm_metrics` give
:class:`SapHostMetrics` and :class:`SapVmMetrics`, one field per metric,
named after it (``FreePhysicalMemory`` is ``free_physical_memory``);
:data:`SAP_HOST_METRIC_NAMES` and :data:`SAP_VM_METRIC_NAMES` map fields to
metric names. Memory figures are MiB, times seconds.

**libmetrics' groups** (the C vhostmd's own set, ``conf/vhostmd-upstream.conf``):
field names and the metrics they come from:

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


class SapHostMetrics(NamedTuple):
    """The host metrics of the SAP set (memory in MiB, times in seconds)."""

    host_name: Optional[str]
    host_system_info: Optional[str]
    time: Optional[int]
    virtualization_vendor: Optional[str]
    virt_product_info: Optional[str]
    number_of_physical_cpus: Optional[int]
    total_cpu_time: Optional[float]
    memory_allocated_to_virtual_servers: Optional[int]
    free_physical_memory: Optional[int]
    free_virtual_memory: Optional[int]
    used_virtual_memory: Optional[int]
    paged_in_memory: Optional[int]
    paged_out_memory: Optional[int]


class SapVmMetrics(NamedTuple):
    """One VM's metrics of the SAP set (memory in MiB, CPU time in seconds)."""

    total_cpu_time: Optional[float]
    resource_processor_limit: Optional[int]
    resource_memory_limit: Optional[int]
    physical_memory_allocated_to_virtual_system: Optional[int]


SAP_HOST_METRIC_NAMES = (
    "HostName",
    "HostSystemInfo",
    "Time",
    "VirtualizationVendor",
    "VirtProductInfo",
    "NumberOfPhysicalCPUs",
    "TotalCPUTime",
    "MemoryAllocatedToVirtualServers",
    "FreePhysicalMemory",
    "FreeVirtualMemory",
    "UsedVirtualMemory",
    "PagedInMemory",
    "PagedOutMemory",
)
"""Metric names of the :class:`SapHostMetrics` fields, in field order."""

SAP_VM_METRIC_NAMES = (
    "TotalCPUTime",
    "ResourceProcessorLimit",
    "ResourceMemoryLimit",
    "PhysicalMemoryAllocatedToVirtualSystem",
)
"""Metric names of the :class:`SapVmMetrics` fields, in field order."""


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


def _typed(doc: MetricsDocument, name: str, context: str, uuid: Optional[str]):
    """The metric's value as its declared type says, or None."""
    try:
        return doc.value(name, context, uuid)
    except (MetricNotFoundError, MetricValueError):
        return None


def sap_host_metrics(doc: MetricsDocument) -> SapHostMetrics:
    """The host metrics of the SAP set, typed as the document declares them."""
    return SapHostMetrics(*(_typed(doc, n, HOST, None) for n in SAP_HOST_METRIC_NAMES))


def sap_vm_metrics(doc: MetricsDocument, uuid: Optional[str] = None) -> SapVmMetrics:
    """The SAP set's metrics of VM ``uuid`` (without it, of the one VM the
    document holds: a per-VM disk or a virtio answer; an ambiguous lookup
    raises ``AmbiguousMetricError``)."""
    return SapVmMetrics(*(_typed(doc, n, VM, uuid) for n in SAP_VM_METRIC_NAMES))


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
    "SapHostMetrics",
    "SapVmMetrics",
    "CPU_METRIC_NAMES",
    "MEMORY_METRIC_NAMES",
    "SAP_HOST_METRIC_NAMES",
    "SAP_VM_METRIC_NAMES",
    "cpu_metrics",
    "host_cpu_metrics",
    "host_memory_metrics",
    "memory_metrics",
    "sap_host_metrics",
    "sap_vm_metrics",
    "vm_cpu_metrics",
    "vm_memory_metrics",
]
