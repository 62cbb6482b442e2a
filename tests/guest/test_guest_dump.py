"""vm-dump-metrics end to end, as a subprocess."""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import pytest

from guest_vectors import DOC, GUEST_DIR, disk_image, reference, signed_sum
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


# -- what an admin sees when something is wrong ---------------------------------


def stderr_lines(result):
    return result.stderr.decode("utf-8").splitlines()


def test_a_named_device_alone_means_the_disk_only(tmp_path):
    # A virtio port is there, but --device asked for the disk at that path.
    missing = tmp_path / "nosuch"
    with pty_port() as (host_fd, port):
        result = dump("--device", missing, "--port", port, "--timeout", "0.5")
        assert result.returncode == 1 and result.stdout == b""
        assert stderr_lines(result) == [
            "vm-dump-metrics: no metrics source worked:",
            "  disk: cannot read {}: No such file or directory".format(missing),
        ]
        with pytest.raises(BlockingIOError):
            os.read(host_fd, 4096)  # nothing was asked over virtio


def test_a_named_device_with_another_source_flag_falls_back_to_it(tmp_path):
    missing = tmp_path / "nosuch"
    with pty_port() as (host_fd, port):
        FakeHost(host_fd, b"<metrics>\n</metrics>\n\n")
        result = dump("-i", "--device", missing, "--port", port)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"<metrics>\n</metrics>\n\n"
        assert result.stderr == b""


def test_verbose_says_each_error_once(tmp_path):
    result = dump("-v", "-b", "-i", "--device", tmp_path / "nosuch", "--port", tmp_path / "noport")
    assert result.returncode == 1 and result.stdout == b""
    assert stderr_lines(result) == [
        "vm-dump-metrics: disk: cannot read {}: No such file or directory".format(
            tmp_path / "nosuch"),
        "vm-dump-metrics: virtio: virtio port {} does not exist (no virtio channel "
        "org.github.vhostmd.1 for this VM?)".format(tmp_path / "noport"),
        "vm-dump-metrics: no metrics source worked",
    ]


def _wrong_device(tmp_path, kind):
    """A path an admin might pass to --device by mistake, and the reason expected."""
    path = tmp_path / kind
    if kind == "text":
        path.write_bytes(b"hello, this is not a disk\n" * 100)
        return path, 'not a metrics disk (bad signature "hell", expected "mvbd")'
    if kind == "binary":
        path.write_bytes(b"\x7fELF" + bytes(4092))
        return path, 'not a metrics disk (bad signature 0x7f454c46, expected "mvbd")'
    if kind == "empty":
        path.write_bytes(b"")
        return path, "not a metrics disk (it ends after 0 bytes, the header needs 16)"
    if kind == "short":
        path.write_bytes(b"mvbd\0\0\0\0")
        return path, "not a metrics disk (it ends after 8 bytes, the header needs 16)"
    if kind == "directory":
        path.mkdir()
        return path, None
    if kind == "fifo":
        os.mkfifo(str(path))
        return path, None
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["text", "binary", "empty", "short"])
def test_a_file_that_is_not_a_metrics_disk(tmp_path, kind):
    path, why = _wrong_device(tmp_path, kind)
    result = dump("--device", path)
    assert result.returncode == 1 and result.stdout == b""
    assert stderr_lines(result) == [
        "vm-dump-metrics: no metrics source worked:",
        "  disk: {}: {}".format(path, why),
    ]


@pytest.mark.parametrize("kind, what", [
    ("directory", "a directory"), ("fifo", "a pipe"), ("/dev/null", "a character device"),
])
def test_something_that_cannot_be_a_metrics_disk(tmp_path, kind, what):
    path = kind if kind.startswith("/") else _wrong_device(tmp_path, kind)[0]
    result = dump("--device", path)
    assert result.returncode == 1 and result.stdout == b""
    assert stderr_lines(result) == [
        "vm-dump-metrics: no metrics source worked:",
        "  disk: {} is {}, not a metrics disk".format(path, what),
    ]


def test_a_disk_busy_forever(make_disk):
    path = make_disk(busy=1)
    result = dump("--device", path, "--timeout", "0.5")
    assert result.returncode == 1 and result.stdout == b""
    assert stderr_lines(result) == [
        "vm-dump-metrics: no metrics source worked:",
        "  disk: {}: the busy flag stayed set after 6 attempts, 0.1 s apart "
        "(the host began an update and has not finished it)".format(path),
    ]


def test_a_corrupt_disk(make_disk):
    path = make_disk(checksum=1)
    result = dump("--device", path, "--timeout", "0.5")
    assert result.returncode == 1
    assert stderr_lines(result) == [
        "vm-dump-metrics: no metrics source worked:",
        "  disk: {}: checksum mismatch: header says 0x00000001, content sums to 0x{:08x}".format(
            path, signed_sum(DOC)),
    ]


