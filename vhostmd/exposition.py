"""The daemon's health in the Prometheus text exposition format (0.0.4).

Pure: a :class:`~vhostmd.state.DaemonStatus` in, text out. ``vhostmd status
--format prometheus`` prints it and the daemon writes it to
``--prometheus-file`` after every update (for node_exporter's textfile
collector), so both say the same thing in the same words.

Names follow Prometheus' conventions: base units (seconds, bytes), ``_total``
on counters, one family per quantity with labels for its parts.
"""

from __future__ import annotations

from typing import Iterable

from .state import DaemonStatus

#: The Content-Type this text is, should anyone serve it over HTTP.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict, float]


def escape_label(value: str) -> str:
    """A label value as the format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 2 ** 53:
        return str(int(value))
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        """One metric family: HELP, TYPE and its samples (none: the family is left out)."""
        samples = list(samples)
        if not samples:
            return
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                inner = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
                self.lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                self.lines.append(f"{name} {_number(value)}")

    def gauge(self, name: str, help_text: str, value: float | None) -> None:
        self.family(name, "gauge", help_text, [({}, value)] if value is not None else [])

    def counter(self, name: str, help_text: str, value: float | None) -> None:
        self.family(name, "counter", help_text, [({}, value)] if value is not None else [])


def render(status: DaemonStatus | None, up: bool) -> str:
    """The exposition of *status*; *up* says whether its daemon runs now.

    Without a state (*status* None) only ``vhostmd_up`` is given. Counters
    start again at 0 when the daemon restarts, as Prometheus' ``rate()``
    expects of counters.
    """
    w = _Writer()
    w.gauge("vhostmd_up", "Whether vhostmd is running (1) or not (0).", 1 if up else 0)
    if status is None:
        return "\n".join(w.lines) + "\n"
    w.family("vhostmd_build_info", "gauge", "The version of vhostmd that wrote this state (always 1).",
             [({"version": status.version}, 1)])
    w.gauge("vhostmd_start_time_seconds", "When the daemon started, in seconds since the epoch.",
            status.started)
    w.gauge("vhostmd_update_period_seconds", "The configured update_period.", status.update_period)
    failed = status.reload_failure
    w.gauge("vhostmd_config_reload_failed",
            "Whether the last reload failed and the daemon runs its previous configuration (1) or not (0).",
            1 if failed is not None else 0)
    if failed is not None:
        w.gauge("vhostmd_last_reload_failure_timestamp_seconds",
                "When the last reload failed, in seconds since the epoch (only while it is not fixed).",
                failed.at)
    last = status.last_update
    if last is not None:
        w.gauge("vhostmd_last_update_timestamp_seconds",
                "When the last finished update started, in seconds since the epoch.", last.started)
        w.gauge("vhostmd_last_update_duration_seconds", "How long the last update took.", last.duration)
        w.gauge("vhostmd_last_update_cpu_seconds", "CPU time the last update used.", last.cpu)
        w.gauge("vhostmd_last_update_published",
                "Whether the last update was published by every transport (1) or not (0).",
                1 if last.published else 0)
        w.gauge("vhostmd_vms", "VMs in the last update.", last.vms)
        w.gauge("vhostmd_metrics", "Metrics published by the last update.", last.metrics)
        w.gauge("vhostmd_metrics_failed", "Metrics left out of the last update (see vhostmd status).",
                len(last.failures))
        w.gauge("vhostmd_document_bytes", "Size of the last update's metrics document.",
                last.document_bytes)
    w.counter("vhostmd_updates_total", "Updates finished since the daemon started.", status.updates)
    w.counter("vhostmd_publish_failures_total",
              "Updates not published by every transport since the daemon started.",
              status.publish_failures)
    disks = [d for t in status.transports for d in t.disks]
    w.family("vhostmd_disk_used_bytes", "gauge", "Bytes of the metrics disk the last document used.",
             [({"path": d.path}, d.used) for d in disks])
    w.family("vhostmd_disk_size_bytes", "gauge", "Size of the metrics disk.",
             [({"path": d.path}, d.size) for d in disks])
    channels = [t.channels for t in status.transports if t.channels is not None]
    if channels:
        w.family("vhostmd_virtio_channels", "gauge",
                 "Virtio channels of VMs with metrics: connected, or not (yet) connected.",
                 [({"state": "connected"}, sum(c.connected for c in channels)),
                  ({"state": "unconnected"}, sum(c.unconnected for c in channels))])
        w.counter("vhostmd_virtio_requests_total", "Virtio requests answered (invalid ones included).",
                  sum(c.requests for c in channels))
        w.counter("vhostmd_virtio_requests_rate_limited_total",
                  "Times a guest asked faster than rate_limit allows, so that its answers waited.",
                  sum(c.rate_limited for c in channels))
        w.counter("vhostmd_virtio_requests_invalid_total", "Virtio requests answered INVALID REQUEST.",
                  sum(c.invalid for c in channels))
        w.counter("vhostmd_virtio_connect_failures_total", "Failed attempts to connect a VM's channel.",
                  sum(c.refused for c in channels))
    w.family("vhostmd_transport_errors", "gauge", "Problems a transport reports now, per transport.",
             [({"transport": t.name}, len(t.errors)) for t in status.transports])
    return "\n".join(w.lines) + "\n"
