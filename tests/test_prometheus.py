"""The daemon's health in Prometheus' text format: the exposition, --prometheus-file,
and ``vhostmd status --format prometheus``, read with prometheus-client's parser."""

from __future__ import annotations

import asyncio
import json
import re
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fake_qemu import REQUEST, INVALID, FakeQemu
from support import config_xml, metric, start_vhostmd, stop, vhostmd, wait_for
from test_virtio import async_test, virtio_xml
from vhostmd import exposition
from vhostmd.state import (
    ChannelStatus, DaemonStatus, DiskStatus, ReloadFailure, TransportStatus, UpdateStatus,
)

URI = "test:///default"

#: Every family the exposition may have, and its type.
FAMILIES = {
    "vhostmd_up": "gauge",
    "vhostmd_build_info": "gauge",
    "vhostmd_start_time_seconds": "gauge",
    "vhostmd_update_period_seconds": "gauge",
    "vhostmd_config_reload_failed": "gauge",
    "vhostmd_last_reload_failure_timestamp_seconds": "gauge",
    "vhostmd_last_update_timestamp_seconds": "gauge",
    "vhostmd_last_update_duration_seconds": "gauge",
    "vhostmd_last_update_cpu_seconds": "gauge",
    "vhostmd_last_update_published": "gauge",
    "vhostmd_vms": "gauge",
    "vhostmd_metrics": "gauge",
    "vhostmd_metrics_failed": "gauge",
    "vhostmd_document_bytes": "gauge",
    "vhostmd_updates": "counter",
    "vhostmd_publish_failures": "counter",
    "vhostmd_disk_used_bytes": "gauge",
    "vhostmd_disk_size_bytes": "gauge",
    "vhostmd_virtio_channels": "gauge",
    "vhostmd_virtio_requests": "counter",
    "vhostmd_virtio_requests_rate_limited": "counter",
    "vhostmd_virtio_requests_invalid": "counter",
    "vhostmd_virtio_connect_failures": "counter",
    "vhostmd_transport_errors": "gauge",
}


def parse(text: str) -> dict[str, dict]:
    """{family: {"type", "help", "samples": {(name, labels...): value}}} via prometheus-client."""
    out = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": {(s.name, *sorted(s.labels.items())): s.value for s in family.samples},
        }
    return out


def value(families: dict, name: str, **labels) -> float:
    """One sample's value (the family is *name* without a counter's _total)."""
    family = name[:-len("_total")] if name.endswith("_total") else name
    return families[family]["samples"][(name, *sorted(labels.items()))]


def test_exposition_types_help_units_and_escaped_labels():
    awkward = '/srv/metrics "a"\\b\nc'
    status = DaemonStatus(
        pid=1, started=1700000000.5, written=1700000100.0, config="/etc/vhostmd/vhostmd.conf",
        update_period=5, updates=20, publish_failures=2,
        reload_failure=ReloadFailure(at=1700000050.75, config="/etc/vhostmd/vhostmd.conf",
                                     error="/etc/vhostmd/vhostmd.conf:35: not well-formed XML"),
        last_update=UpdateStatus(started=1700000099.25, duration=0.0125, cpu=0.004, vms=7, metrics=90,
                                 document_bytes=4000, published=False,
                                 failures=("metric 'A' left out: x", "metric 'B' left out: y"),
                                 publish_errors=("disk full",)),
        transports=(
            TransportStatus("vbd", disks=(DiskStatus(awkward, 262144, 4016),)),
            TransportStatus("virtio", channels=ChannelStatus(connected=3, refused=4, rate_limited=5,
                                                             requests=600, invalid=6, unconnected=2),
                            errors=("channel directory missing",)),
        ),
    )
    text = exposition.render(status, up=True)
    families = parse(text)
    assert {name: f["type"] for name, f in families.items()} == FAMILIES
    assert all(f["help"] for f in families.values())
    # Counters carry _total, sizes and times their base units.
    assert "vhostmd_updates_total 20" in text.splitlines()
    assert value(families, "vhostmd_up") == 1
    assert value(families, "vhostmd_build_info", version=status.version) == 1
    assert value(families, "vhostmd_last_update_timestamp_seconds") == 1700000099.25
    assert value(families, "vhostmd_last_update_duration_seconds") == 0.0125
    assert value(families, "vhostmd_last_update_published") == 0
    assert value(families, "vhostmd_config_reload_failed") == 1
    assert value(families, "vhostmd_last_reload_failure_timestamp_seconds") == 1700000050.75
    assert value(families, "vhostmd_vms") == 7
    assert value(families, "vhostmd_metrics_failed") == 2
    assert value(families, "vhostmd_publish_failures_total") == 2
    assert value(families, "vhostmd_disk_used_bytes", path=awkward) == 4016
    assert value(families, "vhostmd_disk_size_bytes", path=awkward) == 262144
    assert value(families, "vhostmd_virtio_channels", state="connected") == 3
    assert value(families, "vhostmd_virtio_channels", state="unconnected") == 2
    assert value(families, "vhostmd_virtio_requests_total") == 600
    assert value(families, "vhostmd_virtio_requests_invalid_total") == 6
    assert value(families, "vhostmd_virtio_requests_rate_limited_total") == 5
    assert value(families, "vhostmd_virtio_connect_failures_total") == 4
    assert value(families, "vhostmd_transport_errors", transport="virtio") == 1
    assert value(families, "vhostmd_transport_errors", transport="vbd") == 0


