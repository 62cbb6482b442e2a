"""The .debs as an admin installs them, run with Debian's own Python.

The packages are built by packaging/build-deb and installed with
``apt-get install ./*.deb`` (their dependencies from the Debian mirror the
machine's apt sources name) into a clean Debian 12 root made by
``debootstrap --variant=minbase bookworm``. Inside it (chroot), with its
/usr/bin/python3, no venv and no PYTHONPATH, the installed commands run: the
checks, one update on libvirt's test driver, the daemon with `vhostmd status`,
`vhostmd attach --print`, the guest's `vm-dump-metrics` reading the disk and
pagerate.pl. Nothing of the checkout is visible in there, so a module the
packaging leaves out fails here as it would on a host.

The pristine root is made once and kept as a tarball in
~/.cache/vhostmd-chroot (VHOSTMD_CHROOT_CACHE to move it), with the downloaded
.debs beside it: later runs unpack it (a few seconds) instead of running
debootstrap (about 30 s), and download only what is not cached. The root is a
tmpfs in a mount namespace of its own (unshare -m) where /proc, /dev and the
.deb cache are mounted; the commands join it with nsenter. The namespace lives
as long as a holder process that waits on a pipe from the test, so the tmpfs
and the mounts go away when the test ends, however it ends, and nothing is
ever mounted outside. Needs root (debootstrap, chroot, mounts).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("VHOSTMD_CHROOT_CACHE", Path.home() / ".cache" / "vhostmd-chroot"))
PRISTINE = CACHE / "bookworm-minbase.tar"
ARCHIVES = CACHE / "archives"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
#: What the commands inside see: Debian's own interpreter and nothing of ours.
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: debootstrap, chroot and mounts")


def run(*args, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 900)
    return subprocess.run([str(a) for a in args], **kw)


def bookworm_mirror() -> str:
    """The first Debian mirror the machine's apt sources use for bookworm."""
    sources = Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        if source.suffix == ".sources":  # deb822: blocks of "Field: value" lines
            for block in re.split(r"\n\s*\n", text):
                fields = dict(
                    line.split(":", 1) for line in block.splitlines()
                    if ":" in line and not line.lstrip().startswith("#") and not line[0].isspace()
                )
                fields = {k.strip().lower(): v.split() for k, v in fields.items()}
                if ("deb" in fields.get("types", []) and "bookworm" in fields.get("suites", [])
                        and fields.get("uris") and fields.get("enabled", ["yes"]) != ["no"]):
                    return fields["uris"][0]
        elif source.name == "sources.list" or source.suffix == ".list":
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                    return words[1]
    return FALLBACK_MIRROR


