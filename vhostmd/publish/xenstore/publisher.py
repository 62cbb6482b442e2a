"""The xenstore transport: each Xen domain's metrics at ``/local/domain/<id>/metrics``.

Every update, each running VM's document (the host metrics and that VM's
own, in the metrics disk's shape) is written as one value to its domain's
xenstore directory, where the guest reads it with ``vm-dump-metrics -x``.
libxl creates that directory as ``n0,r<id>`` (dom0 owns it, the guest may
read it); a new node inherits this, so the daemon sets no permissions.

Unlike the C vhostmd, a document is written only:

- inside one transaction that first checks ``/local/domain/<id>/vm`` names
  the VM's UUID, so that a domain destroyed in between cannot get its
  directory re-created (xenstored refuses the commit, and the retry sees the
  domain gone);
- when the permissions it inherits (checked once per domain and connection)
  let the guest read and no domain but dom0 write;
- when it changed since it was last written;
- when it fits ``<xenstore><max_size>`` (by default xenstored's own quota,
  2048 bytes): a larger one is reported, never written in part.

A lost connection to xenstored is reported once and retried at the next
update; nothing here blocks longer than the client's timeout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ...config import Config
from ...model import Domain
from ...render import Rendered
from ...state import DiskStatus, TransportStatus
from .. import PublishError
from ..capacity import estimate
from .client import Client, ConnectionLost
from .wire import Access, Op, Perms, ProtocolError, XenstoreError

log = logging.getLogger(__name__)

#: How long one request may take before xenstored counts as unreachable.
REQUEST_TIMEOUT = 2.0
#: Commits refused because the domain's entries changed meanwhile, before giving up.
TRANSACTION_ATTEMPTS = 3
#: What one checked write did.
WRITTEN, RETRY, ABSENT = "written", "retry", "absent"


@dataclass
class _Domain:
    """What is known about one domain's xenstore directory on this connection."""

    uuid: str
    home: str
    #: The permissions were checked and let the guest read, nobody else write.
    perms_ok: bool = False
    #: The document last written there.
    written: bytes | None = None


class _Refused(Exception):
    """This domain's document is not written; the message says why (stable per cause)."""


def perms_problem(perms: Perms, domid: int) -> str | None:
    """Why *perms* are wrong for domain *domid*'s metrics, or None when they are right.

    Right is what libxl sets: dom0 owns the node, other domains get nothing
    by default, the guest may read, and no domain but dom0 may write.
    """
    if perms.owner != 0:
        return f"owned by domain {perms.owner}, not dom0"
    if perms.default is not Access.NONE:
        return f"every domain may {'write' if perms.default.writes else 'read'} it"
    writers = [p.domid for p in perms.listed if p.access.writes and p.domid != 0]
    if writers:
        return f"domain {', '.join(map(str, writers))} may write it"
    if not perms.access_of(domid).reads:
        return f"domain {domid} may not read it"
    return None


