"""Reading the metrics disk: discovery, the busy/sum protocol, caching.

The host updates the disk in place: it sets busy, rewrites header and
content, then clears busy. A read is kept only when the header read before
the content and the header read after it are equal and not busy, and the
content adds up to the header's checksum. Otherwise it is retried a bounded
number of times and then reported as an error; a torn or corrupt document
is never returned.
"""

import os
import stat
import time
from typing import Callable, List, NamedTuple, Optional

from . import groups
from .blockio import Device
from .document import HOST, Metric, MetricsDocument, Value, parse_document
from .errors import (
    BadSignatureError,
    ChecksumMismatchError,
    DiskBusyError,
    DiskError,
    DiskUnstableError,
    LengthPastEndError,
    NoMetricsDiskError,
    TruncatedDiskError,
)
from .mdisk import (
    HEADER_SIZE,
    SIGNATURE_BYTES,
    Header,
    check_content,
    check_length,
    decode_header,
)

SYS_BLOCK = "/sys/block"
DEV_ROOT = "/dev"

DEFAULT_ATTEMPTS = 5
"""Reads tried before giving up on a busy, changing or corrupt disk."""

DEFAULT_RETRY_WAIT = 1.0
"""Seconds between attempts (the reference waits one second)."""


class DiskSnapshot(NamedTuple):
    """One consistent read of a metrics disk."""

    path: str
    header: Header
    content: bytes


def _sysfs_attr(entry: str, name: str) -> Optional[str]:
    try:
        with open(os.path.join(entry, name)) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def candidate_devices(sys_block: str = SYS_BLOCK, dev_root: str = DEV_ROOT) -> List[str]:
    """Device paths that may hold the metrics disk, most likely first.

    Every entry of ``sys_block`` is named as ``dev_root/<name>`` (a ``!`` in
    the name stands for ``/``). Entries whose sysfs ``size`` is 0 (an empty
    CD-ROM drive, an unbound loop device) are left out; read-only devices,
    as the metrics disk is attached, come first.
    """
    try:
        names = sorted(os.listdir(sys_block))
    except OSError:
        return []
    ranked = []  # type: List[Tuple[bool, str]]
    for name in names:
        entry = os.path.join(sys_block, name)
        if _sysfs_attr(entry, "size") == "0":
            continue
        read_write = _sysfs_attr(entry, "ro") != "1"
        ranked.append((read_write, os.path.join(dev_root, name.replace("!", "/"))))
    return [path for _, path in sorted(ranked, key=lambda r: r[0])]


def has_signature(path: str) -> bool:
    """Whether ``path`` is a block device or file starting with ``mvbd``.

    Anything that cannot be opened or read at once counts as no.
    """
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISBLK(mode) or stat.S_ISREG(mode)):
            return False
        with Device(path) as dev:
            return dev.read(0, len(SIGNATURE_BYTES)) == SIGNATURE_BYTES
    except (OSError, DiskError):
        return False


def find_metrics_disk(sys_block: str = SYS_BLOCK, dev_root: str = DEV_ROOT) -> str:
    """The path of the first device that carries the metrics disk signature.

    Raises :class:`NoMetricsDiskError` when none does.
    """
    tried = candidate_devices(sys_block, dev_root)
    for path in tried:
        if has_signature(path):
            return path
    denied = [p for p in tried if os.path.exists(p) and not os.access(p, os.R_OK)]
    hint = ""
    if denied:
        hint = "; {} could not be opened for lack of permission (run as root?)".format(
            ", ".join(denied)
        )
    if tried:
        where = "tried {}".format(", ".join(tried))
    else:
        where = "{} lists no block device with a medium".format(sys_block)
    raise NoMetricsDiskError(
        "no metrics disk: no block device starts with the metrics disk signature "
        "\"{}\" ({}){}".format(SIGNATURE_BYTES.decode("ascii"), where, hint)
    )


def read_header(path: str) -> Header:
    """The header of the metrics disk at ``path``, read once."""
    with Device(path) as dev:
        return _header_of(dev, dev.size)


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISFIFO, "a pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_kind(dev: Device) -> None:
    """Refuse what cannot hold a metrics disk, naming what it is instead."""
    mode = os.fstat(dev.fd).st_mode
    for test, kind in _KINDS:
        if test(mode):
            raise DiskError("{} is {}, not a metrics disk".format(dev.path, kind))


def _header_of(dev: Device, size: int) -> Header:
    """The header, with the device's name in the error when it is not one."""
    try:
        return decode_header(dev.read(0, HEADER_SIZE))
    except TruncatedDiskError:
        raise TruncatedDiskError(
            "{}: not a metrics disk (it ends after {} bytes, the header needs {})".format(
                dev.path, size, HEADER_SIZE
            )
        ) from None
    except BadSignatureError as err:
        raise BadSignatureError("{}: {}".format(dev.path, err)) from None


