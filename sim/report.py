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
from dataclasses import asdict, dataclass, field, replace
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
    group: bytes | None = None  # group id for a group message
    members: frozenset[bytes] = frozenset()  # group: the sender's member list at send time
    epoch: int = 0  # group: the sender's epoch at send time (the frame's tag)


class Oracle:
    def __init__(self, world: World) -> None:
        self.world = world
        self._h = hashlib.sha256()
        self.msgs: dict[bytes, Sent] = {}
        self.by_short: dict[tuple[bytes, bytes], bytes] = {}
        self.shown: dict[tuple[str, bytes], list[int]] = {}
        #: (device, message) deliveries no longer required: a revoked device's (see excuse_device)
        self.excused: set[tuple[str, bytes]] = set()
        self.violations: list[str] = []
        self.latencies: list[int] = []
        self.expected_pairs = 0
        self.pending_pairs = 0
        self.unexpected_rejections: list[str] = []
        self.events = 0
        # groups
        self.gpending: set[tuple[str, bytes]] = set()  # (device, message) not shown yet
        self.group_ops_raw: dict[bytes, set[bytes]] = {}  # every op any author created
        self._truth: dict[bytes, tuple[int, Any]] = {}
        self._reference: dict[bytes, tuple[int, Any, Any, Any]] = {}
        #: group -> op id -> op signed by a removed member after its removal (sim.runner
        #: World.group_adversary): never part of the truth, and it must change nothing
        self.adversary_ops: dict[bytes, dict[bytes, Any]] = {}
        self.adversary_raw: set[bytes] = set()
        #: identities that signed such ops: what they sent is not required (their own
        #: dated-back leave, read before their removal, ends their window at its epoch)
        self.adversaries: set[bytes] = set()
        self._honest: dict[bytes, tuple[int, dict[bytes, Any]]] = {}
        self.frame_of: dict[bytes, bytes] = {}  # sha256(group frame) -> message id
        self.last_error: dict[tuple[str, bytes], str] = {}  # (device, message) -> why not

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

    # --- groups -------------------------------------------------------------------------------
    def group_sent(
        self, dev: Device, gid: bytes, res: SendResult, members: frozenset[bytes], epoch: int
    ) -> None:
        w = self.world
        expected = tuple(
            d.name for ident in sorted(members) for d in w.user_of(ident).devices if d is not dev
        )
        s = Sent(
            len(self.msgs) + 1, gid, dev.name, dev.identity_id, dev.keys.installation_id,
            res.sent_at, expected, (), gid, frozenset(members), epoch,
        )  # fmt: skip
        self.msgs[res.message_id] = s
        self.expected_pairs += len(expected)
        self.pending_pairs += len(expected)
        self.gpending.update((n, res.message_id) for n in expected)
        frame = res.frames[0].frame
        self.frame_of[hashlib.sha256(frame).digest()] = res.message_id
        self.event(
            f"GS {dev.name} m{s.idx} {res.message_id.hex()} L{res.lamport} "
            f"n{len(members)} [{len(frame)}]"
        )

    def group_frame_sender(self, frame: bytes) -> str | None:
        mid = self.frame_of.get(hashlib.sha256(frame).digest())
        return None if mid is None else self.msgs[mid].sender

    def group_ops(self, gid: bytes, op_log: list[bytes]) -> None:
        raw = self.group_ops_raw.setdefault(gid, set())
        if self.adversary_raw:  # an honest log may hold a removed member's forgeries
            raw.update(r for r in op_log if r not in self.adversary_raw)
        else:
            raw.update(op_log)

    def adversary_op(self, gid: bytes, op: Any) -> None:
        """A removed member signed ``op`` after its removal (dated back)."""
        self.adversary_ops.setdefault(gid, {})[op.op_id] = op
        self.adversaries.add(op.author)
        self.adversary_raw.add(op.raw)
        self.event(f"GA {op.op_id.hex()[:16]} {op.kind.name} e{op.epoch}")

    def honest_ops(self, gid: bytes) -> dict[bytes, Any]:
        """Every op honest members created, decoded. An honest op that names a removed
        member's forgery as a dependency (its author held it: it came before the removal)
        names that forgery's dependencies instead, so the causal order of the honest ops is
        the same as in the full log, and the forgeries are simply not there."""
        from chatcore.group.ops import decode_op

        raw = self.group_ops_raw.get(gid, set())
        hit = self._honest.get(gid)
        if hit is not None and hit[0] == len(raw):
            return hit[1]
        ops = {o.op_id: o for o in map(decode_op, raw)}
        adv = self.adversary_ops.get(gid)
        if adv:

            def below(d: bytes) -> set[bytes]:
                if d not in adv:
                    return {d}
                return set().union(*(below(x) for x in adv[d].deps))

            for oid, o in list(ops.items()):
                if any(d in adv for d in o.deps):
                    deps = set().union(*(below(d) for d in o.deps))
                    ops[oid] = replace(o, deps=tuple(sorted(deps)))
        self._honest[gid] = (len(raw), ops)
        return ops

    def uncounted_raw(self, gid: bytes) -> set[bytes]:
        """The honest ops of the group that count for nothing (``roster.uncounted``)."""
        from chatcore.group.roster import fold_void

        ops = self.honest_ops(gid)
        return {ops[i].raw for i in fold_void(ops.values())[1]}

    def truth(self, gid: bytes) -> Any:
        """The roster every member must converge to: the fold of every op honest members
        created (a removed member's forgeries left out: they must change nothing)."""
        from chatcore.group.roster import fold

        ops = self.group_ops_raw.get(gid, set())
        hit = self._truth.get(gid)
        if hit is None or hit[0] != len(ops):
            hit = (len(ops), fold(self.honest_ops(gid).values())[0])
            self._truth[gid] = hit
        return hit[1]

    def required(self, pair: tuple[str, bytes]) -> bool:
        """A group delivery is required iff the recipient was a member in the sender's view at
        send time (that is what ``expected`` holds), the recipient's identity is a member of
        the final (truth) roster, and the sender's identity is one too or the message was
        sent before every op that took the sender out (its epoch is no later than theirs:
        the core keeps a leaver's chains retired for that, ``RETIRED_CHAIN_MS``), and the
        sender is not a removed member that signed dated-back ops (``adversaries``)."""
        name, mid = pair
        s = self.msgs[mid]
        if s.group is None:
            return True
        if s.sender_identity in self.adversaries:
            return False
        ref = self.reference(s.group)
        roster = self.truth(s.group) if ref is None else ref
        ident = self.world.device(name).identity_id
        if ident not in roster.members:
            return False
        if s.sender_identity in roster.members:
            return True
        removals = self.removal_epochs(s.group, s.sender_identity)
        return bool(removals) and s.epoch <= min(removals)

    def reference(self, gid: bytes) -> Any:
        """The independent model's members and admins (sim/reference.py) if the group's log
        is simple, else None (then the core's fold is the specification)."""
        from sim import reference

        ops = self.group_ops_raw.get(gid, set())
        hit = self._reference.get(gid)
        if hit is None or hit[0] != len(ops):
            decoded = self.honest_ops(gid)
            past = reference.pasts(decoded)
            m = reference.model(decoded, past) if reference.simple(decoded, past) else None
            hit = (len(ops), m, decoded, past)
            self._reference[gid] = hit
        return hit[1]

    def removal_epochs(self, gid: bytes, identity: bytes) -> list[int]:
        """Message epochs of every op anyone made that took ``identity`` out of the group:
        for a simple log the size of each one's causal past, worked out independently
        (sim/reference.py); otherwise ``chatcore.group.state.removal_message_epoch`` (void
        ops in each one's own causal past left out)."""
        from chatcore.group.ops import decode_op
        from chatcore.group.roster import taken_out
        from chatcore.group.state import removal_message_epoch
        from sim import reference

        if self.reference(gid) is not None:
            _n, _m, decoded, past = self._reference[gid]
            return reference.removal_epochs(decoded, past, identity)
        honest = {o.op_id: o for o in map(decode_op, self.group_ops_raw.get(gid, set()))}
        ops = honest | self.adversary_ops.get(gid, {})  # as the removals' pasts hold them
        return [
            removal_message_epoch({**_past(ops, o), o.op_id: o}, identity, -1)
            for o in honest.values()
            if taken_out(o) == identity
        ]

    def group_rejected(
        self,
        dev: Device,
        subject: str,
        seq: int,
        data: bytes,
        tampered: bool,
        exc: Exception,
        quiet: bool = False,
    ) -> None:
        mid = self.frame_of.get(hashlib.sha256(data).digest())
        if mid is not None:
            self.last_error[(dev.name, mid)] = f"{type(exc).__name__}: {exc}"
        if not quiet:
            self.event(f"GR {dev.name} {seq} {type(exc).__name__} {'x' if tampered else ''}")

    def history_of(self, message_id: bytes) -> tuple[bytes, ...]:
        s = self.msgs.get(message_id)
        return () if s is None else s.history

    def history_for(self, message_id: bytes, name: str) -> tuple[bytes, ...]:
        """The history entries of a message that name messages ``name`` was meant to get."""
        s = self.msgs.get(message_id)
        if s is None:
            return ()
        out = []
        for h in s.history:
            m = self.by_short.get((s.conversation_id, h))
            if m is None or name in self.msgs[m].expected or self.msgs[m].sender == name:
                out.append(h)
        return tuple(out)

    def excuse_device(self, dev: Device) -> None:
        """``dev`` was revoked: deliveries to it that have not happened are no longer
        required, nor are deliveries of what it sent that have not happened (receivers now
        refuse its frames). With a graceful rotation (revoked once everything it sent was
        acknowledged) the second set is empty."""
        n = 0
        for mid, s in self.msgs.items():
            if s.group is not None:
                continue
            names = s.expected if s.sender == dev.name else (dev.name,) * (dev.name in s.expected)
            for name in names:
                pair = (name, mid)
                if pair not in self.shown and pair not in self.excused:
                    self.excused.add(pair)
                    self.pending_pairs -= 1
                    n += 1
        self.event(f"excused {dev.name} {n}")

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
            if s.group is not None:
                self.violation(
                    f"group secrecy: {dev.name} decrypted {label}, sent by {s.sender} when "
                    f"{dev.user} was not a member in its view (removed, left or not yet added)"
                )
            else:
                self.violation(f"{dev.name} accepted {label}, which was not addressed to it")
        times = self.shown.setdefault((dev.name, r.message_id), [])
        times.append(now)
        if len(times) == 1:
            self.latencies.append(now - s.sent_at)
            if (dev.name, r.message_id) in self.excused:
                self.excused.discard((dev.name, r.message_id))  # arrived after all: counted
            elif dev.name in s.expected:
                self.pending_pairs -= 1
                self.gpending.discard((dev.name, r.message_id))
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
    # 1. every message reached every installation it was for (exactly once: see delivered());
    #    for a group message only the required recipients count (Oracle.required)
    best_effort = excused = 0
    for mid, s in o.msgs.items():
        for name in s.expected:
            if s.group is not None and not o.required((name, mid)):
                o.expected_pairs -= 1  # delivery rate counts required deliveries only
                if (name, mid) not in o.shown:
                    o.pending_pairs -= 1
                    best_effort += 1
                continue
            if (name, mid) in o.excused:
                o.expected_pairs -= 1
                excused += 1
                continue
            if (name, mid) not in o.shown:
                why = o.last_error.get((name, mid))
                kind = "group " if s.group is not None else ""
                out.append(
                    f"lost: {kind}m{s.idx} from {s.sender} never reached {name}"
                    + (f" (last error: {why})" if why else "")
                )
    if best_effort:
        world.stats["group_best_effort_undelivered"] = best_effort
    if excused:
        world.stats["revoked_undelivered"] = excused
    # required messages of members who later left / were removed (some arrive after the op
    # that took their sender out: the core's retired chains), delivered
    leaver = 0
    for (name, mid), _times in o.shown.items():
        sent = o.msgs.get(mid)
        if (
            sent is None
            or sent.group is None
            or sent.sender_identity in o.truth(sent.group).members
        ):
            continue
        if name in sent.expected and o.required((name, mid)):
            leaver += 1
    if leaver:
        world.stats["group_leavers_messages_delivered"] = leaver
    out += _check_groups(world)
    # 2. the store holds each message once; 3. causal order: a message's history entries
    #    come before it in every member's display order (Lamport, then arrival)
    for dev in world.devices:
        seen_convs = {
            s.conversation_id for s in o.msgs.values() if dev.name in s.expected and not s.group
        }
        seen_convs |= {
            s.conversation_id for s in o.msgs.values() if s.sender == dev.name and not s.group
        }
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
        # a gap naming a message lost with a revoked device (excused) never closes: not counted
        gaps = (
            sum(
                1
                for conv, c in dev.rel.conversations.items()
                for h in c.gaps
                if (dev.name, o.by_short.get((conv, h), b"")) not in o.excused
            )
            if dev.alive
            else 0
        )
        if gaps and not any(v.startswith("lost") for v in out):
            out.append(f"{dev.name}: {gaps} causal-history gap(s) never filled")
    return out


