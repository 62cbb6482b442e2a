"""Publishing: the transports that carry each update's rendered metrics to the guests.

Every transport is a :class:`Publisher`. :mod:`vhostmd.transports` opens
them from the configuration (and keeps them across a reload that does not
change them); :class:`vhostmd.pipeline.Pipeline` hands each of them every
update's :class:`~vhostmd.render.Rendered` output.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    # Annotations only: the renderer imports publish.disk_format, so render
    # must not be imported from here at run time.
    from ..render import Rendered
    from ..state import TransportStatus


log = logging.getLogger(__name__)


class TransportError(Exception):
    """A transport cannot be opened; the message names what and why."""


class PublishError(Exception):
    """A transport could not store this update for the guests; the message says why.

    Any of them makes the update "not published". Trouble reaching guests
    that the transport retries by itself (a virtio channel directory it
    cannot list, a socket that refuses) is not one: it is an error in the
    transport's ``status()``.
    """


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


class Publisher(Protocol):
    """What the daemon needs of a transport.

    A publisher is made (without I/O that could be left half-done, except
    the shared disk's file) by :func:`vhostmd.transports.open_transports`,
    started once, handed every update, asked for its status after each
    update, and stopped when a reload replaces it or the daemon exits. A
    reload that keeps it starts it again: ``start()`` must allow that.
    """

    #: Names the transport in logs and in ``vhostmd status``.
    name: str

    async def start(self) -> None:
        """Start serving (threads, watches, adopting what an earlier run left)."""

    def publish(self, rendered: Rendered) -> None:
        """Take one update's output; raise PublishError when it could not store it."""

    def status(self) -> TransportStatus:
        """What ``vhostmd status`` shows about this transport."""

    async def stop(self) -> None:
        """Stop and release what the transport holds (files, channels)."""
