"""The virtio-serial port: plain non-blocking file I/O on asyncio.

A virtio-serial port (``/dev/vportNpM``) is a character device but not a
TTY: termios calls on it fail with ENOTTY, so serial-port libraries cannot
open it. The port is driven here with ``os.open(O_RDWR|O_NONBLOCK|O_NOCTTY)``,
``os.write`` and ``os.read`` woken by the event loop's ``add_reader``.

Ports that *are* TTYs (a virtio console, a pseudo-terminal) are put in raw
mode first; when the optional ``pyserial-asyncio`` package is installed
(``pip install vhostmd-guest[tty]``) they are driven through it instead.

Until the host end is connected, writes fail with EAGAIN: the request is
retried every few milliseconds until the timeout.
"""

# asyncio is imported in the functions that use it: importing it takes a
# guest under software emulation about half a second, and reading the disk
# needs none of it.
import contextlib
import errno
import os
import stat
import termios
import tty
from typing import Optional

from .channel import MAX_ANSWER_SIZE, REQUEST, AnswerBuffer
from .errors import ChannelClosedError, PortNotFoundError, VirtioError, VirtioTimeoutError

DEFAULT_PORT = "/dev/virtio-ports/org.github.vhostmd.1"
"""Where the guest sees the host's metrics channel."""

DEFAULT_TIMEOUT = 5.0
"""Seconds allowed for the whole exchange (the reference's limit)."""

_WRITE_RETRY = 0.01
_CHUNK = 65536


def _serial_asyncio():
    try:
        import serial_asyncio
    except ImportError:
        return None
    return serial_asyncio


def open_port(path: str) -> int:
    """Open ``path`` read-write, non-blocking; raise :class:`PortNotFoundError`
    when it does not exist and :class:`VirtioError` when it cannot be opened."""
    try:
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise PortNotFoundError(
            "virtio port {} does not exist (no virtio channel "
            "org.github.vhostmd.1 for this VM?)".format(path)
        ) from None
    except OSError as err:
        raise VirtioError("cannot open virtio port {}: {}".format(path, err.strerror)) from None


@contextlib.contextmanager
def _raw_tty(fd: int):
    """Raw mode, input flushed, for the duration; restored afterwards."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        termios.tcflush(fd, termios.TCIFLUSH)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


class _Progress:
    """What the exchange got done, for the timeout message."""

    def __init__(self) -> None:
        self.sent = False
        self.received = 0

    def timeout_error(self, path: str, timeout: float) -> VirtioTimeoutError:
        if not self.sent:
            what = "the host did not take the request (is vhostmd running on the host?)"
        elif not self.received:
            what = "no answer from the host"
        else:
            what = "the answer was incomplete after {} bytes".format(self.received)
        return VirtioTimeoutError("{}: {} within {:g} s".format(path, what, timeout))


def _read_chunk(fd: int) -> Optional[bytes]:
    """One non-blocking read: None when nothing is there yet, b"" at the end."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError as err:
        if err.errno == errno.EIO:  # a pseudo-terminal whose other end closed
            return b""
        raise


def _drain(fd: int) -> None:
    """Drop what an earlier, abandoned exchange left unread."""
    while True:
        try:
            if not os.read(fd, _CHUNK):
                return
        except OSError:
            return


async def _read_fd(fd: int) -> bytes:
    """The next data on ``fd``, waiting for the event loop to see it readable."""
    import asyncio
    loop = asyncio.get_event_loop()
    while True:
        ready = loop.create_future()
        loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        chunk = _read_chunk(fd)
        if chunk is not None:
            return chunk


async def _collect(read, max_size: int, progress: _Progress) -> bytes:
    """Await ``read()`` for chunks until the answer is complete."""
    answer = AnswerBuffer(max_size)
    while True:
        chunk = await read()
        if not chunk:
            raise ChannelClosedError("the host closed the channel before the answer ended")
        progress.received += len(chunk)
        complete = answer.feed(chunk)
        if complete is not None:
            return complete


