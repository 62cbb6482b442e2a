"""What an update of the xenstore transport costs, against a real oxenstored.

Starts Debian's oxenstored without Xen (as the tests do, tests/xenstored.py),
creates N domains as libxl would, and publishes updates in which every VM's
document changed (the usual case: CPU time moves), then updates in which
none did. Prints wall and CPU time (this process; oxenstored's own CPU
is counted apart) per update and per VM.

    .venv/bin/python benchmarks/xenstore_publish.py --vms 100 500 --updates 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid as uuidlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from vhostmd.model import Domain, Metric, Snapshot, VmMetrics  # noqa: E402
from vhostmd.publish.xenstore.client import Client  # noqa: E402
from vhostmd.publish.xenstore.publisher import XenstorePublisher  # noqa: E402
from vhostmd.render import Renderer  # noqa: E402
import xenstored as harness  # noqa: E402

# About the SAP set's size: some 1.7 KB per VM document.
HOST = tuple(Metric(f"HostMetric{i}", "uint64", str(10**9 + i)) for i in range(10))


def snapshot(domains: list[Domain], tick: int) -> Snapshot:
    return Snapshot(host=HOST, vms=tuple(
        VmMetrics(d, (Metric("TotalCPUTime", "real64", f"{tick}.{d.id:06d}", "s"),
                      Metric("ResourceProcessorLimit", "uint32", "4"),
                      Metric("PhysicalMemoryAllocatedToVirtualSystem", "uint64", "4096", "MiB"),
                      Metric("ResourceMemoryLimit", "uint64", "4096", "MiB")))
        for d in domains))


def _cpu_of(pid: int) -> float:
    """User and system CPU seconds of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(server: harness.Xenstored, vms: int, updates: int) -> None:
    domains = [Domain(i, f"vm{i}", str(uuidlib.uuid4())) for i in range(1, vms + 1)]
    for d in domains:
        server.add_domain(d.id, d.uuid, d.name)
    publisher = XenstorePublisher(2048, Client(str(server.socket)))
    asyncio.run(publisher.start())
    renderer = Renderer()
    publisher.publish(renderer.render(snapshot(domains, 0)))  # the first: permissions checked
    for label, moving in (("changed", True), ("unchanged", False)):
        wall = cpu = 0.0
        server_cpu = _cpu_of(server.proc.pid)
        for tick in range(1, updates + 1):
            snap = snapshot(domains, tick if moving else 0)
            rendered = renderer.render(snap)
            w, c = time.perf_counter(), time.process_time()
            publisher.publish(rendered)
            wall += time.perf_counter() - w
            cpu += time.process_time() - c
        server_cpu = _cpu_of(server.proc.pid) - server_cpu
        print(f"{vms:5d} VMs {label:9s}: {wall / updates * 1000:8.1f} ms wall, "
              f"{cpu / updates * 1000:7.1f} ms CPU per update "
              f"({cpu / updates / vms * 1e6:4.0f} us per VM); "
              f"oxenstored {server_cpu / updates * 1000:7.1f} ms CPU per update")
    asyncio.run(publisher.stop())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, nargs="+", default=[100])
    parser.add_argument("--updates", type=int, default=10)
    args = parser.parse_args()
    oxenstored = harness.find_oxenstored()
    if oxenstored is None:
        print("oxenstored not found: install xen-utils-4.17", file=sys.stderr)
        return 1
    work = Path(harness.tempfile.mkdtemp(prefix="xs-bench-"))
    kit = harness.Kit(oxenstored, harness.build_stub(work))
    for count in args.vms:
        server = harness.Xenstored(kit)
        server.start()
        try:
            run(server, count, args.updates)
        finally:
            server.cleanup()
    harness.shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
