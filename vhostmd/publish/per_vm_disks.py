"""Per-VM metrics disks: one disk per running VM, holding only its own metrics.

With the shared disk every guest given it sees every other VM's name, UUID
and metrics. In per-VM mode (``<disk><per_vm>DIR</per_vm></disk>``) the
daemon writes ``DIR/<uuid>`` for each running VM, with the host metrics and
that VM's metrics only, in the same format and with the same busy/sum
protocol as the shared disk. A disk is created when its VM first appears and
removed once the VM has been gone for ``expiration_time`` seconds.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Callable

from . import disk_format
from ..config import Config
from .disk import DIR_MODE, DiskError, MetricsDisk
from . import PublishError
from ..render import Rendered
from ..state import DiskStatus, TransportStatus

log = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def disk_path(directory: Path, uuid: str) -> Path:
    """Where VM *uuid*'s disk lives; ValueError for a string that is not a UUID."""
    uuid = uuid.lower()
    if not _UUID.match(uuid):
        raise ValueError(f"{uuid!r} is not a UUID")
    return Path(directory) / uuid


def prepare_directory(directory: Path, owner: int | None = None) -> None:
    """Create *directory* (0700) if missing, owned by *owner* when given.

    The daemon calls this as root before dropping privileges to -u USER.
    Raises OSError with a message naming the directory.
    """
    try:
        os.makedirs(directory, DIR_MODE)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            raise OSError(f"per-VM disk directory {directory} is not a directory; refusing to use it") from None
    except OSError as err:
        raise OSError(f"cannot create per-VM disk directory {directory}: {err.strerror}") from None
    else:
        if owner is not None:
            os.chown(directory, owner, -1)


class PerVmDiskPublisher:
    """Keeps ``DIR/<uuid>`` up to date for every running VM."""

    name = "vbd-per-vm"

    def __init__(
        self, directory: Path, size: int, expiration: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.directory = Path(directory)
        self.size = size
        self.expiration = expiration
        #: Time source for expiry (monotonic seconds); replaceable for tests.
        self.clock = clock
        self._disks: dict[str, MetricsDisk] = {}
        self._used: dict[str, int] = {}
        #: When each VM was last seen running (clock time).
        self._seen: dict[str, float] = {}
        self._errors: tuple[str, ...] = ()

    async def start(self) -> None:
        # Disks left by an earlier run are adopted, so that they are removed
        # once their VM has been gone long enough, and kept while it runs.
        try:
            self._prepare_directory()
            entries = list(os.scandir(self.directory))
        except (PublishError, OSError) as err:
            log.error("%s", getattr(err, "strerror", None) or err)  # publish() retries
            return
        now = self.clock()
        for entry in entries:
            if _UUID.match(entry.name) and entry.is_file(follow_symlinks=False):
                self._seen.setdefault(entry.name, now)

    async def stop(self) -> None:
        for disk in self._disks.values():
            disk.close()
        self._disks.clear()  # _used stays: the final status still lists the disks

    def _prepare_directory(self) -> None:
        try:
            prepare_directory(self.directory)
        except OSError as err:
            raise PublishError(str(err)) from None

    def publish(self, rendered: Rendered) -> None:
        now = self.clock()
        errors: list[str] = []
        for uuid in rendered.vms:
            self._seen[uuid.lower()] = now
        for uuid in self._seen:
            if now - self._seen[uuid] >= self.expiration:
                continue
            try:
                self._publish_one(rendered, uuid)
            except (DiskError, ValueError) as err:
                errors.append(str(err))
        # While the VM list is unknown (libvirt unreachable) nobody is gone.
        if rendered.vms_known:
            self._expire(now)
        self._errors = tuple(errors)
        if errors:
            raise PublishError("; ".join(errors))

    def _publish_one(self, rendered: Rendered, uuid: str) -> None:
        disk = self._disks.get(uuid)
        if disk is None:
            try:
                self._prepare_directory()
            except PublishError as err:
                raise DiskError(str(err)) from None
            disk = MetricsDisk(disk_path(self.directory, uuid), self.size)
            self._disks[uuid] = disk
            log.info("created per-VM metrics disk %s", disk.path)
        content, checksum = rendered.document_for(_original_case(rendered, uuid))
        disk.publish(content, checksum)
        self._used[uuid] = len(content) + disk_format.HEADER_SIZE

    def _expire(self, now: float) -> None:
        for uuid in [u for u, seen in self._seen.items() if now - seen >= self.expiration]:
            disk = self._disks.pop(uuid, None)
            if disk is not None:
                disk.close()
            path = self.directory / uuid
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    os.unlink(path)
                    log.info("removed per-VM metrics disk %s: its VM is gone", path)
            except FileNotFoundError:
                pass
            except OSError as err:
                log.warning("cannot remove per-VM metrics disk %s: %s", path, err.strerror)
                continue
            del self._seen[uuid]
            self._used.pop(uuid, None)

    def status(self) -> TransportStatus:
        return TransportStatus(
            name=self.name,
            disks=tuple(
                DiskStatus(str(self.directory / uuid), self.size, used)
                for uuid, used in sorted(self._used.items())
            ),
            errors=self._errors,
        )


def open_per_vm_disks(config: Config, current: PerVmDiskPublisher | None = None
                      ) -> PerVmDiskPublisher | None:
    """The per-VM disks *config* asks for, reusing *current* when they are the same.

    Reused, the disks stay open and keep their documents across a reload,
    so guests never see them empty.
    """
    if "vbd" not in config.transports or config.disk.per_vm_dir is None:
        return None
    if (current is not None and current.directory == Path(config.disk.per_vm_dir)
            and current.size == config.disk.size):
        current.expiration = config.vm_expiration
        return current
    return PerVmDiskPublisher(config.disk.per_vm_dir, config.disk.size,
                              config.vm_expiration)


def prepare_per_vm_disks(config: Config, owner: int | None) -> None:
    """Make the directory *config* asks for (if any), owned by *owner* (see prepare_directory)."""
    if "vbd" in config.transports and config.disk.per_vm_dir is not None:
        prepare_directory(config.disk.per_vm_dir, owner)


def _original_case(rendered: Rendered, uuid: str) -> str:
    """The key *rendered* uses for *uuid* (libvirt gives lower case, but be sure)."""
    if uuid in rendered.vms:
        return uuid
    return next((u for u in rendered.vms if u.lower() == uuid), uuid)
