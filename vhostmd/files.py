"""Opening files as root in directories others can write (/dev/shm, /run).

What the daemon creates there must be its own, proven each time it opens
it: a name another user made (a planted file, a symlink, a hard link to
someone else's file) is never adopted. The policy, also in
docs/operations.md ("Files in shared directories"):

- a *directory* the daemon would use (the disk's parent, the per-VM
  directory) that belongs to another user, or that others may write into
  without the sticky bit, is refused with an error naming it: the daemon
  cannot tell what else is in it, and removing a tree as root in a hostile
  directory is a risk of its own;
- a *file* at the disk's name that is not the daemon's own (another owner,
  writable by group or others, more than one link, a symlink, a FIFO...) is
  replaced: its name is unlinked (never followed) and a new file created
  with ``O_CREAT|O_EXCL|O_NOFOLLOW``, so that a file planted before the
  daemon starts cannot keep it from starting.

Files are opened relative to a directory file descriptor opened with
``O_DIRECTORY|O_NOFOLLOW`` and checked once, so swapping the directory for a
symlink later cannot redirect a create or an unlink.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import stat
from pathlib import Path
from typing import Collection

log = logging.getLogger(__name__)

#: How often a name is unlinked and created again before giving up: someone
#: re-creating it as fast as we remove it is refused, not raced forever.
_REPLACE_ATTEMPTS = 3


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


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Replace *path* with *data* atomically: readers see the old file or the new, whole.

    The data goes to a temporary file beside *path*, which is then renamed
    over it; on any failure the temporary file is removed. Raises OSError
    or FileRefused.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        fd = open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def foreign_file(info: os.stat_result) -> str | None:
    """Why the file described by *info* is not the daemon's own; None when it is."""
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if info.st_uid != os.geteuid():
        return f"belongs to {_user(info.st_uid)}, not to the daemon ({_user(os.geteuid())})"
    if mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(mode):04o})"
    if info.st_nlink != 1:
        return f"has {info.st_nlink} hard links"
    return None


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def open_directory(path: Path, *, owners: Collection[int], sticky_ok: bool,
                   create_mode: int | None = None, create_owner: int | None = None,
                   owned_symlink_ok: bool = False) -> int:
    """A file descriptor of directory *path*, checked: owned by one of *owners*
    and writable by nobody else (or, with *sticky_ok*, sticky like /dev/shm).

    Created with *create_mode* (and parents as needed) when missing and a mode
    is given, and handed to *create_owner*. The last component is not
    followed if it is a symlink, unless *owned_symlink_ok* and the symlink
    belongs to one of *owners* (/var/run -> /run). Raises FileRefused naming
    the directory.
    """
    path = Path(path)
    if create_mode is not None:
        try:
            os.makedirs(path.parent, exist_ok=True)
            os.mkdir(path, create_mode)
        except FileExistsError:
            pass
        except OSError as err:
            raise FileRefused(f"cannot create directory {path}: {err.strerror}") from None
        else:
            os.chmod(path, create_mode)  # whatever the umask
            if create_owner is not None and create_owner != os.geteuid():
                os.chown(path, create_owner, -1)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        if owned_symlink_ok:
            link = os.lstat(path)
            if not (stat.S_ISLNK(link.st_mode) and link.st_uid in owners):
                flags |= os.O_NOFOLLOW
        else:
            flags |= os.O_NOFOLLOW
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise FileRefused(f"directory {path} is a symbolic link; refusing to follow it") from None
        if err.errno == errno.ENOTDIR:
            raise FileRefused(f"{path} is not a directory; refusing to use it") from None
        raise FileRefused(f"cannot open directory {path}: {err.strerror}") from None
    info = os.fstat(fd)
    problem = None
    if info.st_uid not in owners:
        problem = f"belongs to {_user(info.st_uid)}, not to the daemon ({_user(os.geteuid())})"
    elif info.st_mode & 0o022 and not (sticky_ok and info.st_mode & stat.S_ISVTX):
        problem = f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    if problem:
        os.close(fd)
        raise FileRefused(f"directory {path} {problem}; refusing to use it "
                          f"(remove it, or choose another directory)")
    return fd


def open_own_file(dir_fd: int, name: str, display: Path, mode: int) -> tuple[int, bool]:
    """Open file *name* in directory *dir_fd* read-write, proven the daemon's own.

    Returns ``(fd, created)``. An existing file that is not the daemon's own
    (see :func:`foreign_file`) is unlinked and replaced by a new one; a
    directory there is refused. *display* names the file in messages.
    Raises FileRefused.
    """
    for _ in range(_REPLACE_ATTEMPTS):
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        except OSError as err:
            raise FileRefused(f"cannot look at {display}: {err.strerror}") from None
        if info is not None:
            problem = foreign_file(info)
            if problem is None:
                try:
                    fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                                 dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # removed meanwhile: create it
                except OSError as err:
                    if err.errno == errno.ELOOP:
                        continue  # swapped for a symlink meanwhile: look again
                    raise FileRefused(f"cannot open {display}: {err.strerror}") from None
                opened = os.fstat(fd)
                if same_file(info, opened) and foreign_file(opened) is None:
                    return fd, False
                os.close(fd)  # swapped between the look and the open: look again
                continue
            if stat.S_ISDIR(info.st_mode):
                raise FileRefused(f"{display} is a directory; refusing to use it (remove it)")
            log.warning("%s %s; replacing it with a new file", display, problem)
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            except OSError as err:
                raise FileRefused(f"{display} {problem}, and cannot be removed: {err.strerror}") from None
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode, dir_fd=dir_fd)
        except FileExistsError:
            continue  # someone created it meanwhile: look at it again
        except OSError as err:
            raise FileRefused(f"cannot create {display}: {err.strerror}") from None
        os.fchmod(fd, mode)  # whatever the umask
        return fd, True
    raise FileRefused(f"{display} keeps being re-created by someone else; refusing to use it")