def ensure_debootstrap() -> None:
    if shutil.which("debootstrap"):
        return
    run("apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-q")
    result = run("apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q",
                 "--no-install-recommends", "debootstrap",
                 env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if not shutil.which("debootstrap"):
        pytest.skip(f"debootstrap is missing and could not be installed: {result.stderr[-300:]}")


class Chroot:
    """A root directory with /proc, /dev and the .deb cache mounted, in a mount namespace of its own.

    A holder process keeps the namespace (and with it the mounts) alive until
    close(), or until the test process dies: it waits on a pipe from us. With
    TARBALL, the root is a tmpfs inside the namespace with the tarball
    unpacked into it, so it costs no disk writes and vanishes with the holder.
    """

    def __init__(self, root: Path, tarball: Path | None = None):
        ARCHIVES.joinpath("partial").mkdir(parents=True, exist_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        script = (
            'set -e; r=$1; a=$2; t=$3; '
            'if [ -n "$t" ]; then mount -t tmpfs -o size=4g,mode=0755 vhostmd-test "$r"; '
            'tar -C "$r" --numeric-owner -xf "$t"; fi; '
            'mount -t proc proc "$r/proc"; '
            'mount --bind /dev "$r/dev"; '
            'mount --bind "$a" "$r/var/cache/apt/archives"; '
            'echo ready; exec cat >/dev/null'
        )
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
             str(root), str(ARCHIVES), str(tarball or "")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        if self.holder.stdout.readline() != "ready\n":
            self.holder.stdin.close()
            raise AssertionError(f"cannot set up {root}: {self.holder.stderr.read()}")
        #: The root as seen from outside the namespace.
        self.files = Path(f"/proc/{self.holder.pid}/root") / root.relative_to("/")

    def command(self, *command) -> list[str]:
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "chroot", str(self.root),
                "env", "-i", *[f"{k}={v}" for k, v in CHROOT_ENV.items()], *[str(c) for c in command]]

    def run(self, *command, **kw) -> subprocess.CompletedProcess:
        return run(*self.command(*command), **kw)

    def start(self, *command) -> subprocess.Popen:
        return subprocess.Popen(self.command(*command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def close(self) -> None:
        self.holder.stdin.close()
        self.holder.wait(timeout=60)


def pristine_root() -> Path:
    """The cached tarball of a fresh minbase bookworm, made when missing."""
    if PRISTINE.exists():
        return PRISTINE
    ensure_debootstrap()
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(run("mktemp", "-d", "-p", CACHE).stdout.strip())
    try:
        root = scratch / "root"
        made = run("debootstrap", "--variant=minbase", "bookworm", root, bookworm_mirror())
        assert made.returncode == 0, f"debootstrap failed:\n{made.stdout[-2000:]}\n{made.stderr[-2000:]}"
        # What apt reads, so that a later run does not need "apt-get update".
        box = Chroot(root)
        try:
            must(box.run("apt-get", "-q", "update"))
        finally:
            box.close()
        partial = scratch / "bookworm-minbase.tar.part"
        assert run("tar", "-C", root, "--numeric-owner", "-cf", partial, ".").returncode == 0
        partial.rename(PRISTINE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PRISTINE


def must(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    command = result.args[result.args.index("-i") + 1 + len(CHROOT_ENV):] if "-i" in result.args else result.args
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("debs")
    result = run(ROOT / "packaging" / "build-deb", out)
    assert result.returncode == 0, result.stderr
    built = sorted(out.glob("*.deb"))
    assert {p.name.split("_")[0] for p in built} == {"vhostmd", "vm-dump-metrics"}, built
    return built


@pytest.fixture(scope="module")
def system(debs, tmp_path_factory) -> Chroot:
    """A fresh Debian 12 root with both .debs installed by apt-get."""
    box = Chroot(tmp_path_factory.mktemp("chroot"), pristine_root())
    try:
        files = box.files
        shutil.copy("/etc/resolv.conf", files / "etc" / "resolv.conf")
        # No service is started in a chroot (invoke-rc.d asks this).
        policy = files / "usr" / "sbin" / "policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        (files / "tmp" / "debs").mkdir()
        for deb in debs:
            shutil.copy(deb, files / "tmp" / "debs")
        install = ["apt-get", "-q", "-y", "--no-install-recommends", "install",
                   *[f"./tmp/debs/{d.name}" for d in debs]]
        installed = box.run("sh", "-c", 'cd / && exec "$@"', "sh", *install)
        if installed.returncode != 0 and "404" in installed.stdout + installed.stderr:
            # The cached package lists are older than the mirror: refresh them.
            must(box.run("apt-get", "-q", "update"))
            installed = box.run("sh", "-c", 'cd / && exec "$@"', "sh", *install)
        must(installed)
        yield box
    finally:
        box.close()  # the tmpfs and every mount go with the namespace


@pytest.fixture(scope="module")
def config(system) -> str:
    """The shipped configuration with its disk in /tmp, and pagerate.pl as a C config calls it."""
    text = (system.files / "etc/vhostmd/vhostmd.conf").read_text()
    assert "/dev/shm/vhostmd0" in text
    text = text.replace("/dev/shm/vhostmd0", "/tmp/vhostmd0")
    rates = (
        '<metric type="group" context="host" cnt="2"><name>PageRates</name>'
        "<action>pagerate.pl</action>"
        '<variable name="PageInRate" type="real64"/><variable name="PageFaultRate" type="real64"/>'
        "</metric>\n  </metrics>"
    )
    text = text.replace("</metrics>", rates)
    # The C configuration's search path names the scripts' directory.
    text, found = re.subn(r"<path>([^<]*:[^<]*)</path>", r"<path>\1:/usr/share/vhostmd/scripts</path>", text)
    assert found == 1, text
    (system.files / "tmp/vhostmd.conf").write_text(text)
    return "/tmp/vhostmd.conf"


def test_every_installed_module_imports_with_debians_python(system):
    out = must(system.run("python3", "-c", (
        "import importlib, pkgutil, sys, vhostmd, vhostmd_guest\n"
        "for pkg in (vhostmd, vhostmd_guest):\n"
        "    for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not mod.name.endswith('.__main__'):  # that one runs the command\n"
        "            importlib.import_module(mod.name)\n"
        "print(sys.executable, sys.prefix == sys.base_prefix, vhostmd.__file__, vhostmd_guest.__file__)\n"
    ))).stdout.split()
    assert out == ["/usr/bin/python3", "True",
                   "/usr/lib/python3/dist-packages/vhostmd/__init__.py",
                   "/usr/lib/python3/dist-packages/vhostmd_guest/__init__.py"]


def test_check_validates_the_installed_configuration(system):
    result = must(system.run("vhostmd", "--check"))
    assert "valid" in result.stdout


def test_one_update_then_the_guest_tool_reads_it(system, config):
    must(system.run("vhostmd", "--once", "-c", "test:///default", "-f", config))
    assert (system.files / "tmp/vhostmd0").read_bytes()[:4] == b"mvbd"
    dump = must(system.run("vm-dump-metrics", "-b", "--device", "/tmp/vhostmd0"))
    assert dump.stdout.startswith("<metrics>\n") and "context='vm'" in dump.stdout
    # The C configuration's pagerate.pl, found through <path>: two rates.
    rates = re.search(r"<name>PageInRate</name>\s*<value>([^<]*)</value>", dump.stdout)
    assert rates and re.fullmatch(r"\d+\.\d{6}", rates.group(1)), dump.stdout
    assert os.access(system.files / "usr/sbin/vm-dump-metrics", os.X_OK)


def test_status_of_the_running_daemon(system, config):
    state = system.files / "run/vhostmd/status.json"
    daemon = system.start("vhostmd", "-d", "-c", "test:///default", "-f", config)
    try:
        deadline = time.monotonic() + 60
        while not state.exists() and daemon.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.exists(), f"no state file; daemon exited {daemon.poll()}"
        while True:  # the first update takes pagerate.pl's second
            status = system.run("vhostmd", "status", "--json")
            if status.returncode == 0 or daemon.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        must(status)
        report = json.loads(status.stdout)
        assert report["running"] and report["healthy"], report
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err


def test_attach_print_shows_the_disk(system, config):
    result = must(system.run("vhostmd", "attach", "--print", "-c", "test:///default", "-f", config, "test"))
    assert "<source file='/tmp/vhostmd0'" in result.stdout, result.stdout


def test_pagerate_prints_the_c_scripts_format(system):
    result = must(system.run("/usr/share/vhostmd/scripts/pagerate.pl"))
    assert re.fullmatch(r"\d+\.\d{6},\d+\.\d{6}", result.stdout), result.stdout
