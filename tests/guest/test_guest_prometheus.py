"""vm-dump-metrics --format prometheus, read back with prometheus-client's parser."""

import math
import os
import subprocess
import sys
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import given, settings, strategies as st

from vhostmd_guest import parse_document
from vhostmd_guest.prometheus import exposition

from guest_vectors import GUEST_DIR, disk_image

parser = pytest.importorskip(
    "prometheus_client.parser", reason="install prometheus-client (the test extra) to parse the output")

UUID = "6be3fdb8-bef5-6fec-b1b7-e61bbceab708"


def metric_xml(name, type_, value, context="host", uuid=None, unit=None):
    attrs = "type={} context={}".format(quoteattr(type_), quoteattr(context))
    if uuid:
        attrs += " id='3' uuid={}".format(quoteattr(uuid))
    if unit:
        attrs += " unit={}".format(quoteattr(unit))
    # Characters XML would normalise away in text are written as references.
    def text(s):
        return escape(s).replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return "<metric {}><name>{}</name><value>{}</value></metric>\n".format(
        attrs, text(name), text(value))


def document(*metrics):
    return ("<metrics>\n" + "".join(metrics) + "</metrics>\n").encode("utf-8")


def families(text):
    """The parsed families, by name; the parser must take every line."""
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def samples(text):
    out = {}
    for family in families(text).values():
        for sample in family.samples:
            key = (sample.name, sample.labels["name"], sample.labels["context"],
                   sample.labels["uuid"])
            assert key not in out, "repeated series {}".format(key)
            out[key] = sample
    return out


HOSTILE = [
    'quote " inside',
    "back\\slash and \\n not a newline",
    "new\nline",
    "café ünïcödé 日本語 ✓",
    'all: "\\\n\\"',
    "trailing backslash\\",
]


def test_numeric_metrics_are_gauges_labelled_by_name_context_and_uuid():
    text = exposition(parse_document(document(
        metric_xml("NumCPUs", "uint32", "4"),
        metric_xml("TotalCPUTime", "real64", "148.77", unit="s"),
        metric_xml("TotalCPUTime", "real64", "69.400000", "vm", UUID, unit="s"),
        metric_xml("Big", "uint64", str(2 ** 64 - 1)),
        metric_xml("Negative", "int32", "-5"),
    )))
    fams = families(text)
    assert set(fams) == {"vhostmd_metric"}
    assert fams["vhostmd_metric"].type == "gauge"
    assert fams["vhostmd_metric"].documentation
    got = {(s.labels["name"], s.labels["context"], s.labels["uuid"], s.labels["unit"]): s.value
           for s in fams["vhostmd_metric"].samples}
    assert got == {
        ("NumCPUs", "host", "", ""): 4,
        ("TotalCPUTime", "host", "", "s"): 148.77,
        ("TotalCPUTime", "vm", UUID, "s"): 69.4,
        ("Big", "host", "", ""): 2 ** 64 - 1,
        ("Negative", "host", "", ""): -5,
    }
    assert "vhostmd_metric{" in text and text.endswith("\n")


def test_string_metrics_are_info_samples_with_the_value_as_label():
    text = exposition(parse_document(document(
        metric_xml("HostName", "string", "host1\n"),
        metric_xml("VmName", "string", "web 1", "vm", UUID),
    )))
    fams = families(text)
    assert set(fams) == {"vhostmd_metric_info"}
    info = fams["vhostmd_metric_info"]
    assert info.type == "gauge"
    got = {(s.labels["name"], s.labels["context"], s.labels["uuid"], s.labels["value"]): s.value
           for s in info.samples}
    assert got == {("HostName", "host", "", "host1"): 1, ("VmName", "vm", UUID, "web 1"): 1}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_and_values_survive_the_parser(hostile):
    text = exposition(parse_document(document(
        metric_xml(hostile, "string", hostile, "vm", UUID),
        metric_xml(hostile, "uint32", "7", unit=hostile),
        metric_xml(hostile + "2", "uint32", "8", "vm", UUID),
    )))
    # One sample per line: an escaped newline never starts a new one.
    assert len([line for line in text.splitlines() if not line.startswith("#")]) == 3
    got = samples(text)
    assert got[("vhostmd_metric_info", hostile, "vm", UUID)].labels["value"] == hostile
    assert got[("vhostmd_metric", hostile, "host", "")].labels["unit"] == hostile
    assert got[("vhostmd_metric", hostile, "host", "")].value == 7
    assert got[("vhostmd_metric", hostile + "2", "vm", UUID)].value == 8


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=40).filter(lambda s: s.strip() == s and s.strip()),
       st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=40).filter(lambda s: s.strip() == s))
