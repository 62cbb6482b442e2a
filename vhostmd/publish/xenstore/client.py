"""A small blocking xenstore client: one connection, one request at a time.

xenstored is found as the Xen tools' own library finds it: ``$XENSTORED_PATH``
(and nothing else when it is set), else ``$XENSTORED_RUNDIR/socket``, else
``/var/run/xenstored/socket``; when no socket can be connected, the kernel's
``/dev/xen/xenbus`` device (which carries the same messages). The device
path is untested without a Xen host.

Every request has a deadline: xenstored that stopped answering costs at most
``timeout`` seconds, after which the connection is closed and
:class:`ConnectionLost` raised; the caller connects again later. A refusal
(an ``ERROR`` reply) raises :class:`~.wire.XenstoreError` and keeps the
connection.
"""

from __future__ import annotations

import errno as errno_mod
import os
import select
import socket
import stat
import time

from . import wire
from .wire import Op, Perms, XenstoreError

DEFAULT_SOCKET = "/var/run/xenstored/socket"
XENBUS_DEVICE = "/dev/xen/xenbus"
DEFAULT_TIMEOUT = 5.0


class ConnectionLost(Exception):
    """xenstored cannot be reached, or stopped answering; the message says which."""


def socket_path(environ: dict | None = None) -> str:
    """Where xenstored listens, by the Xen tools' rules."""
    env = os.environ if environ is None else environ
    if env.get("XENSTORED_PATH"):
        return env["XENSTORED_PATH"]
    if env.get("XENSTORED_RUNDIR"):
        return os.path.join(env["XENSTORED_RUNDIR"], "socket")
    return DEFAULT_SOCKET


class _Socket:
    def __init__(self, path: str, timeout: float):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise

    def send(self, data: bytes, deadline: float) -> None:
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        self.sock.sendall(data)

    def recv(self, size: int, deadline: float) -> bytes:
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        return self.sock.recv(size)

    def close(self) -> None:
        self.sock.close()


