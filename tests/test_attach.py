"""``vhostmd attach`` / ``detach`` against libvirt's test driver.

Each test gets a node file of its own (``test:///path/node.xml``), so every
connection has a private copy of its domains; changes are observed on the
connection that made them. The test driver cannot hot-plug devices, so
``--live`` is tested for its clear refusal, and the persistent configuration
is changed by redefining the domain, the path taken with any driver that
lacks device attachment.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from itertools import islice
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from vhostmd.commands import attach as attach_mod
from vhostmd import config as config_mod
from vhostmd.commands.attach import AttachError, attach, detach

ROOT = Path(__file__).resolve().parents[1]
UUID = "5a5a5a5a-0000-4000-8000-00000000abcd"

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def node_file(tmp_path: Path, extra_devices: str = "") -> Path:
    path = tmp_path / "node.xml"
    path.write_text(f"""<node>
  <domain type='test'>
    <name>web1</name>
    <uuid>{UUID}</uuid>
    <memory>1048576</memory>
    <os><type>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='{tmp_path}/root.img'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='file' device='cdrom'>
        <source file='{tmp_path}/cd.iso'/>
        <target dev='vdb' bus='virtio'/>
      </disk>
      {extra_devices}
    </devices>
  </domain>
</node>
""")
    return path


def write_config(tmp_path: Path, per_vm: bool = False, transports=("vbd", "virtio")) -> Path:
    per_vm_elem = f"<per_vm>{tmp_path}/vms</per_vm>" if per_vm else ""
    path = tmp_path / "vhostmd.conf"
    path.write_text(f"""<vhostmd>
  <globals>
    <disk><name>m</name><path>{tmp_path}/vhostmd0</path><size unit="k">64</size>{per_vm_elem}</disk>
    <update_period>5</update_period>
    {"".join(f"<transport>{t}</transport>" for t in transports)}
  </globals>
  <metrics/>
