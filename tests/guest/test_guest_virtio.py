import asyncio
import os
import socket
import threading

import pytest

from vhostmd_guest import (
    AnswerTooLargeError,
    InvalidRequestError,
    PortNotFoundError,
    VirtioTimeoutError,
    request_metrics,
    request_metrics_async,
)
from vhostmd_guest.channel import REQUEST, AnswerBuffer
from vhostmd_guest.errors import ChannelClosedError
from vhostmd_guest.port import exchange_async

from guest_vectors import reference
from guest_host import FakeHost, pty_port

try:
    import serial_asyncio  # noqa: F401
    HAVE_PYSERIAL = True
except ImportError:
    HAVE_PYSERIAL = False

TTY_MODES = [
    pytest.param(False, id="termios"),
    pytest.param(None, id="pyserial-asyncio",
                 marks=pytest.mark.skipif(not HAVE_PYSERIAL, reason="pyserial-asyncio absent")),
]


@pytest.fixture(name="pty_port")
def pty_port_fixture():
    with pty_port() as port:
        yield port


def answer():
    return reference("c-vhostmd-virtio-answer.txt").read_bytes()


@pytest.mark.parametrize("use_pyserial", TTY_MODES)
@pytest.mark.parametrize("pieces", [1, 7])
def test_answer_over_a_pty(pty_port, use_pyserial, pieces):
    master, path = pty_port
    expected = answer()
    host = FakeHost(master, expected, pieces=pieces, delay=0.01)
    got = request_metrics(path, timeout=5, use_pyserial=use_pyserial)
    assert host.join() == REQUEST
    assert got == expected


@pytest.mark.parametrize("use_pyserial", TTY_MODES)
def test_invalid_request_answer(pty_port, use_pyserial):
    master, path = pty_port
    host = FakeHost(master, reference("c-vhostmd-virtio-invalid.txt").read_bytes())
    with pytest.raises(InvalidRequestError, match="INVALID REQUEST"):
        request_metrics(path, timeout=5, use_pyserial=use_pyserial)
    host.join()


@pytest.mark.parametrize("use_pyserial", TTY_MODES)
def test_timeout_without_answer(pty_port, use_pyserial):
    master, path = pty_port
    host = FakeHost(master, None)
    with pytest.raises(VirtioTimeoutError, match=r"no answer from the host within 0.3 s"):
        request_metrics(path, timeout=0.3, use_pyserial=use_pyserial)
    assert host.join() == REQUEST


def test_timeout_on_an_incomplete_answer(pty_port):
    master, path = pty_port
    FakeHost(master, b"<metrics>\n  <metric type='string'")
    with pytest.raises(VirtioTimeoutError, match="incomplete after 33 bytes"):
        request_metrics(path, timeout=0.3, use_pyserial=False)


@pytest.mark.parametrize("use_pyserial", TTY_MODES)
def test_answer_over_the_cap(pty_port, use_pyserial):
    master, path = pty_port
    FakeHost(master, b"<metrics>" + b"x" * 5000, pieces=5)
    with pytest.raises(AnswerTooLargeError, match="exceeds 4096 bytes"):
        request_metrics(path, timeout=5, max_size=4096, use_pyserial=use_pyserial)


def test_missing_port(tmp_path):
    with pytest.raises(PortNotFoundError, match="does not exist"):
        request_metrics(str(tmp_path / "org.github.vhostmd.1"))


def test_async_entry_point(pty_port):
    master, path = pty_port
    expected = answer()
    FakeHost(master, expected, pieces=3)

    async def main():
        return await request_metrics_async(path, timeout=5, use_pyserial=False)

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == expected
    finally:
        loop.close()


# -- the non-TTY path: plain non-blocking descriptors, as a virtio port -------


def run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.fixture
def channel():
    guest, host = socket.socketpair()
    guest.setblocking(False)
    host.setblocking(False)
    yield guest, host
    guest.close()
    host.close()


def test_non_tty_exchange(channel):
    guest, host = channel
    assert not os.isatty(guest.fileno())
    expected = answer()
    fake = FakeHost(host.fileno(), expected, pieces=10)
    assert run(exchange_async(guest.fileno(), timeout=5)) == expected
    assert fake.join() == REQUEST


def test_non_tty_write_retried_while_the_host_end_is_not_taking_data(channel):
    guest, host = channel
    filled = 0
    while True:  # fill the channel so that writes fail with EAGAIN
        try:
            filled += guest.send(b"\0" * 65536)
        except BlockingIOError:
            break
    expected = answer()

    def host_connects():
        drained = 0
        while drained < filled:
            try:
                drained += len(host.recv(1 << 20))
            except BlockingIOError:
                pass
        FakeHost(host.fileno(), expected)

    threading.Timer(0.2, host_connects).start()
    assert run(exchange_async(guest.fileno(), timeout=5)) == expected


def test_non_tty_timeout_before_the_request_is_taken(channel):
    guest, _host = channel
    while True:
        try:
            guest.send(b"\0" * 65536)
        except BlockingIOError:
            break
    with pytest.raises(VirtioTimeoutError, match="did not take the request"):
        run(exchange_async(guest.fileno(), timeout=0.2, name="port"))


def test_non_tty_host_hangs_up(channel):
    guest, host = channel
    host.send(b"stale leftovers\n")  # dropped before the request is sent
    FakeHost(host.fileno(), b"<metrics>\n")
    threading.Timer(0.2, host.shutdown, [socket.SHUT_RDWR]).start()
    with pytest.raises(ChannelClosedError, match="closed the channel"):
        run(exchange_async(guest.fileno(), timeout=5))


# -- the answer framing ------------------------------------------------------


def test_blank_line_inside_a_document_does_not_end_it():
    buf = AnswerBuffer()
    assert buf.feed(b"<metrics>\n  <metric type='string' context='host'>\n<value>a\n\n") is None
    assert buf.feed(b"</value></metric>\n</metrics>\n\n").endswith(b"</metrics>\n\n")


def test_other_answers_end_at_the_blank_line():
    assert AnswerBuffer().feed(b"SOMETHING ELSE\n\n") == b"SOMETHING ELSE\n\n"
    with pytest.raises(InvalidRequestError):
        AnswerBuffer().feed(b"INVALID REQUEST\n\n")
