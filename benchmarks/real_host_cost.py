#!/usr/bin/env python3
"""What an update costs a real host: our process, libvirtd and every QEMU.

libvirt's test driver runs inside our process and answers from memory
(benchmarks/update_cost.py); on a real host the daemon talks to libvirtd,
and libvirtd may in turn talk to every QEMU process. This benchmark
measures all three. It starts a private session libvirtd as an unprivileged
account (the one tests/e2e uses), starts small domains **paused** (32 MiB,
1 vCPU, no disk, TCG: no KVM needed), and for N = 10, 100, 300 domains
reports per update, median and range of the measured updates:

- wall: elapsed time of the update
- ours: CPU time of our process (all threads; CLOCK_PROCESS_CPUTIME_ID)
- libvirtd: CPU time of libvirtd, all threads
- QEMU: CPU time of all QEMU processes, all threads
- monitor: QEMU monitor commands libvirtd sent (from its debug log of the
  monitor, which this benchmark turns on)

CPU times of other processes are sums of the first field of
/proc/PID/task/*/schedstat (nanoseconds). First the daemon's real update
path (collect, render, publish to a metrics disk) with the shipped
configuration conf/vhostmd.conf; then each candidate libvirt call alone, on
its own connection, so that the choice of call can be seen.

Usage (from the repository root, as root or as an ordinary user; needs
qemu-system-x86_64 and libvirtd, e.g. Debian's qemu-system-x86,
libvirt-daemon-driver-qemu):

    python benchmarks/real_host_cost.py                     # 10, 100, 300 domains
    python benchmarks/real_host_cost.py --vms 10,100 --updates 20
    python benchmarks/real_host_cost.py --config conf/vhostmd-upstream.conf --no-calls

At the end every QEMU process is killed at once and libvirtd stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import libvirt  # noqa: E402

from e2e import libvirtd as session  # noqa: E402

#: Every message libvirtd sends to a QEMU monitor is logged with this tag.
MONITOR_SEND = b"QEMU_MONITOR_SEND_MSG"


def domain_xml(name: str, memory_mib: int = 32, vcpus: int = 1) -> str:
    """The smallest domain that still looks like a host's: default devices (a
    virtio balloon among them), no disk, no display."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <controller type='usb' model='none'/>
  </devices>
