"""A flood after a quiet spell: the burst cap holds, then the rate.

A guest that stayed quiet has saved up at most ``rate_burst`` answers, however
long it was quiet; a flood then gets that many at once and the rest at
``rate_limit``. Real daemon, real serving thread, real unix socket.
"""

from __future__ import annotations

import asyncio
import time

from fake_qemu import REQUEST, FakeQemu
from test_virtio import async_test, one_vm, parse, running

RATE, BURST, FLOOD = 5.0, 3, 8


async def flood(guest) -> list[float]:
    """Send FLOOD requests at once; the seconds after sending at which each answer came."""
    sent = time.monotonic()
    guest.send(REQUEST * FLOOD)
    times = []
    for _ in range(FLOOD):
        answer = (await guest.answers(1, timeout=10))[0]
        assert parse(answer)
        times.append(time.monotonic() - sent)
    return times


def paced(times: list[float]) -> None:
    """Answers beyond the burst come no faster than the rate allows.

    Lower bounds only: a slow machine makes answers later, never earlier.
    """
    for k, at in enumerate(times, start=1):
        if k > BURST:
            assert at >= (k - BURST) / RATE - 0.03, (k, times)


@async_test
async def test_a_flood_after_a_long_idle_gets_the_burst_then_the_rate(tmp_path):
    extra = f"<rate_limit>{RATE:g}</rate_limit><rate_burst>{BURST}</rate_burst>"
    async with running(tmp_path, one_vm(tmp_path), extra=extra) as d:
        guest = await (await FakeQemu(d.channels, 1, "test").start()).guest()
        paced(await flood(guest))
        # Quiet for long enough to save up the whole flood and more without
        # the cap (4 s x 5/s = 20 answers), then a flood again.
        await asyncio.sleep(4)
        delayed_before = d.server.stats.delayed
        times = await flood(guest)
        paced(times)
        assert d.server.stats.delayed > delayed_before  # the rate held some back
        # The burst itself is answered at once (no pacing within it).
        assert times[BURST - 1] < 1 / RATE + times[0] + 0.5
