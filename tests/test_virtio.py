"""The virtio transport against emulated QEMU channel sockets.

The daemon runs in the test's event loop on libvirt's test driver; each VM's
channel is a real listening unix socket laid out as libvirt lays it out
(``fake_qemu``), and the test plays the guest on it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import tempfile
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import libvirt
import pytest

from fake_qemu import INVALID, REQUEST, FakeQemu, dead_socket
from support import config_xml, metric, write_node
from vhostmd import config as config_mod
from vhostmd.publish.virtio import serving as virtio_io, transport as virtio
from vhostmd.daemon import Daemon
from vhostmd.model import Domain, Metric, Snapshot, VmMetrics
from vhostmd.render import Renderer
from vhostmd.collect.virt import Libvirt
from vhostmd.transports import open_transports
from vhostmd.publish.virtio.naming import name_matches, parse_channel_dir
from vhostmd.publish.virtio.protocol import TokenBucket
from vhostmd.publish.virtio.transport import VirtioTransport, open_virtio

DEFAULT_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # test:///default's domain "test"
TEST_UUID = str(uuidlib.uuid5(uuidlib.NAMESPACE_OID, "test"))  # "test" in a node() file

METRICS = (
    metric("HostName", "echo host-a")
    + metric("VmName", "echo NAME", context="vm")
    + metric("VmUuid", "echo UUID", context="vm")
)


def async_test(fn):
    """Run an async test function in a fresh event loop, with an overall timeout."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 90))
    return wrapper


def virtio_xml(channel_path: Path, max_channels: int = 1024, expiration: int = 15, extra: str = "") -> str:
    return (
        f"<virtio><channel_path>{channel_path}</channel_path><max_channels>{max_channels}</max_channels>"
        f"<expiration_time>{expiration}</expiration_time>{extra}</virtio>"
    )


@asynccontextmanager
async def running(tmp_path: Path, uri: str, *, metrics: str = METRICS, period: int = 1,
                  channels: Path | None = None, **virtio_args):
    """The daemon serving channels under *channels* (a new directory by default)."""
    # Unix socket paths are short (108 bytes): tmp_path is too deep.
    channels = channels or Path(tempfile.mkdtemp(prefix="vhostmd-test-"))
    conf_path = tmp_path / "vhostmd.conf"
    conf_path.write_text(config_xml(metrics, period=period, transports=("virtio",),
                                    virtio=virtio_xml(channels, **virtio_args)))
    conf = config_mod.load(conf_path)
    virt = Libvirt(uri)
    transports = open_transports(conf)
    server = next(t for t in transports if isinstance(t, VirtioTransport))
    daemon = Daemon(conf, conf_path, virt, transports)
    task = asyncio.ensure_future(daemon.run())
    try:
        yield SimpleNamespace(daemon=daemon, server=server, channels=channels, conf_path=conf_path)
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)
        virt.close()
        shutil.rmtree(channels, ignore_errors=True)


