"""One configuration's chain: collect → render → publish, once per update."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .actions import ActionRunner
from .capacity import CapacityWatch
from .collect import Collector
from .config import Config
from .disk import MetricsDisk
from .per_vm_disks import PerVmDiskPublisher, open_per_vm_disks
from .publish import DiskPublisher, PublishError
from .publish.xenstore.publisher import open_xenstore
from .render import Rendered, Renderer
from .status import TransportStatus
from .virt import Libvirt

if TYPE_CHECKING:
    from .virtio_channels import VirtioServer

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UpdateReport:
    """What one update did, for logs and status."""

    started: float
    duration: float = 0.0
    cpu: float = 0.0
    vms: int = 0
    metrics: int = 0
    document_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    publish_errors: list[str] = field(default_factory=list)

    @property
    def published(self) -> bool:
        return not self.publish_errors


class Pipeline:
    """The collector, renderer and transports built from one Config.

    The metrics disk, the per-VM disks and the virtio channels outlive a
    pipeline: they are kept across a reload that does not change them.
    """

    def __init__(
        self, config: Config, virt: Libvirt, disk: MetricsDisk | None,
        virtio: VirtioServer | None = None,
        per_vm: PerVmDiskPublisher | None = None,
    ):
        self.config = config
        env = dict(os.environ)
        if config.search_path:
            env["PATH"] = config.search_path
        self.runner = ActionRunner(env)
        self.collector = Collector(config, self.runner, virt)
        self.renderer = Renderer()
        self.disk = disk
        self.capacity = CapacityWatch(disk.path, disk.size) if disk is not None else None
        self.publishers: list = []
        if disk is not None:
            self.publishers.append(DiskPublisher(disk))
        #: The per-VM disks, if any.
        self.per_vm = per_vm if per_vm is not None else open_per_vm_disks(config)
        if self.per_vm is not None:
            self.publishers.append(self.per_vm)
        #: The server of the virtio channels, if any.
        self.virtio = virtio
        if virtio is not None:
            self.publishers.append(virtio)
        xenstore = open_xenstore(config)
        if xenstore is not None:
            self.publishers.append(xenstore)
        self.rendered: Rendered | None = None

    async def start(self) -> None:
        for publisher in self.publishers:
            await publisher.start()

    async def stop(self, keep: list | tuple = ()) -> None:
        """Stop the transports, except those in *keep* (taken over by a new pipeline)."""
        for publisher in self.publishers:
            if not any(publisher is kept for kept in keep):
                await publisher.stop()

    def status(self) -> tuple[TransportStatus, ...]:
        """What each publisher that reports on itself has to say."""
        return tuple(p.status() for p in self.publishers if hasattr(p, "status"))

    async def update(self) -> UpdateReport:
        report = UpdateReport(started=time.time())
        clock, cpu = time.monotonic(), time.process_time()
        snapshot = await self.collector.collect()
        self.rendered = rendered = self.renderer.render(snapshot)
        if self.capacity is not None:
            host_bytes = len(rendered.document) - sum([len(f.data) for f in rendered.vms.values()])
            self.capacity.observe(len(rendered.document), len(rendered.vms), host_bytes)
        for publisher in self.publishers:
            try:
                publisher.publish(rendered, snapshot)
            except PublishError as err:
                report.publish_errors.append(str(err))
        report.duration = time.monotonic() - clock
        report.cpu = time.process_time() - cpu
        report.vms = len(snapshot.vms)
        # Lists, not generators: these run over every VM on every update.
        report.metrics = len(snapshot.host or ()) + sum([len(vm.metrics) for vm in snapshot.vms])
        report.document_bytes = len(rendered.document)
        report.problems = snapshot.problems
        return report


def open_disk(config: Config, current: MetricsDisk | None = None) -> MetricsDisk | None:
    """The disk *config* asks for, reusing *current* when it is the same one."""
    if "vbd" not in config.transports or config.disk.per_vm_dir is not None:
        # In per-VM mode no disk holds every VM's metrics.
        return None
    if current is not None and current.path == config.disk.path and current.size == config.disk.size:
        return current
    return MetricsDisk(config.disk.path, config.disk.size)
