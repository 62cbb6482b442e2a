"""The virtio request parser alone: examples, and properties over any byte stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from vhostmd.publish.virtio.protocol import (
    HOST_UNAVAILABLE, INVALID_ANSWER, REQUEST_LIMIT, UNAVAILABLE_ANSWER, VM_UNAVAILABLE, Event,
    RequestParser, answer as virtio_answer,
)
from vhostmd.render import Fragment

GET, INVALID, TOO_LONG = Event.GET_METRICS, Event.INVALID, Event.TOO_LONG
LF, CRLF = b"GET /metrics/XML\n\n", b"GET /metrics/XML\r\n\r\n"


def feed_all(chunks, limit=REQUEST_LIMIT):
    parser = RequestParser(limit)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events, parser


@pytest.mark.parametrize("stream, expected", [
    (LF, [GET]),
    (CRLF, [GET]),
    (LF + CRLF + LF, [GET, GET, GET]),
    (b"GET /metrics/XML\n", []),
    (b"GET /metrics/XML", []),
    (b"\n\n", [INVALID]),
    (b"\r\n\r\n", [INVALID]),
    (b"GET /metrics/XML\n\r\n", [INVALID]),       # mixed line ends: not one of the two forms
    (b"GET /metrics/xml\n\n", [INVALID]),
    (b" GET /metrics/XML\n\n", [INVALID]),
    (b"GET /metrics/XML \n\n", [INVALID]),
    (b"GET /metrics/XML\n\n\n", [GET]),            # a lone "\n" waits for more
    (b"GET /metrics/XML\n\n\n\n", [GET, INVALID]),
    (b"HELLO\n\nGET /metrics/XML\r\n\r\n", [INVALID, GET]),
    (b"\x00\xff\n\n" + LF, [INVALID, GET]),
])
def test_requests(stream, expected):
    assert feed_all([stream])[0] == expected
    assert feed_all([bytes([b]) for b in stream])[0] == expected


def test_the_buffer_is_bounded_and_reset():
    events, parser = feed_all([b"x" * 600])
    assert events == [TOO_LONG] and parser.buffered == 88
    # The request after the bound is a new one.
    assert parser.feed(b"\n\n") == [INVALID]
    assert parser.feed(LF) == [GET]
    # One megabyte: one answer per 512 bytes, never more than 511 held.
    events, parser = feed_all([b"y" * 4096] * 256)
    assert events == [TOO_LONG] * (2**20 // REQUEST_LIMIT) and parser.buffered == 0
    # A request ending exactly at the bound still counts as a request.
    assert feed_all([b"z" * (REQUEST_LIMIT - 2) + b"\n\n"])[0] == [INVALID]
    assert feed_all([b"z" * (REQUEST_LIMIT - 1) + b"\n\n"])[0] == [TOO_LONG]


def test_a_request_a_byte_at_a_time_is_not_searched_over_and_over():
    parser = RequestParser()
    for byte in b"x" * (REQUEST_LIMIT - 1):
        assert parser.feed(bytes([byte])) == []
    assert parser._scanned == REQUEST_LIMIT - 1


def test_answers_framing():
    host, vm = Fragment.of(b"  <metric>h</metric>\n"), Fragment.of(b"  <metric>v</metric>\n")
    assert virtio_answer(host, vm) == b"<metrics>\n" + host.data + vm.data + b"</metrics>\n\n"
    assert virtio_answer(None, vm) == b"<metrics>\n" + HOST_UNAVAILABLE + vm.data + b"</metrics>\n\n"
    assert virtio_answer(host, Fragment.of(b"")) == b"<metrics>\n" + host.data + VM_UNAVAILABLE + b"</metrics>\n\n"
    assert UNAVAILABLE_ANSWER == (b"<metrics>\n  <!-- host metrics not available -->\n"
                                  b"  <!-- VM metrics not available -->\n</metrics>\n\n")
    assert INVALID_ANSWER == b"INVALID REQUEST\n\n"


def test_reference_answers_have_the_same_framing():
    from pathlib import Path
    reference = Path(__file__).resolve().parents[2] / "shared" / "reference"
    if not reference.is_dir():
        pytest.skip("the C reference's captures are not beside this checkout")
    answer = (reference / "c-vhostmd-virtio-answer.txt").read_bytes()
    assert answer.startswith(b"<metrics>\n") and answer.endswith(b"</metrics>\n\n")
    assert (reference / "c-vhostmd-virtio-invalid.txt").read_bytes() == INVALID_ANSWER


# ---------------------------------------------------------------------------
# properties

byte_streams = st.binary(max_size=4096) | st.lists(
    st.sampled_from([LF, CRLF, b"\n", b"\r\n", b"\r", b"GET", b" /metrics/XML", b"x" * 100, b"\x00", b"\n\n"]),
    max_size=80,
).map(b"".join)


@st.composite
def split(draw, data: bytes):
    """*data* cut into pieces at arbitrary points."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


@settings(max_examples=400, deadline=None)
@given(data=st.data(), stream=byte_streams, limit=st.sampled_from([REQUEST_LIMIT, 20, 64]))
def test_any_stream_gives_only_answers_and_bounded_buffering(data, stream, limit):
    chunks = data.draw(split(stream))
    parser = RequestParser(limit)
    events = []
    for chunk in chunks:
        new = parser.feed(chunk)
        assert all(isinstance(e, Event) for e in new)
        assert parser.buffered < limit
        events += new
    # The same events however the stream was cut.
    assert events == feed_all([stream], limit)[0]
    # Every event consumed at least two bytes: no amplification.
    assert 2 * len(events) <= len(stream)
    # Independent model: a byte at a time, the spec's rules spelled out.
    assert events == model(stream, limit)


def model(stream: bytes, limit: int) -> list[Event]:
    events, buffer = [], b""
    for byte in stream:
        buffer += bytes([byte])
        if buffer.endswith(b"\n\n") or buffer.endswith(b"\n\r\n"):
            events.append(GET if buffer in (LF, CRLF) else INVALID)
            buffer = b""
        elif len(buffer) == limit:
            events.append(TOO_LONG)
            buffer = b""
    return events


@settings(max_examples=200, deadline=None)
@given(data=st.data(), requests=st.lists(st.sampled_from([LF, CRLF]), min_size=1, max_size=30))
def test_valid_requests_in_any_fragments(data, requests):
    chunks = data.draw(split(b"".join(requests)))
    assert feed_all(chunks)[0] == [GET] * len(requests)


@given(st.lists(st.binary(max_size=40) | st.sampled_from([LF, CRLF]), max_size=8))
def test_the_fast_path_answers_exactly_what_the_parser_would(reads):
    """whole_request() (which the serving thread answers without feed()) agrees with feed()."""
    parser = RequestParser()
    for data in reads:
        fast = parser.whole_request(data)
        events = parser.feed(data)
        if fast:
            assert events == [GET]
        else:
            assert not (events == [GET] and parser.buffered == 0 and data in (LF, CRLF))
