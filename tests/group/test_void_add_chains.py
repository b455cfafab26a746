"""A member whose add turned void is out at once: no retired chain, no window.

Found by the simulator's group-adversary scenario (docs/reliability.md, "Removed members who
fight back", finding 4). Members that applied an add and later learnt it is void (its
admin was removed concurrently, or the promotion that made its admin one turned void)
dropped the newcomer, but kept its sender chain as a retired chain — meant for a member
that really left or was removed, so that what it sent while a member still reads — with
the epoch they dropped it at. The newcomer, not told at once, kept writing with its state
and they showed what it sent for up to ``RETIRED_CHAIN_MS``. Its add never counted in the
group's converged view, so nothing it sends once a member knows that shows there (what was
shown before stays shown); a member really removed keeps its grace."""

from __future__ import annotations

import pytest

from chatcore.errors import GroupError

from . import World


def _void_add(w: World, via_promotion: bool) -> tuple[bytes, bytes, bytes]:
    """a creates with b, x and c, and makes x an admin; then, while a sees nothing of it,
    x adds f (or x promotes c and c adds f) and a removes x. b applies the add and reads
    f's first message before the removal reaches it; f gets nothing of the removal.
    Returns (b, f, f's first message)."""
    a, b, x, c, f = (w.person() for _ in range(5))
    w.create(a, [b, x, c])
    w.act(a, "promote", x)
    w.dev(a).online = False  # a removes x without knowing what x does meanwhile
    if via_promotion:
        w.act(x, "promote", c)
        w.act(c, "add_member", f)
    else:
        w.act(x, "add_member", f)
    sb = w.dev(b).state
    assert sb is not None and f in sb.members()
    first = w.send(f, b"hello from f")
    assert w.read(b, first) == b"hello from f"  # shown while f was a member in b's view
    w.dev(f).online = False  # f is not told (yet): it keeps writing with its state
    w.act(a, "remove_member", x)
    return b, f, first


@pytest.mark.parametrize("via_promotion", [False, True], ids=["removed-adder", "void-promotion"])
def test_a_member_whose_add_turned_void_is_not_read_afterwards(via_promotion: bool) -> None:
    w = World(43, clock=True)
    b, f, _first = _void_add(w, via_promotion)
    sb = w.dev(b).state
    assert sb is not None and f not in sb.members()  # the add is void at b now
    sf = w.dev(f).state
    assert sf is not None and sf.is_member  # f does not know
    later = w.send(f, b"still here?")
    with pytest.raises(GroupError):
        w.read(b, later)
    assert w.dev(b).state is sb  # refused: b's state unchanged
    w.now += 1_000  # and not only at the instant it dropped f
    with pytest.raises(GroupError):
        w.read(b, w.send(f, b"and now?"))


def test_a_member_removed_for_real_keeps_its_grace() -> None:
    """The same group, f added by a (whose add counts) and removed by a: what f sent before
    its removal, read after it, still shows (its chain is retired)."""
    w = World(43, clock=True)
    a, b, f = w.person(), w.person(), w.person()
    w.create(a, [b])
    w.act(a, "add_member", f)
    in_flight = w.send(f, b"sent before the removal")
    w.act(a, "remove_member", f)
    sb = w.dev(b).state
    assert sb is not None and f not in sb.members() and sb.retired
    assert w.read(b, in_flight) == b"sent before the removal"


def test_a_member_out_for_a_while_by_a_void_add_is_read_again_once_back() -> None:
    """x, an admin, added m; a removes x, and b reads that later. Meanwhile x signs a leave
    on the create op and hands it to b: with no removal of x known, it counts there, so x's
    add of m is void and m out in b's view. What m sent is not read while m is out there;
    once the removal comes (the leave counts for nothing, m is back), it is: m's chain was
    kept, not dropped."""
    from .test_dated_back_leaves import _dated_back_leave

    w = World(47, clock=True)
    a, b, x, m = (w.person() for _ in range(4))
    w.create(a, [b, x])
    w.act(a, "promote", x)
    w.act(x, "add_member", m)
    hello = w.send(m, b"hello from m")
    w.dev(b).online = False  # b reads the removal later
    w.act(a, "remove_member", x)
    sb = w.dev(b).state
    assert sb is not None
    sb, _ = sb.apply_op(_dated_back_leave(w, x, sb), w.directory, w.rng, w.now)
    w.dev(b).state = sb
    assert m not in sb.members()  # for now
    with pytest.raises(GroupError):
        w.read(b, hello)
    w.go_online(w.dev(b))
    sb = w.dev(b).state
    assert sb is not None and m in sb.members() and x not in sb.members()
    assert w.read(b, hello) == b"hello from m"


def test_a_client_holds_what_a_member_out_for_a_while_sent_and_shows_it_once_back() -> None:
    """The same case through GroupChat (what a client runs): m's message, refused while m is
    out of b's view, was not held (only "unknown sender key" and "stale or unknown group
    epoch" frames were), so the client moved past it for good and never showed it once m
    was back (the core reads it then; the simulator holds every refused frame)."""
    from chatcore.group import OpKind
    from chatcore.group.ops import make_op
    from chatcore.groupchat import encode_control
    from chatcore.payload import ContentType
    from tests.features import FWorld

    w = FWorld(47)
    a, b, x, m = (w.person() for _ in range(4))
    gid = w.group(a, [b, x])
    na, nb, nx, nm = w.node(a), w.node(b), w.node(x), w.node(m)
    w.route(na.groups.promote(gid, x), frm=na)
    w.route(nx.groups.add(gid, m), frm=nx)
    b_inbox = nb.dev.engine.inbox
    removal = na.groups.remove(gid, x)
    w.dropped.add(b_inbox)  # b reads the removal of x later
    w.deaf.add(nm.dev.inst)  # m too: it writes with its chain of before the removal
    w.route(removal, frm=na)
    w.dropped.clear()
    sb = nb.groups.load(gid)
    assert sb is not None and m in sb.members()
    create = next(o for o in sb.ops.values() if o.kind is OpKind.CREATE)
    leave = make_op(
        nx.groups._key, OpKind.LEAVE, group_id=gid, epoch=1, deps=(create.op_id,),
        author=x, created_ms=w.clock(),
    )  # fmt: skip
    with nb.dev.store.transaction():
        nb.groups.handle_control(x, nx.dev.inst, encode_control([leave.raw]))
    sb = nb.groups.load(gid)
    assert sb is not None and m not in sb.members()  # for now
    hello = nm.groups.send(gid, ContentType.TEXT, b"hello from m")
    w.route(hello.frames, frm=nm)
    assert any("turned void" in str(e) for e in nb.errors)
    assert not any(r.body == b"hello from m" for r in nb.got)  # not while m is out
    w.route([f for f in removal if f.subject == b_inbox], frm=na)
    sb = nb.groups.load(gid)
    assert sb is not None and m in sb.members() and x not in sb.members()
    assert [r.sender_identity for r in nb.got if r.body == b"hello from m"] == [m]