def _check_groups(world: World) -> list[str]:
    """Membership convergence: every installation of every member of the truth roster holds
    exactly the truth op set (hence the same members, admins and epoch); every installation of
    a non-member that has the group knows it is not a member."""
    o = world.oracle
    out: list[str] = []
    for label, gid in sorted(world.group_ids.items()):
        truth_ops = o.group_ops_raw.get(gid, set())
        roster = o.truth(gid)
        if roster is None:
            continue
        ref = o.reference(gid)
        if ref is not None:
            world.stats["groups_checked_by_reference"] += 1
            if (roster.members, roster.admins) != (ref.members, ref.admins):
                out.append(
                    f"group {label}: the fold of the op log gives {len(roster.members)} "
                    f"members / {len(roster.admins)} admins, the reference model "
                    f"{len(ref.members)} / {len(ref.admins)} (members differ by "
                    f"{len(roster.members ^ ref.members)}, admins by "
                    f"{len(roster.admins ^ ref.admins)})"
                )
        adv = o.adversary_ops.get(gid, {})
        if adv:
            out += _check_adversary(world, label, gid, roster)
        epochs: dict[int, str] = {}  # (adversary groups) message epoch -> a member device
        for dev in world.devices:
            if dev.groups is None:
                continue
            st = dev.groups.load(gid)
            member = dev.identity_id in roster.members
            if st is None:
                if member:
                    out.append(f"group {label}: member installation {dev.name} never joined")
                continue
            if member:
                have = set(st.op_log())
                if adv:
                    # a removed member's forgeries count for nothing: an honest log holds
                    # those that came before the removal (or that an op built on), and
                    # sets the others aside; what counts must be the same everywhere
                    forged = len(have & o.adversary_raw)
                    world.stats["group_adversary_ops_in_logs"] += forged
                    have -= o.adversary_raw
                    # and honest ops that count for nothing (the removed member's own ops
                    # concurrent with its removal: void) may be in one log and aside at
                    # another, by the order they came in
                    nothing = o.uncounted_raw(gid)
                    world.stats["group_void_ops_aside"] += len((truth_ops - have) & nothing)
                    have |= truth_ops & nothing
                    have -= nothing - truth_ops
                    view = (st.members(), st.admins(), st.name)
                    if view != (roster.members, roster.admins, roster.name):
                        out.append(
                            f"group {label}: {dev.name} diverged from the honest members' "
                            f"group ({len(st.members() ^ roster.members)} member(s), "
                            f"{len(st.admins() ^ roster.admins)} admin(s) differ, name "
                            f"{'differs' if st.name != roster.name else 'same'}; {forged} "
                            "forged op(s) in its log)"
                        )
                    epochs.setdefault(st.epoch, dev.name)
                if have != truth_ops:
                    out.append(
                        f"group {label}: {dev.name} diverged: epoch {st.epoch} / "
                        f"{len(st.members())} members / {len(st.admins())} admins, truth "
                        f"epoch {len(truth_ops)} / {len(roster.members)} / {len(roster.admins)} "
                        f"({len(truth_ops - have)} op(s) missing, {len(have - truth_ops)} extra)"
                    )
                elif not st.is_member:
                    out.append(f"group {label}: {dev.name} is a member but its state says not")
            elif st.is_member:
                out.append(
                    f"group {label}: {dev.name} ({dev.user}) is not a member of the converged "
                    f"group but still believes it is (epoch {st.epoch})"
                )
        if len(epochs) > 1:
            out.append(
                f"group {label}: members tag messages with different epochs: "
                + ", ".join(f"{n} {e}" for e, n in sorted(epochs.items()))
            )
    return out


