"""A removed admin cannot void the ops of admins junior to it by dating removals back."""

from __future__ import annotations

from itertools import permutations

from chatcore.group import GroupState, OpKind, decode_op
from chatcore.group.ops import make_op

from . import World
from .test_convergence import _deliver


def _backdated(w: World, who: bytes, view: GroupState, kind: OpKind, target: bytes) -> bytes:
    """An op by ``who`` on the dependencies of ``view`` (an old state of it)."""
    return make_op(
        w.dev(who).key, kind, group_id=view.group_id, epoch=len(view.ops), deps=view.heads,
        author=who, created_ms=w.now, target=target,
    ).raw  # fmt: skip


def _state(w: World, who: bytes) -> GroupState:
    s = w.dev(who).state
    assert s is not None
    return s


def _op(
    s: GroupState, method: str, w: World, who: bytes, *args: object
) -> tuple[GroupState, bytes]:
    s, out = getattr(s, method)(*args, w.dev(who).key, w.directory, w.rng, w.now)
    return s, out[0].payload


def test_a_removed_admin_cannot_void_a_junior_admins_later_ops() -> None:
    """s (creator) promotes a, then j (a is senior to j), then removes a. a, removed, signs
    a removal of j on dependencies from when it was admin (concurrent with its own removal,
    so void). That void removal must not void what j did after that point: j's add of z,
    its promotion of m and its removal of x stay effective at every member, in any order."""
    w = World(31)
    s, a, j, m, x, o = (w.person() for _ in range(6))
    w.create(s, [a, j, m, x, o])
    w.act(s, "promote", a)
    w.act(s, "promote", j)
    a_then, o_then = _state(w, a), _state(w, o)
    z = w.person()
    sj = _state(w, j)
    sj, add_z = _op(sj, "add_member", w, j, z)  # before j sees a's removal
    ss, rm_a = _op(_state(w, s), "remove_member", w, s, a)
    sj, _ = sj.apply_op(rm_a, w.directory, w.rng)
    sj, promote_m = _op(sj, "promote", w, j, m)  # after it
    sj, rm_x = _op(sj, "remove_member", w, j, x)
    dated_back = _backdated(w, a, a_then, OpKind.REMOVE, j)
    assert decode_op(dated_back).epoch <= decode_op(rm_a).epoch  # concurrent with it
    everything = [add_z, rm_a, promote_m, rm_x, dated_back]
    ends = [_deliver(w, o_then, list(order)) for order in permutations(everything)]
    ends.append(o_then.apply_ops(everything, w.directory, w.rng)[0])
    ends.append(o_then.apply_ops(everything[::-1], w.directory, w.rng)[0])
    ends.append(_deliver(w, sj, [dated_back]))
    ends.append(_deliver(w, ss, [add_z, promote_m, rm_x, dated_back]))
    views = {(e.members(), e.admins(), e.name) for e in ends}
    assert len(views) == 1, views
    members, admins, _name = views.pop()
    assert a not in members and x not in members  # a's removal and j's removal of x stand
    assert j in members and z in members  # j stays; its add counts
    assert admins == {s, j, m}  # its promotion counts
    # j's ops count everywhere, so every member holds them in its log, not aside
    j_ops = {decode_op(op).op_id for op in (add_z, promote_m, rm_x)}
    assert all(j_ops <= set(e.ops) for e in ends)
    assert len({frozenset(e.ops) for e in ends}) == 1


def test_an_op_set_aside_for_a_removal_that_stops_counting_comes_back() -> None:
    """j adds z while, unknown to it, s removes a and a (dating it back) removes j. Member p
    gets j's add first, then a's removal of j, then s's removal of a; member q gets a's
    removal of j first, so it sets j's add aside (its author is removed concurrently, as
    far as q knows), then the add, then s's removal of a — which makes a's removal of j
    void and stop counting. Both must end with j's add in their log and z a member."""
    w = World(32)
    s, a, j, p, q = (w.person() for _ in range(5))
    w.create(s, [a, j, p, q])
    w.act(s, "promote", a)
    w.act(s, "promote", j)
    a_then, p0, q0 = _state(w, a), _state(w, p), _state(w, q)
    z = w.person()
    _, add_z = _op(_state(w, j), "add_member", w, j, z)
    _, rm_a = _op(_state(w, s), "remove_member", w, s, a)
    dated_back = _backdated(w, a, a_then, OpKind.REMOVE, j)
    sp = _deliver(w, p0, [add_z, dated_back, rm_a])
    sq = q0
    for raw in (dated_back, add_z):
        sq, _ = sq.apply_op(raw, w.directory, w.rng)
    assert decode_op(add_z).op_id in {c.op_id for c in sq.candidates}  # aside, for now
    sq, _ = sq.apply_op(rm_a, w.directory, w.rng)
    assert sp.members() == sq.members() and sp.admins() == sq.admins()
    assert set(sp.ops) == set(sq.ops)
    assert z in sq.members() and j in sq.members() and a not in sq.members()
    assert not sq.candidates
    again = GroupState.from_bytes(sq.to_bytes())
    assert again.members() == sq.members() and set(again.ops) == set(sq.ops)


