"""The pid file: created exclusively, a stale one replaced with a warning."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .files import FileRefused, open_regular

log = logging.getLogger(__name__)

PID_MODE = 0o644
DEFAULT_PID_FILE = Path("/var/run/vhostmd.pid")


class PidFileError(Exception):
    """The pid file cannot be claimed; the message says why."""


class PidFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._pid: int | None = None
        self._stale_text = ""

    def claim(self, pid: int | None = None) -> None:
        """Create the file holding *pid* (ours by default); refuse if it is taken."""
        pid = pid or os.getpid()
        for _ in range(2):
            try:
                fd = open_regular(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PID_MODE)
            except FileRefused as err:
                if not isinstance(err.__cause__, FileExistsError):
                    raise PidFileError(f"pid file: {err}") from None
                self._replace_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{pid}\n")
            self._pid = pid
            return
        raise PidFileError(f"pid file {self.path} keeps reappearing; another vhostmd starting?")

    def ensure_free(self) -> None:
        """Refuse now if a running process holds the file; a stale or missing one is fine.

        Called before detaching, so that whoever started a second daemon
        sees why it did not start: once detached, only syslog would say.
        """
        if os.path.lexists(self.path):
            other = self._live_holder()
            if other is not None:
                raise PidFileError(f"pid file {self.path}: vhostmd is already running as pid {other}")

    def _live_holder(self) -> int | None:
        """The pid the existing file names, if that process runs."""
        try:
            fd = open_regular(self.path, os.O_RDONLY, 0)
        except FileRefused as err:
            raise PidFileError(f"pid file: {err}") from None
        with os.fdopen(fd) as f:
            self._stale_text = f.read(64).strip()
        try:
            other = int(self._stale_text)
        except ValueError:
            return None
        return other if other > 0 and pid_alive(other) else None

    def _replace_stale(self) -> None:
        other = self._live_holder()
        if other is not None:
            raise PidFileError(f"pid file {self.path}: vhostmd is already running as pid {other}")
        log.warning("replacing stale pid file %s (pid %s is gone)", self.path, self._stale_text or "?")
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Remove the file if it still holds our pid."""
        if self._pid is None:
            return
        try:
            if self.path.read_text().strip() == str(self._pid):
                self.path.unlink()
        except OSError as err:
            log.warning("cannot remove pid file %s: %s", self.path, err.strerror)
        self._pid = None


def process_start(pid: int) -> int | None:
    """When process *pid* started, in clock ticks after boot; None if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        # The command name (field 2) may hold spaces and parentheses.
        return int(text.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int, program: bytes | None = None, started: int = 0) -> bool:
    """Whether process *pid* exists (and, given *program*, has it in its command line).

    *started*, the start time recorded by the process (``process_start``),
    tells a reused pid from it, whatever the command line; without it,
    *program* tells a reused pid of another program from the daemon. Where
    /proc is hidden from us, the pid's existence is all we know.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started:
        now = process_start(pid)
        if now is not None:
            return now == started
    if program is None:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return program in cmdline
