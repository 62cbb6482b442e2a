"""Thin reads from block devices, O_DIRECT where the device allows it.

O_DIRECT bypasses the guest's page cache, so every read sees what the host
wrote last rather than a cached copy. It demands aligned file offsets,
lengths and memory: reads here start and end on :data:`BLOCK_SIZE`
boundaries and land in an anonymous mmap, which is page aligned. Where
O_DIRECT is refused (tmpfs, some file systems: EINVAL), reads fall back to
ordinary buffered I/O.
"""

import errno
import mmap
import os

from .errors import TruncatedDiskError

BLOCK_SIZE = 4096
"""Alignment of direct reads; a multiple of every common logical block size."""

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class Device:
    """A device or file opened read-only for positioned reads.

    The open never blocks (O_NONBLOCK), so a drive without a medium fails
    at once instead of hanging. Use it as a context manager.
    """

    def __init__(self, path: str, direct: bool = True) -> None:
        self.path = path
        flags = os.O_RDONLY | os.O_NONBLOCK | _O_CLOEXEC
        self.direct = bool(direct and _O_DIRECT)
        if self.direct:
            try:
                self.fd = os.open(path, flags | _O_DIRECT)
                return
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                self.direct = False
        self.fd = os.open(path, flags)

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def size(self) -> int:
        """The device's size in bytes."""
        return os.lseek(self.fd, 0, os.SEEK_END)

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset``.

        Raises :class:`TruncatedDiskError` when the device ends sooner.
        """
        data = b""
        if self.direct:
            try:
                data = self._read_direct(offset, length)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                self.direct = False
        if not self.direct:
            data = self._read_buffered(offset, length)
        if len(data) < length:
            raise TruncatedDiskError(
                "{} ends after {} bytes, {} needed".format(
                    self.path, offset + len(data), offset + length
                )
            )
        return data

    def _read_direct(self, offset: int, length: int) -> bytes:
        start = offset - offset % BLOCK_SIZE
        span = offset + length - start
        span += -span % BLOCK_SIZE
        buf = mmap.mmap(-1, max(span, BLOCK_SIZE))
        view = memoryview(buf)
        try:
            os.lseek(self.fd, start, os.SEEK_SET)
            got = 0
            while got < span:
                n = os.readv(self.fd, [view[got:span]])
                got += n
                # A short read that is not whole blocks means the end of the
                # device: the next read would start unaligned.
                if n == 0 or n % BLOCK_SIZE:
                    break
            return bytes(view[offset - start:min(got, offset - start + length)])
        finally:
            view.release()
            buf.close()

    def _read_buffered(self, offset: int, length: int) -> bytes:
        os.lseek(self.fd, offset, os.SEEK_SET)
        chunks = []
        left = length
        while left > 0:
            chunk = os.read(self.fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
