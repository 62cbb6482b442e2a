"""The shared metrics disk's publisher: the whole document, every VM's metrics.

The file itself (creating it safely, the busy protocol) is
:mod:`vhostmd.publish.disk`; this is the transport around it.
"""

from __future__ import annotations

from ..config import Config
from ..render import Rendered
from ..state import DiskStatus, TransportStatus
from . import PublishError
from .capacity import CapacityWatch
from .disk import DiskError, MetricsDisk
from .disk_format import HEADER_SIZE


class DiskPublisher:
    """Publishes the whole document to the shared metrics disk."""

    name = "vbd"

    def __init__(self, disk: MetricsDisk):
        self.disk = disk
        #: Warns when the documents come close to the disk's size.
        self.capacity = CapacityWatch(disk.path, disk.size)
        self._used = 0
        self._error: str | None = None

    def publish(self, rendered: Rendered) -> None:
        host_bytes = len(rendered.document) - sum([len(f.data) for f in rendered.vms.values()])
        self.capacity.observe(len(rendered.document), len(rendered.vms), host_bytes)
        try:
            self.disk.publish(rendered.document, rendered.document_sum)
        except DiskError as err:
            self._error = str(err)
            raise PublishError(str(err)) from None
        self._used = len(rendered.document) + HEADER_SIZE
        self._error = None

    def status(self) -> TransportStatus:
        return TransportStatus(
            name=self.name,
            disks=(DiskStatus(str(self.disk.path), self.disk.size, self._used),),
            errors=(self._error,) if self._error else (),
            notes=(self.disk.recreated_note,) if self.disk.recreated_note else (),
        )

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.disk.close()


def open_shared_disk(config: Config, current: DiskPublisher | None = None) -> DiskPublisher | None:
    """The shared disk *config* asks for, reusing *current* when it is the same file and size.

    Reused, the disk stays open and keeps its document across a reload, so
    guests never see it empty. Raises DiskError when the file cannot be made.
    """
    if "vbd" not in config.transports or config.disk.per_vm_dir is not None:
        # In per-VM mode no disk holds every VM's metrics.
        return None
    if (current is not None and current.disk.path == config.disk.path
            and current.disk.size == config.disk.size):
        # A new configuration may hold other metrics: judge its documents afresh.
        current.capacity = CapacityWatch(current.disk.path, current.disk.size)
        return current
    return DiskPublisher(MetricsDisk(config.disk.path, config.disk.size))
