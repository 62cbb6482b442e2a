"""systemd's readiness protocol (sd_notify) over $NOTIFY_SOCKET.

A datagram of ``KEY=value`` lines sent to the unix socket systemd names in
the environment; nothing happens when the daemon is not run by systemd.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY=1, STATUS=..., RELOADING=1 and STOPPING=1 to systemd."""

    def __init__(self, address: str | None):
        self.address = address or None
        self.ready_sent = False
        self._failed = False

    @classmethod
    def from_environment(cls) -> "Notifier":
        """Take $NOTIFY_SOCKET and remove it, so that actions do not inherit it."""
        return cls(os.environ.pop("NOTIFY_SOCKET", None))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of *lines*; False when not under systemd or on error."""
        if self.address is None:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall("\n".join(lines).encode())
        except OSError as err:
            if not self._failed:  # say it once, not every update
                log.warning("cannot notify systemd at %s: %s", self.address, err.strerror or err)
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str) -> None:
        """Tell systemd start-up (or a reload) is complete."""
        self.send("READY=1", f"STATUS={status}")
        self.ready_sent = True

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=reloading the configuration")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")
