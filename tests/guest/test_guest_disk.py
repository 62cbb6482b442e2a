import os
import struct

import pytest

from vhostmd_guest import DiskReader, DocumentError, find_metrics_disk, read_disk
from vhostmd_guest.blockio import BLOCK_SIZE, Device
from vhostmd_guest.disk import candidate_devices, has_signature
from vhostmd_guest.errors import (
    BadSignatureError,
    ChecksumMismatchError,
    DiskBusyError,
    DiskUnstableError,
    LengthPastEndError,
    NoMetricsDiskError,
    TruncatedDiskError,
)

from guest_vectors import DOC, disk_image, reference, signed_sum

FAST = dict(attempts=4, retry_wait=0.001)


def set_header(path, busy=None, checksum=None, length=None):
    """Rewrite header fields in place, as the host does."""
    with open(path, "r+b") as f:
        f.seek(4)
        old = struct.unpack(">III", f.read(12))
        new = [old[0] if busy is None else busy,
               old[1] if checksum is None else checksum,
               old[2] if length is None else length]
        f.seek(4)
        f.write(struct.pack(">III", *new))


def test_reads_a_good_disk(make_disk):
    snapshot = read_disk(str(make_disk()), **FAST)
    assert snapshot.content == DOC
    assert snapshot.header.sum == signed_sum(DOC)


def test_reference_disks_read_byte_for_byte():
    for name in ("c-vhostmd-10vms.disk", "c-vhostmd-unescaped.disk"):
        path = reference(name)
        image = path.read_bytes()
        length = struct.unpack(">I", image[12:16])[0]
        assert read_disk(str(path), **FAST).content == image[16:16 + length]


def test_bad_signature(make_disk):
    with pytest.raises(BadSignatureError, match="signature"):
        read_disk(str(make_disk(signature=b"xxxx")), **FAST)


def test_busy_forever_gives_up_after_bounded_attempts(make_disk):
    waits = []
    with pytest.raises(DiskBusyError, match="busy flag stayed set.*after 4 attempts"):
        read_disk(str(make_disk(busy=1)), attempts=4, retry_wait=0.25, sleep=waits.append)
    assert waits == [0.25] * 3


def test_length_past_the_end(make_disk):
    with pytest.raises(LengthPastEndError, match="runs past the end"):
        read_disk(str(make_disk(size=1024, length=2000)), **FAST)


def test_checksum_mismatch_is_reported_without_waiting_out_every_attempt(make_disk):
    waits = []
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch"):
        read_disk(str(make_disk(checksum=1)), attempts=50, retry_wait=1.0, sleep=waits.append)
    assert len(waits) == 1


def test_truncated_file(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"mvbd\0\0")
    with pytest.raises(TruncatedDiskError, match="ends after 6 bytes"):
        read_disk(str(path), **FAST)


def test_truncated_copy_of_the_reference_disk(tmp_path):
    path = tmp_path / "cut"
    path.write_bytes(reference("c-vhostmd-10vms.disk").read_bytes()[:2000])
    with pytest.raises(LengthPastEndError, match="3068"):
        read_disk(str(path), **FAST)


def test_content_that_is_not_xml(make_disk):
    path = make_disk(b"this is not <xml")
    reader = DiskReader(str(path), **FAST)
    assert reader.raw() == b"this is not <xml"
    with pytest.raises(DocumentError, match="not well-formed XML"):
        reader.document()


def test_smallest_disk(make_disk):
    content = DOC[:]
    path = make_disk(content, size=1024)
    assert os.path.getsize(str(path)) == 1024
    assert read_disk(str(path), **FAST).content == content


def test_largest_disk_sparse(tmp_path):
    path = tmp_path / "big"
    with open(str(path), "wb") as f:
        f.write(disk_image(DOC, size=0))
        f.truncate(256 * 1024 * 1024)
    assert read_disk(str(path), **FAST).content == DOC


def test_content_at_the_end_of_a_large_disk(tmp_path):
    path = tmp_path / "full"
    size = 3 * BLOCK_SIZE + 512
    content = b"<metrics>" + b" " * (size - 16 - 21) + b"</metrics>\n"
    path.write_bytes(disk_image(content, size=size))
    assert read_disk(str(path), **FAST).content == content


def test_disk_that_changes_between_reads(make_disk):
    path = make_disk(busy=1)
    new = DOC.replace(b">4<", b">8<")

    def host_finishes_update(_seconds):
        path.write_bytes(disk_image(new))

    snapshot = read_disk(str(path), attempts=3, retry_wait=0.1, sleep=host_finishes_update)
    assert snapshot.content == new


def test_disk_changing_during_every_read_is_an_error(make_disk, monkeypatch):
    path = make_disk()
    real_read = Device.read
    calls = [0]

    def read(self, offset, length):
        data = real_read(self, offset, length)
        calls[0] += 1
        if offset == 16:  # the host updates the disk while its content is read
            set_header(str(path), checksum=calls[0])
        return data

    monkeypatch.setattr(Device, "read", read)
    with pytest.raises(DiskUnstableError, match="changed during every read.*3 attempts"):
        read_disk(str(path), attempts=3, retry_wait=0)


