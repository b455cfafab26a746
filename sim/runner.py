"""The simulated world (users, devices, the store, the network) and the run / sweep drivers."""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chatcore.engine import Engine, OwnIdentity, Peer
from chatcore.errors import UnknownContact, UntrustedIdentity
from chatcore.keys import InstallationKeys, PeerKeys, SignedPrekey
from chatcore.payload import ContentType
from chatcore.reliability import RetryPolicy
from chatcore.store import Store
from sim.clock import Scheduler, VirtualClock
from sim.network import Faults, Network, SimStore
from sim.node import SPK_NOT_AFTER, Device, _LogCounter
from sim.report import Oracle, RunReport, check, percentile

__all__ = ["SimConfig", "User", "World", "run", "sweep"]

DAY_MS = 86_400_000


@dataclass(slots=True)
class SimConfig:
    retention_ms: int = 7 * DAY_MS
    drain_ms: int = 2 * DAY_MS  # longest wait after the last fault healed
    quiet_check_ms: int = 5_000
    retry_outbox: bool = True  # False: the deliberately broken client (publish once)
    e2e_retry: bool = True  # retransmit until every recipient acked
    send_receipts: bool = True
    retry_policy: RetryPolicy = field(default_factory=lambda: RetryPolicy(30_000, 2, 6 * 3_600_000))
    hostile: bool = True  # intruders, replays, tampering on the delivery path
    #: groups: the core's op-log anti-entropy (GroupChat.anti_entropy: an admin that learns
    #: ops re-offers its op log); a fault knob: "" switches it off, anything else on
    group_reoffer: str = "ops"
    #: groups: a member missing an op's dependencies asks its sender (GroupChat.pull)
    group_pull: bool = True
    #: groups: after each accepted group message, check the sender is a member in the
    #: receiver's view (one extra state load per delivery; off for the 201-member run)
    group_member_check: bool = True


@dataclass(slots=True)
class User:
    name: str
    identity_id: bytes
    devices: list[Device] = field(default_factory=list)


class SimDirectory:
    """The on-chain directory as the engine sees it: registered installations per identity."""

    def __init__(self) -> None:
        self._insts: dict[bytes, list[PeerKeys]] = {}
        self._names: dict[bytes, str] = {}
        self._peers: dict[bytes, Peer] = {}
        self._keys: dict[bytes, dict[bytes, bytes]] = {}

    def register(self, identity_id: bytes, name: str, pk: PeerKeys) -> None:
        self._insts.setdefault(identity_id, []).append(pk)
        self._keys.setdefault(identity_id, {})[pk.installation_id] = pk.ik_x25519
        self._names[identity_id] = name
        self._peers.pop(identity_id, None)

    def peer(self, identity_id: bytes) -> Peer:
        p = self._peers.get(identity_id)
        if p is None:
            if identity_id not in self._insts:
                raise UnknownContact("no such identity")
            p = Peer(identity_id, self._names[identity_id], tuple(self._insts[identity_id]))
            self._peers[identity_id] = p
        return p

    def update(self, identity_id: bytes, pk: PeerKeys) -> None:
        """A new bundle for a registered installation (its signed prekey rotated)."""
        insts = self._insts[identity_id]
        i = next(i for i, k in enumerate(insts) if k.installation_id == pk.installation_id)
        insts[i] = pk
        self._peers.pop(identity_id, None)

    def revoke(self, identity_id: bytes, installation_id: bytes) -> None:
        """The installation is revoked on chain: resolvers drop it, its frames are refused."""
        self._insts[identity_id] = [
            k for k in self._insts[identity_id] if k.installation_id != installation_id
        ]
        self._keys[identity_id].pop(installation_id, None)
        self._peers.pop(identity_id, None)

    def devices(self, identity_id: bytes) -> tuple[PeerKeys, ...]:
        """What GroupChat asks the real directory: an identity's active installations."""
        return tuple(self._insts.get(identity_id, ()))

    def check_installation(
        self, identity_id: bytes, installation_id: bytes, ik_x25519: bytes
    ) -> None:
        if self._keys.get(identity_id, {}).get(installation_id) != ik_x25519:
            raise UntrustedIdentity("installation not registered for that identity")


