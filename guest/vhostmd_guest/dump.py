"""``vm-dump-metrics``: print the metrics the host publishes to this VM.

Sources are the metrics disk (``-b``), the virtio port (``-i``) and
xenstore (``-x``); without any of these flags they are tried in that order.
``--device PATH`` asks for the disk at PATH, so it stands for ``-b``: the
other sources are tried only when their flags are given too.
The document is written exactly as received (``--format xml``), or parsed
and printed as JSON (``--format json``, also ``--json``) or as Prometheus
text exposition format (``--format prometheus``).
Exit status: 0 on success, 1 when no source worked, 2 for usage errors.
"""

import argparse
import json
import sys
from typing import Dict, List, Optional

from .document import parse_document
from .errors import MetricsError
from .port import DEFAULT_PORT, DEFAULT_TIMEOUT
from .prometheus import exposition
from .sources import SOURCES, RawMetrics, SourceOptions, read_source

PROG = "vm-dump-metrics"
FORMATS = ("xml", "json", "prometheus")
"""The output formats: the document as received, JSON, Prometheus text."""


class _Parser(argparse.ArgumentParser):
    def print_help(self, file=None):
        super().print_help(sys.stderr if file is None else file)

    def exit(self, status=0, message=None):
        # Like the reference, -h is a usage exit with status 2.
        super().exit(2 if status == 0 else status, message)


def build_parser() -> argparse.ArgumentParser:
    """The command line parser."""
    parser = _Parser(
        prog=PROG,
        description="Dump the metrics the virtualization host provides to this VM.",
        epilog="Without -b, -i, -x or --device the sources are tried in the order disk, "
        "virtio, xenstore; --device implies -b. Exit status 1 when no source worked.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="verbose messages")
    parser.add_argument("-d", "--dest", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("-b", "--vbd", action="store_true", help="get metrics from the metrics disk")
    parser.add_argument("-i", "--virtio", action="store_true",
                        help="get metrics from the virtio channel")
    parser.add_argument("-x", "--xenstore", action="store_true",
                        help="get metrics from xenstore (Xen guests)")
    parser.add_argument("--device", metavar="PATH", type=_path,
                        help="read this metrics disk (device or file) instead of scanning "
                        "/sys/block; implies -b")
    parser.add_argument("--port", metavar="PATH", default=DEFAULT_PORT,
                        help="virtio port (default %(default)s)")
    parser.add_argument("--format", choices=FORMATS, default="xml",
                        help="xml: the document as received (the default); json: the parsed "
                        "metrics as JSON; prometheus: Prometheus text format, for "
                        "node_exporter's textfile collector")
    parser.add_argument("--json", dest="format", action="store_const", const="json",
                        help="the same as --format json")
    parser.add_argument("--timeout", metavar="SECONDS", type=_seconds, default=DEFAULT_TIMEOUT,
                        help="give up on a source after this long (default %(default)g)")
    return parser


def _path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the path is empty")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError('not a number of seconds: "{}"'.format(text)) from None
    if not value > 0:
        raise argparse.ArgumentTypeError("the timeout must be above 0")
    return value


def _options(args: argparse.Namespace) -> SourceOptions:
    # The disk is retried while busy for about the timeout, at most once a second.
    retry_wait = min(1.0, args.timeout / 5)
    return SourceOptions(
        device=args.device,
        port=args.port,
        timeout=args.timeout,
        attempts=int(args.timeout / retry_wait) + 1,
        retry_wait=retry_wait,
    )


def _render(raw: RawMetrics, form: str) -> bytes:
    if form == "xml":
        return raw.data
    # A document that does not parse makes the source count as failed.
    document = parse_document(raw.data)
    if form == "prometheus":
        return exposition(document).encode("utf-8")
    out = {"source": raw.source, "location": raw.location, "metrics": document.to_list()}
    return (json.dumps(out, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _write(dest: Optional[str], data: bytes) -> None:
    if dest is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        with open(dest, "wb") as f:
            f.write(data)


def _chosen(args: argparse.Namespace) -> List[str]:
    """The sources to try, in the default order.

    A named device asks for the disk: it stands for -b, so it alone does
    not send the tool on to virtio and xenstore when that disk fails.
    """
    vbd = args.vbd or args.device is not None
    chosen = [s for s, flag in zip(SOURCES, (vbd, args.virtio, args.xenstore)) if flag]
    return chosen or list(SOURCES)


def _one_line(err: Exception) -> str:
    # Each source's error is one line of stderr, whatever it quotes.
    lines = [line.strip() for line in str(err).splitlines()]
    return "; ".join(line for line in lines if line) or type(err).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``vm-dump-metrics``; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _dump(args)
    except KeyboardInterrupt:
        # Interrupted while waiting for a busy disk or the host: no traceback.
        return 130


def _dump(args: argparse.Namespace) -> int:
    options = _options(args)

    def say(message: str) -> None:
        print("{}: {}".format(PROG, message), file=sys.stderr)

    errors = {}  # type: Dict[str, str]
    for source in _chosen(args):
        try:
            raw = read_source(source, options)
            data = _render(raw, args.format)
        except MetricsError as err:
            errors[source] = _one_line(err)
            # Verbose says each failure as it happens; the summary then
            # does not repeat it.
            if args.verbose:
                say("{}: {}".format(source, errors[source]))
            continue
        if args.verbose:
            say("{}: {} bytes from {}".format(source, len(raw.data), raw.location))
        try:
            _write(args.dest, data)
        except OSError as err:
            say("cannot write {}: {}".format(args.dest or "stdout", err.strerror or err))
            return 1
        return 0
    if args.verbose:
        say("no metrics source worked")
    else:
        say("no metrics source worked:")
        for source, message in errors.items():
            print("  {}: {}".format(source, message), file=sys.stderr)
    return 1
