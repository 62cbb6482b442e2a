"""A real oxenstored for the tests, run without Xen, and the Xen tools to check it.

Debian's ``xen-utils`` ships oxenstored, the OCaml xenstored (Debian's
default). It runs on a machine without a hypervisor once:

- a small LD_PRELOAD library (``xenstored_stub.c``, compiled here with gcc)
  hands it dummy hypervisor handles and an event channel that never fires,
  and makes its ``setrlimit`` succeed;
- it is started with ``--no-fork --no-domain-init`` and a configuration
  file of the test's own (no persistence, the default 2048-byte quota, logs
  and pid file in the test's directory);
- it runs in a private user and mount namespace (``unshare -Urm``, as root
  or not), because its socket path is fixed at ``/var/run/xenstored/socket``:
  there a tmpfs hides the host's ``/run`` and a temporary directory is
  bound to ``/run/xenstored``. Outside the namespace that directory is an
  ordinary one, so the socket is reached at ``DIR/socket`` through
  ``XENSTORED_PATH``, by the daemon under test and by the real
  ``xenstore-*`` tools alike.

On a socket connection every client is dom0: relative paths resolve under
``/local/domain/0`` and permissions do not restrict it. The tests play
libxl's part by creating ``/local/domain/<id>`` for each VM
(:meth:`Xenstored.add_domain`).

The fixtures install what they need with apt-get (``xen-utils-4.17``,
``xenstore-utils``, ``gcc``) and skip, saying why, only where the packages
cannot be installed or user namespaces are not available.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
STUB_SOURCE = HERE / "xenstored_stub.c"
PACKAGES = ("xen-utils-4.17", "xenstore-utils", "gcc")
TOOLS = ("xenstore-read", "xenstore-write", "xenstore-ls", "xenstore-chmod",
         "xenstore-exists", "xenstore-rm")

_NAMESPACE_SCRIPT = r"""
set -e
run=$(readlink -f /var/run)
mount -t tmpfs -o mode=0755 xenstored-test "$run"
mkdir "$run/xenstored"
mount --bind "$1" "$run/xenstored"
export LD_PRELOAD="$2"
exec "$3" --no-fork --no-domain-init --config-file "$4"
"""


def find_oxenstored() -> str | None:
    found = sorted(glob.glob("/usr/lib/xen-*/bin/oxenstored"))
    return found[-1] if found else None


def _missing() -> list[str]:
    missing = [t for t in (*TOOLS, "gcc", "unshare") if shutil.which(t) is None]
    if find_oxenstored() is None:
        missing.append("oxenstored")
    return missing


def install_prerequisites() -> None:
    """Install oxenstored, the xenstore tools and gcc if missing; skip if impossible."""
    if not _missing():
        return
    if os.geteuid() != 0:
        pytest.skip(f"{', '.join(_missing())} missing, and not root to install {' '.join(PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    subprocess.run([*apt, "update", "-q"], capture_output=True, env=env)
    done = subprocess.run([*apt, "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
                          capture_output=True, text=True, env=env)
    if _missing():
        pytest.skip(f"{', '.join(_missing())} missing and {' '.join(PACKAGES)} cannot be "
                    f"installed: {(done.stderr or done.stdout)[-400:]}")


def check_user_namespaces() -> None:
    try:
        probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"unshare does not run: {err}")
    if probe.returncode != 0:
        pytest.skip(f"user and mount namespaces are not available here (unshare -Urm: "
                    f"{probe.stderr.strip()}); oxenstored cannot be given its socket directory")


def build_stub(directory: Path) -> Path:
    library = directory / "xenstored_stub.so"
    built = subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(library), str(STUB_SOURCE)],
        capture_output=True, text=True,
    )
    if built.returncode != 0:
        raise AssertionError(f"cannot compile {STUB_SOURCE}:\n{built.stderr}")
    return library


@dataclass(frozen=True)
class Kit:
    """What every oxenstored of the session shares."""

    oxenstored: str
    stub: Path


@dataclass
class Tools:
    """The Xen tools' command-line programs, pointed at one xenstored."""

    socket: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("XENSTORED_RUNDIR", None)
        env["XENSTORED_PATH"] = str(self.socket)
        return env

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(list(argv), capture_output=True, env=self.env, timeout=30)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')}")
        return done

    def read(self, path: str) -> bytes:
        """The raw value, byte for byte (``xenstore-read -R`` adds no newline)."""
        return self.run("xenstore-read", "-R", path).stdout

    def write(self, *pairs: str) -> None:
        self.run("xenstore-write", "-R", *pairs)

    def exists(self, path: str) -> bool:
        return self.run("xenstore-exists", path, check=False).returncode == 0

    def rm(self, path: str) -> None:
        self.run("xenstore-rm", path)

    def chmod(self, path: str, *perms: str) -> None:
        self.run("xenstore-chmod", path, *perms)

    def perms(self, path: str) -> str:
        """A node's permissions as ``xenstore-ls -p`` prints them (``n0,r3``)."""
        parent, name = path.rstrip("/").rsplit("/", 1)
        listing = self.run("xenstore-ls", "-p", parent or "/").stdout.decode(errors="replace")
        for line in listing.splitlines():
            if line.startswith(f"{name} = "):
                found = re.search(r"\(([^()]*)\)\s*$", line)
                assert found, line
                return found.group(1)
        raise AssertionError(f"{path} not listed by xenstore-ls -p {parent}:\n{listing}")

    def add_domain(self, domid: int, uuid: str, name: str) -> None:
        """Do what libxl does when it creates domain *domid* (the parts vhostmd reads)."""
        home = f"/local/domain/{domid}"
        self.write(home, "")
        self.chmod(home, "n0", f"r{domid}")
        self.write(f"{home}/vm", f"/vm/{uuid}", f"{home}/name", name, f"{home}/domid", str(domid))
        self.write(f"/vm/{uuid}/name", name, f"/vm/{uuid}/uuid", uuid)

    def remove_domain(self, domid: int) -> None:
        """What libxl does when the domain is destroyed."""
        self.rm(f"/local/domain/{domid}")


