"""systemd's watchdog: keep-alive pings while the update loop makes progress.

With ``WatchdogSec=`` systemd kills and restarts a service that stops
sending ``WATCHDOG=1``. A ping sent by a timer of its own would say nothing
about the updates (it would go on while an update hangs), so the timer here
runs on the update loop's event loop and asks the loop whether it is making
progress before each ping:

- when the event loop itself is blocked, the timer cannot run: no ping;
- when an update has run longer than half of ``WatchdogSec`` (every step of
  an update is bounded by its own timeout, so one that runs that long is
  stuck), no ping until it finishes.

Pings go out every quarter of ``WatchdogSec``, so one late tick is no harm.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Optional

from .sdnotify import Notifier

log = logging.getLogger(__name__)


class Watchdog:
    """Pings systemd every quarter of *usec* while ``update_age()`` stays under half of it.

    *update_age* returns how long the update in progress has run, in
    seconds, or None between updates.
    """

    def __init__(self, notifier: Notifier, usec: int, update_age: Callable[[], Optional[float]]):
        self.notifier = notifier
        self.timeout = usec / 1e6
        #: An update running longer than this counts as stuck.
        self.stuck_after = self.timeout / 2
        self.interval = self.timeout / 4
        self._update_age = update_age
        self._stuck = False
        self.pings = 0

    def alive(self) -> bool:
        """Whether the update loop makes progress (and say so in the log when that changes)."""
        age = self._update_age()
        stuck = age is not None and age >= self.stuck_after
        if stuck and not self._stuck:
            log.error(
                "the update has been running for %.0f s, more than half of the watchdog's %g s: "
                "no longer telling systemd the daemon is alive", age, self.timeout,
            )
        elif self._stuck and not stuck:
            log.warning("the update loop makes progress again; watchdog pings resumed")
        self._stuck = stuck
        return not stuck

    async def run(self) -> None:
        """Ping until cancelled."""
        while True:
            if self.alive():
                self.notifier.watchdog()
                self.pings += 1
            await asyncio.sleep(self.interval)


def longest_step(action_timeouts: list[float], libvirt_timeout: float) -> float:
    """The longest an update may wait for one thing: libvirt, then an action."""
    return libvirt_timeout + max(action_timeouts, default=0.0)

