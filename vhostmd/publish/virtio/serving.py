"""Serving open virtio channels: one thread, one epoll, every channel.

Every request costs a wake-up, and with 1024 guests asking once a second the
daemon's asyncio loop spends about 5 % of a core on its own bookkeeping per
wake-up (handles, the selector's key map, the timer heap) before any request
is read. A plain epoll loop that only reads, parses and sends serves the same
traffic for about half of that (docs/virtio.md has the figures), so open
channels are served here, on a thread of their own, while finding and
connecting them stays in the event loop (:mod:`.transport`).

The thread owns the channel sockets outright: the event loop hands it
connected sockets and close requests through a queue and a wake-up pipe, and
hears of a channel the guest's side closed through ``on_closed``. No socket
is touched by two threads. Answers are published by replacing one
``Answers`` reference per update, so a request never sees one update's host
metrics with another's VM metrics.

Guests are untrusted; what a guest can make the daemon do is bounded per
channel:

- reading: at most ``READ_CHUNK`` bytes are read at a time, and nothing more
  is read from a channel until every request read so far is answered (the
  parser itself holds under 512 bytes of an unfinished request);
- answering: a token bucket (``rate_limit`` per second, ``rate_burst`` at
  once) paces answers, valid or not; a request over the rate is answered
  late, not dropped, and the channel is not read meanwhile;
- writing: at most the rest of one answer waits in the daemon for a guest
  that does not read (beyond what the kernel's socket buffer holds); until
  it is taken, the channel is neither read nor answered.

A misbehaving guest therefore costs a few wake-ups per second and a few KiB,
and never delays another guest's answers.
"""

from __future__ import annotations

import heapq
import logging
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from typing import Protocol

from ...render import Fragment
from .protocol import INVALID_ANSWER, Event, RequestParser, TokenBucket, answer

log = logging.getLogger(__name__)

#: Most bytes read from a channel at once.
READ_CHUNK = 1024
#: While requests keep coming (batches less than BUSY_GAP seconds apart), the
#: thread waits COALESCE seconds before it looks for more: a request waits at
#: most that long, and each wake-up (the largest cost per request after the
#: system calls) serves several requests. Only guests within their rate count
#: as coming: guests held to their rate (flooding, sending garbage) would
#: otherwise keep the thread "busy" on their own and make every other guest
#: wait the COALESCE for nothing.
COALESCE = 0.004
BUSY_GAP = 0.010

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_monotonic = time.monotonic
#: Signals the daemon handles: delivered to the event loop's thread, never here.
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
            signal.SIGCHLD}


class Answers(NamedTuple):
    """One update's fragments: the host's, and each VM's by UUID."""

    host: Fragment | None
    vms: dict[str, Fragment | None]


NO_ANSWERS = Answers(None, {})


@dataclass
class ServingStats:
    """Counters kept by the serving thread (read, never written, elsewhere)."""

    answers: int = 0
    invalid: int = 0
    delayed: int = 0


class Server(Protocol):
    """What a Channel uses of the thread serving it (a ServingThread), and nothing more."""

    #: The latest update's fragments.
    answers: Answers
    stats: ServingStats

    def watch(self, channel: Channel, mask: int) -> None:
        """Wait for *mask* (EPOLLIN, EPOLLOUT or 0) on *channel*."""

    def call_at(self, channel: Channel, when: float) -> None:
        """Call ``channel.on_timer()`` at *when*, if ``channel.timer_at`` is still *when*."""

    def drop(self, channel: Channel, exc: Exception | None) -> None:
        """Close *channel*, which its peer closed or which failed, and say so."""


