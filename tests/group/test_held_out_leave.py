"""A member holding itself out (``GroupState.held_out``: back in its own log only on a
leave of the admin who removed it, that no one vouches for) leaves all the same: the leave
is valid on its heads (its fold has it in), and it goes out with the ops of its log the
members may lack, so that every member takes it in; then it is plainly out, asks no one,
and can be added back as anyone. See test_back_on_a_leave.py for holding out."""

from __future__ import annotations

from chatcore.group import KIND_WELCOME, GroupState, OpKind, Publish, SendTo
from chatcore.group.ops import decode_op, make_op
from chatcore.group.state import decode_welcome
from chatcore.groupchat import encode_control
from chatcore.payload import ContentType
from tests.features import FWorld

from . import World
from .test_back_on_a_leave import _apply
from .test_convergence import _view
from .test_dated_back_leaves import _dated_back_leave


def _held_out(seed: int) -> tuple[World, list[bytes], GroupState, bytes]:
    """a creates with b, x, m, n; promotes x; x removes n, then m; a removes x (m and n,
    no members, are not told). x signs a leave on the create op (voiding its removals in
    the log of whoever gets it without a's removal of x) and hands it to m and n: both hold
    themselves out. Returns the world, [a, b, x, m, n], m's state, x's leave."""
    w = World(seed)
    a, b, x, m, n = w.person(), w.person(), w.person(), w.person(), w.person()
    w.create(a, [b, x, m, n])
    w.act(a, "promote", x)
    s0 = w.dev(m).state
    assert s0 is not None
    w.act(x, "remove_member", n)
    w.dev(n).online = False
    w.act(x, "remove_member", m)
    w.dev(m).online = False
    w.act(a, "remove_member", x)
    leave = _dated_back_leave(w, x, s0)
    for who in (m, n):
        st = w.dev(who).state
        assert st is not None
        w.dev(who).state = _apply(w, st, [leave])
    sm = w.dev(m).state
    assert sm is not None and sm.held_out and not sm.is_member and m in sm.members()
    return w, [a, b, x, m, n], sm, leave


def test_a_member_held_out_can_leave_and_every_member_takes_its_leave() -> None:
    """m leaves while held out: it is plainly out (not held out, not among the members),
    and what it sends (the ops of its log below its leave that the members may lack, then
    the leave) applies at a and b without error; they had m out already: their view does
    not change, and they agree with each other (ops, message epoch)."""
    w, (a, b, x, m, _n), sm, _leave = _held_out(61)
    new, out = sm.leave(w.dev(m).key, w.directory, w.rng, w.now)
    assert not new.is_member and not new.held_out and m not in new.members()
    assert new.members() == sm.members() - {m}
    assert all(isinstance(o, Publish) for o in out)
    mine = decode_op(out[-1].payload)
    assert mine.kind is OpKind.LEAVE and mine.author == m and mine.op_id in new.ops
    assert GroupState.from_bytes(new.to_bytes()).held_out is False
    after = []
    for who in (a, b):
        st = w.dev(who).state
        assert st is not None
        got = _apply(w, st, [o.payload for o in out])  # (raises on an op that does not apply)
        assert mine.op_id in got.ops
        assert _view(got) == _view(st) and m not in got.members() and x not in got.members()
        after.append(got)
    sa, sb = after
    assert set(sa.ops) == set(sb.ops) and sa.epoch == sb.epoch and _view(sa) == _view(sb)


def test_a_held_out_members_leave_vouches_for_nothing() -> None:
    """m's leave builds on x's dated-back leave (it must: without it m is out in the leave's
    past). n, whom x removed too and who holds itself out on the same leave, gets m's log
    with its leave: m was a member right after x removed n, but x removed m too (its doubt
    is n's), so n still holds itself out, it does not take itself for a member for good."""
    w, (_a, _b, _x, m, n), sm, _leave = _held_out(63)
    left, _out = sm.leave(w.dev(m).key, w.directory, w.rng, w.now)
    sn = w.dev(n).state
    assert sn is not None and sn.held_out
    sn, _, rejected = sn.apply_ops(left.op_log(), w.directory, w.rng, w.now)  # all of m's
    assert rejected == [] and set(sn.ops) == set(left.ops) and m not in sn.members()
    assert sn.held_out and not sn.is_member


def test_a_member_that_left_held_out_is_added_back_as_anyone() -> None:
    """After its leave, a's add of m makes m a member again (from a's welcome merged into
    its state, as a client does), with the same view as a; so does an add while m is still
    held out."""
    w, (a, _b, _x, m, _n), sm, _leave = _held_out(65)
    left, out = sm.leave(w.dev(m).key, w.directory, w.rng, w.now)
    for before, first in ((left, [o.payload for o in out]), (sm, [])):
        sa = w.dev(a).state
        assert sa is not None
        sa = _apply(w, sa, first)
        sa, added = sa.add_member(m, w.dev(a).key, w.directory, w.rng, w.now)
        assert m in sa.members()
        welcome = next(
            o.payload for o in added if isinstance(o, SendTo) and o.payload[0] == KIND_WELCOME
        )
        back, _out, rejected = before.apply_ops(
            decode_welcome(welcome)[1], w.directory, w.rng, w.now
        )
        assert rejected == [] and back.is_member and not back.held_out
        assert back.members() == sa.members() and back.admins() == sa.admins()


