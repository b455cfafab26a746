"""A synchronous store-and-forward network modelled on NATS JetStream, with injected faults.

* :class:`SimStore` is the delivery shard: one append-only stream with a global sequence,
  per-subject indexes, retention by age, and ``msg_id`` dedup within a window (JetStream's
  ``Nats-Msg-Id``). It can go down and come back (a store restart): what it stored survives;
  publishes that reach it while it is down fail, and the deliveries it was pushing are lost.
* :class:`Network` carries everything between devices and the store through a lossy
  :class:`Faults` model: drop, delay (base + exponential tail), duplicate, reorder (an extra
  delay on some packets), tampering (one flipped byte), and partitions (a set of devices cut
  off from the store). Publish and ack, push delivery, fetch and simulator-level receipts all go
  through :meth:`Network.transmit`, which also counts the bytes on the wire.

Every random choice draws from the run's single ``random.Random``; nothing reads a real clock.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from sim.clock import Scheduler

__all__ = ["Faults", "Network", "SimStore", "StoredFrame"]


@dataclass(slots=True)
class Faults:
    """Link fault model (applies to every hop between a device and the store)."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay_base_ms: int = 20
    delay_mean_ms: float = 30.0  # exponential tail on top of the base
    reorder: float = 0.0  # probability of an extra delay of up to reorder_ms
    reorder_ms: int = 2_000
    tamper: float = 0.0  # probability that a delivered frame has one byte flipped

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "tamper"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability")

    def as_dict(self) -> dict[str, float | int]:
        return {
            "drop": round(self.drop, 4),
            "duplicate": round(self.duplicate, 4),
            "delay_base_ms": self.delay_base_ms,
            "delay_mean_ms": round(self.delay_mean_ms, 1),
            "reorder": round(self.reorder, 4),
            "tamper": round(self.tamper, 4),
        }


@dataclass(frozen=True, slots=True)
class StoredFrame:
    seq: int
    prev_seq: int  # previous seq on the same subject (0: none): lets a consumer see gaps
    subject: str
    data: bytes
    stored_at: int


@dataclass(slots=True)
class _Subject:
    seqs: list[int] = field(default_factory=list)
    frames: list[StoredFrame] = field(default_factory=list)


class SimStore:
    """The JetStream-like store of one delivery shard."""

    def __init__(self, retention_ms: int, dedup_window_ms: int = 120_000) -> None:
        self.retention_ms = retention_ms
        self.dedup_window_ms = dedup_window_ms
        self.up = True
        self.last_seq = 0
        self._subjects: dict[str, _Subject] = {}
        self._ids: dict[str, tuple[int, int]] = {}  # msg_id -> (seq, stored_at)
        self.stored = 0
        self.deduped = 0
        #: subject -> push callbacks of the connected consumers (an inbox has one, a group
        #: topic one per member installation)
        self.listeners: dict[str, list[Callable[[StoredFrame], None]]] = {}

    def append(self, subject: str, data: bytes, msg_id: str, now: int) -> int:
        """Store ``data`` (idempotent per ``msg_id`` within the window); returns its seq."""
        hit = self._ids.get(msg_id)
        if hit is not None and now - hit[1] <= self.dedup_window_ms:
            self.deduped += 1
            return hit[0]
        self.last_seq += 1
        s = self._subjects.setdefault(subject, _Subject())
        prev = s.seqs[-1] if s.seqs else 0
        f = StoredFrame(self.last_seq, prev, subject, data, now)
        s.seqs.append(f.seq)
        s.frames.append(f)
        self._ids[msg_id] = (f.seq, now)
        self.stored += 1
        for listener in self.listeners.get(subject, ()):
            listener(f)
        return f.seq

    def fetch(self, subject: str, after: int, now: int, limit: int = 500) -> list[StoredFrame]:
        """Retained frames on ``subject`` with seq > ``after``, in order."""
        s = self._subjects.get(subject)
        if s is None:
            return []
        i = bisect.bisect_right(s.seqs, after)
        out = [f for f in s.frames[i : i + limit] if now - f.stored_at <= self.retention_ms]
        return out


class Network:
    """Moves bytes between devices and the store under :class:`Faults`; counts them."""

    def __init__(self, sched: Scheduler, rng: random.Random, faults: Faults) -> None:
        self.sched = sched
        self.rng = rng
        self.faults = faults
        self.partitioned: set[str] = set()
        self.bytes_on_wire = 0
        self.packets = 0
        self.dropped = 0
        self.duplicated = 0
        self.tampered = 0

    def cut(self, name: str) -> bool:
        return name in self.partitioned

    def latency(self) -> int:
        f = self.faults
        d = f.delay_base_ms
        if f.delay_mean_ms > 0:
            d += int(self.rng.expovariate(1.0 / f.delay_mean_ms))
        if f.reorder and self.rng.random() < f.reorder:
            d += self.rng.randrange(f.reorder_ms)
        return d

    def transmit(
        self,
        endpoint: str,
        size: int,
        deliver: Callable[[bool], None],
        *,
        may_duplicate: bool = True,
        may_tamper: bool = False,
    ) -> None:
        """One packet between ``endpoint`` (a device) and the store, either direction.

        ``deliver(tampered)`` runs after a sampled delay, unless the packet is dropped or the
        endpoint is partitioned (checked both when sent and when it would arrive).
        """
        self.packets += 1
        self.bytes_on_wire += size
        f = self.faults
        if self.cut(endpoint) or (f.drop and self.rng.random() < f.drop):
            self.dropped += 1
            return
        copies = 1
        if may_duplicate and f.duplicate and self.rng.random() < f.duplicate:
            copies = 2
            self.duplicated += 1
        for i in range(copies):
            tampered = bool(may_tamper and f.tamper and self.rng.random() < f.tamper)
            if tampered:
                self.tampered += 1
            if i:
                self.bytes_on_wire += size  # the network really carried the copy

            def arrive(tampered: bool = tampered) -> None:
                if self.cut(endpoint):
                    self.dropped += 1
                    return
                deliver(tampered)

            self.sched.after(self.latency(), arrive)
