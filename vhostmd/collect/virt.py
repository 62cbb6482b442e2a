"""The libvirt connection: which VMs run, and their data.

libvirt calls block, so every call runs on one dedicated thread, the thread
of libvirt's event loop (see _submit for why that one); the asyncio loop
(and with it the virtio channels) never waits on libvirt. A call that hangs
holds only that thread: the update waiting for it gives up after
CALL_TIMEOUT and publishes the host metrics, and later updates skip the VMs
(and say so) until it returns, rather than queueing behind it.

Per update the daemon makes one trip to that thread (:meth:`Libvirt.fetch`):
node info when host built-ins need it, and the VMs' figures: one
virDomainGetInfo per running domain, which libvirt answers without asking
QEMU, plus a bulk stats call only for groups info() cannot answer
(:mod:`vhostmd.domain_stats`). The list of running domains comes from
lifecycle events (:mod:`vhostmd.domain_events`), re-listed in full whenever
the connection is (re)opened; libvirt's default event loop delivers those events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import libvirt

from . import domain_stats
from .domain_events import DomainTracker, Tracked
from .domain_stats import DomainSample
from .host_sources import Hypervisor, NodeInfo
from ..model import Domain

log = logging.getLogger(__name__)


def quiet_libvirt() -> None:
    """Stop libvirt printing every error to stderr.

    Ours are reported as exceptions, with context, by the callers. Every
    user of libvirt in the package calls this (it may be called often).
    """
    libvirt.registerErrorHandler(_ignore_error, None)


def _ignore_error(_ctx, _err) -> None:
    pass


quiet_libvirt()

#: How long an update waits for libvirt (a hung libvirtd, say) before it
#: publishes without the VMs.
CALL_TIMEOUT = 15.0
_NOWAIT = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)
_event_loop_lock = threading.Lock()
#: The event loop's timer that runs queued calls (None until the loop runs).
_call_timer: int | None = None
_calls: deque = deque()


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it on a daemon thread (once)."""
    global _call_timer
    with _event_loop_lock:
        if _call_timer is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        _call_timer = libvirt.virEventAddTimeout(-1, _run_calls, None)

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()


def _submit(func, *args) -> Future:
    """Run ``func(*args)`` on the event loop's thread, between two of its polls.

    libvirt stops watching a connection's socket for the length of every
    call and watches it again after. From any other thread each of those
    two changes wakes the event loop (a pipe write, and a poll round on its
    thread); on the loop's own thread they are plain updates. With one
    virDomainGetInfo per domain per update that is hundreds of wake-ups
    saved per update (docs/performance.md, "On a real host").
    """
    start_event_loop()
    future: Future = Future()
    _calls.append((future, func, args))
    libvirt.virEventUpdateTimeout(_call_timer, 0)  # fire at the loop's next round
    return future


def _run_calls(timer: int, _opaque) -> None:
    # Disarmed before the queue is emptied: a call queued after the last
    # look re-arms it, so none is left waiting.
    libvirt.virEventUpdateTimeout(timer, -1)
    while _calls:
        future, func, args = _calls.popleft()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            result = func(*args)
        except BaseException as err:  # handed to the caller, never out into libvirt
            future.set_exception(err)
        else:
            future.set_result(result)


class VirtError(Exception):
    """libvirt could not be reached or could not answer."""


@dataclass
class Fetched:
    """One update's data from libvirt."""

    #: Running domains (with their stats where groups were asked for), by id.
    samples: list[DomainSample] = field(default_factory=list)
    node: NodeInfo | None = None
    hypervisor: Hypervisor | None = None