def read_disk(
    path: str,
    attempts: int = DEFAULT_ATTEMPTS,
    retry_wait: float = DEFAULT_RETRY_WAIT,
    sleep: Callable[[float], None] = time.sleep,
) -> DiskSnapshot:
    """One consistent read of the metrics disk at ``path``.

    Tries up to ``attempts`` times, ``retry_wait`` seconds apart, while the
    disk is busy, changes during the read, or fails its length or checksum
    check; the same length or checksum failure seen twice in a row under an
    unchanged header is reported at once, as a race cannot explain it.

    Raises :class:`BadSignatureError`, :class:`TruncatedDiskError`,
    :class:`DiskBusyError`, :class:`DiskUnstableError`,
    :class:`LengthPastEndError`, :class:`ChecksumMismatchError` or
    :class:`OSError` when the device cannot be read.
    """
    attempts = max(1, attempts)
    last = None  # type: Optional[Tuple[Header, DiskError]]
    with Device(path) as dev:
        _check_kind(dev)
        size = dev.size
        for attempt in range(attempts):
            if attempt:
                sleep(retry_wait)
            header = _header_of(dev, size)
            try:
                if header.busy:
                    raise DiskBusyError("{}: the busy flag stayed set".format(path))
                check_length(header, size)
                content = dev.read(HEADER_SIZE, header.length)
                after = _header_of(dev, size)
                if after != header:
                    raise DiskUnstableError("{}: the disk changed during every read".format(path))
                check_content(header, content)
                return DiskSnapshot(path, header, content)
            except (LengthPastEndError, ChecksumMismatchError) as err:
                if last is not None and last[0] == header and type(last[1]) is type(err):
                    raise type(err)("{}: {}".format(path, err)) from None
                last = (header, err)
            except (DiskBusyError, DiskUnstableError) as err:
                last = (header, err)
    assert last is not None
    err = last[1]
    why = ""
    if isinstance(err, DiskBusyError):
        why = " (the host began an update and has not finished it)"
    if attempts == 1:
        raise type(err)("{} after 1 attempt{}".format(err, why))
    raise type(err)("{} after {} attempts, {:g} s apart{}".format(err, attempts, retry_wait, why))


class DiskReader:
    """A reader of the metrics disk that re-reads it only when it changed.

    Each request for the document reads the 16-byte header; the content is
    read and parsed again only when the header's checksum or length differs
    from the last read (or the disk is busy). This is libmetrics' behaviour,
    and keeps frequent polling cheap.

    ``device`` names the disk; without it the disk is found by scanning
    ``sys_block`` (see :func:`find_metrics_disk`) on first use, and found
    again if the device stops carrying the signature.

    >>> reader = DiskReader()                                  # doctest: +SKIP
    >>> reader.value("NumCPUs")                                # doctest: +SKIP
    4
    """

    def __init__(
        self,
        device: Optional[str] = None,
        sys_block: str = SYS_BLOCK,
        dev_root: str = DEV_ROOT,
        attempts: int = DEFAULT_ATTEMPTS,
        retry_wait: float = DEFAULT_RETRY_WAIT,
    ) -> None:
        self._device = device
        self._found = None  # type: Optional[str]
        self._sys_block = sys_block
        self._dev_root = dev_root
        self._attempts = attempts
        self._retry_wait = retry_wait
        self._snapshot = None  # type: Optional[DiskSnapshot]
        self._document = None  # type: Optional[MetricsDocument]
        self.reads = 0
        """How many full reads of the content were made (for monitoring)."""

    @property
    def path(self) -> str:
        """The device read, found by scanning if none was given."""
        if self._device is not None:
            return self._device
        if self._found is None:
            self._found = find_metrics_disk(self._sys_block, self._dev_root)
        return self._found

    def snapshot(self) -> DiskSnapshot:
        """The current content, read again only if the header changed."""
        try:
            return self._refresh()
        except (BadSignatureError, OSError):
            if self._device is not None or self._found is None:
                raise
            self._found = None
            return self._refresh()

    def _refresh(self) -> DiskSnapshot:
        path = self.path
        cached = self._snapshot
        if cached is not None and cached.path == path:
            header = read_header(path)
            if not header.busy and (header.sum, header.length) == (
                cached.header.sum, cached.header.length
            ):
                return cached
        snapshot = read_disk(path, self._attempts, self._retry_wait)
        self.reads += 1
        if cached is None or snapshot.content != cached.content:
            self._document = None
        self._snapshot = snapshot
        return snapshot

    def raw(self) -> bytes:
        """The document's bytes, exactly the header's ``length`` bytes."""
        return self.snapshot().content

    def document(self) -> MetricsDocument:
        """The parsed document (raises :class:`DocumentError` if not XML)."""
        content = self.snapshot().content
        if self._document is None:
            self._document = parse_document(content)
        return self._document

    def get(self, name: str, context: str = HOST, uuid: Optional[str] = None) -> Metric:
        """The metric ``name`` in ``context``; see :meth:`MetricsDocument.get`."""
        return self.document().get(name, context, uuid)

    def value(self, name: str, context: str = HOST, uuid: Optional[str] = None) -> Value:
        """The typed value of a metric; see :meth:`MetricsDocument.value`."""
        return self.document().value(name, context, uuid)

    def sap_host(self) -> groups.SapHostMetrics:
        """Host metrics of the SAP set (see :mod:`vhostmd_guest.groups`)."""
        return groups.sap_host_metrics(self.document())

    def sap_vm(self, uuid: Optional[str] = None) -> groups.SapVmMetrics:
        """SAP-set metrics of VM ``uuid``."""
        return groups.sap_vm_metrics(self.document(), uuid)

    def host_memory(self) -> groups.MemoryMetrics:
        """Host memory group (see :mod:`vhostmd_guest.groups`)."""
        return groups.host_memory_metrics(self.document())

    def host_cpu(self) -> groups.CpuMetrics:
        """Host CPU group."""
        return groups.host_cpu_metrics(self.document())

    def vm_memory(self, uuid: Optional[str] = None) -> groups.MemoryMetrics:
        """Memory group of VM ``uuid``."""
        return groups.vm_memory_metrics(self.document(), uuid)

    def vm_cpu(self, uuid: Optional[str] = None) -> groups.CpuMetrics:
        """CPU group of VM ``uuid``."""
        return groups.vm_cpu_metrics(self.document(), uuid)
