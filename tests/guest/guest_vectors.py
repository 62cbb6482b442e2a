"""Test vectors of the guest tests: reference files and disk images."""

import struct
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUEST_DIR = REPO / "guest"
REFERENCE = REPO.parent / "shared" / "reference"


def reference(name):
    """Path of a file the C reference produced; skip when absent."""
    path = REFERENCE / name
    if not path.exists():
        pytest.skip("reference vector {} not found beside the repository".format(path))
    return path


def signed_sum(content):
    """The checksum per the disk format: signed bytes into a wrapping u32."""
    total = 0
    for b in content:
        total += b - 256 if b >= 0x80 else b
    return total & 0xFFFFFFFF


def disk_image(content, size=65536, busy=0, checksum=None, length=None, signature=b"mvbd"):
    """A metrics disk image built independently of the package under test."""
    header = signature + struct.pack(
        ">III",
        busy,
        signed_sum(content) if checksum is None else checksum,
        len(content) if length is None else length,
    )
    image = header + content
    return image + bytes(max(0, size - len(image)))


DOC = (
    b"<metrics>\n"
    b"  <metric type='uint32' context='host'>\n"
    b"    <name>NumCPUs</name>\n"
    b"    <value>4</value>\n"
    b"  </metric>\n"
    b"  <metric type='real64' context='vm' id='3' uuid='6be3fdb8-bef5-6fec-b1b7-e61bbceab708'"
    b" unit='s'>\n"
    b"    <name>TotalCPUTime</name>\n"
    b"    <value>69.400000</value>\n"
    b"  </metric>\n"
    b"</metrics>\n"
)