class Libvirt:
    """A read-only libvirt connection, (re)opened on demand."""

    def __init__(self, uri: str | None, timeout: float | None = None):
        self.uri = uri
        #: Seconds an update waits for a libvirt call before giving up on it.
        self.timeout = CALL_TIMEOUT if timeout is None else timeout
        self._conn: libvirt.virConnect | None = None
        self._pending: asyncio.Future | None = None
        self._job: Future | None = None
        self._lock = threading.Lock()
        self.tracker = DomainTracker()
        self._callback_id: int | None = None
        self._lost = threading.Event()
        self._hypervisor: Hypervisor | None = None
        self._nowait = _NOWAIT
        #: Bulk-only stats groups the driver left out (logged once each).
        self._fallback_logged: set[str] = set()
        #: Groups the driver answered for no domain on this connection. Once
        #: every bulk-only group asked for is among them, the bulk call would
        #: bring only the state, which info() brings too: it is left out.
        self._unanswered: frozenset[str] = frozenset()
        #: Connections opened since creation (each one re-lists the domains).
        self.opened = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def call(self, func, *args):
        """Run ``func(conn, *args)`` on the libvirt thread; raise VirtError on failure."""
        if self._pending is not None and not self._pending.done():
            raise VirtError("a previous libvirt call has not returned yet")
        self._job = _submit(self._call, func, args)
        self._pending = asyncio.wrap_future(self._job)
        try:
            # shield: giving up must not cancel the call, which still holds
            # the thread; the next caller sees it pending instead.
            return await asyncio.wait_for(asyncio.shield(self._pending), self.timeout)
        except asyncio.TimeoutError:
            raise VirtError(f"libvirt did not answer within {self.timeout:g} s") from None

    def _call(self, func, args):
        with self._lock:
            conn = self._connection()
            try:
                return func(conn, *args)
            except libvirt.libvirtError as err:
                self._drop()
                raise VirtError(f"libvirt call failed: {err.get_error_message()}") from None

    def _connection(self) -> libvirt.virConnect:
        if self._lost.is_set():
            log.warning("libvirt connection %s was closed; reconnecting", self.uri or "(default)")
            self._drop()
        if self._conn is None:
            start_event_loop()
            try:
                conn = libvirt.openReadOnly(self.uri)
            except libvirt.libvirtError as err:
                raise VirtError(
                    f"cannot open libvirt connection {self.uri or '(default)'}: "
                    f"{err.get_error_message()}"
                ) from None
            self._conn = conn
            self.opened += 1
            log.info("connected to libvirt %s", self.uri or "(default URI)")
            try:
                self._watch(conn)
                self._relist(conn)
            except libvirt.libvirtError as err:
                self._drop()
                raise VirtError(f"cannot list domains: {err.get_error_message()}") from None
        return self._conn

    def _watch(self, conn: libvirt.virConnect) -> None:
        """Subscribe to lifecycle events and connection loss, where the driver can."""
        self._lost.clear()
        try:
            conn.setKeepAlive(5, 3)
        except libvirt.libvirtError:
            pass  # local drivers have no keepalive
        try:
            conn.registerCloseCallback(lambda _c, _reason, _o: self._lost.set(), None)
        except libvirt.libvirtError:
            pass  # only remote connections can be lost
        tracker = self.tracker
        try:
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                lambda _c, dom, event, _detail, _o: tracker.on_event(event, dom), None,
            )
            tracker.live = True
        except libvirt.libvirtError as err:
            tracker.live = False
            log.info("no lifecycle events (%s): domains are listed on every update",
                     err.get_error_message())

    def _relist(self, conn: libvirt.virConnect) -> None:
        self.tracker.begin_listing()
        handles = ()
        try:
            handles = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        finally:
            self.tracker.finish_listing(handles)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._hypervisor = None
        self._unanswered = frozenset()  # a reconnection may reach an upgraded libvirtd
        self.tracker.clear()
        if conn is None:
            return
        try:
            if self._callback_id is not None:
                conn.domainEventDeregisterAny(self._callback_id)
        except libvirt.libvirtError:
            pass
        self._callback_id = None
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    async def domains(self) -> list[Domain]:
        """The running domains, by id."""
        fetched = await self.fetch(frozenset())
        return [s.domain for s in fetched.samples]

    async def fetch(self, groups: frozenset[str], node: bool = False) -> Fetched:
        """The running domains and their stats *groups*.

        Groups info() answers come from one virDomainGetInfo per domain, and
        the state it reports decides whether a domain still runs (events keep
        the list of domains to ask about current, but one may arrive after
        the update has begun). Groups info() cannot answer take one bulk
        stats call, for those groups alone. With no groups, one bulk call
        for the state alone. With *node*, libvirt's node info and hypervisor
        version are fetched too.
        """
        return await self.call(self._fetch, groups, node)

    def _fetch(self, conn: libvirt.virConnect, groups: frozenset[str], node: bool) -> Fetched:
        fetched = Fetched()
        if node:
            info = conn.getInfo()
            fetched.node = NodeInfo(cpus=info[2], memory_kib=info[1] * 1024)
            if self._hypervisor is None:
                self._hypervisor = Hypervisor(conn.getType(), conn.getVersion())
            fetched.hypervisor = self._hypervisor
        fetched.samples = self._stats(conn, groups)
        return fetched

    def _stats(self, conn: libvirt.virConnect, groups: frozenset[str]) -> list[DomainSample]:
        bulk = domain_stats.bulk_groups(groups)
        if groups and (not bulk or (self.tracker.live and bulk <= self._unanswered)):
            # Everything asked for is info()'s; or the driver has shown that
            # it answers none of the other groups (the fields stay empty).
            return self._infos(self._running(conn))
        mask = domain_stats.flags_for(bulk)
        known: dict[bytes, Domain] = {}
        if self.tracker.live:
            tracked = self.tracker.tracked()
            known = {t.raw_uuid: t.domain for t in tracked}
            handles = [t.handle for t in tracked]
            records = self._bulk(lambda f: conn.domainListGetStats(handles, mask, f)) if handles else []
        else:
            records = self._bulk(lambda f: conn.getAllDomainStats(
                mask, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE | f))
        # An empty answer says nothing about which groups the driver knows.
        missing = domain_stats.unanswered(bulk, records) if records else frozenset()
        if missing - self._fallback_logged:
            log.info("libvirt does not answer stats group(s) %s; their metrics are left out",
                     ", ".join(sorted(missing)))
            self._fallback_logged |= missing
        if records:
            self._unanswered = missing
        with_info = bool(groups - bulk)
        samples, stopped = [], []
        for dom, stats in records:
            info = None
            if with_info:
                info = _info(dom)
                if info is None:
                    continue  # stopped since the bulk call
            sample = domain_stats.parse_record(known.get(dom.UUID()) or _domain(dom), stats, info)
            if sample.running:
                samples.append(sample)
            else:
                stopped.append(sample.domain.uuid)
        if stopped:
            self.tracker.forget(stopped)
        samples.sort(key=_by_id)
        return samples

    def _running(self, conn: libvirt.virConnect) -> list[Tracked]:
        """The running domains by id: from events, or listed now where the driver has none."""
        if self.tracker.live:
            return self.tracker.tracked()
        handles = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        return sorted((Tracked(_domain(h), h, b"") for h in handles), key=lambda t: t.domain.id)

    def _infos(self, tracked) -> list[DomainSample]:
        """Samples from one virDomainGetInfo per tracked domain (already in id order)."""
        samples, stopped = [], []
        from_info = domain_stats.from_info
        for t in tracked:
            info = _info(t.handle)
            sample = from_info(t.domain, info) if info is not None else None
            if sample is not None and sample.running:
                samples.append(sample)
            else:
                stopped.append(t.domain.uuid)  # shut off, or gone since it was tracked
        if stopped:
            self.tracker.forget(stopped)
        return samples

    def _bulk(self, call):
        """Run the bulk stats *call* with NOWAIT, or without where the server refuses it."""
        if self._nowait:
            try:
                return call(self._nowait)
            except libvirt.libvirtError as err:
                if err.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                    raise
                log.info("libvirt refuses the NOWAIT stats flag (%s); not using it",
                         err.get_error_message())
                self._nowait = 0
        return call(0)

    def close(self) -> None:
        """Close the connection; a call still stuck in libvirt is abandoned."""
        if self._job is not None:
            self._job.cancel()  # only if it has not started
        if self._lock.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self._lock.release()


def _info(handle) -> list | None:
    """virDomainGetInfo's answer, or None when the domain no longer exists."""
    try:
        return handle.info()
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _domain(handle) -> Domain:
    return Domain(handle.ID(), handle.name(), handle.UUIDString())


def _by_id(sample: DomainSample) -> int:
    return sample.domain.id
