"""A private libvirtd in session mode, run as an unprivileged account.

Session mode needs no system configuration: as an ordinary user libvirtd
keeps everything under XDG_CONFIG_HOME, XDG_RUNTIME_DIR and
XDG_CACHE_HOME, which point into the test's own directory here, so it
never meets a libvirtd the machine may already run. (System mode as root
would share /var/lib/libvirt and /run/libvirt with the machine, and
without user/group = root in qemu.conf waits on a KVM capability probe.)

QEMU runs as the same account; as a session daemon it daemonizes its
QEMU processes, so stopping libvirtd alone would leave guests behind:
stop() ends them by the pids libvirt recorded, all at once (destroying
domains one by one waits for each QEMU to be reaped, seconds each where
init reaps slowly).
"""

import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import libvirt

ACCOUNT = "vhostmd-e2e"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def unprivileged_account() -> Account:
    """The account to run libvirtd and QEMU as: ourselves, or (as root) a system account made for it."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)
    try:
        entry = pwd.getpwnam(ACCOUNT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", ACCOUNT],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(ACCOUNT)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


class SessionLibvirtd:
    def __init__(self, top: Path, account: Account, log_filters: str = ""):
        self.account = account
        #: libvirtd's log_filters (e.g. "1:qemu.qemu_monitor" logs every
        #: QEMU monitor message); its log goes to self.log.
        self.log_filters = log_filters
        # Short names: channel socket paths must fit in 108 bytes.
        self.home = top / "h"
        self.config = top / "c"
        self.runtime = top / "r"
        self.cache = top / "k"
        self.log = top / "libvirtd.log"
        self.process: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.runtime / "libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        # An explicit socket: the client then neither guesses the path from
        # its own XDG_RUNTIME_DIR nor spawns a daemon of its own.
        return f"qemu+unix:///session?socket={self.socket}"

    @property
    def channel_target(self) -> Path:
        """Where this libvirt puts the channel sockets: <here>/domain-<id>-<name>/<channel name>."""
        return self.config / "libvirt" / "qemu" / "channel" / "target"

    def _own(self, path: Path, mode: int = 0o700) -> None:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        if os.geteuid() == 0:
            os.chown(path, self.account.uid, self.account.gid)

    def start(self, timeout: float = 60) -> None:
        for d in (self.home, self.config, self.runtime, self.cache):
            self._own(d)
        conf_dir = self.config / "libvirt"
        self._own(conf_dir)
        settings = 'log_outputs = "3:stderr"\n'
        if self.log_filters:
            settings = f'log_filters = "{self.log_filters}"\nlog_outputs = "1:stderr"\n'
        (conf_dir / "libvirtd.conf").write_text(settings)
        # "file" instead of virtlogd: no second daemon to start and stop.
        (conf_dir / "qemu.conf").write_text('stdio_handler = "file"\n')
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.config),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_CACHE_HOME": str(self.cache),
            "LC_ALL": "C",
        }
        creds = {}
        if os.geteuid() == 0:
            creds = dict(user=self.account.uid, group=self.account.gid, extra_groups=[])
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["libvirtd"], env=env, cwd=self.home, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **creds,
            )
        # Wait for the socket before trying to connect: every failed attempt
        # would print an error (libvirt's default handler is left alone,
        # as it is process-wide).
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"libvirtd exited with {self.process.returncode}:\n{self.log_text()}")
            if self.socket.exists():
                try:
                    libvirt.open(self.uri).close()
                    return
                except libvirt.libvirtError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not answer within {timeout} s:\n{self.log_text()}")
            time.sleep(0.1)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def connect(self) -> libvirt.virConnect:
        return libvirt.open(self.uri)

    def qemu_pids(self) -> list[int]:
        """The running QEMU processes, from the pid files libvirt keeps per domain."""
        pids = []
        for pidfile in (self.runtime / "libvirt" / "qemu" / "run").glob("*.pid"):
            if pidfile.name == "driver.pid":
                continue  # libvirtd's own lock file
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if _is_qemu(pid):
                pids.append(pid)
        return pids

    def stop(self) -> None:
        """End the QEMU processes libvirt started, all at once, then libvirtd itself."""
        kill_all(self.qemu_pids())
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _is_qemu(pid: int) -> bool:
    # A stale pid file may name a pid that now belongs to something else.
    try:
        return b"qemu" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _gone(pid: int) -> bool:
    """Whether *pid* has ended: no such process, or a zombie its parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X")


def kill_all(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM every QEMU among *pids* at once, SIGKILL those left after *grace* seconds."""
    pids = [pid for pid in pids if _is_qemu(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if not _gone(pid)]
            if pids:
                time.sleep(0.05)
        if not pids:
            return
