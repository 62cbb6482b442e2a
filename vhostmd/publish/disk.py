"""The metrics disk file: creating it safely and publishing into it.

The byte layout is in :mod:`vhostmd.disk_format`; this module only does I/O.
The daemon runs as root and the path is often in world-writable /dev/shm, so
the file is opened without following symlinks and must be a regular file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import TransportError, disk_format
from ..files import FileRefused, open_regular

log = logging.getLogger(__name__)

DISK_MODE = 0o644
DIR_MODE = 0o700


class DiskError(TransportError):
    """The disk cannot be created or written; the message names it."""


class DiskFull(DiskError):
    """A document larger than the disk can hold; the old content stays."""

    def __init__(self, path: Path, needed: int, size: int):
        self.needed = needed
        self.size = size
        super().__init__(
            f"metrics disk {path}: the document needs {needed} bytes "
            f"({needed - disk_format.HEADER_SIZE} of content + {disk_format.HEADER_SIZE} header) "
            f"but the disk is configured with {size} bytes; the previous content is kept"
        )


class MetricsDisk:
    """An open metrics disk of a fixed size, written with the busy protocol."""

    def __init__(self, path: Path, size: int):
        self.path = Path(path)
        self.size = size
        self._last: bytes | None = None
        parent = self.path.parent
        if not parent.exists():
            try:
                os.makedirs(parent, mode=DIR_MODE)
            except OSError as err:
                raise DiskError(f"cannot create directory {parent}: {err.strerror}") from None
        try:
            self._fd = open_regular(self.path, os.O_RDWR | os.O_CREAT, DISK_MODE)
        except FileRefused as err:
            raise DiskError(f"metrics disk: {err}") from None
        try:
            os.fchmod(self._fd, DISK_MODE)  # whatever the umask or an old file had
            # Zero-fill: a guest must not find an old document's bytes.
            os.ftruncate(self._fd, 0)
            os.ftruncate(self._fd, size)
        except OSError as err:
            os.close(self._fd)
            raise DiskError(f"cannot size {self.path} to {size} bytes: {err.strerror}") from None

    @property
    def capacity(self) -> int:
        return disk_format.capacity(self.size)

    def publish(self, content: bytes, checksum: int) -> bool:
        """Write *content* (whose checksum is *checksum*); False if unchanged.

        Raises DiskFull when it does not fit (nothing is written), DiskError
        when the write fails.
        """
        if content == self._last:
            return False
        if len(content) > self.capacity:
            raise DiskFull(self.path, len(content) + disk_format.HEADER_SIZE, self.size)
        try:
            # Readers wait while busy is set, and re-read the header after the
            # content to catch an update that started meanwhile.
            os.pwrite(self._fd, disk_format.encode_header(busy=True, sum=checksum, length=len(content)), 0)
            os.pwrite(self._fd, content, disk_format.HEADER_SIZE)
            os.pwrite(self._fd, disk_format.encode_busy(False), disk_format.BUSY_OFFSET)
        except OSError as err:
            self._last = None
            raise DiskError(f"cannot write metrics disk {self.path}: {err.strerror}") from None
        self._last = content
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