async def _exchange_fd(fd: int, max_size: int, progress: _Progress) -> bytes:
    import asyncio
    _drain(fd)
    pending = REQUEST
    while pending:
        try:
            pending = pending[os.write(fd, pending):]
        except BlockingIOError:
            await asyncio.sleep(_WRITE_RETRY)
    progress.sent = True
    return await _collect(lambda: _read_fd(fd), max_size, progress)


async def exchange_async(
    fd: int,
    timeout: float = DEFAULT_TIMEOUT,
    max_size: int = MAX_ANSWER_SIZE,
    name: str = "channel",
) -> bytes:
    """The metrics exchange on an open, non-blocking file descriptor.

    :func:`request_metrics_async` opens the port and calls this; it serves
    callers that hold the channel already (any descriptor the event loop
    can watch: a character device, a socket, a pipe). ``name`` is used in
    error messages.
    """
    progress = _Progress()
    return await _within(_exchange_fd(fd, max_size, progress), name, timeout, progress)


async def _exchange_serial(serial_asyncio, path: str, max_size: int,
                           progress: _Progress) -> bytes:
    reader, writer = await serial_asyncio.open_serial_connection(url=path)
    try:
        writer.transport.serial.reset_input_buffer()
        writer.write(REQUEST)
        await writer.drain()
        progress.sent = True
        return await _collect(lambda: reader.read(_CHUNK), max_size, progress)
    finally:
        writer.close()


async def request_metrics_async(
    port: str = DEFAULT_PORT,
    timeout: float = DEFAULT_TIMEOUT,
    max_size: int = MAX_ANSWER_SIZE,
    use_pyserial: Optional[bool] = None,
) -> bytes:
    """Ask the host for the metrics over ``port``; return its whole answer.

    The answer is returned byte for byte, ending with ``</metrics>\\n\\n``.
    ``use_pyserial`` chooses how a TTY port is driven: None uses
    pyserial-asyncio when it is installed, False never does. Non-TTY ports
    never use it.

    Raises :class:`PortNotFoundError`, :class:`VirtioTimeoutError`,
    :class:`InvalidRequestError`, :class:`AnswerTooLargeError`,
    :class:`ChannelClosedError` or another :class:`VirtioError`.
    """
    fd = open_port(port)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise VirtioError("{} is a regular file, not a virtio port".format(port))
        if not os.isatty(fd):
            return await exchange_async(fd, timeout, max_size, port)
        serial_asyncio = _serial_asyncio() if use_pyserial is not False else None
        if serial_asyncio is not None:
            os.close(fd)
            fd = -1
            progress = _Progress()
            exchange = _exchange_serial(serial_asyncio, port, max_size, progress)
            return await _within(exchange, port, timeout, progress)
        with _raw_tty(fd):
            return await exchange_async(fd, timeout, max_size, port)
    finally:
        if fd >= 0:
            os.close(fd)


async def _within(exchange, port: str, timeout: float, progress: _Progress) -> bytes:
    import asyncio
    try:
        return await asyncio.wait_for(exchange, timeout)
    except asyncio.TimeoutError:
        raise progress.timeout_error(port, timeout) from None
    except OSError as err:
        hint = ""
        if err.errno == errno.EPERM:
            # epoll refuses regular files and devices such as /dev/null.
            hint = " (the event loop cannot wait on it: not a virtio port?)"
        raise VirtioError("{}: {}{}".format(port, err.strerror or err, hint)) from None


def request_metrics(
    port: str = DEFAULT_PORT,
    timeout: float = DEFAULT_TIMEOUT,
    max_size: int = MAX_ANSWER_SIZE,
    use_pyserial: Optional[bool] = None,
) -> bytes:
    """Blocking form of :func:`request_metrics_async`.

    It runs its own event loop, so call it from code that is not already
    running one (from a coroutine, await :func:`request_metrics_async`).
    """
    import asyncio
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(
            request_metrics_async(port, timeout, max_size, use_pyserial)
        )
    finally:
        loop.close()