def test_an_empty_device_path_is_a_usage_error():
    result = dump("--device", "")
    assert result.returncode == 2
    assert stderr_lines(result)[-1] == "vm-dump-metrics: error: argument --device: the path is empty"


def test_a_virtio_port_that_is_a_regular_file(tmp_path):
    port = tmp_path / "port"
    port.write_bytes(b"")
    result = dump("-i", "--port", port)
    assert result.returncode == 1
    assert stderr_lines(result) == [
        "vm-dump-metrics: no metrics source worked:",
        "  virtio: {} is a regular file, not a virtio port".format(port),
    ]


def test_xenstore_read_errors_stay_on_one_line(tmp_path):
    result = dump_with_xenstore_read(tmp_path, r"""
printf 'xs_open: No such file or directory\n\nis xenfs mounted?\n' >&2; exit 1
""")
    assert result.returncode == 1
    assert stderr_lines(result) == [
        "vm-dump-metrics: no metrics source worked:",
        "  xenstore: xenstore key domid cannot be read: xs_open: No such file or directory; "
        "is xenfs mounted?",
    ]


# -- as a user who may not read the device --------------------------------------


@pytest.fixture
def as_nobody(tmp_path_factory):
    """Run the tool as the user nobody, from a copy of the package nobody can read."""
    runuser = shutil.which("runuser")
    if os.geteuid() != 0 or not runuser:
        pytest.skip("running as another user needs root and runuser")
    # An interpreter nobody may run (a virtualenv under /root is not one).
    for python in ("/usr/bin/python3", sys.executable, shutil.which("python3")):
        if python and subprocess.run([runuser, "-u", "nobody", "--", python, "-c", ""],
                                     stderr=subprocess.DEVNULL, timeout=60).returncode == 0:
            break
    else:
        pytest.skip("no python3 that the user nobody may run")
    shared = tempfile.mkdtemp(prefix="vhostmd-guest-")
    os.chmod(shared, 0o755)
    shutil.copytree(str(GUEST_DIR / "vhostmd_guest"), os.path.join(shared, "vhostmd_guest"))
    for root, dirs, files in os.walk(shared):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755)

    def run(*args, wrap=()):
        argv = list(wrap) + [runuser, "-u", "nobody", "--", "env", "PYTHONPATH=" + shared,
                             python, "-m", "vhostmd_guest"] + [str(a) for a in args]
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)

    yield run
    shutil.rmtree(shared, ignore_errors=True)


def test_an_unreadable_device_as_a_user(as_nobody, tmp_path):
    path = tmp_path / "vhostmd0"  # tmp_path is root's own, mode 0700
    path.write_bytes(disk_image(DOC))
    result = as_nobody("--device", path)
    assert result.returncode == 1 and result.stdout == b""
    assert stderr_lines(result) == [
        "vm-dump-metrics: no metrics source worked:",
        "  disk: cannot read {}: Permission denied (run as root?)".format(path),
    ]


def test_scanning_as_a_user_says_which_devices_it_could_not_open(as_nobody, tmp_path):
    """A VM whose only disk (a real loop device) nobody may open: the scan says so."""
    device = loop_device(tmp_path / "disk", disk_image(DOC))
    try:
        block = tmp_path / "block"
        block.mkdir()
        name = os.path.basename(device)
        os.symlink("/sys/devices/virtual/block/" + name, str(block / name))
        os.chmod(str(tmp_path), 0o755)  # so that nobody sees the bind mount's source
        wrap = ["unshare", "--mount", "sh", "-c",
                'mount --bind "$0" /sys/block && exec "$@"', str(block)]
        result = as_nobody("-b", wrap=wrap)
        assert result.returncode == 1 and result.stdout == b""
        assert stderr_lines(result) == [
            "vm-dump-metrics: no metrics source worked:",
            '  disk: no metrics disk: no block device starts with the metrics disk signature '
            '"mvbd" (tried {0}); {0} could not be opened for lack of permission '
            "(run as root?)".format(device),
        ]
        # As root the same scan finds it: the message was about permission only.
        as_root = subprocess.run(
            wrap + [sys.executable, "-m", "vhostmd_guest", "-b"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, timeout=60, env=dict(os.environ, PYTHONPATH=str(GUEST_DIR)))
        assert as_root.returncode == 0 and as_root.stdout == DOC, as_root.stderr
    finally:
        subprocess.run(["losetup", "--detach", device], timeout=30)


def loop_device(path, image):
    """``image`` written to ``path`` and attached read-only as a loop device."""
    if not shutil.which("losetup") or not shutil.which("unshare"):
        pytest.skip("a VM's disk is played by a loop device: needs losetup and unshare")
    path.write_bytes(image)
    result = subprocess.run(["losetup", "--read-only", "--find", "--show", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=30)
    if result.returncode != 0:
        pytest.skip("no loop device: {}".format(result.stderr.strip()))
    return result.stdout.strip()
