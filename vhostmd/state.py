"""The daemon's state file: its schema, and writing and reading it.

After every update the running daemon replaces a small JSON file (by default
/run/vhostmd/status.json, mode 0644 in a 0755 directory) so that anyone on
the host can see how it is doing without root and without talking to it.
``vhostmd status`` (:mod:`vhostmd.commands.status`) reads that file and says
whether the daemon that wrote it is still running: the process with that
pid must also have the start time the daemon recorded, so a pid reused by
another process (even another vhostmd) is never taken for the daemon.

Each transport contributes a :class:`TransportStatus` through the
``status()`` method of its publisher; the daemon gathers them as they are.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import __version__
from .files import FileRefused, replace_file
from .pidfile import pid_alive

log = logging.getLogger(__name__)

DEFAULT_STATUS_FILE = Path("/run/vhostmd/status.json")
STATUS_MODE = 0o644
STATUS_DIR_MODE = 0o755
FORMAT = 1


@dataclass(frozen=True)
class DiskStatus:
    """One metrics disk: its size and how much the last document used."""

    path: str
    size: int
    #: Header plus the last published document, in bytes (0: nothing yet).
    used: int = 0

    @property
    def fill(self) -> float:
        return self.used / self.size if self.size else 0.0


@dataclass(frozen=True)
class ChannelStatus:
    """The virtio channels, as counted by that transport."""

    connected: int = 0
    #: Connections the host could not make (socket refused, max_channels reached).
    refused: int = 0
    #: Times a guest asked faster than rate_limit allows (its answers wait).
    rate_limited: int = 0
    #: Requests answered since the transport started (invalid ones included).
    requests: int = 0
    #: Requests answered INVALID REQUEST since the transport started.
    invalid: int = 0
    #: VMs with metrics whose channel is not open (no socket yet, back-off, max_channels).
    unconnected: int = 0
    #: Anything else the transport wants an admin to see, one line each.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransportStatus:
    """What one publisher reports about itself."""

    name: str
    disks: tuple[DiskStatus, ...] = ()
    channels: ChannelStatus | None = None
    errors: tuple[str, ...] = ()
    #: Events an admin should know of that are not errors now (a disk re-created).
    notes: tuple[str, ...] = ()
    #: What ``disks`` holds, for the text ("disks"; "values" for xenstore's).
    kind: str = "disks"


@dataclass(frozen=True)
class UpdateStatus:
    """The last update: when, how long, how much, and what went wrong."""

    started: float
    duration: float
    cpu: float
    vms: int
    metrics: int
    document_bytes: int
    published: bool
    #: Metrics (or sources) left out, each line naming it and saying why.
    failures: tuple[str, ...] = ()
    publish_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReloadFailure:
    """A reload (SIGHUP) that was refused: the daemon kept the configuration it ran."""

    #: When it failed, in seconds since the epoch.
    at: float
    #: The configuration file the daemon tried to load.
    config: str
    #: Why it was refused, as logged (names the file and line where it can).
    error: str


@dataclass(frozen=True)
class DaemonStatus:
    """Everything the state file holds."""

    pid: int
    started: float
    written: float
    config: str
    update_period: int
    running: bool = True
    #: The daemon's start time in clock ticks after boot (/proc/PID/stat,
    #: field 22): with the pid, it names the process (0: not recorded).
    process_start: int = 0
    version: str = __version__
    last_update: UpdateStatus | None = None
    transports: tuple[TransportStatus, ...] = ()
    format: int = FORMAT
    #: Updates finished since the daemon started (0 in files older writers made).
    updates: int = 0
    #: Of those, the updates not published everywhere.
    publish_failures: int = 0
    #: The last reload, when it failed; None once a reload succeeds (and in
    #: files older writers made).
    reload_failure: ReloadFailure | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "DaemonStatus":
        """Parse a state file; raises ValueError when it is not one."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            last = data.get("last_update")
            reload_failure = data.get("reload_failure")
            transports = tuple(
                _build(
                    TransportStatus, t,
                    disks=tuple(_build(DiskStatus, d) for d in t.get("disks", ())),
                    channels=_build(ChannelStatus, t["channels"], notes=tuple(t["channels"].get("notes", ())))
                    if t.get("channels") else None,
                    errors=tuple(t.get("errors", ())),
                    notes=tuple(t.get("notes", ())),
                )
                for t in data.get("transports", ())
            )
            for key in ("pid", "process_start"):
                if type(data.get(key, 0)) is not int:
                    raise TypeError(f"{key} is not an integer")
            return _build(
                cls, data,
                last_update=_build(
                    UpdateStatus, last,
                    failures=tuple(last.get("failures", ())),
                    publish_errors=tuple(last.get("publish_errors", ())),
                ) if last else None,
                transports=transports,
                reload_failure=_build(ReloadFailure, reload_failure) if reload_failure else None,
            )
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as err:
            raise ValueError(f"not a vhostmd state file ({err})") from None


def _build(cls, data: dict, **overrides):
    """*cls* from the keys of *data* it knows (newer writers may add keys)."""
    known = {f.name for f in fields(cls)}
    values = {k: v for k, v in data.items() if k in known}
    values.update(overrides)
    return cls(**values)


class StatusFile:
    """Writes the state file atomically: readers see the old or the new one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._failing = False

    def prepare(self, owner: int | None = None) -> None:
        """Create the directory (0755) and hand it to *owner* (the -u user).

        Called as root before privileges are dropped; raises OSError.
        """
        parent = self.path.parent
        try:
            os.makedirs(parent, STATUS_DIR_MODE)
            os.chmod(parent, STATUS_DIR_MODE)
        except FileExistsError:
            info = os.lstat(parent)
            if not stat.S_ISDIR(info.st_mode):
                raise OSError(f"{parent} is not a directory; refusing to use it") from None
        if owner is not None:
            os.chown(parent, owner, -1)

    def write(self, status: DaemonStatus) -> bool:
        """Replace the file with *status*; a failure is logged once, not every update."""
        try:
            replace_file(self.path, status.to_json().encode(), STATUS_MODE)
        except (OSError, FileRefused) as err:
            if not self._failing:
                log.warning("cannot write state file %s: %s", self.path, getattr(err, "strerror", None) or err)
                self._failing = True
            return False
        self._failing = False
        return True


def read(path: Path) -> DaemonStatus | None:
    """The state at *path*, None when there is none; OSError when unreadable, ValueError when garbled."""
    try:
        return DaemonStatus.from_json(Path(path).read_text())
    except FileNotFoundError:
        return None


def daemon_running(status: DaemonStatus | None) -> bool:
    """Whether the daemon that wrote *status* still runs (a reused pid is not it)."""
    return (status is not None and status.running
            and pid_alive(status.pid, program=b"vhostmd", started=status.process_start))


def summary(last: UpdateStatus, reload_failure: ReloadFailure | None = None) -> str:
    """One line about an update (and a failed reload), as systemd's STATUS= shows it."""
    text = (
        f"{last.vms} VMs, {last.metrics} metrics, {last.document_bytes} bytes "
        f"in {last.duration * 1000:.0f} ms"
    )
    if last.failures:
        text += f"; {len(last.failures)} failed"
    if not last.published:
        text += "; NOT PUBLISHED: " + "; ".join(last.publish_errors)
    if reload_failure is not None:
        text += f"; RELOAD FAILED, running configuration kept: {reload_failure.error}"
    return text
