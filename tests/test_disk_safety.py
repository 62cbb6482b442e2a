"""The metrics disks against a hostile or careless host: planted files and
directories, full filesystems, short writes, disks removed or replaced while
the daemon runs, and a swapped per-VM directory.

Real parts throughout: tmpfs mounts (world-writable and sticky like
/dev/shm, or tiny to fill up), user ``nobody`` via runuser/setpriv to plant
things, the daemon's command line, and the guest's reader or an independent
parse of the header to see what a guest would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import resource
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from support import ROOT, config_xml, metric, read_disk, signed_sum, start_vhostmd, stop, vhostmd, wait_for
from vhostmd.publish.disk import MetricsDisk
from vhostmd.model import Domain, Metric, Snapshot, VmMetrics
from vhostmd.publish.per_vm_disks import PerVmDiskPublisher
from vhostmd.publish import PublishError, PublishErrorLog
from vhostmd.publish.shared_disk import DiskPublisher
from vhostmd.render import Renderer

#: The one domain test:///default runs in the daemon's own process.
TEST_VM = "6695eb01-f6a4-8304-79aa-97f2502e193f"
URI = "test:///default"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: tmpfs mounts, files of another user")


# --- real parts ---------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(size: str, mode: str = "1777"):
    """A fresh tmpfs of *size*, reachable by every user; unmounted afterwards."""
    base = Path(tempfile.mkdtemp(prefix="vhostmd-test-"))
    os.chmod(base, 0o755)
    mnt = base / "shm"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(base)
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def shm():
    """A world-writable sticky tmpfs, as /dev/shm is."""
    with tmpfs("4m") as mnt:
        yield mnt


def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to plant files with")


def as_nobody(script: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    """Run *script* with sh as user nobody (runuser, else setpriv)."""
    user = nobody()
    if shutil.which("runuser"):
        cmd = ["runuser", "-u", "nobody", "--"]
    elif shutil.which("setpriv"):
        cmd = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
    else:
        pytest.skip("neither runuser nor setpriv to act as another user")
    return subprocess.run([*cmd, "sh", "-c", script], input=data, capture_output=True, timeout=30)


def disk_bytes(content: bytes) -> bytes:
    """A valid disk image holding *content*, built per the spec."""
    return struct.pack(">4sIII", b"mvbd", 0, signed_sum(content), len(content)) + content


def guest_dump(disk: Path, timeout: float = 1) -> subprocess.CompletedProcess:
    """What vm-dump-metrics -b prints for *disk* (the guest's own reader)."""
    return subprocess.run(
        [sys.executable, "-m", "vhostmd_guest", "-b", "--device", str(disk), "--timeout", str(timeout)],
        capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT / "guest"), "PATH": "/usr/bin:/bin"},
    )


def write_conf(tmp_path: Path, metrics: str, disk: Path, size_k: int = 64, per_vm: Path | None = None) -> Path:
    size = f'<size unit="k">{size_k}</size>' + (f"<per_vm>{per_vm}</per_vm>" if per_vm else "")
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(metrics, disk=disk, size=size))
    return conf


