"""Process set-up: logging, detaching from the terminal, dropping root."""

from __future__ import annotations

import logging
import logging.handlers
import os
import pwd
import sys


def setup_logging(foreground: bool, verbose: bool) -> None:
    """Log to stderr in the foreground, else to syslog (daemon facility)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler
    if foreground and stderr_is_journal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter("%(levelname)s: %(message)s"))
    elif foreground:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("vhostmd: %(levelname)s: %(message)s"))
    else:
        try:
            handler = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
        except OSError:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"vhostmd[{os.getpid()}]: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def stderr_is_journal() -> bool:
    """Whether stderr is systemd's journal stream ($JOURNAL_STREAM is its "DEV:INODE").

    Checked against stderr itself: a shell started from the service inherits
    the variable, but its stderr may go elsewhere.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, inode = (int(part) for part in value.split(":"))
        info = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (dev, inode)


#: sd-daemon(3)'s priority prefixes: journald takes "<N>" at the start of a
#: line as its priority (so `journalctl -p warning` finds warnings).
JOURNAL_PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """Starts every line of a record with its "<N>" priority, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def journal_priority(level: int) -> int:
    """The syslog priority of a logging level (CRITICAL and ERROR are both 3, err)."""
    for threshold, priority in JOURNAL_PRIORITIES:
        if level >= threshold:
            return priority
    return 7


def daemonize() -> None:
    """Detach: double fork, new session, cwd /, standard streams on /dev/null."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


class PrivilegeError(Exception):
    pass


def drop_privileges(user: str) -> None:
    """Become *user*, with its primary group and its supplementary groups.

    The supplementary groups are *user*'s own from the group database (as
    the C vhostmd's initgroups), not root's: a service user added to the
    ``qemu`` or ``libvirt-qemu`` group can still reach the channel sockets.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no such user {user!r}") from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise PrivilegeError(f"user {user!r} has uid or gid 0; refusing to run as it")
    if 0 in os.getgrouplist(user, entry.pw_gid):
        raise PrivilegeError(f"user {user!r} is a member of group 0; refusing to run as it")
    try:
        os.initgroups(user, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except PermissionError as err:
        raise PrivilegeError(f"cannot become user {user!r}: {err.strerror}") from None
    os.environ["HOME"] = entry.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = user
