"""In-memory adapter specifics: virtual clock, offline network, counters, determinism."""

from __future__ import annotations

import asyncio

import pytest

from chatcore.errors import TransportError
from chatcore.transport import ManualClock, MemoryNetwork, MemoryTransport, inbox_subject

A = inbox_subject(b"\xaa" * 16)


async def test_timestamps_come_from_the_injected_clock() -> None:
    clock = ManualClock(1_000)
    net = MemoryNetwork(clock.now_ms)
    t = MemoryTransport(net)
    await t.publish(A, b"1")
    clock.advance(250)
    await t.publish(A, b"2")
    assert [d.timestamp_ms for d in await t.fetch(A)] == [1_000, 1_250]
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_dedup_window_is_virtual_time() -> None:
    net = MemoryNetwork(duplicate_window_ms=1_000)
    t = MemoryTransport(net)
    s1 = await t.publish(A, b"x", msg_id="m")
    assert net.clock is not None
    net.clock.advance(999)
    assert await t.publish(A, b"x", msg_id="m") == s1
    net.clock.advance(1_002)
    assert await t.publish(A, b"x", msg_id="m") > s1  # outside the window: stored again
    assert net.duplicates == 1 and net.published == 2


async def test_network_down_raises_transport_error_and_recovers() -> None:
    net = MemoryNetwork()
    t = MemoryTransport(net)
    sub = await t.subscribe([A])
    net.set_available(False)
    with pytest.raises(TransportError, match="unreachable"):
        await t.publish(A, b"x")
    with pytest.raises(TransportError):
        await t.fetch(A)
    with pytest.raises(TransportError):
        await sub.add_subjects([inbox_subject(b"\x01" * 16)])
    net.set_available(True)
    seq = await t.publish(A, b"y")
    d = await asyncio.wait_for(sub.__anext__(), 1)
    assert (d.data, d.seq) == (b"y", seq)


async def test_same_calls_same_result() -> None:
    async def run() -> list[tuple[str, bytes, int, int]]:
        net = MemoryNetwork(max_age_ms=5_000)
        ts = [MemoryTransport(net) for _ in range(3)]
        sub = await ts[0].subscribe([A], after=0)
        for i in range(20):
            assert net.clock is not None
            net.clock.advance(700)
            await ts[i % 3].publish(A, b"%d" % i, msg_id=str(i % 7))
        out = []
        while sub.pending():
            d = await sub.__anext__()
            out.append((d.subject, d.data, d.seq, d.timestamp_ms))
        out += [(d.subject, d.data, d.seq, d.timestamp_ms) for d in await ts[1].fetch(A)]
        return out

    assert await run() == await run()
