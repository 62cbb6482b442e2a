"""The xenstore publisher against a real oxenstored, one update at a time.

The updates are rendered from snapshots made here; what reached xenstore is
read back with the Xen tools, and oxenstored's access log shows every
operation the publisher made.
"""

from __future__ import annotations

import asyncio
import logging
import re
import xml.etree.ElementTree as ET

import pytest

from support import config_xml, metric
from vhostmd import config as config_mod
from vhostmd.model import Domain, Metric, Snapshot, VmMetrics
from vhostmd.publish import PublishError
from vhostmd.publish.xenstore.client import Client
from vhostmd.publish.xenstore.publisher import XenstorePublisher
from vhostmd.render import Renderer
from vhostmd.transports import close_transports, open_transports
from xenstored import xenstored, xenstored_kit  # noqa: F401  (fixtures)

WEB = Domain(1, "web", "11111111-2222-4333-8444-555555555555")
DB = Domain(2, "db", "66666666-7777-4888-8999-aaaaaaaaaaaa")


def snapshot(*domains: Domain, cpu: str = "1.5", host: str = "h1", known: bool = True) -> Snapshot:
    return Snapshot(
        host=(Metric("HostName", "string", host),),
        vms=tuple(VmMetrics(d, (Metric("TotalCPUTime", "real64", cpu, "s"),)) for d in domains),
        vms_known=known,
    )


class Publisher:
    """A publisher and a renderer on one xenstored, as the pipeline drives them."""

    def __init__(self, xenstored, max_size: int = 2048, client: Client | None = None):
        self.publisher = XenstorePublisher(max_size, client or Client(str(xenstored.socket), timeout=2))
        self.renderer = Renderer()
        asyncio.run(self.publisher.start())

    def update(self, snap: Snapshot) -> None:
        self.publisher.publish(self.renderer.render(snap))

    def refused(self, snap: Snapshot) -> tuple[str, ...]:
        """Update, which must fail; each VM's error, as status shows them."""
        with pytest.raises(PublishError) as failed:
            self.update(snap)
        errors = self.publisher.status().errors
        count = "1 VM document" if len(errors) == 1 else f"{len(errors)} VM documents"
        assert str(failed.value) == f"xenstore: {count} not written (see the log or 'vhostmd status')"
        return errors


def writes(xenstored, path: str) -> int:
    return len(re.findall(rf"\swrite\s+{re.escape(path)} ", xenstored.accesses()))


def test_each_domain_gets_only_its_own_metrics(xenstored):
    for d in (WEB, DB):
        xenstored.add_domain(d.id, d.uuid, d.name)
    Publisher(xenstored).update(snapshot(WEB, DB))
    for d in (WEB, DB):
        root = ET.fromstring(xenstored.read(f"/local/domain/{d.id}/metrics"))
        vm = [m for m in root if m.get("context") == "vm"]
        assert [m.get("uuid") for m in vm] == [d.uuid]
        assert [m.findtext("value") for m in root if m.get("context") == "host"] == ["h1"]
        assert xenstored.perms(f"/local/domain/{d.id}/metrics") == f"n0,r{d.id}"


def test_a_document_is_written_only_when_it_changed(xenstored):
    xenstored.add_domain(WEB.id, WEB.uuid, WEB.name)
    pub = Publisher(xenstored)
    pub.update(snapshot(WEB))
    checks = len(re.findall(r"\sgetperms\s", xenstored.accesses()))
    assert checks
    for _ in range(2):
        pub.update(snapshot(WEB))
    assert writes(xenstored, "/local/domain/1/metrics") == 1
    pub.update(snapshot(WEB, cpu="2.5"))
    assert writes(xenstored, "/local/domain/1/metrics") == 2
    assert b"<value>2.5</value>" in xenstored.read("/local/domain/1/metrics")
    # The permissions are checked once per domain, not at every write.
    assert len(re.findall(r"\sgetperms\s", xenstored.accesses())) == checks


