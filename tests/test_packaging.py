"""The packages: what they install, and that the installed layout runs.

The builds run the scripts an admin runs (packaging/build-deb, build-rpm,
build-guest), which install their build tools when missing; a test is skipped
only when a tool can neither be found nor installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support import systemd_analyze

ROOT = Path(__file__).resolve().parents[1]


def run(*args, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 600)
    return subprocess.run([str(a) for a in args], **kw)


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    result = run(ROOT / "packaging" / "build-deb", out)
    if result.returncode != 0 and not shutil.which("dpkg-buildpackage"):
        pytest.skip(f"dpkg-buildpackage unavailable: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr
    return out / "vhostmd_0.1.0_all.deb"


@pytest.fixture(scope="module")
def installed(deb, tmp_path_factory) -> Path:
    """The host package unpacked into a scratch root."""
    root = tmp_path_factory.mktemp("root")
    assert run("dpkg-deb", "-x", deb, root).returncode == 0
    return root


def test_deb_installs_the_reference_paths(deb, installed):
    for path in (
        "usr/sbin/vhostmd",
        "etc/vhostmd/vhostmd.conf", "etc/vhostmd/vhostmd.dtd", "etc/vhostmd/metric.dtd",
        "lib/systemd/system/vhostmd.service",
        "usr/share/man/man8/vhostmd.8.gz", "usr/share/man/man5/vhostmd.conf.5.gz",
        "usr/lib/python3/dist-packages/vhostmd/dtd/vhostmd.dtd",
        "usr/lib/sysusers.d/vhostmd.conf", "etc/default/vhostmd",
    ):
        assert (installed / path).exists(), path
    assert os.access(installed / "usr/sbin/vhostmd", os.X_OK)
    info = run("dpkg-deb", "-f", deb, "Depends").stdout
    assert "python3-lxml" in info and "python3-libvirt" in info
    control = run("dpkg-deb", "-I", deb, "conffiles").stdout.split()
    assert "/etc/vhostmd/vhostmd.conf" in control


def test_the_installed_daemon_runs_from_its_installed_files(installed, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(installed / "usr/lib/python3/dist-packages"))
    where = run(sys.executable, "-c", "import vhostmd; print(vhostmd.__file__)", env=env, cwd=tmp_path)
    assert where.stdout.startswith(str(installed)), where
    conf = installed / "etc/vhostmd/vhostmd.conf"
    check = run(sys.executable, installed / "usr/sbin/vhostmd", "--check", "-f", conf, env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "valid" in check.stdout
    local = tmp_path / "vhostmd.conf"
    local.write_text(conf.read_text().replace("/dev/shm/vhostmd0", str(tmp_path / "vhostmd0")))
    once = run(sys.executable, installed / "usr/sbin/vhostmd", "--once", "-c", "test:///default", "-f", local,
               env=env, cwd=tmp_path)
    assert (tmp_path / "vhostmd0").read_bytes()[:4] == b"mvbd", once.stderr


def test_the_packaged_unit_verifies_against_the_packaged_files(installed, tmp_path):
    analyze = systemd_analyze()
    unit = tmp_path / "vhostmd.service"
    daemon = installed / "usr/sbin/vhostmd"
    unit.write_text(
        (installed / "lib/systemd/system/vhostmd.service").read_text()
        .replace("ExecStart=/usr/sbin/vhostmd ", f"ExecStart={daemon} ")
    )
    result = run(analyze, "verify", unit, env=dict(os.environ, MANPATH=str(installed / "usr/share/man")))
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_rpm_builds_with_the_same_layout(tmp_path):
    result = run(ROOT / "packaging" / "build-rpm", tmp_path)
    if result.returncode != 0 and not shutil.which("rpmbuild"):
        pytest.skip(f"rpmbuild unavailable: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr
    (rpm,) = tmp_path.glob("vhostmd-0.1.0-*.noarch.rpm")
    files = run("rpm", "-qlp", rpm).stdout.split()
    for path in ("/usr/sbin/vhostmd", "/etc/vhostmd/vhostmd.conf", "/etc/vhostmd/vhostmd.dtd",
                 "/etc/vhostmd/metric.dtd", "/usr/lib/systemd/system/vhostmd.service"):
        assert path in files
    assert any(f.startswith("/usr/share/man/man8/vhostmd.8") for f in files)
    assert any(f.startswith("/usr/share/man/man5/vhostmd.conf.5") for f in files)
    configs = run("rpm", "-qcp", rpm).stdout.split()
    assert "/etc/vhostmd/vhostmd.conf" in configs


@pytest.mark.skipif(not (ROOT / "guest" / "setup.cfg").exists() and not (ROOT / "guest" / "pyproject.toml").exists(),
                    reason="no guest package in this checkout")
def test_guest_wheel_and_sdist(tmp_path):
    result = run(ROOT / "packaging" / "build-guest", tmp_path, env=dict(os.environ, PYTHON=sys.executable))
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("vhostmd_guest-*-py3-none-any.whl")
    assert list(tmp_path.glob("vhostmd[-_]guest-*.tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "vhostmd_guest/__init__.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vm-dump-metrics = vhostmd_guest.dump:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.skipif(not (ROOT / "guest" / "vhostmd_guest").is_dir(), reason="no guest package in this checkout")
def test_guest_deb_reads_what_the_host_deb_daemon_wrote(deb, installed, tmp_path):
    guest_deb = deb.with_name("vm-dump-metrics_0.1.0_all.deb")
    guest_root = tmp_path / "guest-root"
    assert run("dpkg-deb", "-x", guest_deb, guest_root).returncode == 0
    assert (guest_root / "usr/share/man/man1/vm-dump-metrics.1.gz").exists()
    env = dict(os.environ, PYTHONPATH=str(installed / "usr/lib/python3/dist-packages"))
    conf = tmp_path / "vhostmd.conf"
    conf.write_text((installed / "etc/vhostmd/vhostmd.conf").read_text()
                    .replace("/dev/shm/vhostmd0", str(tmp_path / "vhostmd0")))
    once = run(sys.executable, installed / "usr/sbin/vhostmd", "--once", "-c", "test:///default", "-f", conf,
               env=env, cwd=tmp_path)
    assert (tmp_path / "vhostmd0").exists(), once.stderr
    dump = run(sys.executable, guest_root / "usr/bin/vm-dump-metrics", "-b", "--device", tmp_path / "vhostmd0",
               env=dict(os.environ, PYTHONPATH=str(guest_root / "usr/lib/python3/dist-packages")), cwd=tmp_path)
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout.startswith("<metrics>\n") and "context='vm'" in dump.stdout