</vhostmd>
""")
    return path


@pytest.fixture
def conn(tmp_path):
    c = libvirt.open(f"test://{node_file(tmp_path)}")
    yield c
    c.close()


def config_xml(conn) -> etree._Element:
    return etree.fromstring(conn.lookupByName("web1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def test_attach_adds_read_only_disk_on_a_free_target_and_the_channel(tmp_path, conn):
    config = config_mod.load(write_config(tmp_path))
    outcome = attach(conn, "web1", config)
    assert [d.kind for d in outcome.devices] == ["disk", "channel"]
    root = config_xml(conn)
    (disk,) = [d for d in root.iterfind("devices/disk") if d.find("source").get("file") == f"{tmp_path}/vhostmd0"]
    assert disk.find("target").get("dev") == "vdc"
    assert disk.find("readonly") is not None
    assert disk.find("source").get("startupPolicy") == "optional"
    (channel,) = root.xpath("devices/channel[target/@name='org.github.vhostmd.1']")
    assert channel.get("type") == "unix" and channel.find("target").get("type") == "virtio"
    # The shared disk exists for QEMU to open, zero-filled to the configured size.
    assert (tmp_path / "vhostmd0").stat().st_size == 65536


def test_attach_refuses_when_already_attached_and_changes_nothing(tmp_path, conn):
    config = config_mod.load(write_config(tmp_path))
    attach(conn, "web1", config)
    before = etree.tostring(config_xml(conn))
    with pytest.raises(AttachError) as err:
        attach(conn, "web1", config)
    message = str(err.value)
    assert "'web1' already has the metrics disk" in message and "(target vdc)" in message
    assert "org.github.vhostmd.1" in message and "vhostmd detach web1" in message
    assert etree.tostring(config_xml(conn)) == before


def test_per_vm_mode_attaches_the_vms_own_disk(tmp_path, conn):
    config = config_mod.load(write_config(tmp_path, per_vm=True, transports=("vbd",)))
    outcome = attach(conn, UUID, config)  # by UUID this time
    assert [d.kind for d in outcome.devices] == ["disk"]
    own = tmp_path / "vms" / UUID
    sources = config_xml(conn).xpath("devices/disk/source/@file")
    assert str(own) in sources and f"{tmp_path}/vhostmd0" not in sources
    assert not config_xml(conn).xpath("devices/channel")
    assert stat.S_IMODE(own.stat().st_mode) == 0o644
    assert stat.S_IMODE(own.parent.stat().st_mode) == 0o711


def test_live_attach_on_a_driver_that_cannot_hot_plug_fails_clearly_and_changes_nothing(tmp_path, conn):
    config = config_mod.load(write_config(tmp_path))
    before = etree.tostring(config_xml(conn))
    with pytest.raises(AttachError, match="cannot attach to the running domain of 'web1': .*not supported"):
        attach(conn, "web1", config, live=True)
    assert etree.tostring(config_xml(conn)) == before


def test_live_needs_a_running_domain_and_transient_needs_live(tmp_path, conn):
    config = config_mod.load(write_config(tmp_path))
    conn.lookupByName("web1").destroy()
    with pytest.raises(AttachError, match="'web1' is not running; --live needs a running domain"):
        attach(conn, "web1", config, live=True)
    transient = conn.createXML(
        "<domain type='test'><name>tmp1</name><memory>1048576</memory><os><type>hvm</type></os></domain>", 0)
    with pytest.raises(AttachError, match="'tmp1' is transient"):
        attach(conn, "tmp1", config)
    transient.destroy()


def test_unknown_domain(tmp_path, conn):
    config = config_mod.load(write_config(tmp_path))
    with pytest.raises(AttachError, match="no domain 'nosuch' \\(tried name, UUID and id\\)"):
        attach(conn, "nosuch", config)


def test_detach_removes_both_and_then_refuses(tmp_path, conn):
    config = config_mod.load(write_config(tmp_path))
    attach(conn, "web1", config)
    outcome = detach(conn, "web1", config)
    assert sorted(d.kind for d in outcome.devices) == ["channel", "disk"]
    root = config_xml(conn)
    assert f"{tmp_path}/vhostmd0" not in root.xpath("devices/disk/source/@file")
    assert not root.xpath("devices/channel")
    assert root.xpath("devices/disk/target/@dev") == ["vda", "vdb"]  # the VM's own disks stay
    with pytest.raises(AttachError, match="'web1' has no vhostmd disk or channel in its configuration"):
        detach(conn, "web1", config)


def test_target_names_follow_libvirts_order():
    names = list(islice(attach_mod.target_names(), 28))
    assert names[:3] == ["vda", "vdb", "vdc"] and names[25:28] == ["vdz", "vdaa", "vdab"]


def vhostmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vhostmd", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def test_print_shows_the_xml_and_does_nothing(tmp_path):
    uri = f"test://{node_file(tmp_path)}"
    result = vhostmd("attach", "--print", "-c", uri, "-f", str(write_config(tmp_path)), "web1")
    assert result.returncode == 0, result.stderr
    devices = etree.fromstring(f"<devices>{result.stdout}</devices>")
    disk, channel = devices
    assert disk.find("source").get("file") == f"{tmp_path}/vhostmd0"
    assert disk.find("target").get("dev") == "vdc" and disk.find("readonly") is not None
    assert channel.find("target").get("name") == "org.github.vhostmd.1"
    assert not (tmp_path / "vhostmd0").exists()


def test_command_line_attach_and_refusal(tmp_path):
    conf = str(write_config(tmp_path))
    uri = f"test://{node_file(tmp_path)}"
    done = vhostmd("attach", "-c", uri, "-f", conf, "web1")
    assert done.returncode == 0, done.stderr
    assert f"metrics disk {tmp_path}/vhostmd0 as vdc (read-only): attached to the configuration of web1" in done.stdout
    already = (
        f"<disk type='file' device='disk'><source file='{tmp_path}/vhostmd0'/>"
        "<target dev='vdd' bus='virtio'/><readonly/></disk>"
    )
    uri = f"test://{node_file(tmp_path, already)}"
    refused = vhostmd("attach", "-c", uri, "-f", conf, "web1")
    assert refused.returncode == 1
    assert "vhostmd attach: domain 'web1' already has the metrics disk" in refused.stderr
    detached = vhostmd("detach", "--print", "-c", uri, "-f", conf, "web1")
    assert detached.returncode == 0 and "<target dev='vdd'" in detached.stdout.replace('"', "'")


def test_command_line_reports_a_bad_config_and_a_bad_uri(tmp_path):
    missing = vhostmd("attach", "-f", str(tmp_path / "none.conf"), "web1")
    assert missing.returncode == 1 and "none.conf" in missing.stderr
    bad_uri = vhostmd("attach", "-c", f"test://{tmp_path}/no-node.xml", "-f", str(write_config(tmp_path)), "web1")
    assert bad_uri.returncode == 1 and "cannot connect to libvirt" in bad_uri.stderr
    assert not os.path.exists(tmp_path / "vhostmd0")


def test_xenstore_alone_has_nothing_to_attach_and_says_so(tmp_path):
    conf = str(write_config(tmp_path, transports=("xenstore",)))
    uri = f"test://{node_file(tmp_path)}"
    before = vhostmd("attach", "--print", "-c", uri, "-f", conf, "web1")
    for command in ("attach", "detach"):
        done = vhostmd(command, "-c", uri, "-f", conf, "web1")
        assert done.returncode == 0, done.stderr
        # The test driver's web1 runs as domain 1.
        assert done.stdout == (f"xenstore: nothing to {command}: the daemon writes the domain's "
                               "metrics to /local/domain/1/metrics, which a Xen guest reads with "
                               "vm-dump-metrics -x\n")
    assert before.returncode == 0 and before.stdout == ""
    assert "xenstore: nothing to attach" in before.stderr
    assert not os.path.exists(tmp_path / "vhostmd0")


def test_xenstore_beside_the_disk_attaches_the_disk_and_notes_xenstore(tmp_path):
    conf = str(write_config(tmp_path, transports=("vbd", "xenstore")))
    uri = f"test://{node_file(tmp_path)}"
    done = vhostmd("attach", "-c", uri, "-f", conf, "web1")
    assert done.returncode == 0, done.stderr
    assert "metrics disk" in done.stdout and "xenstore: nothing to attach" in done.stdout