class Channel:
    """One VM's connection: requests in, answers out, within its bounds.

    Created by the event loop, then served only by the ``ServingThread`` it
    is added to (through the :class:`Server` interface; the thread calls its
    ``on_*`` methods). ``owner`` is whatever the creator wants back in
    ``on_closed`` (the VM it serves); ``describe`` names it in the log.
    """

    __slots__ = (
        "owner", "uuid", "opened", "closed", "describe", "_io", "_sock", "fd",
        "_parser", "_bucket", "_pending", "_out", "_mask", "_timer_at", "_seen", "_built",
        "_answer_bytes",
    )

    def __init__(self, owner, uuid: str, sock: socket.socket, *,
                 rate: float, burst: int, opened: float, describe: Callable[[], str]):
        self.owner = owner
        self.uuid = uuid
        self.opened = opened
        self.closed = False
        self.describe = describe
        self._io: Server | None = None
        self._sock = sock
        self.fd = sock.fileno()
        self._parser = RequestParser()
        self._bucket = TokenBucket(rate, burst, time.monotonic())
        #: Requests read but not answered yet (at most one read's worth).
        self._pending: deque[Event] = deque()
        #: The part of an answer the guest has not taken yet.
        self._out: memoryview | None = None
        #: What the channel is registered in the epoll for.
        self._mask = 0
        #: When a request held back by the rate limit is due (None: none is).
        self._timer_at: float | None = None
        #: The Answers last looked at, and the fragments the answer was built from.
        self._seen: Answers | None = None
        self._built: tuple | None = None
        self._answer_bytes = b""

    @property
    def queued(self) -> int:
        """Bytes of answer waiting in the daemon for the guest to read."""
        out = self._out
        return len(out) if out is not None else 0

    @property
    def timer_at(self) -> float | None:
        """When a request held back by the rate limit is due (None: none is)."""
        return self._timer_at

    def bind(self, server: Server) -> None:
        """Be served by *server*, which registers the channel for reading."""
        self._io = server
        self._mask = _IN

    def _watch(self, mask: int) -> None:
        self._io.watch(self, mask)
        self._mask = mask

    @property
    def throttled(self) -> bool:
        """Whether its guest asks at its rate limit (its answers are paced)."""
        return self._bucket.empty

    @property
    def reading(self) -> bool:
        """Whether the channel is read now (not while an answer is owed)."""
        return bool(self._mask & _IN)

    def answer(self) -> bytes:
        """The current answer: built at the first request after an update, then reused."""
        answers = self._io.answers
        if answers is not self._seen:
            self._seen = answers
            parts = (answers.host, answers.vms.get(self.uuid))
            built = self._built
            if built is None or built[0] is not parts[0] or built[1] is not parts[1]:
                self._built = parts
                self._answer_bytes = answer(*parts)
        return self._answer_bytes

    # Called on the serving thread only.

    def on_readable(self) -> None:
        # A channel is read only when nothing is owed on it.
        try:
            data = self._sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._io.drop(self, err)
            return
        if not data:
            self._io.drop(self, None)  # QEMU went away
            return
        if self._parser.whole_request(data) and not self._bucket.take(_monotonic()):
            # The usual case, kept short: every step here costs each request
            # of every guest, and the thread wakes with cold caches.
            self._io.stats.answers += 1
            answers = self._io.answers
            self._send(self._answer_bytes if answers is self._seen else self.answer())
            if self._out is not None:
                self._watch(_OUT)
            return
        events = self._parser.feed(data)
        if events:
            self._pending.extend(events)
            self.serve()

    def serve(self) -> None:
        """Answer pending requests as far as the rate and the guest allow."""
        pending, stats = self._pending, self._io.stats
        while pending and self._out is None:
            wait = self._bucket.take(_monotonic())
            if wait > 0:
                if self._timer_at is None:
                    stats.delayed += 1
                    self._timer_at = when = time.monotonic() + wait
                    self._io.call_at(self, when)
                break
            if pending.popleft() is Event.GET_METRICS:
                stats.answers += 1
                self._send(self.answer())
            else:
                stats.invalid += 1
                log.debug("virtio: %s: invalid request", self.describe())
                self._send(INVALID_ANSWER)
            if self.closed:
                return
        # Read on only once everything read so far is answered and taken.
        mask = _OUT if self._out is not None else 0 if pending else _IN
        if mask != self._mask:
            self._watch(mask)

    def _send(self, data: bytes) -> None:
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as err:
            self._io.drop(self, err)
            return
        if sent < len(data):
            # The guest is not reading: keep the rest (a view, not a copy of
            # the shared answer) until it does, and neither read nor answer.
            self._out = memoryview(data)[sent:]

    def on_writable(self) -> None:
        try:
            sent = self._sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._io.drop(self, err)
            return
        self._out = self._out[sent:]
        if not self._out:
            self._out = None
            self.serve()

    def on_timer(self) -> None:
        self._timer_at = None
        self.serve()

    def close_socket(self) -> None:
        """Close now, dropping what the guest has not read."""
        self.closed = True
        self._out = None
        self._timer_at = None
        self._pending.clear()
        self._sock.close()