class World:
    """Everything one run needs; built by a scenario, then driven by :func:`run`."""

    def __init__(self, seed: int, cfg: SimConfig | None = None) -> None:
        self.seed = seed
        self.cfg = cfg or SimConfig()
        master = random.Random(seed)
        self.rng = random.Random(master.getrandbits(64))  # network, faults, scenario choices
        self._key_random = random.Random(master.getrandbits(64))  # engines and keys
        self.key_rng: Callable[[int], bytes] = self._key_random.randbytes
        self.clock = VirtualClock(1_800_000_000_000)  # virtual epoch ms; sent-at stays realistic
        self.sched = Scheduler(self.clock)
        self.net = Network(self.sched, self.rng, Faults())
        self.store = SimStore(self.cfg.retention_ms)
        self.directory = SimDirectory()
        self.oracle = Oracle(self)
        self.stats: Counter[str] = Counter()
        self.users: dict[str, User] = {}
        self.devices: list[Device] = []
        self.by_installation: dict[bytes, Device] = {}
        self.hostile_frames: set[bytes] = set()
        self.activity_end = self.clock.now
        self.notes: list[str] = []
        self.group_ids: dict[str, bytes] = {}  # scenario label -> group id (once created)
        #: scenario label -> identities a removed member's forged ops try to add (never members)
        self.accomplices: dict[str, set[bytes]] = {}
        self.inbox_owner: dict[str, Device] = {}
        self._topic_subs: dict[str, set[str]] = {}
        self._by_identity: dict[bytes, User] = {}
        self._dev_by_name: dict[str, Device] = {}

    # --- building -----------------------------------------------------------------------------
    @property
    def t0(self) -> int:
        return 1_800_000_000_000

    def event(self, text: str) -> None:
        self.oracle.event(text)

    def add_user(self, name: str, n_devices: int = 1) -> User:
        u = User(name, self.key_rng(32))
        self.users[name] = u
        self._by_identity[u.identity_id] = u
        for i in range(n_devices):
            self.add_device(u, f"{name}/{i}")
        return u

    def add_device(self, u: User, name: str) -> Device:
        keys = InstallationKeys.generate(self.key_rng)
        spk = SignedPrekey.generate(self.key_rng, 1, SPK_NOT_AFTER)
        d = Device(self, u.name, name, u.identity_id, keys, spk)
        self.directory.register(u.identity_id, u.name, d.peer_keys)
        u.devices.append(d)
        self.devices.append(d)
        self.by_installation[keys.installation_id] = d
        self.store.listeners.setdefault(d.inbox, []).append(d.pushed)
        self.inbox_owner[d.inbox] = d
        return d

    def device(self, name: str) -> Device:
        if len(self._dev_by_name) != len(self.devices):
            self._dev_by_name = {d.name: d for d in self.devices}
        return self._dev_by_name[name]

    def user_of(self, identity_id: bytes) -> User:
        return self._by_identity[identity_id]

    def subscribe(self, subject: str, dev: Device) -> None:
        """``dev`` consumes ``subject`` (a group topic) from now on; idempotent."""
        subs = self._topic_subs.setdefault(subject, set())
        if dev.name not in subs:
            subs.add(dev.name)
            self.store.listeners.setdefault(subject, []).append(dev.pushed)

    # --- scheduling helpers (times are offsets from the start, in ms) ---------------------------
    def at(self, offset_ms: int, fn: Callable[[], None]) -> None:
        self.sched.at(self.t0 + offset_ms, fn)
        self.activity_end = max(self.activity_end, self.t0 + offset_ms)

    def send(self, offset_ms: int, dev: Device, peer_user: str, body: bytes) -> None:
        def go() -> None:
            dev.send_text(peer_user, body)

        self.at(offset_ms, go)

    def send_from(self, offset_ms: int, u: User, peer_user: str, body: bytes) -> None:
        """``u`` sends from one of the devices it uses *at that time* (devices come and go)."""

        def go() -> None:
            devs = [d for d in u.devices if not d.revoked and not d.retiring]
            if not devs:
                self.stats["send_without_device"] += 1
                return
            self.rng.choice(devs).send_text(peer_user, body)

        self.at(offset_ms, go)

    def new_device(self, u: User) -> Device:
        """A device linked mid-run: registered, then it starts consuming its inbox."""
        d = self.add_device(u, f"{u.name}/{len(u.devices)}")
        self.event(f"linked {d.name}")
        self.stats["linked"] += 1
        d.reconnected()
        return d

    def replace_device(self, offset_ms: int, old: Device, max_wait_ms: int = 600_000) -> None:
        """Installation rotation: a new installation is registered, the old one stops being
        used, and is revoked once every message it sent is acknowledged (or after
        ``max_wait_ms``)."""

        def start() -> None:
            if old.revoked:
                return
            self.new_device(self.users[old.user])
            old.retiring = True
            deadline = self.clock.now + max_wait_ms
            self.sched.after(5_000, lambda: revoke_when_done(deadline))

        def revoke_when_done(deadline: int) -> None:
            if old.revoked:
                return
            busy = old.rel.has_pending() or (
                old.features is not None and old.features.pending_acks()
            )
            if busy and self.clock.now < deadline:
                self.sched.after(5_000, lambda: revoke_when_done(deadline))
                return
            old.revoke()

        self.at(offset_ms, start)

    def recover(self, offset_ms: int, u: User, gap_ms: int) -> None:
        """Recovery: every device of ``u`` is lost and revoked at once; a new installation
        is registered ``gap_ms`` later (with an empty store: history is not part of it)."""

        def lose() -> None:
            for d in u.devices:
                d.revoke()

        def link() -> None:
            self.new_device(u)

        self.at(offset_ms, lose)
        self.at(offset_ms + gap_ms, link)

    def rotate_prekey(self, offset_ms: int, dev: Device) -> None:
        self.at(offset_ms, dev.rotate_prekey)

    def crash(self, offset_ms: int, dev: Device, down_ms: int) -> None:
        self.at(offset_ms, dev.crash)
        self.at(offset_ms + down_ms, dev.restart)

    def offline(self, offset_ms: int, dev: Device, for_ms: int) -> None:
        self.at(offset_ms, dev.go_offline)
        self.at(offset_ms + for_ms, dev.go_online)

    def store_restart(self, offset_ms: int, down_ms: int) -> None:
        def down() -> None:
            self.store.up = False
            self.event("store down")

        def up() -> None:
            self.store.up = True
            self.event("store up")
            for d in self.devices:  # clients reconnect (after a short, jittered pause)
                self.sched.after(self.rng.randrange(50, 2_000), d.reconnected)

        self.at(offset_ms, down)
        self.at(offset_ms + down_ms, up)

    def partition(self, offset_ms: int, devs: Iterable[Device], for_ms: int) -> None:
        names = sorted(d.name for d in devs)

        def cut() -> None:
            self.net.partitioned.update(names)
            self.event("partition " + ",".join(names))

        def heal() -> None:
            for n in names:
                if all(d.online for d in self.devices if d.name == n):
                    self.net.partitioned.discard(n)
            self.event("heal " + ",".join(names))
            for d in self.devices:
                if d.name in names:
                    self.sched.after(self.rng.randrange(50, 2_000), d.reconnected)

        self.at(offset_ms, cut)
        self.at(offset_ms + for_ms, heal)

    def hostile_sends(self, offset_ms: int, victim: User) -> None:
        """A stranger (unregistered identity) and an impersonator (claims a registered identity
        with keys of its own) each send a real handshake to every device of ``victim``; later a
        replay of a frame copied from the store. None of it may ever be shown."""

        def go() -> None:
            impersonate = self.rng.choice(sorted(u for u in self.users if u != victim.name))
            for claimed in (self.key_rng(32), self.users[impersonate].identity_id):
                keys = InstallationKeys.generate(self.key_rng)
                eng = Engine(
                    Store.memory(),
                    OwnIdentity(claimed, keys),
                    self.directory,
                    self.key_rng,
                    self.clock.now_ms,
                )
                res = eng.send(self.directory.peer(victim.identity_id), ContentType.TEXT, b"hi")
                for f in res.frames:
                    self._inject(f.subject, f.frame)
            self.event(f"hostile -> {victim.name}")

        def replay() -> None:
            for d in victim.devices:
                old = self.store.fetch(d.inbox, 0, self.clock.now, limit=3)
                for f in old:
                    self._inject(f.subject, f.data)
            self.event(f"replay -> {victim.name}")

        self.at(offset_ms, go)
        self.at(offset_ms + 5_000, replay)

    # --- groups (times are offsets from the start, in ms) ---------------------------------------
    def group_create(self, offset_ms: int, dev: Device, label: str, members: list[User]) -> None:
        ids = [u.identity_id for u in members]
        self.at(offset_ms, lambda: dev.group_create(label, ids))

    def group_change(
        self,
        offset_ms: int,
        dev: Device,
        label: str,
        how: str,
        target: User | None = None,
        name: str = "",
    ) -> None:
        tid = target.identity_id if target is not None else None
        self.at(offset_ms, lambda: dev.group_change(label, how, tid, name))

    def group_send(self, offset_ms: int, dev: Device, label: str, body: bytes) -> None:
        self.at(offset_ms, lambda: dev.group_send(label, body))

    def group_hostile(self, offset_ms: int, label: str) -> None:
        """A forged group message (a stranger's own sender key, the group's current routing
        tag: the worst case, an outsider who knows the group id) and replays of stored group
        frames. Nothing of it may be shown."""

        def go() -> None:
            from chatcore.group import group_tag
            from chatcore.group.sender_keys import SenderChain
            from chatcore.groupchat import group_topic
            from chatcore.payload import Payload

            gid = self.group_ids.get(label)
            if gid is None:
                return
            epochs = [
                st.epoch
                for d in self.devices
                if d.groups is not None and (st := d.groups.load(gid)) is not None
            ]
            chain = SenderChain.generate(self.key_rng, max(epochs), {})
            body = Payload(ContentType.TEXT, 1, self.clock.now, b"forged").encode()
            _, frame = chain.encrypt(group_tag(gid, max(epochs)), body, self.key_rng(32))
            topic = group_topic(gid)
            self._inject(topic, frame)
            for f in self.store.fetch(topic, 0, self.clock.now, limit=3):
                self._inject(topic, f.data)
            self.event(f"hostile group frames -> {label}")

        self.at(offset_ms, go)

    def group_stale_sender(self, offset_ms: int, dev: Device, label: str, after_ms: int) -> None:
        """A member about to be removed keeps a copy of its group state (taken at
        ``offset_ms``, just before its removal) and, ``after_ms`` later, posts with it: a
        frame tagged with the pre-removal epoch, past the hour members keep a leaver's chain
        (``RETIRED_CHAIN_MS``). If it was removed, nobody may show it (the oracle flags any
        message the simulation did not send); if the removal did not happen, nothing is
        posted."""
        kept: list[bytes] = []

        def snapshot() -> None:
            gid = self.group_ids.get(label)
            st = dev.groups.load(gid) if gid is not None and dev.groups is not None else None
            if st is not None and st.is_member:
                kept.append(st.to_bytes())

        def post() -> None:
            from chatcore.group import GroupState
            from chatcore.groupchat import group_topic
            from chatcore.payload import Payload

            gid = self.group_ids.get(label)
            truth = self.oracle.truth(gid) if gid is not None else None
            if not kept or gid is None or truth is None or dev.identity_id in truth.members:
                return
            st = GroupState.from_bytes(kept[0])
            for _ in range(3):  # numbers its old chain never used
                st, _frame = st.encrypt(b"skipped")
            body = Payload(ContentType.TEXT, 1, self.clock.now, b"after my removal").encode()
            _, frame = st.encrypt(body)
            self._inject(group_topic(gid), frame)
            self.stats["group_stale_sender_posts"] += 1
            self.event(f"stale sender {dev.name} -> {label}")

        self.at(offset_ms, snapshot)
        self.at(offset_ms + after_ms, post)

    def group_adversary(
        self,
        offset_ms: int,
        dev: Device,
        label: str,
        crew: list[User],
        times: list[int],
        topic_share: float = 0.5,
    ) -> None:
        """A member about to be removed keeps a copy of its group state (taken at
        ``offset_ms``, just before its removal) and its keys. At each offset in ``times``,
        if it was removed, it signs one op on a past it holds (one of the ops of that copy,
        or one of its own forgeries, with that op's causal past as the op's past), as the
        role it had there allows: an add of one of ``crew`` (accomplices), a removal of an
        honest member, a promotion, a rename or a leave (the first one: a leave on the create
        op). It sends it pairwise to some member installations (the channel ops travel on)
        and, with ``topic_share``, to the group topic as well (inside a group message of its
        old sender key, and bare). Nothing of it may change any honest member's view: the
        oracle (``Oracle.adversary_ops``) checks it (see ``sim.report._check_groups``)."""
        kept: list[bytes] = []
        forged: dict[bytes, Any] = {}  # op id -> Op: its own forgeries, to build on
        topic_state: list[Any] = []
        me = dev.identity_id
        self.accomplices.setdefault(label, set()).update(u.identity_id for u in crew)

        def snapshot() -> None:
            gid = self.group_ids.get(label)
            st = dev.groups.load(gid) if gid is not None and dev.groups is not None else None
            if st is not None and st.is_member:
                kept.append(st.to_bytes())

        def forge(first: bool) -> Any:
            from chatcore.group import GroupState, InstallationKey, OpKind
            from chatcore.group.ops import make_op
            from chatcore.group.roster import fold, refusal
            from chatcore.group.state import _reach

            st = GroupState.from_bytes(kept[0])
            pool = {**st.ops, **forged}
            ids = sorted(pool)
            create = next(o for o in pool.values() if o.kind is OpKind.CREATE)
            key = InstallationKey.from_seed(dev.keys.signing_key.private_bytes_raw())
            now = self.clock.now

            def sign(kind: Any, deps: tuple[bytes, ...], epoch: int, **kw: Any) -> Any:
                return make_op(
                    key, kind, group_id=st.group_id, epoch=epoch, deps=deps, author=me,
                    created_ms=now, **kw,
                )  # fmt: skip

            if not first:
                for _ in range(8):
                    dep = self.rng.choice(ids)
                    past = _reach(pool, (dep,))
                    roster = fold(pool[p] for p in past)[0]
                    if roster is None or me not in roster.admins:
                        continue
                    honest = sorted(roster.members - {me})
                    how = self.rng.choice(("add", "remove", "promote", "rename", "leave"))
                    kw: dict[str, Any] = {}
                    if how == "add":
                        out = sorted(set(self.accomplices[label]) - roster.members)
                        if not out:
                            continue
                        kind, kw = OpKind.ADD, {"target": self.rng.choice(out)}
                    elif how == "remove" and honest:
                        kind, kw = OpKind.REMOVE, {"target": self.rng.choice(honest)}
                    elif how == "promote" and (cand := sorted(roster.members - roster.admins)):
                        kind, kw = OpKind.PROMOTE, {"target": self.rng.choice(cand)}
                    elif how == "rename":
                        kind, kw = OpKind.RENAME, {"name": f"forged {len(forged)}"}
                    elif how == "leave":
                        kind = OpKind.LEAVE
                    else:
                        continue
                    op = sign(kind, (dep,), len(past), **kw)
                    if refusal(roster, op) is None:
                        return op
            # a leave dated back to the create op (always allowed: it was made a member)
            return sign(OpKind.LEAVE, (create.op_id,), 1)

        def attack(first: bool) -> None:
            from chatcore.group import GroupState
            from chatcore.groupchat import encode_control, group_topic
            from chatcore.payload import Payload

            gid = self.group_ids.get(label)
            truth = self.oracle.truth(gid) if gid is not None else None
            if not kept or gid is None or truth is None or me in truth.members:
                return
            if not dev.alive or dev.engine is None:
                self.stats["group_adversary_down"] += 1
                return
            op = forge(first)
            forged[op.op_id] = op
            self.oracle.adversary_op(gid, op)
            body = encode_control([op.raw])
            honest = [
                d
                for ident in sorted(truth.members)
                for d in self.user_of(ident).devices
                if not d.revoked
            ]
            targets = self.rng.sample(honest, self.rng.randrange(1, len(honest) + 1))
            frames = []
            for d in sorted(targets, key=lambda d: d.name):
                frames.append(dev.engine.send_control(d.identity_id, d.peer_keys, body))
            dev._track_control(frames)
            if self.rng.random() < topic_share:
                if not topic_state:
                    topic_state.append(GroupState.from_bytes(kept[0]))
                pl = Payload(ContentType.GROUP_CONTROL, 1, self.clock.now, body).encode()
                topic_state[0], frame = topic_state[0].encrypt(pl)
                self._inject(group_topic(gid), frame)
                self._inject(group_topic(gid), op.raw)
                self.stats["group_adversary_topic"] += 1
            self.stats[f"group_adversary_{op.kind.name.lower()}"] += 1
            self.event(
                f"adversary {dev.name} -> {label}: {op.kind.name} epoch {op.epoch} "
                f"to {len(targets)} installation(s)"
            )
            dev._busy()
            if dev.online:
                dev.tick()

        self.at(offset_ms, snapshot)
        for i, t in enumerate(sorted(times)):
            self.at(t, functools.partial(attack, i == 0))

    def _inject(self, subject: str, frame: bytes) -> None:
        self.hostile_frames.add(hashlib.sha256(frame).digest())
        mid = "hostile-" + str(self.stats["hostile"])
        self.stats["hostile"] += 1

        def arrive(_t: bool) -> None:
            if self.store.up:
                self.store.append(subject, frame, mid, self.clock.now)

        self.net.transmit("intruder", len(frame), arrive)

    # --- running ------------------------------------------------------------------------------
    def heal_all(self) -> None:
        """End of the fault window: everything comes back and stays up for the drain."""
        self.store.up = True
        self.net.partitioned.clear()
        for d in self.devices:
            if d.revoked:
                continue
            if not d.alive:
                d.restart()
            elif not d.online:
                d.go_online()
            else:
                d.reconnected()
        self.event("heal all")

    def quiescent(self) -> bool:
        """Everything required delivered and acked, every outbox empty. The same conjunction
        as always, cheapest tests first (it runs at every drain step)."""
        o = self.oracle
        if o.pending_pairs > len(o.gpending):
            return False
        if any(
            d.rel.has_pending() or (d.features is not None and d.features.pending_acks())
            for d in self.devices
            if not d.revoked
        ):
            return False
        if o.pending_pairs and any(o.required(p) for p in o.gpending):
            return False
        return all(d.store.outbox_size() == 0 for d in self.devices if not d.revoked)


