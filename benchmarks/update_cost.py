#!/usr/bin/env python3
"""What one steady-state update costs, as the number of VMs grows.

For each configuration and VM count this starts a fresh process that runs
the daemon's update pipeline (collect, render, publish to a metrics disk)
against a libvirt test-driver node with that many running domains, and
reports per update (median of the measured updates, after warm-up ones):

- wall: elapsed time of the update
- cpu: CPU time of the daemon process (all its threads; the test driver
  lives in this process, so its share of libvirt's work counts too)
- children: CPU time of processes the update started (and their children)
- forks: processes the daemon started (each shell action is one /bin/sh;
  a pipeline in it forks one process per command on top)
- rss: peak resident memory of the daemon process, MiB
- document: bytes of the published document

Usage (from the repository root):

    python benchmarks/update_cost.py                       # shipped config, 10/100/1000 VMs; shell config up to 100
    python benchmarks/update_cost.py --vms 10,100,1000 --shell-max 1000
    python benchmarks/update_cost.py --configs shipped --updates 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "shipped": ROOT / "conf" / "vhostmd.conf",
    "upstream": ROOT / "conf" / "vhostmd-upstream.conf",
    "shell": ROOT / "benchmarks" / "sap-shell.conf",
}


def _localize(text: str, tmp: Path) -> str:
    """The config with its disk and channels under *tmp*, and a disk big enough."""
    import re

    text = re.sub(r"<path>/dev/shm/vhostmd0</path>", f"<path>{tmp}/vhostmd0</path>", text)
    text = re.sub(r"<channel_path>[^<]*</channel_path>",
                  f"<channel_path>{tmp}/channel</channel_path>", text)
    return re.sub(r'<size unit="[kKmM]">\d+</size>', '<size unit="m">4</size>', text)


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def worker(config_name: str, vms: int, warmup: int, updates: int) -> dict:
    """Runs in the measured process: prints one JSON line of medians."""
    sys.path.insert(0, str(ROOT))
    import asyncio

    from benchmarks.nodes import write_node
    from vhostmd import config as config_mod
    from vhostmd.pipeline import Pipeline
    from vhostmd.transports import close_transports, open_transports, start_transports
    from vhostmd.collect.virt import Libvirt

    with tempfile.TemporaryDirectory(prefix="vhostmd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "channel").mkdir()
        uri = write_node(tmp, vms)
        conf = tmp / "vhostmd.conf"
        conf.write_text(_localize(CONFIGS[config_name].read_text(), tmp))
        config = config_mod.load(conf)
        virt = Libvirt(uri)
        publishers = open_transports(config, once=True)

        async def run() -> list[dict]:
            pipeline = Pipeline(config, virt, publishers)
            await start_transports(publishers)
            rows = []
            try:
                for i in range(warmup + updates):
                    started = pipeline.runner.started
                    wall, cpu, children = time.perf_counter(), _cpu(resource.RUSAGE_SELF), \
                        _cpu(resource.RUSAGE_CHILDREN)
                    report = await pipeline.update()
                    row = {
                        "wall_ms": (time.perf_counter() - wall) * 1000,
                        "cpu_ms": (_cpu(resource.RUSAGE_SELF) - cpu) * 1000,
                        "children_ms": (_cpu(resource.RUSAGE_CHILDREN) - children) * 1000,
                        "forks": pipeline.runner.started - started,
                        "document": report.document_bytes,
                        "vms": report.vms,
                        "problems": len(report.problems) + len(report.publish_errors),
                    }
                    if i >= warmup:
                        rows.append(row)
                    await asyncio.sleep(0.05)
            finally:
                await close_transports(publishers)
            return rows

        try:
            rows = asyncio.run(run())
        finally:
            virt.close()
    result = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.update(config=config_name, vms_asked=vms)
    return result


def measure(config_name: str, vms: int, warmup: int, updates: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", config_name, str(vms), str(warmup), str(updates)],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", default="10,100,1000", help="VM counts (default 10,100,1000)")
    parser.add_argument("--configs", default="shipped,shell",
                        help=f"configurations among {', '.join(CONFIGS)} (default shipped,shell)")
    parser.add_argument("--shell-max", type=int, default=100,
                        help="largest VM count for the shell config (default 100: at 1000 "
                             "one update takes minutes)")
    parser.add_argument("--warmup", type=int, default=2, help="updates before measuring")
    parser.add_argument("--updates", type=int, default=10, help="updates measured (median)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, vms, warmup, updates = args.worker
        print(json.dumps(worker(name, int(vms), int(warmup), int(updates))))
        return 0

    print("| config | VMs | wall ms | CPU ms (daemon) | CPU ms (children) | forks | peak RSS MiB | document bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.configs.split(","):
        for vms in (int(v) for v in args.vms.split(",")):
            if name == "shell" and vms > args.shell_max:
                continue
            updates = args.updates if name != "shell" else min(args.updates, 3)
            r = measure(name, vms, args.warmup if name != "shell" else 1, updates)
            note = f" ({r['problems']:.0f} problems)" if r["problems"] else ""
            print(f"| {name} | {r['vms']:.0f} | {r['wall_ms']:.1f} | {r['cpu_ms']:.1f} | "
                  f"{r['children_ms']:.1f} | {r['forks']:.0f} | {r['rss_mib']:.1f} | "
                  f"{r['document']:.0f}{note} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