def test_reads_from_tmpfs_where_o_direct_is_refused():
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    path = "/dev/shm/vhostmd-guest-test-{}".format(os.getpid())
    with open(path, "wb") as f:
        f.write(disk_image(DOC, size=4096))
    try:
        with Device(path) as dev:
            assert dev.read(16, len(DOC)) == DOC
        assert read_disk(path, **FAST).content == DOC
    finally:
        os.unlink(path)


def test_direct_reads_at_unaligned_offsets(make_disk):
    path = make_disk(size=3 * BLOCK_SIZE)
    image = path.read_bytes()
    with Device(str(path)) as dev:
        for offset, length in [(0, 16), (16, len(DOC)), (BLOCK_SIZE - 3, 10), (5, 2 * BLOCK_SIZE)]:
            assert dev.read(offset, length) == image[offset:offset + length]
        with pytest.raises(TruncatedDiskError):
            dev.read(3 * BLOCK_SIZE - 4, 8)


def test_reader_rereads_only_when_the_sum_changes(make_disk):
    path = make_disk()
    reader = DiskReader(str(path), **FAST)
    assert reader.value("NumCPUs") == 4
    document = reader.document()
    assert reader.value("TotalCPUTime", "vm") == pytest.approx(69.4)
    assert reader.reads == 1 and reader.document() is document

    new = DOC.replace(b">4<", b">8<")
    path.write_bytes(disk_image(new))
    assert reader.value("NumCPUs") == 8
    assert reader.reads == 2
    assert reader.host_cpu().num_phys_cpus_utilized == 8
    assert reader.vm_cpu().total_cpu_time == pytest.approx(69.4)
    assert reader.reads == 2


def test_reader_does_not_see_content_changes_under_an_unchanged_header(make_disk):
    path = make_disk()
    reader = DiskReader(str(path), **FAST)
    reader.raw()
    with open(str(path), "r+b") as f:  # swapped digits: the same sum
        f.seek(16 + DOC.index(b"69.4"))
        f.write(b"96.4")
    assert reader.value("TotalCPUTime", "vm") == pytest.approx(69.4)
    assert reader.reads == 1


# -- discovery over a fake /sys/block and /dev --------------------------------


def fake_tree(tmp_path, disk_bytes):
    sys_block = tmp_path / "sys" / "block"
    dev = tmp_path / "dev"
    for name in ("sda", "sr0", "vda", "vdb", "cciss!c0d0"):
        (sys_block / name).mkdir(parents=True)
    (sys_block / "sr0" / "size").write_text("0\n")  # empty CD-ROM drive
    (sys_block / "vdb" / "ro").write_text("1\n")
    (sys_block / "vdb" / "size").write_text("2\n")
    dev.mkdir()
    (dev / "sda").mkdir()  # not a disk at all
    (dev / "vda").write_bytes(b"\0" * 4096)  # a disk without the signature
    (dev / "vdb").write_bytes(disk_bytes)
    return str(sys_block), str(dev)


def test_candidates_put_read_only_devices_first(tmp_path):
    sys_block, dev = fake_tree(tmp_path, disk_image(DOC))
    names = [os.path.relpath(p, dev) for p in candidate_devices(sys_block, dev)]
    assert names == ["vdb", "cciss/c0d0", "sda", "vda"]
    assert candidate_devices(str(tmp_path / "missing"), dev) == []


def test_discovery_finds_the_disk(tmp_path):
    sys_block, dev = fake_tree(tmp_path, disk_image(DOC))
    path = find_metrics_disk(sys_block, dev)
    assert path == os.path.join(dev, "vdb")
    reader = DiskReader(sys_block=sys_block, dev_root=dev, **FAST)
    assert reader.value("NumCPUs") == 4 and reader.path == path


def test_discovery_skips_what_is_not_a_disk(tmp_path):
    sys_block, dev = fake_tree(tmp_path, disk_image(DOC))
    os.unlink(os.path.join(dev, "vdb"))
    assert not has_signature(os.path.join(dev, "sda"))
    with pytest.raises(NoMetricsDiskError,
                       match=r'the metrics disk signature "mvbd" \(tried .*/vdb, .*/vda\)'):
        find_metrics_disk(sys_block, dev)
    with pytest.raises(NoMetricsDiskError, match="lists no block device"):
        find_metrics_disk(str(tmp_path / "nothing"), dev)


def test_discovery_skips_fifos_without_blocking(tmp_path):
    sys_block, dev = fake_tree(tmp_path, disk_image(DOC))
    os.unlink(os.path.join(dev, "vda"))
    os.mkfifo(os.path.join(dev, "vda"))  # opening this for reading would block
    assert find_metrics_disk(sys_block, dev) == os.path.join(dev, "vdb")
    assert not has_signature(os.path.join(dev, "vda"))


def test_reader_finds_the_disk_again_after_it_moved(tmp_path):
    sys_block, dev = fake_tree(tmp_path, disk_image(DOC))
    reader = DiskReader(sys_block=sys_block, dev_root=dev, **FAST)
    assert reader.value("NumCPUs") == 4
    os.rename(os.path.join(dev, "vdb"), os.path.join(dev, "vda"))
    (tmp_path / "sys" / "block" / "vdb" / "ro").write_text("0\n")
    assert reader.value("NumCPUs") == 4
    assert reader.path == os.path.join(dev, "vda")
