"""Opening, keeping and closing the transports: every one behind the Publisher protocol."""

from __future__ import annotations

import asyncio
import inspect
import tempfile
from pathlib import Path

from support import config_xml, metric, read_disk
from vhostmd import config as config_mod
from vhostmd.model import Metric, Snapshot
from vhostmd.publish import Publisher
from vhostmd.publish.shared_disk import DiskPublisher
from vhostmd.publish.virtio.transport import VirtioTransport
from vhostmd.render import Renderer
from vhostmd.transports import TRANSPORTS, close_transports, open_transports


def test_every_transport_has_what_the_publisher_protocol_declares():
    declared = {name for name in vars(Publisher) if not name.startswith("_")} | {"name"}
    assert declared == {"name", "start", "publish", "status", "stop"}
    for transport in TRANSPORTS:
        cls = transport.publisher
        assert isinstance(cls.name, str), cls
        assert inspect.iscoroutinefunction(cls.start), cls
        assert inspect.iscoroutinefunction(cls.stop), cls
        assert list(inspect.signature(cls.publish).parameters) == ["self", "rendered"], cls
        assert list(inspect.signature(cls.status).parameters) == ["self"], cls


def _config(tmp_path: Path, name: str, disk: Path, channels: Path, max_channels: int):
    virtio = (f"<virtio><channel_path>{channels}</channel_path>"
              f"<max_channels>{max_channels}</max_channels><expiration_time>15</expiration_time></virtio>")
    path = tmp_path / name
    path.write_text(config_xml(metric("H", "echo h"), disk=disk, transports=("vbd", "virtio"),
                               virtio=virtio))
    return config_mod.load(path)


def test_a_reload_keeps_what_did_not_change_and_closes_the_rest(tmp_path):
    channels = Path(tempfile.mkdtemp(prefix="vhostmd-test-"))
    first = _config(tmp_path, "a.conf", tmp_path / "disk", channels, 10)
    same_disk = _config(tmp_path, "b.conf", tmp_path / "disk", channels, 20)
    other_disk = _config(tmp_path, "c.conf", tmp_path / "other", channels, 20)
    rendered = Renderer().render(Snapshot(host=(Metric("H", "string", "h"),), vms=()))

    async def go():
        running = open_transports(first)
        assert [type(p) for p in running] == [DiskPublisher, VirtioTransport]
        for p in running:
            await p.start()
        disk, virtio = running

        kept = open_transports(same_disk, running)
        await close_transports(running, keep=kept)
        # The disk is the same file and size: kept open, its document kept.
        assert kept[0] is disk and kept[1] is not virtio
        for p in kept:
            await p.start()
        kept[0].publish(rendered)
        assert b"<value>h</value>" in read_disk(tmp_path / "disk").content

        replaced = open_transports(other_disk, kept)
        await close_transports(kept, keep=replaced)
        assert replaced[0] is not disk and replaced[1] is kept[1]
        assert disk.disk._fd == -1  # the old disk's file is closed
        await close_transports(replaced)

    asyncio.run(go())


def test_one_update_leaves_out_the_transports_that_serve_guests(tmp_path):
    config = _config(tmp_path, "a.conf", tmp_path / "disk", tmp_path, 10)
    assert [type(p) for p in open_transports(config, once=True)] == [DiskPublisher]