def test_any_name_and_value_round_trip(name, value):
    # XML 1.0 cannot carry most C0 controls; the host could not publish them.
    xml_ok = all(c in "\t\n\r" or ord(c) >= 0x20 for c in name + value)
    xml_ok = xml_ok and not any(0xFFFE <= ord(c) <= 0xFFFF for c in name + value)
    if not xml_ok:
        return
    text = exposition(parse_document(document(metric_xml(name, "string", value))))
    (sample,) = families(text)["vhostmd_metric_info"].samples
    assert sample.labels == {"name": name, "context": "host", "uuid": "", "value": value}


def test_unreadable_value_is_nan_and_repeats_are_dropped():
    text = exposition(parse_document(document(
        metric_xml("NumCPUs", "uint32", "many"),
        metric_xml("FreeMem", "uint64", "10"),
        metric_xml("FreeMem", "uint64", "20"),
        metric_xml("FreeMem", "string", "30"),
        metric_xml("Blob", "xml", "<a/>"),
    )))
    got = samples(text)
    assert math.isnan(got[("vhostmd_metric", "NumCPUs", "host", "")].value)
    assert got[("vhostmd_metric", "FreeMem", "host", "")].value == 10
    # A type that is not a number is shown as text, not lost.
    assert ("vhostmd_metric_info", "Blob", "host", "") in got


def test_empty_document_gives_empty_text():
    assert exposition(parse_document(b"<metrics>\n</metrics>\n")) == ""


def dump(*args):
    return subprocess.run(
        [sys.executable, "-m", "vhostmd_guest"] + [str(a) for a in args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
        env=dict(os.environ, PYTHONPATH=str(GUEST_DIR)),
    )


def test_command_line_formats(tmp_path):
    content = document(
        metric_xml(HOSTILE[4], "string", HOSTILE[3]),
        metric_xml("NumCPUs", "uint32", "4"),
    )
    disk = tmp_path / "vhostmd0"
    disk.write_bytes(disk_image(content))
    prom = dump("--format", "prometheus", "--device", disk)
    assert prom.returncode == 0, prom.stderr
    got = samples(prom.stdout.decode("utf-8"))
    assert got[("vhostmd_metric", "NumCPUs", "host", "")].value == 4
    assert got[("vhostmd_metric_info", HOSTILE[4], "host", "")].labels["value"] == HOSTILE[3]
    assert dump("--format", "xml", "--device", disk).stdout == content
    as_json = dump("--format", "json", "--device", disk)
    assert as_json.returncode == 0 and as_json.stdout == dump("--json", "--device", disk).stdout
    bad = dump("--format", "yaml", "--device", disk)
    assert bad.returncode == 2 and b"prometheus" in bad.stderr


def test_document_that_does_not_parse_fails_the_source(tmp_path):
    disk = tmp_path / "vhostmd0"
    disk.write_bytes(disk_image(b"<metrics><metric>"))
    result = dump("-b", "--format", "prometheus", "--device", disk)
    assert result.returncode == 1 and result.stdout == b""
    assert b"not well-formed XML" in result.stderr


def test_what_the_daemon_published(tmp_path):
    """Hostile names, values and domain names through the real daemon, disk and tool."""
    from support import config_xml, metric, vhostmd, write_node

    vms = write_node(tmp_path / "node.xml", ['web "1"', "db\\2", "café"])
    disk = tmp_path / "vhostmd0"
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(
        metric('Host "Name" \\ café', "printf '%s\\n%s' 'a \"q\" \\b' 'ünï'")
        + metric("NumCPUs", "echo 4", "uint32")
        + metric("VmName", "printf '%s' NAME", context="vm")
        + metric("Cpu\\Time", "echo VMID.5", "real64", context="vm", attrs=' unit="s"'),
        disk=disk,
    ))
    result = vhostmd("--once", "-c", "test://{}/node.xml".format(tmp_path), "-f", str(conf))
    assert result.returncode == 0, result.stderr
    prom = dump("--format", "prometheus", "--device", disk)
    assert prom.returncode == 0, prom.stderr
    got = samples(prom.stdout.decode("utf-8"))
    assert got[("vhostmd_metric_info", 'Host "Name" \\ café', "host", "")].labels["value"] == \
        'a "q" \\b\nünï'
    assert got[("vhostmd_metric", "NumCPUs", "host", "")].value == 4
    for i, vm in enumerate(vms, start=1):
        assert got[("vhostmd_metric_info", "VmName", "vm", vm.uuid)].labels["value"] == vm.name
        cpu = got[("vhostmd_metric", "Cpu\\Time", "vm", vm.uuid)]
        assert cpu.value == i + 0.5 and cpu.labels["unit"] == "s"
