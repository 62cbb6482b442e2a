"""The metrics disk format: pure functions, bytes in and values out.

Layout: a 16-byte header of four big-endian unsigned 32-bit fields
(signature ``mvbd``, busy flag, checksum, content length), then ``length``
bytes of content, the metrics XML document. Bytes after the content may
hold stale data from an earlier, longer document.

Nothing here does I/O; :mod:`vhostmd_guest.disk` reads devices and uses
these functions to judge what it read.
"""

import struct
from typing import NamedTuple

from .errors import (
    BadSignatureError,
    ChecksumMismatchError,
    DiskBusyError,
    LengthPastEndError,
    TruncatedDiskError,
)

SIGNATURE = 0x6D766264
"""The header's first field: the bytes ``mvbd``."""

SIGNATURE_BYTES = b"mvbd"

HEADER_SIZE = 16
"""Size of the header in bytes."""

MIN_DISK_SIZE = 1024
"""Smallest metrics disk a host may create (1 KiB)."""

MAX_DISK_SIZE = 256 * 1024 * 1024
"""Largest metrics disk a host may create (256 MiB)."""

_HEADER = struct.Struct(">IIII")
_HIGH_BYTES = bytes(range(0x80, 0x100))


class Header(NamedTuple):
    """The four fields of a metrics disk header."""

    signature: int
    busy: int
    sum: int
    length: int


def decode_header(data: bytes) -> Header:
    """Decode the header at the start of ``data``.

    Raises :class:`TruncatedDiskError` when ``data`` holds fewer than 16
    bytes and :class:`BadSignatureError` when the signature is wrong.

    >>> decode_header(b"mvbd" + bytes(8) + b"\\x00\\x00\\x00\\x05")
    Header(signature=1836474980, busy=0, sum=0, length=5)
    """
    if len(data) < HEADER_SIZE:
        raise TruncatedDiskError(
            "only {} bytes, a metrics disk header needs {}".format(len(data), HEADER_SIZE)
        )
    header = Header(*_HEADER.unpack_from(data))
    if header.signature != SIGNATURE:
        raise BadSignatureError(
            "not a metrics disk (bad signature {}, expected \"{}\")".format(
                describe_signature(bytes(data[:4])), SIGNATURE_BYTES.decode("ascii")
            )
        )
    return header


def describe_signature(first: bytes) -> str:
    """The first bytes of a device as a person reads them in a message:
    quoted text when they are printable ASCII, else hexadecimal.

    >>> describe_signature(b"nope"), describe_signature(b"\\x00\\x01\\x02\\xff")
    ('"nope"', '0x000102ff')
    """
    if first and all(0x20 <= b < 0x7F and b != 0x22 for b in first):
        return '"{}"'.format(first.decode("ascii"))
    return "0x" + first.hex()


def checksum(content: bytes) -> int:
    """The checksum of ``content`` as the reference host computes it.

    Each byte counts as a *signed* 8-bit number (0x80..0xff are -128..-1),
    summed into an unsigned 32-bit accumulator that wraps. For ASCII content
    this is the plain byte sum.

    >>> checksum(b"abc")
    294
    >>> hex(checksum("café".encode("utf-8")))
    '0x96'
    """
    high = len(content) - len(bytes(content).translate(None, _HIGH_BYTES))
    return (sum(content) - 256 * high) & 0xFFFFFFFF


def check_length(header: Header, device_size: int) -> None:
    """Raise :class:`LengthPastEndError` unless the content fits the device."""
    room = device_size - HEADER_SIZE
    if header.length > room:
        raise LengthPastEndError(
            "header length {} runs past the end of the device "
            "({} bytes leave room for {})".format(header.length, device_size, max(room, 0))
        )


def check_content(header: Header, content: bytes) -> None:
    """Check that ``content`` is the whole content the header announces.

    Raises :class:`TruncatedDiskError` when it is shorter than ``length`` and
    :class:`ChecksumMismatchError` when its checksum differs from ``sum``.
    """
    if len(content) != header.length:
        raise TruncatedDiskError(
            "content has {} bytes, the header announces {}".format(len(content), header.length)
        )
    actual = checksum(content)
    if actual != header.sum:
        raise ChecksumMismatchError(
            "checksum mismatch: header says 0x{:08x}, content sums to 0x{:08x}".format(
                header.sum, actual
            )
        )


def decode_image(image: bytes) -> bytes:
    """Return the verified content of a whole disk image held in memory.

    The image is taken as it is: a set busy flag is not waited for but
    reported as :class:`~vhostmd_guest.errors.DiskBusyError`.
    """
    header = decode_header(image)
    if header.busy:
        raise DiskBusyError("the busy flag is set")
    check_length(header, len(image))
    content = bytes(image[HEADER_SIZE:HEADER_SIZE + header.length])
    check_content(header, content)
    return content
