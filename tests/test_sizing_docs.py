"""The sizing figures in the documentation agree with what the daemon does.

Bytes per VM are measured on a document the real daemon publishes for 200
test-driver VMs with the shipped configuration; the estimates and VM counts
are what `vhostmd --check` prints. The prose rounds, hence the tolerances.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import pytest

from benchmarks.nodes import write_node
from support import ROOT, read_disk, vhostmd

SAP = "conf/vhostmd.conf"
UPSTREAM = "conf/vhostmd-upstream.conf"
VMS = 200
#: How far a rounded figure in the prose may be from the measured one.
TOLERANCE = 0.03


def near(prose: float, actual: float, tolerance: float = TOLERANCE) -> bool:
    return abs(prose - actual) <= tolerance * actual


def text(path: str) -> str:
    return " ".join((ROOT / path).read_text().split())  # line breaks do not matter


def find(pattern: str, path: str) -> re.Match:
    match = re.search(pattern, text(path))
    assert match, f"{path} no longer says {pattern!r}: update this test with the prose"
    return match


@pytest.fixture(scope="module")
def measure(tmp_path_factory):
    """(host bytes, bytes per VM) of a document the daemon published with a shipped config."""
    done: dict[str, tuple[int, float]] = {}

    def run(config: str) -> tuple[int, float]:
        if config in done:
            return done[config]
        tmp = tmp_path_factory.mktemp("sizing")
        conf = tmp / "vhostmd.conf"
        conf.write_text(re.sub(
            r"<path>/dev/shm/[^<]*</path>\s*<size[^<]*</size>",
            f'<path>{tmp / "disk"}</path><size unit="m">1</size>',
            (ROOT / config).read_text(),
        ).replace("<transport>virtio</transport>", ""))
        result = vhostmd("--once", "-c", write_node(tmp, VMS), "-f", str(conf))
        assert result.returncode == 0, result.stderr
        content = read_disk(tmp / "disk").content
        first_vm = content.index(b"context='vm'")
        host = content.rindex(b"\n", 0, first_vm) + 1 + len(b"</metrics>\n")
        done[config] = host, (len(content) - host) / VMS
        return done[config]

    return run


class Estimate(NamedTuple):
    line: str
    vms: int
    vm_bytes: int


_ESTIMATES: dict[tuple[str, str | None], Estimate] = {}


def estimate(config: str, tmp_path, size: str | None = None) -> Estimate:
    """What `vhostmd --check` says of *config* (with the disk's <size> replaced by *size*)."""
    if (config, size) in _ESTIMATES:
        return _ESTIMATES[config, size]
    path = ROOT / config
    if size:
        path = tmp_path / f"check-{len(_ESTIMATES)}.conf"
        path.write_text(re.sub(r"<size[^<]*</size>", size, (ROOT / config).read_text()))
    result = vhostmd("--check", "-f", str(path))
    assert result.returncode == 0, result.stderr
    (line,) = [l for l in result.stdout.splitlines() if l.startswith("vbd:")]
    found = re.search(r"holds about (\d+) VMs \((\d+) bytes per VM", line)
    assert found, line
    _ESTIMATES[config, size] = Estimate(line, int(found[1]), int(found[2]))
    return _ESTIMATES[config, size]


def test_check_prints_the_line_the_docs_show(tmp_path):
    assert f"`{estimate(SAP, tmp_path).line}`" in text("docs/performance.md")


@pytest.mark.parametrize("config", [SAP, UPSTREAM])
def test_performance_table(measure, config, tmp_path):
    _, per_vm = measure(config)
    est = estimate(config, tmp_path)
    row = find(rf"`{re.escape(config)}`\), \d vm metrics? \| about (\d+) \((\d+) estimated\) \| "
               r"about (\d+) \|", "docs/performance.md")
    assert near(int(row[1]), per_vm), (row[0], per_vm)
    assert (int(row[2]), int(row[3])) == (est.vm_bytes, est.vms)


def test_sap_figures_in_prose(measure, tmp_path):
    host, per_vm = measure(SAP)
    est = estimate(SAP, tmp_path)
    vms = est.vms
    rest = find(r"takes about ([\d.]+) KiB with the SAP set", "docs/performance.md")
    assert near(float(rest[1]) * 1024, host, 0.06), host
    readme = find(r"about ([\d.]+) KiB plus about (\d+) bytes per VM: the default 256 KiB "
                  r"holds about (\d+) VMs. .{0,200}?(\d+) bytes per VM for the SAP set", "README.md")
    assert near(float(readme[1]) * 1024, host, 0.06) and near(int(readme[2]), per_vm)
    assert near(int(readme[3]), vms) and int(readme[4]) == est.vm_bytes
    ops = find(r"about ([\d.]+) KiB plus (\d+) bytes per VM, so the default 256 KiB disk "
               r"holds about (\d+) VMs", "docs/operations.md")
    assert near(float(ops[1]) * 1024, host, 0.06) and near(int(ops[2]), per_vm)
    assert near(int(ops[3]), vms)
    for rows in re.finditer(r"\| (\d+) \| ~(\d+) KiB \| (\d+)%", text("docs/operations.md")):
        count, kib, fill = map(int, rows.groups())
        document = host + count * per_vm
        assert near(kib * 1024, document, 0.05) and abs(fill - 100 * document / (262144 - 16)) <= 1.5
    conf = find(r"holds about (\d+) VMs at 256 KiB \(about (\d+) bytes per VM\)", SAP)
    assert near(int(conf[1]), vms) and near(int(conf[2]), per_vm)
    mib = find(r"1 MiB holds about (\d+) VMs and 2 MiB about (\d+)", "docs/performance.md")
    assert near(int(mib[1]), estimate(SAP, tmp_path, '<size unit="m">1</size>').vms)
    assert near(int(mib[2]), estimate(SAP, tmp_path, '<size unit="m">2</size>').vms)
