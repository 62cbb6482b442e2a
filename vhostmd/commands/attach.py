"""``vhostmd attach`` / ``vhostmd detach``: give a VM the metrics disk and channel.

Attaching adds to a domain's persistent configuration (and with ``--live`` to
the running domain):

- the metrics disk, read-only: the shared disk, or in per-VM mode the VM's
  own ``DIR/<uuid>``, on the first free ``vdX`` target, with
  ``startupPolicy='optional'`` so that a VM started while the file does not
  exist (the daemon has not run yet since the host booted) still boots;
- the virtio-serial channel ``org.github.vhostmd.1`` (libvirt creates the
  host socket in its channel directory, where the daemon looks).

Which of the two is attached follows the configuration's transports. The
xenstore transport needs nothing attached: a Xen guest reads its metrics from
its own xenstore directory, so for it the commands only say so.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import libvirt
from lxml import etree

from .. import config as config_mod
from ..config import Config, ConfigError
from ..publish.disk import DiskError, MetricsDisk
from ..publish.per_vm_disks import disk_path as per_vm_disk_path, prepare_directory
from ..collect.virt import quiet_libvirt
from ..publish.virtio.naming import CHANNEL_NAME

log = logging.getLogger(__name__)

TARGET_PREFIX = "vd"
EXIT_OK, EXIT_FAILURE = 0, 1

quiet_libvirt()


class AttachError(Exception):
    """Attaching or detaching cannot be done; the message says why."""


@dataclass(frozen=True)
class Device:
    """One device vhostmd puts into a domain."""

    kind: str  # "disk" or "channel"
    xml: str
    description: str


@dataclass(frozen=True)
class Outcome:
    """What attach or detach did (or, with --print, would do)."""

    domain: str
    devices: tuple[Device, ...]
    live: bool
    persistent: bool
    #: The domain's id while it runs (-1 otherwise), for the xenstore note.
    domid: int = -1


def disk_xml(path: Path, target: str) -> str:
    return (
        "<disk type='file' device='disk'>\n"
        "  <driver name='qemu' type='raw'/>\n"
        f"  <source file={_quote(str(path))} startupPolicy='optional'/>\n"
        f"  <target dev='{target}' bus='virtio'/>\n"
        "  <readonly/>\n"
        "</disk>\n"
    )


def channel_xml() -> str:
    return (
        "<channel type='unix'>\n"
        "  <source mode='bind'/>\n"
        f"  <target type='virtio' name='{CHANNEL_NAME}'/>\n"
        "</channel>\n"
    )


def _quote(value: str) -> str:
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")
    return f"'{escaped}'"


def metrics_disk(config: Config, uuid: str) -> Path | None:
    """The disk this VM should see, or None when vbd is not configured."""
    if "vbd" not in config.transports:
        return None
    if config.disk.per_vm_dir is not None:
        return per_vm_disk_path(config.disk.per_vm_dir, uuid)
    return config.disk.path


def target_names():
    """vda, vdb, ... vdz, vdaa, vdab, ... (libvirt's naming of virtio disks)."""
    n = 0
    while True:
        suffix, i = "", n
        while True:
            suffix = chr(ord("a") + i % 26) + suffix
            i = i // 26 - 1
            if i < 0:
                break
        yield TARGET_PREFIX + suffix
        n += 1


def free_target(*domain_xmls) -> str:
    """The first ``vdX`` name no disk of any of *domain_xmls* uses."""
    used = {t for root in domain_xmls for t in root.xpath("devices/disk/target/@dev")}
    return next(name for name in target_names() if name not in used)


def _same_file(a: str, b: Path) -> bool:
    return a == str(b) or os.path.realpath(a) == os.path.realpath(b)


def find_disks(root, path: Path) -> list:
    """The domain's disks whose source is the metrics disk *path*."""
    return [
        d for d in root.iterfind("devices/disk")
        if (src := d.find("source")) is not None and src.get("file") and _same_file(src.get("file"), path)
    ]


def find_channels(root) -> list:
    return [
        c for c in root.iterfind("devices/channel")
        if (t := c.find("target")) is not None and t.get("type") == "virtio" and t.get("name") == CHANNEL_NAME
    ]


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    """A domain by name, UUID or numeric id."""
    for how in (conn.lookupByName, conn.lookupByUUIDString):
        try:
            return how(name)
        except libvirt.libvirtError:
            pass
    if name.isdigit():
        try:
            return conn.lookupByID(int(name))
        except libvirt.libvirtError:
            pass
    raise AttachError(f"no domain {name!r} (tried name, UUID and id)")


def _xml(dom: libvirt.virDomain, inactive: bool):
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return etree.fromstring(dom.XMLDesc(flags))


def _scopes(dom: libvirt.virDomain, live: bool) -> tuple[bool, bool]:
    """(persistent, live) parts to change; raises AttachError when impossible."""
    persistent = bool(dom.isPersistent())
    if live and not dom.isActive():
        raise AttachError(f"domain {dom.name()!r} is not running; --live needs a running domain")
    if not persistent and not live:
        raise AttachError(f"domain {dom.name()!r} is transient (no persistent configuration); use --live")
    return persistent, live


def attach(
    conn: libvirt.virConnect, name: str, config: Config, *,
    live: bool = False, dry_run: bool = False, target: str | None = None,
) -> Outcome:
    """Add the metrics disk and channel that *config* calls for to domain *name*."""
    dom = lookup(conn, name)
    persistent, live = _scopes(dom, live)
    roots = ([_xml(dom, True)] if persistent else []) + ([_xml(dom, False)] if live else [])
    path = metrics_disk(config, dom.UUIDString())
    wanted: list[Device] = []
    present: list[str] = []
    if path is not None:
        found = [d for root in roots for d in find_disks(root, path)]
        if found:
            present.append(f"the metrics disk {path} (target {found[0].find('target').get('dev')})")
        else:
            dev = target or free_target(*roots)
            if target and any(target == t for r in roots for t in r.xpath("devices/disk/target/@dev")):
                raise AttachError(f"domain {dom.name()!r} already has a disk with target {target}")
            wanted.append(Device("disk", disk_xml(path, dev), f"metrics disk {path} as {dev} (read-only)"))
    if "virtio" in config.transports:
        if any(find_channels(root) for root in roots):
            present.append(f"the virtio channel {CHANNEL_NAME}")
        else:
            wanted.append(Device("channel", channel_xml(), f"virtio channel {CHANNEL_NAME}"))
    if present:
        raise AttachError(
            f"domain {dom.name()!r} already has {' and '.join(present)}; nothing changed "
            f"(run 'vhostmd detach {name}' first to attach again)"
        )
    if not wanted:
        if "xenstore" in config.transports:
            return Outcome(dom.name(), (), live, persistent, dom.ID())
        raise AttachError(f"{config.source} configures neither the vbd nor the virtio transport")
    outcome = Outcome(dom.name(), tuple(wanted), live, persistent, dom.ID())
    if dry_run:
        return outcome
    if path is not None:
        _ensure_disk_file(path, config)
    # The running domain first: if hot-plugging fails, nothing has changed.
    if live:
        for device in wanted:
            _change(dom, device.xml, libvirt.VIR_DOMAIN_AFFECT_LIVE, attach=True)
    if persistent:
        _change_config(conn, dom, wanted, attach=True)
    return outcome


def detach(
    conn: libvirt.virConnect, name: str, config: Config, *,
    live: bool = False, dry_run: bool = False,
) -> Outcome:
    """Remove the metrics disk and channel from domain *name*."""
    dom = lookup(conn, name)
    persistent, live = _scopes(dom, live)
    path = metrics_disk(config, dom.UUIDString())

    def ours(root) -> list:
        return (find_disks(root, path) if path is not None else []) + find_channels(root)

    config_devices = ours(_xml(dom, True)) if persistent else []
    live_devices = ours(_xml(dom, False)) if live else []
    if not config_devices and not live_devices and xenstore_only(config):
        return Outcome(dom.name(), (), live, persistent, dom.ID())
    if not config_devices and not live_devices:
        where = " or ".join(w for w, on in (("configuration", persistent), ("running domain", live)) if on)
        raise AttachError(f"domain {dom.name()!r} has no vhostmd disk or channel in its {where}")
    devices = tuple(
        Device(e.tag, etree.tostring(e, encoding="unicode"), _describe(e))
        for e in (config_devices or live_devices)
    )
    outcome = Outcome(dom.name(), devices, live, persistent)
    if dry_run:
        return outcome
    for elem in live_devices:
        _change(dom, etree.tostring(elem, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE, attach=False)
    if config_devices:
        _change_config(
            conn, dom,
            [Device(e.tag, etree.tostring(e, encoding="unicode"), "") for e in config_devices],
            attach=False,
        )
    return outcome


def xenstore_only(config: Config) -> bool:
    return "xenstore" in config.transports and not {"vbd", "virtio"} & config.transports


def xenstore_note(domid: int, command: str) -> str:
    """What attach/detach say about the xenstore transport: there is nothing to do."""
    where = f"/local/domain/{domid}/metrics" if domid >= 0 else "/local/domain/<id>/metrics"
    return (f"xenstore: nothing to {command}: the daemon writes the domain's metrics to "
            f"{where}, which a Xen guest reads with vm-dump-metrics -x")


def _describe(elem) -> str:
    if elem.tag == "disk":
        return f"metrics disk {elem.find('source').get('file')} ({elem.find('target').get('dev')})"
    return f"virtio channel {CHANNEL_NAME}"


def _change(dom, xml: str, flags: int, attach: bool) -> None:
    try:
        if attach:
            dom.attachDeviceFlags(xml, flags)
        else:
            dom.detachDeviceFlags(xml, flags)
    except libvirt.libvirtError as err:
        scope = "running domain" if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE else "configuration"
        verb = "attach to" if attach else "detach from"
        raise AttachError(f"cannot {verb} the {scope} of {dom.name()!r}: {err.get_error_message()}") from None


def _change_config(conn, dom, devices: list[Device], attach: bool) -> None:
    """Change the persistent configuration, redefining it where the driver
    cannot attach or detach devices (libvirt's test driver, for one)."""
    try:
        for device in devices:
            if attach:
                dom.attachDeviceFlags(device.xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            else:
                dom.detachDeviceFlags(device.xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        return
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            verb = "attach to" if attach else "detach from"
            raise AttachError(
                f"cannot {verb} the configuration of {dom.name()!r}: {err.get_error_message()}"
            ) from None
    root = _xml(dom, True)
    devs = root.find("devices")
    for device in devices:
        elem = etree.fromstring(device.xml)
        if attach:
            devs.append(elem)
        else:
            match = find_channels(root) if elem.tag == "channel" else [
                d for d in devs.iterfind("disk")
                if (t := d.find("target")) is not None and t.get("dev") == elem.find("target").get("dev")
            ]
            for m in match:
                devs.remove(m)
    try:
        conn.defineXML(etree.tostring(root, encoding="unicode"))
    except libvirt.libvirtError as err:
        raise AttachError(f"cannot redefine {dom.name()!r}: {err.get_error_message()}") from None


def _ensure_disk_file(path: Path, config: Config) -> None:
    """Create the disk (zero-filled, no metrics yet) if it does not exist yet,
    so that QEMU finds it; an existing one is left as it is."""
    try:
        os.lstat(path)
        return
    except FileNotFoundError:
        pass
    try:
        if config.disk.per_vm_dir is not None:
            prepare_directory(config.disk.per_vm_dir)
        MetricsDisk(path, config.disk.size).close()
    except (OSError, DiskError) as err:
        raise AttachError(f"cannot create metrics disk {path}: {getattr(err, 'strerror', None) or err}") from None


# --- command line ---------------------------------------------------------------------


def build_parser(command: str) -> argparse.ArgumentParser:
    verb = "add the metrics disk and virtio channel to" if command == "attach" else \
        "remove the metrics disk and virtio channel from"
    parser = argparse.ArgumentParser(
        prog=f"vhostmd {command}",
        description=f"{verb.capitalize()} a domain's persistent configuration "
                    "(and with --live the running domain).",
    )
    parser.add_argument("domain", metavar="DOMAIN", help="domain name, UUID or id")
    parser.add_argument("-c", "--connect", metavar="URI",
                        help="libvirt URI (read-write connection); libvirt's default without it")
    parser.add_argument("-f", "--config", metavar="FILE", type=Path, default=config_mod.DEFAULT_CONFIG,
                        help=f"vhostmd configuration: disk path, per-VM mode, transports "
                             f"(default {config_mod.DEFAULT_CONFIG})")
    parser.add_argument("--live", action="store_true", help="change the running domain too")
    parser.add_argument("--print", dest="dry_run", action="store_true",
                        help="print the device XML and change nothing")
    if command == "attach":
        parser.add_argument("--target", metavar="DEV",
                            help="disk target name (default: the first free vdX)")
    return parser


def _main(command: str, argv: list[str]) -> int:
    args = build_parser(command).parse_args(argv)
    try:
        config = config_mod.load(args.config)
    except ConfigError as err:
        print(f"vhostmd {command}: {err}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        conn = libvirt.open(args.connect)
    except libvirt.libvirtError as err:
        print(f"vhostmd {command}: cannot connect to libvirt {args.connect or '(default URI)'}: "
              f"{err.get_error_message()}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        if command == "attach":
            outcome = attach(conn, args.domain, config, live=args.live, dry_run=args.dry_run,
                             target=args.target)
        else:
            outcome = detach(conn, args.domain, config, live=args.live, dry_run=args.dry_run)
    except AttachError as err:
        print(f"vhostmd {command}: {err}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        conn.close()
    if "xenstore" in config.transports:
        # On stderr with --print, whose output is the devices' XML alone.
        print(xenstore_note(outcome.domid, command), file=sys.stderr if args.dry_run else sys.stdout)
    if args.dry_run:
        if outcome.devices:
            print("\n".join(d.xml.rstrip("\n") for d in outcome.devices))
        return EXIT_OK
    scopes = " and ".join(s for s, on in (("configuration", outcome.persistent), ("running domain", outcome.live)) if on)
    verb = "attached to" if command == "attach" else "detached from"
    for device in outcome.devices:
        print(f"{device.description}: {verb} the {scopes} of {outcome.domain}")
    return EXIT_OK


def main_attach(argv: list[str]) -> int:
    """``vhostmd attach [-c URI] [-f FILE] [--live] [--print] [--target DEV] DOMAIN``."""
    return _main("attach", argv)


def main_detach(argv: list[str]) -> int:
    """``vhostmd detach [-c URI] [-f FILE] [--live] [--print] DOMAIN``."""
    return _main("detach", argv)
