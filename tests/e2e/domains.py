"""The test guests as libvirt domains: TCG, direct kernel boot, metrics disk and channel."""

import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import libvirt

CHANNEL_NAME = "org.github.vhostmd.1"


@dataclass(frozen=True)
class GuestFiles:
    kernel: Path
    initrd: Path
    metrics_disk: Path


def domain_xml(name: str, files: GuestFiles, console_log: Path) -> str:
    """A minimal domain: the devices the metrics need, and nothing QEMU would spend time on.

    <acpi/> lets the guest's poweroff end the domain; on_reboot/on_crash
    destroy it too, so a guest that panics ends rather than boot again.
    """
    cmdline = "console=ttyS0 quiet panic=-1"
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(files.kernel))}</kernel>
    <initrd>{escape(str(files.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(str(files.metrics_disk))}/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='{CHANNEL_NAME}'/>
    </channel>
    <serial type='file'>
      <source path={quoteattr(str(console_log))}/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


@dataclass
class Guest:
    name: str
    console_log: Path
    domain: libvirt.virDomain | None = None
    uuid: str = ""
    id: int = -1


def define_and_start(conn: libvirt.virConnect, guest: Guest, files: GuestFiles) -> None:
    guest.domain = conn.defineXML(domain_xml(guest.name, files, guest.console_log))
    guest.domain.create()
    guest.uuid = guest.domain.UUIDString()
    guest.id = guest.domain.ID()


def wait_until_off(guests: list[Guest], timeout: float) -> list[str]:
    """Wait for every guest to power itself off; returns the names of those still running."""
    deadline = time.monotonic() + timeout
    running = list(guests)
    while running and time.monotonic() < deadline:
        running = [g for g in running if g.domain.isActive()]
        if running:
            time.sleep(0.25)
    return [g.name for g in running]
