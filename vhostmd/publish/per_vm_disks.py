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

from ..config import Config
from ..files import FileRefused, open_directory, same_file
from ..render import Rendered
from ..state import DiskStatus, TransportStatus
from . import PublishError, disk_format
from .disk import DIR_MODE, DiskError, MetricsDisk

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

    The daemon calls this as root before dropping privileges to -u USER. An
    existing directory must belong to root or *owner* and be writable by
    nobody else: one planted by another user is refused, never adopted.
    Raises OSError with a message naming the directory.
    """
    owners = {os.geteuid()} | ({owner} if owner is not None else set())
    try:
        fd = open_directory(directory, owners=owners, sticky_ok=False,
                            create_mode=DIR_MODE, create_owner=owner)
    except FileRefused as err:
        raise OSError(f"per-VM disk {err}") from None
    try:
        if owner is not None and os.fstat(fd).st_uid != owner:
            os.fchown(fd, owner, -1)  # ours from a run without -u: hand it over
    finally:
        os.close(fd)


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
        #: The directory, opened once and checked: disks are created, written
        #: and removed relative to it, so swapping the path for a symlink
        #: cannot send a create or an unlink elsewhere.
        self._dir_fd = -1
        self._dir_id: os.stat_result | None = None
        #: Why the path no longer names the open directory, while it does not.
        self._dir_problem: str | None = None
        #: The last time the directory was opened again, for status.
        self._dir_note: str | None = None

    async def start(self) -> None:
        # Disks left by an earlier run are adopted, so that they are removed
        # once their VM has been gone long enough, and kept while it runs.
        try:
            if self._dir_fd < 0:  # kept open when reused across a reload
                self._open_directory()
            entries = list(os.scandir(self._dir_fd))
        except (PublishError, OSError) as err:
            log.error("%s", getattr(err, "strerror", None) or err)  # publish() retries
            return
        now = self.clock()
        for entry in entries:
            if _UUID.match(entry.name) and entry.is_file(follow_symlinks=False):
                self._seen.setdefault(entry.name, now)

    async def stop(self) -> None:
        self._close_disks()
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    def _close_disks(self) -> None:
        for disk in self._disks.values():
            disk.close()
        self._disks.clear()  # _used stays: the final status still lists the disks

    def _open_directory(self) -> None:
        try:
            fd = open_directory(self.directory, owners={os.geteuid()}, sticky_ok=False,
                                create_mode=DIR_MODE)
        except FileRefused as err:
            raise PublishError(f"per-VM disk {err}") from None
        if self._dir_fd >= 0:
            self._close_disks()  # re-created in the new directory this update
            os.close(self._dir_fd)
        self._dir_fd, self._dir_id = fd, os.fstat(fd)

    def _check_directory(self) -> None:
        """Notice a directory removed or replaced since it was opened.

        A usable directory at the path again (the admin re-created it, or it
        was removed and is created anew) takes over; otherwise the disks stay
        in the directory opened before, and the error is reported.
        """
        if self._dir_fd < 0:
            self._open_directory()
            return
        try:
            now = os.stat(self.directory, follow_symlinks=False)
            if same_file(now, self._dir_id):
                self._dir_problem = None
                return
            what = "was replaced"
        except PermissionError:
            return  # after -u USER a parent may be closed to us: keep what we hold
        except OSError:
            what = "was removed"
        if self._dir_problem is None:
            log.error("per-VM disk directory %s %s; opening it again", self.directory, what)
        self._dir_problem = what
        try:
            self._open_directory()
        except PublishError as err:
            raise PublishError(f"{err}; the disks stay in the directory opened before") from None
        log.info("per-VM disk directory %s opened again; its disks are re-created", self.directory)
        self._dir_note = (f"per-VM disk directory {self.directory} {what} at "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}; opened again, its disks re-created")
        self._dir_problem = None

    def publish(self, rendered: Rendered) -> None:
        now = self.clock()
        errors: list[str] = []
        try:
            self._check_directory()
        except PublishError as err:
            errors.append(str(err))
        for uuid in rendered.vms:
            self._seen[uuid.lower()] = now
        if self._dir_fd >= 0:
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
            disk = MetricsDisk(disk_path(self.directory, uuid), self.size, dir_fd=self._dir_fd)
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
            if not _UUID.match(uuid):  # never a name with a slash or "..": it would not stay inside
                del self._seen[uuid]
                continue
            try:
                # Relative to the directory opened at start: never followed.
                if not stat.S_ISDIR(os.stat(uuid, dir_fd=self._dir_fd, follow_symlinks=False).st_mode):
                    os.unlink(uuid, dir_fd=self._dir_fd)
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
            notes=(((self._dir_note,) if self._dir_note else ())
                   + tuple(d.recreated_note for d in self._disks.values() if d.recreated_note)),
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
