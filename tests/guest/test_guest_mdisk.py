import struct

import pytest
from hypothesis import given, strategies as st

from vhostmd_guest import mdisk
from vhostmd_guest.errors import (
    BadSignatureError,
    ChecksumMismatchError,
    DiskBusyError,
    LengthPastEndError,
    TruncatedDiskError,
)

from guest_vectors import disk_image, reference, signed_sum


@given(st.binary(max_size=4096))
def test_checksum_is_the_signed_byte_sum(content):
    assert mdisk.checksum(content) == signed_sum(content)


def test_checksum_wraps_at_32_bits():
    content = b"\xff" * 10
    assert mdisk.checksum(content) == (2 ** 32 - 10)


def test_decode_header_fields():
    header = mdisk.decode_header(b"mvbd" + struct.pack(">III", 1, 0xDEADBEEF, 77) + b"rest")
    assert header == (mdisk.SIGNATURE, 1, 0xDEADBEEF, 77)
    assert header.busy == 1 and header.length == 77


def test_decode_header_rejects_short_and_unsigned_data():
    with pytest.raises(TruncatedDiskError, match="only 10 bytes"):
        mdisk.decode_header(b"mvbd" + bytes(6))
    with pytest.raises(BadSignatureError, match="bad signature"):
        mdisk.decode_header(b"MVBD" + bytes(12))


def test_reference_10vm_disk_verifies():
    image = reference("c-vhostmd-10vms.disk").read_bytes()
    header = mdisk.decode_header(image)
    assert (header.sum, header.length) == (0x00038DF3, 3068)
    content = mdisk.decode_image(image)
    assert len(content) == 3068 and content.endswith(b"</metrics>\n")


def test_reference_unescaped_disk_has_the_signed_sum():
    image = reference("c-vhostmd-unescaped.disk").read_bytes()
    header = mdisk.decode_header(image)
    content = image[16:16 + header.length]
    assert "café".encode("utf-8") in content
    assert header.sum == 0x0002CCDD == mdisk.checksum(content)
    assert sum(content) & 0xFFFFFFFF == 0x0002CEDD  # an unsigned sum would not match
    assert mdisk.decode_image(image) == content


@pytest.mark.parametrize(
    "image, error, message",
    [
        (disk_image(b"<metrics/>", busy=1), DiskBusyError, "busy"),
        (disk_image(b"<metrics/>", size=1024, length=1009), LengthPastEndError, "1009"),
        (disk_image(b"<metrics/>", checksum=5), ChecksumMismatchError, "0x00000005"),
        (disk_image(b"<metrics/>", signature=b"\0\0\0\0"), BadSignatureError, "signature"),
    ],
)
def test_decode_image_errors(image, error, message):
    with pytest.raises(error, match=message):
        mdisk.decode_image(image)


def test_length_exactly_filling_the_disk_is_fine():
    content = b"x" * (1024 - 16)
    assert mdisk.decode_image(disk_image(content, size=1024)) == content