class XenstorePublisher:
    """Writes each running VM's document to its Xen domain's xenstore directory."""

    name = "xenstore"

    def __init__(self, max_size: int, client: Client | None = None):
        self.max_size = max_size
        self.client = client or Client(timeout=REQUEST_TIMEOUT)
        self._domains: dict[int, _Domain] = {}
        #: VMs over the limit: uuid → the size first seen (keeps the message stable).
        self._oversize: dict[str, int] = {}
        #: Domains libvirt lists that xenstore does not know, already logged.
        self._unknown: set[int] = set()
        self._lost = False
        self._used: dict[str, int] = {}
        self._errors: tuple[str, ...] = ()
        #: The per-VM problems of the last update, already logged.
        self._logged: set[str] = set()

    async def start(self) -> None:
        try:
            self.client.connect()
        except ConnectionLost:
            pass  # publish() connects again and reports it

    async def stop(self) -> None:
        self.client.close()

    def publish(self, rendered: Rendered) -> None:
        errors: list[str] = []
        used: dict[str, int] = {}
        try:
            self._connect()
            for uuid, domain in rendered.domains.items():
                document = rendered.document_for(uuid)[0]
                home = f"/local/domain/{domain.id}"
                if not self._fits(domain, home, len(document), errors):
                    used[f"{home}/metrics"] = len(document)
                    continue
                try:
                    if self._publish_one(domain, uuid, document):
                        used[f"{self._domains[domain.id].home}/metrics"] = len(document)
                except _Refused as why:
                    errors.append(str(why))
                except XenstoreError as err:
                    errors.append(self._refusal(domain, err))
                except ProtocolError as err:  # e.g. an id that is not a Xen domid
                    errors.append(f"xenstore: VM {domain.name} (id {domain.id}): {err}")
        except ConnectionLost as err:
            self._connection_lost()
            lost = f"xenstore: {err}; retrying at the next update"
        else:
            lost = None
        if rendered.vms_known:
            self._forget({d.id for d in rendered.domains.values()}, set(rendered.domains))
        self._used = used
        # Each VM's problem is logged when it appears, not every update; the
        # update's error is a summary, so that hundreds of VMs over the
        # limit make one line there.
        for line in errors:
            if line not in self._logged:
                log.warning("%s", line)
        self._logged = set(errors)
        self._errors = tuple(errors) + ((lost,) if lost else ())
        summary = [lost] if lost else []
        if errors:
            count = "1 VM document" if len(errors) == 1 else f"{len(errors)} VM documents"
            summary.insert(0, f"xenstore: {count} not written (see the log or 'vhostmd status')")
        if summary:
            raise PublishError("; ".join(summary))

    def status(self) -> TransportStatus:
        return TransportStatus(
            name=self.name,
            disks=tuple(DiskStatus(path, self.max_size, size) for path, size in sorted(self._used.items())),
            errors=self._errors,
            kind="values",
        )

    # --- one domain -----------------------------------------------------------------

    def _connect(self) -> None:
        if self.client.connected:
            return
        self.client.connect()
        if self._lost:
            log.info("connected to xenstored at %s again", self.client.connected_to)
            self._lost = False

    def _connection_lost(self) -> None:
        self.client.close()
        self._lost = True
        # A restarted xenstored knows nothing of what was written or checked.
        self._domains.clear()

    def _fits(self, domain: Domain, home: str, size: int, errors: list[str]) -> bool:
        if size <= self.max_size:
            if self._oversize.pop(domain.uuid, None) is not None:
                log.info("xenstore: VM %s's document fits again (%d of %d bytes)",
                         domain.name, size, self.max_size)
            return True
        first = self._oversize.setdefault(domain.uuid, size)
        errors.append(
            f"xenstore: VM {domain.name}'s document of {first} bytes is over the limit of "
            f"{self.max_size} bytes (<xenstore><max_size>); not written to {home}/metrics"
        )
        return False

    def _publish_one(self, domain: Domain, uuid: str, document: bytes) -> bool:
        """Write *document* if it changed; False when xenstore has no such domain."""
        state = self._domains.get(domain.id)
        if state is None or state.uuid != uuid:
            state = _Domain(uuid, self.client.get_domain_path(domain.id))
            self._domains[domain.id] = state
        if state.written == document:
            return True
        for _ in range(TRANSACTION_ATTEMPTS):
            outcome = self._write_checked(domain, state, document)
            if outcome == WRITTEN:
                state.written = document
                self._unknown.discard(domain.id)
                return True
            if outcome == ABSENT:
                return False
        raise XenstoreError("EAGAIN", Op.WRITE, f"{state.home}/metrics")

    def _write_checked(self, domain: Domain, state: _Domain, document: bytes) -> str:
        """Check the domain is this VM and write, in one transaction."""
        xs = self.client
        tx = xs.transaction_start()
        committed = False
        try:
            try:
                vm = xs.read(f"{state.home}/vm", tx).decode("utf-8", "replace")
            except XenstoreError as err:
                if err.errno != "ENOENT":
                    raise
                self._not_in_xenstore(domain, state)
                return ABSENT
            if vm.rsplit("/", 1)[-1].lower() != state.uuid.lower():
                raise _Refused(
                    f"xenstore: {state.home}/vm is {vm!r}, not VM {domain.name}'s UUID "
                    f"{state.uuid}; its metrics are not written there")
            if not state.perms_ok:
                self._check_perms(domain, state, tx)
            xs.write(f"{state.home}/metrics", document, tx)
            committed = True
            # Refused (EAGAIN) when the domain's entries changed meanwhile.
            return WRITTEN if xs.transaction_end(tx, commit=True) else RETRY
        finally:
            if not committed and xs.connected:
                try:
                    xs.transaction_end(tx, commit=False)
                except XenstoreError:
                    pass

    def _check_perms(self, domain: Domain, state: _Domain, tx: int) -> None:
        path = f"{state.home}/metrics"
        try:
            perms = self.client.get_perms(path, tx)
        except XenstoreError as err:
            if err.errno != "ENOENT":
                raise
            path = state.home  # a new node inherits its parent's permissions
            perms = self.client.get_perms(path, tx)
        why = perms_problem(perms, domain.id)
        if why is not None:
            raise _Refused(
                f"xenstore: {path} has permissions {perms} ({why}); VM {domain.name}'s "
                f"metrics are not written there (libxl sets n0,r{domain.id}: dom0 owns it, "
                f"the guest only reads)")
        state.perms_ok = True

    def _not_in_xenstore(self, domain: Domain, state: _Domain) -> None:
        # A domain being created or destroyed, or one that is not Xen's: never
        # create its directory; say so once.
        state.written = None
        if domain.id not in self._unknown:
            self._unknown.add(domain.id)
            log.warning("xenstore: VM %s (id %d) has no %s/vm; its metrics are not written "
                        "until it does", domain.name, domain.id, state.home)

    def _refusal(self, domain: Domain, err: XenstoreError) -> str:
        if err.errno == "E2BIG":
            return (f"xenstore: xenstored refused VM {domain.name}'s document at {err.path} "
                    f"(E2BIG): its quota (quota-maxsize) is below <xenstore><max_size> "
                    f"{self.max_size}")
        return f"xenstore: VM {domain.name}: {err}"

    def _forget(self, ids: set[int], uuids: set[str]) -> None:
        for domid in [d for d in self._domains if d not in ids]:
            del self._domains[domid]
        self._unknown &= ids
        for uuid in [u for u in self._oversize if u not in uuids]:
            del self._oversize[uuid]