def test_admins_made_concurrently_the_senior_ones_removal_stands() -> None:
    """c promotes s while, concurrently, b promotes a: the two promotions sort one before the
    other, so one of s and a is the senior admin once both are known. The senior removes
    the junior; the junior, removed, dates back a removal of the senior to a past where
    the senior was not admin yet (allowed there: a plain member). The two removals attack
    each other (a cycle); the senior's must stand — the junior is out, the senior stays
    admin and what it did next counts — at every member, in any order."""
    w = World(33)
    c, b, s, a, o = (w.person() for _ in range(5))
    w.create(c, [b, s, a, o])
    w.act(c, "promote", b)
    base = {x: _state(w, x) for x in (c, b, s, a, o)}
    _, p_s = _op(base[c], "promote", w, c, s)
    _, p_a = _op(base[b], "promote", w, b, a)
    first, second = sorted((p_s, p_a), key=lambda raw: decode_op(raw).sort_key)
    senior, junior = (s, a) if first == p_s else (a, s)
    assert decode_op(first).epoch == decode_op(second).epoch  # concurrent
    merged = _deliver(w, base[senior], [p_s, p_a])
    assert merged.admins() == {c, b, s, a}
    merged, rm_junior = _op(merged, "remove_member", w, senior, junior)
    z = w.person()
    merged, add_z = _op(merged, "add_member", w, senior, z)
    junior_then = _deliver(w, base[junior], [p_a if junior == a else p_s])
    assert senior not in junior_then.admins()
    dated_back = _backdated(w, junior, junior_then, OpKind.REMOVE, senior)
    everything = [p_s, p_a, rm_junior, add_z, dated_back]
    ends = [_deliver(w, base[o], list(order)) for order in permutations(everything)]
    ends.append(base[o].apply_ops(everything, w.directory, w.rng)[0])
    ends.append(_deliver(w, merged, [dated_back]))
    views = {(e.members(), e.admins()) for e in ends}
    assert len(views) == 1, views
    members, admins = views.pop()
    assert junior not in members and senior in admins and z in members


def test_a_void_promotion_does_not_decide_a_cycle() -> None:
    """A promotion that counts for nothing (its author, e, is removed concurrently) is in the
    log at a member that got it first and set aside at one that got e's removal first; the
    seniority that settles a cycle of removals must not depend on it, or those two members
    end with different rosters. (Found by review: b and c, made admin on concurrent
    branches, remove each other; e's void promotion of c came earliest.)"""
    w = World(101)
    a, b, c, d, e, m = (w.person() for _ in range(6))
    w.create(a, [b, c, d, e, m])
    (root,) = _state(w, a).ops.values()
    made: dict[bytes, object] = {root.op_id: root}

    def op(who: bytes, dep: object, kind: OpKind, target: bytes = b"", name: str = ""):  # type: ignore[no-untyped-def]
        past, stack = set(), [dep.op_id]  # type: ignore[attr-defined]
        while stack:
            x = stack.pop()
            if x not in past:
                past.add(x)
                stack.extend(made[x].deps)  # type: ignore[attr-defined]
        o = make_op(w.dev(who).key, kind, group_id=root.group_id, epoch=len(past),
                    deps=(dep.op_id,), author=who, created_ms=w.now, target=target,  # type: ignore[attr-defined]
                    name=name)  # fmt: skip
        made[o.op_id] = o
        return o

    p_d = op(a, root, OpKind.PROMOTE, d)
    p_e = op(a, p_d, OpKind.PROMOTE, e)
    a3 = op(a, p_e, OpKind.RENAME, name="x")
    p_b = op(a, a3, OpKind.PROMOTE, b)
    d3 = op(d, p_e, OpKind.RENAME, name="y")
    d4 = op(d, d3, OpKind.RENAME, name="z")
    p_c = op(d, d4, OpKind.PROMOTE, c)
    void_p_c = op(e, p_e, OpKind.PROMOTE, c)  # e's, concurrent with e's removal: void
    rm_e = op(a, p_b, OpKind.REMOVE, e)
    rm_c = op(b, p_b, OpKind.REMOVE, c)
    rm_b = op(c, p_c, OpKind.REMOVE, b)
    base = [o.raw for o in (p_d, p_e, a3, p_b, d3, d4, p_c)]  # type: ignore[attr-defined]
    m0 = _state(w, m)
    x = _deliver(w, m0, [*base, rm_e.raw, void_p_c.raw, rm_c.raw, rm_b.raw])  # type: ignore[attr-defined]
    y = _deliver(w, m0, [*base, void_p_c.raw, rm_e.raw, rm_c.raw, rm_b.raw])  # type: ignore[attr-defined]
    z = m0.apply_ops([*base, void_p_c.raw, rm_e.raw, rm_c.raw, rm_b.raw], w.directory, w.rng)[0]  # type: ignore[attr-defined]
    assert void_p_c.op_id in y.ops and void_p_c.op_id not in x.ops  # type: ignore[attr-defined]
    assert (x.members(), x.admins()) == (y.members(), y.admins()) == (z.members(), z.admins())


