"""One call to get the metrics from whichever source works.

Sources are tried in order (by default the disk, then virtio, then
xenstore, as ``vm-dump-metrics`` does); the first that works wins.
"""

# asyncio is imported in the functions that use it: importing it takes a
# guest under software emulation about half a second, and reading the disk
# needs none of it.
import errno
import os
from typing import NamedTuple, Optional, Sequence

from .channel import MAX_ANSWER_SIZE
from .disk import (
    DEFAULT_ATTEMPTS,
    DEFAULT_RETRY_WAIT,
    DEV_ROOT,
    SYS_BLOCK,
    find_metrics_disk,
    read_disk,
)
from .document import MetricsDocument, parse_document
from .errors import DiskError, MetricsError, NoSourceError
from .port import DEFAULT_PORT, DEFAULT_TIMEOUT, request_metrics, request_metrics_async
from .xenstore import read_xenstore

DISK = "disk"
VIRTIO = "virtio"
XENSTORE = "xenstore"
SOURCES = (DISK, VIRTIO, XENSTORE)
"""Every source, in the default order."""


class RawMetrics(NamedTuple):
    """What a source delivered, byte for byte, and where from."""

    source: str
    location: str
    data: bytes

    def document(self) -> MetricsDocument:
        """The parsed document (raises :class:`DocumentError` if not XML)."""
        return parse_document(self.data)


class SourceOptions(NamedTuple):
    """Where and how long to look; every field has the usual default."""

    device: Optional[str] = None
    port: str = DEFAULT_PORT
    timeout: float = DEFAULT_TIMEOUT
    max_size: int = MAX_ANSWER_SIZE
    attempts: int = DEFAULT_ATTEMPTS
    retry_wait: float = DEFAULT_RETRY_WAIT
    sys_block: str = SYS_BLOCK
    dev_root: str = DEV_ROOT


def read_source(source: str, options: SourceOptions = SourceOptions()) -> RawMetrics:
    """Read the metrics from one source (``disk``, ``virtio`` or ``xenstore``)."""
    if source == DISK:
        path = options.device or find_metrics_disk(options.sys_block, options.dev_root)
        try:
            snapshot = read_disk(path, options.attempts, options.retry_wait)
        except OSError as err:
            hint = ""
            if err.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0:
                hint = " (run as root?)"
            reason = err.strerror or str(err)
            raise DiskError("cannot read {}: {}{}".format(path, reason, hint)) from None
        return RawMetrics(DISK, path, snapshot.content)
    if source == VIRTIO:
        return RawMetrics(
            VIRTIO, options.port, request_metrics(options.port, options.timeout, options.max_size)
        )
    if source == XENSTORE:
        return RawMetrics(XENSTORE, "xenstore", read_xenstore(options.timeout))
    raise ValueError("unknown metrics source {!r}; choose from {}".format(source, SOURCES))


def read_metrics(sources: Sequence[str] = SOURCES,
                 options: SourceOptions = SourceOptions()) -> RawMetrics:
    """The metrics from the first of ``sources`` that works.

    Raises :class:`NoSourceError`, listing each source's error, when none does.
    """
    errors = {}
    for source in sources:
        try:
            return read_source(source, options)
        except MetricsError as err:
            errors[source] = err
    raise NoSourceError(errors)


def read_document(sources: Sequence[str] = SOURCES,
                  options: SourceOptions = SourceOptions()) -> MetricsDocument:
    """The parsed document from the first source that works."""
    return read_metrics(sources, options).document()


async def read_metrics_async(sources: Sequence[str] = SOURCES,
                             options: SourceOptions = SourceOptions()) -> RawMetrics:
    """:func:`read_metrics` for coroutines: virtio is awaited, the disk and
    xenstore are read in the loop's default executor."""
    import asyncio
    loop = asyncio.get_event_loop()
    errors = {}
    for source in sources:
        try:
            if source == VIRTIO:
                data = await request_metrics_async(options.port, options.timeout, options.max_size)
                return RawMetrics(VIRTIO, options.port, data)
            return await loop.run_in_executor(None, read_source, source, options)
        except MetricsError as err:
            errors[source] = err
    raise NoSourceError(errors)