def describe(config: Config) -> str:
    """What ``--check`` says: how close one VM's document comes to the limit."""
    cap = estimate(config)
    size = cap.host_bytes + cap.vm_bytes
    limit = config.xenstore.max_size
    line = (f"xenstore: each VM's document to /local/domain/<id>/metrics, about {size} "
            f"of {limit} bytes ({size / limit:.0%} of <xenstore><max_size>)")
    if cap.unsized:
        line += f"; {cap.unsized} xml metric(s) not counted"
    return line


OVER_LIMIT = ("VM documents will be over the xenstore limit and not written: configure fewer "
              "metrics or raise <xenstore><max_size> (and xenstored's quota-maxsize with it)")


def over_limit(config: Config) -> bool:
    """Whether one VM's document, as estimated, is over ``<xenstore><max_size>``."""
    cap = estimate(config)
    return cap.host_bytes + cap.vm_bytes > config.xenstore.max_size


def open_xenstore(config: Config, current: XenstorePublisher | None = None
                  ) -> XenstorePublisher | None:
    """The xenstore publisher *config* asks for, if any.

    *current* is kept across a reload with its connection and what it
    wrote; a new limit applies from the next update.
    """
    if "xenstore" not in config.transports:
        return None
    if current is not None:
        current.max_size = config.xenstore.max_size
        return current
    return XenstorePublisher(config.xenstore.max_size)
