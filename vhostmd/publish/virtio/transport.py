"""The virtio-serial transport: each VM asks over its own channel for its metrics.

For a VM with a channel ``org.github.vhostmd.1``, QEMU listens on a unix
socket in ``channel_path`` (named as :mod:`.naming` says) and relays what the
guest writes to its port. The daemon connects to it as the client and
answers each ``GET /metrics/XML`` with the host's metrics and that VM's own.

This module finds and connects the channels, in the event loop; the open
channels are served, within per-guest bounds, by the thread of
:mod:`.serving`; what goes over the wire is :mod:`.protocol`.

Until libvirt has made ``channel_path`` (it does when the first VM with a
channel starts) there are simply no channels: that is a note in the status,
not a failure; its nearest existing parent is watched, and the channels are
connected as soon as the directory and their sockets appear.

Channels are found by listing ``channel_path`` only when a VM with metrics
has no channel (after an update, when inotify reports a new directory or
socket there, or when a failed attempt's back-off ends). The directory name
must match the VM's id *and* name, so a directory left by another VM never
receives this VM's metrics. A socket that refuses connections (a VM that died
and left it) is retried with exponential back-off; every attempt is a
non-blocking connect that fails at once, so it never delays the others.

QEMU's side is not trusted to behave either: a crash-looping QEMU re-creates
its directory and socket many times a second. Connections are therefore
bounded per VM whatever the churn: a channel QEMU closes before it has been
open STABLE_AFTER seconds starts a back-off that a new socket does not end,
and a new socket is tried at most once per WAKE_GAP. What happens to such a
channel is logged once, then summarised once per SUMMARY_EVERY.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import stat
import time
from dataclasses import dataclass, replace

from ...config import Config, VirtioConfig
from .inotify import (
    IN_CREATE, IN_DONT_FOLLOW, IN_IGNORED, IN_MOVED_TO, IN_ONLYDIR, IN_Q_OVERFLOW, Inotify,
)
from ...model import Domain
from ...render import Fragment, Rendered
from ...state import ChannelStatus, TransportStatus
from .naming import CHANNEL_NAME, name_matches, parse_channel_dir
from .serving import Answers, Channel, ServingThread

log = logging.getLogger(__name__)

#: Retry delays after a failed connection attempt: doubled after each failure.
BACKOFF_INITIAL = 0.25
BACKOFF_MAX = 30.0
#: A channel that stayed open this long resets its VM's back-off when it closes.
STABLE_AFTER = 30.0
#: A new directory or socket connects its VM at most this often.
WAKE_GAP = 0.25
#: A VM whose channels keep closing early has that logged at most this often.
SUMMARY_EVERY = 60.0
#: After reading inotify events, the next are read this much later at the
#: earliest: a QEMU re-creating sockets without pause wakes the event loop
#: this often, not once per socket.
INOTIFY_PAUSE = 0.05
#: Descriptors kept for everything but channels (libvirt, actions, disk, logs).
SPARE_FDS = 256

_CHANNEL_NAME_BYTES = CHANNEL_NAME.encode()
_WATCH_TOP = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR
_WATCH_VM_DIR = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW


@dataclass
class VirtioStats:
    """Counters since the transport started (for status and benchmarks)."""

    #: Kept by the serving thread.
    answers: int = 0
    invalid: int = 0
    delayed: int = 0
    opened: int = 0
    closed: int = 0
    connect_failures: int = 0


class _Vm:
    """A VM with metrics: what it is sent, and the state of its channel.

    One per VM, updated on every update: a plain class with ``__slots__``
    (no per-instance dict), equal only to itself.
    """

    __slots__ = ("domain", "fragment", "updated", "channel", "retry_at", "delay", "search_delay",
                 "attempted", "hold_until", "failure_logged", "flapping", "early_closes",
                 "summary_at")

    def __init__(self, domain: Domain, delay: float = 0.0, search_delay: float = 0.0):
        self.domain = domain
        self.fragment: Fragment | None = None
        #: Clock time of the last update that brought metrics for it.
        self.updated = 0.0
        self.channel: Channel | None = None
        #: No connection attempt before this clock time (back-off).
        self.retry_at = 0.0
        #: The next back-off after a failure: a refused socket, or a channel
        #: closed early (a crash-looping QEMU). Reset by a channel that lasted.
        self.delay = delay
        #: The next wait after an attempt that found no socket at all.
        self.search_delay = search_delay
        #: Clock time of the last connection attempt.
        self.attempted = -1e9
        #: No connection before this clock time, new socket or not (a channel
        #: closed early sets it).
        self.hold_until = 0.0
        #: Whether the first failure to connect has been logged.
        self.failure_logged = False
        #: Whether its last channel closed early (until one lasts STABLE_AFTER).
        self.flapping = False
        #: Channels closed early since the last summary; when that was logged.
        self.early_closes = 0
        self.summary_at = -1e9

    def describe(self) -> str:
        return f"VM {self.domain.name!r} (id {self.domain.id})"


class VirtioTransport:
    """All VMs' channels, served from the latest update.

    The daemon is the *client* of each channel: QEMU listens, this connects.

    Lives as long as the daemon (a reload with the same virtio settings keeps
    it and its channels); ``publish()`` is called after every update.
    """

    name = "virtio"

    def __init__(self, config: VirtioConfig, clock=time.monotonic):
        self.config = config
        self.clock = clock
        self._counts = VirtioStats()
        self._io: ServingThread | None = None
        self._vms: dict[str, _Vm] = {}
        self._by_id: dict[int, _Vm] = {}
        self._channels: set[Channel] = set()
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scan_pending = False
        self._retry_timer: asyncio.TimerHandle | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._inotify: Inotify | None = None
        self._top_wd: int | None = None
        #: inotify watches of VM directories still waiting for their socket.
        self._dir_watches: dict[int, bytes] = {}
        self._watched_dirs: dict[bytes, int] = {}
        #: VMs with metrics left without a channel by max_channels at the last scan.
        self._over_limit = 0
        self._mismatch_warned: set[bytes] = set()
        self._inotify_timer: asyncio.TimerHandle | None = None
        #: Why channel_path cannot be listed (EACCES, ENOTDIR...): a problem
        #: the status shows, without the transport's name (status adds it).
        self._dir_problem: str | None = None
        #: channel_path does not exist (yet): no channels, and no problem.
        self._dir_missing = False
        #: While channel_path is missing: the watch on its nearest existing parent.
        self._parent_wd: int | None = None

    @property
    def stats(self) -> VirtioStats:
        """The counters so far."""
        served = self._io.stats if self._io is not None else None
        if served is None:
            return replace(self._counts)
        return replace(self._counts, answers=served.answers, invalid=served.invalid,
                       delayed=served.delayed)

    @property
    def channels(self) -> int:
        """Channels open now."""
        return len(self._channels)

    def status(self) -> TransportStatus:
        """Channels open, failed attempts, requests held back by the rate limit."""
        notes = []
        stats = self.stats
        if self._over_limit:
            notes.append(f"max_channels {self.config.max_channels} reached: "
                         f"{self._over_limit} VM(s) with metrics not connected")
        if stats.invalid:
            notes.append(f"{stats.invalid} invalid request(s) answered INVALID REQUEST")
        return TransportStatus(
            name=self.name,
            notes=(f"channel directory {self.config.channel_path} does not exist yet; no channels",)
            if self._dir_missing else (),
            channels=ChannelStatus(
                connected=len(self._channels),
                refused=stats.connect_failures,
                rate_limited=stats.delayed,
                requests=stats.answers + stats.invalid,
                invalid=stats.invalid,
                unconnected=sum([1 for vm in self._vms.values() if vm.channel is None]),
                notes=tuple(notes),
            ),
            errors=(self._dir_problem,) if self._dir_problem else (),
        )

    # lifecycle

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._loop = loop = asyncio.get_running_loop()
        _raise_fd_limit(self.config.max_channels + SPARE_FDS)
        self._io = ServingThread(
            lambda channel, exc: loop.call_soon_threadsafe(self._channel_closed, channel, exc, True))
        self._io.start()
        try:
            self._inotify = Inotify()
        except OSError as err:
            log.warning("virtio: inotify unavailable (%s); new channels are found at updates "
                        "and retries only", err)
        else:
            self._loop.add_reader(self._inotify.fd, self._on_inotify)
            self._watch_top()
        log.info("virtio: serving channels under %s (at most %d)",
                 self.config.channel_path, self.config.max_channels)

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        for handle in (self._retry_timer, self._expiry_timer):
            if handle is not None:
                handle.cancel()
        self._close_inotify()
        for vm in self._vms.values():
            vm.channel = None
        self._vms.clear()
        self._by_id.clear()
        closed = len(self._channels)
        self._channels.clear()
        self._io.stop()
        if closed:
            log.info("virtio: %d channel(s) closed", closed)

    # publishing

    def publish(self, rendered: Rendered) -> None:
        """Take one update's metrics; connect VMs that have no channel yet.

        Never fails: the channels are answered from this update whatever
        becomes of them; a channel directory that cannot be listed is in
        :meth:`status` (an error), one that does not exist yet too (a note).
        """
        if not self._running:
            return
        now = self.clock()
        for uuid, fragment in rendered.vms.items():
            domain = rendered.domains[uuid]
            vm = self._vms.get(uuid)
            if vm is not None and vm.domain != domain:
                # Restarted (a new id, so a new socket) or renamed.
                self._forget(vm, f"now id {domain.id} ({domain.name!r})")
                vm = None
            if vm is None:
                vm = self._vms[uuid] = _Vm(domain, delay=BACKOFF_INITIAL, search_delay=BACKOFF_INITIAL)
                self._by_id[domain.id] = vm
            vm.fragment = fragment
            vm.updated = now
        if rendered.vms_known:
            for uuid, vm in list(self._vms.items()):
                if uuid not in rendered.vms:
                    self._forget(vm, "not running any more")
        self._expire(now)
        # One reference swapped: the serving thread sees this update whole or not at all.
        self._io.answers = Answers(rendered.host, {uuid: vm.fragment for uuid, vm in self._vms.items()})
        if self._inotify is not None and self._top_wd is None:
            self._watch_top()
        if self._dir_missing and os.path.isdir(self.config.channel_path):
            # Without inotify (or out of watches), one stat per update notices it.
            self._dir_appeared()
        self._request_scan()

    def _forget(self, vm: _Vm, why: str) -> None:
        """Stop serving *vm*: close its channel, drop its metrics."""
        del self._vms[vm.domain.uuid]
        if self._by_id.get(vm.domain.id) is vm:
            del self._by_id[vm.domain.id]
        if vm.channel is not None:
            log.info("virtio: closing the channel of %s: %s", vm.describe(), why)
            channel, vm.channel = vm.channel, None
            self._io.close(channel)
            self._channel_closed(channel, None, by_peer=False)

    def _expire(self, now: float) -> None:
        limit = self.config.expiration_time
        for vm in list(self._vms.values()):
            if now - vm.updated >= limit:
                self._forget(vm, f"no metrics update for {limit} s")
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        if self._vms:
            due = min(vm.updated for vm in self._vms.values()) + limit
            self._expiry_timer = self._loop.call_later(
                max(0.0, due - now) + 0.01, lambda: self._expire(self.clock())
            )

    # finding and connecting channels

    def _request_scan(self) -> None:
        """Scan soon (once, however many ask in the meantime)."""
        if self._running and not self._scan_pending:
            self._scan_pending = True
            self._loop.call_soon(self._scan)

    def _scan(self) -> None:
        """Connect every VM that has metrics, no channel and no back-off pending."""
        self._scan_pending = False
        if not self._running:
            return
        now = self.clock()
        need = [vm for vm in self._vms.values() if vm.channel is None and vm.retry_at <= now]
        free = self.config.max_channels - len(self._channels)
        tried = 0
        if need and free > 0:
            candidates = self._list(need)
            for vm in need:
                if tried == free:
                    break
                tried += 1
                sock, path, failed = None, "", False
                vm.attempted = now
                if candidates is not None:
                    sock, path, failed = self._connect(vm, candidates.get(vm.domain.id, ()))
                if sock is not None:
                    self._attach(vm, sock, path)
                elif failed:
                    self._back_off(vm, now)
                else:
                    # Nothing to connect to yet: inotify says when there is.
                    vm.retry_at = now + vm.search_delay
                    vm.search_delay = min(vm.search_delay * 2, BACKOFF_MAX)
        self._check_limit(len(need) - tried)
        self._schedule_retry()

    def _list(self, need: list[_Vm]) -> dict[int, list[str]] | None:
        """The directories of channel_path that belong to VMs in *need*, by id."""
        wanted = {vm.domain.id: vm for vm in need}
        found: dict[int, list[str]] = {}
        path = self.config.channel_path
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    raw = os.fsencode(entry.name)
                    parsed = parse_channel_dir(raw)
                    if parsed is None or parsed[0] not in wanted:
                        continue
                    vm = wanted[parsed[0]]
                    if not name_matches(parsed[1], vm.domain.name):
                        if raw not in self._mismatch_warned:
                            if len(self._mismatch_warned) > 4096:
                                self._mismatch_warned.clear()
                            self._mismatch_warned.add(raw)
                            log.warning("virtio: %s/%s is not the channel of %s: name differs; "
                                        "not connected", path, entry.name, vm.describe())
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        found.setdefault(vm.domain.id, []).append(entry.path)
        except FileNotFoundError:
            self._set_missing()
            return None
        except OSError as err:
            problem = f"cannot list channel directory {path}: {err.strerror}"
            if problem != self._dir_problem:
                log.warning("virtio: %s", problem)
            self._dir_problem = problem
            self._dir_missing = False
            return None
        if self._dir_problem:
            log.info("virtio: channel directory %s is readable again", path)
            self._dir_problem = None
        if self._dir_missing:
            self._dir_appeared()
        return found

    def _set_missing(self) -> None:
        """channel_path does not exist: say so once, with what to do."""
        self._dir_problem = None
        if self._dir_missing:
            return
        self._dir_missing = True
        log.warning("virtio: channel directory %s does not exist yet; no channels until it does "
                    "(libvirt creates it when a VM with a channel starts; create it, or leave "
                    "<transport>virtio</transport> out of the configuration)",
                    self.config.channel_path)

    def _dir_appeared(self) -> None:
        """channel_path exists now: look at once for every VM still without a channel."""
        if not self._dir_missing:
            return
        self._dir_missing = False
        log.info("virtio: channel directory %s exists now", self.config.channel_path)
        # Their directories and sockets may have been made before any watch saw them.
        for vm in self._vms.values():
            if vm.channel is None:
                self._wake_vm(vm)
        self._request_scan()

    def _connect(self, vm: _Vm, directories: list[str]) -> tuple[socket.socket | None, str, bool]:
        """A socket connected to *vm*'s channel, trying its directories in order.

        Also says whether an attempt failed (as opposed to finding no socket).
        A VM without a socket (no vhostmd channel, or QEMU not there yet) is
        normal and logged at debug level; a socket that refuses is logged
        once per VM.
        """
        failed = False
        if not directories:
            log.debug("virtio: no channel directory for %s", vm.describe())
        for directory in directories:
            path = os.path.join(directory, CHANNEL_NAME)
            try:
                mode = os.lstat(path).st_mode
            except OSError as err:
                log.debug("virtio: %s: %s", path, err.strerror)
                self._watch_dir(directory)
                continue
            if not stat.S_ISSOCK(mode):
                self._connect_failed(vm, f"{path} is not a socket")
                failed = True
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                                 | socket.SOCK_CLOEXEC)
            try:
                # A unix socket connects or fails at once (EAGAIN when QEMU's
                # backlog is full): this never waits.
                err = sock.connect_ex(path)
                why = os.strerror(err)
            except OSError as exc:  # e.g. a path too long for a unix socket
                err, why = -1, exc.strerror or str(exc)
            if err == 0:
                return sock, path, False
            sock.close()
            failed = True
            self._connect_failed(vm, f"{path}: {why}")
            self._watch_dir(directory)
        return None, "", failed

    def _connect_failed(self, vm: _Vm, why: str) -> None:
        self._counts.connect_failures += 1
        level = logging.DEBUG if vm.failure_logged else logging.INFO
        vm.failure_logged = True
        log.log(level, "virtio: cannot connect %s: %s; retrying in %.2g s",
                vm.describe(), why, vm.delay)

    def _attach(self, vm: _Vm, sock: socket.socket, path: str) -> None:
        """Serve *vm* on the connected *sock*."""
        vm.channel = channel = Channel(
            vm, vm.domain.uuid, sock, rate=self.config.rate_limit,
            burst=self.config.rate_burst, opened=self.clock(), describe=vm.describe)
        self._channels.add(channel)
        self._io.add(channel)
        self._counts.opened += 1
        vm.search_delay = BACKOFF_INITIAL
        self._unwatch_dir(os.path.dirname(path))
        if vm.flapping:
            # Reopened after an early close: in the summary, not a line each.
            log.debug("virtio: reopened the channel of %s", vm.describe())
            return
        vm.failure_logged = False
        log.info("virtio: opened the channel of %s (%d/%d)",
                 vm.describe(), len(self._channels), self.config.max_channels)

    def _back_off(self, vm: _Vm, now: float) -> None:
        """No attempt for *vm* before its delay has passed; double the delay."""
        vm.retry_at = now + vm.delay
        vm.delay = min(vm.delay * 2, BACKOFF_MAX)

    def _channel_closed(self, channel: Channel, exc: Exception | None, by_peer: bool) -> None:
        if channel not in self._channels:
            return  # closed here while the guest's side was closing it too, or stopped
        self._channels.discard(channel)
        self._counts.closed += 1
        vm = channel.owner
        if vm.channel is channel:
            vm.channel = None
            now = self.clock()
            why = f": {exc}" if exc else ""
            if now - channel.opened >= STABLE_AFTER:
                vm.delay = BACKOFF_INITIAL
                vm.flapping = False
                level = logging.INFO if by_peer else logging.DEBUG
                log.log(level, "virtio: the channel of %s was closed%s", vm.describe(),
                        " by QEMU" + why if by_peer else why)
            else:
                # Closed early (QEMU crash-looping?): no new socket ends this
                # wait, so reconnects stay bounded however fast QEMU churns.
                vm.hold_until = now + vm.delay
                vm.flapping = True
                self._summarise(vm, now, why)
            self._back_off(vm, now)
        self._request_scan()  # a free slot, or a retry to schedule

    def _summarise(self, vm: _Vm, now: float, why: str) -> None:
        """Log the first early close, then at most one summary per SUMMARY_EVERY."""
        vm.early_closes += 1
        if now - vm.summary_at < SUMMARY_EVERY:
            log.debug("virtio: the channel of %s was closed early%s", vm.describe(), why)
            return
        if vm.early_closes == 1:
            log.info("virtio: the channel of %s was closed by QEMU soon after it opened%s; "
                     "reconnecting in %.2g s (repeats are summarised every %.0f s)",
                     vm.describe(), why, vm.delay, SUMMARY_EVERY)
        else:
            log.warning("virtio: the channel of %s was closed early %d times in the last %.0f s "
                        "(QEMU restarting?); reconnecting in %.2g s", vm.describe(),
                        vm.early_closes, now - vm.summary_at, vm.delay)
        vm.summary_at = now
        vm.early_closes = 0

    def _check_limit(self, skipped: int) -> None:
        """Warn once when max_channels leaves VMs untried; say when it clears."""
        if skipped and not self._over_limit:
            log.warning("virtio: max_channels %d reached: %d VM(s) with metrics are not "
                        "connected (raise <max_channels> in the configuration)",
                        self.config.max_channels, skipped)
        elif not skipped and self._over_limit:
            log.info("virtio: below max_channels again: every VM with metrics can be connected")
        self._over_limit = skipped

    def _schedule_retry(self) -> None:
        """Wake up when the earliest back-off ends."""
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        if len(self._channels) >= self.config.max_channels:
            return  # a closing channel asks for a scan
        now = self.clock()
        waits = [vm.retry_at for vm in self._vms.values() if vm.channel is None and vm.retry_at > now]
        if waits:
            self._retry_timer = self._loop.call_later(min(waits) - now, self._request_scan)

    # inotify: new directories and sockets wake the VM they belong to

    def _watch_top(self) -> None:
        """Watch channel_path, or, while it does not exist, its nearest existing parent."""
        path = str(self.config.channel_path)
        for _ in range(2):
            try:
                self._top_wd = self._inotify.add_watch(path, _WATCH_TOP)
            except OSError as err:
                self._top_wd = None
                if err.errno != errno.ENOENT:
                    log.debug("virtio: cannot watch %s: %s", path, err.strerror)
                    self._unwatch_parent()
                    return  # listing it says why, in the status
                self._set_missing()
                if not self._watch_parent(path):
                    return  # a re-check at each update still finds it
                # Made between the failed watch and the parent's? Look once more.
                continue
            self._unwatch_parent()
            self._dir_appeared()
            return

    def _watch_parent(self, path: str) -> bool:
        """Watch the nearest existing parent of *path* for what leads to it."""
        parent = os.path.dirname(path)
        while True:
            try:
                wd = self._inotify.add_watch(parent, _WATCH_TOP)
            except OSError as err:
                if err.errno == errno.ENOENT and parent != os.path.dirname(parent):
                    parent = os.path.dirname(parent)
                    continue
                log.debug("virtio: cannot watch %s: %s", parent, err.strerror)
                self._unwatch_parent()
                return False
            if wd != self._parent_wd:
                self._unwatch_parent()
                self._parent_wd = wd
            return True

    def _unwatch_parent(self) -> None:
        wd, self._parent_wd = self._parent_wd, None
        if wd is not None and wd != self._top_wd and self._inotify is not None:
            self._inotify.rm_watch(wd)

    def _watch_dir(self, directory: str) -> None:
        """Watch a VM's directory for its socket to appear."""
        name = os.fsencode(os.path.basename(directory))
        if self._inotify is None or name in self._watched_dirs:
            return
        try:
            wd = self._inotify.add_watch(directory, _WATCH_VM_DIR)
        except OSError:
            return  # e.g. out of watches: the back-off retries still find it
        self._dir_watches[wd] = name
        self._watched_dirs[name] = wd

    def _unwatch_dir(self, directory: str) -> None:
        wd = self._watched_dirs.pop(os.fsencode(os.path.basename(directory)), None)
        if wd is not None:
            del self._dir_watches[wd]
            self._inotify.rm_watch(wd)

    def _close_inotify(self) -> None:
        if self._inotify_timer is not None:
            self._inotify_timer.cancel()
            self._inotify_timer = None
        if self._inotify is not None:
            self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        self._top_wd = None
        self._parent_wd = None
        self._dir_watches.clear()
        self._watched_dirs.clear()

    def _on_inotify(self) -> None:
        try:
            events = self._inotify.read()
        except OSError as err:
            # Not expected; without inotify, back-off retries still find sockets.
            log.warning("virtio: reading inotify events failed (%s); not watching any more", err)
            self._close_inotify()
            return
        self._loop.remove_reader(self._inotify.fd)
        self._inotify_timer = self._loop.call_later(INOTIFY_PAUSE, self._resume_inotify)
        wake = rewatch = False
        seen: set[bytes] = set()
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                for vm in self._vms.values():
                    if vm.channel is None:
                        self._wake_vm(vm)
                wake = True
            elif event.mask & IN_IGNORED:
                if event.wd == self._top_wd:
                    self._top_wd = None  # channel_path went away: watch its parent
                    rewatch = True
                elif event.wd == self._parent_wd:
                    self._parent_wd = None  # the parent went away: watch its own parent
                    rewatch = True
                name = self._dir_watches.pop(event.wd, None)
                if name is not None:
                    self._watched_dirs.pop(name, None)
            elif event.wd == self._parent_wd:
                rewatch = True  # a step towards channel_path, perhaps channel_path itself
            elif event.wd == self._top_wd:
                if event.name not in seen:  # the same directory again (churn): one look will do
                    seen.add(event.name)
                    wake |= self._wake(event.name)
            elif event.name == _CHANNEL_NAME_BYTES and event.wd in self._dir_watches:
                wake |= self._wake(self._dir_watches[event.wd])
        if rewatch and self._top_wd is None:
            self._watch_top()
        if wake:
            self._request_scan()

    def _resume_inotify(self) -> None:
        self._inotify_timer = None
        if self._inotify is not None:
            self._loop.add_reader(self._inotify.fd, self._on_inotify)

    def _wake(self, directory: bytes) -> bool:
        """End the back-off of the VM a new directory or socket may belong to."""
        parsed = parse_channel_dir(directory)
        vm = self._by_id.get(parsed[0]) if parsed else None
        if vm is None or vm.channel is not None or not name_matches(parsed[1], vm.domain.name):
            return False
        return self._wake_vm(vm)

    def _wake_vm(self, vm: _Vm) -> bool:
        """Try *vm* as soon as its bounds allow; whether that is sooner than planned.

        A new socket may be QEMU (re)starting, so it cuts short the wait of
        a VM that found no socket or a refusing one, but not sooner than
        WAKE_GAP after the last attempt, and not the back-off of a VM whose
        channel was just closed: a crash-looping QEMU cannot make the daemon
        connect more often than the back-off allows.
        """
        due = max(vm.hold_until, vm.attempted + WAKE_GAP)
        if due >= vm.retry_at:
            return False
        vm.retry_at = due
        return True


def _raise_fd_limit(wanted: int) -> None:
    """Make room for max_channels sockets: the usual soft limit is only 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError) as err:
        new = soft
        log.debug("virtio: cannot raise the open file limit: %s", err)
    if new < wanted:
        log.warning("virtio: the open file limit %d leaves too few descriptors for max_channels %d "
                    "(raise LimitNOFILE)", new, wanted - SPARE_FDS)


def open_virtio(config: Config, current: VirtioTransport | None = None) -> VirtioTransport | None:
    """The channels *config* asks for, reusing *current* (and its channels) when unchanged."""
    if "virtio" not in config.transports:
        return None
    if current is not None and current.config == config.virtio:
        return current
    return VirtioTransport(config.virtio)
