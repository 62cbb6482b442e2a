"""What the transports share: the error they raise, and the shared-disk publisher.

A publisher takes each update's rendered output: ``publish(rendered,
snapshot)`` (raising PublishError when it cannot), ``async start()``,
``async stop()``, and optionally ``status()`` for ``vhostmd status``.
"""

from __future__ import annotations

from ..disk import DiskError, MetricsDisk
from ..disk_format import HEADER_SIZE
from ..model import Snapshot
from ..render import Rendered
from ..status import DiskStatus, TransportStatus


class PublishError(Exception):
    """A transport could not publish this update; the message says why."""


class DiskPublisher:
    """Publishes the whole document to the shared metrics disk."""

    name = "vbd"

    def __init__(self, disk: MetricsDisk):
        self.disk = disk
        self._used = 0
        self._error: str | None = None

    def publish(self, rendered: Rendered, snapshot: Snapshot) -> None:
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
        )

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
