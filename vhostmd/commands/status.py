"""``vhostmd status``: whether the daemon runs, and what its last update did.

It reads the state file the daemon writes (:mod:`vhostmd.state`), checks
that the process that wrote it is still there, judges its health and prints
it as text or JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import exposition
from ..state import DEFAULT_STATUS_FILE, DaemonStatus, TransportStatus, daemon_running, read

#: An update older than this many periods means the daemon is stuck.
STALE_PERIODS = 3

FORMATS = ("text", "json", "prometheus")

#: Exit statuses of ``vhostmd status`` (0 and 3 as LSB init scripts use them).
EXIT_HEALTHY, EXIT_DEGRADED, EXIT_NOT_RUNNING, EXIT_UNKNOWN = 0, 1, 3, 4


@dataclass
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
    verdict = Verdict(EXIT_HEALTHY, head)
    failed = status.reload_failure
    if failed is not None:
        # The daemon runs a configuration other than the file's: a restart
        # (or the next boot) would fail to start it at all.
        verdict.exit = EXIT_DEGRADED
        verdict.notes.append(
            f"reload of {failed.config} failed at {_when(failed.at, now)}, "
            f"running configuration kept: {failed.error}"
        )
    last = status.last_update
    if last is None:
        verdict.exit = EXIT_DEGRADED
        verdict.notes.append("no update has finished yet")
        return verdict
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
            f"{t.name}: {len(t.disks)} {t.kind}, fullest {fullest.path}: "
            f"{fullest.used} of {fullest.size} bytes ({fullest.fill:.1%})"
        )
    else:
        lines.append(f"{t.name}: no {t.kind}" if t.channels is None else f"{t.name}:")
    if t.channels is not None:
        c = t.channels
        lines[-1] += f" {c.connected} channels connected, {c.refused} refused, {c.rate_limited} rate-limited"
        lines.extend(f"  {n}" for n in c.notes)
    lines.extend(f"  error: {e}" for e in t.errors)
    lines.extend(f"  note: {n}" for n in t.notes)
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
    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="text (default); json: the state file's content plus the verdict; "
                             "prometheus: the Prometheus text exposition format")
    parser.add_argument("--json", dest="format", action="store_const", const="json",
                        help="the same as --format json")
    return parser


def main(argv: list[str]) -> int:
    """``vhostmd status``: exit 0 healthy, 1 degraded, 3 not running, 4 unknown."""
    args = build_parser().parse_args(argv)
    now = time.time()
    try:
        status = read(args.status_file)
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or str(err)
        print(f"vhostmd status: cannot read {args.status_file}: {why}", file=sys.stderr)
        if args.format == "prometheus":
            print(exposition.render(None, up=False), end="")
        return EXIT_UNKNOWN
    alive = daemon_running(status)
    verdict = judge(status, args.status_file, now, alive)
    if args.format == "prometheus":
        up = verdict.exit in (EXIT_HEALTHY, EXIT_DEGRADED)
        print(exposition.render(status, up=up), end="")
    elif args.format == "json":
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
