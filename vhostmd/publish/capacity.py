"""How many VMs the metrics disk holds, and a warning before it fills.

The document grows with every running VM; content larger than the disk
cannot be published at all (the old content stays). :func:`estimate` tells
from the configuration alone how many VMs fit; :class:`CapacityWatch` checks
each published document and warns while it is close to the limit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from . import disk_format
from ..config import Config, MetricDef
from ..model import Domain, Metric
from ..render import DOCUMENT_END, DOCUMENT_START, metric_element

log = logging.getLogger(__name__)

#: Characters assumed for a value of each type when estimating: wide enough
#: for real figures (a 10-digit counter, seconds with six decimals, a host name).
VALUE_WIDTH = {
    "int32": 10, "uint32": 10, "int64": 12, "uint64": 12,
    "real32": 17, "real64": 17, "string": 32,
}
#: A domain id and UUID as wide as they get in practice.
_SAMPLE_DOMAIN = Domain(99999, "", "00000000-0000-0000-0000-000000000000")
#: Warn when the document uses more than this share of the disk's content
#: space; say it cleared when it falls below the second.
WARN_AT, CLEAR_AT = 0.9, 0.8


@dataclass(frozen=True)
class Capacity:
    """The disk's room for VMs under one configuration."""

    content_bytes: int
    host_bytes: int
    vm_bytes: int
    #: Metrics whose size cannot be known in advance (type xml).
    unsized: int = 0

    @property
    def vms(self) -> int:
        """How many VMs fit (0 when not even the host metrics do)."""
        room = self.content_bytes - self.host_bytes
        if room < 0:
            return 0
        return room // self.vm_bytes if self.vm_bytes else 10**9

    def describe(self) -> str:
        if not self.vm_bytes:
            count = "any number of VMs (no vm metrics)"
        else:
            count = f"about {self.vms} VMs ({self.vm_bytes} bytes per VM, {self.host_bytes} for the rest)"
        note = f"; {self.unsized} xml metric(s) not counted" if self.unsized else ""
        return f"holds {count}{note}"


def _elements(defs: tuple[MetricDef, ...], domain: Domain | None) -> tuple[int, int]:
    size = unsized = 0
    for metric in defs:
        if metric.type == "xml":
            unsized += 1
            continue
        for out in metric.outputs():
            value = "9" * VALUE_WIDTH.get(out.type, 32)
            element = metric_element(Metric(out.name, out.type, value, out.unit),
                                     metric.context, domain)
            size += len(element.encode())
    return size, unsized


def estimate(config: Config, disk_size: int | None = None) -> Capacity:
    """The capacity of the configured disk (or of *disk_size* bytes) for *config*."""
    host, host_unsized = _elements(config.host_metrics, None)
    vm, vm_unsized = _elements(config.vm_metrics, _SAMPLE_DOMAIN)
    size = config.disk.size if disk_size is None else disk_size
    return Capacity(
        content_bytes=disk_format.capacity(size),
        host_bytes=host + len(DOCUMENT_START) + len(DOCUMENT_END),
        vm_bytes=vm,
        unsized=host_unsized + vm_unsized,
    )


def size_for(config: Config, vms: int) -> int:
    """The disk size, in KiB, that holds *vms* VMs under *config* (estimated)."""
    cap = estimate(config)
    needed = disk_format.HEADER_SIZE + cap.host_bytes + vms * cap.vm_bytes
    return -(-needed // 1024)


class CapacityWatch:
    """Warns while published documents come close to the disk's size."""

    def __init__(self, path, disk_size: int):
        self.path = path
        self.content_bytes = disk_format.capacity(disk_size)
        self.warning = False

    def observe(self, document_bytes: int, vms: int, host_bytes: int = 0) -> str | None:
        """Check one document (*host_bytes* of it not per VM); returns the warning logged, if any."""
        share = document_bytes / self.content_bytes
        if share >= WARN_AT and not self.warning:
            self.warning = True
            per_vm = (document_bytes - host_bytes) / vms if vms else 0
            fits = int((self.content_bytes - host_bytes) / per_vm) if per_vm else 0
            state = "too small" if share > 1 else f"{share:.0%} full"
            message = (
                f"metrics disk {self.path} is {state}: the document of {vms} VMs takes "
                f"{document_bytes} of {self.content_bytes} bytes, room for about {fits} VMs; "
                f"raise <size> in the configuration"
                + ("" if share > 1 else " before more VMs start")
            )
            # Too small is an error (the document is not published); the
            # publish error itself is logged by the daemon too.
            log.log(logging.ERROR if share > 1 else logging.WARNING, "%s", message)
            return message
        if share < CLEAR_AT and self.warning:
            self.warning = False
            log.info("metrics disk %s is %.0f%% full again", self.path, share * 100)
        return None