class _Device:
    """The xenbus device: each write() one whole message, read() returns replies."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)

    def _wait(self, event: int, deadline: float) -> None:
        poller = select.poll()
        poller.register(self.fd, event)
        if not poller.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            raise socket.timeout("timed out")

    def send(self, data: bytes, deadline: float) -> None:
        self._wait(select.POLLOUT, deadline)
        if os.write(self.fd, data) != len(data):
            raise OSError(errno_mod.EIO, "short write to the xenbus device")

    def recv(self, size: int, deadline: float) -> bytes:
        self._wait(select.POLLIN, deadline)
        return os.read(self.fd, size)

    def close(self) -> None:
        os.close(self.fd)


class Client:
    """A connection to xenstored; not thread-safe, one request at a time."""

    def __init__(self, path: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 device: str = XENBUS_DEVICE):
        #: The socket (or device) to use, and only it; None: :func:`socket_path`
        #: at connect time, then *device* unless $XENSTORED_PATH is set.
        self.path = path
        self.device = device
        self.timeout = timeout
        self._channel: _Socket | _Device | None = None
        #: What the current connection goes to.
        self.connected_to: str | None = None
        self._req_id = 0
        self._buffer = b""

    # --- connection -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._channel is not None

    def connect(self) -> None:
        """Connect if not connected; raises ConnectionLost naming what failed."""
        if self._channel is not None:
            return
        path = self.path or socket_path()
        # As the Xen tools: a path given (or $XENSTORED_PATH) is the only one
        # tried, so that a test's xenstored never falls back to the host's.
        fallback = self.path is None and not os.environ.get("XENSTORED_PATH")
        try:
            info = os.stat(path)
            if stat.S_ISCHR(info.st_mode):  # XENSTORED_PATH may name the device
                self._channel, self.connected_to = _Device(path), path
                return
            self._channel, self.connected_to = _Socket(path, self.timeout), path
            return
        except OSError as err:
            reason = f"cannot connect to xenstored at {path}: {_why(err)}"
        if fallback and os.path.exists(self.device):
            try:
                self._channel, self.connected_to = _Device(self.device), self.device
                return
            except OSError as err:
                reason += f"; cannot open {self.device}: {_why(err)}"
        raise ConnectionLost(reason)

    def close(self) -> None:
        if self._channel is not None:
            try:
                self._channel.close()
            finally:
                self._channel = None
                self._buffer = b""

    def __enter__(self) -> "Client":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- requests -------------------------------------------------------------------

    def request(self, op: Op, payload: bytes, tx: int = wire.NO_TRANSACTION,
                path: str | None = None) -> bytes:
        """Send one request and return its reply's payload.

        Raises XenstoreError when xenstored refuses it (naming *path*), and
        ConnectionLost (the connection then closed) when it cannot be sent
        or answered within the timeout.
        """
        self.connect()
        channel = self._channel
        assert channel is not None
        self._req_id = (self._req_id + 1) & 0xFFFFFFFF
        message = wire.Message(op, self._req_id, tx, payload).encode()
        deadline = time.monotonic() + self.timeout
        where = self.connected_to
        try:
            channel.send(message, deadline)
            while True:
                reply, self._buffer = wire.decode(self._buffer)
                if reply is None:
                    chunk = channel.recv(wire.HEADER_SIZE + wire.PAYLOAD_MAX, deadline)
                    if not chunk:
                        raise ConnectionLost(f"xenstored at {where} closed the connection")
                    self._buffer += chunk
                    continue
                if reply.op == Op.WATCH_EVENT:
                    continue  # we set no watches; an event is not our reply
                if reply.req_id != self._req_id:
                    raise wire.ProtocolError(
                        f"reply to request {reply.req_id} while waiting for {self._req_id}")
                break
        except ConnectionLost:
            self.close()
            raise
        except socket.timeout:
            self.close()
            raise ConnectionLost(
                f"xenstored at {where} did not answer {op.name} within {self.timeout:g} s") from None
        except (OSError, wire.ProtocolError) as err:
            self.close()
            raise ConnectionLost(f"lost the connection to xenstored at {where}: {_why(err)}") from None
        if reply.op == Op.ERROR:
            raise XenstoreError(wire.error_name(reply.payload), op, path)
        if reply.op != op:
            self.close()
            raise ConnectionLost(
                f"xenstored at {where} answered {op.name} with message type {reply.op}")
        return reply.payload

    def read(self, path: str, tx: int = wire.NO_TRANSACTION) -> bytes:
        return self.request(Op.READ, wire.read_request(path), tx, path)

    def write(self, path: str, value: bytes, tx: int = wire.NO_TRANSACTION) -> None:
        self.request(Op.WRITE, wire.write_request(path, value), tx, path)

    def rm(self, path: str, tx: int = wire.NO_TRANSACTION) -> None:
        self.request(Op.RM, wire.read_request(path), tx, path)

    def directory(self, path: str, tx: int = wire.NO_TRANSACTION) -> tuple[str, ...]:
        return wire.strings_reply(self.request(Op.DIRECTORY, wire.read_request(path), tx, path))

    def get_perms(self, path: str, tx: int = wire.NO_TRANSACTION) -> Perms:
        reply = self.request(Op.GET_PERMS, wire.get_perms_request(path), tx, path)
        try:
            return Perms.parse(wire.strings_reply(reply))
        except wire.ProtocolError as err:
            raise XenstoreError(f"EINVAL ({err})", Op.GET_PERMS, path) from None

    def set_perms(self, path: str, perms: Perms, tx: int = wire.NO_TRANSACTION) -> None:
        texts = tuple(str(perms).split(","))
        self.request(Op.SET_PERMS, wire.set_perms_request(path, texts), tx, path)

    def get_domain_path(self, domid: int) -> str:
        """Where domain *domid*'s own entries are (``/local/domain/<id>``)."""
        return wire.string_reply(
            self.request(Op.GET_DOMAIN_PATH, wire.get_domain_path_request(domid), path=str(domid)))

    def transaction_start(self) -> int:
        reply = wire.string_reply(self.request(Op.TRANSACTION_START, wire.transaction_start_request()))
        try:
            return int(reply)
        except ValueError:
            self.close()
            raise ConnectionLost(f"xenstored gave an odd transaction id {reply!r}") from None

    def transaction_end(self, tx: int, commit: bool = True) -> bool:
        """End transaction *tx*; False when xenstored asks to retry it (EAGAIN)."""
        try:
            self.request(Op.TRANSACTION_END, wire.transaction_end_request(commit), tx)
        except XenstoreError as err:
            if err.errno == "EAGAIN" and commit:
                return False
            raise
        return True


def _why(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__