def test_exposition_without_a_state_is_just_up_zero():
    assert parse(exposition.render(None, up=False)) == {
        "vhostmd_up": {"type": "gauge", "help": "Whether vhostmd is running (1) or not (0).",
                       "samples": {("vhostmd_up",): 0.0}},
    }


def test_old_state_files_without_counters_still_read():
    # A state file as written before the counters existed.
    old = {"pid": 1, "started": 1.0, "written": 2.0, "config": "c", "update_period": 5,
           "transports": [{"name": "virtio", "channels": {"connected": 1, "refused": 0,
                                                          "rate_limited": 0, "notes": []}}]}
    status = DaemonStatus.from_json(json.dumps(old))
    assert (status.updates, status.transports[0].channels.requests) == (0, 0)
    families = parse(exposition.render(status, up=False))
    assert value(families, "vhostmd_updates_total") == 0
    # Nor a failed reload: none is recorded, and the gauge says so.
    assert status.reload_failure is None
    assert value(families, "vhostmd_config_reload_failed") == 0
    assert "vhostmd_last_reload_failure_timestamp_seconds" not in families


def conf(tmp_path: Path) -> Path:
    path = tmp_path / "vhostmd.conf"
    path.write_text(config_xml(metric("HostAnswer", "echo 42", "uint32") + metric("Broken", "exit 3"),
                               disk=tmp_path / "vhostmd0"))
    return path


def test_daemon_writes_the_file_atomically_and_status_prints_the_same(tmp_path):
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    prom, state = textfiles / "vhostmd.prom", tmp_path / "status.json"
    proc = start_vhostmd("-c", URI, "-f", str(conf(tmp_path)), "--status-file", str(state),
                         "--prometheus-file", str(prom))
    try:
        wait_for(lambda: prom.exists() and value(parse(prom.read_text()), "vhostmd_updates_total") >= 2)
        families = parse(prom.read_text())
        assert value(families, "vhostmd_up") == 1
        assert value(families, "vhostmd_metrics_failed") == 1
        assert value(families, "vhostmd_vms") == 1
        assert value(families, "vhostmd_disk_size_bytes", path=str(tmp_path / "vhostmd0")) == 65536
        assert 0 < value(families, "vhostmd_disk_used_bytes", path=str(tmp_path / "vhostmd0")) < 65536
        # The file is replaced whole: node_exporter never sees a temporary file.
        assert sorted(os.listdir(textfiles)) == ["vhostmd.prom"]
        assert oct(prom.stat().st_mode & 0o777) == "0o644"

        shown = vhostmd("status", "--format", "prometheus", "--status-file", str(state))
        assert shown.returncode == 0, shown.stderr
        from_status = parse(shown.stdout)
        assert set(from_status) == set(families)
        raw = json.loads(state.read_text())  # read independently of the daemon's code
        assert value(from_status, "vhostmd_up") == 1
        assert value(from_status, "vhostmd_updates_total") == raw["updates"]
        assert value(from_status, "vhostmd_last_update_timestamp_seconds") == raw["last_update"]["started"]
        assert value(from_status, "vhostmd_metrics_failed") == len(raw["last_update"]["failures"])
        # --json stays as an alias of --format json.
        alias = json.loads(vhostmd("status", "--json", "--status-file", str(state)).stdout)
        formatted = json.loads(vhostmd("status", "--format", "json", "--status-file", str(state)).stdout)
        assert alias.keys() == formatted.keys() and alias["running"] is formatted["running"] is True
    finally:
        log = stop(proc)
    assert proc.returncode == 0, log
    # Stopped: the file says so, and the status command agrees.
    assert value(parse(prom.read_text()), "vhostmd_up") == 0
    assert sorted(os.listdir(textfiles)) == ["vhostmd.prom"]
    shown = vhostmd("status", "--format", "prometheus", "--status-file", str(state))
    assert shown.returncode == 3
    assert value(parse(shown.stdout), "vhostmd_up") == 0


