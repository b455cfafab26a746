"""In-memory delivery network for unit tests and the deterministic simulator.

:class:`MemoryNetwork` is the shared hub (one store: a single stream sequence, retention by age,
``msg_id`` dedup within a duplicate window); each client gets its own
:class:`MemoryTransport`. No wall clock, no threads: time comes from an injectable ``now_ms``
callable (a :class:`ManualClock` by default) and deliveries are queued synchronously at publish,
so a run is a pure function of the calls made and the clock.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence

from chatcore.errors import TransportError
from chatcore.transport.base import Cursor, Delivery, resolve_cursors, validate_subject

__all__ = ["ManualClock", "MemoryNetwork", "MemorySubscription", "MemoryTransport"]


class ManualClock:
    """A virtual millisecond clock: ``now_ms()`` returns what ``advance``/``set`` made it."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now = int(start_ms)

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError("a clock only moves forward")
        self._now += int(ms)
        return self._now

    def set(self, now_ms: int) -> None:
        if now_ms < self._now:
            raise ValueError("a clock only moves forward")
        self._now = int(now_ms)


class MemoryNetwork:
    """The shared store + fan-out hub. One per simulated deployment."""

    def __init__(
        self,
        now_ms: Callable[[], int] | None = None,
        *,
        max_age_ms: int | None = None,
        duplicate_window_ms: int = 600_000,
    ) -> None:
        self.clock = ManualClock() if now_ms is None else None
        self._now_ms: Callable[[], int] = now_ms if now_ms is not None else self.clock.now_ms  # type: ignore[union-attr]
        self.max_age_ms = max_age_ms
        self.duplicate_window_ms = duplicate_window_ms
        self.available = True
        self._last_seq = 0
        self._log: deque[Delivery] = deque()
        self._by_subject: dict[str, list[Delivery]] = {}
        self._ids: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._subs: set[MemorySubscription] = set()
        # counters for the simulator / tests
        self.published = 0
        self.published_bytes = 0
        self.duplicates = 0

    # ---- store -------------------------------------------------------------------------
    def now_ms(self) -> int:
        return int(self._now_ms())

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def set_available(self, available: bool) -> None:
        """Simulate the delivery network going down (every call raises TransportError)."""
        self.available = available

    def check_available(self) -> None:
        if not self.available:
            raise TransportError("delivery network unreachable at memory://")

    def _expire(self) -> None:
        now = self.now_ms()
        if self.max_age_ms is not None:
            cutoff = now - self.max_age_ms
            while self._log and self._log[0].timestamp_ms < cutoff:
                d = self._log.popleft()
                lst = self._by_subject.get(d.subject)
                if lst and lst[0].seq == d.seq:
                    lst.pop(0)
                    if not lst:
                        del self._by_subject[d.subject]
        wcut = now - self.duplicate_window_ms
        while self._ids:
            key, (_, ts) = next(iter(self._ids.items()))
            if ts >= wcut:
                break
            del self._ids[key]

    def append(self, subject: str, data: bytes, msg_id: str | None = None) -> int:
        self.check_available()
        validate_subject(subject)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("data must be bytes")
        self._expire()
        if msg_id is not None:
            hit = self._ids.get(msg_id)
            if hit is not None:
                self.duplicates += 1
                return hit[0]
        self._last_seq += 1
        now = self.now_ms()
        d = Delivery(subject, bytes(data), self._last_seq, now)
        self._log.append(d)
        self._by_subject.setdefault(subject, []).append(d)
        if msg_id is not None:
            self._ids[msg_id] = (d.seq, now)
        self.published += 1
        self.published_bytes += len(d.data)
        for sub in list(self._subs):
            sub._offer(d)
        return d.seq

    def stored(self, subject: str, after: int = 0) -> list[Delivery]:
        """Retained messages on ``subject`` with seq > after, in order."""
        self._expire()
        lst = self._by_subject.get(subject, [])
        i = bisect.bisect_right(lst, after, key=lambda d: d.seq)
        return lst[i:]

    def stored_many(self, cursors: Mapping[str, int]) -> list[Delivery]:
        out: list[Delivery] = []
        for s, after in cursors.items():
            out.extend(self.stored(s, after))
        out.sort(key=lambda d: d.seq)
        return out

    def __len__(self) -> int:
        self._expire()
        return len(self._log)


_CLOSED = object()


class MemorySubscription:
    """Async iterator of deliveries for one subscriber (see :class:`Subscription`)."""

    def __init__(self, network: MemoryNetwork, owner: MemoryTransport) -> None:
        self._net = network
        self._owner = owner
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._enqueued: dict[str, int] = {}  # per subject: highest seq queued
        self._cursors: dict[str, int] = {}  # per subject: highest seq handed out
        self._closed = False

    @property
    def subjects(self) -> frozenset[str]:
        return frozenset(self._enqueued)

    @property
    def cursors(self) -> dict[str, int]:
        return dict(self._cursors)

    @property
    def closed(self) -> bool:
        return self._closed

    def _offer(self, d: Delivery) -> None:
        cur = self._enqueued.get(d.subject)
        if cur is None or d.seq <= cur or self._closed:
            return
        self._enqueued[d.subject] = d.seq
        self._queue.put_nowait(d)

    def _start(self, cursors: Mapping[str, int]) -> None:
        new = {s: c for s, c in cursors.items() if s not in self._enqueued}
        for s, c in new.items():
            self._enqueued[s] = c
            self._cursors[s] = c
        for d in self._net.stored_many(new):
            self._offer(d)

    async def add_subjects(self, subjects: Sequence[str], after: Cursor = None) -> None:
        if self._closed:
            raise TransportError("subscription is closed")
        self._net.check_available()
        self._start(resolve_cursors(subjects, after, self._net.last_seq))

    def __aiter__(self) -> MemorySubscription:
        return self

    async def __anext__(self) -> Delivery:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # keep later __anext__ calls ending too
            raise StopAsyncIteration
        assert isinstance(item, Delivery)
        self._cursors[item.subject] = max(self._cursors.get(item.subject, 0), item.seq)
        return item

    def pending(self) -> int:
        """Deliveries queued and not yet handed out."""
        return self._queue.qsize() - (1 if self._closed else 0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._net._subs.discard(self)
        self._owner._subs.discard(self)
        # drop what was not handed out; end iteration
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)


class MemoryTransport:
    """One client's connection to a :class:`MemoryNetwork` (same interface as NatsTransport)."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network
        self._subs: set[MemorySubscription] = set()
        self._closed = False
        self.url = "memory://"

    def _check(self) -> None:
        if self._closed:
            raise TransportError("transport is closed")
        self.network.check_available()

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> int:
        self._check()
        return self.network.append(subject, data, msg_id)

    async def subscribe(self, subjects: Sequence[str], after: Cursor = None) -> MemorySubscription:
        self._check()
        cursors = resolve_cursors(subjects, after, self.network.last_seq)
        sub = MemorySubscription(self.network, self)
        self.network._subs.add(sub)
        self._subs.add(sub)
        sub._start(cursors)
        return sub

    async def fetch(self, subject: str, after: int = 0, limit: int = 1000) -> list[Delivery]:
        self._check()
        validate_subject(subject)
        if after < 0 or limit < 0:
            raise ValueError("after and limit must be >= 0")
        return self.network.stored(subject, after)[:limit]

    async def last_seq(self) -> int:
        self._check()
        return self.network.last_seq

    async def close(self) -> None:
        if self._closed:
            return
        for sub in list(self._subs):
            await sub.close()
        self._closed = True
