"""The libvirt connection: which VMs run, and their data.

libvirt calls block, so every call runs on one dedicated thread; the asyncio
loop (and with it the virtio channels) never waits on libvirt. A call that
hangs holds only that thread: later updates skip the VMs (and say so) until
it returns, rather than queueing behind it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import libvirt

from .model import Domain

log = logging.getLogger(__name__)

# libvirt prints every error to stderr unless a handler is registered; ours
# are reported as exceptions, with context, by the callers.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class VirtError(Exception):
    """libvirt could not be reached or could not answer."""


class Libvirt:
    """A read-only libvirt connection, (re)opened on demand."""

    def __init__(self, uri: str | None):
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="libvirt")
        self._pending: asyncio.Future | None = None
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def call(self, func, *args):
        """Run ``func(conn, *args)`` on the libvirt thread; raise VirtError on failure."""
        if self._pending is not None and not self._pending.done():
            raise VirtError("a previous libvirt call has not returned yet")
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(self._executor, self._call, func, args)
        return await asyncio.shield(self._pending)

    def _call(self, func, args):
        with self._lock:
            conn = self._connection()
            try:
                return func(conn, *args)
            except libvirt.libvirtError as err:
                self._drop()
                raise VirtError(f"libvirt call failed: {err.get_error_message()}") from None

    def _connection(self) -> libvirt.virConnect:
        if self._conn is None:
            try:
                self._conn = libvirt.openReadOnly(self.uri)
            except libvirt.libvirtError as err:
                raise VirtError(
                    f"cannot open libvirt connection {self.uri or '(default)'}: "
                    f"{err.get_error_message()}"
                ) from None
            log.info("connected to libvirt %s", self.uri or "(default URI)")
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    async def domains(self) -> list[Domain]:
        """The running domains, by id."""
        return await self.call(_list_domains)

    def close(self) -> None:
        """Close the connection; a call still stuck in libvirt is abandoned."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._lock.acquire(blocking=False):
            try:
                self._drop()
            finally:
                self._lock.release()


def _list_domains(conn: libvirt.virConnect) -> list[Domain]:
    found = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    return sorted((Domain(d.ID(), d.name(), d.UUIDString()) for d in found), key=lambda d: d.id)
