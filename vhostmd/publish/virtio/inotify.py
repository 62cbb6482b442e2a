"""A minimal Linux inotify binding (ctypes, no third-party package).

Used to notice new virtio channel sockets as soon as QEMU creates them,
instead of rescanning the channel directory on a timer.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import NamedTuple

IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


class InotifyEvent(NamedTuple):
    wd: int
    mask: int
    name: bytes


class Inotify:
    """An inotify instance: a non-blocking descriptor to poll, and its watches."""

    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd

    def add_watch(self, path: str | bytes, mask: int) -> int:
        """Watch *path*; return the watch descriptor (the same one for the same inode)."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(path))
        return wd

    def rm_watch(self, wd: int) -> None:
        # EINVAL: the watch is already gone (its directory was removed).
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[InotifyEvent]:
        """The events queued now (none when there are none)."""
        events: list[InotifyEvent] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            except OSError as err:
                if err.errno == errno.EINTR:
                    continue
                raise
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                name = data[offset:offset + length].rstrip(b"\0")
                offset += length
                events.append(InotifyEvent(wd, mask, name))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        # The C library is already loaded into the interpreter: its symbols
        # are found through the process's own handle. Not
        # ctypes.util.find_library, which runs /sbin/ldconfig to search.
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "inotify_init1"):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _LIBC = libc
    return _LIBC
