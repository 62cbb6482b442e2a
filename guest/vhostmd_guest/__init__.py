"""Read the metrics a vhostmd host publishes to its virtual machines.

Pure Python for Python 3.6 and later, standard library only. The pieces:

- :mod:`~vhostmd_guest.mdisk`: the metrics disk format (pure functions).
- :mod:`~vhostmd_guest.document`: the metrics XML document (pure parser).
- :mod:`~vhostmd_guest.disk`: finding and reading the metrics disk.
- :mod:`~vhostmd_guest.port`: the virtio-serial exchange.
- :mod:`~vhostmd_guest.xenstore`: xenstore, on Xen guests.
- :mod:`~vhostmd_guest.sources`: whichever source works.
- :mod:`~vhostmd_guest.groups`: grouped reads (the SAP set, libmetrics' groups).
- :mod:`~vhostmd_guest.dump`: the ``vm-dump-metrics`` tool.
"""

from .channel import REQUEST
from .disk import DiskReader, DiskSnapshot, find_metrics_disk, read_disk
from .document import HOST, VM, Metric, MetricsDocument, convert_value, parse_document
from .errors import (
    AmbiguousMetricError,
    AnswerTooLargeError,
    BadSignatureError,
    ChannelClosedError,
    ChecksumMismatchError,
    DiskBusyError,
    DiskError,
    DiskUnstableError,
    DocumentError,
    InvalidRequestError,
    LengthPastEndError,
    MetricNotFoundError,
    MetricsError,
    MetricValueError,
    NoMetricsDiskError,
    NoSourceError,
    PortNotFoundError,
    TruncatedDiskError,
    VirtioError,
    VirtioTimeoutError,
    XenstoreError,
)
from .groups import (
    CpuMetrics,
    MemoryMetrics,
    SapHostMetrics,
    SapVmMetrics,
    host_cpu_metrics,
    host_memory_metrics,
    sap_host_metrics,
    sap_vm_metrics,
    vm_cpu_metrics,
    vm_memory_metrics,
)
from .mdisk import Header, checksum, decode_header, decode_image
from .port import DEFAULT_PORT, request_metrics, request_metrics_async
from .sources import (
    RawMetrics,
    SourceOptions,
    read_document,
    read_metrics,
    read_metrics_async,
    read_source,
)
from .xenstore import read_xenstore

__version__ = "2.0.0"

__all__ = [
    "AmbiguousMetricError",
    "AnswerTooLargeError",
    "BadSignatureError",
    "ChannelClosedError",
    "ChecksumMismatchError",
    "CpuMetrics",
    "DEFAULT_PORT",
    "DiskBusyError",
    "DiskError",
    "DiskReader",
    "DiskSnapshot",
    "DiskUnstableError",
    "DocumentError",
    "HOST",
    "Header",
    "InvalidRequestError",
    "LengthPastEndError",
    "MemoryMetrics",
    "Metric",
    "MetricNotFoundError",
    "MetricValueError",
    "MetricsDocument",
    "MetricsError",
    "NoMetricsDiskError",
    "NoSourceError",
    "PortNotFoundError",
    "REQUEST",
    "RawMetrics",
    "SapHostMetrics",
    "SapVmMetrics",
    "SourceOptions",
    "TruncatedDiskError",
    "VM",
    "VirtioError",
    "VirtioTimeoutError",
    "XenstoreError",
    "checksum",
    "convert_value",
    "decode_header",
    "decode_image",
    "find_metrics_disk",
    "host_cpu_metrics",
    "host_memory_metrics",
    "parse_document",
    "read_disk",
    "read_document",
    "read_metrics",
    "read_metrics_async",
    "read_source",
    "read_xenstore",
    "request_metrics",
    "request_metrics_async",
    "sap_host_metrics",
    "sap_vm_metrics",
    "vm_cpu_metrics",
    "vm_memory_metrics",
]
