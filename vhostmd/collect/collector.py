"""One update's collection: host metrics and every running VM's metrics.

Built-ins are evaluated inline from the update's samples (the host sample is
read once; the VM samples come from one trip to the libvirt thread). Only shell
actions become tasks, and they run through the runner's bounded pool.
"""

from __future__ import annotations

import asyncio
import logging
from itertools import chain
from typing import Callable

from . import builtins, host_sources
from .action_output import OutputError, interpret
from .actions import ActionFailed, ActionRunner, substitute
from .builtins.host import HostView
from ..config import Config, MetricDef
from .host_sources import HostSample, NotYetAvailable, SourceUnavailable
from ..metric_types import BadValue, formatter
from ..model import Domain, Metric, Snapshot, VmMetrics
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
        #: The vm plan's built-in steps with their places in the plan.
        self._vm_builtins = [(i, step) for i, step in enumerate(self._vm_plan) if step[1] is not None]
        self._vm_actions = len(self._vm_builtins) < len(self._vm_plan)
        self._previous: HostSample | None = None
        self._memos: dict[str, _VmMemo] = {}

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
        host_parts = self._builtins(self._host_plan, view, problems)
        memos, self._memos = self._memos, {}
        vm_parts = []
        for s in fetched.samples:
            domain = s.domain
            memo = memos.get(domain.uuid) or _VmMemo(len(self._vm_plan))
            self._memos[domain.uuid] = memo
            changed = self._update_vm(memo, s, domain, problems)
            actions = self._start_actions(self._vm_plan, domain, problems) if self._vm_actions else ()
            vm_parts.append((domain, memo, changed, actions))
        await _settle(host_actions, *([actions for *_, actions in vm_parts] if self._vm_actions else ()))
        host = _assemble(host_parts, host_actions)
        vms = []
        for domain, memo, changed, actions in vm_parts:
            old = memo.vm
            if changed or actions or old is None or (old.domain is not domain and old.domain != domain):
                memo.vm = old = VmMetrics(domain, _assemble(memo.parts, actions))
            vms.append(old)
        return Snapshot(host=host, vms=tuple(vms), problems=problems, vms_known=vms_known)

    def _builtins(self, plan: list[_Step], source, problems) -> list:
        """Each step's metrics for the built-ins (None in the places of actions)."""
        parts: list = []
        for metric, builtin, fmt in plan:
            if builtin is None:
                parts.append(None)
                continue
            try:
                raw = builtin.read(source)
                parts.append(_made(metric, fmt, raw))
            except Exception as err:
                _failed(metric, None, err, problems)
                parts.append(())
        return parts

    def _update_vm(self, memo: "_VmMemo", sample, domain: Domain, problems) -> bool:
        """Bring *memo*'s built-in parts up to *sample*; whether any differs from before.

        Runs once per VM per update, so it does no more than read each raw
        value and compare it with the last one; metrics are made (and later
        rendered) only for values that changed.
        """
        changed = False
        raws, parts = memo.raws, memo.parts
        for i, (metric, builtin, fmt) in self._vm_builtins:
            try:
                raw = builtin.read(sample)
                if raw == raws[i]:
                    continue
                parts[i] = _made(metric, fmt, raw)
                raws[i] = raw
            except Exception as err:
                _failed(metric, domain, err, problems)
                parts[i], raws[i] = (), _UNSET
            changed = True
        return changed

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


#: The raw value of a step that has none yet (equal to no value).
_UNSET = object()


class _VmMemo:
    """One VM's last raw value and metrics per step, and its last VmMetrics.

    Values that stay the same keep their Metric objects, and a VM whose
    values all stay the same keeps its VmMetrics: the renderer then reuses
    what it rendered from them.
    """

    __slots__ = ("raws", "parts", "vm")

    def __init__(self, steps: int):
        self.raws: list = [_UNSET] * steps
        #: Per step: its metrics; None in the places of actions.
        self.parts: list = [None] * steps
        self.vm: VmMetrics | None = None


def _made(metric: MetricDef, fmt, raw) -> tuple[Metric, ...]:
    """The metrics a built-in step makes of its raw value (raises BadValue)."""
    if fmt is not None:
        return (Metric(metric.name, metric.type, fmt(raw), metric.unit),)
    return builtins.metrics_of(metric, raw)


def _failed(metric: MetricDef, domain: Domain | None, err: Exception, problems: list) -> None:
    """Note why a built-in gave no value (a rate's first update needs no note)."""
    if isinstance(err, NotYetAvailable):
        return
    if isinstance(err, (SourceUnavailable, BadValue)):
        problems.append(describe(metric, domain, str(err)))
        return
    # A built-in's bug must not stop the update.
    log.debug("built-in %s failed", metric.builtin, exc_info=err)
    problems.append(describe(metric, domain, f"{type(err).__name__}: {err}"))


def _plan(metrics: tuple[MetricDef, ...]) -> list[_Step]:
    steps: list[_Step] = []
    for m in metrics:
        builtin = builtins.REGISTRY[m.builtin] if m.builtin else None
        fmt = formatter(m.type) if builtin is not None and m.type != "group" else None
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
            # Until each has killed its action and reaped it: the update
            # (and a stop waiting for it) ends only once they are gone.
            await asyncio.wait(tasks)
            raise


def _assemble(parts: list, actions: list) -> tuple[Metric, ...]:
    """The metrics in config order: built-in parts with the actions' results in their places."""
    if not actions:
        return tuple(chain.from_iterable(parts))
    results = iter(actions)
    return tuple(
        m for part in parts for m in (part if part is not None else next(results).result())
    )


def describe(metric: MetricDef, domain: Domain | None, why: str) -> str:
    """A problem line naming the metric (and VM) and saying why it is left out."""
    where = f" of VM {domain.name!r} (id {domain.id})" if domain is not None else ""
    return f"metric {metric.name!r}{where} (line {metric.line}) left out: {why}"
