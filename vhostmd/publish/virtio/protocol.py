"""The virtio-serial wire, without any I/O: requests in, answers out, and their pace.

A guest asks for its metrics by writing ``GET /metrics/XML\\n\\n`` (or with
``\\r\\n`` line ends) to its port; the daemon answers with the host's metrics
and that VM's own (:func:`answer`). Guests are untrusted, so the parser holds at most
``limit`` bytes of an unfinished request: when that many bytes arrive without
a blank line, the request is answered ``INVALID REQUEST\\n\\n`` and the buffer
is reset, as the C vhostmd does with its 512-byte buffer. Anything else that
ends in a blank line is invalid too.

The result does not depend on how the bytes are split into reads: a request
in ten fragments, or ten requests in one read, give the same events.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from ...render import DOCUMENT_START

if TYPE_CHECKING:
    from ...render import Fragment

#: The C vhostmd's request buffer: a request must end within this many bytes.
REQUEST_LIMIT = 512

VALID_REQUESTS = (b"GET /metrics/XML\n\n", b"GET /metrics/XML\r\n\r\n")
INVALID_ANSWER = b"INVALID REQUEST\n\n"
#: A virtio answer ends with a blank line: that is how the guest knows it is whole.
ANSWER_END = b"</metrics>\n\n"
HOST_UNAVAILABLE = b"  <!-- host metrics not available -->\n"
VM_UNAVAILABLE = b"  <!-- VM metrics not available -->\n"


def answer(host: Fragment | None, vm: Fragment | None) -> bytes:
    """A VM's answer on its virtio channel: the host's metrics and its own.

    As in the C vhostmd, a part that is unknown or empty (not collected yet,
    or every metric of it failed) is replaced by a "not available" comment.
    """
    return b"".join((
        DOCUMENT_START,
        host.data if host is not None and host.data else HOST_UNAVAILABLE,
        vm.data if vm is not None and vm.data else VM_UNAVAILABLE,
        ANSWER_END,
    ))


#: The answer a channel gives before the first update has been rendered.
UNAVAILABLE_ANSWER = answer(None, None)


class Event(enum.Enum):
    """What a complete request (or an overflowing one) asks for."""

    #: ``GET /metrics/XML``: answer with the metrics document.
    GET_METRICS = "get"
    #: Something else that ended in a blank line: answer INVALID REQUEST.
    INVALID = "invalid"
    #: ``limit`` bytes without a blank line: answer INVALID REQUEST.
    TOO_LONG = "too long"


class RequestParser:
    """Splits a channel's byte stream into requests.

    ``feed()`` returns the events the new bytes complete, in order. Between
    calls the parser keeps only the unfinished request, always fewer than
    ``limit`` bytes.
    """

    __slots__ = ("limit", "_buffer", "_scanned")

    def __init__(self, limit: int = REQUEST_LIMIT):
        if limit < max(map(len, VALID_REQUESTS)):
            raise ValueError(f"request limit {limit} is too small for a valid request")
        self.limit = limit
        self._buffer = b""
        #: How far _buffer has been searched for a blank line, so that a
        #: request arriving a byte at a time is not searched again and again.
        self._scanned = 0

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished request held."""
        return len(self._buffer)

    def whole_request(self, data: bytes) -> bool:
        """Whether *data* is exactly one valid request, with nothing before it.

        The usual case (one whole request per read): the caller may then
        answer it without feed(), which would return [GET_METRICS].
        """
        return not self._buffer and data in VALID_REQUESTS

    def feed(self, data: bytes) -> list[Event]:
        """Take the next bytes of the stream; return the events they complete."""
        if not self._buffer and data in VALID_REQUESTS:
            return [Event.GET_METRICS]  # whole_request(), inlined: the usual case
        buffer = self._buffer + data if self._buffer else bytes(data)
        events: list[Event] = []
        start = 0
        scanned = self._scanned
        while True:
            end = _request_end(buffer, start, scanned, start + self.limit)
            if end is not None:
                request = buffer[start:end]
                events.append(Event.GET_METRICS if request in VALID_REQUESTS else Event.INVALID)
                start = scanned = end
            elif len(buffer) - start >= self.limit:
                events.append(Event.TOO_LONG)
                start = scanned = start + self.limit
            else:
                break
        self._buffer = buffer[start:]
        self._scanned = len(self._buffer)
        return events

    def reset(self) -> None:
        """Forget the unfinished request."""
        self._buffer = b""
        self._scanned = 0


def _request_end(buffer: bytes, start: int, scanned: int, limit: int) -> int | None:
    """The end of the first blank line in ``buffer[start:limit]``, or None.

    A blank line ends with ``\\n\\n`` or ``\\n\\r\\n``. Nothing before *scanned*
    holds one, so the search starts two bytes before it (where a blank line
    completed by the new bytes can begin).
    """
    begin = max(start, scanned - 2)
    ends = []
    lf = buffer.find(b"\n\n", begin, limit)
    if lf >= 0:
        ends.append(lf + 2)
    crlf = buffer.find(b"\n\r\n", begin, limit)
    if crlf >= 0:
        ends.append(crlf + 3)
    return min(ends) if ends else None


class TokenBucket:
    """Paces a channel's answers: ``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = float(burst)
        self._tokens = self.burst
        self._stamp = now

    @property
    def empty(self) -> bool:
        """Whether the last take left less than a token (the rate is reached)."""
        return self._tokens < 1.0

    def take(self, now: float) -> float:
        """Take a token: 0 if there was one, else the seconds until there is."""
        tokens = self._tokens + (now - self._stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self.rate