def test_a_domain_xenstore_does_not_know_gets_no_directory(xenstored, caplog):
    xenstored.add_domain(WEB.id, WEB.uuid, WEB.name)
    pub = Publisher(xenstored)
    with caplog.at_level(logging.WARNING):
        pub.update(snapshot(WEB, DB))  # not an error: libxl may not have created it yet
        pub.update(snapshot(WEB, DB, cpu="3"))
    assert not xenstored.exists("/local/domain/2")
    assert [r.getMessage() for r in caplog.records].count(
        "xenstore: VM db (id 2) has no /local/domain/2/vm; its metrics are not written until it does") == 1
    # Once libxl has created it, it is written.
    xenstored.add_domain(DB.id, DB.uuid, DB.name)
    pub.update(snapshot(WEB, DB, cpu="4"))
    assert b"<value>4</value>" in xenstored.read("/local/domain/2/metrics")


class RacingClient(Client):
    """A client during whose write libxl destroys the domain (the race the transaction closes)."""

    def __init__(self, xenstored, domid: int):
        super().__init__(str(xenstored.socket), timeout=2)
        self.xenstored, self.domid, self.raced = xenstored, domid, 0

    def write(self, path, value, tx=0):
        if path == f"/local/domain/{self.domid}/metrics" and self.xenstored.exists(f"/local/domain/{self.domid}"):
            self.xenstored.remove_domain(self.domid)
            self.raced += 1
        super().write(path, value, tx)


def test_a_domain_destroyed_between_check_and_write_is_not_recreated(xenstored):
    xenstored.add_domain(WEB.id, WEB.uuid, WEB.name)
    client = RacingClient(xenstored, WEB.id)
    Publisher(xenstored, client=client).update(snapshot(WEB))
    assert client.raced == 1
    # The C vhostmd would leave /local/domain/1/metrics behind, forever.
    assert not xenstored.exists("/local/domain/1")


def test_a_domain_whose_vm_entry_names_another_uuid_is_refused(xenstored):
    xenstored.add_domain(WEB.id, DB.uuid, "someone-else")
    (error,) = Publisher(xenstored).refused(snapshot(WEB))
    assert f"/local/domain/1/vm is '/vm/{DB.uuid}', not VM web's UUID" in error
    assert not xenstored.exists("/local/domain/1/metrics")


@pytest.mark.parametrize("perms, why", [
    (("n0", "b1"), "domain 1 may write it"),
    (("r0", "r1"), "every domain may read it"),
    (("n1",), "owned by domain 1, not dom0"),
    (("n0", "r1", "w7"), "domain 7 may write it"),
    (("n0",), "domain 1 may not read it"),
])
def test_wrong_permissions_are_refused_and_said(xenstored, perms, why):
    xenstored.add_domain(WEB.id, WEB.uuid, WEB.name)
    xenstored.chmod("/local/domain/1", *perms)
    (error,) = Publisher(xenstored).refused(snapshot(WEB))
    assert f"/local/domain/1 has permissions {','.join(perms)} ({why})" in error
    assert "not written" in error
    assert not xenstored.exists("/local/domain/1/metrics")


def test_an_existing_metrics_node_with_wrong_permissions_is_refused(xenstored):
    xenstored.add_domain(WEB.id, WEB.uuid, WEB.name)
    xenstored.write("/local/domain/1/metrics", "planted")
    xenstored.chmod("/local/domain/1/metrics", "n0", "b1")
    (error,) = Publisher(xenstored).refused(snapshot(WEB))
    assert "/local/domain/1/metrics has permissions n0,b1" in error
    assert xenstored.read("/local/domain/1/metrics") == b"planted"