def once(conf: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    return vhostmd("--once", "-c", URI, "-f", str(conf), *extra, **kwargs)


def status_text(status_file: Path) -> subprocess.CompletedProcess:
    return vhostmd("status", "--status-file", str(status_file))


def state(status_file: Path) -> str:
    """The state file's text (cheap to poll; `vhostmd status` is run for what it shows)."""
    try:
        return status_file.read_text()
    except FileNotFoundError:
        return ""


def holds_document(disk: Path, text: str = "") -> bool:
    """Whether *disk* holds a complete document containing *text* (parsed per the spec)."""
    try:
        parsed = read_disk(disk)
    except (OSError, struct.error):
        return False
    return (parsed.signature == b"mvbd" and parsed.busy == 0 and parsed.length > 0
            and parsed.sum == signed_sum(parsed.content) and text.encode() in parsed.content)


def owner_mode_links(path: Path) -> tuple[int, int, int]:
    info = path.lstat()
    return info.st_uid, stat.S_IMODE(info.st_mode), info.st_nlink


# --- planted files and directories -----------------------------------------------------


def _plant_nobody_file(disk: Path, victim: Path) -> None:
    done = as_nobody(f"umask 0; cat > {disk}", disk_bytes(b"EVIL"))
    assert done.returncode == 0, done.stderr


def _plant_nobody_symlink(disk: Path, victim: Path) -> None:
    done = as_nobody(f"ln -s {victim} {disk}")
    assert done.returncode == 0, done.stderr


def _plant_hard_link(disk: Path, victim: Path) -> None:
    os.link(victim, disk)


def _plant_root_file_writable_by_all(disk: Path, victim: Path) -> None:
    disk.write_bytes(disk_bytes(b"EVIL"))
    os.chmod(disk, 0o666)


@pytest.mark.parametrize("plant,why", [
    (_plant_nobody_file, "belongs to uid 65534 (nobody)"),
    (_plant_nobody_symlink, "is a symbolic link"),
    (_plant_hard_link, "has 2 hard links"),
    (_plant_root_file_writable_by_all, "is writable by group or others (mode 0666)"),
])
def test_a_planted_shared_disk_is_replaced_never_adopted(tmp_path, shm, plant, why):
    disk = shm / "vhostmd0"
    victim = shm / "precious"
    victim.write_bytes(disk_bytes(b"keep me"))
    plant(disk, victim)
    conf = write_conf(tmp_path, metric("Answer", "echo 42"), disk)
    result = once(conf)
    assert result.returncode == 0, result.stderr
    assert f"WARNING: {disk} {why}" in result.stderr and "; replacing it with a new file" in result.stderr
    # A new file of root's own, that only root may write.
    assert owner_mode_links(disk) == (0, 0o644, 1)
    assert victim.read_bytes() == disk_bytes(b"keep me")
    seen = guest_dump(disk)
    assert seen.returncode == 0, seen.stderr
    assert "<value>42</value>" in seen.stdout and "EVIL" not in seen.stdout
    assert as_nobody(f"printf EVIL >> {disk}").returncode != 0


def test_a_directory_at_the_disk_path_is_refused(tmp_path, shm):
    disk = shm / "vhostmd0"
    assert as_nobody(f"mkdir -m 0777 {disk}").returncode == 0
    conf = write_conf(tmp_path, metric("Answer", "echo 42"), disk)
    result = once(conf)
    assert result.returncode == 1
    assert f"{disk} is a directory; refusing to use it" in result.stderr
    assert os.listdir(disk) == []


def test_a_disk_directory_planted_by_another_user_is_refused(tmp_path, shm):
    parent = shm / "metrics"
    assert as_nobody(f"mkdir -m 0777 {parent}").returncode == 0
    conf = write_conf(tmp_path, metric("Answer", "echo 42"), parent / "vhostmd0")
    result = once(conf)
    assert result.returncode == 1
    assert f"directory {parent} belongs to uid 65534 (nobody)" in result.stderr
    assert os.listdir(parent) == []


def test_a_per_vm_directory_planted_by_another_user_is_refused(tmp_path, shm):
    vms = shm / "vhostmd"
    planted = vms / TEST_VM
    done = as_nobody(f"mkdir -m 0777 {vms} && umask 0 && printf nobodys > {planted}")
    assert done.returncode == 0, done.stderr
    conf = write_conf(tmp_path, metric("Name", "echo NAME", context="vm"), shm / "unused", per_vm=vms)
    for args in (("--once",), ("-d", "-p", str(tmp_path / "pid"))):
        result = vhostmd(*args, "-c", URI, "-f", str(conf), timeout=30)
        assert result.returncode == 1, result.stderr
        assert f"per-VM disk directory {vms} belongs to uid 65534 (nobody)" in result.stderr
    # Neither adopted nor touched: still nobody's, with nobody's bytes.
    assert planted.read_bytes() == b"nobodys"
    assert planted.stat().st_uid == nobody().pw_uid
    assert stat.S_IMODE(vms.stat().st_mode) == 0o777


def test_a_vm_disk_of_another_owner_in_our_directory_is_replaced(tmp_path, shm):
    vms = shm / "vhostmd"
    vms.mkdir(mode=0o700)
    planted = vms / TEST_VM
    planted.write_bytes(disk_bytes(b"EVIL"))
    os.chown(planted, nobody().pw_uid, -1)
    os.chmod(planted, 0o666)
    conf = write_conf(tmp_path, metric("Name", "echo NAME", context="vm"), shm / "unused", per_vm=vms)
    result = once(conf)
    assert result.returncode == 0, result.stderr
    assert "belongs to uid 65534 (nobody)" in result.stderr
    assert owner_mode_links(planted) == (0, 0o644, 1)
    seen = guest_dump(planted)
    assert seen.returncode == 0 and "EVIL" not in seen.stdout and "<name>Name</name>" in seen.stdout


# --- a swapped per-VM directory ---------------------------------------------------------


UUID_A = "0a1b2c3d-0000-4000-8000-00000000000a"
UUID_B = "0a1b2c3d-0000-4000-8000-00000000000b"


def _snapshot(uuids, known=True) -> Snapshot:
    vms = tuple(
        VmMetrics(Domain(i + 1, f"vm{i}", u), (Metric("VmName", "string", f"vm{i}"),))
        for i, u in enumerate(uuids)
    )
    return Snapshot(host=(Metric("HostAnswer", "uint32", "42"),), vms=vms, vms_known=known)


def test_a_swapped_per_vm_directory_never_redirects_a_create_or_an_unlink(tmp_path):
    vms, old, precious = tmp_path / "vms", tmp_path / "vms.old", tmp_path / "precious"
    precious.mkdir(mode=0o700)
    (precious / UUID_A).write_text("keep me")
    now = [0.0]
    publisher = PerVmDiskPublisher(vms, 4096, expiration=10, clock=lambda: now[0])
    renderer = Renderer()

    def update(uuids) -> str | None:
        snap = _snapshot(uuids)
        try:
            publisher.publish(renderer.render(snap))
        except PublishError as err:
            return str(err)
        return None

    async def go():
        await publisher.start()
        assert update([UUID_A, UUID_B]) is None
        # Swapped for a symlink to a root-owned directory holding a file of A's name.
        os.rename(vms, old)
        vms.symlink_to(precious)
        now[0] = 20.0  # A is gone long enough to expire; B still runs
        error = update([UUID_B])
        assert error is not None and f"per-VM disk directory {vms} is a symbolic link" in error
        assert "the disks stay in the directory opened before" in error
        # The unlink of A's disk and the write of B's went to the directory opened at start.
        assert sorted(os.listdir(precious)) == [UUID_A]
        assert (precious / UUID_A).read_text() == "keep me"
        assert os.listdir(old) == [UUID_B]
        assert read_disk(old / UUID_B).busy == 0
        # Once the path is a directory of ours again, B's disk is created there.
        vms.unlink()
        now[0] = 21.0
        assert update([UUID_B]) is None
        assert os.listdir(vms) == [UUID_B] and b"vm0" in read_disk(vms / UUID_B).content
        assert any("opened again" in note for note in publisher.status().notes)
        await publisher.stop()

    asyncio.run(go())


def test_a_per_vm_disk_removed_or_replaced_is_recreated_in_the_next_update(tmp_path):
    vms = tmp_path / "vms"
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    publisher = PerVmDiskPublisher(vms, 4096, expiration=10)
    renderer = Renderer()
    snap = _snapshot([UUID_A, UUID_B])

    async def go():
        await publisher.start()
        publisher.publish(renderer.render(snap))
        (vms / UUID_A).unlink()
        (vms / UUID_B).unlink()
        (vms / UUID_B).symlink_to(victim)
        publisher.publish(renderer.render(snap))  # same document: rewritten all the same
        for uuid in (UUID_A, UUID_B):
            disk = read_disk(vms / uuid)
            assert disk.busy == 0 and disk.sum == signed_sum(disk.content) and b"vm" in disk.content
        notes = publisher.status().notes
        assert any(f"{vms / UUID_A} was removed at" in n for n in notes)
        assert any(f"{vms / UUID_B} was replaced by a symbolic link at" in n for n in notes)
        await publisher.stop()

    asyncio.run(go())
    assert victim.read_text() == "keep me"


def test_the_daemon_writes_nothing_through_a_per_vm_directory_swapped_for_a_symlink(tmp_path):
    vms, precious = tmp_path / "vms", tmp_path / "precious"
    precious.mkdir(mode=0o700)
    (precious / TEST_VM).write_text("keep me")
    status_file = tmp_path / "status.json"
    conf = write_conf(tmp_path, metric("Name", "echo NAME", context="vm"), tmp_path / "unused", per_vm=vms)
    proc = start_vhostmd("-c", URI, "-f", str(conf), "--status-file", str(status_file))
    try:
        wait_for(lambda: (vms / TEST_VM).exists() and read_disk(vms / TEST_VM).length > 0)
        os.rename(vms, tmp_path / "vms.old")
        vms.symlink_to(precious)
        wait_for(lambda: "is a symbolic link" in state(status_file))
        shown = status_text(status_file)
        assert shown.returncode == 1 and "is a symbolic link" in shown.stdout  # degraded
        time.sleep(2.5)  # a few more updates
    finally:
        log = stop(proc)
    assert os.listdir(precious) == [TEST_VM] and (precious / TEST_VM).read_text() == "keep me"
    assert log.count(f"per-VM disk directory {vms} was replaced; opening it again") == 1
    # The error is logged once, not on every update.
    assert len(re.findall(r"ERROR: per-VM disk directory .* is a symbolic link", log)) == 1


# --- reserved space, short writes --------------------------------------------------------


def test_a_disk_that_cannot_be_reserved_stops_the_start(tmp_path):
    with tmpfs("64k", "0755") as small:
        disk = small / "vhostmd0"
        conf = write_conf(tmp_path, metric("Answer", "echo 42"), disk, size_k=128)
        for args in (("--once",), ("-d", "-p", str(tmp_path / "pid"))):
            result = vhostmd(*args, "-c", URI, "-f", str(conf), timeout=30)
            assert result.returncode == 1, result.stderr
            assert f"ERROR: cannot reserve 131072 bytes for metrics disk {disk}: No space left on device" \
                in result.stderr
            assert not (tmp_path / "pid").exists()


def test_a_per_vm_disk_that_cannot_be_reserved_is_reported_for_its_vm(tmp_path):
    with tmpfs("64k", "0755") as small:
        vms = small / "vms"
        status_file = tmp_path / "status.json"
        conf = write_conf(tmp_path, metric("Name", "echo NAME", context="vm"), small / "unused",
                          size_k=128, per_vm=vms)
        result = once(conf, "--status-file", str(status_file))
        assert result.returncode == 1
        message = f"cannot reserve 131072 bytes for metrics disk {vms / TEST_VM}: No space left on device"
        assert f"ERROR: {message}" in result.stderr
        assert message in status_text(status_file).stdout


def test_reserved_space_survives_a_filesystem_filled_by_someone_else(tmp_path):
    with tmpfs("96k") as small:
        disk = small / "vhostmd0"
        value = tmp_path / "value"
        value.write_text("small")
        conf = write_conf(tmp_path, metric("Blob", f"cat {value}"), disk, size_k=64)
        proc = start_vhostmd("-c", URI, "-f", str(conf))
        try:
            wait_for(lambda: holds_document(disk, "<value>small</value>"))
            # Another user fills the filesystem to the last block.
            filler = as_nobody(f"cat /dev/zero > {small}/filler")
            assert b"No space left" in filler.stderr
            value.write_text("x" * 60000)
            wait_for(lambda: holds_document(disk, "x" * 60000))
            assert "x" * 60000 in guest_dump(disk).stdout
        finally:
            log = stop(proc)
        assert "ERROR" not in log


def test_a_short_write_is_an_error_and_the_disk_stays_busy(tmp_path):
    with tmpfs("1m", "0755") as mnt:
        disk = mnt / "vhostmd0"
        value = tmp_path / "value"
        value.write_text("small")
        status_file = tmp_path / "status.json"
        conf = write_conf(tmp_path, metric("Blob", f"cat {value}"), disk, size_k=64)
        assert once(conf).returncode == 0
        value.write_text("x" * 10000)

        def limit_file_size():
            # A real short write: the kernel cuts pwrite at RLIMIT_FSIZE.
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        result = once(conf, "--status-file", str(status_file), preexec_fn=limit_file_size)
        assert result.returncode == 1
        assert re.search(rf"ERROR: cannot write metrics disk {disk}: wrote 4080 of \d+ bytes at offset 16: "
                         r"File too large; the disk stays marked busy", result.stderr), result.stderr
        header = read_disk(disk)
        assert header.signature == b"mvbd" and header.busy == 1
        assert guest_dump(disk).returncode == 1  # the guest never takes a torn document
        shown = status_text(status_file).stdout
        assert "NOT published" in shown and "wrote 4080 of" in shown
        # Without the limit the next update publishes it whole.
        assert once(conf).returncode == 0
        assert "x" * 10000 in guest_dump(disk).stdout


# --- a disk removed or replaced while the daemon runs ---------------------------------------


def test_a_disk_removed_or_replaced_while_running_is_recreated_within_one_update(tmp_path):
    disk = tmp_path / "vhostmd0"
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    status_file = tmp_path / "status.json"
    conf = write_conf(tmp_path, metric("Answer", "echo 42"), disk)
    proc = start_vhostmd("-c", URI, "-f", str(conf), "--status-file", str(status_file))

    def readable():
        return holds_document(disk, "<value>42</value>")

    try:
        wait_for(readable)
        disk.unlink()
        wait_for(readable, timeout=5)
        assert guest_dump(disk).returncode == 0
        wait_for(lambda: "was removed at" in state(status_file))
        assert "and was re-created (1 time(s) so far)" in status_text(status_file).stdout

        disk.unlink()
        disk.symlink_to(victim)
        wait_for(lambda: not disk.is_symlink() and readable(), timeout=5)

        disk.unlink()
        disk.mkdir()
        wait_for(lambda: "is a directory; refusing to use it" in state(status_file))
        shown = status_text(status_file)
        assert shown.returncode == 1 and "is a directory; refusing to use it" in shown.stdout
        time.sleep(2.5)  # more updates with the same error
        disk.rmdir()
        wait_for(readable, timeout=5)
        wait_for(lambda: "refusing" not in state(status_file))
        assert status_text(status_file).returncode == 0
    finally:
        log = stop(proc)
    assert victim.read_text() == "keep me"
    assert log.count(f"ERROR: metrics disk {disk} was removed; re-creating it") == 1
    assert log.count(f"ERROR: metrics disk {disk} was replaced by a symbolic link; re-creating it") == 1
    assert len(re.findall(r"ERROR: .* is a directory; refusing to use it", log)) == 1, log
    assert "publishing works again after" in log


# --- a document that does not fit; the old content stays ----------------------------------


def test_a_document_that_does_not_fit_is_an_error_and_the_old_content_stays(tmp_path):
    disk = tmp_path / "vhostmd0"
    value = tmp_path / "value"
    value.write_text("old")
    status_file = tmp_path / "status.json"
    conf = write_conf(tmp_path, metric("Blob", f"cat {value}"), disk, size_k=1)
    assert once(conf).returncode == 0
    value.write_text("x" * 3000)
    result = once(conf)
    assert result.returncode == 1
    assert "ERROR: metrics disk" in result.stderr and "configured with 1024 bytes" in result.stderr
    assert "<value>old</value>" in guest_dump(disk).stdout  # not zero-filled first

    proc = start_vhostmd("-c", URI, "-f", str(conf), "--status-file", str(status_file))
    try:
        wait_for(lambda: "configured with 1024 bytes" in state(status_file))
        shown = status_text(status_file).stdout
        assert "NOT published" in shown and "configured with 1024 bytes" in shown
        time.sleep(3)  # several updates still failing
        assert "<value>old</value>" in guest_dump(disk).stdout
    finally:
        log = stop(proc)
    assert len(re.findall(r"ERROR: metrics disk .*: the document needs", log)) == 1, log


def test_an_existing_document_stays_readable_until_the_first_new_one(tmp_path):
    disk = tmp_path / "vhostmd0"
    conf = write_conf(tmp_path, metric("Answer", "echo old"), disk)
    assert once(conf).returncode == 0
    conf = write_conf(tmp_path, metric("Answer", "sleep 3; echo new", attrs=' timeout="10"'), disk)
    proc = start_vhostmd("-c", URI, "-f", str(conf))
    try:
        time.sleep(1)  # the daemon has opened the disk; its first update is still running
        assert "<value>old</value>" in guest_dump(disk).stdout
        wait_for(lambda: holds_document(disk, "<value>new</value>"))
        assert "<value>new</value>" in guest_dump(disk).stdout
    finally:
        stop(proc)


def test_only_our_own_valid_document_is_kept_at_start(tmp_path):
    path = tmp_path / "d"
    good = b"<metrics>\n</metrics>\n"
    first = MetricsDisk(path, 4096)
    first.publish(good, signed_sum(good))
    first.close()
    MetricsDisk(path, 2048).close()  # smaller, still fits: kept
    assert read_disk(path).content == good and path.stat().st_size == 2048
    MetricsDisk(path, 16 + 10).close()  # no longer fits: zero-filled
    assert path.read_bytes() == bytes(26)
    path.unlink()
    path.write_bytes(disk_bytes(good)[:-1] + b"X")  # a wrong sum: zero-filled
    MetricsDisk(path, 1024).close()
    assert path.read_bytes() == bytes(1024)


def test_publish_errors_are_logged_once_then_summarised(caplog):
    now = [0.0]
    errors = PublishErrorLog(remind=600, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="vhostmd.publish"):
        for second in range(0, 1200, 5):
            now[0] = second
            errors.update([f"metrics disk /d: the document needs {2000 + second} bytes"])
        now[0] = 1200
        errors.update([])
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines[0] == ("ERROR", "metrics disk /d: the document needs 2000 bytes")
    assert [level for level, _ in lines] == ["ERROR", "ERROR", "INFO"]
    assert lines[1][1].startswith("still failing, 121 updates in 600 s:")
    assert lines[2][1] == ("publishing works again after 240 failed update(s) in 1200 s: "
                           "metrics disk /d: the document needs 3195 bytes")


# --- the busy flag while a write is under way -------------------------------------------------


def test_the_header_says_busy_while_a_write_is_under_way(tmp_path):
    """Pause the writer at each write after the first, inside publish, and look.

    The hook is the interpreter's profiler, which reports every call of a C
    function such as os.pwrite before it runs: the writer thread waits there
    while this thread and a guest reader in another process read the disk.
    """
    path = tmp_path / "vhostmd0"
    disk = MetricsDisk(path, 64 * 1024)
    renderer = Renderer()
    publisher = DiskPublisher(disk)
    old = renderer.render(_snapshot([UUID_A]))
    publisher.publish(old)
    new_snapshot = _snapshot([UUID_A, UUID_B])
    new = renderer.render(new_snapshot)
    paused, resume = threading.Event(), threading.Event()
    writes = []

    def hook(frame, event, arg):
        if event == "c_call" and getattr(arg, "__name__", "") in ("pwrite", "pwritev", "write", "writev"):
            writes.append(arg.__name__)
            if len(writes) > 1:  # the header (with busy) went first
                paused.set()
                resume.wait(30)
                resume.clear()

    def writer():
        sys.setprofile(hook)
        try:
            publisher.publish(new)
        finally:
            sys.setprofile(None)

    thread = threading.Thread(target=writer)
    thread.start()
    observed = []
    try:
        while True:
            if paused.wait(0.05):
                paused.clear()
                header = read_disk(path)
                observed.append(header.busy)
                if len(observed) == 1:
                    # A guest reading now gives up rather than take a torn document.
                    seen = guest_dump(path, timeout=0.5)
                    assert seen.returncode == 1 and "busy" in seen.stderr, seen.stderr
                resume.set()
            elif not thread.is_alive():
                break
    finally:
        resume.set()
        thread.join(30)
    assert observed, "the writer never paused at a write"
    assert all(busy == 1 for busy in observed), observed
    final = read_disk(path)
    assert final.busy == 0 and final.content == new.document and final.sum == signed_sum(new.document)


def test_the_disk_check_benchmark_runs(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "disk_check.py"), "--disks", "5", "--rounds", "3",
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("5 per-VM disks: ") and os.listdir(tmp_path) == []
