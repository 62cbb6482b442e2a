"""The metrics disk as a guest sees it: bytes checked per the spec, not with the writer."""

from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support import config_xml, disk_document, metric, read_disk, signed_sum, vhostmd
from vhostmd.publish import disk_format
from vhostmd.publish.disk import DiskError, DiskFull, MetricsDisk


def once(tmp_path: Path, metrics: str, size: str = '<size unit="k">64</size>', disk: Path | None = None):
    disk = disk or tmp_path / "run" / "vhostmd0"
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(metrics, disk=disk, size=size))
    return vhostmd("--once", "-c", "test:///default", "-f", str(conf)), disk


def test_disk_layout_size_modes_and_checksum(tmp_path):
    result, disk = once(tmp_path, metric("HostName", "echo myhost") + metric("Cpus", "echo 4", "uint32"))
    assert result.returncode == 0, result.stderr
    parsed = read_disk(disk)
    assert parsed.signature == b"mvbd"
    assert parsed.busy == 0
    assert parsed.size == 64 * 1024
    assert parsed.sum == signed_sum(parsed.content)
    assert stat.S_IMODE(disk.stat().st_mode) == 0o644
    assert stat.S_IMODE(disk.parent.stat().st_mode) == 0o711
    # Zero fill after the content.
    raw = disk.read_bytes()
    assert raw[16 + parsed.length:] == bytes(len(raw) - 16 - parsed.length)
    text = parsed.content.decode()
    assert text.startswith("<metrics>\n  <metric type='string' context='host'>\n    <name>HostName</name>\n"
                           "    <value>myhost</value>\n  </metric>\n")
    assert text.endswith("</metrics>\n")
    root = ET.fromstring(text)
    assert [(m.get("type"), m.findtext("name"), m.findtext("value")) for m in root] == [
        ("string", "HostName", "myhost"),
        ("uint32", "Cpus", "4"),
    ]


def test_vm_metrics_follow_host_metrics_with_id_and_uuid(tmp_path):
    result, disk = once(tmp_path, metric("Cpu", "echo 1.5", "real64", "vm", attrs=' unit="s"') + metric("H", "echo h"))
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(disk_document(disk))
    contexts = [m.get("context") for m in root]
    assert contexts == ["host", "vm"]  # test:///default runs one domain
    vm = root[1]
    assert list(vm.attrib) == ["type", "context", "id", "uuid", "unit"]
    assert vm.get("id") == "1"
    assert vm.get("uuid") == "6695eb01-f6a4-8304-79aa-97f2502e193f"
    assert vm.get("unit") == "s"


def test_non_ascii_values_use_the_signed_byte_sum(tmp_path):
    result, disk = once(tmp_path, metric("Place", "echo café été"))
    assert result.returncode == 0, result.stderr
    parsed = read_disk(disk)
    assert "café été".encode() in parsed.content
    assert parsed.sum == signed_sum(parsed.content)
    assert parsed.sum != sum(parsed.content) % 2**32


def test_values_names_and_attributes_are_escaped(tmp_path):
    tricky = "a<b&c'd\"e>"
    result, disk = once(
        tmp_path,
        metric("Quirk<Name>&", f"printf '%s' {_sh_quote(tricky)}", attrs=' unit="&lt;&apos;u&quot;&gt;"'),
    )
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(disk_document(disk))
    assert root[0].findtext("name") == "Quirk<Name>&"
    assert root[0].findtext("value") == tricky
    assert root[0].get("unit") == "<'u\">"


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_once_with_content_too_large_fails_and_writes_nothing_past_the_end(tmp_path):
    disk = tmp_path / "vhostmd0"
    result, _ = once(tmp_path, metric("Small", "echo 1", "uint32"), size='<size unit="k">1</size>', disk=disk)
    assert result.returncode == 0, result.stderr
    before = disk.read_bytes()
    big = metric("Big", "head -c 3000 /dev/zero | tr '\\0' x")
    result, _ = once(tmp_path, big, size='<size unit="k">1</size>', disk=disk)
    assert result.returncode == 1
    assert "needs" in result.stderr and "configured with 1024 bytes" in result.stderr
    assert disk.stat().st_size == 1024
    assert read_disk(disk).length <= 1024 - 16
    assert len(before) == 1024


def test_publish_refuses_oversize_and_keeps_old_content(tmp_path):
    disk = MetricsDisk(tmp_path / "d", 1024)
    good = b"<metrics>\n</metrics>\n"
    disk.publish(good, disk_format.checksum(good))
    with pytest.raises(DiskFull) as info:
        disk.publish(b"x" * 2000, 0)
    assert info.value.needed == 2016
    assert "needs 2016 bytes" in str(info.value) and "configured with 1024 bytes" in str(info.value)
    parsed = read_disk(tmp_path / "d")
    assert parsed.content == good and parsed.busy == 0
    assert (tmp_path / "d").stat().st_size == 1024


def test_shorter_document_after_longer_honours_length(tmp_path):
    path = tmp_path / "d"
    disk = MetricsDisk(path, 4096)
    disk.publish(b"A" * 100, disk_format.checksum(b"A" * 100))
    disk.publish(b"B" * 10, disk_format.checksum(b"B" * 10))
    parsed = read_disk(path)
    assert parsed.length == 10 and parsed.content == b"B" * 10
    assert parsed.sum == signed_sum(b"B" * 10)


def test_existing_disk_is_zero_filled_and_resized(tmp_path):
    path = tmp_path / "d"
    path.write_bytes(b"\xff" * 5000)
    os.chmod(path, 0o600)
    MetricsDisk(path, 2048)
    assert path.read_bytes() == bytes(2048)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_symlink_at_disk_path_is_replaced_and_target_untouched(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    link = tmp_path / "vhostmd0"
    link.symlink_to(target)
    result, _ = once(tmp_path, metric("A", "echo a"), disk=link)
    assert result.returncode == 0, result.stderr
    assert f"{link} is a symbolic link; replacing it with a new file" in result.stderr
    assert not link.is_symlink() and stat.S_ISREG(link.lstat().st_mode)
    assert "<value>a</value>" in disk_document(link)
    assert target.read_text() == "keep me"


def test_fifo_is_replaced_and_directory_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    MetricsDisk(fifo, 1024).close()
    assert stat.S_ISREG(fifo.lstat().st_mode)
    directory = tmp_path / "dir"
    directory.mkdir()
    with pytest.raises(DiskError, match="is a directory; refusing to use it"):
        MetricsDisk(directory, 1024)


def test_unchanged_document_is_not_rewritten(tmp_path):
    path = tmp_path / "d"
    disk = MetricsDisk(path, 1024)
    doc = b"<metrics>\n</metrics>\n"
    assert disk.publish(doc, disk_format.checksum(doc)) is True
    assert disk.publish(doc, disk_format.checksum(doc)) is False


def test_checksum_matches_the_spec_for_every_byte_value():
    content = bytes(range(256)) * 3
    assert disk_format.checksum(content) == signed_sum(content)
    assert disk_format.combine(disk_format.checksum(content[:100]), disk_format.checksum(content[100:])) \
        == signed_sum(content)