@pytest.fixture
def short_tmp():
    path = Path(tempfile.mkdtemp(prefix="vhostmd-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def node(tmp_path: Path, names: list[str]):
    """A test-driver node file; returns its URI and the VMs (ids 1..N)."""
    path = tmp_path / "node.xml"
    vms = write_node(path, names)
    return f"test://{path}", vms


def one_vm(tmp_path: Path) -> str:
    """A node with one domain "test" (id 1, TEST_UUID), private to each connection."""
    uri, _ = node(tmp_path, ["test"])
    return uri


def parse(answer: bytes) -> list[tuple[str, str, str, str | None, str | None]]:
    """(context, name, value, id, uuid) of each metric in an answer, framing checked."""
    assert answer.startswith(b"<metrics>\n")
    assert answer.endswith(b"</metrics>\n\n")
    root = ET.fromstring(answer)
    return [(m.get("context"), m.findtext("name"), m.findtext("value"), m.get("id"), m.get("uuid"))
            for m in root]


def vm_metrics(answer: bytes) -> set[tuple[str, str, str | None, str | None]]:
    return {(name, value, id_, uuid) for context, name, value, id_, uuid in parse(answer) if context == "vm"}


async def until(predicate, timeout: float = 20.0) -> None:
    """Wait until *predicate()* holds (a guard, not a speed requirement)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


def channel_of(server: VirtioTransport, uuid: str):
    return server._vms[uuid].channel


# ---------------------------------------------------------------------------
# pure pieces


@pytest.mark.parametrize("name, parsed", [
    (b"1-test", (1, b"test")),
    (b"domain-12-my-vm", (12, b"my-vm")),
    (b"3-4-five", (3, b"4-five")),
    (b"domain-x", None),
    (b"test", None),
    (b"-1-x", None),
    (b"1-", None),
    (b"99999999999-x", None),
])
def test_channel_directory_names(name, parsed):
    assert parse_channel_dir(name) == parsed


def test_names_as_libvirt_shortens_them():
    assert name_matches(b"test", "test")
    assert not name_matches(b"tes", "test") and not name_matches(b"test2", "test")
    long = "abcdefghijklmnopqrstuvwxyz"
    assert name_matches(long[:20].encode(), long) and name_matches(long.encode(), long)
    accented = "é" * 15  # 15 characters, 30 bytes
    assert name_matches(accented.encode(), accented)
    assert name_matches(accented.encode()[:20], accented)  # cut in bytes (C locale)


def test_token_bucket():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.75) == pytest.approx(0.25)
    assert [bucket.take(100.0) for _ in range(4)][-1] > 0  # never more than the burst saved


# ---------------------------------------------------------------------------
# what each VM sees


@async_test
async def test_two_vms_each_see_only_their_own_metrics(tmp_path):
    uri, (alpha, beta) = node(tmp_path, ["alpha", "beta"])
    async with running(tmp_path, uri) as d:
        qa = await FakeQemu(d.channels, 1, "alpha").start()               # <id>-<name>
        qb = await FakeQemu(d.channels, 2, "beta", old_scheme=True).start()  # domain-<id>-<name>
        ga, gb = await qa.guest(), await qb.guest()
        answer_a, answer_b = await ga.ask(), await gb.ask()
        status = d.daemon.status(running=True)
        (channels,) = [t.channels for t in status.transports if t.name == "virtio"]
        assert channels.connected == 2

    assert answer_a.startswith(b"<metrics>\n  <metric type='string' context='host'>\n"
                               b"    <name>HostName</name>\n    <value>host-a</value>\n  </metric>\n")
    assert answer_a.endswith(b"  </metric>\n</metrics>\n\n")
    assert ("host", "HostName", "host-a", None, None) in parse(answer_b)
    assert vm_metrics(answer_a) == {("VmName", "alpha", "1", alpha.uuid), ("VmUuid", alpha.uuid, "1", alpha.uuid)}
    assert vm_metrics(answer_b) == {("VmName", "beta", "2", beta.uuid), ("VmUuid", beta.uuid, "2", beta.uuid)}
    assert b"beta" not in answer_a and beta.uuid.encode() not in answer_a
    assert b"alpha" not in answer_b and alpha.uuid.encode() not in answer_b


@async_test
async def test_missing_metrics_are_marked_not_available(tmp_path):
    metrics = metric("HostName", "echo host-a") + metric("Broken", "exit 1", context="vm")
    async with running(tmp_path, one_vm(tmp_path), metrics=metrics) as d:
        answer = await (await (await FakeQemu(d.channels, 1, "test").start()).guest()).ask()
    assert answer == (
        b"<metrics>\n"
        b"  <metric type='string' context='host'>\n"
        b"    <name>HostName</name>\n"
        b"    <value>host-a</value>\n"
        b"  </metric>\n"
        b"  <!-- VM metrics not available -->\n"
        b"</metrics>\n\n"
    )


@async_test
async def test_long_names_are_matched_as_libvirt_cuts_them(tmp_path):
    long_name = "a-very-long-domain-name-indeed"
    uri, (vm,) = node(tmp_path, [long_name])
    async with running(tmp_path, uri) as d:
        qemu = await FakeQemu(d.channels, 1, long_name).start()
        assert qemu.dir.name == "1-a-very-long-domain-n"
        answer = await (await qemu.guest()).ask()
    assert ("VmName", long_name, "1", vm.uuid) in vm_metrics(answer)


@async_test
async def test_a_directory_named_for_another_vm_gets_nothing(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    uri, (alpha, beta) = node(tmp_path, ["alpha", "beta"])
    async with running(tmp_path, uri) as d:
        # Id 1 is alpha: a directory "1-beta" is not alpha's channel.
        wrong = await FakeQemu(d.channels, 1, "beta").start()
        right = await FakeQemu(d.channels, 2, "beta").start()
        answer = await (await right.guest()).ask()
        await wrong.no_connection(2.5)  # two more updates
    assert ("VmName", "beta", "2", beta.uuid) in vm_metrics(answer)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "1-beta" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


# ---------------------------------------------------------------------------
# the request protocol on a real channel


@async_test
async def test_fragments_and_pipelined_requests(tmp_path):
    async with running(tmp_path, one_vm(tmp_path)) as d:
        guest = await (await FakeQemu(d.channels, 1, "test").start()).guest()
        for piece in (b"GE", b"T /metr", b"ics/XML\r", b"\n\r", b"\n"):
            guest.send(piece)
            await asyncio.sleep(0.05)
        (answer,) = await guest.answers(1)
        assert ("VmName", "test", "1", TEST_UUID) in vm_metrics(answer)

        guest.send(b"GET /metrics/XML\n\nBOGUS\n\nGET /metrics/XML\r\n\r\n")
        first, invalid, last = await guest.answers(3)
        assert invalid == INVALID
        assert vm_metrics(first) == vm_metrics(last) == vm_metrics(answer)
        await guest.nothing_more()


@async_test
async def test_invalid_and_over_long_requests(tmp_path):
    async with running(tmp_path, one_vm(tmp_path), extra="<rate_limit>100</rate_limit>") as d:
        guest = await (await FakeQemu(d.channels, 1, "test").start()).guest()
        assert await guest.ask(b"GET /metrics/JSON\n\n") == INVALID
        assert await guest.ask(b"\r\n\r\n") == INVALID
        assert await guest.ask(b"get /metrics/xml\n\n") == INVALID
        # 600 bytes and no blank line: answered once the 512-byte bound is hit.
        guest.send(b"x" * 600)
        assert await guest.answers(1) == [INVALID]
        await guest.nothing_more()
        # The 88 bytes after the bound are a new (invalid) request.
        assert await guest.ask(b"\n\n") == INVALID
        # And the channel still answers a good request.
        assert parse(await guest.ask(REQUEST))


@async_test
async def test_rate_limit_paces_answers(tmp_path):
    # One request every 5 s, two at once: of four requests sent together,
    # two are answered now and the others wait (none is dropped).
    extra = "<rate_limit>0.2</rate_limit><rate_burst>2</rate_burst>"
    async with running(tmp_path, one_vm(tmp_path), extra=extra) as d:
        guest = await (await FakeQemu(d.channels, 1, "test").start()).guest()
        guest.send(REQUEST * 4)
        answers = await guest.answers(2)
        assert all(parse(a) for a in answers)
        await guest.nothing_more(1.0)  # the next token is 5 s away
        channel = channel_of(d.server, TEST_UUID)
        assert len(channel._pending) == 2 and not channel.reading
        assert d.server.stats.delayed == 1 and d.server.stats.answers == 2


def test_default_rate_limit_is_documented():
    assert (config_mod.DEFAULT_RATE_LIMIT, config_mod.DEFAULT_RATE_BURST) == (2.0, 5)
    doc = (Path(__file__).parent.parent / "docs" / "virtio.md").read_text()
    assert "2 requests per second" in doc and "burst of 5" in doc


@async_test
async def test_each_answer_is_built_once_per_update(tmp_path, monkeypatch):
    built = []
    real = virtio_io.answer

    def counting(host, vm):
        built.append(vm)
        return real(host, vm)

    monkeypatch.setattr(virtio_io, "answer", counting)
    timed = metric("Now", "date +%s%N") + METRICS
    async with running(tmp_path, one_vm(tmp_path), metrics=timed, period=60) as d:
        guest = await (await FakeQemu(d.channels, 1, "test").start()).guest()
        guest.send(REQUEST * 5)
        first = await guest.answers(5)
        assert len(set(first)) == 1 and len(built) == 1
        await d.daemon.update()
        second = await guest.ask()
        assert second != first[0] and len(built) == 2


# ---------------------------------------------------------------------------
# finding channels


@async_test
async def test_dead_sockets_never_delay_live_ones(tmp_path):
    uri, (alpha, beta, gamma) = node(tmp_path, ["alpha", "beta", "gamma"])
    channels = Path(tempfile.mkdtemp(prefix="vhostmd-test-"))
    try:
        dead_socket(channels, 1, "alpha")                   # a VM that died, listed first
        dead_socket(channels, 3, "gamma", old_scheme=True)  # stale directory of a live VM
        qb = await FakeQemu(channels, 2, "beta").start()
        qg = await FakeQemu(channels, 3, "gamma").start()
        # One update only (period 60): the first scan must connect both.
        async with running(tmp_path, uri, period=60, channels=channels) as d:
            gb, gg = await qb.guest(), await qg.guest()
            assert ("VmName", "gamma", "3", gamma.uuid) in vm_metrics(await gg.ask())
            assert ("VmName", "beta", "2", beta.uuid) in vm_metrics(await gb.ask())
            # The dead one is retried with a growing back-off.
            dead = d.server._vms[alpha.uuid]
            await until(lambda: d.server.stats.connect_failures >= 3)
            assert dead.channel is None
            assert dead.delay >= 4 * virtio.BACKOFF_INITIAL
    finally:
        shutil.rmtree(channels, ignore_errors=True)


@async_test
async def test_a_new_socket_is_noticed_at_once(tmp_path, monkeypatch):
    # No update (period 60) and no retry (back-off 60 s) during the test:
    # only inotify can find the socket.
    monkeypatch.setattr(virtio, "BACKOFF_INITIAL", 60.0)
    monkeypatch.setattr(virtio, "BACKOFF_MAX", 60.0)
    async with running(tmp_path, one_vm(tmp_path), period=60) as d:
        await until(lambda: TEST_UUID in d.server._vms)
        vm = d.server._vms[TEST_UUID]
        await until(lambda: vm.retry_at > 0)  # the first scan found no channel directory
        dead_socket(d.channels, 1, "test")     # a new directory, with a dead socket...
        await until(lambda: d.server.stats.connect_failures == 1)  # ...tried at once
        assert vm.retry_at > d.server.clock() + 10                  # and backed off
        qemu = FakeQemu(d.channels, 1, "test")
        qemu.path.unlink()
        await qemu.start()                   # ...then QEMU's socket
        guest = await qemu.guest(timeout=20)
        assert parse(await guest.ask())


@async_test
async def test_restarted_vm_is_connected_again_under_its_new_id(tmp_path):
    rw = libvirt.open("test:///default")
    try:
        # The test driver's default node is shared by the connections of this
        # process: the domain's id depends on what ran before.
        dom = rw.lookupByName("test")
        old_id = dom.ID()
        async with running(tmp_path, "test:///default", period=60) as d:
            first = FakeQemu(d.channels, old_id, "test")
            guest = await (await first.start()).guest()
            assert ("VmName", "test", str(old_id), DEFAULT_UUID) in vm_metrics(await guest.ask())

            # QEMU exits (the daemon sees the hang-up), libvirt starts it again.
            dom.destroy()
            await first.stop()
            dom.create()
            new_id = dom.ID()
            assert new_id != old_id
            second = await FakeQemu(d.channels, new_id, "test").start()
            # libvirt delivers the stop and start events asynchronously; once
            # they are in, one update is all it takes (the period is 60 s).
            tracker = d.daemon.virt.tracker
            for _ in range(200):
                if [t.domain.id for t in tracker.tracked()] == [new_id]:
                    break
                await asyncio.sleep(0.02)
            await d.daemon.update()
            guest = await second.guest()
            assert ("VmName", "test", str(new_id), DEFAULT_UUID) in vm_metrics(await guest.ask())
            assert first.accepted == 1
    finally:
        rw.close()


@async_test
async def test_vms_with_channels_cost_no_directory_listing(tmp_path, monkeypatch):
    listings = []
    real_scandir = virtio.os.scandir

    def scandir(path):
        listings.append(path)
        return real_scandir(path)

    monkeypatch.setattr(virtio.os, "scandir", scandir)
    uri, vms = node(tmp_path, ["a", "b"])
    async with running(tmp_path, uri, period=60) as d:
        for i, vm in enumerate(vms):
            await (await FakeQemu(d.channels, i + 1, vm.name).start()).guest()
        before = len(listings)
        for _ in range(3):
            await d.daemon.update()
        await asyncio.sleep(0.1)
        assert len(listings) == before


@async_test
async def test_max_channels_is_enforced_with_one_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    uri, vms = node(tmp_path, ["a", "b", "c"])
    async with running(tmp_path, uri, max_channels=2) as d:
        qemus = [await FakeQemu(d.channels, i + 1, vm.name).start() for i, vm in enumerate(vms)]
        await qemus[0].guest()
        await qemus[1].guest()
        await qemus[2].no_connection(3.5)  # three updates
        notes = d.server.status().channels.notes
        assert any("max_channels 2 reached: 1 VM(s)" in note for note in notes), notes
    warnings = [r for r in caplog.records if r.name == "vhostmd.publish.virtio.transport" and "max_channels" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


# ---------------------------------------------------------------------------
# channels closing


@async_test
async def test_peer_hang_up_closes_the_channel(tmp_path):
    async with running(tmp_path, one_vm(tmp_path)) as d:
        qemu = await FakeQemu(d.channels, 1, "test").start()
        guest = await qemu.guest()
        assert parse(await guest.ask())
        guest.hang_up()
        await until(lambda: channel_of(d.server, TEST_UUID) is None)
        # The VM still runs with the socket in place: connected again (after back-off).
        guest = await qemu.guest(3)
        assert parse(await guest.ask())


@async_test
async def test_a_guest_that_hangs_up_while_held_back_is_closed_at_once(tmp_path):
    # Its channel is not read while an answer waits for the rate (5 s away):
    # the hang-up alone must close it.
    extra = "<rate_limit>0.2</rate_limit><rate_burst>1</rate_burst>"
    async with running(tmp_path, one_vm(tmp_path), period=60, extra=extra) as d:
        guest = await (await FakeQemu(d.channels, 1, "test").start()).guest()
        guest.send(REQUEST * 3)
        assert parse((await guest.answers(1))[0])
        channel = channel_of(d.server, TEST_UUID)
        await until(lambda: not channel.reading)
        guest.hang_up()
        await until(lambda: channel.closed, timeout=3)
        await until(lambda: d.server.stats.closed == 1, timeout=3)


@async_test
async def test_a_failure_serving_one_channel_closes_only_that_channel(tmp_path, monkeypatch, caplog):
    # A fault the real parts cannot produce: building one VM's answer fails.
    real = virtio_io.answer

    def failing(host, vm):
        if vm is not None and b"<value>alpha</value>" in vm.data:
            raise RuntimeError("broken")
        return real(host, vm)

    monkeypatch.setattr(virtio_io, "answer", failing)
    uri, (alpha, beta) = node(tmp_path, ["alpha", "beta"])
    async with running(tmp_path, uri) as d:
        ga = await (await FakeQemu(d.channels, 1, "alpha").start()).guest()
        gb = await (await FakeQemu(d.channels, 2, "beta").start()).guest()
        ga.send(REQUEST)
        assert await ga.closed()
        for _ in range(3):
            assert ("VmName", "beta", "2", beta.uuid) in vm_metrics(await gb.ask())
    failures = [r for r in caplog.records if "serving VM 'alpha' (id 1) failed" in r.getMessage()]
    assert failures and failures[0].exc_info[0] is RuntimeError


@async_test
async def test_a_failure_of_the_serving_thread_is_reported_and_stops_nothing_else(
        tmp_path, monkeypatch, caplog):
    # A fault the real parts cannot produce: the serving loop itself fails.
    real = virtio_io.ServingThread._commands_run
    calls = []

    def failing(self):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("broken")
        return real(self)

    monkeypatch.setattr(virtio_io.ServingThread, "_commands_run", failing)
    uri, (alpha, beta) = node(tmp_path, ["alpha", "beta"])
    async with running(tmp_path, uri, period=60) as d:
        ga = await (await FakeQemu(d.channels, 1, "alpha").start()).guest()
        assert parse(await ga.ask())
        await FakeQemu(d.channels, 2, "beta").start()  # its channel's hand-over fails
        assert await ga.closed()
        await until(lambda: d.server.channels == 0)
        await d.daemon.update()  # updates go on
        assert not d.daemon._stop.is_set()
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical and "no channel is answered any more" in critical[0].getMessage()


@async_test
async def test_expiration_and_vms_that_stop(short_tmp):
    tmp_path = short_tmp
    clock = [1000.0]
    server = VirtioTransport(
        config_mod.VirtioConfig(channel_path=tmp_path, expiration_time=15), clock=lambda: clock[0]
    )
    renderer = Renderer()
    vm_a, vm_b = Domain(1, "a", "uuid-a"), Domain(2, "b", "uuid-b")

    def publish(*domains, known=True):
        snapshot = Snapshot(
            host=(Metric("H", "string", "h"),),
            vms=tuple(VmMetrics(d, (Metric("N", "string", d.name),)) for d in domains),
            vms_known=known,
        )
        server.publish(renderer.render(snapshot))

    await server.start()
    try:
        qa = await FakeQemu(tmp_path, 1, "a").start()
        qb = await FakeQemu(tmp_path, 2, "b").start()
        publish(vm_a, vm_b)
        ga, gb = await qa.guest(), await qb.guest()
        # libvirt unreachable: no VM list, channels kept until expiration_time.
        clock[0] += 14
        publish(known=False)
        assert not await ga.closed(0.2)
        assert vm_metrics(await ga.ask()) == {("N", "a", "1", "uuid-a")}
        clock[0] += 1
        publish(known=False)
        assert await ga.closed() and await gb.closed()
        assert server.channels == 0

        # A VM missing from a known list has stopped: its channel closes at once.
        publish(vm_a, vm_b)
        ga, gb = await qa.guest(), await qb.guest()
        publish(vm_b)
        assert await ga.closed()
        assert not await gb.closed(0.2)
    finally:
        await server.stop()
    assert await gb.closed()


@async_test
async def test_reload_with_the_same_virtio_settings_keeps_channels(tmp_path):
    async with running(tmp_path, one_vm(tmp_path), period=60) as d:
        guest = await (await FakeQemu(d.channels, 1, "test").start()).guest()
        assert parse(await guest.ask())
        conf = d.conf_path.read_text().replace("echo host-a", "echo host-b")
        d.conf_path.write_text(conf)
        assert await d.daemon.reload()
        await d.daemon.update()
        assert ("host", "HostName", "host-b", None, None) in parse(await guest.ask())
        assert any(t is d.server for t in d.daemon.pipeline.publishers)


# ---------------------------------------------------------------------------
# guests that misbehave


BIG_HOST_METRIC = metric("Big", "head -c 30000 /dev/zero | tr '\\0' x")


@async_test
async def test_guests_that_never_read_or_flood_do_not_hold_up_others(tmp_path):
    uri, (slow, flood, good) = node(tmp_path, ["slow", "flood", "good"])
    extra = "<rate_limit>1000</rate_limit><rate_burst>1000</rate_burst>"
    async with running(tmp_path, uri, metrics=BIG_HOST_METRIC + METRICS, extra=extra) as d:
        q_slow = await FakeQemu(d.channels, 1, "slow", read_limit=1024).start()
        q_flood = await FakeQemu(d.channels, 2, "flood", read_limit=1024).start()
        q_good = await FakeQemu(d.channels, 3, "good").start()
        g_slow, g_flood, g_good = await q_slow.guest(), await q_flood.guest(), await q_good.guest()

        g_slow.send(REQUEST * 2000)                        # asks and asks, never reads
        g_flood.send(b"\x00garbage" * 131072 + b"\n\n" * 4096)  # 1 MiB without a blank line
        slow_channel = channel_of(d.server, slow.uuid)
        flood_channel = channel_of(d.server, flood.uuid)
        for _ in range(20):
            answer = await g_good.ask()
            assert ("VmName", "good", "3", good.uuid) in vm_metrics(answer)
        await until(lambda: not slow_channel.reading and not flood_channel.reading)

        answer_size = len(slow_channel.answer())
        assert answer_size > 30000
        # Bounded: at most the rest of one answer held for each, reading
        # paused, under one read's worth of requests waiting, and most of
        # the flood left unread in the guest's own buffers.
        for channel in (slow_channel, flood_channel):
            assert 0 < channel.queued <= answer_size
            assert len(channel._pending) <= virtio_io.READ_CHUNK // 2
            assert channel._parser.buffered < 512
        assert g_flood.writer.transport.get_write_buffer_size() > 256 * 1024
        assert d.server.channels == 3


@async_test
async def test_qemu_that_accepts_and_hangs_up_in_a_loop(tmp_path):
    uri, (flaky, good) = node(tmp_path, ["flaky", "good"])
    async with running(tmp_path, uri) as d:
        flaky_qemu = await FakeQemu(d.channels, 1, "flaky").start()
        good_guest = await (await FakeQemu(d.channels, 2, "good").start()).guest()
        started = time.monotonic()
        for _ in range(4):
            (await flaky_qemu.guest()).hang_up()
            assert parse(await good_guest.ask())
        flaky_vm = d.server._vms[flaky.uuid]
        await until(lambda: flaky_vm.channel is None)  # the last hang-up is seen
        # Each hang-up doubles the wait before the next attempt: 0.25 + 0.5 + 1 s
        # at least passed, and the next attempt is 2 s or more away.
        assert time.monotonic() - started >= 1.75
        assert flaky_vm.delay >= 16 * virtio.BACKOFF_INITIAL
        assert not d.daemon._stop.is_set()


@async_test
async def test_channels_are_answered_while_an_update_is_collected(tmp_path):
    gate, started, finished = tmp_path / "gate", tmp_path / "started", tmp_path / "finished"
    slow = metric(
        "Slow",
        f"if [ -e {gate} ]; then touch {started}; sleep 4; touch {finished}; fi; echo s",
        attrs=' timeout="8"',
    )
    async with running(tmp_path, one_vm(tmp_path), metrics=slow + METRICS) as d:
        guest = await (await FakeQemu(d.channels, 1, "test").start()).guest()
        assert parse(await guest.ask())
        gate.touch()
        await until(started.exists)  # an update is now waiting for the slow action
        for _ in range(3):
            assert parse(await guest.ask())
        assert not finished.exists()
        gate.unlink()
