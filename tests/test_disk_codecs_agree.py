"""The host's disk codec and the guest package's own copy of it say the same.

The guest package must not depend on the host package (it is installed in
guests alone), so it keeps its own copy of the frozen disk format
(vhostmd_guest.mdisk); this pins the two copies to each other.
"""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from vhostmd.publish import disk_format as host
from vhostmd_guest import mdisk as guest
from vhostmd_guest.errors import DiskBusyError


def test_the_constants_are_the_same():
    assert guest.SIGNATURE == host.SIGNATURE
    assert guest.HEADER_SIZE == host.HEADER_SIZE
    assert guest.MIN_DISK_SIZE == host.SIZE_MIN
    assert guest.MAX_DISK_SIZE == host.SIZE_MAX
    assert guest.SIGNATURE_BYTES == host.encode_header(busy=False, sum=0, length=0)[:4]


@given(st.binary(max_size=4096))
def test_the_checksums_are_the_same(content):
    assert guest.checksum(content) == host.checksum(content)


@given(st.lists(st.binary(max_size=300), max_size=6))
def test_a_sum_of_parts_is_the_guest_checksum_of_the_whole(parts):
    assert host.combine(*map(host.checksum, parts)) == guest.checksum(b"".join(parts))


@given(content=st.binary(max_size=2048), stale=st.binary(max_size=512))
def test_what_the_host_encodes_the_guest_decodes(content, stale):
    header = host.encode_header(busy=False, sum=host.checksum(content), length=len(content))
    # Bytes after the content may be left from an earlier, longer document.
    image = header + content + stale
    assert guest.decode_header(image) == tuple(host.decode_header(image))
    assert guest.decode_image(image) == content

    busy = bytearray(image)
    busy[host.BUSY_OFFSET:host.BUSY_OFFSET + 4] = host.encode_busy(True)
    with pytest.raises(DiskBusyError):
        guest.decode_image(bytes(busy))
