"""The daemon's state file and the ``vhostmd status`` command.

After every update the running daemon replaces a small JSON file (by default
/run/vhostmd/status.json, mode 0644 in a 0755 directory) so that anyone on
the host can see how it is doing without root and without talking to it.
``vhostmd status`` reads that file and says whether the daemon that wrote it
is still running: the process with that pid must also have the start time
the daemon recorded, so a pid reused by another process (even another
vhostmd) is never taken for the daemon.

Each transport contributes a :class:`TransportStatus` through an optional
``status()`` method on its publisher; the daemon gathers them as they are.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import __version__
from .files import FileRefused, open_regular

log = logging.getLogger(__name__)

DEFAULT_STATUS_FILE = Path("/run/vhostmd/status.json")
STATUS_MODE = 0o644
STATUS_DIR_MODE = 0o755
FORMAT = 1
#: An update older than this many periods means the daemon is stuck.
STALE_PERIODS = 3

#: Exit statuses of ``vhostmd status`` (0 and 3 as LSB init scripts use them).
EXIT_HEALTHY, EXIT_DEGRADED, EXIT_NOT_RUNNING, EXIT_UNKNOWN = 0, 1, 3, 4


@dataclass(frozen=True, slots=True)
class DiskStatus:
    """One metrics disk: its size and how much the last document used."""

    path: str
    size: int
    #: Header plus the last published document, in bytes (0: nothing yet).
    used: int = 0

    @property
    def fill(self) -> float:
        return self.used / self.size if self.size else 0.0


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """The virtio channels, as counted by that transport."""

    connected: int = 0
    #: Connections the host could not make (socket refused, max_channels reached).
    refused: int = 0
    #: Times a guest asked faster than rate_limit allows (its answers wait).
    rate_limited: int = 0
    #: Anything else the transport wants an admin to see, one line each.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TransportStatus:
    """What one publisher reports about itself."""

    name: str
    disks: tuple[DiskStatus, ...] = ()
    channels: ChannelStatus | None = None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
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
            transports = tuple(
                _build(
                    TransportStatus, t,
                    disks=tuple(_build(DiskStatus, d) for d in t.get("disks", ())),
                    channels=_build(ChannelStatus, t["channels"], notes=tuple(t["channels"].get("notes", ())))
                    if t.get("channels") else None,
                    errors=tuple(t.get("errors", ())),
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
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            fd = open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, STATUS_MODE)
            try:
                os.fchmod(fd, STATUS_MODE)
                os.write(fd, status.to_json().encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except (OSError, FileRefused) as err:
            if not self._failing:
                log.warning("cannot write state file %s: %s", self.path, getattr(err, "strerror", None) or err)
                self._failing = True
            return False
        self._failing = False
        return True


def read(path: Path) -> DaemonStatus:
    """The state at *path*; OSError when unreadable, ValueError when garbled."""
    return DaemonStatus.from_json(Path(path).read_text())


def process_start(pid: int) -> int | None:
    """When process *pid* started, in clock ticks after boot; None if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        # The command name (field 2) may hold spaces and parentheses.
        return int(text.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid: int, started: int = 0) -> bool:
    """Whether *pid* is the running vhostmd that started at *started* (clock ticks).

    A pid reused by another process is not: its start time differs. Without
    a recorded start time (an older state file) the command line must name
    vhostmd.
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
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # /proc hidden from us: the pid's existence is all we know
    return b"vhostmd" in cmdline


# --- the status command -------------------------------------------------------------


@dataclass(slots=True)
class Verdict:
    """What ``status`` concluded, with its exit status."""

    exit: int
    headline: str
    notes: list[str] = field(default_factory=list)


def judge(status: DaemonStatus | None, path: Path, now: float, alive: bool) -> Verdict:
    """Decide whether the daemon behind *status* runs and is healthy."""
    if status is None:
        return Verdict(EXIT_NOT_RUNNING, f"vhostmd is not running (no state file {path})")
    if not status.running:
        return Verdict(EXIT_NOT_RUNNING, f"vhostmd is not running (stopped at {_when(status.written, now)})")
    if not alive:
        return Verdict(
            EXIT_NOT_RUNNING,
            f"vhostmd is not running (pid {status.pid}, which wrote {path}, is gone)",
        )
    head = f"vhostmd is running (pid {status.pid}, version {status.version}, since {_when(status.started, now)})"
    last = status.last_update
    if last is None:
        return Verdict(EXIT_DEGRADED, head, ["no update has finished yet"])
    verdict = Verdict(EXIT_HEALTHY, head)
    age = now - last.started
    if age > STALE_PERIODS * status.update_period:
        verdict.exit = EXIT_DEGRADED
        verdict.notes.append(
            f"the last update is {age:.0f} s old, but updates are due every {status.update_period} s"
        )
    if not last.published:
        verdict.exit = EXIT_DEGRADED
        verdict.notes.append("the last update was not published everywhere")
    return verdict


def summary(last: UpdateStatus) -> str:
    """One line about an update, as systemd's STATUS= shows it."""
    text = (
        f"{last.vms} VMs, {last.metrics} metrics, {last.document_bytes} bytes "
        f"in {last.duration * 1000:.0f} ms"
    )
    if last.failures:
        text += f"; {len(last.failures)} failed"
    if not last.published:
        text += "; NOT PUBLISHED: " + "; ".join(last.publish_errors)
    return text


