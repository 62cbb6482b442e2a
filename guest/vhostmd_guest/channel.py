"""The virtio metrics exchange: pure protocol, no I/O.

The guest writes :data:`REQUEST`; the host answers with the metrics
document followed by a blank line (``</metrics>\\n\\n``), or with
``INVALID REQUEST\\n\\n``. :class:`AnswerBuffer` collects the answer from
reads of any size and tells when it is complete.
"""

from typing import Optional

from .errors import AnswerTooLargeError, InvalidRequestError

REQUEST = b"GET /metrics/XML\n\n"
"""What the guest writes to ask for the metrics."""

INVALID_REQUEST = b"INVALID REQUEST\n\n"
"""The host's answer to a request it does not understand."""

END = b"\n\n"
DOCUMENT_END = b"</metrics>" + END

MAX_ANSWER_SIZE = 16 * 1024 * 1024
"""Largest answer accepted (the reference's cap)."""


class AnswerBuffer:
    """Accumulates the host's answer.

    An answer that starts as a document is complete at ``</metrics>``
    followed by a blank line, so a blank line inside a value cannot cut it
    short; any other answer is complete at its first trailing blank line.

    >>> buf = AnswerBuffer()
    >>> buf.feed(b"<metrics>\\n</metr")
    >>> buf.feed(b"ics>\\n\\n")
    b'<metrics>\\n</metrics>\\n\\n'
    """

    def __init__(self, max_size: int = MAX_ANSWER_SIZE) -> None:
        self.max_size = max_size
        self._data = bytearray()

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, chunk: bytes) -> Optional[bytes]:
        """Add ``chunk``; return the whole answer once it is complete.

        Raises :class:`AnswerTooLargeError` past ``max_size`` bytes and
        :class:`InvalidRequestError` when the answer is ``INVALID REQUEST``.
        """
        self._data += chunk
        if len(self._data) > self.max_size:
            raise AnswerTooLargeError(
                "the answer exceeds {} bytes without ending".format(self.max_size)
            )
        if not self._data.endswith(END):
            return None
        if self._data.lstrip().startswith(b"<metrics") and not self._data.endswith(DOCUMENT_END):
            return None
        return check_answer(bytes(self._data))


def check_answer(answer: bytes) -> bytes:
    """Return ``answer`` unless it is the host's ``INVALID REQUEST``."""
    if answer.strip() == INVALID_REQUEST.strip():
        raise InvalidRequestError(
            "the host answered INVALID REQUEST to \"{}\"".format(REQUEST.decode("ascii").strip())
        )
    return answer
