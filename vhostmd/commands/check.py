"""``vhostmd check``: the daemon's health as a monitoring plugin.

Follows the monitoring-plugins conventions that Nagios, Icinga, Naemon and
Sensu share: one line ``VHOSTMD <STATE> - <what>``, performance data after
``|``, and the state as the exit status (0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN). ``vhostmd status`` keeps the init-script exit statuses instead,
under which a stopped daemon (3) would read as UNKNOWN to a plugin runner.

It reads the same state file as ``vhostmd status`` (:mod:`vhostmd.state`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..state import DEFAULT_STATUS_FILE, DaemonStatus, daemon_running, read

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")

#: An update older than this many periods is a warning ...
WARN_PERIODS = 2
#: ... and nothing published for this many (the default --max-age) is critical.
CRIT_PERIODS = 3
#: A disk at least this full is a warning (the daemon logs its own warning
#: at the same share, see vhostmd.publish.capacity).
DISK_WARN = 0.9


@dataclass
class Result:
    """The plugin's verdict: its state, the reasons, and the performance data."""

    state: int = OK
    reasons: list[str] = field(default_factory=list)
    perfdata: list[str] = field(default_factory=list)

    def raise_to(self, state: int, reason: str) -> None:
        """Add *reason*; the state becomes the worse of the two."""
        self.state = max(self.state, state)
        self.reasons.append(reason)

    def line(self, ok_text: str) -> str:
        """The plugin's one line of output."""
        text = "; ".join(self.reasons) if self.reasons else ok_text
        text = text.replace("|", "/").replace("\n", " ")  # '|' starts the perfdata
        out = f"VHOSTMD {STATE_NAMES[self.state]} - {text}"
        return out + (" | " + " ".join(self.perfdata) if self.perfdata else "")


def _num(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def evaluate(status: DaemonStatus | None, path: Path, now: float, alive: bool,
             max_age: float | None = None) -> tuple[Result, str]:
    """The verdict on *status*, and the line to print when all is well."""
    result = Result()
    if status is None:
        result.raise_to(CRITICAL, f"vhostmd is not running (no state file {path})")
        return result, ""
    if not status.running:
        result.raise_to(CRITICAL, f"vhostmd is not running (stopped {now - status.written:.0f} s ago)")
        return result, ""
    if not alive:
        result.raise_to(CRITICAL, f"vhostmd is not running (pid {status.pid}, which wrote {path}, is gone)")
        return result, ""
    period = status.update_period
    limit = max_age if max_age is not None else CRIT_PERIODS * period
    warn_age = min(WARN_PERIODS * period, limit)
    last = status.last_update
    if last is None:
        since = now - status.started
        if since > limit:
            result.raise_to(CRITICAL, f"nothing published in the {since:.0f} s since the daemon started")
        else:
            result.raise_to(WARNING, "no update has finished yet")
        _reload_failure(result, status, now)
        return result, ""

    age = max(0.0, now - last.started)
    result.perfdata += [
        f"age={age:.1f}s;{_num(warn_age)};{_num(limit)};0",
        f"duration={last.duration:.6f}s;;;0",
        f"vms={last.vms};;;0",
        f"metrics={last.metrics};;;0",
        f"failed={len(last.failures)};0;;0",
        f"updates={status.updates}c",
        f"publish_failures={status.publish_failures}c",
    ]
    if age > limit:
        result.raise_to(CRITICAL, f"nothing published for {age:.0f} s (max age {limit:g} s)")
    elif age > warn_age:
        result.raise_to(WARNING, f"the last update is {age:.0f} s old, but updates are due every {period} s")
    if not last.published:
        result.raise_to(CRITICAL, "the last update was not published: " + "; ".join(last.publish_errors))
    if last.failures:
        first = last.failures[0]
        more = f" (and {len(last.failures) - 1} more)" if len(last.failures) > 1 else ""
        result.raise_to(WARNING, f"{len(last.failures)} metric(s) left out: {first}{more}")
    for transport in status.transports:
        for disk in transport.disks:
            if disk.fill >= DISK_WARN:
                result.raise_to(WARNING, f"disk {disk.path} is {disk.fill:.0%} full")
        for error in transport.errors:
            # A publish failure is named once, as such, above.
            if error not in last.publish_errors:
                result.raise_to(WARNING, f"{transport.name}: {error}")
    disks = [d for t in status.transports for d in t.disks]
    if disks:
        fullest = max(disks, key=lambda d: d.fill)
        result.perfdata.append(f"disk_fill={fullest.fill * 100:.1f}%;{DISK_WARN * 100:g};;0;100")
    channels = [t.channels for t in status.transports if t.channels is not None]
    if channels:
        result.perfdata.append(f"channels={sum(c.connected for c in channels)};;;0")
    _reload_failure(result, status, now)
    ok = (f"{last.vms} VMs, {last.metrics} metrics, last update {age:.0f} s ago, "
          f"took {last.duration * 1000:.0f} ms")
    return result, ok


def _reload_failure(result: Result, status: DaemonStatus, now: float) -> None:
    """WARNING while the last reload has failed: the file is not what runs."""
    failed = status.reload_failure
    if failed is not None:
        result.raise_to(WARNING, f"reload of {failed.config} failed {max(0.0, now - failed.at):.0f} s ago, "
                                 f"running configuration kept: {failed.error}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # A plugin's usage error is UNKNOWN, not argparse's 2 (CRITICAL).
        self.print_usage(sys.stderr)
        print(f"VHOSTMD UNKNOWN - {message}")
        sys.exit(UNKNOWN)


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vhostmd check",
        description="Monitoring plugin: the daemon's health in one line with performance data; "
                    "exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
    )
    parser.add_argument("--status-file", metavar="FILE", type=Path, default=DEFAULT_STATUS_FILE,
                        help=f"the daemon's state file (default {DEFAULT_STATUS_FILE})")
    parser.add_argument("--max-age", metavar="SECONDS", type=_seconds,
                        help=f"CRITICAL when nothing was published for this long "
                             f"(default {CRIT_PERIODS} update periods)")
    return parser


def main(argv: list[str]) -> int:
    """``vhostmd check``: print the plugin's line; its state is the exit status."""
    args = build_parser().parse_args(argv)
    now = time.time()
    try:
        status = read(args.status_file)
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or str(err)
        print(Result(UNKNOWN, [f"cannot read {args.status_file}: {why}"]).line(""))
        return UNKNOWN
    alive = daemon_running(status)
    result, ok = evaluate(status, args.status_file, now, alive, args.max_age)
    print(result.line(ok))
    return result.state
