"""QEMU's end of virtio-serial channels, for tests: the test plays the guest.

For a channel ``<target type='virtio' name='org.github.vhostmd.1'/>`` libvirt
makes QEMU listen on ``<channel_path>/<id>-<name>/org.github.vhostmd.1``
(libvirt before 4.x: ``domain-<id>-<name>/``; the name cut to 20 characters).
What the guest writes to its port comes out of the accepted connection, and
what the daemon writes back reaches the guest. ``FakeQemu`` creates exactly
that layout and socket, accepts the daemon, and lets a test write requests
and read answers as the guest would.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

SOCKET_NAME = "org.github.vhostmd.1"
REQUEST = b"GET /metrics/XML\n\n"
INVALID = b"INVALID REQUEST\n\n"
ANSWER_END = b"</metrics>\n\n"


def channel_dir(channel_path: Path, vm_id: int, name: str, old_scheme: bool = False) -> Path:
    """The directory libvirt makes for a domain's channels."""
    short = name[:20]
    return Path(channel_path) / (f"domain-{vm_id}-{short}" if old_scheme else f"{vm_id}-{short}")


class Guest:
    """One accepted connection: the guest's view of its port."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self._data = b""

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answers(self, count: int = 1, timeout: float = 5.0) -> list[bytes]:
        """The next *count* answers (each INVALID REQUEST or a whole document)."""
        found: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            answer = self._take()
            if answer is not None:
                found.append(answer)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(found)} of {count} answers; pending {self._data[:200]!r}")
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 20), left)
            except asyncio.TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"channel closed after {len(found)} of {count} answers")
            self._data += chunk
        return found

    async def ask(self, request: bytes = REQUEST, timeout: float = 5.0) -> bytes:
        self.send(request)
        return (await self.answers(1, timeout))[0]

    def _take(self) -> bytes | None:
        if self._data.startswith(INVALID):
            answer, self._data = INVALID, self._data[len(INVALID):]
            return answer
        end = self._data.find(ANSWER_END)
        if end < 0:
            if self._data and not INVALID.startswith(self._data[:len(INVALID)]) \
                    and not self._data.startswith(b"<metrics>\n"[:len(self._data)]):
                raise AssertionError(f"not an answer: {self._data[:200]!r}")
            return None
        end += len(ANSWER_END)
        answer, self._data = self._data[:end], self._data[end:]
        return answer

    async def nothing_more(self, wait: float = 0.3) -> None:
        """Assert that no byte arrives within *wait* seconds."""
        try:
            chunk = await asyncio.wait_for(self.reader.read(1 << 20), wait)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"unexpected bytes: {chunk[:200]!r}")

    async def closed(self, timeout: float = 5.0) -> bool:
        """Wait until the daemon hangs up; True if it did within *timeout*."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 20), left)
            except asyncio.TimeoutError:
                return False
            except ConnectionError:
                return True
            if not chunk:
                return True
            self._data += chunk
        return False

    def hang_up(self) -> None:
        self.writer.close()


class FakeQemu:
    """A VM's listening channel socket, laid out as libvirt does."""

    def __init__(self, channel_path: Path, vm_id: int, name: str, *, old_scheme: bool = False,
                 directory: Path | None = None, read_limit: int = 1 << 16):
        self.dir = directory or channel_dir(channel_path, vm_id, name, old_scheme)
        self.path = self.dir / SOCKET_NAME
        self.read_limit = read_limit
        self.accepted = 0
        self.guests: list[Guest] = []
        self._guests: asyncio.Queue[Guest] = asyncio.Queue()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> "FakeQemu":
        self.dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_unix_server(self._accept, str(self.path), limit=self.read_limit)
        return self

    async def _accept(self, reader, writer) -> None:
        self.accepted += 1
        guest = Guest(reader, writer)
        self.guests.append(guest)
        await self._guests.put(guest)

    async def guest(self, timeout: float = 5.0) -> Guest:
        """The daemon's next connection (fails after *timeout*)."""
        try:
            return await asyncio.wait_for(self._guests.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"the daemon did not connect to {self.path} within {timeout} s") from None

    async def no_connection(self, wait: float) -> None:
        try:
            guest = await asyncio.wait_for(self._guests.get(), wait)
        except asyncio.TimeoutError:
            return
        guest.hang_up()
        raise AssertionError(f"the daemon connected to {self.path}")

    async def stop(self, remove: bool = True) -> None:
        """QEMU exits: stop listening, drop connections, remove the socket."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for guest in self.guests:
            guest.hang_up()
        if remove:
            for path in (self.path, self.dir):
                try:
                    os.rmdir(path) if path == self.dir else path.unlink()
                except OSError:
                    pass


def dead_socket(channel_path: Path, vm_id: int, name: str, *, old_scheme: bool = False) -> Path:
    """A socket file nobody listens on, as a VM that died leaves behind."""
    directory = channel_dir(channel_path, vm_id, name, old_scheme)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SOCKET_NAME
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    return path
