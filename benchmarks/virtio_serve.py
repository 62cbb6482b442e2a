#!/usr/bin/env python3
"""Benchmark: N virtio channels, each guest asking once a second.

This process plays QEMU and the guests: it creates N channel sockets laid
out as libvirt lays them out and, once the server under test has connected
to all of them, sends one ``GET /metrics/XML`` per channel per second
(spread evenly over the second) and times each answer. The server under test
runs in its own process, whose CPU time is read from /proc:

  --mode server   the daemon's virtio transport fed with synthetic updates
                  (the SAP metric set: 13 host and 4 VM metrics per VM, new
                  values every --period seconds): what serving channels costs.
  --mode daemon   the whole vhostmd command on libvirt's test driver with N
                  domains and the metrics of the shipped configuration
                  (built-ins: no process forked): collection, rendering and
                  channels together.
  --mode floor    a bare server answering every read with a fixed 2 KiB
                  (one thread, epoll, recv, send): the least a Python server
                  can spend on this traffic, for comparison.
  --mode asyncio-floor
                  the same with asyncio's add_reader: the least any asyncio
                  server can spend (why the transport does not use asyncio).

--hostile K adds K more channels whose guests misbehave from the start: half
ask without ever reading the answers, half send garbage without end
(--hostile-kind garbage or no-read: all of them). The figures are still
those of the N well-behaved guests. (The floors are not built for such
guests: they only show what serving well-behaved ones costs.)

--churn K adds K more VMs whose QEMU crash-loops: a separate process
removes and re-creates each one's channel directory and socket every
--churn-interval seconds (10 ms), closing whatever the server connected.
The table then also shows how many lines the server logged per minute.

Usage: .venv/bin/python benchmarks/virtio_serve.py [--channels 10,100,1024] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOCKET_NAME = "org.github.vhostmd.1"
REQUEST = b"GET /metrics/XML\n\n"


def vm_uuid(i: int) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_OID, f"bench-vm-{i}"))


# ---------------------------------------------------------------------------
# the server under test


def serve(channel_path: Path, channels: int, period: int) -> None:
    """Run the virtio transport on synthetic updates until SIGTERM."""
    import logging

    # As the daemon logs (INFO and up, one line each), so that --churn counts them.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(levelname)s: %(message)s")
    from vhostmd.config import VirtioConfig
    from vhostmd.model import Domain, Metric, Snapshot, VmMetrics
    from vhostmd.render import Renderer
    from vhostmd.publish.virtio.transport import VirtioTransport

    domains = [Domain(i, f"vm{i}", vm_uuid(i)) for i in range(1, channels + 1)]

    def snapshot(tick: int) -> Snapshot:
        host = (
            Metric("HostName", "string", "bench-host"),
            Metric("HostSystemInfo", "string", "bench-host"),
            Metric("Time", "uint64", str(int(time.time()))),
            Metric("VirtualizationVendor", "string", "Debian"),
            Metric("VirtProductInfo", "string", "libvirt 9.0.0 QEMU 7.2.0"),
            Metric("NumberOfPhysicalCPUs", "uint32", "64"),
            Metric("TotalCPUTime", "real64", f"{123456.5 + tick:f}"),
            Metric("MemoryAllocatedToVirtualServers", "uint64", str(500000 + tick)),
            Metric("FreePhysicalMemory", "uint64", str(20000 - tick % 1000)),
            Metric("FreeVirtualMemory", "uint64", str(30000 - tick % 1000)),
            Metric("UsedVirtualMemory", "uint64", str(480000 + tick)),
            Metric("PagedInMemory", "uint64", "1234"),
            Metric("PagedOutMemory", "uint64", "567"),
        )
        vms = tuple(
            VmMetrics(d, (
                Metric("TotalCPUTime", "real64", f"{d.id * 10 + tick * 0.5:f}"),
                Metric("ResourceProcessorLimit", "uint32", "4"),
                Metric("ResourceMemoryLimit", "uint64", "8192"),
                Metric("PhysicalMemoryAllocatedToVirtualSystem", "uint64", "8192"),
            ))
            for d in domains
        )
        return Snapshot(host=host, vms=vms)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server = VirtioTransport(VirtioConfig(
            channel_path=channel_path, max_channels=channels, expiration_time=max(15, 3 * period)))
        await server.start()
        renderer = Renderer()
        tick = 0
        while not stop.is_set():
            snap = snapshot(tick)
            server.publish(renderer.render(snap))
            tick += 1
            try:
                await asyncio.wait_for(stop.wait(), period)
            except asyncio.TimeoutError:
                pass
        stats = server.stats
        await server.stop()
        print(f"server: {stats}", file=sys.stderr)

    asyncio.run(main())


FLOOR_ANSWER = b"<metrics>\n" + b"x" * 2150 + b"</metrics>\n\n"


def floor_sockets(channel_path: Path, channels: int) -> list[socket.socket]:
    socks = []
    for i in range(1, channels + 1):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(channel_path / f"{i}-vm{i}" / SOCKET_NAME))
        sock.setblocking(False)
        socks.append(sock)
    return socks


def serve_floor(channel_path: Path, channels: int) -> None:
    """The --mode floor server: one epoll thread, no parsing, no limits, one fixed answer."""
    epoll = select.epoll()
    socks = {sock.fileno(): sock for sock in floor_sockets(channel_path, channels)}
    for fd in socks:
        epoll.register(fd, select.EPOLLIN)

    def serve() -> None:
        while True:
            for fd, _ in epoll.poll():
                sock = socks[fd]
                try:
                    if sock.recv(1024):
                        sock.send(FLOOR_ANSWER)
                except BlockingIOError:
                    pass  # a guest that does not read (--hostile): no answer

    threading.Thread(target=serve, daemon=True).start()
    signal.sigwait({signal.SIGTERM})


def serve_asyncio_floor(channel_path: Path, channels: int) -> None:
    """The --mode asyncio-floor server: the same, with asyncio's add_reader."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        def on_readable(sock):
            if sock.recv(1024):
                sock.send(FLOOR_ANSWER)

        socks = floor_sockets(channel_path, channels)
        for sock in socks:
            loop.add_reader(sock.fileno(), on_readable, sock)
        await stop.wait()

    asyncio.run(main())


