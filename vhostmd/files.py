"""Opening files as root in directories others can write (/dev/shm, /run)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class FileRefused(Exception):
    """A path that cannot or must not be opened; the message names it."""


def open_regular(path: Path, flags: int, mode: int) -> int:
    """Open *path* without following a symlink, and only if it is a regular file.

    A symlink planted at *path* is refused and its target left untouched; so
    is a FIFO or device (opened non-blocking so that a FIFO cannot hang us).
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise FileRefused(f"{path} is a symbolic link; refusing to follow it") from None
        raise FileRefused(f"cannot open {path}: {err.strerror}") from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileRefused(f"{path} exists and is not a regular file; refusing to use it")
    return fd
