"""A crash-looping QEMU: channel directories and sockets re-created without pause.

The daemon must connect such a VM a bounded number of times whatever the
churn, log it as a summary rather than a line per connection, and keep
answering the other guests. Real sockets, re-created by a thread that
plays the crash-looping QEMU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from pathlib import Path

from fake_qemu import SOCKET_NAME, FakeQemu, channel_dir
from test_virtio import async_test, node, parse, running, until
from vhostmd.publish.virtio import transport as virtio


class CrashLoop:
    """QEMU for one VM, dying and starting again every *interval* seconds."""

    def __init__(self, channel_path: Path, vm_id: int, name: str, interval: float = 0.01):
        self.directory = channel_dir(channel_path, vm_id, name)
        self.interval = interval
        self.cycles = 0
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CrashLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        held: list[socket.socket] = []
        while not self._stop.is_set():
            for sock in held:  # QEMU dies: its sockets close
                sock.close()
            try:
                os.unlink(self.directory / SOCKET_NAME)
                os.rmdir(self.directory)
            except FileNotFoundError:
                pass
            self.directory.mkdir()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.directory / SOCKET_NAME))
            listener.listen(8)
            listener.setblocking(False)
            held = [listener]
            self.cycles += 1
            time.sleep(self.interval)
            while True:
                try:
                    held.append(listener.accept()[0])
                    self.accepted += 1
                except OSError:
                    break
        for sock in held:
            sock.close()


@async_test
async def test_a_crash_looping_qemu_is_connected_a_bounded_number_of_times(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="vhostmd")
    uri, (loop_vm, good) = node(tmp_path, ["crashy", "good"])
    async with running(tmp_path, uri, period=60) as d:
        guest = await (await FakeQemu(d.channels, 2, "good").start()).guest()
        with CrashLoop(d.channels, 1, "crashy") as crashy:
            started = time.monotonic()
            while time.monotonic() - started < 4:
                assert ("vm", "VmName", "good", "2", good.uuid) in parse(await guest.ask())
                await asyncio.sleep(0.1)
        vm = d.server._vms[loop_vm.uuid]
        # Hundreds of new sockets; each early close doubled the wait before
        # the next connection: 0.25 + 0.5 + 1 + 2 s, so at most 5 in 4 s.
        assert crashy.cycles > 100
        assert 1 <= d.server.stats.opened - 1 <= 5
        assert vm.delay >= 4 * virtio.BACKOFF_INITIAL
        about = [r.getMessage() for r in caplog.records if "'crashy'" in r.getMessage()]
        # The first open, the first early close, and nothing more (a summary
        # follows at most once a minute).
        assert len(about) <= 3, about
        assert any("closed by QEMU soon after it opened" in line for line in about), about


@async_test
async def test_a_new_socket_does_not_end_the_back_off_of_a_vm_just_connected(tmp_path, monkeypatch):
    monkeypatch.setattr(virtio, "BACKOFF_INITIAL", 2.0)
    uri, (vm_def,) = node(tmp_path, ["flaky"])
    async with running(tmp_path, uri, period=60) as d:
        first = await FakeQemu(d.channels, 1, "flaky").start()
        (await first.guest()).hang_up()        # QEMU closes the channel at once...
        vm = d.server._vms[vm_def.uuid]
        await until(lambda: vm.channel is None)
        await first.stop()
        closed = time.monotonic()
        second = await FakeQemu(d.channels, 1, "flaky").start()  # ...and is back at once
        await asyncio.sleep(1.0)
        assert second.accepted == 0            # the 2 s back-off holds
        await second.guest(timeout=10)         # then it is connected
        assert time.monotonic() - closed >= 1.5


@async_test
async def test_a_new_socket_still_ends_the_wait_of_a_vm_that_had_none(tmp_path, monkeypatch):
    # A VM whose QEMU is not there yet is connected when its socket appears,
    # not at its next retry (60 s away here).
    monkeypatch.setattr(virtio, "BACKOFF_INITIAL", 60.0)
    uri, (vm_def,) = node(tmp_path, ["late"])
    async with running(tmp_path, uri, period=60) as d:
        await until(lambda: vm_def.uuid in d.server._vms and d.server._vms[vm_def.uuid].retry_at > 0)
        qemu = await FakeQemu(d.channels, 1, "late").start()
        assert parse(await (await qemu.guest(timeout=10)).ask())