def test_a_document_over_the_limit_is_not_written_and_logged_once(xenstored, caplog):
    xenstored.add_domain(WEB.id, WEB.uuid, WEB.name)
    xenstored.add_domain(DB.id, DB.uuid, DB.name)
    pub = Publisher(xenstored, max_size=600)
    big = snapshot(WEB, DB, host="x" * 400, cpu="1")
    doc = Renderer().render(big).document_for(WEB.uuid)[0]
    assert len(doc) > 600
    with caplog.at_level(logging.WARNING):
        for cpu in ("1", "22", "333"):  # the size changes, the message does not
            errors = pub.refused(snapshot(WEB, DB, host="x" * 400, cpu=cpu))
    assert len(errors) == 2
    assert f"VM web's document of {len(doc)} bytes is over the limit of 600 bytes" in errors[0]
    assert "VM db's document" in errors[1]
    assert [r.getMessage() for r in caplog.records] == list(errors)
    assert not xenstored.exists("/local/domain/1/metrics")
    status = pub.publisher.status()
    assert {d.path: (d.used, d.size) for d in status.disks}["/local/domain/1/metrics"][1] == 600
    # Back under the limit, it is written and the error clears.
    pub.update(snapshot(WEB, DB))
    assert pub.publisher.status().errors == ()
    assert xenstored.exists("/local/domain/1/metrics")


def test_a_limit_above_xenstoreds_quota_is_explained(xenstored):
    xenstored.add_domain(WEB.id, WEB.uuid, WEB.name)
    pub = Publisher(xenstored, max_size=4000)
    (error,) = pub.refused(snapshot(WEB, host="x" * 2500))
    assert "(E2BIG): its quota (quota-maxsize) is below <xenstore><max_size> 4000" in error
    assert not xenstored.exists("/local/domain/1/metrics")


def test_a_lost_xenstored_is_retried_at_the_next_update(xenstored, caplog):
    xenstored.add_domain(WEB.id, WEB.uuid, WEB.name)
    pub = Publisher(xenstored)
    pub.update(snapshot(WEB))
    xenstored.stop()
    with pytest.raises(PublishError, match="xenstore: lost the connection to xenstored at .*; retrying"):
        pub.update(snapshot(WEB, cpu="2"))
    for _ in range(2):
        with pytest.raises(PublishError, match="xenstore: cannot connect to xenstored at .*; retrying"):
            pub.update(snapshot(WEB, cpu="3"))
    xenstored.start()  # an empty store: libxl's entries are re-created
    xenstored.add_domain(WEB.id, WEB.uuid, WEB.name)
    with caplog.at_level(logging.INFO):
        pub.update(snapshot(WEB, cpu="3"))  # the same document: written again all the same
    assert b"<value>3</value>" in xenstored.read("/local/domain/1/metrics")
    assert xenstored.perms("/local/domain/1/metrics") == "n0,r1"
    assert any("connected to xenstored at" in r.getMessage() and "again" in r.getMessage()
               for r in caplog.records)


def test_domain_0_is_written_like_any_domain(xenstored):
    # libvirt's Xen driver lists Domain-0; xen-init-dom0 gives it a vm entry, owned n0.
    dom0 = Domain(0, "Domain-0", "00000000-0000-0000-0000-000000000000")
    xenstored.write("/local/domain/0/vm", f"/vm/{dom0.uuid}")
    xenstored.chmod("/local/domain/0", "n0")
    Publisher(xenstored).update(snapshot(dom0))
    assert xenstored.perms("/local/domain/0/metrics") == "n0"
    assert f"uuid='{dom0.uuid}'".encode() in xenstored.read("/local/domain/0/metrics")


def test_a_reload_keeps_the_publisher_its_connection_and_what_it_wrote(xenstored, tmp_path):
    xenstored.add_domain(WEB.id, WEB.uuid, WEB.name)
    first = config_mod.parse(config_xml(metric("H", "echo h"), transports=("xenstore",)))
    bigger = config_mod.parse(config_xml(metric("H", "echo h"), transports=("xenstore",),
                                         virtio="<xenstore><max_size>3000</max_size></xenstore>"))

    async def go():
        running = open_transports(first)
        (publisher,) = running
        publisher.client.path = str(xenstored.socket)
        await publisher.start()
        publisher.publish(Renderer().render(snapshot(WEB)))
        kept = open_transports(bigger, running)
        await close_transports(running, keep=kept)
        assert kept == [publisher] and publisher.max_size == 3000 and publisher.client.connected
        publisher.publish(Renderer().render(snapshot(WEB)))  # unchanged: not written again
        await close_transports(kept)

    asyncio.run(go())
    assert writes(xenstored, "/local/domain/1/metrics") == 1