</domain>
"""


def task_cpu_ns(pid: int) -> int:
    """CPU time of every thread of *pid*, in ns (0 once it is gone)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split(None, 1)[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


class Clocks:
    """CPU clocks of a session libvirtd and its QEMU processes, and its monitor messages."""

    def __init__(self, daemon: session.SessionLibvirtd, libvirtd_pid: int):
        self.daemon = daemon
        self.libvirtd_pid = libvirtd_pid
        self.qemu = daemon.qemu_pids()
        self._log_offset = 0
        self._messages = 0

    def read(self) -> tuple[int, int, int]:
        """(libvirtd ns, all QEMU ns, monitor messages so far)."""
        return (task_cpu_ns(self.libvirtd_pid), sum(task_cpu_ns(p) for p in self.qemu),
                self.monitor_messages())

    def monitor_messages(self) -> int:
        """Monitor messages in libvirtd's log so far (read on from where the last look ended)."""
        try:
            with open(self.daemon.log, "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except OSError:
            return self._messages
        end = data.rfind(b"\n") + 1  # a line still being written is counted next time
        self._messages += data[:end].count(MONITOR_SEND)
        self._log_offset += end
        return self._messages


def _daemon(top: Path) -> session.SessionLibvirtd:
    return session.SessionLibvirtd(top, session.unprivileged_account(),
                                   log_filters="1:qemu.qemu_monitor")


class Host:
    """The private libvirtd and its domains."""

    def __init__(self, top: Path):
        self.top = top
        top.chmod(0o755)
        self.daemon = _daemon(top)
        self.conn: libvirt.virConnect | None = None
        self.domains = 0
        self.clocks: Clocks | None = None

    def start(self) -> None:
        self.daemon.start()
        self.conn = self.daemon.connect()

    @property
    def libvirtd_pid(self) -> int:
        return self.daemon.process.pid

    def grow(self, n: int, workers: int = 2) -> None:
        """Start domains, paused, until *n* run."""
        def start(i: int) -> None:
            self.conn.createXML(domain_xml(f"bench-{i:04d}"), libvirt.VIR_DOMAIN_START_PAUSED)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(start, range(self.domains, n)))
        self.domains = n
        self.clocks = Clocks(self.daemon, self.libvirtd_pid)

    def versions(self) -> str:
        lib = self.conn.getLibVersion()
        hv = self.conn.getVersion()
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0]
        return (f"libvirt {lib // 1000000}.{lib // 1000 % 1000}.{lib % 1000}, "
                f"QEMU {hv // 1000000}.{hv // 1000 % 1000}.{hv % 1000} ({qemu}), "
                f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")

    def stop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except libvirt.libvirtError:
                pass
        self.daemon.stop()


def measured(clocks: Clocks, run: Callable[[], object], repeat: int, warmup: int) -> dict:
    """Median and range of each figure over *repeat* runs of *run* (after *warmup*)."""
    rows = []
    for i in range(warmup + repeat):
        lv0, qe0, mon0 = clocks.read()
        wall, ours = time.perf_counter_ns(), time.process_time_ns()
        run()
        ours, wall = time.process_time_ns() - ours, time.perf_counter_ns() - wall
        lv1, qe1, mon1 = clocks.read()
        if i >= warmup:
            rows.append({"wall": wall / 1e6, "ours": ours / 1e6, "libvirtd": (lv1 - lv0) / 1e6,
                         "qemu": (qe1 - qe0) / 1e6, "monitor": mon1 - mon0})
        time.sleep(0.05)
    return {k: (statistics.median(r[k] for r in rows), min(r[k] for r in rows),
                max(r[k] for r in rows)) for k in rows[0]}


def fmt(figure: tuple) -> str:
    median, low, high = figure
    if isinstance(median, int) or float(median).is_integer() and low == high:
        return f"{median:.0f}"
    return f"{median:.1f} ({low:.1f}-{high:.1f})"


class Update:
    """The daemon's update pipeline with one configuration, against the private libvirtd."""

    def __init__(self, uri: str, config_path: Path, tmp: Path):
        from benchmarks.update_cost import _localize
        from vhostmd import config as config_mod
        from vhostmd.collect.virt import Libvirt
        from vhostmd.pipeline import Pipeline
        from vhostmd.transports import close_transports, open_transports, start_transports

        (tmp / "channel").mkdir(exist_ok=True)
        conf = tmp / "vhostmd.conf"
        conf.write_text(_localize(config_path.read_text(), tmp))
        config = config_mod.load(conf)
        self.virt = Libvirt(uri)
        self.loop = asyncio.new_event_loop()
        self.publishers = open_transports(config, once=True)
        self.pipeline = Pipeline(config, self.virt, self.publishers)
        self.loop.run_until_complete(start_transports(self.publishers))
        self._close = close_transports
        self.report = None

    def __call__(self) -> None:
        self.report = self.loop.run_until_complete(self.pipeline.update())

    def close(self) -> None:
        self.loop.run_until_complete(self._close(self.publishers))
        self.virt.close()
        self.loop.close()


def candidates(conn: libvirt.virConnect) -> dict[str, Callable[[], object]]:
    """The libvirt calls an update could make, each answering for every running domain."""
    active = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    handles = conn.listAllDomains(active)
    nowait = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)
    S = libvirt

    def bulk(mask: int) -> Callable[[], object]:
        return lambda: conn.domainListGetStats(handles, mask, nowait)

    def info_concurrent(workers: int) -> Callable[[], object]:
        pool = ThreadPoolExecutor(workers)
        chunks = [handles[i::workers] for i in range(workers)]
        return lambda: list(pool.map(lambda c: [h.info() for h in c], chunks))

    return {
        "listAllDomains(active)": lambda: conn.listAllDomains(active),
        "info() per domain": lambda: [h.info() for h in handles],
        "info() per domain, 2 threads": info_concurrent(2),
        "info() per domain, 4 threads": info_concurrent(4),
        "bulk stats: state": bulk(S.VIR_DOMAIN_STATS_STATE),
        "bulk stats: state, cpu": bulk(S.VIR_DOMAIN_STATS_STATE | S.VIR_DOMAIN_STATS_CPU_TOTAL),
        "bulk stats: state, vcpu": bulk(S.VIR_DOMAIN_STATS_STATE | S.VIR_DOMAIN_STATS_VCPU),
        "bulk stats: state, balloon": bulk(S.VIR_DOMAIN_STATS_STATE | S.VIR_DOMAIN_STATS_BALLOON),
        "bulk stats: state, cpu, vcpu, balloon": bulk(
            S.VIR_DOMAIN_STATS_STATE | S.VIR_DOMAIN_STATS_CPU_TOTAL | S.VIR_DOMAIN_STATS_VCPU
            | S.VIR_DOMAIN_STATS_BALLOON),
    }


def calls_worker(top: Path, libvirtd_pid: int, events: bool, updates: int, warmup: int) -> None:
    """In a fresh process: measure each candidate call, print one JSON line per call.

    With *events*, libvirt's default event loop runs on a thread and the
    connection has a lifecycle callback, as in the daemon: every call from
    another thread then wakes that loop twice (libvirt stops and restarts
    watching the socket around each call).
    """
    import json

    daemon = _daemon(top)
    if events:
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl() for _ in iter(int, 1)],
                         daemon=True).start()
    conn = libvirt.openReadOnly(daemon.uri)
    if events:
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                    lambda *_: None, None)
    clocks = Clocks(daemon, libvirtd_pid)
    clocks.monitor_messages()
    calls = candidates(conn)
    if events:
        calls["info() per domain, on the event loop's thread"] = _on_event_thread(
            calls["info() per domain"])
        calls["info() per domain, 4 threads started on the event loop's thread"] = (
            _on_event_thread(calls["info() per domain, 4 threads"]))
    for name, call in calls.items():
        if events and not name.startswith("info()"):
            continue
        figures = measured(clocks, call, updates, warmup)
        if events and "event loop" not in name:
            name += ", event loop running"
        print(json.dumps([name, figures]), flush=True)
    conn.close()


