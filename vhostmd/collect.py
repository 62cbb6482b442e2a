"""One update's collection: host metrics and every running VM's metrics."""

from __future__ import annotations

import asyncio
import logging

from . import builtins
from .action_output import OutputError, interpret
from .actions import ActionFailed, ActionRunner, substitute
from .config import Config, MetricDef
from .model import Domain, Metric, Snapshot, VmMetrics
from .virt import Libvirt, VirtError

log = logging.getLogger(__name__)


class Collector:
    """Collects a Snapshot per update from actions, built-ins and libvirt."""

    def __init__(self, config: Config, runner: ActionRunner, virt: Libvirt):
        self.config = config
        self.runner = runner
        self.virt = virt

    async def collect(self) -> Snapshot:
        problems: list[str] = []
        host_task = asyncio.ensure_future(self._host(problems))
        try:
            domains = await self.virt.domains()
            vms_known = True
        except VirtError as err:
            problems.append(f"VM metrics: {err}")
            domains, vms_known = [], False
        vms = await asyncio.gather(*(self._vm(d, problems) for d in domains))
        host = await host_task
        return Snapshot(host=host, vms=tuple(vms), problems=problems, vms_known=vms_known)

    async def _host(self, problems: list[str]) -> tuple[Metric, ...]:
        results = await asyncio.gather(
            *(self._evaluate(m, None, problems) for m in self.config.host_metrics)
        )
        return tuple(metric for values in results for metric in values)

    async def _vm(self, domain: Domain, problems: list[str]) -> VmMetrics:
        results = await asyncio.gather(
            *(self._evaluate(m, domain, problems) for m in self.config.vm_metrics)
        )
        return VmMetrics(domain, tuple(metric for values in results for metric in values))

    async def _evaluate(
        self, metric: MetricDef, domain: Domain | None, problems: list[str]
    ) -> tuple[Metric, ...]:
        """The metric's values; on failure, none, and a line in *problems*."""
        try:
            if metric.builtin is not None:
                output = builtins.REGISTRY[metric.builtin].read(domain)
            else:
                command, env = substitute(metric.action, domain, self.virt.uri)
                timeout = metric.timeout or self.config.action_timeout
                output = await self.runner.run(command, env, timeout)
            return interpret(metric, output)
        except (ActionFailed, OutputError) as err:
            problems.append(describe(metric, domain, str(err)))
        except Exception as err:  # a built-in's bug must not stop the update
            log.debug("built-in %s failed", metric.builtin, exc_info=True)
            problems.append(describe(metric, domain, f"{type(err).__name__}: {err}"))
        return ()


def describe(metric: MetricDef, domain: Domain | None, why: str) -> str:
    """A problem line naming the metric (and VM) and saying why it is left out."""
    where = f" of VM {domain.name!r} (id {domain.id})" if domain is not None else ""
    return f"metric {metric.name!r}{where} (line {metric.line}) left out: {why}"
