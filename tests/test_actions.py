"""Shell actions: tokens that cannot inject, timeouts, output checks, group and xml."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support import config_xml, disk_document, metric, process_alive, vhostmd, wait_for, write_node

HOSTILE_NAMES = [
    "a;rm -rf ~",
    "x'$(touch pwned)'\"q",
    "`touch pwned2` && echo",
    "café été",
    "with  spaces\tand tab",
]


def run_once(tmp_path: Path, metrics: str, uri: str = "test:///default", **kwargs):
    disk = tmp_path / "vhostmd0"
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(metrics, disk=disk, **kwargs))
    result = vhostmd("--once", "-c", uri, "-f", str(conf), cwd=tmp_path)
    doc = ET.fromstring(disk_document(disk)) if disk.exists() and disk.stat().st_size else None
    return result, doc


def values(doc, name: str, context: str | None = None) -> list[str]:
    return [m.findtext("value") for m in doc
            if m.findtext("name") == name and (context is None or m.get("context") == context)]


def test_domain_names_cannot_inject_shell_syntax(tmp_path):
    vms = write_node(tmp_path / "node.xml", HOSTILE_NAMES)
    metrics = (
        metric("Plain", "echo NAME", context="vm")
        + metric("Single", "echo 'NAME'", context="vm")
        + metric("Double", 'echo "NAME"', context="vm")
        + metric("Ids", "echo VMID UUID", context="vm")
    )
    result, doc = run_once(tmp_path, metrics, uri=f"test://{tmp_path}/node.xml")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    assert not (Path.home() / "pwned").exists()
    by_uuid = {vm.uuid: vm for vm in vms}
    seen = set()
    for elem in doc:
        if elem.get("context") != "vm":
            continue
        vm = by_uuid[elem.get("uuid")]
        seen.add(vm.name)
        name, value = elem.findtext("name"), elem.findtext("value")
        if name == "Plain":
            assert value == vm.name.strip()
        elif name == "Double":
            # Inside the admin's double quotes the reference's own quotes pair
            # up with them, leaving the expansion unquoted: the shell splits
            # it into words, as it would any variable, but never runs it.
            assert value == " ".join(vm.name.split())
        elif name == "Single":
            assert value == '"${VHOSTMD_VM_NAME}"'  # single quotes keep the reference literal
        elif name == "Ids":
            assert value == f"{int(elem.get('id'))} {vm.uuid}"
    assert seen == set(HOSTILE_NAMES)


def test_tokens_are_whole_words_and_connect_uses_the_uri(tmp_path):
    metrics = (
        metric("Host", "echo HOSTNAME MY_NAME NAME.x", context="vm")
        + metric("Conn", "echo CONNECT")
        + metric("HostCtx", "echo NAME VMID")
    )
    result, doc = run_once(tmp_path, metrics)
    assert result.returncode == 0, result.stderr
    assert values(doc, "Host") == ["HOSTNAME MY_NAME test.x"]
    assert values(doc, "Conn") == ["--connect test:///default"]
    # Outside vm context there is no domain: the tokens stay as they are.
    assert values(doc, "HostCtx") == ["NAME VMID"]


def test_path_setting_becomes_the_actions_path(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "mytool"
    tool.write_text("#!/bin/sh\necho from-mytool\n")
    tool.chmod(0o755)
    result, doc = run_once(tmp_path, metric("T", "mytool"), path=f"{bindir}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert values(doc, "T") == ["from-mytool"]


def test_action_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "child.pid"
    slow = f"sh -c 'echo $$ > {marker}; sleep 60' & sleep 60"
    # Long enough for the background child to record its pid on a busy machine.
    metrics = metric("Slow", slow, attrs=' timeout="3"') + metric("Fast", "echo fast")
    started = time.monotonic()
    result, doc = run_once(tmp_path, metrics)
    assert time.monotonic() - started < 30
    assert result.returncode == 0
    assert "metric 'Slow'" in result.stderr and "timed out after 3 s" in result.stderr
    assert values(doc, "Fast") == ["fast"]
    assert values(doc, "Slow") == []
    child = int(marker.read_text())
    wait_for(lambda: not process_alive(child), timeout=5)


@pytest.mark.parametrize(
    "type_, output, reason",
    [
        ("uint32", "abc", "'abc' is not an integer"),
        ("uint32", "-1", "-1 is out of range for uint32"),
        ("int32", "2147483648", "out of range for int32"),
        ("uint64", "18446744073709551616", "out of range for uint64"),
        ("real64", "1.5.3", "not a decimal number"),
        ("real32", "1e39", "out of range for real32"),
        ("real64", "nan", "not a decimal number"),
    ],
)
def test_values_that_do_not_fit_their_type_are_left_out(tmp_path, type_, output, reason):
    metrics = metric("Bad", f"echo {output}", type_, context="vm") + metric("Good", "echo 7", "uint32", context="vm")
    result, doc = run_once(tmp_path, metrics)
    assert result.returncode == 0
    assert "metric 'Bad' of VM 'test' (id 1)" in result.stderr
    assert reason in result.stderr
    assert values(doc, "Bad") == []
    assert values(doc, "Good") == ["7"]


def test_values_are_stripped_and_integers_normalised(tmp_path):
    metrics = (
        metric("I", "printf '  +007 \\n\\n'", "int32")
        + metric("R", "echo ' 148.770000 '", "real64")
        + metric("S", "printf '\\n  two words \\n'")
    )
    result, doc = run_once(tmp_path, metrics)
    assert result.returncode == 0, result.stderr
    assert values(doc, "I") == ["7"]
    assert values(doc, "R") == ["148.770000"]
    assert values(doc, "S") == ["two words"]


def test_failing_actions_are_left_out_with_their_reason(tmp_path):
    metrics = (
        metric("Exit", "echo partial; echo oops >&2; exit 3")
        + metric("Huge", "head -c 100000 /dev/zero | tr '\\0' x")
        + metric("Binary", "printf '\\377\\376'")
        + metric("Ok", "echo fine")
    )
    result, doc = run_once(tmp_path, metrics)
    assert result.returncode == 0
    assert "metric 'Exit'" in result.stderr and "exited with status 3: oops" in result.stderr
    assert "printed more than 65536 bytes" in result.stderr
    assert "not UTF-8" in result.stderr
    assert [m.findtext("name") for m in doc] == ["Ok"]


def test_group_metrics_split_into_one_element_per_variable(tmp_path):
    metrics = (
        '<metric type="group" context="host" unit="pages/s,faults/s"><name>PageRates</name>'
        "<action>echo 12,34</action>"
        '<variable name="PageInRate" type="uint64"/><variable name="PageFaultRate" type="uint64"/></metric>'
        '<metric type="group" context="vm"><name>Short</name><action>echo 1</action>'
        '<variable name="A" type="uint32"/><variable name="B" type="uint32"/></metric>'
    )
    result, doc = run_once(tmp_path, metrics)
    assert result.returncode == 0
    assert [(m.findtext("name"), m.findtext("value"), m.get("unit")) for m in doc] == [
        ("PageInRate", "12", "pages/s"),
        ("PageFaultRate", "34", "faults/s"),
    ]
    assert "metric 'Short' of VM 'test' (id 1)" in result.stderr
    assert "gave 1 value(s) for 2 variable(s)" in result.stderr


def test_xml_metrics_are_validated_and_published(tmp_path):
    good = (
        "printf \"<metric type='uint32' context='vm'><name>X1</name><value> 5 </value></metric>"
        "<metric type='string' context='vm' unit='u'><name>X2</name><value>a</value></metric>\""
    )
    bad = "echo \"<metric type='uint32' context='host'><value>1</value></metric>\""
    broken = "echo '<metric'"
    metrics = (
        metric("Good", good, "xml", context="vm")
        + metric("Bad", bad, "xml")
        + metric("Broken", broken, "xml")
    )
    result, doc = run_once(tmp_path, metrics)
    assert result.returncode == 0
    vm = [m for m in doc if m.get("context") == "vm"]
    assert [(m.findtext("name"), m.findtext("value"), m.get("id"), m.get("unit")) for m in vm] == [
        ("X1", "5", "1", None),
        ("X2", "a", "1", "u"),
    ]
    assert "metric 'Bad'" in result.stderr and "does not match metric.dtd" in result.stderr
    assert "metric 'Broken'" in result.stderr and "not well-formed" in result.stderr


def test_many_domains_with_hostile_names_each_get_their_own_values(tmp_path):
    names = [f"vm-{i};echo $((6*7))" if i % 2 else f"vm {i} 'q'" for i in range(40)]
    vms = write_node(tmp_path / "node.xml", names)
    result, doc = run_once(tmp_path, metric("N", 'echo "NAME"', context="vm"), uri=f"test://{tmp_path}/node.xml")
    assert result.returncode == 0, result.stderr
    got = {m.get("uuid"): (m.get("id"), m.findtext("value")) for m in doc if m.get("context") == "vm"}
    assert got == {vm.uuid: (str(i + 1), vm.name) for i, vm in enumerate(vms)}