def test_status_prometheus_without_and_with_a_garbled_state(tmp_path):
    missing = vhostmd("status", "--format", "prometheus", "--status-file", str(tmp_path / "none.json"))
    assert missing.returncode == 3
    assert parse(missing.stdout) == parse(exposition.render(None, up=False))
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    shown = vhostmd("status", "--format", "prometheus", "--status-file", str(garbled))
    assert shown.returncode == 4 and "cannot read" in shown.stderr
    assert value(parse(shown.stdout), "vhostmd_up") == 0


def test_a_file_that_cannot_be_written_is_logged_once_and_publishing_goes_on(tmp_path):
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    prom = textfiles / "vhostmd.prom"
    prom.mkdir()  # a directory where the file should be: the rename fails
    disk, state = tmp_path / "vhostmd0", tmp_path / "status.json"
    proc = start_vhostmd("-c", URI, "-f", str(conf(tmp_path)), "--prometheus-file", str(prom),
                         "--status-file", str(state))
    try:
        wait_for(lambda: disk.exists() and b"HostAnswer" in disk.read_bytes())
        # Updates go on, published.
        wait_for(lambda: state.exists() and json.loads(state.read_text())["updates"] >= 3, timeout=10)
        assert json.loads(state.read_text())["last_update"]["published"] is True
        assert sorted(os.listdir(textfiles)) == ["vhostmd.prom"]  # no temporary file left
        prom.rmdir()
        wait_for(lambda: prom.is_file(), timeout=10)
        assert value(parse(prom.read_text()), "vhostmd_up") == 1
    finally:
        log = stop(proc)
    assert log.count("cannot write the Prometheus file") == 1, log
    assert "is written again" in log
    assert sorted(os.listdir(textfiles)) == ["vhostmd.prom"]


@async_test
async def test_virtio_counters_from_a_guest(tmp_path):
    channels = Path(tempfile.mkdtemp(prefix="vhostmd-test-"))
    try:
        prom = tmp_path / "vhostmd.prom"
        conf_path = tmp_path / "vhostmd.conf"
        conf_path.write_text(config_xml(
            metric("HostName", "echo host-a") + metric("VmName", "echo NAME", context="vm"),
            transports=("virtio",),
            virtio=virtio_xml(channels, extra="<rate_limit>0.2</rate_limit><rate_burst>2</rate_burst>"),
        ))
        qemu = await FakeQemu(channels, 1, "test").start()
        proc = start_vhostmd("-c", URI, "-f", str(conf_path), "--prometheus-file", str(prom))
        try:
            guest = await qemu.guest(timeout=20)
            assert await guest.ask(b"\n\n") == INVALID
            assert (await guest.ask(REQUEST)).startswith(b"<metrics>")
            guest.send(REQUEST)  # the bucket is empty: this one waits

            def counted() -> dict | None:
                if not prom.exists():
                    return None
                families = parse(prom.read_text())
                if "vhostmd_virtio_requests" not in families:
                    return None
                if value(families, "vhostmd_virtio_requests_rate_limited_total") < 1:
                    return None
                return families

            loop = asyncio.get_running_loop()
            families = await loop.run_in_executor(None, wait_for, counted, 20.0)
            assert value(families, "vhostmd_virtio_requests_total") == 2
            assert value(families, "vhostmd_virtio_requests_invalid_total") == 1
            assert value(families, "vhostmd_virtio_requests_rate_limited_total") == 1
            assert value(families, "vhostmd_virtio_channels", state="connected") == 1
            assert value(families, "vhostmd_virtio_channels", state="unconnected") == 0
        finally:
            proc.send_signal(signal.SIGTERM)
            await loop_communicate(proc)
            await qemu.stop()
    finally:
        shutil.rmtree(channels, ignore_errors=True)


async def loop_communicate(proc) -> None:
    await asyncio.get_running_loop().run_in_executor(None, proc.communicate, None, 10)


def test_the_documented_metrics_are_the_exposition_s():
    # Every name in the operations guide (table and alert rules) is one the
    # daemon writes, and every family it writes is documented.
    text = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    text = text[text.index("### Prometheus"):text.index("### Icinga")]
    documented = set(re.findall(r"\b(vhostmd_[a-z_]+)\b", text))
    written = {n + "_total" if t == "counter" else n for n, t in FAMILIES.items()}
    assert documented == written