def _check_adversary(world: World, label: str, gid: bytes, roster: Any) -> list[str]:
    """A removed member's dated-back ops (``Oracle.adversary_ops``) change nothing: the fold
    of every op (honest ones and every forgery) gives the honest members' group (members,
    admins, name: so nothing an honest admin did, nor what the removed member did while it
    was one, is undone); no accomplice it tried to add is a member, in the truth or in any
    member's view."""
    from chatcore.group.ops import decode_op
    from chatcore.group.roster import fold

    o = world.oracle
    out: list[str] = []
    every = {x.op_id: x for x in map(decode_op, o.group_ops_raw.get(gid, set()))}
    every |= o.adversary_ops[gid]
    full = fold(every.values())[0]
    if full is None or (full.members, full.admins, full.name) != (
        roster.members,
        roster.admins,
        roster.name,
    ):
        n = "none" if full is None else f"{len(full.members ^ roster.members)}"
        out.append(
            f"group {label}: a removed member's dated-back ops change the group (the fold "
            f"with them differs from the honest ops' fold: {n} member(s) differ)"
        )
    crew = world.accomplices.get(label, set())
    for ident in sorted(crew & roster.members):
        out.append(f"group {label}: accomplice {world.user_of(ident).name} is a member")
    for dev in world.devices:
        if dev.groups is None or dev.identity_id not in roster.members:
            continue
        st = dev.groups.load(gid)
        if st is not None and (bad := crew & st.members()):
            names = ",".join(sorted(world.user_of(i).name for i in bad))
            out.append(f"group {label}: {dev.name} counts accomplice(s) {names} as members")
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


def _past(ops: dict[bytes, Any], op: Any) -> dict[bytes, Any]:
    """The causal past of ``op`` in ``ops`` (without it)."""
    from chatcore.group.state import _reach

    return {p: ops[p] for p in _reach(ops, op.deps)}
