"""The membership fold: a deterministic function from a set of ops to a roster."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chatcore.group.ops import Op, OpKind


@dataclass(frozen=True, slots=True)
class Roster:
    """Who is in the group, who administers it, and its name."""

    name: str
    members: frozenset[bytes]
    admins: frozenset[bytes]


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
        return Roster(op.name, frozenset(op.members), frozenset((op.author,)))
    if roster is None:
        return "the group does not exist yet"
    members, admins = roster.members, roster.admins
    if op.kind is OpKind.LEAVE:
        if op.author not in members:
            return "only a member can leave"
        return _fix_admins(Roster(roster.name, members - {op.author}, admins - {op.author}))
    if op.author not in admins:
        if op.kind is OpKind.RENAME:
            return "only an admin can rename the group"
        return f"only an admin can {_VERB[op.kind]} members"
    if op.kind is OpKind.ADD:
        if op.target in members:
            return "already a member of this group"
        return Roster(roster.name, members | {op.target}, admins)
    if op.kind is OpKind.REMOVE:
        if op.target not in members:
            return "not a member of this group"
        return _fix_admins(Roster(roster.name, members - {op.target}, admins - {op.target}))
    if op.kind is OpKind.PROMOTE:
        if op.target not in members:
            return "not a member of this group"
        if op.target in admins:
            return "already an admin"
        return Roster(roster.name, members, admins | {op.target})
    if op.kind is OpKind.RENAME:
        if op.name == roster.name:
            return "the group already has this name"
        return Roster(op.name, members, admins)
    return "unknown kind of op"  # pragma: no cover - OpKind is closed


def _fix_admins(roster: Roster) -> Roster:
    # A group whose last admin left or was removed is not frozen: the remaining member
    # with the smallest identity id becomes admin (deterministic, so every member agrees).
    if roster.admins or not roster.members:
        return roster
    return Roster(roster.name, roster.members, frozenset((min(roster.members),)))


def fold(ops: Iterable[Op]) -> tuple[Roster | None, frozenset[bytes]]:
    """Fold ``ops`` in (epoch, op id) order. Returns the roster (None before a create)
    and the ids of the ops that took effect."""
    roster: Roster | None = None
    effective: set[bytes] = set()
    for op in sorted(ops, key=lambda o: o.sort_key):
        after = effect(roster, op)
        if after is not None:
            roster = after
            effective.add(op.op_id)
    return roster, frozenset(effective)
