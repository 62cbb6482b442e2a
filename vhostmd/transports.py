"""The one place that opens, keeps and closes the transports.

Each transport is a :class:`~vhostmd.publish.Publisher`; :data:`TRANSPORTS`
lists them with the function that opens one for a configuration. A reload
asks :func:`open_transports` for the new set: a transport whose settings did
not change is kept (open files and connected channels included), the others
are opened anew, and :func:`close_transports` stops those left over.

Adding a transport is one publisher class and one line in :data:`TRANSPORTS`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, NamedTuple, Sequence

from .config import Config
from .publish import Publisher, capacity
from .publish.per_vm_disks import PerVmDiskPublisher, open_per_vm_disks, prepare_per_vm_disks
from .publish.shared_disk import DiskPublisher, open_shared_disk
from .publish.virtio.transport import VirtioTransport, open_virtio
from .publish.xenstore import publisher as xenstore

log = logging.getLogger(__name__)


class Transport(NamedTuple):
    """A kind of transport."""

    publisher: type
    #: ``open(config, current)``: the publisher *config* asks for (None if it
    #: asks for none), reusing *current* (the running one, or None) when its
    #: settings are the same. May raise DiskError (the shared disk only).
    open: Callable[[Config, Any], Any]
    #: Whether it answers guests between updates (left out of ``--once``).
    serves: bool = False
    #: ``prepare(config, owner)``, run as root before privileges are dropped
    #: to *owner*: makes what the transport will need to write (OSError if not).
    prepare: Callable[[Config, Any], None] | None = None


#: Every transport, in the order they are published to.
TRANSPORTS: tuple[Transport, ...] = (
    Transport(DiskPublisher, open_shared_disk),
    Transport(PerVmDiskPublisher, open_per_vm_disks, prepare=prepare_per_vm_disks),
    Transport(VirtioTransport, open_virtio, serves=True),
    Transport(xenstore.XenstorePublisher, xenstore.open_xenstore),
)


def open_transports(config: Config, current: Sequence[Publisher] = (), *,
                    once: bool = False) -> list[Publisher]:
    """The publishers *config* asks for, reusing those of *current* that did not change.

    *once*: for a single update, so transports that serve guests between
    updates are left out. Raises DiskError when the shared disk cannot be
    made (TransportError: it is opened first, so nothing else was made then).
    """
    running = {type(p): p for p in current}
    opened: list[Publisher] = []
    for transport in TRANSPORTS:
        if once and transport.serves:
            continue
        publisher = transport.open(config, running.get(transport.publisher))
        if publisher is not None:
            opened.append(publisher)
    return opened


async def start_transports(publishers: Sequence[Publisher]) -> None:
    """Start *publishers* (those kept by a reload are started again: a no-op for most)."""
    for publisher in publishers:
        await publisher.start()


async def close_transports(publishers: Sequence[Publisher], keep: Sequence[Publisher] = ()) -> None:
    """Stop *publishers*, except those in *keep* (taken over by a new set)."""
    for publisher in publishers:
        if not any(publisher is kept for kept in keep):
            await publisher.stop()


def prepare(config: Config, owner: int | None) -> None:
    """Make, as root, what the transports write once privileges are dropped to *owner*.

    Raises OSError naming what could not be made.
    """
    for transport in TRANSPORTS:
        if transport.prepare is not None:
            transport.prepare(config, owner)


def describe(config: Config) -> list[str]:
    """What ``vhostmd --check`` says about the transports *config* asks for."""
    lines = []
    if "vbd" in config.transports and config.disk.per_vm_dir is not None:
        lines.append(f"vbd: one metrics disk per VM in {config.disk.per_vm_dir}, {config.disk.size} bytes each")
    elif "vbd" in config.transports:
        lines.append(f"vbd: metrics disk {config.disk.path}, {config.disk.size} bytes, "
                     f"{capacity.estimate(config).describe()}")
    if "virtio" in config.transports:
        v = config.virtio
        lines.append(
            f"virtio: channels under {v.channel_path}, at most {v.max_channels}, "
            f"expire after {v.expiration_time} s, {v.rate_limit:g} requests/s (burst {v.rate_burst})"
        )
    if "xenstore" in config.transports:
        lines.append(xenstore.describe(config))
        if xenstore.over_limit(config):
            lines.append(f"warning: {xenstore.OVER_LIMIT}")
    return lines


def announce(config: Config) -> None:
    """Log, at startup, how many VMs the shared disk holds (estimated)."""
    if "vbd" in config.transports and config.disk.per_vm_dir is None:
        log.info("metrics disk %s %s", config.disk.path, capacity.estimate(config).describe())
    if "xenstore" in config.transports and xenstore.over_limit(config):
        log.warning("%s: %s", xenstore.describe(config), xenstore.OVER_LIMIT)
