"""The Transport contract: every adapter (in-memory, NATS JetStream) must pass the same suite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from chatcore.errors import TransportError
from chatcore.transport import (
    Delivery,
    MemoryNetwork,
    MemoryTransport,
    Subscription,
    Transport,
    group_subject,
    inbox_subject,
)

A = inbox_subject(bytes(range(16)))
B = group_subject(bytes(range(16, 32)))
C = group_subject(bytes(range(32, 48)))


class Backend:
    """Makes transports on one shared delivery network (memory hub or one nats-server)."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.request = request
        self.network: MemoryNetwork | None = None
        self.transports: list[Any] = []

    async def transport(self, *, max_age_s: float = 30 * 86400) -> Transport:
        if self.kind == "memory":
            if self.network is None:
                self.network = MemoryNetwork(max_age_ms=int(max_age_s * 1000))
            t: Any = MemoryTransport(self.network)
        else:
            from chatcore.transport.nats import NatsTransport

            srv = self.request.getfixturevalue("nats_server")
            t = await NatsTransport.connect(srv.url, max_age_s=max_age_s, heartbeat_s=0.5)
        self.transports.append(t)
        return t  # type: ignore[no-any-return]

    async def elapse(self, seconds: float) -> None:
        """Let store time pass (virtual for memory, real for nats)."""
        if self.kind == "memory":
            assert self.network is not None and self.network.clock is not None
            self.network.clock.advance(int(seconds * 1000))
        else:
            await asyncio.sleep(seconds)

    async def close(self) -> None:
        for t in self.transports:
            await t.close()


@pytest_asyncio.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.devnet)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    b = Backend(request.param, request)
    try:
        yield b
    finally:
        await b.close()


async def nxt(sub: Subscription, timeout: float = 5.0) -> Delivery:
    return await asyncio.wait_for(sub.__anext__(), timeout)


async def take(sub: Subscription, n: int, timeout: float = 10.0) -> list[Delivery]:
    async def go() -> list[Delivery]:
        return [await sub.__anext__() for _ in range(n)]

    return await asyncio.wait_for(go(), timeout)


async def nothing_more(sub: Subscription, wait: float = 0.3) -> None:
    with pytest.raises(asyncio.TimeoutError):
        d = await asyncio.wait_for(sub.__anext__(), wait)
        pytest.fail(f"unexpected delivery {d}")


# ---- publish / subscribe ------------------------------------------------------------------


