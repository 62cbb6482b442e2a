"""The documentation's examples, and a guest-like place to run them.

An example is a fenced code block in README.md or docs/guest.md whose
language is ``python`` or ``sh``, right below a marker line naming the
configuration it needs:

    <!-- example: conf/vhostmd.conf -->

Every ``python`` block must have one. The daemon (``vhostmd --once -c
test:///default``) writes a disk with that configuration under a temporary
directory; the example then runs as it would in a VM: the disk is attached
as a read-only loop device, and in a private mount namespace ``/sys/block``
lists only that device and ``/sys/class/dmi/id/product_uuid`` holds the
domain's UUID, so the guest library finds the disk by scanning as it does
in a VM, and nothing else on this machine is read.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List, NamedTuple

import pytest

from support import ROOT, daemon_env

GUEST_DIR = ROOT / "guest"
DOCUMENTS = ("README.md", "docs/guest.md")
MARKER = re.compile(r"<!--\s*example:\s*(\S+)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")


class Example(NamedTuple):
    where: str  # file:line of the opening fence
    language: str
    config: str  # None when no marker
    code: str


def examples(documents=DOCUMENTS) -> List[Example]:
    """Every fenced block of the documents, with the configuration its marker names."""
    found = []
    for doc in documents:
        lines = (ROOT / doc).read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = FENCE.match(lines[i])
            if not fence:
                i += 1
                continue
            start = i
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
            marker = MARKER.search(previous)
            found.append(Example("{}:{}".format(doc, start + 1), fence.group(1),
                                 marker.group(1) if marker else None,
                                 "\n".join(lines[start + 1:i]) + "\n"))
            i += 1
    return found


class PublishedDisk(NamedTuple):
    path: Path
    uuid: str  # of the domain whose metrics it holds


def published_disk(config: str, directory: Path) -> PublishedDisk:
    """A metrics disk the real daemon wrote with the shipped *config* for test:///default."""
    text = (ROOT / config).read_text()
    disk = directory / "vhostmd0"
    # Only where it publishes changes: the disk and the channels go to the temporary directory.
    text = re.sub(r"<path>/dev/shm/[^<]*</path>", "<path>{}</path>".format(disk), text)
    text = re.sub(r"<channel_path>[^<]*</channel_path>",
                  "<channel_path>{}</channel_path>".format(directory / "channels"), text)
    conf = directory / Path(config).name
    conf.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "vhostmd", "--once", "-c", "test:///default", "-f", str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
        env=daemon_env(), cwd=str(directory),
    )
    assert result.returncode == 0, result.stderr
    content = disk.read_bytes()
    length = int.from_bytes(content[12:16], "big")
    root = ET.fromstring(content[16:16 + length])
    uuids = {m.get("uuid") for m in root if m.get("context") == "vm"}
    assert len(uuids) == 1, uuids
    return PublishedDisk(disk, uuids.pop())


def loop_device(disk: Path) -> str:
    """Attach *disk* as a read-only loop device (skip where that cannot be done)."""
    if not shutil.which("losetup") or not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("running the examples as in a VM needs root, losetup and unshare")
    probe = subprocess.run(["unshare", "--mount", "true"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("no private mount namespace here: {}".format(probe.stderr.strip()))
    result = subprocess.run(["losetup", "--read-only", "--find", "--show", str(disk)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=30)
    if result.returncode != 0:
        pytest.skip("no loop device for the metrics disk: {}".format(result.stderr.strip()))
    return result.stdout.strip()


def run_in_guest(example: Example, disk: PublishedDisk, env=None,
                 python: str = sys.executable, attach: bool = True) -> subprocess.CompletedProcess:
    """Run *example* with *disk* attached as the VM's read-only metrics disk
    (a python example with the interpreter *python*); with *attach* false,
    in a VM that has no metrics disk."""
    device = loop_device(disk.path) if attach else None
    work = Path(tempfile.mkdtemp(prefix="vhostmd-example-"))
    try:
        (work / "block").mkdir()
        if device:
            name = os.path.basename(device)
            os.symlink("/sys/devices/virtual/block/" + name, str(work / "block" / name))
        (work / "class" / "dmi" / "id").mkdir(parents=True)
        (work / "class" / "dmi" / "id" / "product_uuid").write_text(disk.uuid + "\n")
        (work / "bin").mkdir()
        tool = work / "bin" / "vm-dump-metrics"
        tool.write_text("#!/bin/sh\nexec {} -m vhostmd_guest \"$@\"\n".format(python))
        tool.chmod(0o755)
        suffix = ".py" if example.language == "python" else ".sh"
        script = work / ("example" + suffix)
        script.write_text(example.code)
        interpreter = python if example.language == "python" else "/bin/sh"
        inner = (
            "mount --bind {0}/block /sys/block && mount --bind {0}/class /sys/class && "
            "exec {1} {2}".format(work, interpreter, script)
        )
        full_env = {
            "PATH": "{}:/usr/sbin:/usr/bin:/sbin:/bin".format(work / "bin"),
            "PYTHONPATH": str(GUEST_DIR),
            "LANG": "C.UTF-8",
        }
        full_env.update(env or {})
        return subprocess.run(["unshare", "--mount", "sh", "-c", inner],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120, env=full_env, cwd=str(work))
    finally:
        if device:
            subprocess.run(["losetup", "--detach", device], timeout=30)
        shutil.rmtree(str(work), ignore_errors=True)
