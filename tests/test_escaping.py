"""Values, names and attributes holding XML's special characters reach guests intact.

The C daemon pasted values into the document as they were, so a value with
``<`` broke it. Here every piece of text is escaped: a mistake in any of
the escapes (text or attribute, host or VM fragment, the disk or the
channel) must fail a test. The document is read from the disk's bytes by
Python's expat parser, independent of the daemon's writer.
"""

from __future__ import annotations

import xml.dom.minidom
from xml.sax.saxutils import escape, quoteattr

from support import config_xml, disk_document, vhostmd, write_node

#: Every character XML treats specially, an escape sequence that must stay
#: literal, a CDATA end, and non-ASCII.
AWKWARD = """a<b>c&d"e'f &amp; ]]> é ü 中 \U0001f600"""
VM_NAME = """vm<&>"'ß"""
UNIT = """<u>&"'ä"""


def element(type_: str, context: str, name: str, action: str, unit: str) -> str:
    return (f'<metric type="{type_}" context="{context}" unit={quoteattr(unit)}>'
            f"<name>{escape(name)}</name><action>{escape(action)}</action></metric>\n")


def test_awkward_values_names_and_units_are_escaped_on_the_disk(tmp_path):
    value_file = tmp_path / "value.txt"
    value_file.write_text(AWKWARD + "\n", encoding="utf-8")
    vms = write_node(tmp_path / "node.xml", [VM_NAME])
    disk = tmp_path / "vhostmd0"
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(
        element("string", "host", "Host<&>\"'é", f"cat {value_file}", UNIT)
        + element("string", "vm", "Vm<&>\"'é", "printf '%s|%s\\n' NAME \"$(cat " + str(value_file) + ")\"",
                  UNIT)
        + element("uint32", "vm", "Plain", "echo 7", UNIT),
        disk=disk,
    ), encoding="utf-8")
    run = vhostmd("--once", "-c", f"test://{tmp_path}/node.xml", "-f", str(conf))
    assert run.returncode == 0, run.stderr
    assert "left out" not in run.stderr, run.stderr

    raw = disk_document(disk).encode("utf-8")
    root = xml.dom.minidom.parseString(raw).documentElement  # expat: fails on any bad escape
    assert root.tagName == "metrics"
    found = {}
    for m in root.getElementsByTagName("metric"):
        name = m.getElementsByTagName("name")[0].firstChild.data
        value = m.getElementsByTagName("value")[0].firstChild.data
        found[name] = (m.getAttribute("context"), m.getAttribute("unit"), m.getAttribute("uuid"), value)
    assert found["Host<&>\"'é"] == ("host", UNIT, "", AWKWARD)
    assert found["Vm<&>\"'é"] == ("vm", UNIT, vms[0].uuid, f"{VM_NAME}|{AWKWARD}")
    assert found["Plain"] == ("vm", UNIT, vms[0].uuid, "7")
    # And none of the special characters is left raw in a value's text.
    assert b"<b>" not in raw and b"c&d" not in raw and b"&amp; ]]>" not in raw
