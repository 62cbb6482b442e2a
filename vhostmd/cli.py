"""The ``vhostmd`` command line (flags as the C vhostmd's, plus --once and --check)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pwd
import sys
from pathlib import Path

from . import __version__, config as config_mod, state as status_mod, process as system, transports
from .collect.virt import Libvirt
from .config import Config, ConfigError
from .daemon import STOP_SIGNALS, Daemon, block_signals, unblock_signals
from .pidfile import DEFAULT_PID_FILE, PidFile, PidFileError
from .publish import Publisher, TransportError
from .sdnotify import Notifier
from .state import StatusFile
from .textfile import PrometheusFile

log = logging.getLogger("vhostmd")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _HelpAction(argparse.Action):
    """-h prints usage and exits 2, as the C vhostmd does."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="show this help and exit (status 2)")

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        parser.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    names = ",".join(SUBCOMMANDS)
    parser = argparse.ArgumentParser(
        prog="vhostmd",
        usage=f"%(prog)s [options]\n       %(prog)s {{{names}}} [--help] [ARGS...]",
        description="Virtual Host Metrics Daemon: publishes host and VM metrics to guests.",
        epilog=commands_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    parser.add_argument("-h", "--help", action=_HelpAction)
    parser.add_argument("-v", "--verbose", action="store_true", help="verbose messages")
    parser.add_argument("-d", "--no-daemonize", action="store_true",
                        help="stay in the foreground and log to stderr")
    parser.add_argument("-c", "--connect", metavar="URI", help="libvirt URI (read-only connection)")
    parser.add_argument("-f", "--config", metavar="FILE", type=Path, default=config_mod.DEFAULT_CONFIG,
                        help=f"configuration file (default {config_mod.DEFAULT_CONFIG})")
    parser.add_argument("-p", "--pid-file", metavar="FILE", type=Path,
                        help=f"pid file (default {DEFAULT_PID_FILE} when run as root)")
    parser.add_argument("-u", "--user", metavar="USER",
                        help="drop root privileges to USER (keeping USER's groups) once the disk is open")
    parser.add_argument("--status-file", metavar="FILE", type=Path,
                        help=f"state file for 'vhostmd status' (default {status_mod.DEFAULT_STATUS_FILE} "
                             "when run as root)")
    parser.add_argument("--prometheus-file", metavar="FILE", type=Path,
                        help="after every update, replace FILE (atomically) with the daemon's health "
                             "in Prometheus text format, for node_exporter's textfile collector")
    parser.add_argument("--once", action="store_true",
                        help="run one update, publish it and exit (status 1 if it was not published)")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration, show what it defines and exit")
    parser.add_argument("--version", action="version", version=f"vhostmd {__version__}")
    return parser


def describe(config: Config) -> str:
    """What --check prints: the metrics and where they are published."""
    lines = [f"configuration {config.source}: valid"]
    lines.append(f"update period: {config.update_period} s, action timeout {config.action_timeout:g} s")
    lines.extend(transports.describe(config))
    for context in ("host", "vm"):
        defs = [m for m in config.metrics if m.context == context]
        lines.append(f"{context} metrics ({len(defs)}):")
        for m in defs:
            source = f"builtin {m.builtin}" if m.builtin else "action"
            names = ", ".join(v.name for v in m.outputs()) or "(elements printed by the action)"
            lines.append(f"  {m.name} [{m.type}] {source}: {names}")
    lines.extend(f"warning: {w}" for w in config.warnings)
    return "\n".join(lines)


def _status(argv: list[str]) -> int:
    """the daemon's state: last update, failed metrics, disk fill, channels"""
    from .commands import status  # imported on use: the daemon never needs it

    return status.main(argv)


def _check(argv: list[str]) -> int:
    """monitoring plugin (Nagios, Icinga): OK, WARNING, CRITICAL or UNKNOWN, with perfdata"""
    from .commands import check

    return check.main(argv)


def _attach(argv: list[str]) -> int:
    """give a VM the metrics disk and the virtio channel"""
    from .commands import attach

    return attach.main_attach(argv)


def _detach(argv: list[str]) -> int:
    """take them away from a VM again"""
    from .commands import attach

    return attach.main_detach(argv)


#: The commands; --help describes each by the first line of its docstring.
SUBCOMMANDS = {"status": _status, "check": _check, "attach": _attach, "detach": _detach}


def commands_help() -> str:
    """The commands of the table above, one line each, for --help."""
    lines = ["commands (a first argument naming one selects it; COMMAND --help for its options):"]
    width = max(map(len, SUBCOMMANDS))
    for name, run in SUBCOMMANDS.items():
        summary = (run.__doc__ or "").strip().split("\n")[0]
        lines.append(f"  {name:<{width}}  {summary}".rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The ``vhostmd`` command: a command named by the first argument, or the daemon."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        # A first word naming a subcommand selects it; anything else is the
        # daemon's flag-only command line, as in the C vhostmd.
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]](argv[1:])
        return _daemon(argv)
    except BrokenPipeError:
        # Output piped into a reader that stopped (`| head`): not our error,
        # and no traceback. Python would complain again flushing at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def _daemon(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.check:
        # Before the disk, the state directory or the pid file is created;
        # they stay blocked when main returns, as the process then exits.
        block_signals()
    # Absolute from the start: a detached daemon runs in /, and a reload
    # reopens the configuration by this path.
    for name in ("config", "pid_file", "status_file"):
        if getattr(args, name) is not None:
            setattr(args, name, Path(os.path.abspath(getattr(args, name))))
    foreground = args.no_daemonize or args.once or args.check
    system.setup_logging(foreground=True, verbose=args.verbose)
    try:
        config = config_mod.load(args.config)
    except ConfigError as err:
        log.error("%s", err)
        return EXIT_FAILURE
    if args.check:
        print(describe(config))
        return EXIT_OK
    pid_path = args.pid_file or (DEFAULT_PID_FILE if os.geteuid() == 0 and not args.once else None)
    pid_file = PidFile(pid_path) if pid_path else None
    try:
        # Before anything is opened, and before detaching: a second daemon
        # must say so where it was started, not in syslog only.
        if pid_file:
            pid_file.ensure_free()
    except PidFileError as err:
        log.error("%s", err)
        return EXIT_FAILURE
    for warning in config.warnings:
        log.warning("%s", warning)
    transports.announce(config)
    if "xenstore" in config.transports and args.user:
        log.warning("xenstore transport with -u %s: xenstored's socket is normally root's only, "
                    "so the daemon, running as %s, cannot connect to it", args.user, args.user)

    try:
        # Opened as root, before privileges are dropped. One update cannot
        # serve channels: --once leaves virtio out.
        publishers = transports.open_transports(config, once=args.once)
    except TransportError as err:
        log.error("%s", err)
        return EXIT_FAILURE

    status_path = args.status_file or (
        status_mod.DEFAULT_STATUS_FILE if os.geteuid() == 0 and not args.once else None
    )
    status_file = StatusFile(status_path) if status_path else None
    try:
        owner = _uid(args.user)
        if status_file is not None:
            status_file.prepare(owner)
        transports.prepare(config, owner)
    except system.PrivilegeError as err:
        log.error("%s", err)
        return EXIT_FAILURE
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        log.error("%s%s", where, err.strerror or err)
        return EXIT_FAILURE

    if not foreground:
        system.daemonize()
        system.setup_logging(foreground=False, verbose=args.verbose)

    try:
        if pid_file:
            pid_file.claim()
        if args.user:
            system.drop_privileges(args.user)
    except (PidFileError, system.PrivilegeError) as err:
        log.error("%s", err)
        if pid_file:
            pid_file.release()
        return EXIT_FAILURE

    virt = Libvirt(args.connect)
    try:
        return asyncio.run(_run(config, args, virt, publishers, status_file))
    finally:
        virt.close()
        if pid_file:
            pid_file.release()


def _uid(user: str | None) -> int | None:
    """The uid of -u USER, who must own what the daemon writes after dropping root."""
    if user is None or os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise system.PrivilegeError(f"no such user {user!r}") from None


async def _run(config: Config, args, virt: Libvirt, publishers: list[Publisher],
               status_file: StatusFile | None) -> int:
    daemon = Daemon(config, args.config, virt, publishers, status_file, Notifier.from_environment(),
                    PrometheusFile(args.prometheus_file.absolute()) if args.prometheus_file else None)
    if args.once:
        # A stop signal ends the one update early, with its clean-up.
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, task.cancel)
        unblock_signals()
        try:
            report = await daemon.run_once()
        except asyncio.CancelledError:
            log.info("stopped by a signal; nothing more published")
            return EXIT_FAILURE
        finally:
            block_signals()
        daemon.write_state(daemon.status(running=False))
        return EXIT_OK if report.published else EXIT_FAILURE
    log.info("vhostmd %s started (pid %d), update period %d s",
             __version__, os.getpid(), config.update_period)
    await daemon.run()
    log.info("vhostmd stopped")
    return EXIT_OK
