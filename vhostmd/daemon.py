"""The update loop: keeps the period, reloads on SIGHUP, stops promptly."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Sequence

from . import config as config_mod, exposition
from .collect.virt import Libvirt
from .config import Config, ConfigError
from .pipeline import Pipeline, UpdateReport
from .publish import Publisher, PublishErrorLog, TransportError
from .sdnotify import Notifier
from .pidfile import process_start
from .state import DaemonStatus, ReloadFailure, StatusFile, UpdateStatus, summary
from .textfile import PrometheusFile
from .transports import close_transports, open_transports, start_transports
from .watchdog import Watchdog, longest_step

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
#: The signals the daemon handles: blocked from the start of the command
#: line until their handlers are in place (``block_signals``).
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)


def block_signals() -> None:
    """Hold the handled signals until ``Daemon.run`` (or ``--once``) handles them.

    Called before anything is created: a SIGTERM between the pid file's
    creation and the handlers' installation would otherwise kill the
    process with its default action and leave the pid file behind. A
    signal that arrives meanwhile waits, and is handled once unblocked.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)


def unblock_signals() -> None:
    """Deliver the handled signals again (their handlers must be installed)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)


class ProblemLog:
    """Logs a problem when it appears and when it clears, not every update.

    A metric that fails on every update would otherwise write the same line
    to syslog every few seconds for as long as it fails.
    """

    def __init__(self) -> None:
        self._active: set[str] = set()

    def update(self, problems: list[str]) -> None:
        current = set(problems)
        for line in problems:
            if line not in self._active:
                log.warning("%s", line)
        cleared = self._active - current
        if cleared:
            log.info("%d problem(s) cleared, e.g. %s", len(cleared), min(cleared))
        self._active = current


class Daemon:
    """Runs updates every ``update_period`` until told to stop."""

    def __init__(
        self, config: Config, config_path: Path, virt: Libvirt, transports: Sequence[Publisher],
        status_file: StatusFile | None = None, notifier: Notifier | None = None,
        prometheus_file: PrometheusFile | None = None,
    ):
        self.config_path = config_path
        self.virt = virt
        #: The pipeline of the running configuration, publishing to *transports*.
        self.pipeline = Pipeline(config, virt, transports)
        self.last_report: UpdateReport | None = None
        self.status_file = status_file
        self.notifier = notifier or Notifier(None)
        self.started = time.time()
        self._process_start = process_start(os.getpid()) or 0
        self.prometheus_file = prometheus_file
        #: Updates finished, and of those the ones not published everywhere.
        self.updates = 0
        self.publish_failures = 0
        #: The last reload, while it has failed (the running configuration was
        #: kept); cleared by the next reload that succeeds.
        self.reload_failure: ReloadFailure | None = None
        #: time.monotonic() when the update in progress started; None between updates.
        self.update_started: float | None = None
        self._problems = ProblemLog()
        self._overruns = 0
        self._publish_errors = PublishErrorLog()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._wake = asyncio.Event()

    @property
    def config(self) -> Config:
        return self.pipeline.config

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    async def update(self) -> UpdateReport:
        """Run one update now and log what went wrong."""
        report = await self.pipeline.update()
        self._problems.update(report.problems)
        self._publish_errors.update(report.publish_errors)
        self.last_report = report
        self.updates += 1
        if not report.published:
            self.publish_failures += 1
        self._report_status()
        log.debug(
            "update: %d VMs, %d metrics, %d bytes, %.1f ms (%.1f ms CPU)",
            report.vms, report.metrics, report.document_bytes,
            report.duration * 1000, report.cpu * 1000,
        )
        return report

    def status(self, running: bool = True) -> DaemonStatus:
        """The daemon's state as ``vhostmd status`` shows it."""
        report = self.last_report
        return DaemonStatus(
            pid=os.getpid(),
            started=self.started,
            written=time.time(),
            config=str(self.config_path),
            update_period=self.config.update_period,
            running=running,
            process_start=self._process_start,
            last_update=UpdateStatus(
                started=report.started, duration=report.duration, cpu=report.cpu,
                vms=report.vms, metrics=report.metrics, document_bytes=report.document_bytes,
                published=report.published, failures=tuple(report.problems),
                publish_errors=tuple(report.publish_errors),
            ) if report is not None else None,
            transports=self.pipeline.status(),
            updates=self.updates,
            publish_failures=self.publish_failures,
            reload_failure=self.reload_failure,
        )

    def write_state(self, status: DaemonStatus) -> None:
        """The state file and the Prometheus file; neither can fail an update."""
        if self.status_file is not None:
            self.status_file.write(status)
        if self.prometheus_file is not None:
            self.prometheus_file.write(exposition.render(status, up=status.running))

    def update_age(self) -> float | None:
        """How long the update in progress has run (None between updates), for the watchdog."""
        started = self.update_started
        return None if started is None else time.monotonic() - started

    def _report_status(self, running: bool = True) -> None:
        status = self.status(running)
        self.write_state(status)
        if running and status.last_update is not None:
            text = summary(status.last_update, status.reload_failure)
            # Ready once the first update is done, published or not: a unit
            # that never became ready would be restarted in a loop, and no
            # restart mends a disk that is too small or one VM's oversize
            # value. What failed is in STATUS=, the journal and `vhostmd check`.
            if not self.notifier.ready_sent:
                self.notifier.ready(text)
            else:
                self.notifier.status(text)

    async def run_once(self) -> UpdateReport:
        """One update, published, with the transports started and stopped around it."""
        await start_transports(self.pipeline.publishers)
        try:
            return await self.update()
        finally:
            await close_transports(self.pipeline.publishers)

    async def run(self) -> None:
        """Update every period until stop(); SIGHUP-style reloads in between."""
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        # Handled from now on; one that came during start-up is delivered here.
        unblock_signals()
        await start_transports(self.pipeline.publishers)
        watchdog = self._start_watchdog()
        try:
            await self._loop(loop)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self.notifier.stopping()
            # Handlers stay until the transports are closed: a second SIGTERM
            # while channels close must not kill the daemon half-way.
            try:
                await close_transports(self.pipeline.publishers)
            finally:
                # Held again until the process exits: one arriving while the
                # pid file is removed must not kill it half-way.
                block_signals()
                for sig in HANDLED_SIGNALS:
                    loop.remove_signal_handler(sig)
            self.write_state(self.status(running=False))

    def _start_watchdog(self) -> asyncio.Task | None:
        """Keep-alive pings for systemd, when it asks for them (WatchdogSec=)."""
        usec = self.notifier.watchdog_usec
        if not usec:
            return None
        dog = Watchdog(self.notifier, usec, self.update_age)
        timeouts = [m.timeout or self.config.action_timeout for m in self.config.metrics if m.action]
        longest = longest_step(timeouts, self.virt.timeout)
        if longest >= dog.stuck_after:
            log.warning(
                "an update may wait %g s for libvirt and an action, but the watchdog takes an update "
                "running %g s (half of WatchdogSec) as stuck: raise WatchdogSec above %g s",
                longest, dog.stuck_after, 2 * longest,
            )
        log.debug("watchdog: pinging systemd every %g s", dog.interval)
        return asyncio.ensure_future(dog.run())

    async def _loop(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time()
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                await self.reload()
            period = self.config.update_period
            started = loop.time()
            self.update_started = time.monotonic()
            update = asyncio.ensure_future(self.update())
            stopper = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({update, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.update_started = None
            stopper.cancel()
            if not update.done():
                # Stopping mid-update: cancelling kills the running actions.
                update.cancel()
                await asyncio.gather(update, return_exceptions=True)
                break
            if update.exception() is not None:
                log.error("update failed", exc_info=update.exception())
            elapsed = loop.time() - started
            # An update that always overruns would say so every period:
            # the first overrun is logged, then only when updates fit again.
            if elapsed > period:
                if not self._overruns:
                    log.warning("update took %.2f s, longer than update_period %d s", elapsed, period)
                self._overruns += 1
            elif self._overruns:
                log.info("updates fit update_period again after %d that took longer", self._overruns)
                self._overruns = 0
            # Next slot on the original grid: no drift when updates are slow,
            # no burst of catch-up updates after an overrun.
            due += period * max(1, math.ceil((loop.time() - due) / period))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, due - loop.time()))
            except asyncio.TimeoutError:
                pass

    async def reload(self) -> bool:
        """Load the configuration file again; on any error keep the running one."""
        log.info("reloading %s", self.config_path)
        if self.notifier.ready_sent:
            self.notifier.reloading()
        try:
            new = config_mod.load(self.config_path)
            transports = open_transports(new, self.pipeline.publishers)
        except (ConfigError, TransportError) as err:
            log.error("reload failed, keeping the running configuration: %s", err)
            # Recorded in the state file until a reload succeeds: the log line
            # alone is easily missed (under systemd it is only in the journal).
            # One line: it ends up in STATUS=, whose datagram is KEY=value lines.
            error = " ".join(str(err).splitlines())
            self.reload_failure = ReloadFailure(at=time.time(), config=str(self.config_path), error=error)
            self._state_after_reload()
            self._ready_again(f"RELOAD FAILED, running configuration kept: {error}")
            return False
        for warning in new.warnings:
            log.warning("%s", warning)
        pipeline = Pipeline(new, self.virt, transports)
        await close_transports(self.pipeline.publishers, keep=transports)
        self.pipeline = pipeline
        await start_transports(transports)
        log.info("configuration reloaded: %d metrics", len(new.metrics))
        self.reload_failure = None
        self._state_after_reload()
        self._ready_again(f"configuration reloaded: {len(new.metrics)} metrics")
        return True

    def _state_after_reload(self) -> None:
        # Written now, not only after the next update: that update may run
        # for a while (slow actions), and status must say what happened.
        self.write_state(self.status())

    def _ready_again(self, text: str) -> None:
        # systemd waits for READY=1 after RELOADING=1, whatever the outcome.
        if self.notifier.ready_sent:
            self.notifier.ready(text)