def format_text(status: DaemonStatus | None, verdict: Verdict, now: float) -> str:
    lines = [verdict.headline]
    if status is not None:
        lines.append(f"configuration: {status.config}, update period {status.update_period} s")
    lines.extend(f"warning: {n}" for n in verdict.notes)
    last = status.last_update if status is not None else None
    if last is not None:
        lines.append(
            f"last update: {_when(last.started, now)}, took {last.duration * 1000:.1f} ms "
            f"({last.cpu * 1000:.1f} ms CPU)"
        )
        lines.append(
            f"  {last.vms} VMs, {last.metrics} metrics, document {last.document_bytes} bytes, "
            + ("published" if last.published else "NOT published")
        )
        lines.extend(f"  not published: {e}" for e in last.publish_errors)
        lines.append(f"failed metrics: {len(last.failures)}")
        lines.extend(f"  {f}" for f in last.failures)
    for transport in status.transports if status is not None else ():
        lines.extend(_transport_lines(transport))
    return "\n".join(lines)


def _transport_lines(t: TransportStatus) -> list[str]:
    lines = []
    if len(t.disks) == 1:
        d = t.disks[0]
        lines.append(f"{t.name}: {d.path}: {d.used} of {d.size} bytes used ({d.fill:.1%})")
    elif t.disks:
        fullest = max(t.disks, key=lambda d: d.fill)
        lines.append(
            f"{t.name}: {len(t.disks)} disks, fullest {fullest.path}: "
            f"{fullest.used} of {fullest.size} bytes ({fullest.fill:.1%})"
        )
    else:
        lines.append(f"{t.name}: no disks" if t.channels is None else f"{t.name}:")
    if t.channels is not None:
        c = t.channels
        lines[-1] += f" {c.connected} channels connected, {c.refused} refused, {c.rate_limited} rate-limited"
        lines.extend(f"  {n}" for n in c.notes)
    lines.extend(f"  error: {e}" for e in t.errors)
    return lines


def _when(timestamp: float, now: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    return f"{stamp} ({max(0.0, now - timestamp):.0f} s ago)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vhostmd status",
        description="Show whether vhostmd runs and what its last update did.",
    )
    parser.add_argument("--status-file", metavar="FILE", type=Path, default=DEFAULT_STATUS_FILE,
                        help=f"the daemon's state file (default {DEFAULT_STATUS_FILE})")
    parser.add_argument("--json", action="store_true",
                        help="print the state file's content plus the verdict as JSON")
    return parser


def main(argv: list[str]) -> int:
    """``vhostmd status``: exit 0 healthy, 1 degraded, 3 not running, 4 unknown."""
    args = build_parser().parse_args(argv)
    now = time.time()
    try:
        status: DaemonStatus | None = read(args.status_file)
    except FileNotFoundError:
        status = None
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or str(err)
        print(f"vhostmd status: cannot read {args.status_file}: {why}", file=sys.stderr)
        return EXIT_UNKNOWN
    alive = status is not None and status.running and process_alive(status.pid, status.process_start)
    verdict = judge(status, args.status_file, now, alive)
    if args.json:
        out = {
            "running": verdict.exit in (EXIT_HEALTHY, EXIT_DEGRADED),
            "healthy": verdict.exit == EXIT_HEALTHY,
            "verdict": verdict.headline,
            "notes": verdict.notes,
            "state": asdict(status) if status is not None else None,
        }
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(format_text(status, verdict, now))
    return verdict.exit
