"""Leaves dated back by a member removed since (found by a review of group bad input; not
fixed: expected failures, strict, so that a fix shows). A leave always counts and always
enters the log ("removal wins" for the leaver's concurrent ops, and setting removals aside
split the logs), and a removed member can sign a leave on any past in which it was a
member: the create op, say."""

from __future__ import annotations

import pytest

from chatcore.errors import GroupError
from chatcore.group import GroupState, OpKind
from chatcore.group.consts import MAX_OPS
from chatcore.group.ops import make_op

from . import World


def _dated_back_leave(w: World, who: bytes, st: GroupState, at: int = 0) -> bytes:
    create = next(o for o in st.ops.values() if o.kind is OpKind.CREATE)
    return make_op(
        w.dev(who).key, OpKind.LEAVE, group_id=st.group_id, epoch=1, deps=(create.op_id,),
        author=who, created_ms=w.now + at,
    ).raw  # fmt: skip


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="a removed admin's dated-back leave voids its adds"
)
def test_a_removed_admin_cannot_undo_its_past_adds_with_a_dated_back_leave() -> None:
    """x, an admin, added y; a removed x. x signs a leave on the create op: concurrent with
    x's add of y, it voids it, and y is out of the group at every member."""
    w = World(5)
    a, b, x, y = w.person(), w.person(), w.person(), w.person()
    w.create(a, [b, x])
    w.act(a, "promote", x)
    w.act(x, "add_member", y)
    w.act(a, "remove_member", x)
    sb = w.dev(b).state
    assert sb is not None and y in sb.members()
    try:
        sb, _ = sb.apply_op(_dated_back_leave(w, x, sb), w.directory, w.rng, w.now)
    except GroupError:
        pass  # refused: fine too
    assert y in sb.members()


@pytest.mark.xfail(
    strict=True, raises=GroupError, reason="a removed member's dated-back leaves fill the log"
)
def test_a_removed_member_cannot_fill_the_op_log_with_dated_back_leaves() -> None:
    """x, removed, signs MAX_OPS leaves on the create op (about 830 KB): they all enter
    every member's log, and no admin can change the group's membership any more."""
    w = World(5)
    a, b, x = w.person(), w.person(), w.person()
    w.create(a, [b, x])
    w.act(a, "remove_member", x)
    sa = w.dev(a).state
    assert sa is not None
    leaves = [_dated_back_leave(w, x, sa, i) for i in range(MAX_OPS)]
    sa, _out, _rejected = sa.apply_ops(leaves, w.directory, w.rng, w.now)
    w.dev(a).state = sa
    w.act(a, "add_member", w.person())  # GroupError: the group's op log is full