def _on_event_thread(call: Callable[[], object]) -> Callable[[], object]:
    """*call* run by a timer of libvirt's event loop, on its thread, waited for."""
    done = threading.Event()

    def fire(timer: int, _opaque) -> None:
        libvirt.virEventUpdateTimeout(timer, -1)
        call()
        done.set()

    timer = libvirt.virEventAddTimeout(-1, fire, None)

    def run() -> None:
        done.clear()
        libvirt.virEventUpdateTimeout(timer, 0)
        done.wait()

    return run


def measure_calls(host: Host, events: bool, updates: int, warmup: int):
    """Each candidate call's figures, measured in a fresh process (see calls_worker)."""
    import json

    command = [sys.executable, __file__, "--calls-worker", str(host.top), str(host.libvirtd_pid),
               "--updates", str(updates), "--warmup", str(warmup)]
    with subprocess.Popen(command + (["--events"] if events else []), stdout=subprocess.PIPE,
                          text=True) as child:
        for line in child.stdout:
            name, figures = json.loads(line)
            yield name, {k: tuple(v) for k, v in figures.items()}
    if child.returncode:
        raise RuntimeError(f"the calls worker failed with status {child.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", default="10,100,300", help="domain counts (default 10,100,300)")
    parser.add_argument("--config", type=Path, default=ROOT / "conf" / "vhostmd.conf",
                        help="daemon configuration (default the shipped conf/vhostmd.conf)")
    parser.add_argument("--updates", type=int, default=10, help="measured updates (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="updates before measuring")
    parser.add_argument("--no-calls", action="store_true", help="leave out the candidate calls")
    parser.add_argument("--idle", type=float, default=1.0,
                        help="seconds to measure the idle CPU of libvirtd and QEMU (default 1)")
    parser.add_argument("--calls-worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--events", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.calls_worker:
        calls_worker(Path(args.calls_worker[0]), int(args.calls_worker[1]), args.events,
                     args.updates, args.warmup)
        return 0
    if not shutil.which("libvirtd") or not shutil.which("qemu-system-x86_64"):
        print("needs libvirtd and qemu-system-x86_64 on PATH", file=sys.stderr)
        return 2
    counts = [int(v) for v in args.vms.split(",")]

    top = Path(tempfile.mkdtemp(prefix="vmbench-", dir="/tmp"))
    host = Host(top)
    rows: list[tuple[int, str, dict]] = []
    header = ("| VMs | what | wall ms | ours CPU ms | libvirtd CPU ms | QEMU CPU ms | "
              "monitor cmds |\n|---:|---|---:|---:|---:|---:|---:|")
    try:
        host.start()
        print(host.versions(), flush=True)
        print(f"config: {args.config}", flush=True)
        update = None
        for n in counts:
            clock = time.monotonic()
            host.grow(n)
            print(f"{n} domains running (paused); started in {time.monotonic() - clock:.1f} s",
                  flush=True)
            time.sleep(1.0)
            lv0, qe0, _ = host.clocks.read()
            time.sleep(args.idle)
            lv1, qe1, _ = host.clocks.read()
            print(f"idle: libvirtd {(lv1 - lv0) / 1e6 / args.idle:.2f} ms/s, "
                  f"QEMU {(qe1 - qe0) / 1e6 / args.idle:.2f} ms/s", flush=True)
            if update is None:
                update = Update(host.daemon.uri, args.config, top)
            figures = measured(host.clocks, update, args.updates, args.warmup)
            report = update.report
            assert report.vms == n, f"update saw {report.vms} VMs, {n} run: {report.problems[:3]}"
            if report.problems:
                print(f"problems: {report.problems[:3]}", flush=True)
            rows.append((n, "update (shipped config)" if args.config == ROOT / "conf" / "vhostmd.conf"
                         else f"update ({args.config.name})", figures))
            print(_row(*rows[-1]), flush=True)
            if not args.no_calls:
                for events in (False, True):
                    for name, figures in measure_calls(host, events, args.updates, args.warmup):
                        rows.append((n, name, figures))
                        print(_row(*rows[-1]), flush=True)
        if update is not None:
            update.close()
    finally:
        clock = time.monotonic()
        host.stop()
        shutil.rmtree(top, ignore_errors=True)
        print(f"teardown: {time.monotonic() - clock:.1f} s", flush=True)
    print()
    print(header)
    for row in rows:
        print(_row(*row))
    return 0


def _row(n: int, name: str, f: dict) -> str:
    return (f"| {n} | {name} | {fmt(f['wall'])} | {fmt(f['ours'])} | {fmt(f['libvirtd'])} | "
            f"{fmt(f['qemu'])} | {fmt(f['monitor'])} |")


if __name__ == "__main__":
    sys.exit(main())
