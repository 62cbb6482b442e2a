"""One configuration's chain: collect → render → publish, once per update.

The pipeline publishes to the transports it is given; it never opens or
closes one (that is :mod:`vhostmd.transports`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

from .collect.actions import ActionRunner
from .collect.collector import Collector
from .collect.virt import Libvirt
from .config import Config
from .publish import PublishError, Publisher
from .render import Rendered, Renderer
from .state import TransportStatus

log = logging.getLogger(__name__)


@dataclass
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
        """Whether every transport stored this update (none raised PublishError)."""
        return not self.publish_errors


class Pipeline:
    """The collector and renderer built from one Config, and the publishers given to it."""

    def __init__(self, config: Config, virt: Libvirt, publishers: Sequence[Publisher]):
        self.config = config
        env = dict(os.environ)
        if config.search_path:
            env["PATH"] = config.search_path
        self.runner = ActionRunner(env)
        self.collector = Collector(config, self.runner, virt)
        self.renderer = Renderer()
        self.publishers: list[Publisher] = list(publishers)
        self.rendered: Rendered | None = None

    def status(self) -> tuple[TransportStatus, ...]:
        """What each publisher has to say about itself."""
        return tuple(p.status() for p in self.publishers)

    async def update(self) -> UpdateReport:
        report = UpdateReport(started=time.time())
        clock, cpu = time.monotonic(), time.process_time()
        snapshot = await self.collector.collect()
        self.rendered = rendered = self.renderer.render(snapshot)
        for publisher in self.publishers:
            try:
                publisher.publish(rendered)
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
