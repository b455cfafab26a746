"""GroupState: membership (op log + fold) and sender keys, as one immutable value.

Every method returns a new state (and what to send); the receiver is never changed, so
a call that raises leaves the caller's state exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from itertools import islice

from chatcore.codec import Reader, blob, varint
from chatcore.errors import ChatCoreError, DecryptionError, GroupError, MalformedMessage
from chatcore.group._frozen import updater
from chatcore.group._primitives import ed25519_verify, sha256
from chatcore.group.consts import (
    CHAINS_PER_INSTALLATION,
    EPOCH_AHEAD,
    EPOCH_GRACE,
    ID_LEN,
    KEY_ID_LEN,
    KIND_WELCOME,
    MAX_CANDIDATES,
    MAX_CANDIDATES_PER_AUTHOR,
    MAX_DEPS,
    MAX_MERGE_WORK,
    MAX_OPS,
    MAX_PENDING_DISTRIBUTIONS,
    MAX_RETIRED_CHAINS,
    MAX_SKIPPED_KEYS,
    RETIRED_CHAIN_MS,
    STATE_VERSION,
)
from chatcore.group.keys import InstallationKey, Rng
from chatcore.group.ops import Op, OpKind, decode_op, group_id_for, make_op
from chatcore.group.roster import (
    Roster,
    back_on_leaves_only,
    counting_removals,
    effect,
    fold,
    fold_all,
    fold_void,
    refusal,
    taken_out,
    uncounted,
)
from chatcore.group.sender_keys import (
    ParsedFrame,
    ReceiverChain,
    SenderChain,
    SenderKeyDistribution,
    parse_frame,
)

#: identity id -> its active installation ids (= installation Ed25519 public keys),
#: as a mapping or a function. The engine builds it from verified bundles / the registry.
Directory = Mapping[bytes, Collection[bytes]] | Callable[[bytes], Collection[bytes]]


@dataclass(frozen=True, slots=True)
class SendTo:
    """Send ``payload`` to ``installation`` over the pairwise session (in list order)."""

    installation: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``payload`` once to the group topic."""

    payload: bytes


Outgoing = SendTo | Publish


@dataclass(frozen=True, slots=True)
class RetiredChain:
    """The chain of an installation whose identity left or was removed, kept read-only for
    a while so that what it sent *before* the removal still decrypts (in flight, or read
    by a member catching up, who applies the removal op from its inbox first)."""

    chain: ReceiverChain
    #: the message epoch of the removal (``removal_message_epoch``): a message tagged with
    #: a later epoch was sent after it
    last_epoch: int
    #: receiver's clock (ms): the chain is forgotten after this
    until_ms: int


#: the ``last_epoch`` of the chains a member keeps as it goes out (``_kept_on_exit``): any
ANY_EPOCH = (1 << 32) - 1


def removal_epoch(ops: Mapping[bytes, Op], identity: bytes, default: int) -> int:
    """The epoch of the latest op that took ``identity`` out of the group (leave/remove):
    the size of its causal past, as sender-key chains count epochs."""
    return max((o.epoch for o in ops.values() if taken_out(o) == identity), default=default)


def message_epoch(size: int, void: frozenset[bytes]) -> int:
    """The epoch group messages are tagged with, for a log of ``size`` ops of which
    ``void`` count for nothing (``roster.uncounted``: void, concurrent with a removal of
    their author, or leaves that do not count): the ops that count. Void ops are in one
    member's log and aside at another's, by the order they came in (those that got them
    before the removal hold them), and a removed member's dated-back leaves are in the logs
    of the members it sent them to only, so counting them made honest members' epochs drift
    apart for good — by more than ``EPOCH_AHEAD`` / ``EPOCH_GRACE``, their messages went
    unread."""
    return size - len(void)


def removal_message_epoch(ops: Mapping[bytes, Op], identity: bytes, default: int) -> int:
    """As :func:`removal_epoch`, in message epochs: the count of the ops in the causal
    past of the latest op that took ``identity`` out, those that count for nothing left
    out (``roster.uncounted``) — as that
    past alone says, so that every member holding the op gets the same number whatever
    else it holds (a message tagged later was sent after it)."""
    best = None
    for o in ops.values():
        if taken_out(o) == identity:
            past = [ops[p] for p in _reach(ops, o.deps)]
            void = uncounted(sorted(past, key=lambda x: x.sort_key))
            n = message_epoch(len(past), void)
            best = n if best is None else max(best, n)
    return default if best is None else best


def group_tag(group_id: bytes, epoch: int) -> bytes:
    """The 8-byte routing tag of a group epoch (random-looking, unlinkable without the id)."""
    return sha256(b"logos-chat/group-tag/v1\x00" + group_id + epoch.to_bytes(4, "big"))[:8]


def _claimed_epoch(raw: bytes) -> int:
    """The epoch an op claims (its ancestors' count, so its dependencies claim less); -1 if
    it does not decode (then ``decode_op`` reports it in order)."""
    try:
        return decode_op(raw).epoch
    except MalformedMessage:
        return -1


def _devices(directory: Directory, identity: bytes) -> frozenset[bytes]:
    if isinstance(directory, Mapping):
        found: Collection[bytes] = directory.get(identity, ())
    else:
        found = directory(identity)
    return frozenset(bytes(d) for d in found)


