"""Ground truth, invariant checks and the run report.

The :class:`Oracle` sees what the simulated users did (every message sent, to whom it should
arrive) and what every installation showed (every ``Received`` its engine returned); at the end
:func:`check` turns the difference into a list of violations. The oracle also feeds the run
digest: a SHA-256 over deterministic facts only (which message reached which installation at
which virtual millisecond, frame sizes, rejections, faults), never over ciphertext bytes, which
vary between runs because ML-KEM encapsulation draws its own randomness inside pyca.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from chatcore.engine import Received, SendResult

if TYPE_CHECKING:
    from sim.network import StoredFrame
    from sim.node import Device
    from sim.runner import World

__all__ = ["Oracle", "RunReport", "check", "percentile"]


@dataclass(slots=True)
class Sent:
    idx: int
    conversation_id: bytes
    sender: str
    sender_identity: bytes
    sender_installation: bytes
    sent_at: int
    expected: tuple[str, ...]  # device names that must show it
    history: tuple[bytes, ...]


class Oracle:
    def __init__(self, world: World) -> None:
        self.world = world
        self._h = hashlib.sha256()
        self.msgs: dict[bytes, Sent] = {}
        self.by_short: dict[tuple[bytes, bytes], bytes] = {}
        self.shown: dict[tuple[str, bytes], list[int]] = {}
        self.violations: list[str] = []
        self.latencies: list[int] = []
        self.expected_pairs = 0
        self.pending_pairs = 0
        self.unexpected_rejections: list[str] = []
        self.events = 0

    # --- digest -------------------------------------------------------------------------------
    def event(self, text: str) -> None:
        self.events += 1
        self._h.update(f"{self.world.clock.now} {text}\n".encode())

    def digest(self) -> str:
        return self._h.copy().hexdigest()

    # --- facts --------------------------------------------------------------------------------
    def sent(
        self, dev: Device, res: SendResult, history: tuple[bytes, ...], recipients: list[bytes]
    ) -> None:
        w = self.world
        expected = tuple(w.by_installation[i].name for i in recipients)
        s = Sent(
            len(self.msgs) + 1,
            res.conversation_id,
            dev.name,
            dev.identity_id,
            dev.keys.installation_id,
            res.sent_at,
            expected,
            history,
        )
        self.msgs[res.message_id] = s
        self.by_short[(res.conversation_id, res.message_id[:4])] = res.message_id
        self.expected_pairs += len(expected)
        self.pending_pairs += len(expected)
        sizes = ",".join(str(len(f.frame)) for f in res.frames)
        self.event(f"S {dev.name} m{s.idx} {res.message_id.hex()} L{res.lamport} [{sizes}]")

    def history_of(self, message_id: bytes) -> tuple[bytes, ...]:
        s = self.msgs.get(message_id)
        return () if s is None else s.history

    def delivered(self, dev: Device, r: Received) -> None:
        now = self.world.clock.now
        s = self.msgs.get(r.message_id)
        if s is None:
            self.violation(
                f"{dev.name} accepted a message nobody in the simulation sent "
                f"(id {r.message_id.hex()}, claimed sender {r.sender_identity.hex()[:12]})"
            )
            return
        label = f"m{s.idx}"
        if (r.sender_identity, r.sender_installation) != (s.sender_identity, s.sender_installation):
            self.violation(f"{dev.name} accepted {label} attributed to the wrong sender")
        if dev.name not in s.expected:
            self.violation(f"{dev.name} accepted {label}, which was not addressed to it")
        times = self.shown.setdefault((dev.name, r.message_id), [])
        times.append(now)
        if len(times) == 1:
            self.latencies.append(now - s.sent_at)
            if dev.name in s.expected:
                self.pending_pairs -= 1
        else:
            self.violation(f"{dev.name} showed {label} twice (at {times[0]} and {now} ms)")
        self.event(f"D {dev.name} {label}")

    def rejected(self, dev: Device, f: StoredFrame, tampered: bool, exc: Exception) -> None:
        forged = tampered or hashlib.sha256(f.data).digest() in self.world.hostile_frames
        self.event(f"R {dev.name} {f.seq} {type(exc).__name__} {'x' if forged else 'ok'}")
        if not forged:
            self.unexpected_rejections.append(
                f"{dev.name} rejected an intact frame (seq {f.seq}): {type(exc).__name__}: {exc}"
            )

    def violation(self, text: str) -> None:
        self.violations.append(text)
        self.event(f"V {text}")


def check(world: World) -> list[str]:
    """Invariants at the end of a run (after every fault healed and the drain period)."""
    o = world.oracle
    out = list(o.violations)
    # 1. every message reached every installation it was for (exactly once: see delivered())
    for mid, s in o.msgs.items():
        for name in s.expected:
            if (name, mid) not in o.shown:
                out.append(f"lost: m{s.idx} from {s.sender} never reached {name}")
    # 2. the store holds each message once; 3. causal order: a message's history entries
    #    come before it in every member's display order (Lamport, then arrival)
    for dev in world.devices:
        seen_convs = {s.conversation_id for s in o.msgs.values() if dev.name in s.expected}
        seen_convs |= {s.conversation_id for s in o.msgs.values() if s.sender == dev.name}
        for conv in sorted(seen_convs):
            order = [m.message_id for m in dev.store.history(conv, limit=1_000_000)]
            if len(order) != len(set(order)):
                out.append(f"{dev.name}: a message appears twice in the stored history")
            pos = {m: i for i, m in enumerate(order)}
            for m2 in order:
                s2 = o.msgs.get(m2)
                if s2 is None:
                    continue
                for h in s2.history:
                    m1 = o.by_short.get((conv, h))
                    if m1 is not None and m1 in pos and pos[m1] > pos[m2]:
                        out.append(
                            f"causal order: {dev.name} shows m{s2.idx} before "
                            f"m{o.msgs[m1].idx}, which it references"
                        )
        gaps = dev.rel.gap_count() if dev.alive else 0
        if gaps and not any(v.startswith("lost") for v in out):
            out.append(f"{dev.name}: {gaps} causal-history gap(s) never filled")
    return out


def percentile(xs: list[int], p: float) -> int:
    if not xs:
        return 0
    ys = sorted(xs)
    k = min(len(ys) - 1, max(0, round(p / 100 * (len(ys) - 1))))
    return ys[k]


@dataclass(slots=True)
class RunReport:
    scenario: str
    seed: int
    scale: float
    ok: bool
    delivery_rate: float
    expected_deliveries: int
    deliveries: int
    messages: int
    devices: int
    violations: list[str]
    bytes_on_wire: int
    digest: str
    latency_ms: dict[str, int]
    virtual_ms: int
    events: int
    wall_s: float
    faults: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stats_counter() -> Counter[str]:
    return Counter()
