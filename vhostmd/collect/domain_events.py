"""The running domains, kept current from libvirt's lifecycle events.

Listing every domain on every update costs a libvirt round trip per update;
with lifecycle events the list changes only when a domain starts or stops.
On every (re)connection the list is rebuilt from a full listing; events that
arrive while the listing runs are replayed on top of it, which is safe
because applying an event is idempotent (add or remove by UUID).

Events are delivered on libvirt's event-loop thread, the listing runs on the
libvirt call thread: the state is guarded by a lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import libvirt

from ..model import Domain

#: Lifecycle events that make a domain active, and that make it inactive.
_STARTS = frozenset({libvirt.VIR_DOMAIN_EVENT_STARTED})
_STOPS = frozenset({libvirt.VIR_DOMAIN_EVENT_STOPPED})


@dataclass(frozen=True)
class Tracked:
    """A running domain and the libvirt handle the bulk stats call takes."""

    # One per VM: no per-instance dict (by hand, as for model.Domain).
    __slots__ = ("domain", "handle", "raw_uuid")

    domain: Domain
    handle: object
    #: The UUID as 16 bytes (virDomainGetUUID): the cheapest key to match
    #: a bulk stats record to its domain.
    raw_uuid: bytes


class DomainTracker:
    """Running domains by UUID, from a listing plus lifecycle events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._domains: dict[str, Tracked] = {}
        self._pending: list[tuple[int, object]] | None = None
        #: Whether events keep the list current (set once a callback is registered).
        self.live = False
        #: Lifecycle events applied since creation.
        self.events = 0

    def begin_listing(self) -> None:
        """Start a full re-list: queue events until finish_listing()."""
        with self._lock:
            self._pending = []

    def finish_listing(self, handles) -> None:
        """Replace the list with *handles* (running virDomains), then replay queued events."""
        with self._lock:
            self._domains = {}
            for handle in handles:
                self._add(handle)
            pending, self._pending = self._pending or [], None
            for event, handle in pending:
                self._apply(event, handle)

    def on_event(self, event: int, handle) -> None:
        """A lifecycle event for the domain *handle* (from libvirt's event thread)."""
        with self._lock:
            self.events += 1
            if self._pending is not None:
                self._pending.append((event, handle))
            else:
                self._apply(event, handle)

    def _apply(self, event: int, handle) -> None:
        if event in _STARTS:
            self._add(handle)
        elif event in _STOPS:
            self._domains.pop(handle.UUIDString(), None)

    def _add(self, handle) -> None:
        domain = Domain(handle.ID(), handle.name(), handle.UUIDString())
        self._domains[domain.uuid] = Tracked(domain, handle, handle.UUID())

    def tracked(self) -> list[Tracked]:
        """The running domains, by id."""
        with self._lock:
            return sorted(self._domains.values(), key=lambda t: t.domain.id)

    def forget(self, uuids) -> None:
        """Drop domains libvirt reported as no longer running."""
        with self._lock:
            for uuid in uuids:
                self._domains.pop(uuid, None)

    def clear(self) -> None:
        with self._lock:
            self._domains = {}
            self.live = False
