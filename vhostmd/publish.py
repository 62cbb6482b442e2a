"""What the transports share: the error they raise, and the shared-disk publisher.

A publisher takes each update's rendered output: ``publish(rendered,
snapshot)`` (raising PublishError when it cannot), ``async start()``,
``async stop()``, and optionally ``status()`` for ``vhostmd status``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable

from .disk import DiskError, MetricsDisk
from .disk_format import HEADER_SIZE
from .model import Snapshot
from .render import Rendered
from .status import DiskStatus, TransportStatus


log = logging.getLogger(__name__)


class PublishError(Exception):
    """A transport could not publish this update; the message says why."""


class PublishErrorLog:
    """Logs publish errors at ERROR level without one line per update forever.

    An error is logged when it appears; while it persists, a summary line
    every *remind* seconds says for how many updates; when it clears, that
    is logged too. Errors are told apart with their numbers left out, so a
    document that grows a little each update is still the same error.
    """

    REMIND = 600.0

    def __init__(self, remind: float = REMIND, clock: Callable[[], float] = time.monotonic):
        self.remind = remind
        self.clock = clock
        #: key -> [first seen, updates seen, last logged, last text]
        self._active: dict[str, list] = {}

    @staticmethod
    def _key(line: str) -> str:
        return re.sub(r"[0-9]+", "#", line)

    def update(self, errors: list[str]) -> None:
        now = self.clock()
        current = {}
        for line in errors:
            key = self._key(line)
            current[key] = line
            seen = self._active.get(key)
            if seen is None:
                log.error("%s", line)
                self._active[key] = [now, 1, now, line]
                continue
            seen[1] += 1
            seen[3] = line
            if now - seen[2] >= self.remind:
                log.error("still failing, %d updates in %.0f s: %s", seen[1], now - seen[0], line)
                seen[2] = now
        for key in [k for k in self._active if k not in current]:
            first, count, _, line = self._active.pop(key)
            log.info("publishing works again after %d failed update(s) in %.0f s: %s",
                     count, now - first, line)


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
            notes=(self.disk.recreated_note,) if self.disk.recreated_note else (),
        )

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass
