"""Per-VM metrics disks: one disk per running VM, with only its own metrics.

VMs come and go on libvirt's test driver: test:///default is one shared state
per process, so a read-write connection opened here starts and destroys
domains that the daemon's read-only connection then sees.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import struct
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest

from vhostmd import config as config_mod
from vhostmd.model import Domain, Metric, Snapshot, VmMetrics
from vhostmd.publish.per_vm_disks import PerVmDiskPublisher
from vhostmd.pipeline import Pipeline
from vhostmd.transports import close_transports, open_transports, start_transports
from vhostmd.publish import PublishError
from vhostmd.render import Renderer
from vhostmd.collect.virt import Libvirt

ROOT = Path(__file__).resolve().parents[1]
URI = "test:///default"
UUIDS = ("0a1b2c3d-0000-4000-8000-000000000001", "0a1b2c3d-0000-4000-8000-000000000002")

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def write_config(tmp_path: Path, size_k: int = 64, per_vm: bool = True) -> Path:
    per_vm_elem = f"<per_vm>{tmp_path}/vms</per_vm>" if per_vm else ""
    path = tmp_path / "vhostmd.conf"
    path.write_text(f"""<vhostmd>
  <globals>
    <disk><name>m</name><path>{tmp_path}/shared</path><size unit="k">{size_k}</size>{per_vm_elem}</disk>
    <update_period>1</update_period>
    <transport>vbd</transport>
  </globals>
  <metrics>
    <metric type="uint32" context="host"><name>HostAnswer</name><action>echo 42</action></metric>
    <metric type="string" context="vm"><name>VmName</name><action>echo NAME</action></metric>
  </metrics>
</vhostmd>
""")
    return path


def read_disk(path: Path) -> tuple[int, int, int, int, bytes]:
    """Header fields and content, decoded per the format, not with the writer's code."""
    data = path.read_bytes()
    signature, busy, checksum, length = struct.unpack(">IIII", data[:16])
    return signature, busy, checksum, length, data[16:16 + length]


def signed_sum(content: bytes) -> int:
    return sum(b - 256 if b >= 128 else b for b in content) & 0xFFFFFFFF


@pytest.fixture
def rw():
    """A read-write connection to the shared test driver; VMs it starts are destroyed."""
    conn = libvirt.open(URI)
    started = []

    def start(name: str, uuid: str):
        xml = (f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>"
               "<memory>1048576</memory><os><type>hvm</type></os></domain>")
        dom = conn.createXML(xml, 0)
        started.append(dom)
        return dom

    conn.start_vm = start
    yield conn
    for dom in started:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
    conn.close()


def run(coro):
    return asyncio.run(coro)


async def _updates(pipeline: Pipeline, steps):
    """Start the pipeline, run each step (a callable taking the last report) after an update."""
    await start_transports(pipeline.publishers)
    try:
        report = None
        for step in steps:
            report = await pipeline.update()
            step(report)
    finally:
        await close_transports(pipeline.publishers)


def test_each_vm_gets_a_disk_with_only_its_own_metrics(tmp_path, rw):
    rw.start_vm("alpha", UUIDS[0])
    rw.start_vm("beta", UUIDS[1])
    config = config_mod.load(write_config(tmp_path))
    virt = Libvirt(URI)
    pipeline = Pipeline(config, virt, open_transports(config))

    def check(report):
        assert report.published, report.publish_errors
        for uuid, name, other in ((UUIDS[0], "alpha", UUIDS[1]), (UUIDS[1], "beta", UUIDS[0])):
            path = tmp_path / "vms" / uuid
            assert stat.S_IMODE(path.stat().st_mode) == 0o644
            signature, busy, checksum, length, content = read_disk(path)
            assert (signature, busy) == (0x6D766264, 0)
            assert checksum == signed_sum(content)
            text = content.decode()
            assert "<name>HostAnswer</name>" in text and "<value>42</value>" in text
            assert f"uuid='{uuid}'" in text and f"<value>{name}</value>" in text
            assert other not in text
            assert re.findall(r"uuid='([^']+)'", text) == [uuid]
            assert text.startswith("<metrics>\n") and text.endswith("</metrics>\n")
        assert stat.S_IMODE((tmp_path / "vms").stat().st_mode) == 0o711

    try:
        run(_updates(pipeline, [check]))
    finally:
        virt.close()
    # No disk holds every VM's metrics in per-VM mode.
    assert not (tmp_path / "shared").exists()


def test_disk_of_a_gone_vm_is_removed_after_expiration_time(tmp_path, rw):
    alpha = rw.start_vm("alpha", UUIDS[0])
    rw.start_vm("beta", UUIDS[1])
    config = config_mod.load(write_config(tmp_path))
    assert config.virtio.expiration_time == 15
    virt = Libvirt(URI)
    pipeline = Pipeline(config, virt, open_transports(config))
    publisher = next(p for p in pipeline.publishers if isinstance(p, PerVmDiskPublisher))
    now = [1000.0]
    publisher.clock = lambda: now[0]
    alpha_disk, beta_disk = (tmp_path / "vms" / u for u in UUIDS)

    def both_there(report):
        assert alpha_disk.exists() and beta_disk.exists()
        alpha.destroy()
        now[0] += 10

    def alpha_kept_while_young(report):
        assert alpha_disk.exists(), "removed before expiration_time"
        # Its VM is gone: the disk now holds the host metrics only.
        text = read_disk(alpha_disk)[4].decode()
        assert "HostAnswer" in text and UUIDS[0] not in text
        now[0] += 5

    def alpha_removed(report):
        assert report.published
        assert not alpha_disk.exists()
        assert beta_disk.exists()

    try:
        run(_updates(pipeline, [both_there, alpha_kept_while_young, alpha_removed]))
    finally:
        virt.close()


def _snapshot(uuids, known=True) -> Snapshot:
    vms = tuple(
        VmMetrics(Domain(i + 1, f"vm{i}", u), (Metric("VmName", "string", f"vm{i}"),))
        for i, u in enumerate(uuids)
    )
    return Snapshot(host=(Metric("HostAnswer", "uint32", "42"),), vms=vms, vms_known=known)


def test_disks_from_an_earlier_run_expire_unless_their_vm_runs(tmp_path):
    vms = tmp_path / "vms"
    vms.mkdir(mode=0o700)
    for uuid in UUIDS:
        (vms / uuid).write_bytes(b"old")
    (vms / "notes.txt").write_text("not a disk")
    now = [0.0]
    publisher = PerVmDiskPublisher(vms, 4096, expiration=15, clock=lambda: now[0])
    renderer = Renderer()

    async def go():
        await publisher.start()
        publisher.publish(renderer.render(_snapshot([UUIDS[0]])))
        now[0] = 20
        snap = _snapshot([UUIDS[0]])
        publisher.publish(renderer.render(snap))
        await publisher.stop()

    run(go())
    assert (vms / UUIDS[0]).exists()
    assert not (vms / UUIDS[1]).exists()
    assert (vms / "notes.txt").read_text() == "not a disk"


def test_nothing_expires_while_libvirt_is_unreachable(tmp_path):
    now = [0.0]
    publisher = PerVmDiskPublisher(tmp_path / "vms", 4096, expiration=15, clock=lambda: now[0])
    renderer = Renderer()

    async def go():
        await publisher.start()
        snap = _snapshot([UUIDS[0]])
        publisher.publish(renderer.render(snap))
        now[0] = 100
        unknown = _snapshot([], known=False)
        publisher.publish(renderer.render(unknown))
        await publisher.stop()

    run(go())
    assert (tmp_path / "vms" / UUIDS[0]).exists()


def test_symlink_planted_as_a_vm_disk_is_replaced_and_its_target_untouched(tmp_path):
    vms = tmp_path / "vms"
    vms.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (vms / UUIDS[0]).symlink_to(victim)
    publisher = PerVmDiskPublisher(vms, 4096, expiration=15)
    renderer = Renderer()
    snap = _snapshot(UUIDS)

    async def go():
        await publisher.start()
        publisher.publish(renderer.render(snap))
        await publisher.stop()

    run(go())
    assert victim.read_text() == "precious"
    # The symlink was replaced by the VM's own disk; the other VM's disk was written.
    assert not (vms / UUIDS[0]).is_symlink()
    assert read_disk(vms / UUIDS[0])[0] == 0x6D766264
    assert read_disk(vms / UUIDS[1])[0] == 0x6D766264


def test_a_document_too_large_for_the_disk_is_reported_and_never_written(tmp_path):
    publisher = PerVmDiskPublisher(tmp_path / "vms", 1024, expiration=15)
    renderer = Renderer()
    big = Snapshot(
        host=tuple(Metric(f"M{i}", "string", "x" * 40) for i in range(20)),
        vms=_snapshot([UUIDS[0]]).vms,
    )

    async def go():
        await publisher.start()
        with pytest.raises(PublishError, match="1024 bytes"):
            publisher.publish(renderer.render(big))
        await publisher.stop()

    run(go())
    path = tmp_path / "vms" / UUIDS[0]
    assert path.stat().st_size == 1024
    assert path.read_bytes() == bytes(1024)


def test_daemon_once_writes_per_vm_disk(tmp_path):
    conf = write_config(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "vhostmd", "--once", "-c", URI, "-f", str(conf)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    uuid = libvirt.openReadOnly(URI).lookupByName("test").UUIDString()
    signature, busy, checksum, length, content = read_disk(tmp_path / "vms" / uuid)
    assert signature == 0x6D766264 and busy == 0 and checksum == signed_sum(content)
    assert f"uuid='{uuid}'" in content.decode()
    assert os.listdir(tmp_path / "vms") == [uuid]


def test_a_reload_keeps_each_vm_disk_and_its_document(tmp_path, rw, caplog):
    # Guests read their disk at any moment: a reload must not empty it, then
    # or at the next update (creating a disk zeroes it first).
    from vhostmd.daemon import Daemon

    caplog.set_level(logging.INFO, logger="vhostmd")

    rw.start_vm("alpha", UUIDS[0])
    conf_path = write_config(tmp_path)
    virt = Libvirt(URI)
    path = tmp_path / "vms" / UUIDS[0]

    async def go():
        config = config_mod.load(conf_path)
        daemon = Daemon(config, conf_path, virt, open_transports(config))
        await start_transports(daemon.pipeline.publishers)
        try:
            await daemon.update()
            before = read_disk(path)
            inode = path.stat().st_ino
            conf_path.write_text(conf_path.read_text().replace("echo 42", "echo 43"))
            def created():
                return [r for r in caplog.records
                        if r.getMessage() == f"created per-VM metrics disk {path}"]

            assert len(created()) == 1
            first = created()
            assert await daemon.reload()
            assert read_disk(path) == before and path.stat().st_ino == inode
            await daemon.update()
            assert created() == first
            return before, read_disk(path)
        finally:
            await close_transports(daemon.pipeline.publishers)

    try:
        before, after = run(go())
    finally:
        virt.close()
    assert b"<value>42</value>" in before[4] and b"<value>43</value>" in after[4]
    assert after[2] == signed_sum(after[4])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a reader as another user")
def test_another_user_opens_a_vm_disk_by_its_path_but_cannot_list_them(tmp_path):
    # QEMU opens the disk as its own user (libvirt-qemu, qemu): the directory
    # the daemon creates as root must let it through, and need show nobody
    # which VMs have disks.
    import shutil
    import tempfile

    if not shutil.which("runuser"):
        pytest.skip("runuser is not installed")
    top = Path(tempfile.mkdtemp(prefix="vhostmd-pervm-", dir="/tmp"))
    try:
        top.chmod(0o755)
        conf = write_config(top)
        result = subprocess.run([sys.executable, "-m", "vhostmd", "--once", "-c", URI, "-f", str(conf)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        uuid = libvirt.openReadOnly(URI).lookupByName("test").UUIDString()
        as_nobody = ["runuser", "-u", "nobody", "--"]
        read = subprocess.run(as_nobody + ["head", "-c", "4", str(top / "vms" / uuid)],
                              capture_output=True, timeout=30)
        assert read.returncode == 0 and read.stdout == b"mvbd", read.stderr
        listing = subprocess.run(as_nobody + ["ls", str(top / "vms")], capture_output=True, timeout=30)
        assert listing.returncode != 0 and uuid.encode() not in listing.stdout
    finally:
        shutil.rmtree(top, ignore_errors=True)