async def test_publish_returns_increasing_store_sequence(backend: Backend) -> None:
    t = await backend.transport()
    seqs = [await t.publish(A if i % 2 else B, b"m%d" % i) for i in range(6)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    assert seqs[0] >= 1
    assert await t.last_seq() == seqs[-1]


async def test_live_subscription_in_order_and_only_new(backend: Backend) -> None:
    t = await backend.transport()
    await t.publish(A, b"old")
    sub = await t.subscribe([A, B])  # after=None: live only
    sent = []
    for i in range(50):
        subj = A if i % 3 else B
        seq = await t.publish(subj, b"%d" % i)
        sent.append((subj, b"%d" % i, seq))
    got = await take(sub, 50)
    assert [(d.subject, d.data, d.seq) for d in got] == sent
    assert all(d.timestamp_ms >= 0 for d in got)
    await nothing_more(sub)


async def test_two_transports_fan_out_and_subject_isolation(backend: Backend) -> None:
    alice = await backend.transport()
    bob = await backend.transport()
    carol = await backend.transport()
    sb = await bob.subscribe([A])
    sc = await carol.subscribe([C])
    await alice.publish(A, b"to bob")
    assert (await nxt(sb)).data == b"to bob"
    await nothing_more(sc)


async def test_replay_after_per_subject_cursor_for_offline_subscriber(backend: Backend) -> None:
    pub = await backend.transport()
    dev = await backend.transport()
    sub = await dev.subscribe([A, B], after=0)
    for i in range(3):
        await pub.publish(A, b"a%d" % i)
        await pub.publish(B, b"b%d" % i)
    await take(sub, 6)
    cursors = sub.cursors
    assert set(cursors) == {A, B}
    await sub.close()

    # offline: more traffic
    offline = []
    for i in range(3, 8):
        subj = A if i % 2 else B
        offline.append((subj, b"x%d" % i, await pub.publish(subj, b"x%d" % i)))

    sub2 = await dev.subscribe([A, B], after=cursors)
    got = await take(sub2, len(offline))
    assert [(d.subject, d.data, d.seq) for d in got] == offline
    # then live ones
    s = await pub.publish(A, b"live")
    d = await nxt(sub2)
    assert (d.data, d.seq) == (b"live", s)
    await nothing_more(sub2)


async def test_replay_with_uneven_cursors_skips_what_was_seen(backend: Backend) -> None:
    t = await backend.transport()
    a1 = await t.publish(A, b"a1")
    await t.publish(B, b"b1")
    await t.publish(A, b"a2")
    b2 = await t.publish(B, b"b2")
    await t.publish(A, b"a3")
    # seen A up to a1, B up to b2; C missing from the map -> from 0
    await t.publish(C, b"c1")
    sub = await t.subscribe([A, B, C], after={A: a1, B: b2})
    got = await take(sub, 3)
    assert [d.data for d in got] == [b"a2", b"a3", b"c1"]
    await nothing_more(sub)


async def test_replay_after_stream_sequence_int(backend: Backend) -> None:
    t = await backend.transport()
    seqs = [await t.publish(A, b"%d" % i) for i in range(5)]
    sub = await t.subscribe([A], after=seqs[2])
    assert [d.data for d in await take(sub, 2)] == [b"3", b"4"]
    sub0 = await t.subscribe([A], after=0)
    assert [d.data for d in await take(sub0, 5)] == [b"%d" % i for i in range(5)]


async def test_add_subjects_on_live_subscription(backend: Backend) -> None:
    t = await backend.transport()
    old_c = await t.publish(C, b"c-before")
    sub = await t.subscribe([A])
    await t.publish(A, b"a1")
    assert (await nxt(sub)).data == b"a1"

    await sub.add_subjects([B])  # live only
    await t.publish(B, b"b1")
    await t.publish(A, b"a2")
    assert [d.data for d in await take(sub, 2)] == [b"b1", b"a2"]

    await sub.add_subjects([C, A], after=0)  # C replays its history; A is not replayed again
    got = await take(sub, 1)
    assert got[0].data == b"c-before" and got[0].seq == old_c
    await t.publish(C, b"c2")
    assert (await nxt(sub)).data == b"c2"
    await nothing_more(sub)
    assert sub.subjects == frozenset({A, B, C})


async def test_many_subjects_one_subscription(backend: Backend) -> None:
    t = await backend.transport()
    subjects = [group_subject(i.to_bytes(16, "big")) for i in range(60)]
    sub = await t.subscribe(subjects)
    for s in subjects:
        await t.publish(s, s.encode())
    got = await take(sub, 60)
    assert [d.subject for d in got] == subjects


async def test_replay_more_than_1000_messages(backend: Backend) -> None:
    """FIELD-NOTES: explicit-ack pull consumers stall at 1,000 unacked; ours must not."""
    t = await backend.transport()
    n = 2500
    for i in range(n):
        await t.publish(A, b"%05d" % i + b"." * 300)
    sub = await t.subscribe([A], after=0)
    got = await take(sub, n, timeout=30)
    assert [d.data[:5] for d in got] == [b"%05d" % i for i in range(n)]
    hist = await t.fetch(A, after=0, limit=n)
    assert len(hist) == n and hist[-1].data[:5] == b"%05d" % (n - 1)


# ---- fetch ----------------------------------------------------------------------------


async def test_fetch_after_and_limit(backend: Backend) -> None:
    t = await backend.transport()
    a = []
    for i in range(10):
        a.append(await t.publish(A, b"a%d" % i))
        await t.publish(B, b"b%d" % i)
    all_a = await t.fetch(A)
    assert [d.data for d in all_a] == [b"a%d" % i for i in range(10)]
    assert [d.seq for d in all_a] == a
    assert all(d.subject == A for d in all_a)
    page = await t.fetch(A, after=a[4], limit=3)
    assert [d.data for d in page] == [b"a5", b"a6", b"a7"]
    assert await t.fetch(A, after=a[-1]) == []
    assert await t.fetch(A, limit=0) == []
    assert await t.fetch(C) == []
    with pytest.raises(ValueError):
        await t.fetch(A, after=-1)


# ---- dedup, retention -------------------------------------------------------------------


async def test_msg_id_dedup(backend: Backend) -> None:
    t = await backend.transport()
    sub = await t.subscribe([A])
    s1 = await t.publish(A, b"hello", msg_id="m-1")
    s2 = await t.publish(A, b"hello", msg_id="m-1")  # retransmission
    s3 = await t.publish(A, b"hello", msg_id="m-2")
    assert s1 == s2 and s3 > s1
    assert [d.seq for d in await t.fetch(A)] == [s1, s3]
    assert [d.seq for d in await take(sub, 2)] == [s1, s3]
    await nothing_more(sub)


async def test_retention_window_drops_old_messages(backend: Backend) -> None:
    t = await backend.transport(max_age_s=1)
    await t.publish(A, b"old")
    await backend.elapse(2.5 if backend.kind == "nats" else 1.5)
    if backend.kind == "nats":
        for _ in range(30):  # expiry runs on a server timer
            if not await t.fetch(A):
                break
            await asyncio.sleep(0.1)
    new = await t.publish(A, b"new")
    assert [d.data for d in await t.fetch(A)] == [b"new"]
    sub = await t.subscribe([A], after=0)
    d = await nxt(sub)
    assert (d.data, d.seq) == (b"new", new)


# ---- validation, lifecycle -------------------------------------------------------------------


def test_subject_helpers() -> None:
    tag = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert inbox_subject(tag) == "lc.v1.inbox.00112233445566778899aabbccddeeff"
    assert group_subject(tag) == "lc.v1.group.00112233445566778899aabbccddeeff"
    with pytest.raises(ValueError):
        inbox_subject(b"short")
    with pytest.raises(TypeError):
        group_subject("00112233445566778899aabbccddeeff")  # type: ignore[arg-type,unused-ignore]


async def test_invalid_subjects_rejected(backend: Backend) -> None:
    t = await backend.transport()
    for bad in ["other.subject", "lc.v1.>", "lc.v1.*", "lc.v1.a b", "lc.v1..x", "lc.v1."]:
        with pytest.raises(ValueError):
            await t.publish(bad, b"x")
        with pytest.raises(ValueError):
            await t.subscribe([bad])
    with pytest.raises(TypeError):
        await t.subscribe(A)


async def test_close_ends_iteration_and_rejects_calls(backend: Backend) -> None:
    t = await backend.transport()
    sub = await t.subscribe([A])
    waiter = asyncio.ensure_future(sub.__anext__())
    await asyncio.sleep(0.05)
    await sub.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiter, 2)
    await sub.close()  # idempotent
    sub2 = await t.subscribe([B])
    await t.close()
    assert [d async for d in sub2] == []
    with pytest.raises(TransportError):
        await t.publish(A, b"x")
    with pytest.raises(TransportError):
        await t.fetch(A)
    with pytest.raises(TransportError):
        await t.subscribe([A])
    await t.close()  # idempotent


async def test_close_leaves_no_tasks_behind(backend: Backend) -> None:
    before = asyncio.all_tasks()
    t = await backend.transport()
    sub = await t.subscribe([A, B], after=0)
    await t.publish(A, b"x")
    await nxt(sub)
    await t.fetch(A)
    await t.close()
    await asyncio.sleep(0.05)
    left = [x for x in asyncio.all_tasks() - before if not x.done()]
    assert left == [], left


async def test_add_subjects_while_traffic_flows_loses_and_repeats_nothing(
    backend: Backend,
) -> None:
    pub = await backend.transport()
    dev = await backend.transport()
    sub = await dev.subscribe([A], after=0)
    sent: list[int] = []

    async def publisher() -> None:
        for i in range(300):
            sent.append(await pub.publish(A, b"%d" % i))
            if i % 25 == 0:
                await asyncio.sleep(0)

    task = asyncio.ensure_future(publisher())
    extra = [group_subject(i.to_bytes(16, "big")) for i in range(100, 105)]
    for s in extra:
        await asyncio.sleep(0.005)
        await sub.add_subjects([s], after=0)
    await task
    got = await take(sub, 300, timeout=20)
    assert [d.seq for d in got] == sent
    await nothing_more(sub)