def test_a_promotion_by_a_device_revoked_since_does_not_decide_a_cycle() -> None:
    """P and Q both promote x, concurrently, while c promotes y; x sees P's promotion and
    c's, y sees only c's, and each removes the other (a cycle, settled by seniority). Q's
    device is revoked before member n gets Q's promotion, so n keeps it aside while member
    m, which got it earlier, holds it in its log. x's seniority must not depend on it (it is
    not in the causal past of anything x did), or m and n end with different rosters. (The
    residual edge the sixth session left: seniority was read from the latest promotion of
    each admin in the whole log.)"""
    w = World(34)
    c, p, q, x, y, m, n = (w.person() for _ in range(7))
    w.create(c, [p, q, x, y, m, n])
    w.act(c, "promote", p)
    w.act(c, "promote", q)
    base = {who: _state(w, who) for who in (c, p, q, x, y, m, n)}
    (head,) = base[c].heads
    epoch = len(base[c].ops)

    def promote(by: bytes, target: bytes, k: int) -> bytes:
        return make_op(
            w.dev(by).key, OpKind.PROMOTE, group_id=base[c].group_id, epoch=epoch,
            deps=(head,), author=by, created_ms=w.now + k, target=target,
        ).raw  # fmt: skip

    # x's two concurrent promotions must sort either side of y's (retry the timestamps)
    p_y = promote(c, y, 0)
    key_y = decode_op(p_y).sort_key
    k = 1
    while True:
        p_x, q_x = promote(p, x, k), promote(q, x, k + 1)
        keys = sorted((decode_op(p_x).sort_key, decode_op(q_x).sort_key))
        if keys[0] < key_y < keys[1]:
            break
        k += 2
    if decode_op(q_x).sort_key < decode_op(p_x).sort_key:  # P's is x's earlier promotion
        p, q, p_x, q_x = q, p, q_x, p_x
    sx = _deliver(w, base[x], [p_x, p_y])
    assert x in sx.admins() and y in sx.admins()
    _, rm_y = _op(sx, "remove_member", w, x, y)  # x is senior to y in x's view
    sy = _deliver(w, base[y], [p_y])
    _, rm_x = _op(sy, "remove_member", w, y, x)  # x is a plain member in y's view
    # m gets everything while q's device is active
    sm = _deliver(w, base[m], [p_x, p_y, q_x, rm_y, rm_x])
    assert decode_op(q_x).op_id in sm.ops
    # then q's device is revoked; n gets q's promotion only afterwards
    past = {who: list(insts) for who, insts in w.directory.items()}
    w.directory[q] = []
    sn = base[n]
    for raw in (p_x, p_y, rm_y, rm_x, q_x):
        sn, _ = sn.apply_op(raw, w.directory, w.rng, signers=past)
    assert decode_op(q_x).op_id not in sn.ops  # aside: signed by a device revoked since
    assert (sm.members(), sm.admins()) == (sn.members(), sn.admins())
    assert y not in sn.members() and x in sn.admins()  # x, senior in its own view, stands
