"""Two real guests read their metrics from our daemon, over the disk and over virtio-serial.

All assertions read what each guest printed on its serial console; the
values they check against come from the host side: libvirt's uuid, id and
name of each domain, this run's token and the host's name.
"""

import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.e2e

VM_METRICS = {"VmId", "VmUuid", "VmName"}


def metrics(document: str) -> list[dict]:
    """The metric elements of a document as dicts: attributes plus name and value."""
    root = ET.fromstring(document)
    assert root.tag == "metrics"
    found = []
    for element in root.findall("metric"):
        item = dict(element.attrib)
        item["name"] = element.findtext("name")
        item["value"] = (element.findtext("value") or "").strip()
        found.append(item)
    return found


def host_values(items: list[dict]) -> dict[str, str]:
    return {m["name"]: m["value"] for m in items if m["context"] == "host"}


def vm_values(items: list[dict], uuid: str) -> dict[str, str]:
    return {m["name"]: m["value"] for m in items if m["context"] == "vm" and m.get("uuid") == uuid}


def check_host_metrics(items, outcome):
    assert host_values(items) == {"HostName": outcome.hostname, "E2EToken": outcome.token}


def check_own_vm_metrics(items, guest):
    own = [m for m in items if m["context"] == "vm" and m.get("uuid") == guest.uuid]
    assert {m["name"] for m in own} == VM_METRICS
    assert all(m.get("id") == str(guest.id) for m in own)
    assert vm_values(items, guest.uuid) == {
        "VmId": str(guest.id), "VmUuid": guest.uuid, "VmName": guest.name,
    }


@pytest.fixture(params=[0, 1], ids=["guest-a", "guest-b"])
def guest(request, outcome):
    return outcome.guests[request.param]


def test_both_guests_ran_to_the_end(outcome):
    assert outcome.still_running == [], "guests did not power off in time"
    for g in outcome.guests:
        assert g.report.done, f"{g.name} did not finish its /init; console:\n{g.report.text[-4000:]}"


def test_guest_sees_the_uuid_libvirt_reports(guest):
    # QEMU passes the domain's uuid as the SMBIOS system uuid.
    assert guest.report.section("uuid").strip().lower() == guest.uuid.lower()


def test_disk_found_by_scanning_sys_block_and_read_with_o_direct(guest):
    rc, _ = guest.report.results["vbd"]
    log = guest.report.section("vbd-log")
    assert rc == 0, log
    trace = [line for line in log.splitlines() if line.startswith("E2E-TRACE")]
    assert any(line.startswith("E2E-TRACE list /sys/block") for line in trace), log
    disks = [f"/dev/{name}" for name in guest.report.section("sys-block").split()]
    opened = [line.split()[2] for line in trace if line.startswith("E2E-TRACE open ")]
    assert set(opened) <= set(disks), f"opened something /sys/block did not name: {opened}"
    disk_opens = [line for line in trace if line.startswith("E2E-TRACE open /dev/vd")]
    assert disk_opens, f"no virtio disk was opened:\n{log}"
    # The tool falls back to buffered reads where O_DIRECT is refused; a
    # virtio disk accepts it, so every open of it must have used it.
    assert all("o_direct=yes" in line for line in disk_opens), log


def test_disk_document_holds_host_and_own_vm_metrics(guest, outcome):
    items = metrics(guest.report.section("vbd"))
    check_host_metrics(items, outcome)
    check_own_vm_metrics(items, guest)


def test_disk_is_shared_by_all_guests(guest, outcome):
    # The disk is one file for the whole host: each guest sees every VM.
    items = metrics(guest.report.section("vbd"))
    for other in outcome.guests:
        check_own_vm_metrics(items, other)


def test_virtio_answer_holds_host_and_only_own_vm_metrics(guest, outcome):
    rc, _ = guest.report.results["virtio"]
    answer = guest.report.section("virtio")
    assert rc == 0, guest.report.section("virtio-log") + "\nvhostmd:\n" + outcome.daemon_log[-3000:]
    assert answer.startswith("<metrics>\n") and answer.endswith("</metrics>\n\n"), repr(answer[-200:])
    items = metrics(answer)
    check_host_metrics(items, outcome)
    check_own_vm_metrics(items, guest)
    others = [m for m in items if m["context"] == "vm" and m.get("uuid") != guest.uuid]
    assert others == [], "the answer carries another VM's metrics"


def test_the_two_guests_virtio_answers_differ(outcome):
    a, b = outcome.guests
    answer_a, answer_b = a.report.section("virtio"), b.report.section("virtio")
    assert answer_a != answer_b
    assert vm_values(metrics(answer_a), b.uuid) == {}
    assert vm_values(metrics(answer_b), a.uuid) == {}
    assert host_values(metrics(answer_a)) == host_values(metrics(answer_b))


def test_libvirt_put_the_channels_where_the_daemon_looks(outcome):
    # Session libvirt: <XDG_CONFIG_HOME>/libvirt/qemu/channel/target/domain-<id>-<name>/<name>.
    expected = {
        outcome.channel_target / f"domain-{g.id}-{g.name}" / "org.github.vhostmd.1"
        for g in outcome.guests
    }
    assert expected <= set(outcome.channel_sockets)
