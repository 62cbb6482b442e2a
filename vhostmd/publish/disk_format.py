"""The metrics disk format: pure functions, bytes in and bytes out.

Layout (all header fields unsigned 32-bit big-endian)::

    0  signature  0x6d766264 ("mvbd")
    4  busy       1 while the writer updates, else 0
    8  sum        checksum of the content
    12 length     content length in bytes
    16 content    the metrics XML document

The file I/O lives in :mod:`vhostmd.publish.disk`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

SIGNATURE = 0x6D766264
HEADER = struct.Struct(">IIII")
HEADER_SIZE = HEADER.size
BUSY_OFFSET = 4
#: The sizes a disk may be configured with, in bytes (header included).
SIZE_MIN = 1024
SIZE_MAX = 256 * 1024 * 1024
_HIGH_BYTES = bytes(range(0x80, 0x100))


class Header(NamedTuple):
    signature: int
    busy: int
    sum: int
    length: int


def checksum(content: bytes) -> int:
    """The C daemon's checksum: every byte added as a *signed* char, mod 2**32.

    Bytes 0x80..0xff count as -128..-1, so each of them adds 256 less than
    its unsigned value.
    """
    high = len(content) - len(content.translate(None, _HIGH_BYTES))
    return (sum(content) - 256 * high) & 0xFFFFFFFF


def combine(*sums: int) -> int:
    """The checksum of concatenated parts, from the parts' checksums."""
    return sum(sums) & 0xFFFFFFFF


def encode_header(*, busy: bool, sum: int, length: int) -> bytes:
    return HEADER.pack(SIGNATURE, int(busy), sum, length)


def encode_busy(busy: bool) -> bytes:
    """The 4 bytes of the busy field alone."""
    return struct.pack(">I", int(busy))


def decode_header(data: bytes) -> Header:
    """Decode the first 16 bytes of *data*; raises ValueError if it is short."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"header needs {HEADER_SIZE} bytes, got {len(data)}")
    return Header(*HEADER.unpack_from(data))


def capacity(disk_size: int) -> int:
    """The largest content a disk of *disk_size* bytes can hold."""
    return disk_size - HEADER_SIZE