def _check_id(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes")
    if len(value) != ID_LEN:
        raise ValueError(f"{what} must be {ID_LEN} bytes")
    return value


def encode_welcome(group_id: bytes, ops: Iterable[Op]) -> bytes:
    """Welcome (kind 0x16): ``0x16 | group id (32) | n (varint) | (varint len | op)*``,
    ops in fold order. Sent to a new member's installations over pairwise sessions."""
    ordered = sorted(ops, key=lambda o: o.sort_key)
    return b"".join(
        [bytes((KIND_WELCOME,)), group_id, varint(len(ordered)), *(blob(o.raw) for o in ordered)]
    )


def decode_welcome(data: bytes) -> tuple[bytes, list[bytes]]:
    r = Reader(data)
    if r.u8() != KIND_WELCOME:
        raise MalformedMessage("not a group welcome")
    group_id = r.take(ID_LEN)
    ops = [r.blob() for _ in range(r.var())]
    r.end()
    return group_id, ops


#: op id -> the roster right after that op (the fold of its causal past and the op). A pure
#: function of the op id: an id hashes the op's dependencies' ids, so it fixes the whole
#: causal past, and an op is never concurrent with its own past, so it cannot change how
#: that past folds. Shared by every state; bounded (oldest entries dropped first). It turns
#: checking a log op by op (a welcome, a catch-up) from quadratic into linear where each op
#: has one dependency, the usual case. Bounded by entries and by the members they hold in
#: all (each roster is its own set: a welcome of big rosters must not grow memory freely).
_ROSTER_AFTER: dict[bytes, Roster] = {}
_ROSTER_AFTER_MAX = 1 << 16
_ROSTER_AFTER_MAX_MEMBERS = 1 << 20
_roster_after_members = 0


def _remember_roster(op_id: bytes, roster: Roster) -> None:
    global _roster_after_members
    size = len(roster.members) + len(roster.admins)
    if size > _ROSTER_AFTER_MAX_MEMBERS // 4 or op_id in _ROSTER_AFTER:
        return
    while _ROSTER_AFTER and (
        len(_ROSTER_AFTER) >= _ROSTER_AFTER_MAX
        or _roster_after_members + size > _ROSTER_AFTER_MAX_MEMBERS
    ):
        old = _ROSTER_AFTER.pop(next(iter(_ROSTER_AFTER)))
        _roster_after_members -= len(old.members) + len(old.admins)
    _ROSTER_AFTER[op_id] = roster
    _roster_after_members += size


def _ancestors(ops: Mapping[bytes, Op], op: Op) -> set[bytes]:
    return _reach(ops, op.deps)


def _reach(ops: Mapping[bytes, Op], start: Iterable[bytes]) -> set[bytes]:
    """``start`` and everything below it."""
    seen: set[bytes] = set()
    stack = list(start)
    while stack:
        oid = stack.pop()
        if oid not in seen:
            seen.add(oid)
            stack.extend(ops[oid].deps)
    return seen


def _closure(op: Op, ops: Mapping[bytes, Op], cands: Mapping[bytes, Op]) -> list[Op] | None:
    """The candidates ``op`` depends on (transitively) beyond ``ops``, in fold order; None
    if some dependency is neither."""
    need: dict[bytes, Op] = {}
    stack = [d for d in op.deps if d not in ops]
    while stack:
        oid = stack.pop()
        if oid in need:
            continue
        c = cands.get(oid)
        if c is None:
            return None
        need[oid] = c
        stack.extend(d for d in c.deps if d not in ops)
    return sorted(need.values(), key=lambda o: o.sort_key)


def _removed_concurrently(
    op: Op,
    ops: Mapping[bytes, Op],
    counting: frozenset[bytes] | None = None,
    out_of: Mapping[bytes, list[Op]] | None = None,
) -> bool:
    """True if ``ops`` hold a removal (or leave) of ``op``'s author that ``op`` has not seen
    and that counts (``roster.counting_removals(ops)``, given as ``counting`` or computed):
    then ``op`` is void in any log holding ``ops`` (``roster.concurrent_with_removal``).
    ``out_of``: the ops of ``ops`` taking each identity out, if known (:func:`_out_of`)."""
    if out_of is not None:
        removals = out_of.get(op.author, [])
    else:
        removals = [o for o in ops.values() if taken_out(o) == op.author]
    if not removals:
        return False
    past = _ancestors(ops, op)  # ``op`` itself is not in ``ops`` yet
    unseen = [r for r in removals if r.op_id not in past]
    if not unseen:
        return False
    if any(r.kind is OpKind.LEAVE for r in unseen) and not any(
        r.kind is OpKind.REMOVE for r in removals
    ):
        return True  # a leave counts unless a removal of its author is concurrent with it
    if counting is None:
        counting = counting_removals(ops.values())
    return any(r.op_id in counting for r in unseen)


def _leave_changes_nothing(
    op: Op,
    ops: Mapping[bytes, Op],
    trial: Mapping[bytes, Op],
    out_of: Mapping[bytes, list[Op]] | None = None,
) -> bool:
    """True if ``op``, a leave, counts for nothing in ``trial`` (``ops`` and the candidates
    ``op`` depends on: concurrent with a removal of its author that counts, see
    ``roster.counting_removals``) and folding it in with them changes nothing in ``ops``'s
    fold — members, admins, name, which ops take effect, which count for nothing — (its
    author is out already where ``roster._void_and_late`` applies it: where the removal
    took it out). A member keeps such a leave aside, as a candidate (a removed member can
    sign any number of them, dated back: in the log, ``MAX_OPS`` of them filled it), and
    takes it in once it would change the fold (``GroupState._readmit``): so whether it is
    in one member's log and aside at another's changes nothing that members agree on.
    ``out_of``: the ops of ``ops`` taking each identity out, if known (:func:`_out_of`)."""
    if out_of is not None:
        removals = [r for r in out_of.get(op.author, ()) if r.kind is OpKind.REMOVE]
    else:
        removals = [o for o in trial.values() if o.kind is OpKind.REMOVE and o.target == op.author]
    if not removals:
        return False  # (the usual case: no removal, the leave counts)
    past = _ancestors(trial, op)
    if all(r.op_id in past for r in removals):
        return False  # it saw every removal of its author: it counts
    roster, effective, nothing = _fold_of(ops)
    with_roster, with_effective, with_nothing = fold_all([*trial.values(), op])
    extra = {op.op_id, *(k for k in trial if k not in ops)}
    return (
        with_roster == roster
        and with_effective == effective
        and extra <= with_nothing
        and with_nothing - extra == nothing
    )


_FOLD_OF: list[tuple[frozenset[bytes], tuple[Roster | None, frozenset[bytes], frozenset[bytes]]]]
_FOLD_OF = []


def _fold_of(
    ops: Mapping[bytes, Op],
) -> tuple[Roster | None, frozenset[bytes], frozenset[bytes]]:
    """``roster.fold_all(ops)``, remembered for the last log (many leaves of a batch are
    checked against one log)."""
    key = frozenset(ops)
    if _FOLD_OF and _FOLD_OF[0][0] == key:
        return _FOLD_OF[0][1]
    result = fold_all(ops.values())
    _FOLD_OF[:] = [(key, result)]
    return result


def _never_has_role(ops: Mapping[bytes, Op], op: Op) -> str | None:
    """Why ``op``'s author holds the role it needs (admin; member for a leave) in no fold of
    any part of ``ops`` — so in none of its causal past, which is part of ``ops`` —, or None
    if it may. A linear scan, where checking the op folds its causal past: an admin is the
    creator, someone promoted, or (the last admin gone: the smallest member) anyone once
    a member if an identity ever an admin was ever taken out."""
    who = op.author
    admins: set[bytes] = set()
    members: set[bytes] = set()
    for o in ops.values():
        if o.kind is OpKind.CREATE:
            admins.add(o.author)
            members.update(o.members)
        elif o.kind is OpKind.PROMOTE:
            admins.add(o.target)
        elif o.kind is OpKind.ADD:
            members.add(o.target)
    if op.kind is OpKind.LEAVE:
        return None if who in members else "only a member can leave"
    if who in admins or any(taken_out(o) in admins for o in ops.values()):
        return None
    if op.kind is OpKind.RENAME:
        return "only an admin can rename the group"
    return f"only an admin can {op.kind.name.lower()} members"  # (roster.refusal's words)


def _out_of(ops: Iterable[Op], into: dict[bytes, list[Op]] | None = None) -> dict[bytes, list[Op]]:
    """identity -> the ops taking it out (removals of it, its leave), added to ``into``."""
    out = {} if into is None else into
    for o in ops:
        who = taken_out(o)
        if who is not None:
            out.setdefault(who, []).append(o)
    return out


def _back_unvouched(before: GroupState, after: GroupState) -> bool:
    """``roster.back_on_leaves_only`` for ``after``, computed whenever its op set grew (or we
    held ourselves out already); ops only grow. Any op may change it, not only a leave or
    removal: an add of us back by an admin that is one only thanks to the leave (so the add
    counts for nothing once the leave is left out); skipping those made whether we hold
    ourselves out depend on the order the ops came in. (Cheap where no admin who removed
    us left: a scan of the log.)"""
    me = after.identity
    if me not in after.roster.members:
        return False
    held = me in before.roster.members and not before.is_member
    if not held and len(after.ops) == len(before.ops):
        return False
    return back_on_leaves_only(after.ops.values(), me, after.roster)


def _bounded(cands: Mapping[bytes, Op]) -> tuple[Op, ...]:
    """The newest candidates: ``MAX_CANDIDATES_PER_AUTHOR`` per author, ``MAX_CANDIDATES``."""
    per_author: dict[bytes, int] = {}
    kept: list[Op] = []
    for o in reversed(list(cands.values())):
        n = per_author.get(o.author, 0)
        if n < MAX_CANDIDATES_PER_AUTHOR:
            per_author[o.author] = n + 1
            kept.append(o)
    return tuple(reversed(kept[:MAX_CANDIDATES]))


def _heads(ops: Mapping[bytes, Op]) -> tuple[bytes, ...]:
    referenced = {d for o in ops.values() for d in o.deps}
    return tuple(sorted(oid for oid in ops if oid not in referenced))


@dataclass(frozen=True, slots=True, repr=False)
class GroupState:
    """One installation's view of one group. Treat the fields as private; use the methods."""

    group_id: bytes
    identity: bytes
    installation: bytes
    ops: Mapping[bytes, Op]
    roster: Roster
    epoch: int
    devices: Mapping[bytes, frozenset[bytes]]
    own: SenderChain | None
    chains: Mapping[bytes, tuple[ReceiverChain, ...]]
    by_installation: Mapping[bytes, tuple[bytes, ...]]
    pending: tuple[SenderKeyDistribution, ...]
    tags: Mapping[bytes, int]
    heads: tuple[bytes, ...]
    tag: bytes
    retired: tuple[RetiredChain, ...]
    #: identity that left -> end of its window (receiver's clock, ms): set when we apply the
    #: op that took it out; a key of it that arrives later may join that window only
    left: Mapping[bytes, int]
    #: valid ops kept aside because they arrived concurrent with a removal of their author
    #: that we knew (see ``_admit``), oldest first
    candidates: tuple[Op, ...] = ()

    def __repr__(self) -> str:
        return (
            f"GroupState(group={self.group_id.hex()[:16]}, epoch={self.epoch}, "
            f"members={len(self.roster.members)}, admins={len(self.roster.admins)}, "
            f"chains={len(self.by_installation)})"
        )

    # -- reading -----------------------------------------------------------------------

    def members(self) -> frozenset[bytes]:
        return self.roster.members

    def admins(self) -> frozenset[bytes]:
        return self.roster.admins

    @property
    def name(self) -> str:
        return self.roster.name

    @property
    def is_member(self) -> bool:
        """True while this installation is an installation of a current member."""
        return self.installation in self.devices.get(self.identity, ())

    @property
    def held_out(self) -> bool:
        """True while we hold ourselves out of a group whose fold has us in, on leaves no one
        vouches for (``roster.back_on_leaves_only``): ask the admins (``GroupChat``)."""
        return self.devices.get(self.identity) == frozenset()

    @property
    def out_for_a_while(self) -> bool:
        """True while we are out of the group in our view but keep the chains we held as we
        went out (for ``RETIRED_CHAIN_MS``): the op that took us out may yet be found void
        (we are back then, and they are live again), so a frame that does not decrypt yet
        may later, as for a member."""
        return not self.is_member and bool(self.retired)

    def installations(self) -> frozenset[bytes]:
        """Every member installation except this one (who sender keys go to)."""
        if not self.is_member:
            return frozenset()
        return frozenset().union(*self.devices.values()) - {self.installation}

    def op_log(self) -> list[bytes]:
        """All accepted ops, in fold order (what an offline member needs to catch up)."""
        return [o.raw for o in sorted(self.ops.values(), key=lambda o: o.sort_key)]

    def welcome(self) -> bytes:
        return encode_welcome(self.group_id, self.ops.values())

    # -- construction ------------------------------------------------------------------

    @classmethod
    def _blank(cls, group_id: bytes, identity: bytes, installation: bytes) -> GroupState:
        return cls(
            group_id, identity, installation, {}, Roster("", frozenset(), frozenset()), 0,
            {}, None, {}, {}, (), {}, (), group_tag(group_id, 0), (), {}, (),
        )  # fmt: skip

    @classmethod
    def create(
        cls,
        salt: bytes,
        name: str,
        identity: bytes,
        key: InstallationKey,
        members: Iterable[bytes],
        directory: Directory,
        rng: Rng,
        now_ms: int,
    ) -> tuple[GroupState, list[Outgoing]]:
        """Start a group with ``identity`` as its only admin.

        ``salt``: 32 random bytes; the group's id is ``group_id_for(identity, salt)``.
        Returns the state and, in order: the create op to publish, a welcome for every
        other member installation (our own other devices included), then our sender-key
        distributions. Deliver pairwise payloads to one installation in list order.
        Raises ValueError on bad arguments (e.g. ``key`` not an installation of ``identity``).
        """
        _check_id(salt, "salt")
        _check_id(identity, "identity")
        group_id = group_id_for(identity, salt)
        roster_ids = [identity, *(_check_id(m, "member") for m in members if m != identity)]
        if len(set(roster_ids)) != len(roster_ids):
            raise ValueError("duplicate members")
        if key.public not in _devices(directory, identity):
            raise ValueError("key is not an installation of identity")
        op = make_op(
            key, OpKind.CREATE, group_id=group_id, epoch=0, deps=(), author=identity,
            created_ms=now_ms, name=name, members=tuple(roster_ids), salt=salt,
        )  # fmt: skip
        state, out = cls._blank(group_id, identity, key.public)._advance(
            {op.op_id: op}, directory, rng
        )
        welcome = state.welcome()
        welcomes: list[Outgoing] = [SendTo(i, welcome) for i in sorted(state.installations())]
        return state, [Publish(op.raw), *welcomes, *out]

    @classmethod
    def join(
        cls,
        welcome: bytes,
        identity: bytes,
        installation: bytes,
        directory: Directory,
        rng: Rng,
        signers: Directory | None = None,
    ) -> tuple[GroupState, list[Outgoing]]:
        """Build our state from a welcome (the op log) and distribute our sender key.

        ``signers``: the installations an identity has ever had, revoked ones included, for
        checking who signed the ops of the past (an admin may have lost the device that
        made them); by default only the active ones (``directory``). A change made live is
        always checked against the active installations.

        Raises MalformedMessage / GroupError if the log does not verify or does not make
        us a member (its fold has us in, but we may hold ourselves out: ``held_out``).
        """
        signers = directory if signers is None else signers
        _check_id(identity, "identity")
        _check_id(installation, "installation")
        group_id, raw_ops = decode_welcome(welcome)
        ops = [decode_op(raw) for raw in raw_ops]
        creates = [o for o in ops if o.kind is OpKind.CREATE]
        if len(creates) != 1:
            raise GroupError("a welcome must hold exactly one create op")
        root = creates[0]
        if root.group_id != group_id or root.epoch != 0 or root.deps:
            raise GroupError("bad create op")
        if group_id != group_id_for(root.author, root.salt):
            raise GroupError("the group id is not its creator's: a welcome for another group")
        if root.installation not in _devices(signers, root.author):
            raise GroupError("create op not signed by an installation of its author")
        if not root.signature_valid():
            raise GroupError("op signature does not verify")
        # cheap checks first, so that a forged or over-costly welcome fails before the
        # costly one (folding the causal past of every op that merges branches)
        for o in ops:
            if o.installation not in _devices(signers, o.author) or not o.signature_valid():
                raise GroupError("a welcome op not signed by an installation of its author")
        work = sum(o.epoch for o in ops if len(o.deps) > 1)
        if work > MAX_MERGE_WORK:
            raise GroupError(
                f"a welcome too costly to check ({work} ops under its merges, at most "
                f"{MAX_MERGE_WORK})"
            )
        state = replace(cls._blank(group_id, identity, installation), ops={root.op_id: root})
        first = effect(None, root)
        if first is not None:
            _remember_roster(root.op_id, first)
        rest = [o.raw for o in ops if o is not root]
        state, _, rejected = state._apply_all(rest, signers, vouched=True)
        if rejected:
            raise GroupError(f"{len(rejected)} op(s) in the welcome do not apply")
        state, out = state._advance(dict(state.ops), directory, rng)
        if not state.is_member and not state.held_out:
            raise GroupError("the welcome does not make us a member")
        return state, out

    # -- membership changes we make ----------------------------------------------------

    def _make(
        self,
        kind: OpKind,
        key: InstallationKey,
        directory: Directory,
        rng: Rng,
        now_ms: int,
        target: bytes = b"",
        name: str = "",
    ) -> tuple[GroupState, list[Outgoing]]:
        if key.public != self.installation:
            raise ValueError("key is not this state's installation")
        deps, epoch = self.heads, len(self.ops)
        past_roster: Roster | None = self.roster
        if len(deps) > MAX_DEPS:
            # more concurrent heads than one op may name (e.g. a member's many concurrent
            # leaves): name the first MAX_DEPS; the op's past is theirs, and later ops
            # merge the rest
            deps = deps[:MAX_DEPS]
            past = _reach(self.ops, deps)
            epoch, past_roster = len(past), fold(self.ops[p] for p in past)[0]
        op = make_op(
            key, kind, group_id=self.group_id, epoch=epoch, deps=deps,
            author=self.identity, created_ms=now_ms, target=target, name=name,
        )  # fmt: skip
        reason = refusal(past_roster, op)  # what the op's past says
        if reason is not None:
            raise GroupError(reason)
        state, out = self._accept(op, directory, rng, now_ms)
        extra: list[Outgoing] = []
        if kind is OpKind.ADD:
            welcome = state.welcome()
            extra = [SendTo(i, welcome) for i in sorted(state.devices.get(target, ()))]
        return state, [Publish(op.raw), *extra, *out]

    def add_member(
        self, identity: bytes, key: InstallationKey, directory: Directory, rng: Rng, now_ms: int
    ) -> tuple[GroupState, list[Outgoing]]:
        """Admin adds ``identity``. Outgoing: the op (publish), a welcome to each of the new
        member's installations, our current sender key to them. GroupError if not allowed."""
        return self._make(OpKind.ADD, key, directory, rng, now_ms, _check_id(identity, "identity"))

    def remove_member(
        self, identity: bytes, key: InstallationKey, directory: Directory, rng: Rng, now_ms: int
    ) -> tuple[GroupState, list[Outgoing]]:
        """Admin removes ``identity``; we rotate our sender key to the remaining members."""
        return self._make(
            OpKind.REMOVE, key, directory, rng, now_ms, _check_id(identity, "identity")
        )

    def promote(
        self, identity: bytes, key: InstallationKey, directory: Directory, rng: Rng, now_ms: int
    ) -> tuple[GroupState, list[Outgoing]]:
        """Admin makes member ``identity`` an admin."""
        return self._make(
            OpKind.PROMOTE, key, directory, rng, now_ms, _check_id(identity, "identity")
        )

    def rename(
        self, name: str, key: InstallationKey, directory: Directory, rng: Rng, now_ms: int
    ) -> tuple[GroupState, list[Outgoing]]:
        """Admin renames the group."""
        return self._make(OpKind.RENAME, key, directory, rng, now_ms, name=name)

    def leave(
        self, key: InstallationKey, directory: Directory, rng: Rng, now_ms: int
    ) -> tuple[GroupState, list[Outgoing]]:
        """Our identity leaves (self-signed). All our installations stop being members.

        Held out (``held_out``), we may leave too: our fold has us in, so the leave is valid
        on our heads, and we are plainly out after it. It builds on the leaves that hold us
        in, which the members may lack (a removed admin may have handed them to us alone):
        the outgoing list then starts with the ops of our log that are not in the causal
        past of the removals of us (the members hold that), oldest first, each to publish
        before the leave, which comes last."""
        support: list[Outgoing] = []
        if self.held_out:
            ours = [oid for oid, o in self.ops.items() if taken_out(o) == self.identity]
            below = _reach(self.ops, ours)
            rest = sorted(
                (o for oid, o in self.ops.items() if oid not in below), key=lambda o: o.sort_key
            )
            support = [Publish(o.raw) for o in rest]
        state, out = self._make(OpKind.LEAVE, key, directory, rng, now_ms)
        return state, [*support, *out]

    # -- membership changes we receive -------------------------------------------------

    def apply_op(
        self,
        data: bytes,
        directory: Directory,
        rng: Rng,
        now_ms: int | None = None,
        signers: Directory | None = None,
        vouched: bool = False,
    ) -> tuple[GroupState, list[Outgoing]]:
        """Verify and apply one op from the group topic.

        With ``now_ms`` (the receiver's clock), the chains of a member the op takes out of
        the group are retired for ``RETIRED_CHAIN_MS`` instead of dropped at once.
        ``vouched``: its author relayed it from an active installation, so one signed by a
        device revoked since enters at once (see ``_admit``).

        Raises MalformedMessage (unparseable) or GroupError (other group, replayed, stale,
        missing dependencies — retry after the earlier ops arrive —, unknown installation,
        forged signature, author without the role in the op's causal past).
        """
        op = decode_op(data)
        return self._accept(op, directory, rng, now_ms, signers, vouched)

    def apply_ops(
        self,
        ops: Iterable[bytes],
        directory: Directory,
        rng: Rng,
        now_ms: int | None = None,
        signers: Directory | None = None,
    ) -> tuple[GroupState, list[Outgoing], list[tuple[bytes, ChatCoreError]]]:
        """Apply a batch in any order (catch-up after being offline): ops whose
        dependencies are in the batch are retried until nothing more applies.
        Returns (state, outgoing, rejected ops with their error). Replays are ignored."""
        state, changed, rejected = self._apply_all(list(ops), directory, signers)
        if not changed:
            return state, [], rejected  # (it may hold new candidates)
        state, out = self._transition(state, directory, rng, now_ms)
        return state, out, rejected

    def _apply_all(
        self,
        raw_ops: list[bytes],
        directory: Directory,
        signers: Directory | None = None,
        vouched: bool = False,
    ) -> tuple[GroupState, bool, list[tuple[bytes, ChatCoreError]]]:
        """Accept ops (membership only, no key handling) until a fixpoint. ``vouched``: a
        welcome's log, taken as it is (its void ops enter our log too, as they are in the
        welcomer's, instead of being set aside: each then finds its dependencies in the
        log, where set aside each would bring all the earlier ones with it)."""
        if len(raw_ops) > MAX_OPS + MAX_CANDIDATES:
            raise GroupError(f"{len(raw_ops)} ops at once: more than a group's log holds")
        ops = dict(self.ops)
        cands = {c.op_id: c for c in self.candidates}
        todo = sorted(raw_ops, key=_claimed_epoch)  # dependencies first: one pass, usually
        rejected: list[tuple[bytes, ChatCoreError]] = []
        changed = False
        view = replace(self, heads=())  # never the made-on-our-heads shortcut of _check
        # who is taken out by which op, kept up to date as ops come in: looking it up per
        # op keeps checking a long log linear (candidates are never removals, so the index
        # of ``ops`` is that of any trial set too)
        out_of = _out_of(ops.values())
        while todo:
            retry: list[bytes] = []
            errors: list[tuple[bytes, ChatCoreError]] = []
            for raw in todo:
                try:
                    op = decode_op(raw)
                    if op.op_id in ops:
                        continue
                    size = len(ops)
                    changed |= view._admit(
                        op, ops, cands, directory, signers, None, out_of, aside=not vouched
                    )
                    if len(ops) > size:  # newest last (dicts keep insertion order)
                        _out_of(islice(reversed(ops.values()), len(ops) - size), out_of)
                except GroupError as err:
                    retry.append(raw)
                    errors.append((raw, err))
                except MalformedMessage as err:
                    rejected.append((raw, err))
            if len(retry) == len(todo):
                rejected.extend(errors)
                break
            todo = retry
        if changed:
            view._readmit(ops, cands, directory, signers)
        candidates = _bounded(cands)
        if not changed:
            same = candidates == self.candidates
            return (self if same else replace(self, candidates=candidates)), False, rejected
        roster, void = fold_void(ops.values())
        assert roster is not None
        state = replace(
            self, ops=ops, roster=roster, epoch=message_epoch(len(ops), void),
            heads=_heads(ops), candidates=candidates,
        )  # fmt: skip
        return state, True, rejected

    def _admit(
        self,
        op: Op,
        ops: dict[bytes, Op],
        cands: dict[bytes, Op],
        directory: Directory,
        signers: Directory | None = None,
        counting: frozenset[bytes] | None = None,
        out_of: Mapping[bytes, list[Op]] | None = None,
        aside: bool = True,
        vouched: bool = False,
    ) -> bool:
        """Check ``op`` against ``ops`` and add it: True (also when it is set aside but the
        revoked devices' ops it vouches for entered). Raises GroupError (nothing changed).

        A valid add, promotion or rename concurrent with a removal of its author that we know
        and that counts (``roster.counting_removals``: a leave or a removal not void
        itself) counts for nothing in our log (see ``roster.concurrent_with_removal``;
        removals always enter the log), so it is not added but kept in ``cands`` (False): a
        member that got it earlier may have built on it, and an op that depends on
        candidates brings them in with it, each checked. So is a leave that counts for
        nothing and changes nothing (:func:`_leave_changes_nothing`: a removed member's
        leaves, dated back). An author cannot bring in its own
        void ops this way (its op would be void, or not allowed, too). Whether a removal
        counts can change as ops arrive (a later removal of its author makes it void), so
        candidates are checked again whenever the log grows (``_readmit``) and enter it
        once they count. So what is accepted depends on the arrival order only in ops that
        count for nothing in the log as it stands and change nothing else. (Setting
        removals aside too made members diverge: a removal that counts voids its target's
        concurrent ops, and whether it counts depends on the other removals.)

        ``signers`` (every installation an identity ever had): an op signed by a device
        revoked since is kept aside the same way (members that got it while the device
        was active accepted it, and build on it); it comes in only with an op that
        depends on it, or ``vouched`` (relayed by an active installation of its own author:
        as good as an op of the author built on it).
        Without ``signers`` it is refused.
        """
        closure: list[Op] = []
        if any(d not in ops for d in op.deps):
            found = _closure(op, ops, cands)
            if found is None:
                raise GroupError("op depends on ops we have not seen yet")
            closure = found
        trial = dict(ops) if closure else ops
        revoked: list[Op] = []
        tainted: set[bytes] = set()  # revoked-signed closure ops and what builds on them
        for c in closure:
            if self._check(c, directory, trial, signers):
                revoked.append(c)
                tainted.add(c.op_id)
            elif any(d in tainted for d in c.deps):
                tainted.add(c.op_id)
            trial[c.op_id] = c
        if revoked:
            # signed by a device revoked since: only its author, or someone who is an admin
            # in the op's causal past without those ops' help, vouches for it by building on
            # it — a member holding a stolen key must not make itself admin by building on
            # its own forgery
            past = [trial[k] for k in _reach(trial, op.deps)]  # the same at every member
            if not _vouched(revoked, tainted, past, {op.author}):
                raise GroupError(
                    "depends on an op signed by a device revoked since that no admin vouches for"
                )
        revoked_signer = self._check(op, directory, trial, signers)
        removal = op.kind in (OpKind.REMOVE, OpKind.LEAVE)
        if removal and revoked_signer:
            # a removal always enters the log when it comes (it voids its target's concurrent
            # ops); one signed by a device revoked since waits aside, as a thief's could be
            # dated back, until an admin's op builds on it (whoever relays it: acceptance
            # depends on the op and its causal past only)
            cands.pop(op.op_id, None)
            cands[op.op_id] = op
            return False
        if (
            op.kind is OpKind.LEAVE
            and aside
            and not revoked
            and _leave_changes_nothing(op, ops, trial, out_of)
        ):
            cands.pop(op.op_id, None)
            cands[op.op_id] = op  # newest last
            return False
        unvouched = revoked_signer and not vouched
        if (
            not removal
            and aside
            and (unvouched or _removed_concurrently(op, trial, counting, out_of))
        ):
            cands.pop(op.op_id, None)
            cands[op.op_id] = op  # newest last
            if not (revoked and not unvouched):
                return False
            # void (its author was removed concurrently), but its author vouched for the
            # revoked devices' ops it builds on when it made it, as the check above says
            # on its causal past alone: members that got it before the removal hold them,
            # so we must too (kept aside with it, they set the two sides apart for good)
            for c in closure:
                ops[c.op_id] = c
                del cands[c.op_id]
            return True
        for c in closure:
            ops[c.op_id] = c
            del cands[c.op_id]
        ops[op.op_id] = op
        cands.pop(op.op_id, None)
        return True

    def _readmit(
        self,
        ops: dict[bytes, Op],
        cands: dict[bytes, Op],
        directory: Directory,
        signers: Directory | None = None,
        involved: frozenset[bytes] | None = None,
    ) -> bool:
        """Move the candidates that count now into ``ops`` (True if any); call it whenever
        ``ops`` grew. Whether a removal counts is not monotone in the log: a removal of
        ``a`` arriving later makes ``a``'s concurrent removal of ``j`` void, so it stops
        voiding ``j``'s ops, and a member that set one of them aside must then hold it as
        a member that got it first does. Candidates are never removals, so what counts is
        computed once, again only after a leave came in: a leave set aside comes in once it
        would change the fold (:func:`_leave_changes_nothing`; ``involved``: the only
        authors whose leaves aside may, when ``ops`` grew by one op that saw every other —
        it comes last in the fold, is concurrent with no op of the log, and so changes the
        fold of the log with such a leave as it changes the fold without it, unless it is
        by the leave's author or takes it out). One signed by a device revoked since stays
        aside (it comes in only with an op that depends on it, as in ``_admit``)."""
        if not cands:
            return False
        counting = counting_removals(ops.values())
        back = False
        for c in sorted(cands.values(), key=lambda o: o.sort_key):  # dependencies first
            if c.op_id not in cands or c.installation not in _devices(directory, c.author):
                continue
            closure = _closure(c, ops, cands)
            if closure is None:
                continue
            trial = {**ops, **{x.op_id: x for x in closure}} if closure else ops
            if c.kind is OpKind.LEAVE:
                if involved is not None and c.author not in involved:
                    continue
                if _leave_changes_nothing(c, ops, trial):
                    continue
            elif _removed_concurrently(c, trial, counting):
                continue
            try:
                came = self._admit(c, ops, cands, directory, signers, counting)
            except GroupError:
                continue  # e.g. the log is full
            back |= came
            if came and any(o.kind is OpKind.LEAVE for o in (c, *closure)):
                counting = counting_removals(ops.values())
        if back and any(c.kind is OpKind.LEAVE for c in cands.values()):
            self._readmit(ops, cands, directory, signers)  # a leave checked before the log
            # grew may change the fold now
        return back

    def _check(
        self,
        op: Op,
        directory: Directory,
        ops: Mapping[bytes, Op],
        signers: Directory | None = None,
    ) -> bool:
        """Raise GroupError unless ``op`` is valid on ``ops``. True: valid, but signed by an
        installation of its author that only ``signers`` (past devices) lists."""
        if op.group_id != self.group_id:
            raise GroupError("op for another group")
        if op.op_id in ops:
            raise GroupError("op replayed")
        if op.kind is OpKind.CREATE:
            raise GroupError("the group already has a create op")
        if not op.deps:
            raise GroupError("op without dependencies")
        if len(ops) >= MAX_OPS:
            raise GroupError(f"the group's op log is full ({MAX_OPS} ops)")
        if any(d not in ops for d in op.deps):
            raise GroupError("op depends on ops we have not seen yet")
        revoked_signer = False
        if op.installation not in _devices(directory, op.author):
            if signers is None or op.installation not in _devices(signers, op.author):
                raise GroupError("op not signed by an installation of its author")
            revoked_signer = True
        if not op.signature_valid():
            raise GroupError("op signature does not verify")
        only = op.deps[0] if len(op.deps) == 1 else None
        known = _ROSTER_AFTER.get(only) if only is not None and only in ops else None
        if op.deps == self.heads and len(ops) == len(self.ops):
            past_size = len(ops)
            past_roster: Roster | None = self.roster  # the usual case: made on our head
        elif known is not None and only is not None:
            # one dependency: the past is its past and itself (its epoch was checked)
            past_size = ops[only].epoch + 1
            past_roster = known
        else:
            never = _never_has_role(ops, op)
            if never is not None:  # so in no past of the log either: spare the fold below
                raise GroupError(f"{op.kind.name} at epoch {op.epoch} refused: {never}")
            # the ops below the dependencies: none of them may be a dependency too (honest
            # ops name their heads; a redundant one only makes the op bigger to carry)
            past = _reach(ops, (dd for d in op.deps for dd in ops[d].deps))
            if len(op.deps) > 1 and (
                len(set(op.deps)) != len(op.deps) or any(d in past for d in op.deps)
            ):
                raise GroupError("op names a dependency that another of its dependencies has")
            past.update(op.deps)
            past_size = len(past)
            if op.epoch != past_size:
                raise GroupError("op epoch does not match its dependencies")
            past_roster = fold(ops[p] for p in past)[0]
        if op.epoch != past_size:
            raise GroupError("op epoch does not match its dependencies")
        reason = refusal(past_roster, op)
        if reason is not None:
            raise GroupError(f"{op.kind.name} at epoch {op.epoch} refused: {reason}")
        after = effect(past_roster, op)
        if after is not None:
            _remember_roster(op.op_id, after)
        return revoked_signer

    def _accept(
        self,
        op: Op,
        directory: Directory,
        rng: Rng,
        now_ms: int | None = None,
        signers: Directory | None = None,
        vouched: bool = False,
    ) -> tuple[GroupState, list[Outgoing]]:
        ops = dict(self.ops)
        cands = {c.op_id: c for c in self.candidates}
        added = self._admit(op, ops, cands, directory, signers, vouched=vouched)
        if added:
            involved = None
            if len(ops) == len(self.ops) + 1 and op.op_id in ops and op.deps == self.heads:
                # one op on our heads: the leaves of anyone else it does not take out that
                # changed nothing before change nothing now (_leave_changes_nothing)
                involved = frozenset((op.author, taken_out(op) or op.author))
            replace(self, heads=())._readmit(ops, cands, directory, signers, involved)
        state = replace(self, candidates=_bounded(cands))
        if not added:
            return state, []
        return state._advance(ops, directory, rng, now_ms)

    def _advance(
        self, ops: dict[bytes, Op], directory: Directory, rng: Rng, now_ms: int | None = None
    ) -> tuple[GroupState, list[Outgoing]]:
        roster: Roster | None = None
        heads: tuple[bytes, ...] = ()
        epoch = 0
        if self.ops and len(ops) == len(self.ops) + 1:
            (op,) = (o for oid, o in ops.items() if oid not in self.ops)
            if op.deps == self.heads:  # the usual case: one op on our heads
                # it comes after every op we hold, so it is concurrent with none: it is not
                # void, and changes what is void nowhere
                roster, heads, epoch = _ROSTER_AFTER.get(op.op_id), (op.op_id,), self.epoch + 1
        if roster is None:
            roster, void = fold_void(ops.values())
            heads, epoch = _heads(ops), message_epoch(len(ops), void)
        if roster is None:
            raise GroupError("no create op")
        folded = replace(self, ops=ops, roster=roster, epoch=epoch, heads=heads)
        return self._transition(folded, directory, rng, now_ms)

    def _kept_on_exit(
        self,
        new: GroupState,
        live: Mapping[bytes, tuple[ReceiverChain, ...]],
        now_ms: int | None,
    ) -> tuple[RetiredChain, ...]:
        """The chains we keep, retired, out of the group (``new``: our state out of it;
        ``live``: the chains kept live): every chain we held and do not keep live (with
        ``now_ms``, else none, as a leaver's), for ``RETIRED_CHAIN_MS``, and the chains we
        had retired.
        The op that took us out may be found void later (a removed admin's leave dated back
        before its add of us, a removal by an admin removed concurrently): we are back, and
        the members that never lost us do not send their keys again; they are live again
        then (:meth:`_transition`). Any epoch while their sender is a member in our view: it
        rotates as it applies our exit, so what the chain we hold carries it sent to us too
        (as a key sent for a later membership, above); a sender out of the group in our view,
        only what it sent before the op that took it out (``_bound_out``). A member really
        out keeps only keys it had, and reads nothing sent after its exit by anyone who knew
        of it."""
        if now_ms is None:
            return ()
        until = now_ms + RETIRED_CHAIN_MS
        kept = [r for r in self.retired if now_ms <= r.until_ms]
        kept += [
            RetiredChain(c, ANY_EPOCH, until)
            for inst, key_ids in self.by_installation.items()
            for key_id in key_ids
            if not any(c.installation == inst for c in live.get(key_id, ()))
            for c in self.chains.get(key_id, ())
            if c.installation == inst
        ]  # (out already: a key sent for a later membership that the log has passed since)
        return tuple(_bound_out(kept, new))

    def sync_devices(self, directory: Directory, rng: Rng) -> tuple[GroupState, list[Outgoing]]:
        """Re-read member installations (a device was added or revoked). A revoked device
        makes us rotate; a new one gets our current sender key."""
        return self._transition(self, directory, rng)

    def _transition(
        self, folded: GroupState, directory: Directory, rng: Rng, now_ms: int | None = None
    ) -> tuple[GroupState, list[Outgoing]]:
        """Key handling after membership may have changed (``self`` is the state before).

        The chains of an installation that is no longer a member installation are dropped;
        with ``now_ms``, those of an identity that left the group are retired instead (see
        :class:`RetiredChain`). A revoked device's chains are always dropped."""
        devices = {m: _devices(directory, m) for m in folded.roster.members}
        if _back_unvouched(self, folded):
            devices[self.identity] = frozenset()  # we hold ourselves out (see the function)
        new = replace(
            folded,
            devices=devices,
            tags=_tags(folded.group_id, folded.epoch),
            tag=group_tag(folded.group_id, folded.epoch),
        )
        if not new.is_member:
            # keys made by members who knew at least the log we hold now (a chain's epoch is
            # the size of the log it was made at), such as the key a member made when it
            # applied our removal, were sent to us for a later membership: a re-add whose
            # welcome reached us after them (its admin's process died between the frames of
            # the removal, or was offline). Dropped here, they were gone for good: the
            # welcome does not carry them and their senders do not send them again. A key
            # its sender gave us reads only what that sender meant us to read
            n_ops = len(new.ops)
            later = {k: tuple(c for c in cs if c.epoch >= n_ops) for k, cs in self.chains.items()}
            later = {k: cs for k, cs in later.items() if cs}
            by_installation = {}
            for i, ks in self.by_installation.items():
                kept = tuple(k for k in ks if any(c.installation == i for c in later.get(k, ())))
                if kept:
                    by_installation[i] = kept
            return replace(
                new, own=None, chains=later, by_installation=by_installation, pending=(),
                retired=self._kept_on_exit(new, later, now_ms), left={},
            ), []  # fmt: skip
        before = self.installations()
        after = new.installations()
        chains = {k: v for k, v in self.chains.items()}
        by_installation = dict(self.by_installation)
        owner = {i: ident for ident, insts in self.devices.items() for i in insts}
        oldest = new.epoch - EPOCH_GRACE  # older tags are refused anyway
        retired = [
            r for r in self.retired
            if r.last_epoch >= oldest and (now_ms is None or now_ms <= r.until_ms)
        ]  # fmt: skip
        back = after - before
        if back:
            # installations back in our view (the op that took them, or us, out was found
            # void, or a re-add): the chains of theirs we retired are live again (a member
            # that never saw itself out does not send its key again); none was made after
            # its sender knew of the exit, and the keys are ours already
            restored = [
                r for r in self.retired
                if r.chain.installation in back
                and r.chain.installation in devices.get(r.chain.identity, ())
                and (now_ms is None or now_ms <= r.until_ms)
            ]  # fmt: skip
            for r in restored:
                _revive(chains, by_installation, r.chain)
            retired = [r for r in retired if not any(r is x for x in restored)]
        if not self.is_member:
            # the chains we kept as we went out that are not back: a member's (a device
            # revoked meanwhile) go; others', read up to the op that took them out
            retired = _bound_out(
                (r for r in retired
                 if r.last_epoch != ANY_EPOCH or r.chain.identity not in new.roster.members),
                new,
            )  # fmt: skip
        left = {i: t for i, t in self.left.items() if now_ms is None or now_ms <= t}
        if now_ms is not None:
            fresh = {oid: o for oid, o in new.ops.items() if oid not in self.ops}
            for o in fresh.values():
                who = taken_out(o)
                if who is not None and who not in new.roster.members:
                    left.setdefault(who, now_ms + RETIRED_CHAIN_MS)
        for gone in sorted(set(by_installation) - after):
            ident = owner.get(gone)
            keep = now_ms is not None and ident is not None and ident not in new.roster.members
            last = removal_message_epoch(new.ops, ident, self.epoch) if keep and ident else 0
            for key_id in by_installation.pop(gone):
                if keep and now_ms is not None and ident is not None:
                    until = left.setdefault(ident, now_ms + RETIRED_CHAIN_MS)
                    retired += [
                        RetiredChain(c, last, until)
                        for c in chains.get(key_id, ())
                        if c.installation == gone
                    ]
                _drop_chain(chains, key_id, gone)
        pending = new.pending
        if now_ms is not None and pending:
            # keys of members that left before we could install them (the ops arrived in one
            # batch, or before the keys): retired if made before they left — only when the op
            # that took them out is applied now (a key sent later must not open a new window)
            waiting = []
            for d in pending:
                until = left.get(d.identity, -1)
                if (
                    d.identity not in new.roster.members
                    and d.epoch <= removal_epoch(new.ops, d.identity, -1)
                    and now_ms <= until
                    and d.installation in _devices(directory, d.identity)
                ):
                    chain = ReceiverChain.from_distribution(d)
                    last = removal_message_epoch(new.ops, d.identity, -1)
                    retired.append(RetiredChain(chain, last, until))
                else:
                    waiting.append(d)
            pending = tuple(waiting)
        new = replace(new, retired=tuple(retired[-MAX_RETIRED_CHAINS:]), pending=pending, left=left)
        out: list[Outgoing] = []
        own = self.own
        if own is None or before - after:
            # a chain's epoch is the size of the log it was made at: it only grows, so the
            # newest chain of a member is the one with the highest epoch
            own = SenderChain.generate(rng, len(new.ops), chains)
            targets = after
        else:
            targets = after - before
        if targets:
            dist = own.distribution(self.group_id, self.identity, self.installation)
            out = [SendTo(i, dist) for i in sorted(targets)]
        state = replace(new, own=own, chains=chains, by_installation=by_installation)
        return state._drain_pending(), out

    # -- sender keys ---------------------------------------------------------------------

    def receive_distribution(
        self,
        from_installation: bytes,
        data: bytes,
        *,
        from_identity: bytes | None = None,
        now_ms: int | None = None,
    ) -> GroupState:
        """Install a sender key that ``from_installation`` sent us over our pairwise session.

        A distribution from an installation that is not (yet) a member installation is held
        until the op that makes it one arrives (at most ``CHAINS_PER_INSTALLATION`` per
        installation, the newest by epoch, as once it is one). With ``from_identity`` (the
        session's authenticated peer) and ``now_ms``, the key of a member that has left,
        made before its removal, is installed as a retired chain (its messages sent before
        the removal still decrypt). Raises MalformedMessage, or GroupError (another group,
        sender mismatch — installation, or identity with ``from_identity`` —, we are not a
        member).
        """
        d = SenderKeyDistribution.from_bytes(data)
        if d.group_id != self.group_id:
            raise GroupError("distribution for another group")
        if d.installation != from_installation:
            raise GroupError("distribution not from the installation it names")
        if d.installation == self.installation:
            raise GroupError("distribution from ourselves")
        if not self.is_member:
            raise GroupError("we are not a member of this group")
        if from_identity is not None and from_identity != d.identity:
            # a key is only ever sent by its own installation, whose identity the session
            # authenticated: one naming another identity is a forgery
            raise GroupError("distribution names another identity than its sender's")
        if d.installation not in self.devices.get(d.identity, ()):
            # the window of a member who left is the one opened when we applied its removal
            # (its other chains were retired then): a key arriving later joins that window,
            # it never opens a new one
            until = self.left.get(d.identity, -1)
            if (
                now_ms is not None
                and now_ms <= until
                and from_identity == d.identity
                and d.identity not in self.roster.members
                and d.epoch <= removal_epoch(self.ops, d.identity, -1)
            ):
                last = removal_message_epoch(self.ops, d.identity, -1)
                if any(
                    r.chain.key_id == d.key_id and r.chain.installation == d.installation
                    for r in self.retired
                ):
                    return self
                r = RetiredChain(ReceiverChain.from_distribution(d), last, until)
                # a leaver's new keys push out only its own oldest, never other leavers'
                mine = [x for x in self.retired if x.chain.installation == d.installation]
                drop = mine[: max(0, len(mine) + 1 - CHAINS_PER_INSTALLATION)]
                kept = tuple(x for x in self.retired if not any(x is y for y in drop))
                return replace(self, retired=(*kept, r)[-MAX_RETIRED_CHAINS:])
            # held, at most as many per installation as are kept once it is a member (the
            # newest by epoch): a non-member knowing the group id (one removed from it) must
            # not fill the held list, which is saved with the state, nor push out the key
            # of a newcomer whose add is on its way
            if d in self.pending:
                return self
            held = [p for p in self.pending if p.installation == d.installation]
            by_epoch = sorted((*held, d), key=lambda p: p.epoch)  # stable: ties by arrival
            out = by_epoch[: max(0, len(by_epoch) - CHAINS_PER_INSTALLATION)]
            if any(p is d for p in out):
                return self  # older than every key held for this installation
            rest = tuple(p for p in self.pending if not any(p is q for q in out))
            return replace(self, pending=(*rest, d)[-MAX_PENDING_DISTRIBUTIONS:])
        return self._install(d)

    def _install(self, d: SenderKeyDistribution) -> GroupState:
        held = self.by_installation.get(d.installation, ())
        if d.key_id in held:
            return self  # a duplicate delivery of a chain we already follow

        def epoch_of(key_id: bytes) -> int:
            if key_id == d.key_id:
                return d.epoch
            for c in self.chains.get(key_id, ()):
                if c.installation == d.installation:
                    return c.epoch
            return -1

        # keep the newest chains by epoch, not by arrival: a late (or re-delivered) old key
        # must not push out the sender's current one (stable sort: ties keep arrival order)
        ordered = sorted((*held, d.key_id), key=epoch_of)
        keep = tuple(ordered[-CHAINS_PER_INSTALLATION:])
        if d.key_id not in keep:
            return self  # older than every chain we hold for this installation
        chains = dict(self.chains)
        by_installation = dict(self.by_installation)
        for old in ordered[:-CHAINS_PER_INSTALLATION]:
            _drop_chain(chains, old, d.installation)
        by_installation[d.installation] = keep
        chains[d.key_id] = (*chains.get(d.key_id, ()), ReceiverChain.from_distribution(d))
        return replace(self, chains=chains, by_installation=by_installation)

    def _drain_pending(self) -> GroupState:
        state = self
        waiting: list[SenderKeyDistribution] = []
        for d in self.pending:
            if d.installation in state.devices.get(d.identity, ()):
                state = state._install(d)
            else:
                waiting.append(d)
        return replace(state, pending=tuple(waiting)) if self.pending else state

    def encrypt(self, plaintext: bytes) -> tuple[GroupState, bytes]:
        """One group message for every member. Raises GroupError if we are not a member."""
        own = self.own
        if own is None:
            raise GroupError("not a member of this group")
        if not isinstance(plaintext, bytes):
            raise TypeError("plaintext must be bytes")
        own, frame = own.encrypt(self.tag, plaintext, self.installation)
        return self._with(own, self.chains), frame

    def _with(
        self, own: SenderChain | None, chains: Mapping[bytes, tuple[ReceiverChain, ...]]
    ) -> GroupState:
        # dataclasses.replace costs ~4 us per call on the per-message path, the constructor
        # ~1.2 us, this ~0.6 us (``chatcore.group._frozen``)
        return _with_own_chains(self, own, chains)

    def decrypt(
        self, frame: bytes, now_ms: int | None = None
    ) -> tuple[GroupState, bytes, bytes, bytes]:
        """Returns (state, sender identity, sender installation, plaintext).

        A message from a member that has left decrypts only with ``now_ms`` within its
        retired chain's time and only if tagged with an epoch no later than its removal;
        one from an identity out because its add turned void (no op took it out) does not
        decrypt while it is out.
        Raises MalformedMessage; GroupError (stale or unknown epoch, unknown sender key,
        sender not a member, we are not a member); DecryptionError (signature or AEAD);
        DuplicateMessage; TooManySkipped. The state is unchanged on any error.
        """
        p = parse_frame(frame)
        epoch = self.tags.get(p.tag)
        if epoch is None:
            raise GroupError("stale or unknown group epoch")
        candidates = self.chains.get(p.key_id, ())
        for chain in candidates:
            if ed25519_verify(chain.signing_public, p.signature, chain.installation + p.signed):
                break
        else:
            return self._decrypt_retired(p, epoch, now_ms, bool(candidates))
        new_chain, plaintext = chain.decrypt(p.iteration, p.header, p.ciphertext)
        chains = dict(self.chains)
        chains[p.key_id] = (
            (new_chain,)
            if len(candidates) == 1
            else tuple(new_chain if c is chain else c for c in candidates)
        )
        if len(new_chain.skipped) > len(chain.skipped):  # a gap: keys kept for later
            _cap_skipped(chains, self.by_installation.get(chain.installation, ()), new_chain)
        return self._with(self.own, chains), chain.identity, chain.installation, plaintext

    def _decrypt_retired(
        self, p: ParsedFrame, epoch: int, now_ms: int | None, had_candidates: bool
    ) -> tuple[GroupState, bytes, bytes, bytes]:
        for i, r in enumerate(self.retired):
            c = r.chain
            if c.key_id != p.key_id or not ed25519_verify(
                c.signing_public, p.signature, c.installation + p.signed
            ):
                continue
            if (
                c.identity not in self.roster.members
                and removal_epoch(self.ops, c.identity, -1) < 0
            ):
                # out, and no op took it out: its add turned void (its admin removed
                # concurrently, or made one by a promotion that turned void). It was never
                # a member in the group's converged view, and it goes on writing unaware:
                # read nothing of it (its chain is kept for the case it is back in our view,
                # as a member a dated-back leave of its admin took out for a while is)
                raise GroupError("message from someone whose add to the group turned void")
            if now_ms is None or now_ms > r.until_ms or epoch > r.last_epoch:
                raise GroupError("message from a former member, sent after it left the group")
            new_chain, plaintext = c.decrypt(p.iteration, p.header, p.ciphertext)
            retired = list(self.retired)
            retired[i] = RetiredChain(new_chain, r.last_epoch, r.until_ms)
            if len(new_chain.skipped) > len(c.skipped):  # as _cap_skipped, over its retired
                mine = [x.chain for x in retired if x.chain.installation == c.installation]
                kept = _trimmed(mine, new_chain)
                retired = [
                    RetiredChain(kept[id(x.chain)], x.last_epoch, x.until_ms)
                    if id(x.chain) in kept else x
                    for x in retired
                ]  # fmt: skip
            return replace(self, retired=tuple(retired)), c.identity, c.installation, plaintext
        if had_candidates:
            raise DecryptionError("message failed authentication")
        raise GroupError("unknown sender key")

    # -- persistence ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Versioned encoding (holds secret keys: the store encrypts it at rest)."""
        parts: list[bytes] = [
            bytes((STATE_VERSION,)), self.group_id, self.identity, self.installation,
            varint(len(self.ops)), *(blob(o.raw) for o in self.ops.values()),
            varint(len(self.devices)),
        ]  # fmt: skip
        for ident in sorted(self.devices):
            devs = sorted(self.devices[ident])
            parts += [ident, varint(len(devs)), *devs]
        if self.own is None:
            parts.append(b"\x00")
        else:
            o = self.own
            parts += [b"\x01", o.key_id, varint(o.epoch), varint(o.iteration), o.chain_key,
                      o.signing_secret]  # fmt: skip
        ordered = [(inst, kid) for inst, kids in self.by_installation.items() for kid in kids]
        parts.append(varint(len(ordered)))
        for inst, kid in ordered:
            for c in self.chains[kid]:
                if c.installation == inst:
                    parts.append(c.encoded())
                    break
            else:
                raise AssertionError("chain index out of step with the chains")
        parts.append(varint(len(self.pending)))
        parts += [blob(d.to_bytes()) for d in self.pending]
        parts.append(varint(len(self.retired)))
        for rc in self.retired:
            parts += [rc.chain.encoded(), varint(rc.last_epoch), varint(rc.until_ms)]
        parts.append(varint(len(self.left)))
        for ident in sorted(self.left):
            parts += [ident, varint(self.left[ident])]
        parts.append(varint(len(self.candidates)))
        parts += [blob(o.raw) for o in self.candidates]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> GroupState:
        """Inverse of :meth:`to_bytes`. Raises MalformedMessage."""
        r = Reader(data)
        version = r.u8()
        if version not in (1, 2, STATE_VERSION):  # 1: before retired chains; 2: candidates
            raise MalformedMessage("unknown group state version")
        group_id, identity, installation = r.take(ID_LEN), r.take(ID_LEN), r.take(ID_LEN)
        ops = {}
        for _ in range(r.var()):
            op = decode_op(r.blob())
            ops[op.op_id] = op
        devices = {}
        for _ in range(r.var()):
            ident = r.take(ID_LEN)
            devices[ident] = frozenset(r.take(ID_LEN) for _ in range(r.var()))
        own = None
        if r.u8():
            key_id, epoch, iteration, ck = r.take(KEY_ID_LEN), r.var(), r.var(), r.take(32)
            secret = r.take(64)
            own = SenderChain(key_id, epoch, iteration, ck, secret, secret[32:])
        chains: dict[bytes, tuple[ReceiverChain, ...]] = {}
        by_installation: dict[bytes, tuple[bytes, ...]] = {}
        for _ in range(r.var()):
            chain = _read_chain(r)
            chains[chain.key_id] = (*chains.get(chain.key_id, ()), chain)
            by_installation[chain.installation] = (
                *by_installation.get(chain.installation, ()), chain.key_id
            )  # fmt: skip
        pending = tuple(SenderKeyDistribution.from_bytes(r.blob()) for _ in range(r.var()))
        retired: tuple[RetiredChain, ...] = ()
        left: dict[bytes, int] = {}
        if version >= 2:
            retired = tuple(RetiredChain(_read_chain(r), r.var(), r.var()) for _ in range(r.var()))
            for _ in range(r.var()):
                ident = r.take(ID_LEN)
                left[ident] = r.var()
        candidates: tuple[Op, ...] = ()
        if version >= 3:
            candidates = tuple(decode_op(r.blob()) for _ in range(r.var()))
        r.end()
        roster, void = fold_void(ops.values())
        if roster is None:
            raise MalformedMessage("group state without a create op")
        epoch = message_epoch(len(ops), void)
        return cls(
            group_id, identity, installation, ops, roster, epoch, devices, own, chains,
            by_installation, pending, _tags(group_id, epoch), _heads(ops),
            group_tag(group_id, epoch), retired, left, candidates,
        )  # fmt: skip


# GroupState._with: the state after one group message (sent or read)
_with_own_chains = updater(GroupState, "own", "chains")


def _read_chain(r: Reader) -> ReceiverChain:
    """One receiver chain record (the inverse of ``ReceiverChain.encoded``)."""
    ident, inst, kid = r.take(ID_LEN), r.take(ID_LEN), r.take(KEY_ID_LEN)
    epoch, spk, base, it, ck = r.var(), r.take(32), r.var(), r.var(), r.take(32)
    skipped = {}
    for _ in range(r.var()):
        i = r.var()
        skipped[i] = r.take(32)
    return ReceiverChain(ident, inst, kid, epoch, spk, base, it, ck, skipped)


def _tags(group_id: bytes, epoch: int) -> dict[bytes, int]:
    low = max(1, epoch - EPOCH_GRACE)
    return {group_tag(group_id, e): e for e in range(low, epoch + EPOCH_AHEAD + 1)}


def _cap_skipped(
    chains: dict[bytes, tuple[ReceiverChain, ...]], key_ids: Iterable[bytes], grown: ReceiverChain
) -> None:
    """Keep at most MAX_SKIPPED_KEYS skipped keys over all the chains of ``grown``'s
    installation (``key_ids``: its chains), dropping those of its other chains first, the
    oldest chain and the lowest numbers first. Bounded per chain only, a member holding
    CHAINS_PER_INSTALLATION chains (it hands out as many keys as it likes) kept that many
    times the bound in our state with one far-ahead frame on each."""
    inst = grown.installation
    mine = [c for k in key_ids for c in chains.get(k, ()) if c.installation == inst]
    by_id = {id(c): c for c in mine}
    for cid, new in _trimmed(mine, grown).items():
        old = by_id[cid]
        chains[new.key_id] = tuple(new if x is old else x for x in chains[new.key_id])


def _trimmed(chains: list[ReceiverChain], grown: ReceiverChain) -> dict[int, ReceiverChain]:
    """The chains of ``chains`` (one installation's, ``grown`` among them) whose skipped
    keys must go so that they hold at most MAX_SKIPPED_KEYS in all, by ``id`` of the chain
    they replace: of the chains other than ``grown``, the oldest first, lowest numbers first."""
    others = sorted((c for c in chains if c.skipped and c is not grown), key=lambda c: c.epoch)
    excess = len(grown.skipped) + sum(len(c.skipped) for c in others) - MAX_SKIPPED_KEYS
    out: dict[int, ReceiverChain] = {}
    for c in others:
        if excess <= 0:
            break
        drop = set(sorted(c.skipped)[:excess])
        excess -= len(drop)
        out[id(c)] = replace(c, skipped={i: mk for i, mk in c.skipped.items() if i not in drop})
    return out


def _bound_out(retired: Iterable[RetiredChain], new: GroupState) -> list[RetiredChain]:
    """``retired``, those kept as we went out (``ANY_EPOCH``) of a sender out of the group
    in ``new`` bounded as a leaver's: what it sent up to the op that took it out (nothing
    if no op did)."""
    out = []
    last: dict[bytes, int] = {}
    for r in retired:
        who = r.chain.identity
        if r.last_epoch == ANY_EPOCH and who not in new.roster.members:
            if who not in last:
                last[who] = removal_message_epoch(new.ops, who, 0)
            r = RetiredChain(r.chain, last[who], r.until_ms)
        out.append(r)
    return out


def _revive(
    chains: dict[bytes, tuple[ReceiverChain, ...]],
    by_installation: dict[bytes, tuple[bytes, ...]],
    chain: ReceiverChain,
) -> None:
    """Make a retired ``chain`` live again (as ``GroupState._install`` a new one: at most
    ``CHAINS_PER_INSTALLATION`` per installation, the newest by epoch)."""
    inst = chain.installation
    held = by_installation.get(inst, ())
    if chain.key_id in held:
        return
    epochs = {c.key_id: c.epoch for k in held for c in chains.get(k, ()) if c.installation == inst}
    epochs[chain.key_id] = chain.epoch
    ordered = sorted((*held, chain.key_id), key=lambda k: epochs.get(k, -1))
    keep = tuple(ordered[-CHAINS_PER_INSTALLATION:])
    if chain.key_id not in keep:
        return
    for old in ordered[:-CHAINS_PER_INSTALLATION]:
        _drop_chain(chains, old, inst)
    by_installation[inst] = keep
    chains[chain.key_id] = (*chains.get(chain.key_id, ()), chain)


def _drop_chain(chains: dict[bytes, tuple[ReceiverChain, ...]], key_id: bytes, inst: bytes) -> None:
    left = tuple(c for c in chains.get(key_id, ()) if c.installation != inst)
    if left:
        chains[key_id] = left
    else:
        chains.pop(key_id, None)


def vouched_by(ops: Mapping[bytes, Op], active: Directory, who: Iterable[bytes]) -> bool:
    """Is every op of ``ops`` signed by an installation that ``active`` no longer lists
    vouched for: made by one of ``who``, or ``who`` holds an admin who is one without the
    help of those ops (and of what builds on them)? For a welcome holding such ops. The
    create op is the root (its group id binds it to its creator) and is not questioned."""
    tainted: set[bytes] = set()
    revoked: list[Op] = []
    for o in sorted(ops.values(), key=lambda x: x.sort_key):
        if o.kind is not OpKind.CREATE and o.installation not in _devices(active, o.author):
            revoked.append(o)
            tainted.add(o.op_id)
        elif any(d in tainted for d in o.deps):
            tainted.add(o.op_id)
    return _vouched(revoked, tainted, ops.values(), set(who))


def _vouched(
    revoked: Iterable[Op], tainted: Collection[bytes], past: Iterable[Op], who: Collection[bytes]
) -> bool:
    """Ops of devices revoked since (``revoked``; ``tainted``: they and what builds on them)
    are vouched for by ``who``: their authors are among ``who``, or one of ``who`` is an
    admin in ``past`` without the tainted ops' help."""
    if all(o.author in who for o in revoked):
        return True
    base = fold(o for o in past if o.op_id not in tainted)[0]
    return base is not None and bool(base.admins & set(who))
