"""Our vhostmd daemon, run from this checkout against the private libvirtd."""

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parent.parent.parent

CHANNEL_NAME = "org.github.vhostmd.1"


def config_xml(disk: Path, channel_path: Path, token: str) -> str:
    """Both transports, a one-second period, and metrics whose values the test can predict.

    E2EToken is fresh for every run, so a document left over from an earlier
    run cannot pass. The vm metrics echo the tokens the daemon substitutes,
    so each VM's values name that VM.
    """
    return f"""<vhostmd>
  <globals>
    <disk>
      <name>host-metrics-disk</name>
      <path>{escape(str(disk))}</path>
      <size unit="k">256</size>
    </disk>
    <virtio>
      <channel_path>{escape(str(channel_path))}</channel_path>
      <max_channels>1024</max_channels>
      <expiration_time>15</expiration_time>
    </virtio>
    <update_period>1</update_period>
    <path>/usr/sbin:/usr/bin:/sbin:/bin</path>
    <transport>vbd</transport>
    <transport>virtio</transport>
  </globals>
  <metrics>
    <metric type="string" context="host">
      <name>HostName</name>
      <action>hostname</action>
    </metric>
    <metric type="string" context="host">
      <name>E2EToken</name>
      <action>echo {token}</action>
    </metric>
    <metric type="uint32" context="vm">
      <name>VmId</name>
      <action>echo VMID</action>
    </metric>
    <metric type="string" context="vm">
      <name>VmUuid</name>
      <action>echo UUID</action>
    </metric>
    <metric type="string" context="vm">
      <name>VmName</name>
      <action>echo NAME</action>
    </metric>
  </metrics>
</vhostmd>
"""


class Daemon:
    def __init__(self, config: Path, uri: str, log: Path, pid_file: Path):
        self.config = config
        self.uri = uri
        self.log = log
        # As root the default is /var/run/vhostmd.pid, which a vhostmd
        # serving the machine itself may hold.
        self.pid_file = pid_file
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        # This checkout's package first, whatever the interpreter has installed.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vhostmd", "-d", "-v", "-c", self.uri,
                 "-f", str(self.config), "-p", str(self.pid_file),
                 "--status-file", str(self.pid_file.with_name("status.json"))],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_for_disk(self, disk: Path, timeout: float = 30) -> None:
        """Until the first update is on the disk: QEMU needs the file before a guest starts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vhostmd exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                with open(disk, "rb") as f:
                    signature, busy, _sum, length = struct.unpack(">4sIII", f.read(16))
                if signature == b"mvbd" and not busy and length:
                    return
            except (OSError, struct.error):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"vhostmd wrote no metrics disk in {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
