"""The packages: what they install, and that the installed layout runs.

The builds run the scripts an admin runs (packaging/build-deb, build-rpm,
build-guest), which install their build tools when missing; a test is skipped
only when a tool can neither be found nor installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support import systemd_analyze

ROOT = Path(__file__).resolve().parents[1]
#: The release, from pyproject.toml (every other place must agree: see below).
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


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
    return out / f"vhostmd_{VERSION}_all.deb"


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
        "usr/share/vhostmd/scripts/pagerate.pl",
    ):
        assert (installed / path).exists(), path
    assert os.access(installed / "usr/sbin/vhostmd", os.X_OK)
    info = run("dpkg-deb", "-f", deb, "Depends").stdout
    assert "python3-lxml" in info and "python3-libvirt" in info
    assert "python3 (>= 3.9)" in info, info
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


@pytest.fixture(scope="module")
def rpms(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rpm")
    result = run(ROOT / "packaging" / "build-rpm", out)
    if result.returncode != 0 and not shutil.which("rpmbuild"):
        pytest.skip(f"rpmbuild unavailable: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr
    return out


def copy_checkout(dest: Path) -> None:
    """The files the package builds take: tracked and new ones, never .venv and friends."""
    listed = run("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=ROOT)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.split("\0")):
            if (ROOT / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, dest / name)
    else:
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".git", ".venv", "dist", "build", "run", "__pycache__", "*.egg-info"))


@pytest.fixture(scope="module")
def wheel_modules(tmp_path_factory) -> set[str]:
    """The files of the host package in the wheel pip builds (vhostmd/...)."""
    scratch = tmp_path_factory.mktemp("wheel")
    copy_checkout(scratch / "src")
    result = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", scratch / "out", scratch / "src")
    assert result.returncode == 0, result.stderr
    (wheel,) = (scratch / "out").glob("vhostmd-*.whl")
    names = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("vhostmd/") and not n.endswith("/")}
    assert "vhostmd/__init__.py" in names and "vhostmd/dtd/vhostmd.dtd" in names, names
    return names


def tree_modules(package: Path) -> set[str]:
    """Every module file under PACKAGE, as paths relative to its parent."""
    return {str(p.relative_to(package.parent)) for p in package.rglob("*.py") if "__pycache__" not in p.parts}


def test_the_wheel_has_every_module_of_the_tree(wheel_modules):
    assert tree_modules(ROOT / "vhostmd") <= wheel_modules


def test_the_deb_installs_every_module_of_the_wheel(deb, installed, wheel_modules):
    site = installed / "usr/lib/python3/dist-packages"
    assert {m for m in wheel_modules if not (site / m).is_file()} == set()


def test_the_rpm_lists_every_module_of_the_wheel(rpms, wheel_modules):
    (rpm,) = rpms.glob(f"vhostmd-{VERSION}-*.noarch.rpm")
    files = set(run("rpm", "-qlp", rpm).stdout.split())
    (init,) = [f for f in files if f.endswith("/vhostmd/__init__.py")]
    site = init[: -len("/vhostmd/__init__.py")]
    assert {m for m in wheel_modules if f"{site}/{m}" not in files} == set()


def test_rpm_builds_with_the_same_layout(rpms):
    (rpm,) = rpms.glob(f"vhostmd-{VERSION}-*.noarch.rpm")
    files = run("rpm", "-qlp", rpm).stdout.split()
    for path in ("/usr/sbin/vhostmd", "/etc/vhostmd/vhostmd.conf", "/etc/vhostmd/vhostmd.dtd",
                 "/etc/vhostmd/metric.dtd", "/usr/lib/systemd/system/vhostmd.service",
                 "/usr/share/vhostmd/scripts/pagerate.pl"):
        assert path in files
    assert any(f.startswith("/usr/share/man/man8/vhostmd.8") for f in files)
    assert any(f.startswith("/usr/share/man/man5/vhostmd.conf.5") for f in files)
    configs = run("rpm", "-qcp", rpm).stdout.split()
    assert "/etc/vhostmd/vhostmd.conf" in configs
    assert "python3 >= 3.9" in run("rpm", "-qp", "--requires", rpm).stdout.splitlines()


@pytest.mark.skipif(not (ROOT / "guest" / "vhostmd_guest").is_dir(), reason="no guest package in this checkout")
def test_guest_rpm_replaces_the_c_packages(rpms):
    (rpm,) = rpms.glob(f"vm-dump-metrics-{VERSION}-*.noarch.rpm")
    files = set(run("rpm", "-qlp", rpm).stdout.split())
    assert "/usr/sbin/vm-dump-metrics" in files  # where the C package has it
    (init,) = [f for f in files if f.endswith("/vhostmd_guest/__init__.py")]
    site = init[: -len("/vhostmd_guest/__init__.py")]
    assert {m for m in tree_modules(ROOT / "guest" / "vhostmd_guest") if f"{site}/{m}" not in files} == set()
    assert "python3 >= 3.6" in run("rpm", "-qp", "--requires", rpm).stdout.splitlines()
    # The C -devel package requires its own vm-dump-metrics exactly: the upgrade removes it.
    obsoletes = re.fullmatch(r"vm-dump-metrics-devel < (\d+)\.(\d+)\S*\n",
                             run("rpm", "-qp", "--obsoletes", rpm).stdout)
    assert obsoletes and (int(obsoletes.group(1)), int(obsoletes.group(2))) > (1, 2), obsoletes


def test_every_place_names_the_same_version_above_the_c_packages():
    def found(path: str, pattern: str) -> str:
        match = re.search(pattern, (ROOT / path).read_text(), re.M)
        assert match, f"{path}: no version"
        return match.group(1)

    versions = {
        "pyproject.toml": VERSION,
        "vhostmd/__init__.py": found("vhostmd/__init__.py", r'^__version__ = "([^"]+)"'),
        "packaging/debian/changelog": found("packaging/debian/changelog", r"\Avhostmd \(([^)]+)\)"),
        "packaging/vhostmd.spec": found("packaging/vhostmd.spec", r"^Version: *(\S+)"),
        "spec changelog": found("packaging/vhostmd.spec", r"^%changelog\n\*.* - (\S+)-\d+$"),
    }
    if (ROOT / "guest" / "vhostmd_guest").is_dir():
        versions["guest"] = found("guest/vhostmd_guest/__init__.py", r'^__version__ = "([^"]+)"')
    assert set(versions.values()) == {VERSION}, versions
    # The C vhostmd's packages are at 1.1 and 1.2: ours must sort above them.
    assert tuple(int(n) for n in VERSION.split(".")[:2]) > (1, 2)


def test_pagerate_prints_what_the_c_script_prints():
    def vmstat() -> dict[str, int]:
        with open("/proc/vmstat") as f:
            return {k: int(v) for k, v in (line.split() for line in f)}

    before = vmstat()
    result = run(ROOT / "packaging" / "pagerate.pl")
    after = vmstat()
    assert result.returncode == 0, result.stderr
    # printf("%f,%f"): two decimals with six places, no newline.
    match = re.fullmatch(r"(\d+)\.000000,(\d+)\.000000", result.stdout)
    assert match, repr(result.stdout)
    paged_in, paged_out = int(match.group(1)), int(match.group(2))
    assert paged_in <= after["pgpgin"] - before["pgpgin"]
    assert paged_out <= after["pgpgout"] - before["pgpgout"]


@pytest.mark.skipif(not (ROOT / "guest" / "setup.cfg").exists() and not (ROOT / "guest" / "pyproject.toml").exists(),
                    reason="no guest package in this checkout")
def test_guest_wheel_and_sdist(tmp_path):
    result = run(ROOT / "packaging" / "build-guest", tmp_path, env=dict(os.environ, PYTHON=sys.executable))
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("vhostmd_guest-*-py3-none-any.whl")
    assert list(tmp_path.glob("vhostmd[-_]guest-*.tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "vhostmd_guest/__init__.py" in names
    assert tree_modules(ROOT / "guest" / "vhostmd_guest") <= set(names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vm-dump-metrics = vhostmd_guest.dump:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.skipif(not (ROOT / "guest" / "vhostmd_guest").is_dir(), reason="no guest package in this checkout")
def test_guest_deb_reads_what_the_host_deb_daemon_wrote(deb, installed, tmp_path):
    guest_deb = deb.with_name(f"vm-dump-metrics_{VERSION}_all.deb")
    guest_root = tmp_path / "guest-root"
    assert run("dpkg-deb", "-x", guest_deb, guest_root).returncode == 0
    assert (guest_root / "usr/share/man/man1/vm-dump-metrics.1.gz").exists()
    # Python 3.6 guests: no newer requirement than the guest code has.
    depends = run("dpkg-deb", "-f", guest_deb, "Depends").stdout
    assert re.findall(r"python3 \(>= ([0-9.~]+)\)", depends) == ["3.6"], depends
    env = dict(os.environ, PYTHONPATH=str(installed / "usr/lib/python3/dist-packages"))
    conf = tmp_path / "vhostmd.conf"
    conf.write_text((installed / "etc/vhostmd/vhostmd.conf").read_text()
                    .replace("/dev/shm/vhostmd0", str(tmp_path / "vhostmd0")))
    once = run(sys.executable, installed / "usr/sbin/vhostmd", "--once", "-c", "test:///default", "-f", conf,
               env=env, cwd=tmp_path)
    assert (tmp_path / "vhostmd0").exists(), once.stderr
    # /usr/sbin as the C package has it, and /usr/bin for users' PATH.
    assert os.readlink(guest_root / "usr/bin/vm-dump-metrics") == "../sbin/vm-dump-metrics"
    dump = run(sys.executable, guest_root / "usr/sbin/vm-dump-metrics", "-b", "--device", tmp_path / "vhostmd0",
               env=dict(os.environ, PYTHONPATH=str(guest_root / "usr/lib/python3/dist-packages")), cwd=tmp_path)
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout.startswith("<metrics>\n") and "context='vm'" in dump.stdout