@dataclass(eq=False)
class _Command:
    add: Channel | None = None
    close: Channel | None = None
    stop: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class ServingThread:
    """The thread that serves every open channel.

    ``add()``, ``close()``, ``stop()`` and setting ``answers`` are for the
    event loop's thread; ``on_closed(channel, exc)`` is called on the serving
    thread when a channel closes from the guest's side (hang-up, error), so
    it must only hand the news over (``loop.call_soon_threadsafe``).
    """

    def __init__(self, on_closed: Callable[[Channel, Exception | None], None]):
        self.on_closed = on_closed
        self.stats = ServingStats()
        #: The latest update's fragments, replaced whole at each update.
        self.answers: Answers = NO_ANSWERS
        self._epoll = select.epoll()
        # A pipe rather than an eventfd (os.eventfd needs Python 3.10): the
        # event loop writes a byte to wake the thread, which reads them all.
        self._wake, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake, _IN)
        self._commands: deque[_Command] = deque()
        self._channels: dict[int, Channel] = {}
        #: (due time, sequence, channel) of requests held back by the rate limit.
        self._timers: list[tuple[float, int, Channel]] = []
        self._seq = 0
        self._stopped = False
        #: Set once the thread has ended: commands are then refused.
        self._ended = False
        self._post_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="vhostmd-virtio", daemon=True)

    def start(self) -> None:
        # Started with the daemon's signals blocked, so that they keep going
        # to the event loop's thread.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def add(self, channel: Channel) -> None:
        """Serve *channel* from now on."""
        channel.bind(self)
        self._post(_Command(add=channel))

    def close(self, channel: Channel) -> None:
        """Close *channel* (``on_closed`` is not called for it)."""
        self._post(_Command(close=channel))

    def stop(self, timeout: float = 10.0) -> None:
        """Close every channel and end the thread."""
        if self._stopped:
            return
        command = _Command(stop=True)
        self._post(command)
        command.done.wait(timeout)
        self._thread.join(timeout)
        self._stopped = True
        self._epoll.close()
        os.close(self._wake)
        os.close(self._wake_w)

    def _post(self, command: _Command) -> None:
        with self._post_lock:
            if not self._ended:
                self._commands.append(command)
                try:
                    os.write(self._wake_w, b"\0")
                except BlockingIOError:
                    pass  # the pipe is full: the thread has wake-ups pending anyway
                return
        self._refuse(command)

    # Below: the serving thread only.

    def watch(self, channel: Channel, mask: int) -> None:
        """Wait for *mask* on *channel* (0: only for a hang-up or an error)."""
        self._epoll.modify(channel.fd, mask)

    def call_at(self, channel: Channel, when: float) -> None:
        """Call ``channel.on_timer()`` at *when* (monotonic clock)."""
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, channel))

    def drop(self, channel: Channel, exc: Exception | None) -> None:
        """Close a channel its peer closed (or that failed) and say so."""
        if self._forget(channel):
            self.on_closed(channel, exc)

    def _forget(self, channel: Channel) -> bool:
        if self._channels.get(channel.fd) is not channel:
            return False
        del self._channels[channel.fd]
        self._epoll.unregister(channel.fd)
        channel.close_socket()
        return True

    def _serve(self) -> None:
        try:
            self._run()
        except BaseException:
            # Not expected: every channel's own failures are caught in _run.
            log.critical("virtio: the thread serving the channels failed; no channel is "
                         "answered any more", exc_info=True)
            self._end()
            for channel in list(self._channels.values()):
                self.drop(channel, None)
        else:
            self._end()

    def _end(self) -> None:
        """Refuse commands from now on; close what was handed over and not served."""
        with self._post_lock:
            self._ended = True
        while self._commands:
            self._refuse(self._commands.popleft())

    def _refuse(self, command: _Command) -> None:
        if command.add is not None:  # nobody would serve it
            command.add.close_socket()
            if not self._stopped:
                self.on_closed(command.add, None)
        command.done.set()

    def _run(self) -> None:
        poll, channels, timers, wake = self._epoll.poll, self._channels, self._timers, self._wake
        served = 0.0
        while True:
            # Busy (the last batch ended less than BUSY_GAP ago): let requests
            # gather for COALESCE, so that one wake-up serves several of them.
            now = _monotonic()
            if now - served < BUSY_GAP:
                time.sleep(COALESCE)
            timeout = -1.0
            if timers:
                timeout = max(0.0, timers[0][0] - _monotonic())
            busy = False
            for fd, mask in poll(timeout):
                channel = channels.get(fd)
                if channel is None:
                    if fd == wake and self._commands_run():
                        return
                    continue
                try:
                    if mask & _IN:
                        channel.on_readable()
                    elif mask & _OUT:
                        channel.on_writable()
                    else:  # a hang-up or an error while not reading
                        self.drop(channel, None)
                except Exception as err:  # a bug must cost one channel, not all of them
                    log.exception("virtio: serving %s failed", channel.describe())
                    self.drop(channel, err)
                busy = busy or not channel.throttled
            if timers:
                now = _monotonic()
                while timers and timers[0][0] <= now:
                    when, _, channel = heapq.heappop(timers)
                    if channel.timer_at == when and not channel.closed:
                        try:
                            channel.on_timer()
                        except Exception as err:
                            log.exception("virtio: serving %s failed", channel.describe())
                            self.drop(channel, err)
            if busy:  # timers serve throttled guests only: they do not count
                served = _monotonic()

    def _commands_run(self) -> bool:
        """Carry out the event loop's commands; True once told to stop."""
        try:
            os.read(self._wake, 4096)
        except BlockingIOError:
            pass
        commands = self._commands
        while commands:
            command = commands.popleft()
            if command.add is not None:
                channel = command.add
                try:
                    self._epoll.register(channel.fd, _IN)
                except OSError as err:  # e.g. out of memory for epoll's entries
                    log.warning("virtio: cannot serve %s: %s", channel.describe(), err)
                    channel.close_socket()
                    self.on_closed(channel, err)
                    continue
                self._channels[channel.fd] = channel
            elif command.close is not None:
                self._forget(command.close)
            elif command.stop:
                for channel in list(self._channels.values()):
                    self._forget(channel)
                self._timers.clear()
                command.done.set()
                return True
        return False
