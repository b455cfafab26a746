"""Concurrent membership changes converge whatever the delivery order."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcore.errors import ChatCoreError, GroupError
from chatcore.group import GroupState, Op, OpKind, decode_op
from chatcore.group.ops import make_op

from . import World

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["add_member", "remove_member", "promote", "rename", "leave"]),
        st.integers(0, 7),
    ),
    max_size=4,
)


def _setup() -> tuple[World, list[bytes]]:
    w = World(11)
    people = [w.person(2 if i == 2 else 1) for i in range(8)]
    a, b, c, d, e = people[:5]
    w.create(a, [b, c, d, e])
    w.act(a, "promote", b)
    return w, people


def _make(w: World, who: bytes, state: GroupState, actions: list[tuple[str, int]],
          people: list[bytes]) -> tuple[GroupState, list[bytes]]:  # fmt: skip
    ops = []
    key = w.dev(who).key
    for method, n in actions:
        args: tuple[object, ...] = (
            () if method == "leave" else (f"name{n}",) if method == "rename" else (people[n],)
        )
        try:
            state, out = getattr(state, method)(*args, key, w.directory, w.rng, w.now)
        except GroupError:
            continue
        ops.append(out[0].payload)
    return state, ops


def _deliver(w: World, state: GroupState, ops: list[bytes]) -> GroupState:
    """Apply one at a time in the given order, retrying what needs earlier ops (an engine)."""
    todo = list(ops)
    while todo:
        retry = []
        for raw in todo:
            try:
                state, _ = state.apply_op(raw, w.directory, w.rng)
            except GroupError as err:
                if "replayed" not in str(err):
                    retry.append(raw)
        if len(retry) == len(todo):
            break
        todo = retry
    return state


def _view(s: GroupState) -> tuple[object, ...]:
    """What members must agree on. Their logs may differ in ops that count for nothing
    (made concurrent with their author's removal: set aside where the removal came first)."""
    return (s.members(), s.admins(), s.name)


def _assert_rosters_remembered_right(s: GroupState) -> None:
    """The roster remembered after each op (``state._ROSTER_AFTER``, used to check ops
    with one dependency in linear time) is the fold of that op's causal past and the op."""
    from chatcore.group import state as state_mod
    from chatcore.group.roster import fold

    assert s.roster == fold(s.ops.values())[0]  # (the shortcut for one op on our heads)
    assert s.heads == state_mod._heads(s.ops)
    checked = 0
    for op in s.ops.values():
        remembered = state_mod._ROSTER_AFTER.get(op.op_id)
        if remembered is not None:
            past = state_mod._ancestors(s.ops, op)
            assert remembered == fold([*(s.ops[p] for p in past), op])[0]
            checked += 1
    assert checked or len(s.ops) == 1


def _seen(s: GroupState) -> frozenset[bytes]:
    return frozenset((*s.ops, *(c.op_id for c in s.candidates)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS, ACTIONS, st.randoms(use_true_random=False))
def test_two_admins_partitioned_converge_in_any_order(
    acts_a: list[tuple[str, int]], acts_b: list[tuple[str, int]], rnd: object
) -> None:
    w, people = _setup()
    a, b, c = people[:3]
    sa0, sb0, sc0 = (w.dev(x).state for x in (a, b, c))
    assert sa0 is not None and sb0 is not None and sc0 is not None
    sa, ops_a = _make(w, a, sa0, acts_a, people)
    sb, ops_b = _make(w, b, sb0, acts_b, people)
    everything = ops_a + ops_b
    ends = []
    for _ in range(4):  # several observers, each in its own order
        order = list(everything)
        rnd.shuffle(order)  # type: ignore[attr-defined]
        ends.append(_deliver(w, sc0, order))
    ends.append(_deliver(w, sa, ops_b))
    ends.append(_deliver(w, sb, ops_a))
    batch, _out, _rej = sc0.apply_ops(reversed(everything), w.directory, w.rng)
    ends.append(batch)
    views = [_view(e) for e in ends]
    assert all(v == views[0] for v in views), views
    for e in ends:
        _assert_rosters_remembered_right(e)
    wanted = {decode_op(o).op_id for o in everything}
    assert all(wanted <= _seen(e) for e in ends)  # every honest op accepted or set aside


def test_ops_concurrent_with_their_authors_removal_are_void() -> None:
    """a (creator) removes admin b while b, not knowing, adds f at the same epoch: the
    removal wins in every delivery order, f is not added."""
    w, people = _setup()
    a, b, c = people[:3]
    f = people[5]
    sa0, sb0, sc0 = (w.dev(x).state for x in (a, b, c))
    assert sa0 is not None and sb0 is not None and sc0 is not None
    _, (rm_b,) = _make(w, a, sa0, [("remove_member", 1)], people)
    _, (add_f,) = _make(w, b, sb0, [("add_member", 5)], people)
    assert decode_op(add_f).epoch == decode_op(rm_b).epoch
    for order in ([add_f, rm_b], [rm_b, add_f]):
        s = _deliver(w, sc0, order)
        assert b not in s.members() and f not in s.members() and s.admins() == {a}
        # b's op counts for nothing: kept aside when the removal came first
        assert decode_op(add_f).op_id in {*s.ops, *(o.op_id for o in s.candidates)}


def test_a_junior_admin_cannot_remove_a_senior_one() -> None:
    """Admins rank by when they became admin (the creator first); an admin removes only
    admins made after them, so two admins removing each other cannot both fail or both
    win: the senior's removal stands, in any order."""
    w, people = _setup()
    a, b, c = people[:3]
    sa0, sb0, sc0 = (w.dev(x).state for x in (a, b, c))
    assert sa0 is not None and sb0 is not None and sc0 is not None
    with pytest.raises(GroupError, match="only admins made after them"):
        sb0.remove_member(a, w.dev(b).key, w.directory, w.rng, w.now)
    # forged anyway (signed by b's installation): refused on arrival
    forged = make_op(
        w.dev(b).key, OpKind.REMOVE, group_id=sb0.group_id, epoch=len(sb0.ops),
        deps=sb0.heads, author=b, created_ms=w.now, target=a,
    ).raw  # fmt: skip
    with pytest.raises(GroupError, match="only admins made after them"):
        sc0.apply_op(forged, w.directory, w.rng)
    _, (rm_b,) = _make(w, a, sa0, [("remove_member", 1)], people)
    s = _deliver(w, sc0, [rm_b])
    assert s.admins() == {a} and b not in s.members()


def _removed_admin() -> tuple[World, list[bytes], GroupState]:
    """a promotes b, adds d, then removes b; returns b's view from while it was admin."""
    w, people = _setup()
    a, b = people[:2]
    sb_then = w.dev(b).state
    assert sb_then is not None
    w.act(a, "add_member", people[6])
    w.act(a, "remove_member", b)
    return w, people, sb_then


def _backdated(w: World, who: bytes, view: GroupState, kind: OpKind, target: bytes) -> bytes:
    return make_op(
        w.dev(who).key, kind, group_id=view.group_id, epoch=len(view.ops), deps=view.heads,
        author=who, created_ms=w.now, target=target,
    ).raw  # fmt: skip


def test_a_removed_admin_cannot_act_by_dating_ops_back() -> None:
    """After its removal, b signs ops on dependencies from when it was admin (they sort
    before the removal): an accomplice it adds is no member anywhere, a member it
    removes stays; everyone accepts the ops alike (so the logs stay the same)."""
    w, people, sb_then = _removed_admin()
    a, b, c, d, e = people[:5]
    z = w.person()
    ops = [_backdated(w, b, sb_then, OpKind.ADD, z), _backdated(w, b, sb_then, OpKind.REMOVE, d)]
    ops.append(_backdated(w, b, sb_then, OpKind.PROMOTE, e))
    views = []
    for who in (a, c, d):
        s = w.dev(who).state
        assert s is not None
        for order in (ops, ops[::-1]):
            t = _deliver(w, s, order)
            views.append((t.members(), t.admins(), frozenset(t.ops)))
    assert len(set(views)) == 1
    members, admins, _ops = views[0]
    assert z not in members and b not in members and d in members and admins == {a}


def _leaves(w: World, m: bytes, view: GroupState, n: int) -> list[Op]:
    """``n`` leaves by ``m``, all on the dependencies of ``view``."""
    return [
        make_op(
            w.dev(m).key, OpKind.LEAVE, group_id=view.group_id, epoch=len(view.ops),
            deps=view.heads, author=m, created_ms=w.now + i,
        )
        for i in range(n)
    ]  # fmt: skip


def test_concurrent_leaves_cannot_split_the_log() -> None:
    """A member signs 20 leaves on the same dependencies; members get them in different
    orders and all accept the same ops (acceptance depends only on the op and its past;
    removals always enter the log). A later removal by the admin applies everywhere, so the
    removed member reads nothing sent after it."""
    w = World(5)
    a, q, m, x = (w.person() for _ in range(4))
    w.create(a, [q, m, x])
    sm = w.dev(m).state
    assert sm is not None
    leaves = [op.raw for op in _leaves(w, m, sm, 20)]
    for who, order in ((a, leaves), (q, leaves[::-1]), (x, leaves[5:] + leaves[:5])):
        d = w.dev(who)
        for raw in order:
            assert d.state is not None
            d.state, out = d.state.apply_op(raw, w.directory, w.rng)
            w.route(d.inst, out)
    sa, sq = w.dev(a).state, w.dev(q).state
    assert sa is not None and sq is not None
    assert set(sa.ops) == set(sq.ops) and sa.members() == sq.members() == {a, q, x}
    x_old = w.dev(x).state
    assert x_old is not None
    w.act(a, "remove_member", x)
    sq = w.dev(q).state
    assert sq is not None and x not in sq.members()
    _sq, frame = sq.encrypt(b"after x left")
    with pytest.raises(ChatCoreError):
        x_old.decrypt(frame, w.now)


def test_a_void_removal_counts_the_same_wherever_it_arrives() -> None:
    """a removes admin b (R); b, not seeing it, removes admin c (O); c, seeing neither,
    adds f (P). Members getting O, R, P or R, O, P end with the same roster: O enters
    every log (removals are never set aside); it is void (b was removed concurrently by R,
    which counts), so it voids nothing and P counts everywhere (before, every removal
    counted, void or not, and P was void)."""
    w = World(21)
    a, b, c, d, f = (w.person() for _ in range(5))
    w.create(a, [b, c, d])
    w.act(a, "promote", b)
    w.act(a, "promote", c)
    base = {p: w.dev(p).state for p in (a, b, c, d)}

    def made(who: bytes, method: str, target: bytes) -> bytes:
        st = base[who]
        assert st is not None
        return getattr(st, method)(target, w.dev(who).key, w.directory, w.rng, w.now)[1][0].payload  # type: ignore[no-any-return]

    r, o, p = made(a, "remove_member", b), made(b, "remove_member", c), made(c, "add_member", f)
    ends = []
    for order in ([o, r, p], [r, o, p], [p, o, r], [r, p, o]):
        sd = base[d]
        assert sd is not None
        ends.append(_deliver(w, sd, order))
    batch = base[d]
    assert batch is not None
    ends.append(batch.apply_ops([o, r, p], w.directory, w.rng)[0])
    assert len({_view(e) for e in ends}) == 1
    assert f in ends[0].members() and c in ends[0].admins() and b not in ends[0].members()


def test_a_removed_admin_cannot_bring_in_its_own_void_ops() -> None:
    """After its removal, b dates adds back; members that know the removal set them aside,
    and b's own op built on them is set aside too: none enters the log."""
    w, people, sb_then = _removed_admin()
    a, b, c = people[:3]
    z1, z2 = w.person(), w.person()
    adds = [_backdated(w, b, sb_then, OpKind.ADD, z) for z in (z1, z2)]
    sc = w.dev(c).state
    assert sc is not None
    before = set(sc.ops)
    for raw in adds:
        sc, _ = sc.apply_op(raw, w.directory, w.rng)
    ids = tuple(sorted(decode_op(r).op_id for r in adds))
    on_them = make_op(
        w.dev(b).key, OpKind.PROMOTE, group_id=sc.group_id, epoch=len(sb_then.ops) + 2,
        deps=ids, author=b, created_ms=w.now, target=z1,
    )  # fmt: skip
    sc, _ = sc.apply_op(on_them.raw, w.directory, w.rng)
    assert set(sc.ops) == before and len(sc.candidates) == 3
    assert z1 not in sc.members() and sc.admins() == {a}
    again = GroupState.from_bytes(sc.to_bytes())
    assert again.candidates == sc.candidates


def test_an_op_signed_by_a_device_revoked_since_comes_in_with_the_ops_built_on_it() -> None:
    """a's first device adds z, and is revoked before c gets the op: c sets it aside (with
    the past devices known) and accepts it with b's next op, which depends on it."""
    w = World(12)
    a, b, c, z = w.person(2), w.person(), w.person(), w.person()
    w.create(a, [b, c])
    w.act(a, "promote", b)
    sa, sb, sc = (w.dev(p).state for p in (a, b, c))
    assert sa is not None and sb is not None and sc is not None
    add = sa.add_member(z, w.dev(a).key, w.directory, w.rng, w.now)[1][0].payload
    sb, _ = sb.apply_op(add, w.directory, w.rng)
    lost = w.dev(a).inst
    past = {p: list(insts) for p, insts in w.directory.items()}
    w.directory[a].remove(lost)  # revoked
    with pytest.raises(GroupError, match="not signed by an installation of its author"):
        sc.apply_op(add, w.directory, w.rng)
    sc, _ = sc.apply_op(add, w.directory, w.rng, signers=past)
    assert decode_op(add).op_id not in sc.ops and len(sc.candidates) == 1
    sb, out = sb.rename("later", w.dev(b).key, w.directory, w.rng, w.now)
    sc, _ = sc.apply_op(out[0].payload, w.directory, w.rng, signers=past)
    assert set(sc.ops) == set(sb.ops) and sc.members() == sb.members() and z in sc.members()


def test_an_op_signed_by_a_device_revoked_since_comes_in_vouched_by_an_admin() -> None:
    """a's first device adds z and is revoked before c gets the op. Nobody builds on the add,
    but a's other (active) device relays it from its log (anti-entropy): c takes it at once.
    Relayed by anyone else (GroupChat decides who vouches) it stays aside."""
    w = World(13)
    a, b, c, z = w.person(2), w.person(), w.person(), w.person()
    w.create(a, [b, c])
    sa, sc = w.dev(a).state, w.dev(c).state
    assert sa is not None and sc is not None
    add = sa.add_member(z, w.dev(a).key, w.directory, w.rng, w.now)[1][0].payload
    past = {p: list(insts) for p, insts in w.directory.items()}
    w.directory[a].remove(w.dev(a).inst)  # revoked
    aside, _ = sc.apply_op(add, w.directory, w.rng, signers=past)  # not vouched for
    assert decode_op(add).op_id not in aside.ops
    sc, _ = sc.apply_op(add, w.directory, w.rng, signers=past, vouched=True)
    assert decode_op(add).op_id in sc.ops and z in sc.members()


def test_void_ops_held_by_one_side_of_a_partition_do_not_set_its_epoch_apart() -> None:
    """a, an admin, adds 12 people on one side of a partition while s, senior, removes a on
    the other. m (a's side) got a's adds before the removal, so holds them in its log
    (void once the removal comes); n got the removal first and keeps them aside. Both end
    with the same members, and must tag messages with the same epoch: when the void ops
    counted, m's epoch ran 12 ahead of n's for good, past the epochs either accepts, so
    neither read the other's messages."""
    w = World(41)
    s, a, m, n = (w.person() for _ in range(4))
    w.create(s, [a, m, n])
    w.act(s, "promote", a)
    side1, side2 = [w.dev(a), w.dev(m)], [w.dev(s), w.dev(n)]
    for d in side1:
        d.online = False
    w.act(s, "remove_member", a)  # side 2 only; side 1 gets it later
    held = {d.inst: d.inbox for d in side1}
    for d in side1:
        d.online, d.inbox = True, []
    for d in side2:
        d.online = False
    for _ in range(12):
        w.act(a, "add_member", w.person())  # side 1 only, before a learns of its removal
    for d in side1:  # the partition heals
        d.online = False
        d.inbox = held[d.inst] + d.inbox
    for d in (*side2, w.dev(m)):
        w.go_online(d)
    sm, sn = w.dev(m).state, w.dev(n).state
    assert sm is not None and sn is not None
    assert sm.members() == sn.members() and a not in sm.members()
    assert len(sm.ops) == len(sn.ops) + 12  # m holds the void adds, n keeps them aside
    assert sm.epoch == sn.epoch
    assert w.read(n, w.send(m, b"from m's side")) == b"from m's side"
    assert w.read(m, w.send(n, b"from n's side")) == b"from n's side"
    again = GroupState.from_bytes(sm.to_bytes())
    assert again.epoch == sm.epoch


def test_a_member_with_a_stolen_revoked_key_cannot_make_itself_admin() -> None:
    """t holds a's revoked first device. It signs "a promotes t" with it (dated back) and
    builds on it with its own active device (an add). Only the forged op's author or an
    admin building on it vouches for it: members refuse t's add and t stays a member."""
    w = World(51)
    a, t, b, s = w.person(2), w.person(), w.person(), w.person()
    w.create(a, [t, b])
    sb = w.dev(b).state
    assert sb is not None
    past = {p: list(insts) for p, insts in w.directory.items()}
    stolen = w.dev(a)
    w.directory[a].remove(stolen.inst)  # revoked; t has its key
    forged = make_op(
        stolen.key, OpKind.PROMOTE, group_id=sb.group_id, epoch=len(sb.ops),
        deps=sb.heads, author=a, created_ms=w.now, target=t,
    )  # fmt: skip
    add = make_op(
        w.dev(t).key, OpKind.ADD, group_id=sb.group_id, epoch=len(sb.ops) + 1,
        deps=(forged.op_id,), author=t, created_ms=w.now, target=s,
    )  # fmt: skip
    sb, _ = sb.apply_op(forged.raw, w.directory, w.rng, signers=past)
    assert forged.op_id not in sb.ops  # aside
    with pytest.raises(GroupError, match="vouches"):
        sb.apply_op(add.raw, w.directory, w.rng, signers=past)
    assert t not in sb.admins() and s not in sb.members()


def test_a_leave_signed_by_a_device_revoked_since_comes_in_with_an_admins_later_op() -> None:
    """b leaves while c is offline, then b's device is revoked (rotated or lost). a adds z on
    top. c gets both later: the leave waits aside (it is not refused), and comes in with a's
    add, so c ends with a's log (before, c refused the leave and a's later ops for good)."""
    w = World(52)
    a, b, c, z = w.person(), w.person(), w.person(), w.person()
    w.create(a, [b, c])
    sa, sb, sc = (w.dev(p).state for p in (a, b, c))
    assert sa is not None and sb is not None and sc is not None
    leave = sb.leave(w.dev(b).key, w.directory, w.rng, w.now)[1][0].payload
    sa, _ = sa.apply_op(leave, w.directory, w.rng)
    past = {p: list(insts) for p, insts in w.directory.items()}
    w.directory[b].remove(w.dev(b).inst)
    sa, out = sa.add_member(z, w.dev(a).key, w.directory, w.rng, w.now)
    add = out[0].payload
    sc, _ = sc.apply_op(leave, w.directory, w.rng, signers=past)  # a relays it: aside
    assert decode_op(leave).op_id not in sc.ops
    sc, _ = sc.apply_op(add, w.directory, w.rng, signers=past)
    assert set(sc.ops) == set(sa.ops) and sc.members() == sa.members()
    assert b not in sc.members() and z in sc.members()


def test_a_removal_signed_by_a_device_revoked_since_is_not_vouched_by_its_author() -> None:
    """A removal decides what is void, so its acceptance must not depend on who relays it:
    one signed by a device revoked since stays aside even from its author's other device
    (a removed admin's back-dated removal, handed to one member only, split the group)."""
    w = World(53)
    a, r, c, m = w.person(), w.person(2), w.person(), w.person()
    w.create(a, [r, c, m])
    w.act(a, "promote", r)
    sm = w.dev(m).state
    sr = w.dev(r).state
    assert sm is not None and sr is not None
    rm = sr.remove_member(c, w.dev(r).key, w.directory, w.rng, w.now)[1][0].payload
    past = {p: list(insts) for p, insts in w.directory.items()}
    w.directory[r].remove(w.dev(r).inst)
    sm2, _ = sm.apply_op(rm, w.directory, w.rng, signers=past, vouched=True)
    assert decode_op(rm).op_id not in sm2.ops and c in sm2.members()


def _phone_adds_then_b_is_promoted(
    seed: int,
) -> tuple[World, tuple[bytes, ...], tuple[GroupState, ...], tuple[bytes, bytes]]:
    """a (two devices) makes a group with b and c and promotes b; a's phone (which got the
    promotion) adds z, and b gets both ops. (world, (a, b, c, z), states of a, b, c,
    (promotion, add)); c has neither op yet."""
    w = World(seed)
    a, b, c, z = w.person(2), w.person(), w.person(), w.person()
    w.create(a, [b, c])
    sa, sb, sc = (w.dev(p).state for p in (a, b, c))
    phone = w.dev(a, 1)
    sp = phone.state
    assert sa is not None and sb is not None and sc is not None and sp is not None
    sa, out = sa.promote(b, w.dev(a).key, w.directory, w.rng, w.now)
    promote = out[0].payload
    sp, _ = sp.apply_op(promote, w.directory, w.rng)
    add = sp.add_member(z, phone.key, w.directory, w.rng, w.now)[1][0].payload
    sb, _ = sb.apply_op(promote, w.directory, w.rng)
    sb, _ = sb.apply_op(add, w.directory, w.rng)
    return w, (a, b, c, z), (sa, sb, sc), (promote, add)


def test_another_admin_building_on_a_revoked_devices_op_vouches_for_it() -> None:
    """a's phone adds z and is lost (revoked) before c gets the add; b, an admin without
    the add's help, builds on it: c takes both (the add alone stays aside)."""
    w, (a, b, _c, z), (_sa, sb, sc), (promote, add) = _phone_adds_then_b_is_promoted(54)
    past = {p: list(insts) for p, insts in w.directory.items()}
    w.directory[a].remove(w.dev(a, 1).inst)
    sb, out = sb.rename("later", w.dev(b).key, w.directory, w.rng, w.now)
    sc, _ = sc.apply_op(promote, w.directory, w.rng, signers=past)
    sc, _ = sc.apply_op(add, w.directory, w.rng, signers=past)
    assert decode_op(add).op_id not in sc.ops  # aside
    sc, _ = sc.apply_op(out[0].payload, w.directory, w.rng, signers=past)
    assert set(sc.ops) == set(sb.ops) and z in sc.members()


def test_a_welcome_with_a_revoked_devices_ops_needs_their_author_or_an_admin() -> None:
    """t, a plain member holding a's revoked device, races a's welcome to newcomer y with the
    log plus a forged "a promotes t". GroupChat takes ops of revoked devices in a welcome
    only if their author or an admin (without their help) sent it, or they are the
    newcomer's own (its restored identity's old devices)."""
    from chatcore.group.state import encode_welcome, vouched_by

    w = World(78)
    a, t, b, y = w.person(2), w.person(), w.person(), w.person()
    w.create(a, [t, b])
    stolen, other = w.dev(a, 0), w.dev(a, 1)
    past = {p: list(i) for p, i in w.directory.items()}
    w.directory[a].remove(stolen.inst)
    sa, st = other.state, w.dev(t).state
    assert sa is not None and st is not None
    sa, out = sa.add_member(y, other.key, w.directory, w.rng, w.now)
    st, _ = st.apply_op(out[0].payload, w.directory, w.rng)
    forged = make_op(
        stolen.key, OpKind.PROMOTE, group_id=st.group_id, epoch=len(st.ops),
        deps=st.heads, author=a, created_ms=w.now, target=t,
    )  # fmt: skip
    wel = encode_welcome(st.group_id, [*st.ops.values(), forged])
    sy, _ = GroupState.join(wel, y, w.dev(y).inst, w.directory, w.rng, past)
    assert t in sy.admins()  # what the state alone would take
    assert not vouched_by(sy.ops, w.directory, (t, y))  # from t: refused
    assert vouched_by(sy.ops, w.directory, (a, y))  # from a: a vouches for its own
    assert vouched_by(sy.ops, w.directory, (b, a))  # a newcomer device of a's own identity
    assert vouched_by(sa.ops, w.directory, (t, y))  # nothing revoked-signed: nothing to vouch


def test_a_void_op_still_vouches_for_the_revoked_devices_op_it_builds_on() -> None:
    """a's phone adds z and is lost (revoked) before c gets the add; b, an admin, builds on
    it while a's other device removes b. b's op is void (concurrent with b's removal), but
    b was an admin when it vouched: c takes the add whichever of b's op and the removal
    comes first (before, c kept the add aside if the removal came first, and stayed apart
    from the members that got b's op first)."""
    w, (a, b, _c, z), (sa, sb, sc), (promote, add) = _phone_adds_then_b_is_promoted(55)
    sa, out = sa.remove_member(b, w.dev(a).key, w.directory, w.rng, w.now)  # a has no add
    removal = out[0].payload
    past = {p: list(insts) for p, insts in w.directory.items()}
    w.directory[a].remove(w.dev(a, 1).inst)
    sb, out = sb.rename("later", w.dev(b).key, w.directory, w.rng, w.now)
    vouch = out[0].payload
    views = []
    for order in ((vouch, removal), (removal, vouch)):
        s = sc
        for raw in (promote, add, *order):
            s, _ = s.apply_op(raw, w.directory, w.rng, signers=past)
        views.append(_view(s))
        assert decode_op(add).op_id in s.ops, order == (vouch, removal)
        assert z in s.members() and b not in s.members()
    assert views[0] == views[1]
