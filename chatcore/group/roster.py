"""The membership fold: a deterministic function from a set of ops to a roster."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from chatcore.group.ops import Op, OpKind


@dataclass(frozen=True, slots=True)
class Roster:
    """Who is in the group, who administers it, and its name."""

    name: str
    members: frozenset[bytes]
    admins: frozenset[bytes]
    #: the admins, earliest first (the creator, then in the order they were made admin):
    #: an admin can remove only admins made after them
    seniority: tuple[bytes, ...] = ()


EMPTY = Roster("", frozenset(), frozenset())


def effect(roster: Roster | None, op: Op) -> Roster | None:
    """The roster after ``op``, or None when the op is void at this point of the fold
    (author lacks the role, or the op would change nothing)."""
    after = _apply(roster, op)
    return None if isinstance(after, str) else after


def refusal(roster: Roster | None, op: Op) -> str | None:
    """Why ``op`` is void at this point of the fold, in plain words; None if it counts."""
    after = _apply(roster, op)
    return after if isinstance(after, str) else None


_VERB = {OpKind.ADD: "add", OpKind.REMOVE: "remove", OpKind.PROMOTE: "promote"}


def _apply(roster: Roster | None, op: Op) -> Roster | str:
    """The one rule book: the roster after ``op``, or the reason it is void."""
    if op.kind is OpKind.CREATE:
        if roster is not None:
            return "the group already exists"
        if op.author not in op.members:
            return "the creator must be a member"
        return Roster(op.name, frozenset(op.members), frozenset((op.author,)), (op.author,))
    if roster is None:
        return "the group does not exist yet"
    members, admins, seniority = roster.members, roster.admins, roster.seniority
    if op.kind is OpKind.LEAVE:
        if op.author not in members:
            return "only a member can leave"
        return _without(roster, op.author)
    if op.author not in admins:
        if op.kind is OpKind.RENAME:
            return "only an admin can rename the group"
        return f"only an admin can {_VERB[op.kind]} members"
    if op.kind is OpKind.ADD:
        if op.target in members:
            return "already a member of this group"
        return Roster(roster.name, members | {op.target}, admins, seniority)
    if op.kind is OpKind.REMOVE:
        if op.target not in members:
            return "not a member of this group"
        if op.target in admins and seniority.index(op.target) < seniority.index(op.author):
            return "an admin can remove only admins made after them"
        return _without(roster, op.target)
    if op.kind is OpKind.PROMOTE:
        if op.target not in members:
            return "not a member of this group"
        if op.target in admins:
            return "already an admin"
        return Roster(roster.name, members, admins | {op.target}, (*seniority, op.target))
    if op.kind is OpKind.RENAME:
        if op.name == roster.name:
            return "the group already has this name"
        return Roster(op.name, members, admins, seniority)
    return "unknown kind of op"  # pragma: no cover - OpKind is closed


def _without(roster: Roster, who: bytes) -> Roster:
    seniority = tuple(a for a in roster.seniority if a != who)
    return _fix_admins(
        Roster(roster.name, roster.members - {who}, roster.admins - {who}, seniority)
    )


def _fix_admins(roster: Roster) -> Roster:
    # A group whose last admin left or was removed is not frozen: the remaining member
    # with the smallest identity id becomes admin (deterministic, so every member agrees).
    if roster.admins or not roster.members:
        return roster
    first = min(roster.members)
    return Roster(roster.name, roster.members, frozenset((first,)), (first,))


def fold(ops: Iterable[Op]) -> tuple[Roster | None, frozenset[bytes]]:
    """Fold ``ops`` in (epoch, op id) order. Returns the roster (None before a create)
    and the ids of the ops that took effect. Ops void by :func:`concurrent_with_removal`
    are skipped."""
    roster, effective, _uncounted = _fold(ops)
    return roster, effective


def fold_void(ops: Iterable[Op]) -> tuple[Roster | None, frozenset[bytes]]:
    """As :func:`fold`, but with the ids of the ops that count for nothing (see
    :func:`uncounted`): left out of the epoch messages are tagged with."""
    roster, _effective, void = _fold(ops)
    return roster, void


def fold_all(ops: Iterable[Op]) -> tuple[Roster | None, frozenset[bytes], frozenset[bytes]]:
    """(:func:`fold`'s roster and effective ops, :func:`fold_void`'s ops that count for
    nothing) in one fold."""
    return _fold(ops)


def uncounted(ordered: list[Op]) -> frozenset[bytes]:
    """Ids of the ops that count for nothing: those void by :func:`concurrent_with_removal`
    (a member may hold them in its log or aside, depending on the order they came in) and
    the leaves that do not count (:func:`counting_removals`: a removed member's leaves
    dated back; one that came before the removal is in the log, one that changes nothing
    waits aside, and only the members it was sent to hold it unless an admin re-offers it,
    so counted, a removed member sending leaves to one member moved that member's message
    epoch away from everyone else's for good).
    ``ordered`` in fold order."""
    void, late = _void_and_late(ordered)
    return void | frozenset(late)


def _fold(ops: Iterable[Op]) -> tuple[Roster | None, frozenset[bytes], frozenset[bytes]]:
    ordered = sorted(ops, key=lambda o: o.sort_key)
    void, late = _void_and_late(ordered)
    # leaves that do not count (a removal of their author that counts is concurrent) take
    # their author out not at the place their claimed epoch gives them (a removed member's
    # leave dated back before its own adds, removals, promotions and renames made them take
    # no effect) but right after the first such removal (see _void_and_late)
    after_op: dict[bytes, list[Op]] = {}
    for op in ordered:
        if op.op_id in late:
            after_op.setdefault(late[op.op_id], []).append(op)
    roster: Roster | None = None
    effective: set[bytes] = set()
    for step in ordered:
        if step.op_id not in void and step.op_id not in late:
            after = effect(roster, step)
            if after is not None:
                roster = after
                effective.add(step.op_id)
        for leave in after_op.get(step.op_id, ()):
            after = effect(roster, leave)
            if after is not None:
                roster = after
                effective.add(leave.op_id)
    return roster, frozenset(effective), void | frozenset(late)


def taken_out(op: Op) -> bytes | None:
    """The identity ``op`` takes out of the group (its target, or a leaver), if any."""
    if op.kind is OpKind.REMOVE:
        return op.target
    if op.kind is OpKind.LEAVE:
        return op.author
    return None


def _causal_pasts(ordered: list[Op]) -> list[int]:
    """Bit j of entry i is set when ``ordered[j]`` is in the causal past of ``ordered[i]``
    (``ordered`` in fold order, so every op comes after its dependencies)."""
    position = {o.op_id: i for i, o in enumerate(ordered)}
    past: list[int] = []
    for o in ordered:
        bits = 0
        for d in o.deps:
            j = position.get(d)
            if j is not None:
                bits |= past[j] | (1 << j)
        past.append(bits)
    return past


def _concurrent(past: list[int], i: int, j: int) -> bool:
    """Neither of ``ordered[i]`` and ``ordered[j]`` saw the other (see :func:`_causal_pasts`)."""
    return i != j and not (past[j] >> i) & 1 and not (past[i] >> j) & 1


def _taken_out_by(ordered: list[Op]) -> dict[bytes, list[int]]:
    """identity -> positions (in ``ordered``) of the ops taking it out."""
    out_by: dict[bytes, list[int]] = {}
    for i, o in enumerate(ordered):
        who = taken_out(o)
        if who is not None:
            out_by.setdefault(who, []).append(i)
    return out_by


def _removed_by(ordered: list[Op], out_by: dict[bytes, list[int]]) -> dict[bytes, list[int]]:
    """As ``out_by`` (:func:`_taken_out_by`), the removals only."""
    return {
        who: [j for j in positions if ordered[j].kind is OpKind.REMOVE]
        for who, positions in out_by.items()
    }


def _counting(
    ordered: list[Op], past: list[int], out_by: dict[bytes, list[int]]
) -> dict[bytes, list[int]]:
    """identity -> positions (in ``ordered``) of the ops taking it out that count for
    voiding: see :func:`counting_removals`."""

    # the attack graph: a removal is attacked by each op that takes its author out
    # concurrently, a leave by each removal of its author concurrent with it (a removed
    # member can sign a leave on any past in which it was a member: dated back before its
    # own adds, removals, promotions or renames, it voided them; an honest leave concurrent
    # with a removal of its author loses nothing by it, the removal takes it out)
    attackers: dict[int, list[int]] = {}
    attacks: dict[int, list[int]] = {}
    removed_by = _removed_by(ordered, out_by)
    for i, o in enumerate(ordered):
        if o.kind is OpKind.REMOVE or o.kind is OpKind.LEAVE:
            ways = out_by if o.kind is OpKind.REMOVE else removed_by
            found = [j for j in ways.get(o.author, ()) if _concurrent(past, i, j)]
            attackers[i] = found
            for j in found:
                attacks.setdefault(j, []).append(i)
    # its grounded labelling (unique, whatever the order): IN when every attacker is OUT,
    # OUT when some attacker is IN
    left = {i: len(found) for i, found in attackers.items()}
    status: dict[int, bool] = {}  # True: IN, False: OUT

    def settle(todo: list[int]) -> None:
        while todo:
            j = todo.pop()
            for i in attacks.get(j, ()):
                if i in status:
                    continue
                status[i] = False  # attacked by an IN op
                for k in attacks.get(i, ()):
                    left[k] -= 1
                    if left[k] == 0 and k not in status:
                        status[k] = True
                        todo.append(k)

    todo = sorted(j for positions in out_by.values() for j in positions if left.get(j, 0) == 0)
    for j in todo:
        status[j] = True
    settle(todo)
    # What is left attacks itself in cycles: removals by admins made admin concurrently
    # (each could remove the other in some causal past). Seniority decides, as it does
    # between admins who know of each other: the removal whose author became admin first
    # in fold order stands (IN), then the labelling goes on from it. When a removal's
    # author became admin is read from the op that made it admin in the removal's own
    # causal past (the latest there: a re-promoted admin ranks anew), so it is the same
    # at every member holding the removal: a promotion nothing depends on may be in the
    # log at one member and set aside at another (signed by a device revoked since).
    # Promotions concurrent with an op taking their author out are left out too: a
    # removed admin could date one back to sway the cycle.
    undecided = [i for i in attackers if i not in status]
    if undecided:
        made_admin: dict[bytes, list[int]] = {}  # identity -> positions, ascending
        for i, o in enumerate(ordered):
            if o.kind is OpKind.CREATE:
                made_admin.setdefault(o.author, []).append(i)
            elif o.kind is OpKind.PROMOTE and not any(
                _concurrent(past, i, j) for j in out_by.get(o.author, ())
            ):
                made_admin.setdefault(o.target, []).append(i)

        def rank(i: int) -> tuple[int, int]:
            if ordered[i].kind is OpKind.LEAVE:  # decided by the removals, never first
                return (len(ordered) + 1, i)
            seen = [k for k in made_admin.get(ordered[i].author, ()) if (past[i] >> k) & 1]
            return (seen[-1] if seen else len(ordered), i)

        ranks = {i: rank(i) for i in undecided}
        for best in sorted(undecided, key=ranks.__getitem__):
            if best not in status:
                status[best] = True
                settle([best])
    return {
        who: [j for j in positions if status.get(j) is not False]
        for who, positions in out_by.items()
    }


def _attacked(ordered: list[Op], out_by: dict[bytes, list[int]]) -> bool:
    """May some op taking someone out not count (see :func:`counting_removals`)? Only if a
    removal's author, or a leaver, was removed: else every such op counts."""
    removed = {o.target for o in ordered if o.kind is OpKind.REMOVE}
    return any(
        (o.kind is OpKind.REMOVE and o.author in out_by)
        or (o.kind is OpKind.LEAVE and o.author in removed)
        for o in ordered
    )


def counting_removals(ops: Iterable[Op]) -> frozenset[bytes]:
    """Ids of the ops that take someone out of the group and count for voiding.

    A removal counts unless it is itself void because its author was taken out,
    concurrently, by an op that counts (so a removed admin's removals, dated back, void
    nothing); a leave counts unless a removal of its author that counts is concurrent with
    it (so a removed member's leave, dated back, voids nothing: its author is out anyway).
    The removals and leaves form an attack graph (a removal is attacked by every op taking
    its author out concurrently, a leave by every removal of its author concurrent with
    it), and one counts unless its grounded label is OUT (some attacker is IN). The
    grounded labelling is unique and does not depend on any order, so every member with
    the same ops agrees. Removals attacking each other in a cycle (each author could remove the
    other in its own causal past: admins promoted concurrently) are settled by seniority: the
    removal by the admin made admin first (in fold order, by the promotion in that removal's own
    causal past) stands, and the labelling goes on from it; so a junior removed by a senior
    cannot stay by dating back a removal of the senior to before the senior's promotion.
    """
    ordered = sorted(ops, key=lambda o: o.sort_key)
    out_by = _taken_out_by(ordered)
    if _attacked(ordered, out_by):
        out_by = _counting(ordered, _causal_pasts(ordered), out_by)
    return frozenset(ordered[j].op_id for positions in out_by.values() for j in positions)


def concurrent_with_removal(ordered: list[Op]) -> frozenset[bytes]:
    """Ids of the ops void because they are concurrent with a removal of their author.

    An op whose author is taken out of the group (removed, or by its own leave) by an op
    that neither saw it nor was seen by it, and that counts (:func:`counting_removals`),
    counts for nothing: the author may have made it after learning of the removal, choosing
    old dependencies to date it back (no scheme without a central sequencer can tell that
    from a real partition), so removal wins. Leaves are never void (they only take their
    own author out), but one concurrent with a removal of its author that counts voids
    nothing (a removed member dating a leave back before its own past ops undid them). A
    removal that is void this way because its author was taken out by a removal that
    counts voids nothing itself, so a removed admin cannot void the later ops of admins
    junior to it by dating a removal of them back. Every accepted op was
    allowed in its own causal past, so this depends on the set of ops only. ``ordered``
    is in fold order, in which every op comes after its dependencies.
    """
    return _void_and_late(ordered)[0]


def _void_and_late(ordered: list[Op]) -> tuple[frozenset[bytes], dict[bytes, bytes]]:
    """(:func:`concurrent_with_removal`, the leaves that do not count —
    :func:`counting_removals` — each with the op it is applied right after) for ``ordered``
    in fold order.

    Such a leave is applied right after the first removal of its author (in fold order)
    that is concurrent with it and counts: the author's ops that are not void are in that
    removal's causal past (the others are concurrent with it), so they come before and take
    effect; where the removal took its author out the leave changes nothing, and it takes
    its author out only where the removal did not (its author was no admin there in the
    fold). An admin who saw the removal and adds the leaver back comes after both. The place
    depends on the set of ops only, not on which ops saw the leave: an op that saw it but no
    such removal (a removed member handing its dated-back leave to an admin who lags) does
    not move it, nor does whether an admin who saw the removal built on the leave (a member
    may set such a leave aside: ``state.GroupState._admit``). Adding an op that saw every
    other (one made on our heads) moves none, so the roster after it is the roster its
    author saw with it applied — what ``state._ROSTER_AFTER`` remembers and the op on our
    heads shortcuts to."""
    out_by = _taken_out_by(ordered)
    suspects = [
        i for i, o in enumerate(ordered) if o.kind is not OpKind.LEAVE and o.author in out_by
    ]
    if not suspects and not _attacked(ordered, out_by):
        return frozenset(), {}
    past = _causal_pasts(ordered)
    counting = _counting(ordered, past, out_by)
    void: set[bytes] = set()
    for i in suspects:
        o = ordered[i]
        if any(_concurrent(past, i, j) for j in counting[o.author]):
            void.add(o.op_id)
    late: dict[bytes, bytes] = {}
    removed_by = _removed_by(ordered, out_by)
    for who, positions in out_by.items():
        counts = set(counting[who])
        for j in positions:
            if ordered[j].kind is OpKind.LEAVE and j not in counts:
                # attacked by a removal that counts (IN), so there is one
                first = next(k for k in removed_by[who] if k in counts and _concurrent(past, j, k))
                late[ordered[j].op_id] = ordered[first].op_id
    return frozenset(void), late


def causal_past(ops: Mapping[bytes, Op], start: Iterable[bytes]) -> set[bytes]:
    """The ids in ``start`` and everything below them, within ``ops`` (ids not in ``ops``,
    e.g. dependencies we lack, are skipped)."""
    seen: set[bytes] = set()
    stack = [d for d in start if d in ops]
    while stack:
        oid = stack.pop()
        if oid not in seen:
            seen.add(oid)
            stack.extend(d for d in ops[oid].deps if d in ops)
    return seen


def back_on_leaves_only(ops: Collection[Op], me: bytes, roster: Roster | None) -> bool:
    """Are we (``me``) in ``roster`` — the fold of ``ops`` — only because leaves that no
    one vouches for count: leaves of admins who removed us, each voiding its author's own
    removal of us (concurrent with it)? A removed admin can sign a leave dated back before
    its removal of us and send it to us alone: the members took us out and then removed it
    (nobody sends us that removal, we are no member), so the leave counts in our log only,
    and we would take ourselves for a member for good, writing to nobody. The op set does
    not tell it from a leave the admin's other device made, not knowing of the removal
    (honest: every member then has us in), so such a leave is vouched for once someone who
    was a member right after one of those removals of us (not its author, not us) builds
    an op on it; until then we hold ourselves out, and ask (``GroupChat``). Not someone
    such a leave holds in as it holds us (a remover took it out concurrently with its
    leave): it can tell no more than we can, yet it may leave, building on the leave. A
    function of the op set and ``me``, like the fold."""
    if roster is None or me not in roster.members:
        return False
    removers = {o.author for o in ops if o.kind is OpKind.REMOVE and o.target == me}
    if not removers or not any(o.kind is OpKind.LEAVE and o.author in removers for o in ops):
        return False
    by_id = {o.op_id: o for o in ops}

    # the ops that count for nothing (void, or leaves that do not count), but for removals,
    # play no part here unless an op that counts builds on them: one member holds such an
    # op in its log (it came first), another aside (``state.GroupState._admit``,
    # ``state._leave_changes_nothing``), and an op that builds on it brings it in at every
    # member; using them made the answer depend on the order the ops came in (a void re-add
    # of us, counted once the leaves were left out, had us in; a leave set aside where it
    # came late vouched)
    loose = {
        i
        for i in uncounted(sorted(ops, key=lambda o: o.sort_key))
        if by_id[i].kind is not OpKind.REMOVE
    }
    if loose:
        loose -= causal_past(by_id, (d for o in ops if o.op_id not in loose for d in o.deps))
    counted = [o for o in ops if o.op_id not in loose]
    removals = [o for o in counted if o.kind is OpKind.REMOVE and o.target == me]
    removers = {o.author for o in removals}
    leaves = [o for o in counted if o.kind is OpKind.LEAVE and o.author in removers]
    if not leaves:
        return False

    witnesses: set[bytes] = set()  # members right after a removal of us
    for r in removals:
        after = fold([*(by_id[p] for p in causal_past(by_id, r.deps)), r])[0]
        if after is not None:
            witnesses |= after.members
    # not someone a remover took out concurrently with its leave, as it did us: that leave
    # holds it in, in its log, as it does us (it may hold itself out, or leave: its leave
    # builds on that leave, and it knows no more of it than we do)
    pasts = {lv.op_id: causal_past(by_id, [lv.op_id]) for lv in leaves}
    doubtful: set[bytes] = set()
    removals_by_removers = [o for o in counted if o.kind is OpKind.REMOVE and o.author in removers]
    for o in removals_by_removers:
        if o.target not in doubtful:
            theirs = [lv for lv in leaves if lv.author == o.author]
            past = causal_past(by_id, [o.op_id])
            if any(o.op_id not in pasts[lv.op_id] and lv.op_id not in past for lv in theirs):
                doubtful.add(o.target)
    witnesses -= removers | doubtful | {me}
    vouched = causal_past(by_id, (d for o in counted if o.author in witnesses for d in o.deps))
    unvouched = {o.op_id for o in leaves if o.op_id not in vouched}
    if not unvouched:
        return False
    without = fold(o for o in counted if o.op_id not in unvouched)[0]
    return without is None or me not in without.members