class Xenstored(Tools):
    """One oxenstored in its own namespace; its store starts empty."""

    def __init__(self, kit: Kit, directory: Path | None = None):
        # A short directory: a unix socket path must fit in 108 bytes.
        self.directory = Path(directory or tempfile.mkdtemp(prefix="xenstored-"))
        self.rundir = self.directory / "run"
        self.rundir.mkdir(exist_ok=True)
        super().__init__(self.rundir / "socket")
        self.kit = kit
        self.config = self.directory / "oxenstored.conf"
        self.access_log = self.directory / "access.log"
        self.output = self.directory / "output.log"
        self.proc: subprocess.Popen | None = None
        self.config.write_text(
            f"pid-file = {self.directory / 'oxenstored.pid'}\n"
            "persistent = false\n"
            "quota-activate = true\n"
            "quota-maxsize = 2048\n"
            "perms-activate = true\n"
            f"xenstored-log-file = {self.directory / 'oxenstored.log'}\n"
            f"access-log-file = {self.access_log}\n"
            "access-log-read-ops = true\n"
        )

    def start(self, timeout: float = 20.0) -> None:
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                ["unshare", "-Urm", "sh", "-c", _NAMESPACE_SCRIPT, "xenstored-test",
                 str(self.rundir), str(self.kit.stub), self.kit.oxenstored, str(self.config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"oxenstored exited with status {self.proc.returncode}:\n"
                                     f"{self.output.read_text(errors='replace')}")
            if self.socket.exists():
                probe = socket.socket(socket.AF_UNIX)
                try:
                    probe.connect(str(self.socket))
                    return
                except OSError:
                    pass
                finally:
                    probe.close()
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"oxenstored did not listen on {self.socket} within {timeout} s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        try:
            self.socket.unlink()
        except FileNotFoundError:
            pass

    def restart(self) -> None:
        """Stop and start again: the store is empty afterwards (persistent = false)."""
        self.stop()
        self.start()

    def accesses(self) -> str:
        """oxenstored's access log: one line per operation."""
        return self.access_log.read_text(errors="replace") if self.access_log.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def xenstored_kit(tmp_path_factory) -> Kit:
    """oxenstored, the tools and the compiled stub, or a skip saying what is missing."""
    install_prerequisites()
    check_user_namespaces()
    oxenstored = find_oxenstored()
    assert oxenstored is not None
    return Kit(oxenstored, build_stub(tmp_path_factory.mktemp("xenstored-stub")))


@pytest.fixture
def xenstored(xenstored_kit):
    """A running oxenstored with an empty store, stopped after the test."""
    server = Xenstored(xenstored_kit)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
