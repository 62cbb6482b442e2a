"""The C vhostmd's own shipped configuration publishes what the C daemon publishes.

Its metrics are shell pipelines around Xen's and libvirt's tools and its own
pagerate.pl, which print integers the way C's printf("%f") does
(``28.000000``). The C daemon copies such text as it is; these tests run its
configuration (its metric definitions unchanged; only the disk and the
command search path point into the test's directory) against stand-in tools
that print exactly those formats, and check with the test's own disk reader
what a guest would read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support import disk_document, metric, config_xml, vhostmd

# The metric set of the C vhostmd's vhostmd.xml (names, types, contexts,
# variables and the commands its actions run).
C_METRICS = r"""
  <metric type="string" context="host">
    <name>HostName</name>
    <action>virsh hostname | tr -d '[:space:]'</action>
  </metric>
  <metric type="string" context="host">
    <name>VirtualizationProductInfo</name>
    <action>xm info | gawk '/^xen_(major|minor|extra)/ {print $3}' | \
            tr -d . | tr '[:space:]' .</action>
  </metric>
  <metric type="uint32" context="host">
    <name>TotalPhyCPUs</name>
    <action>xm info | gawk '/^nr_cpus/ {print $3}'</action>
  </metric>
  <metric type="uint32" context="host">
    <name>NumCPUs</name>
    <action>xm info | gawk '/^nr_cpus/ {print $3}'</action>
  </metric>
  <metric type="uint64" context="host">
    <name>TotalPhyMem</name>
    <action>xm info | gawk '/^total_memory/ {print $3}'</action>
  </metric>
  <metric type="uint64" context="host">
    <name>UsedMem</name>
    <action>echo "$((`xentop -b -i 1 | gawk '/Domain-0/ {print $5}'` / 1024))"</action>
  </metric>
  <metric type="uint64" context="host">
    <name>FreeMem</name>
    <action>xm info | gawk '/^max_free_memory/ {print $3}'</action>
  </metric>
  <metric type="uint64" context="host">
    <name>PagedInMemory</name>
    <action>echo "$((`vmstat -s | gawk '/pages paged in/ {print $1}'` / 1024))"</action>
  </metric>
  <metric type="uint64" context="host">
    <name>PagedOutMemory</name>
    <action>echo "$((`vmstat -s | gawk '/pages paged out/ {print $1}'` / 1024))"</action>
  </metric>
  <metric type="group" context="host">
    <name>PageRates</name>
    <action>pagerate.pl</action>
    <variable name="PageInRate" type="uint64"/>
    <variable name="PageFaultRate" type="uint64"/>
  </metric>
"""

# Stand-ins printing what the real tools print on a Xen host.
TOOLS = {
    "xm": """#!/bin/sh
[ "$1" = info ] || exit 1
cat <<'EOF'
host                   : xenhost
nr_cpus                : 8
total_memory           : 32757
free_memory            : 1024
max_free_memory        : 2048
xen_major              : 4
xen_minor              : 17
xen_extra              : .3
EOF
""",
    "xentop": """#!/bin/sh
echo '      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS'
echo '  Domain-0 -----r       1234    0.0    4194304   12.5   no limit       n/a     8'
""",
    # procps's vmstat as it was then (newer ones say "K paged in").
    "vmstat": """#!/bin/sh
echo '     10485760 pages paged in'
echo '      2097152 pages paged out'
""",
    "virsh": """#!/bin/sh
[ "$1" = hostname ] && echo xenhost.example.com
""",
    # The C package's pagerate.pl ends with printf("%f,%f", in, out): two
    # integers as reals, no newline.
    "pagerate.pl": """#!/bin/sh
printf '%f,%f' 28 0
""",
    # Debian has mawk as awk; the C configuration names gawk.
    "gawk": """#!/bin/sh
exec awk "$@"
""",
}


def tool_dir(tmp_path: Path) -> Path:
    bindir = tmp_path / "scripts"
    bindir.mkdir()
    for name, text in TOOLS.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    return bindir


def published(tmp_path: Path, metrics: str) -> tuple[dict[str, str], str]:
    disk = tmp_path / "vhostmd0"
    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml(metrics, disk=disk, size='<size unit="k">256</size>', period=5,
                               path=f"{tool_dir(tmp_path)}:/usr/bin:/usr/sbin:/bin"))
    result = vhostmd("--once", "-f", str(conf), "-c", "test:///default")
    assert result.returncode == 0, result.stderr
    doc = ET.fromstring(disk_document(disk))
    return {m.findtext("name"): m.findtext("value") for m in doc}, result.stderr


def test_the_c_configuration_publishes_every_metric(tmp_path):
    values, log = published(tmp_path, C_METRICS)
    assert values == {
        "HostName": "xenhost.example.com",
        "VirtualizationProductInfo": "4.17.3.",
        "TotalPhyCPUs": "8",
        "NumCPUs": "8",
        "TotalPhyMem": "32757",
        "UsedMem": "4096",
        "FreeMem": "2048",
        "PagedInMemory": "10240",
        "PagedOutMemory": "2048",
        # pagerate.pl's "28.000000,0.000000", published as the integers.
        "PageInRate": "28",
        "PageFaultRate": "0",
    }
    assert "not an integer" not in log


@pytest.mark.parametrize(
    "type_, printed, value",
    [
        ("uint64", "28.000000", "28"),  # printf %f of an integer
        ("uint32", " 7.0\n", "7"),
        ("int32", "-3.000000", "-3"),
        ("int64", "+12.", "12"),
        ("uint64", "0.000000", "0"),
        ("int32", "-0.000000", "0"),
    ],
)
def test_integers_with_a_zero_fraction_are_published_as_integers(tmp_path, type_, printed, value):
    values, _ = published(tmp_path, metric("N", f"printf '%s' '{printed}'", type_))
    assert values == {"N": value}


@pytest.mark.parametrize(
    "type_, printed",
    [
        ("uint64", "28.5"),  # a real fraction
        ("uint64", "28.000001"),
        ("uint32", "1e3"),
        ("uint32", "28.0.0"),
        ("uint32", ".000000"),
        ("uint32", "28,000000"),
        ("uint32", "0x1c"),
        ("uint32", "28.000000 pages"),
        ("uint32", "-1.000000"),  # still out of range for uint32
    ],
)
def test_fractions_and_garbage_are_still_left_out(tmp_path, type_, printed):
    values, log = published(tmp_path, metric("Bad", f"printf '%s' '{printed}'", type_)
                            + metric("Good", "echo 1", "uint32"))
    assert values == {"Good": "1"}
    assert "metric 'Bad'" in log


def test_xml_metrics_with_a_zero_fraction_are_published_as_integers(tmp_path):
    element = ("<metric type='uint64' context='host'><name>X</name>"
               "<value>28.000000</value></metric>")
    values, log = published(tmp_path, metric("Xml", f'echo "{element}"', "xml"))
    assert values == {"X": "28"}, log
