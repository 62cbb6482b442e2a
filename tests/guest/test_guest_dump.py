"""vm-dump-metrics end to end, as a subprocess."""

import json
import os
import struct
import subprocess
import sys

import pytest

from guest_vectors import DOC, GUEST_DIR, disk_image, reference
from guest_host import FakeHost, pty_port


def dump(*args, env=None, timeout=30):
    full_env = dict(os.environ, PYTHONPATH=str(GUEST_DIR))
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "vhostmd_guest"] + [str(a) for a in args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, timeout=timeout,
    )


def content_of(path):
    image = path.read_bytes()
    length = struct.unpack(">I", image[12:16])[0]
    return image[16:16 + length]


@pytest.mark.parametrize("flag", ["-b", "--vbd", None])
def test_disk_dump_is_byte_for_byte(flag):
    disk = reference("c-vhostmd-10vms.disk")
    args = ([flag] if flag else []) + ["--device", disk]
    result = dump(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == content_of(disk)
    assert result.stderr == b""


def test_unescaped_disk_dumps_raw_but_not_as_json():
    disk = reference("c-vhostmd-unescaped.disk")
    raw = dump("-b", "--device", disk)
    assert raw.returncode == 0
    assert raw.stdout == content_of(disk)
    assert "café".encode("utf-8") in raw.stdout
    as_json = dump("-b", "--json", "--device", disk)
    assert as_json.returncode == 1 and as_json.stdout == b""
    assert b"not well-formed XML" in as_json.stderr


def test_dest_file(tmp_path):
    disk = reference("c-vhostmd-10vms.disk")
    dest = tmp_path / "out.xml"
    for args in (["-d", dest], ["--dest", dest], ["--dest={}".format(dest)]):
        dest.write_bytes(b"old")
        result = dump("-b", "--device", disk, *args)
        assert result.returncode == 0 and result.stdout == b""
        assert dest.read_bytes() == content_of(disk)


def test_dest_not_written_when_nothing_worked(tmp_path):
    dest = tmp_path / "out.xml"
    dest.write_bytes(b"old")
    result = dump("-b", "--device", tmp_path / "missing", "-d", dest)
    assert result.returncode == 1
    assert dest.read_bytes() == b"old"


def test_json_output(make_disk):
    result = dump("--json", "--device", make_disk())
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.decode("utf-8"))
    assert out["source"] == "disk"
    assert out["metrics"] == [
        {"name": "NumCPUs", "context": "host", "type": "uint32", "value": 4, "unit": None},
        {"name": "TotalCPUTime", "context": "vm", "type": "real64", "value": 69.4, "unit": "s",
         "id": 3, "uuid": "6be3fdb8-bef5-6fec-b1b7-e61bbceab708"},
    ]


def test_nothing_works(tmp_path):
    result = dump("-b", "-i", "-x", "--device", tmp_path / "nodisk", "--port", tmp_path / "noport",
                  "--timeout", "0.5", env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().splitlines() == [
        "vm-dump-metrics: no metrics source worked:",
        "  disk: cannot read {}: No such file or directory".format(tmp_path / "nodisk"),
        "  virtio: virtio port {} does not exist (no virtio channel org.github.vhostmd.1 "
        "for this VM?)".format(tmp_path / "noport"),
        "  xenstore: not a Xen guest: xenstore-read was not found (install the Xen guest tools)",
    ]


def test_busy_disk_gives_up_within_the_timeout(make_disk):
    result = dump("-b", "--device", make_disk(busy=1), "--timeout", "0.3")
    assert result.returncode == 1
    assert b"busy flag stayed set" in result.stderr


def test_verbose_names_the_source(make_disk):
    result = dump("-v", "--device", make_disk())
    assert result.returncode == 0
    assert b"disk: " in result.stderr and str(make_disk()).encode() in result.stderr


def test_virtio_dump_over_a_pty():
    with pty_port() as (host_fd, port):
        expected = reference("c-vhostmd-virtio-answer.txt").read_bytes()
        FakeHost(host_fd, expected, pieces=4)
        result = dump("-i", "--port", port)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected


def test_falls_back_from_disk_to_virtio(tmp_path):
    with pty_port() as (host_fd, port):
        FakeHost(host_fd, b"<metrics>\n</metrics>\n\n")
        bad_disk = tmp_path / "bad"
        bad_disk.write_bytes(disk_image(DOC, signature=b"nope"))
        result = dump("-v", "-b", "-i", "--device", bad_disk, "--port", port)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"<metrics>\n</metrics>\n\n"
        assert b"bad signature" in result.stderr


def dump_with_xenstore_read(tmp_path, script):
    """Run ``vm-dump-metrics -x`` with ``script`` as xenstore-read."""
    path = tmp_path / "xenstore-read"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return dump("-x", env={"PATH": "{}:{}".format(tmp_path, os.environ.get("PATH", ""))})


def test_xenstore_via_xenstore_read(tmp_path):
    result = dump_with_xenstore_read(tmp_path, r"""
[ "$1" = -R ] && shift
case "$1" in
  domid) echo 7 ;;
  /local/domain/7/metrics) printf '<metrics>\n\t<metric/>\n</metrics>\n' ;;
  *) echo "could not read path $1" >&2; exit 1 ;;
esac
""")
    assert result.returncode == 0, result.stderr
    # xenstore-read -R prints the value as it is: its own final newline stays.
    assert result.stdout == b"<metrics>\n\t<metric/>\n</metrics>\n"


def test_xenstore_read_without_raw_mode(tmp_path):
    # Older xenstore-read prints escapes: backslash-n, backslash-t, octal.
    result = dump_with_xenstore_read(tmp_path, r"""
[ "$1" = -R ] && { echo 'invalid option -- R' >&2; exit 2; }
case "$1" in
  domid) echo 3 ;;
  /local/domain/3/metrics) printf '%s\n' '<metrics>\n\t<a/>\134</metrics>' ;;
esac
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"<metrics>\n\t<a/>\\</metrics>"


def test_xenstore_key_missing(tmp_path):
    result = dump_with_xenstore_read(tmp_path, r"""
[ "$1" = -R ] && shift
[ "$1" = domid ] && { echo 3; exit 0; }
echo "could not read path $1" >&2; exit 1
""")
    assert result.returncode == 1
    assert b"/local/domain/3/metrics cannot be read: could not read path" in result.stderr


def test_help_and_usage_errors():
    result = dump("-h")
    assert result.returncode == 2
    assert b"--vbd" in result.stderr and b"--virtio" in result.stderr
    assert dump("--bogus").returncode == 2
    assert dump("--timeout", "0").returncode == 2