def daemon_config(path: Path, channel_path: Path, channels: int, period: int) -> None:
    """The shipped configuration (its metrics), serving channels only, under *channel_path*."""
    shipped = (ROOT / "conf" / "vhostmd.conf").read_text()
    globals_ = f"""<globals>
    <virtio>
      <channel_path>{channel_path}</channel_path>
      <max_channels>{channels}</max_channels>
      <expiration_time>{max(15, 3 * period)}</expiration_time>
    </virtio>
    <update_period>{period}</update_period>
    <transport>virtio</transport>
  </globals>"""
    path.write_text(re.sub(r"<globals>.*</globals>", globals_, shipped, count=1, flags=re.DOTALL))


def node_file(path: Path, channels: int) -> None:
    body = "".join(
        f"<domain type='test'><name>vm{i}</name><uuid>{vm_uuid(i)}</uuid><memory>1048576</memory>"
        f"<vcpu>2</vcpu><os><type>hvm</type></os></domain>\n"
        for i in range(1, channels + 1)
    )
    path.write_text(f"<node>\n{body}</node>\n")


# ---------------------------------------------------------------------------
# QEMU and the guests


def churn(channel_path: Path, first: int, count: int, interval: float) -> None:
    """--churn: crash-looping QEMUs for VMs first..first+count-1, until SIGTERM.

    Each cycle, each VM's channel directory goes (closing the listening
    socket and whatever the server connected) and comes back with a new
    listening socket, as a QEMU that dies and is started again.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    held: dict[int, list[socket.socket]] = {}
    while True:
        for i in range(first, first + count):
            for sock in held.pop(i, ()):
                sock.close()
            directory = channel_path / f"{i}-vm{i}"
            try:
                os.unlink(directory / SOCKET_NAME)
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            directory.mkdir()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(directory / SOCKET_NAME))
            listener.listen(16)
            listener.setblocking(False)
            held[i] = [listener]
        time.sleep(interval)
        for i, socks in held.items():
            while True:
                try:
                    conn, _ = socks[0].accept()
                except OSError:
                    break
                socks.append(conn)


class GuestSide(asyncio.Protocol):
    """QEMU's end of one channel: the guest's requests go out, answers come in."""

    def __init__(self, bench: "Bench", hostile: str = ""):
        self.bench = bench
        self.hostile = hostile
        self.transport = None
        self.data = bytearray()
        self.sent = 0.0
        self.waiting = False

    def connection_made(self, transport):
        self.transport = transport
        if self.hostile:
            # Deferred: the transport starts reading only after
            # connection_made, and before Python 3.10 a pause_reading() here
            # would be undone by that.
            asyncio.get_running_loop().call_soon(transport.pause_reading)
        if self.hostile == "no-read":
            transport.write(REQUEST * 100_000)
        elif self.hostile == "garbage":
            transport.write(b"garbage without a blank line " * 150_000)
        else:
            self.bench.connected.append(self)
        self.bench.accepted += 1
        if self.bench.accepted == self.bench.channels + self.bench.hostile:
            self.bench.all_connected.set()

    def data_received(self, data):
        if self.hostile:
            return  # a hostile guest's answers are not timed
        self.data += data
        if self.data.endswith(b"</metrics>\n\n") or self.data.endswith(b"INVALID REQUEST\n\n"):
            self.bench.answered(time.perf_counter() - self.sent, len(self.data))
            self.data.clear()
            self.waiting = False

    def connection_lost(self, exc):
        self.bench.lost += 1

    def ask(self) -> bool:
        if self.waiting:
            return False
        self.waiting = True
        self.sent = time.perf_counter()
        self.transport.write(REQUEST)
        return True


class Bench:
    def __init__(self, channels: int, hostile: int, hostile_kind: str = "mixed"):
        self.channels = channels
        self.hostile = hostile
        self.hostile_kind = hostile_kind
        self.accepted = 0
        self.connected: list[GuestSide] = []
        self.all_connected = asyncio.Event()
        self.recording = False
        self.latencies: list[float] = []
        self.answers = 0
        self.answer_bytes = 0
        self.skipped = 0
        self.lost = 0

    def answered(self, latency, size):
        if self.recording:
            self.latencies.append(latency)
            self.answers += 1
            self.answer_bytes = size

    async def listen(self, channel_path: Path) -> list:
        loop = asyncio.get_running_loop()
        servers = []
        for i in range(1, self.channels + self.hostile + 1):
            kind = ("no-read", "garbage")[i % 2] if self.hostile_kind == "mixed" else self.hostile_kind
            hostile = "" if i <= self.channels else kind
            directory = channel_path / f"{i}-vm{i}"
            directory.mkdir()
            servers.append(await loop.create_unix_server(
                lambda hostile=hostile: GuestSide(self, hostile), str(directory / SOCKET_NAME)))
        return servers

    async def ask_loop(self) -> None:
        """Each guest once a second, spread evenly over the second."""
        guests = self.connected
        start = time.perf_counter()
        step = 1.0 / len(guests)
        k = 0
        while True:
            due = start + k * step
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if not guests[k % len(guests)].ask() and self.recording:
                self.skipped += 1
            k += 1


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def measure(args, channels: int) -> dict:
    """One run with *channels* well-behaved guests; returns its figures."""
    work = Path(tempfile.mkdtemp(prefix="vhostmd-bench-"))
    channel_path = work / "channel"
    channel_path.mkdir()
    bench = Bench(channels, args.hostile, args.hostile_kind)
    total = channels + args.hostile + args.churn
    servers = await bench.listen(channel_path)
    churner = None
    if args.churn:
        churner = subprocess.Popen([sys.executable, __file__, "--churn-worker", str(channel_path),
                                    "--channels", str(channels + args.hostile + 1),
                                    "--churn", str(args.churn),
                                    "--churn-interval", str(args.churn_interval)])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.mode == "server":
        cmd = [sys.executable, __file__, "--serve", str(channel_path),
               "--channels", str(total), "--period", str(args.period)]
    elif args.mode in ("floor", "asyncio-floor"):
        cmd = [sys.executable, __file__, f"--serve-{args.mode}", str(channel_path), "--channels", str(total)]
    else:
        node_file(work / "node.xml", total)
        daemon_config(work / "vhostmd.conf", channel_path, total, args.period)
        # Its own pid and state files: run as root, it must not take the system's.
        cmd = [sys.executable, "-m", "vhostmd", "-d", "-c", f"test://{work / 'node.xml'}",
               "-f", str(work / "vhostmd.conf"), "-p", str(work / "vhostmd.pid"),
               "--status-file", str(work / "status.json")]
    log = open(work / "server.log", "w+")  # a file: a full pipe would block the server
    proc = subprocess.Popen(cmd, env=env, stderr=log, text=True)
    try:
        deadline = time.monotonic() + 120
        while not bench.all_connected.is_set():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server under test exited or did not connect every channel")
            await asyncio.sleep(0.1)
        asker = asyncio.ensure_future(bench.ask_loop())
        await asyncio.sleep(args.warmup)
        bench.recording = True
        log.flush()
        lines0 = _lines(work / "server.log")
        cpu0, wall0 = cpu_times(proc.pid), time.perf_counter()
        churn0 = cpu_times(churner.pid) if churner else (0.0, 0.0)
        await asyncio.sleep(args.seconds)
        cpu1, wall1 = cpu_times(proc.pid), time.perf_counter()
        churn1 = cpu_times(churner.pid) if churner else (0.0, 0.0)
        lines1 = _lines(work / "server.log")
        bench.recording = False
        asker.cancel()
    except BaseException:
        print(f"{bench.accepted} of {total} channels connected", file=sys.stderr)
        args.verbose = True
        raise
    finally:
        if churner is not None:
            churner.terminate()
            churner.wait(timeout=30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        for server in servers:
            server.close()
        log.seek(0)
        if args.verbose:
            print(log.read(), file=sys.stderr)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    wall = wall1 - wall0
    lat = bench.latencies or [float("nan")]
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    return {
        "channels": channels,
        "answers/s": bench.answers / wall,
        "size": bench.answer_bytes,
        "p50 ms": statistics.median(lat) * 1000,
        "p99 ms": percentile(lat, 0.99) * 1000,
        "max ms": max(lat) * 1000,
        "CPU %": 100 * (user + system) / wall,
        "skipped": bench.skipped,
        "lost": bench.lost,
        "log lines/min": (lines1 - lines0) * 60 / wall,
        "churn CPU %": 100 * (sum(churn1) - sum(churn0)) / wall,
    }


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))


async def run(args) -> int:
    hostile = f", {args.hostile} hostile guests ({args.hostile_kind})" if args.hostile else ""
    if args.churn:
        hostile += f", {args.churn} VMs re-creating their sockets every {args.churn_interval * 1000:g} ms"
    print(f"mode {args.mode}, update period {args.period} s, {args.seconds:g} s measured{hostile}")
    print(f"{'channels':>8} {'answers/s':>10} {'bytes':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'CPU %':>6}" + (f" {'log/min':>8}" if args.churn else ""))
    for channels in args.channels:
        r = await measure(args, channels)
        print(f"{r['channels']:>8} {r['answers/s']:>10.1f} {r['size']:>6} {r['p50 ms']:>7.2f} "
              f"{r['p99 ms']:>7.2f} {r['max ms']:>7.2f} {r['CPU %']:>6.2f}"
              + (f" {r['log lines/min']:>8.0f}" if args.churn else ""), flush=True)
        if args.churn:
            print(f"         (the crash-looping QEMUs used {r['churn CPU %']:.1f} % of a core)")
        if r["skipped"] or r["lost"]:
            print(f"         ({r['skipped']} asks skipped: answer outstanding; {r['lost']} channels lost)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", default="10,100,1024",
                        help="comma-separated channel counts, one run each (default 10,100,1024)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--period", type=int, default=5, help="update period of the server")
    parser.add_argument("--mode", choices=("server", "daemon", "floor", "asyncio-floor"), default="server")
    parser.add_argument("--hostile", type=int, default=0, help="extra misbehaving guests")
    parser.add_argument("--hostile-kind", choices=("mixed", "garbage", "no-read"), default="mixed",
                        help="what the misbehaving guests do (default: half each)")
    parser.add_argument("--churn", type=int, default=0,
                        help="extra VMs whose channel directory and socket are re-created without end")
    parser.add_argument("--churn-interval", type=float, default=0.010,
                        help="seconds between re-creations (default 0.01)")
    parser.add_argument("--churn-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--verbose", action="store_true", help="print the server's log")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-asyncio-floor", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.channels = [int(n) for n in str(args.channels).split(",")]
    if args.serve:
        serve(args.serve, args.channels[0], args.period)
        return 0
    if args.churn_worker:
        churn(args.churn_worker, args.channels[0], args.churn, args.churn_interval)
        return 0
    if args.serve_floor:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # for sigwait, in every thread
        serve_floor(args.serve_floor, args.channels[0])
        return 0
    if args.serve_asyncio_floor:
        serve_asyncio_floor(args.serve_asyncio_floor, args.channels[0])
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
