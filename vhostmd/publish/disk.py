"""The metrics disk file: creating it safely and publishing into it.

The byte layout is in :mod:`vhostmd.disk_format`; this module only does I/O.
The daemon runs as root and the path is often in world-writable /dev/shm, so
the file is proven the daemon's own each time it is opened (see
:mod:`vhostmd.files`), its space is reserved when it is created, and each
update checks that the path still names the open file.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from pathlib import Path

from . import TransportError, disk_format
from ..files import FileRefused, open_directory, open_own_file, same_file

log = logging.getLogger(__name__)

DISK_MODE = 0o644
#: A directory the daemon creates for its disks: QEMU, which opens a disk by
#: its path as its own user (libvirt-qemu, qemu), must pass through it;
#: nobody else need list it.
DIR_MODE = 0o711


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


def open_parent(directory: Path) -> int:
    """The shared disk's directory, created 0700 when missing.

    It must belong to root or to the daemon, and may be writable by others
    only with the sticky bit (as /dev/shm is), so nobody else can rename or
    remove what the daemon creates in it.
    """
    try:
        return open_directory(directory, owners={0, os.geteuid()}, sticky_ok=True,
                              create_mode=DIR_MODE, owned_symlink_ok=True)
    except FileRefused as err:
        raise DiskError(f"metrics disk: {err}") from None


class MetricsDisk:
    """An open metrics disk of a fixed size, written with the busy protocol.

    Opened relative to *dir_fd* when given (the per-VM directory, held by
    its publisher); otherwise the disk opens and checks its own directory.
    An existing disk that is the daemon's own and holds a valid document
    keeps it until the first new document is written; anything else is
    zero-filled. Raises DiskError naming the disk.
    """

    def __init__(self, path: Path, size: int, dir_fd: int | None = None):
        self.path = Path(path)
        self.size = size
        # Strings, not Path properties: check() runs for every disk every update.
        self._name = self.path.name
        self._parent = str(self.path.parent)
        self._last: bytes | None = None
        self._own_dir = dir_fd is None
        self._dir_fd = -1 if dir_fd is None else dir_fd
        self._dir_id: os.stat_result | None = None
        self._fd = -1
        self._id: os.stat_result | None = None
        #: Times the path was found gone or replaced and the disk re-created.
        self.recreated = 0
        #: What happened to the path the last time, for status.
        self.recreated_note: str | None = None
        try:
            self._open(keep=True)
        except DiskError:
            self.close()
            raise

    @property
    def capacity(self) -> int:
        return disk_format.capacity(self.size)

    def _open(self, keep: bool) -> None:
        if self._own_dir:
            if self._dir_fd >= 0:
                os.close(self._dir_fd)
                self._dir_fd = -1
            self._dir_fd = open_parent(self.path.parent)
            self._dir_id = os.fstat(self._dir_fd)
        try:
            fd, created = open_own_file(self._dir_fd, self.path.name, self.path, DISK_MODE)
        except FileRefused as err:
            raise DiskError(f"metrics disk: {err}") from None
        try:
            os.fchmod(fd, DISK_MODE)  # whatever an old file of ours had
            if created or not keep or not self._holds_document(fd):
                # Zero-fill: a guest must not find an old document's bytes.
                os.ftruncate(fd, 0)
            elif os.fstat(fd).st_size > self.size:
                os.ftruncate(fd, self.size)
        except OSError as err:
            os.close(fd)
            raise DiskError(f"cannot size {self.path} to {self.size} bytes: {err.strerror}") from None
        try:
            # tmpfs allocates on write: without this a full filesystem would
            # cut a later document short.
            os.posix_fallocate(fd, 0, self.size)
        except OSError as err:
            os.close(fd)
            raise DiskError(
                f"cannot reserve {self.size} bytes for metrics disk {self.path}: "
                f"{os.strerror(err.errno) if err.errno else err}"
            ) from None
        self._fd = fd
        self._id = os.fstat(fd)

    def _holds_document(self, fd: int) -> bool:
        """Whether *fd* holds a complete document that fits this disk's size."""
        try:
            header = disk_format.decode_header(os.pread(fd, disk_format.HEADER_SIZE, 0))
            if (header.signature != disk_format.SIGNATURE or header.busy
                    or header.length > self.capacity):
                return False
            content = os.pread(fd, header.length, disk_format.HEADER_SIZE)
        except (OSError, ValueError):
            return False
        return len(content) == header.length and disk_format.checksum(content) == header.sum

    def _where_now(self) -> str | None:
        """None while the path names the open file; else what it names now."""
        try:
            if self._own_dir and not same_file(os.stat(self._parent), self._dir_id):
                return f"is no longer in the directory {self._parent} the daemon opened"
            info = os.stat(self._name, dir_fd=self._dir_fd, follow_symlinks=False)
        except PermissionError:
            # After -u USER the directory may be closed to us: the open file
            # is all we have, and nobody without root could replace it there.
            return None
        except OSError:
            return "was removed"
        if same_file(info, self._id):
            return None
        if stat.S_ISLNK(info.st_mode):
            return "was replaced by a symbolic link"
        if stat.S_ISDIR(info.st_mode):
            return "was replaced by a directory"
        return "was replaced by another file"

    def check(self) -> None:
        """Re-create the disk if its path no longer names the open file.

        Cheap (one or two stat calls): run before every update. Logged once
        per event; raises DiskError while it cannot be re-created.
        """
        if self._fd >= 0:
            what = self._where_now()
            if what is None:
                return
            log.error("metrics disk %s %s; re-creating it", self.path, what)
            self.recreated += 1
            self.recreated_note = (f"{self.path} {what} at {time.strftime('%Y-%m-%d %H:%M:%S')} "
                                   f"and was re-created ({self.recreated} time(s) so far)")
            os.close(self._fd)
            self._fd = -1
            self._last = None
        self._open(keep=False)

    def publish(self, content: bytes, checksum: int) -> bool:
        """Write *content* (whose checksum is *checksum*); False if unchanged.

        Raises DiskFull when it does not fit (nothing is written), DiskError
        when the disk cannot be re-created or a write fails or comes up
        short (the header then keeps busy=1, so no reader takes it).
        """
        self.check()
        if content == self._last:
            return False
        if len(content) > self.capacity:
            raise DiskFull(self.path, len(content) + disk_format.HEADER_SIZE, self.size)
        self._last = None
        # Readers wait while busy is set, and re-read the header after the
        # content to catch an update that started meanwhile.
        self._write(disk_format.encode_header(busy=True, sum=checksum, length=len(content)), 0)
        self._write(content, disk_format.HEADER_SIZE)
        self._write(disk_format.encode_busy(False), disk_format.BUSY_OFFSET)
        self._last = content
        return True

    def _write(self, data: bytes, offset: int) -> None:
        done = 0
        view = memoryview(data)
        while done < len(data):
            try:
                n = os.pwrite(self._fd, view[done:], offset + done)
            except OSError as err:
                raise DiskError(self._short(len(data), done, offset, err.strerror)) from None
            if n <= 0:
                raise DiskError(self._short(len(data), done, offset, os.strerror(errno.ENOSPC)))
            done += n

    def _short(self, wanted: int, done: int, offset: int, why: str) -> str:
        return (f"cannot write metrics disk {self.path}: wrote {done} of {wanted} bytes "
                f"at offset {offset}: {why}; the disk stays marked busy")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._own_dir and self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