def _held_out_node(seed: int) -> tuple[FWorld, bytes, list[bytes]]:
    """As ``_held_out``, with clients (``GroupChat``): m has two devices; x's dated-back
    leave reaches both, and n's device, as x sends it (a control item)."""
    w = FWorld(seed)
    a, b, x = w.person(), w.person(), w.person()
    m, n = w.person(2), w.person()
    gid = w.group(a, [b, x, m, n])
    na, nx = w.node(a), w.node(x)
    w.route(na.groups.promote(gid, x), frm=na)
    s0 = w.node(m).groups.load(gid)
    assert s0 is not None
    w.route(nx.groups.remove(gid, n), frm=nx)
    w.route(nx.groups.remove(gid, m), frm=nx)
    w.route(na.groups.remove(gid, x), frm=na)
    create = next(o for o in s0.ops.values() if o.kind is OpKind.CREATE)
    leave = make_op(
        nx.groups._key, OpKind.LEAVE, group_id=gid, epoch=1, deps=(create.op_id,),
        author=x, created_ms=w.clock(),
    ).raw  # fmt: skip
    for node in (w.node(m), w.node(m, 1), w.node(n)):
        with node.dev.store.transaction():
            node.groups.handle_control(x, w.dev(x).inst, encode_control([leave]))
        st = node.groups.load(gid)
        assert st is not None and st.held_out
    return w, gid, [a, b, x, m, n]


def test_a_client_held_out_leaves_the_group() -> None:
    """``GroupChat.leave`` while held out (as ``Client.group_change(.., "leave")`` runs it):
    no longer refused; m's devices are plainly out (the group shown as left: not a member,
    not held out, "left the group" in its history), a and b take the leave without an
    error (nothing changes for them, nothing is shown: they had m out), agree, and write
    on; m asks no admin any more, whatever x sends it."""
    w, gid, (a, b, x, m, n) = _held_out_node(67)
    nm = w.node(m)
    assert nm.groups._ask_if_back(gid) != []  # (what it asks as it comes to hold itself out)
    shown = {p: len(w.dev(p).store.history(gid, 100)) for p in (a, b)}
    frames = nm.groups.leave(gid)
    w.route(frames, frm=nm)
    assert {p: len(w.dev(p).store.history(gid, 100)) for p in (a, b)} == shown  # no notice
    for dev in (0, 1):
        info = w.node(m, dev).groups.info(gid)
        assert not info.is_member and not info.held_out and m not in info.members
    texts = [s.body.decode() for s in nm.dev.store.history(gid, 50)]
    assert any("left the group" in t for t in texts)
    states = [w.node(p).groups.load(gid) for p in (a, b)]
    assert all(s is not None for s in states)
    sa, sb = states
    assert sa is not None and sb is not None
    assert set(sa.ops) == set(sb.ops) and sa.epoch == sb.epoch
    assert m not in sa.members() and sa.members() == sb.members()
    assert all(not w.node(p).errors for p in (a, b, x, n))
    assert w.node(n).groups.info(gid).held_out  # (m's leave, on x's, vouches for nothing)
    mine = next(o for o in sa.ops.values() if o.kind is OpKind.LEAVE and o.author == m)
    assert mine.op_id in w.node(m, 1).groups.load(gid).ops  # type: ignore[union-attr]
    na = w.node(a)
    w.route([na.groups.send(gid, ContentType.TEXT, b"on we go").frames[0]], frm=na)
    assert any(r.body == b"on we go" for r in w.node(b).got)
    leave = next(o for o in sa.ops.values() if o.kind is OpKind.LEAVE and o.author == x)
    again = make_op(
        w.node(x).groups._key, OpKind.LEAVE, group_id=gid, epoch=leave.epoch, deps=leave.deps,
        author=x, created_ms=w.clock() + 1,
    ).raw  # fmt: skip
    with nm.dev.store.transaction():
        _ev, asked = nm.groups.handle_control(x, w.dev(x).inst, encode_control([leave.raw, again]))
    assert asked == [] and nm.groups._ask_if_back(gid) == []


def test_a_client_held_out_is_added_back_and_deletes_the_conversation() -> None:
    """m, held out, deletes the group's conversation here (its history goes; the group stays
    known); then a adds m back (a plain add: m never left): m is a member with a's view,
    sends, and b reads it."""
    w, gid, (a, b, _x, m, _n) = _held_out_node(69)
    nm, na = w.node(m), w.node(a)
    assert nm.dev.store.history(gid, 50) != []
    assert nm.f.delete_conversation(gid) > 0
    assert nm.dev.store.history(gid, 50) == []
    assert nm.groups.info(gid).held_out
    w.route(na.groups.add(gid, m), frm=na)
    info = nm.groups.info(gid)
    assert info.is_member and not info.held_out
    sa = na.groups.load(gid)
    assert sa is not None and info.members == sa.members()
    w.route([nm.groups.send(gid, ContentType.TEXT, b"back").frames[0]], frm=nm)
    assert any(r.body == b"back" for r in w.node(b).got)
