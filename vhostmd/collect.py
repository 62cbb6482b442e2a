"""One update's collection: host metrics and every running VM's metrics.

Built-ins are evaluated inline from the update's samples (the host sample is
read once; the VM samples come from one bulk libvirt call). Only shell
actions become tasks, and they run through the runner's bounded pool.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from . import builtins, host_sources
from .action_output import OutputError, interpret
from .actions import ActionFailed, ActionRunner, substitute
from .builtins.host import HostView
from .config import Config, MetricDef
from .host_sources import HostSample, NotYetAvailable, SourceUnavailable
from .metric_types import BadValue
from .model import Domain, Metric, Snapshot, VmMetrics
from .virt import Fetched, Libvirt, VirtError

log = logging.getLogger(__name__)

#: One metric of the plan: its definition, its built-in (None for an action)
#: and, for a single-valued built-in, the formatter of its metric type.
_Step = tuple[MetricDef, "builtins.Builtin | None", "Callable[[object], str] | None"]


class Collector:
    """Collects a Snapshot per update from actions, built-ins and libvirt."""

    def __init__(self, config: Config, runner: ActionRunner, virt: Libvirt):
        self.config = config
        self.runner = runner
        self.virt = virt
        self._host_plan: list[_Step] = _plan(config.host_metrics)
        self._vm_plan: list[_Step] = _plan(config.vm_metrics)
        self._sources = builtins.host_sources(config.host_metrics)
        vm_builtins = [m for m in config.vm_metrics if m.builtin]
        #: Stats groups for the bulk call (empty: the domain list and state only).
        self._groups = builtins.vm_groups(vm_builtins) if vm_builtins else frozenset()
        self._node = bool(self._sources & {host_sources.NODE, host_sources.HYPERVISOR})
        self._os_name = host_sources.read_os_name() if host_sources.OS in self._sources else None
        self._previous: HostSample | None = None
        #: Per VM (by uuid), per step: the last raw value and the metrics made
        #: from it, reused while the value stays the same; and the last VmMetrics.
        self._memo: dict[str, list] = {}
        self._last_vms: dict[str, VmMetrics] = {}

    async def collect(self) -> Snapshot:
        problems: list[str] = []
        host_actions = self._start_actions(self._host_plan, None, problems)
        virt_error = None
        try:
            fetched = await self.virt.fetch(self._groups, node=self._node)
            vms_known = True
        except VirtError as err:
            problems.append(f"VM metrics: {err}")
            fetched, vms_known, virt_error = Fetched(), False, str(err)
        except BaseException:
            for task in host_actions:
                task.cancel()
            raise
        sample = host_sources.sample(
            self._sources, node=fetched.node, hypervisor=fetched.hypervisor,
            libvirt_error=virt_error, os_name=self._os_name,
        )
        view = HostView(sample, self._previous)
        self._previous = sample
        host_parts, _ = self._builtins(self._host_plan, view, None, problems, None)
        memo, self._memo = self._memo, {}
        vm_parts = []
        for s in fetched.samples:
            uuid = s.domain.uuid
            steps = memo.get(uuid) or [None] * len(self._vm_plan)
            self._memo[uuid] = steps
            parts, changed = self._builtins(self._vm_plan, s, s.domain, problems, steps)
            vm_parts.append((s.domain, parts, changed,
                             self._start_actions(self._vm_plan, s.domain, problems)))
        await _settle(host_actions, *(actions for *_, actions in vm_parts))
        host = _assemble(host_parts, host_actions)
        last, self._last_vms = self._last_vms, {}
        vms = []
        for domain, parts, changed, actions in vm_parts:
            old = last.get(domain.uuid)
            if changed or actions or old is None or old.domain != domain:
                old = VmMetrics(domain, _assemble(parts, actions))
            self._last_vms[domain.uuid] = old
            vms.append(old)
        return Snapshot(host=host, vms=tuple(vms), problems=problems, vms_known=vms_known)

    def _builtins(
        self, plan: list[_Step], source, domain: Domain | None, problems, memo: list | None
    ) -> tuple[list, bool]:
        """Each step's metrics for the built-ins (None in the places of actions),
        and whether any differs from the previous update's (per *memo*)."""
        parts: list = []
        changed = memo is None
        for i, (metric, builtin, fmt) in enumerate(plan):
            if builtin is None:
                parts.append(None)
                continue
            try:
                raw = builtin.read(source)
                if memo is not None:
                    kept = memo[i]
                    if kept is not None and kept[0] == raw:
                        parts.append(kept[1])
                        continue
                if fmt is not None:
                    made = (Metric(metric.name, metric.type, fmt(raw), metric.unit),)
                else:
                    made = builtins.metrics_of(metric, raw)
                parts.append(made)
                changed = True
                if memo is not None:
                    memo[i] = (raw, made)
            except NotYetAvailable:
                parts.append(())
            except (SourceUnavailable, BadValue) as err:
                problems.append(describe(metric, domain, str(err)))
                parts.append(())
            except Exception as err:  # a built-in's bug must not stop the update
                log.debug("built-in %s failed", metric.builtin, exc_info=True)
                problems.append(describe(metric, domain, f"{type(err).__name__}: {err}"))
                parts.append(())
            if memo is not None and parts[-1] == ():
                changed, memo[i] = True, None
        return parts, changed

    def _start_actions(self, plan: list[_Step], domain: Domain | None, problems) -> list:
        return [
            asyncio.ensure_future(self._action(metric, domain, problems))
            for metric, builtin, _ in plan if builtin is None
        ]

    async def _action(self, metric: MetricDef, domain: Domain | None, problems) -> tuple[Metric, ...]:
        """The action's values; on failure, none, and a line in *problems*."""
        try:
            command, env = substitute(metric.action, domain, self.virt.uri)
            timeout = metric.timeout or self.config.action_timeout
            return interpret(metric, await self.runner.run(command, env, timeout))
        except (ActionFailed, OutputError) as err:
            problems.append(describe(metric, domain, str(err)))
        return ()


def _plan(metrics: tuple[MetricDef, ...]) -> list[_Step]:
    steps: list[_Step] = []
    for m in metrics:
        builtin = builtins.REGISTRY[m.builtin] if m.builtin else None
        fmt = builtins.formatter(m.type) if builtin is not None and m.type != "group" else None
        steps.append((m, builtin, fmt))
    return steps


async def _settle(*task_lists: list) -> None:
    tasks = [t for tasks in task_lists for t in tasks]
    if tasks:
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise


def _assemble(parts: list, actions: list) -> tuple[Metric, ...]:
    """The metrics in config order: built-in parts with the actions' results in their places."""
    if not actions:
        return tuple(m for part in parts for m in part)
    results = iter(actions)
    return tuple(
        m for part in parts for m in (part if part is not None else next(results).result())
    )


def describe(metric: MetricDef, domain: Domain | None, why: str) -> str:
    """A problem line naming the metric (and VM) and saying why it is left out."""
    where = f" of VM {domain.name!r} (id {domain.id})" if domain is not None else ""
    return f"metric {metric.name!r}{where} (line {metric.line}) left out: {why}"
