"""``vm-dump-metrics``: print the metrics the host publishes to this VM.

Sources are the metrics disk (``-b``), the virtio port (``-i``) and
xenstore (``-x``); without any of these flags they are tried in that order.
The document is written exactly as received (``--format xml``), or parsed
and printed as JSON (``--format json``, also ``--json``) or as Prometheus
text exposition format (``--format prometheus``).
Exit status: 0 on success, 1 when no source worked, 2 for usage errors.
"""

import argparse
import json
import sys
from typing import List, Optional

from .document import parse_document
from .errors import MetricsError, NoSourceError
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
        epilog="Without -b, -i or -x the sources are tried in the order disk, virtio, "
        "xenstore. Exit status 1 when no source worked.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="verbose messages")
    parser.add_argument("-d", "--dest", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("-b", "--vbd", action="store_true", help="get metrics from the metrics disk")
    parser.add_argument("-i", "--virtio", action="store_true",
                        help="get metrics from the virtio channel")
    parser.add_argument("-x", "--xenstore", action="store_true",
                        help="get metrics from xenstore (Xen guests)")
    parser.add_argument("--device", metavar="PATH",
                        help="read this metrics disk (device or file) instead of scanning /sys/block")
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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: {!r}".format(text)) from None
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


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``vm-dump-metrics``; return the exit status."""
    args = build_parser().parse_args(argv)
    chosen = [s for s, flag in zip(SOURCES, (args.vbd, args.virtio, args.xenstore)) if flag]
    options = _options(args)

    def say(message: str) -> None:
        if args.verbose:
            print("{}: {}".format(PROG, message), file=sys.stderr)

    errors = {}
    for source in chosen or SOURCES:
        try:
            raw = read_source(source, options)
            data = _render(raw, args.format)
        except MetricsError as err:
            say("{}: {}".format(source, err))
            errors[source] = err
            continue
        say("{}: {} bytes from {}".format(source, len(raw.data), raw.location))
        try:
            _write(args.dest, data)
        except OSError as err:
            print("{}: cannot write {}: {}".format(PROG, args.dest or "stdout", err.strerror),
                  file=sys.stderr)
            return 1
        return 0
    print("{}: {}".format(PROG, NoSourceError(errors)), file=sys.stderr)
    return 1