Scenario = Callable[[World, random.Random, float], None]


def run(name: str, seed: int, scale: float = 1.0, cfg: SimConfig | None = None) -> RunReport:
    """Run one scenario with one seed; the same (name, seed, scale, cfg) gives the same digest."""
    from sim.scenarios import SCENARIOS

    spec = SCENARIOS[name]
    if spec.build is None:
        raise ValueError(f"scenario {name!r} is not available: {spec.unavailable}")
    started = time.perf_counter()
    w = World(seed, cfg)
    _LogCounter.world = w
    w.event(f"run {name} seed={seed} scale={scale}")
    spec.build(w, w.rng, scale)
    if w.cfg.hostile:
        users = sorted(w.users)
        w.hostile_sends(w.rng.randrange(1_000, 20_000), w.users[w.rng.choice(users)])
    w.event("faults " + repr(sorted(w.net.faults.as_dict().items())))
    for d in w.devices:
        d.tick()
    end = w.activity_end + 1
    w.sched.run_until(end)
    w.heal_all()
    # drain: run until every message is delivered and acked, or the drain limit
    limit = end + w.cfg.drain_ms
    t = end
    step = w.cfg.quiet_check_ms
    while t < limit and not w.quiescent():
        # Only an event can change the answer: skip the check points with none before them
        # (the run ends at the same check point as checking every one of them).
        nxt = w.sched.next_time()
        skip = limit if nxt is None else max(0, (nxt - t - 1) // step)
        t = min(limit, t + (skip + 1) * step)
        w.sched.run_until(t)
    violations = check(w)
    for v in violations[len(w.oracle.violations) :]:
        w.event("V " + v)
    o = w.oracle
    delivered = o.expected_pairs - o.pending_pairs
    lat = o.latencies
    notes = list(w.notes) + o.unexpected_rejections[:20]
    return RunReport(
        scenario=name,
        seed=seed,
        scale=scale,
        ok=not violations,
        delivery_rate=round(delivered / o.expected_pairs, 6) if o.expected_pairs else 1.0,
        expected_deliveries=o.expected_pairs,
        deliveries=delivered,
        messages=len(o.msgs),
        devices=len(w.devices),
        violations=violations,
        bytes_on_wire=w.net.bytes_on_wire,
        digest=o.digest(),
        latency_ms={
            "p50": percentile(lat, 50),
            "p90": percentile(lat, 90),
            "p99": percentile(lat, 99),
            "max": max(lat, default=0),
        },
        virtual_ms=w.clock.now - w.t0,
        events=w.sched.executed,
        wall_s=round(time.perf_counter() - started, 4),
        faults=w.net.faults.as_dict(),
        stats=dict(sorted(w.stats.items()))
        | {
            "packets": w.net.packets,
            "dropped": w.net.dropped,
            "duplicated": w.net.duplicated,
            "tampered": w.net.tampered,
            "store_deduped": w.store.deduped,
            "stored": w.store.stored,
        },
        notes=notes,
    )


def _one(args: tuple[str, int, float]) -> dict[str, Any]:
    name, seed, scale = args
    r = run(name, seed, scale)
    return {
        "scenario": name,
        "seed": seed,
        "ok": r.ok,
        "violations": r.violations,
        "delivery_rate": r.delivery_rate,
        "bytes_on_wire": r.bytes_on_wire,
        "p99": r.latency_ms["p99"],
        "digest": r.digest,
        "wall_s": r.wall_s,
    }


def sweep(
    names: list[str],
    seeds: int,
    scale: float = 1.0,
    workers: int = 2,
    first_seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``seeds`` seeds of each scenario (``workers`` processes). One summary document."""
    jobs = [(n, s, scale) for n in names for s in range(first_seed, first_seed + seeds)]
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers) as pool:
            for res in pool.imap(_one, jobs, chunksize=4):
                results.append(res)
                if progress:
                    progress(res)
    else:
        for j in jobs:
            res = _one(j)
            results.append(res)
            if progress:
                progress(res)
    per: dict[str, dict[str, Any]] = {}
    for r in results:
        p = per.setdefault(
            r["scenario"],
            {
                "runs": 0,
                "violations": 0,
                "failed_seeds": [],
                "delivery_rate_min": 1.0,
                "delivery_rate_mean": 0.0,
                "bytes_on_wire": 0,
                "p99_max_ms": 0,
                "wall_s": 0.0,
            },
        )
        p["runs"] += 1
        p["violations"] += len(r["violations"])
        if not r["ok"]:
            p["failed_seeds"].append(r["seed"])
        p["delivery_rate_min"] = min(p["delivery_rate_min"], r["delivery_rate"])
        p["delivery_rate_mean"] += r["delivery_rate"]
        p["bytes_on_wire"] += r["bytes_on_wire"]
        p["p99_max_ms"] = max(p["p99_max_ms"], r["p99"])
        p["wall_s"] += r["wall_s"]
    for p in per.values():
        p["delivery_rate_mean"] = round(p["delivery_rate_mean"] / max(1, p["runs"]), 6)
        p["wall_s"] = round(p["wall_s"], 2)
    failed = [
        {"scenario": r["scenario"], "seed": r["seed"], "violations": r["violations"][:5]}
        for r in results
        if not r["ok"]
    ]
    return {
        "runs": len(results),
        "seeds": seeds,
        "first_seed": first_seed,
        "scale": scale,
        "workers": workers,
        "violations": sum(len(r["violations"]) for r in results),
        "failed_seeds": failed,
        "scenarios": per,
        "wall_s": round(time.perf_counter() - started, 2),
    }
