"""FURPS traffic, measured: a population of real clients chatting over a lossless shard.

Every device runs what ``chatcore.client`` runs: the real :class:`~chatcore.engine.Engine`,
:class:`~chatcore.groupchat.GroupChat` and :class:`~chatcore.features.Features` (receipts,
piggybacked acks, retransmission) over its own SQLCipher-schema store (in memory). The shard
is a lossless publish/subscribe store with a fixed one-way latency; every frame published and
every copy delivered is counted with its real encoded size. Users behave as stated in
:class:`TrafficModel` (the traffic mix is an assumption; the bytes are not). The per-message
figures do not depend on the population size (each user's contacts and groups are fixed), so
they are scaled to the FURPS load: 10K users × 4 messages a minute = 666.7 messages/s.

NATS framing is *not* in the frame sizes; it is added separately from the protocol text
(HPUB line + Nats-Msg-Id header and the PubAck JSON per publish, the MSG line with the
JetStream ack subject per delivery), as estimates.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from chatcore.content import ContactState
from chatcore.engine import Engine, OutFrame, OwnIdentity, Received, direct_conversation_id
from chatcore.errors import ChatCoreError
from chatcore.features import Features
from chatcore.groupchat import GroupChat
from chatcore.keys import InstallationKeys, SignedPrekey
from chatcore.payload import ContentType
from chatcore.store import Store
from sim.runner import SimDirectory

__all__ = ["TrafficModel", "measure"]

FURPS_USERS = 10_000
NATS_PUBLISH_OVERHEAD = 110  # HPUB subject + reply + Nats-Msg-Id header
NATS_PUBACK_BYTES = 60  # {"stream":..,"seq":..}
NATS_DELIVER_OVERHEAD = 150  # MSG line with the JetStream ack subject


@dataclass(frozen=True, slots=True)
class TrafficModel:
    users: int = 200
    minutes: float = 10.0  # measured window (virtual time), after set-up and warm-up
    msgs_per_min: float = 4.0  # per user, Poisson
    text_chars: int = 100
    group_share: float = 0.3  # share of messages sent to one of the user's groups
    group_size: int = 10  # members per group, the creator included
    groups_per_user: float = 1.0  # average group memberships per user
    contacts_per_user: int = 4  # 1:1 conversations per user (mutual contacts)
    #: share of 1:1 messages that answer the conversation of the latest incoming message
    reply_share: float = 0.5
    #: the app is open on the device the user is using (the one it last sent from): what
    #: arrives there is read at once; its other devices learn "read" from it
    read_on_arrival: bool = True
    read_receipts: bool = True
    devices_per_user: int = 1
    #: with several devices: the chance, per message sent, that the user picks up another one
    device_switch: float = 0.1
    typing: bool = False  # a typing indicator before every message
    flush_every_ms: int = 1_000  # the client's timer: Features.flush(due_only=True)
    latency_ms: int = 50  # one way, publisher -> shard -> subscriber
    seed: int = 1


@dataclass(slots=True)
class _Dev:
    user: int
    engine: Engine
    groups: GroupChat
    features: Features
    last_incoming: bytes | None = None  # conversation of the newest incoming message


@dataclass(slots=True)
class _Counts:
    published: Counter[str] = field(default_factory=Counter)  # kind -> frames
    published_bytes: Counter[str] = field(default_factory=Counter)
    delivered: Counter[str] = field(default_factory=Counter)
    delivered_bytes: Counter[str] = field(default_factory=Counter)


class _Shard:
    def __init__(self, m: TrafficModel) -> None:
        self.m = m
        self.rng = random.Random(m.seed)
        self.key_rng: Callable[[int], bytes] = random.Random(m.seed + 1).randbytes
        self.now = 1_800_000_000_000
        self.queue: list[tuple[int, int, Callable[[], None]]] = []
        self._n = 0
        self.directory = SimDirectory()
        self.devs: list[_Dev] = []
        self.users: list[list[int]] = []  # user -> device indexes
        self.identities: list[bytes] = []
        self.foreground: dict[int, int] = {}  # user -> the device in use (last sent from)
        self.subs: dict[str, set[int]] = {}
        self.seqs: Counter[str] = Counter()
        self.counts = _Counts()
        self.measuring = False
        self.errors: Counter[str] = Counter()
        self.sent_messages = 0
        self.expected_deliveries = 0
        self.delivered_messages = 0

    # --- the event loop ----------------------------------------------------------------------
    def at(self, t: int, fn: Callable[[], None]) -> None:
        self._n += 1
        heapq.heappush(self.queue, (t, self._n, fn))

    def run_until(self, t_end: int) -> None:
        while self.queue and self.queue[0][0] <= t_end:
            t, _, fn = heapq.heappop(self.queue)
            self.now = t
            fn()
        self.now = t_end

    # --- population --------------------------------------------------------------------------
    def add_user(self) -> int:
        u = len(self.users)
        ident = self.key_rng(32)
        self.identities.append(ident)
        self.users.append([])
        for _ in range(self.m.devices_per_user):
            keys = InstallationKeys.generate(self.key_rng)
            spk = SignedPrekey.generate(self.key_rng, 1, 2**62)
            store = Store.memory()
            store.put_secret(f"spk:{spk.id:010d}", spk.to_bytes())
            self.directory.register(ident, f"u{u}", keys.peer_keys(spk))
            eng = Engine(store, OwnIdentity(ident, keys), self.directory, self.key_rng, self._ms)
            g = GroupChat(eng, self.directory.devices)
            eng.control_handler = g.handle_control
            f = Features(eng, g)
            eng.content_handler = f.handle
            d = len(self.devs)
            self.devs.append(_Dev(u, eng, g, f))
            self.users[u].append(d)
            self.subs.setdefault(eng.inbox, set()).add(d)
        return u

    def _ms(self) -> int:
        return self.now

    # --- the shard -----------------------------------------------------------------------------
    def publish(self, src: int, frames: list[OutFrame] | tuple[OutFrame, ...], kind: str) -> None:
        dev = self.devs[src]
        for f in frames:
            dev.engine.acknowledged(f.outbox_id)  # lossless: the PubAck always comes back
            if self.measuring:
                self.counts.published[kind] += 1
                self.counts.published_bytes[kind] += len(f.frame)
            self.seqs[f.subject] += 1
            seq = self.seqs[f.subject]
            for d in sorted(self.subs.get(f.subject, ())):
                if self.measuring:
                    self.counts.delivered[kind] += 1
                    self.counts.delivered_bytes[kind] += len(f.frame)
                self.at(
                    self.now + self.m.latency_ms, partial(self.deliver, d, f.subject, seq, f.frame)
                )

    def deliver(self, d: int, subject: str, seq: int, frame: bytes) -> None:
        dev = self.devs[d]
        try:
            if subject == dev.engine.inbox:
                r = dev.engine.receive(frame, cursor=(subject, seq))
            else:
                r = dev.groups.receive(subject, frame, cursor=(subject, seq))
        except ChatCoreError as exc:
            self.errors[type(exc).__name__] += 1
            dev.engine.drain()
            return
        events, side = dev.engine.drain()
        if side:
            self.publish(d, side, "control")
        for s in dev.groups.subjects():
            self.subs.setdefault(s, set()).add(d)
        for x in [*events, *([r] if r is not None else [])]:
            self._shown(d, x)

    def _shown(self, d: int, r: Received) -> None:
        if r.outgoing or r.content_type not in (ContentType.TEXT, ContentType.REPLY):
            return
        dev = self.devs[d]
        if self.measuring:
            self.delivered_messages += 1
        dev.last_incoming = r.conversation_id
        if self.m.read_on_arrival and self.foreground.get(dev.user, d) == d:
            dev.features.mark_read(r.conversation_id)

    # --- behaviour ---------------------------------------------------------------------------
    def tick(self, d: int) -> None:
        dev = self.devs[d]
        self.publish(d, dev.features.flush_receipts(due_only=True), "receipt")
        self.publish(d, dev.features.retransmit(), "retransmit")
        self.at(self.now + self.m.flush_every_ms, lambda: self.tick(d))

    def send(self, u: int, contacts: list[int], groups: list[bytes], body: bytes) -> None:
        m = self.m
        d = self.foreground.get(u, self.users[u][0])  # the device in use
        if len(self.users[u]) > 1 and self.rng.random() < m.device_switch:
            d = self.users[u][self.rng.randrange(len(self.users[u]))]
        self.foreground[u] = d
        dev = self.devs[d]
        own = self.directory.devices(self.identities[u])
        if groups and self.rng.random() < m.group_share:
            gid = groups[self.rng.randrange(len(groups))]
            if m.typing:
                self.publish(d, dev.features.send_typing(gid), "typing")
            res = dev.features.send_group_message(gid, ContentType.TEXT, body)
            own_devs = set(self.users[u])
            recipients = len(self.subs.get(res.frames[0].subject, set()) - own_devs)
        else:
            peer_u = contacts[self.rng.randrange(len(contacts))]
            if dev.last_incoming is not None and self.rng.random() < m.reply_share:
                by_conv = {self._conv(u, c): c for c in contacts}
                peer_u = by_conv.get(dev.last_incoming, peer_u)  # answer the latest, if 1:1
            peer = self.directory.peer(self.identities[peer_u])
            if m.typing:
                conv = self._conv(u, peer_u)
                if dev.features.store.conversation(conv) is not None:
                    self.publish(d, dev.features.send_typing(conv), "typing")
            res = dev.features.send_message(peer, ContentType.TEXT, body, own)
            recipients = len(peer.installations)
        self.publish(d, res.frames, "message")
        if self.measuring:
            self.sent_messages += 1
            self.expected_deliveries += recipients

    def _conv(self, u: int, v: int) -> bytes:
        return direct_conversation_id(self.identities[u], self.identities[v])


def measure(m: TrafficModel | None = None) -> dict[str, Any]:
    """Run the population; bytes per message and the FURPS-scaled rates beside the targets."""
    m = m or TrafficModel()
    if m.users < m.group_size or m.users < m.contacts_per_user + 1:
        raise ValueError("too few users for the contacts / group size asked for")
    sh = _Shard(m)
    rng = sh.rng
    for _ in range(m.users):
        sh.add_user()
    # contacts: a random regular-ish graph, mutual, accepted on both sides
    contacts: list[set[int]] = [set() for _ in range(m.users)]
    order = list(range(m.users))
    for _ in range(m.contacts_per_user // 2 or 1):
        rng.shuffle(order)
        for i in range(m.users):
            a, b = order[i], order[(i + 1) % m.users]
            if a != b:
                contacts[a].add(b)
                contacts[b].add(a)
    for u in range(m.users):
        for c in contacts[u]:
            for d in sh.users[u]:
                sh.devs[d].features.set_contact(sh.identities[c], ContactState.CONTACT)
                if not m.read_receipts:
                    sh.devs[d].features.set_read_receipts(False)
    # groups, created by their first member
    n_groups = round(m.users * m.groups_per_user / m.group_size)
    groups: list[list[bytes]] = [[] for _ in range(m.users)]
    for _ in range(n_groups):
        members = rng.sample(range(m.users), m.group_size)
        creator = sh.users[members[0]][0]
        gid, frames = sh.devs[creator].groups.create("g", [sh.identities[x] for x in members[1:]])
        for s in sh.devs[creator].groups.subjects():
            sh.subs.setdefault(s, set()).add(creator)
        sh.publish(creator, frames, "control")
        for x in members:
            groups[x].append(gid)
    for d in range(len(sh.devs)):
        sh.at(sh.now + rng.randrange(m.flush_every_ms), partial(sh.tick, d))
    sh.run_until(sh.now + 60_000)
    body = bytes(rng.randrange(97, 123) for _ in range(m.text_chars))
    # warm-up: every pair has a session (first contact is a separate, measured figure)
    for u in range(m.users):
        for c in sorted(contacts[u]):
            if u < c:
                sh.send(u, [c], [], body)
    sh.run_until(sh.now + 60_000)
    for u in range(m.users):
        for c in sorted(contacts[u]):
            if u > c:
                sh.send(u, [c], [], body)
    sh.run_until(sh.now + 60_000)
    # the measured window
    sh.measuring = True
    start = sh.now
    end = start + int(m.minutes * 60_000)
    mean_gap = 60_000 / m.msgs_per_min
    for u in range(m.users):
        t = start + int(rng.expovariate(1 / mean_gap))
        cs = sorted(contacts[u])
        while t < end:
            sh.at(t, partial(sh.send, u, cs, groups[u], body))
            t += max(1, int(rng.expovariate(1 / mean_gap)))
    sh.run_until(end)
    sh.run_until(end + 60_000)  # receipts and deliveries of the last messages
    sh.measuring = False
    return _report(m, sh)


def _report(m: TrafficModel, sh: _Shard) -> dict[str, Any]:
    c = sh.counts
    msgs = max(1, sh.sent_messages)
    rate = FURPS_USERS * m.msgs_per_min / 60.0
    ingress = sum(c.published_bytes.values())
    egress = sum(c.delivered_bytes.values())
    pubs = sum(c.published.values())
    dels = sum(c.delivered.values())
    nats = pubs * (NATS_PUBLISH_OVERHEAD + NATS_PUBACK_BYTES) + dels * NATS_DELIVER_OVERHEAD

    def mbps(per_msg: float) -> float:
        return round(per_msg * rate * 8 / 1e6, 3)

    per_kind = {
        k: {
            "frames_per_message": round(c.published[k] / msgs, 3),
            "ingress_bytes_per_message": round(c.published_bytes[k] / msgs, 1),
            "egress_bytes_per_message": round(c.delivered_bytes[k] / msgs, 1),
            "mean_frame_bytes": round(c.published_bytes[k] / max(1, c.published[k]), 1),
        }
        for k in sorted(c.published)
    }
    ingress_mbps = mbps(ingress / msgs)
    total_mbps = mbps((ingress + egress) / msgs)
    framed_mbps = mbps((ingress + egress + nats) / msgs)
    return {
        "model": asdict(m),
        "messages": sh.sent_messages,
        "deliveries_expected": sh.expected_deliveries,
        "deliveries_shown": sh.delivered_messages,
        "delivery_rate": round(sh.delivered_messages / max(1, sh.expected_deliveries), 4),
        "errors": dict(sh.errors),
        "by_kind": per_kind,
        "furps_messages_per_s": round(rate, 1),
        "ingress_bytes_per_message": round(ingress / msgs, 1),
        "egress_bytes_per_message": round(egress / msgs, 1),
        "nats_framing_bytes_per_message": round(nats / msgs, 1),
        "ingress_mbps": ingress_mbps,
        "ingress_plus_egress_mbps": total_mbps,
        "with_nats_framing_mbps": framed_mbps,
        "target_mbps": 2.0,
        "budget_mbps": 10.0,
        "ingress_ok": ingress_mbps <= 2.0,
        "total_within_budget": total_mbps <= 10.0,
        "framed_within_budget": framed_mbps <= 10.0,
    }
