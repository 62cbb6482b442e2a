"""Publishing: the transports that carry each update's rendered metrics to the guests.

Every transport is a :class:`Publisher`. :mod:`vhostmd.transports` opens
them from the configuration (and keeps them across a reload that does not
change them); :class:`vhostmd.pipeline.Pipeline` hands each of them every
update's :class:`~vhostmd.render.Rendered` output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    # Annotations only: the renderer imports publish.disk_format, so render
    # must not be imported from here at run time.
    from ..render import Rendered
    from ..state import TransportStatus


class TransportError(Exception):
    """A transport cannot be opened; the message names what and why."""


class PublishError(Exception):
    """A transport could not publish this update; the message says why."""


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
        """Take one update's output; raise PublishError when it could not be published."""

    def status(self) -> TransportStatus:
        """What ``vhostmd status`` shows about this transport."""

    async def stop(self) -> None:
        """Stop and release what the transport holds (files, channels)."""
