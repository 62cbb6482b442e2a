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
    """Sends READY=1, STATUS=..., RELOADING=1, STOPPING=1 and WATCHDOG=1 to systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self.address = address or None
        #: systemd's WatchdogSec= in microseconds, when it asks for keep-alive pings.
        self.watchdog_usec = watchdog_usec if self.address else None
        self.ready_sent = False
        self._failed = False

    @classmethod
    def from_environment(cls) -> "Notifier":
        """Take $NOTIFY_SOCKET and the watchdog's variables and remove them,
        so that actions do not inherit them."""
        address = os.environ.pop("NOTIFY_SOCKET", None)
        usec = os.environ.pop("WATCHDOG_USEC", None)
        pid = os.environ.pop("WATCHDOG_PID", None)
        return cls(address, watchdog_usec=_watchdog_usec(usec, pid))

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

    def watchdog(self) -> None:
        """The keep-alive ping: systemd kills the daemon when they stop coming."""
        self.send("WATCHDOG=1")


def _watchdog_usec(usec: str | None, pid: str | None) -> int | None:
    """WATCHDOG_USEC when it is meant for this process (WATCHDOG_PID, if set, is ours)."""
    if not usec:
        return None
    try:
        value = int(usec)
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        log.warning("ignoring the watchdog: WATCHDOG_USEC=%r WATCHDOG_PID=%r are not numbers", usec, pid)
        return None
    return value if value > 0 else None
