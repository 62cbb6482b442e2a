"""Built-in collectors: metric values computed in the daemon, without forking.

A configuration selects one with ``<builtin>NAME</builtin>`` in place of
``<action>``. Each built-in reads from a per-update sample, so that a source
such as /proc/meminfo is read once per update however many metrics use it.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True, slots=True)
class Builtin:
    """A built-in collector: its context, how many values it gives, its reader."""

    context: str
    values: int
    read: Callable[[object], str | tuple[str, ...]]
    doc: str = ""


def _hostname(_sample) -> str:
    return socket.gethostname()


def _time(_sample) -> str:
    return str(int(time.time()))


REGISTRY: dict[str, Builtin] = {
    "hostname": Builtin("host", 1, _hostname, "the host's name"),
    "time": Builtin("host", 1, _time, "seconds since the epoch"),
}
