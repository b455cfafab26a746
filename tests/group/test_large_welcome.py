"""A long-lived group's op log outgrows one pairwise payload: its welcome goes in parts."""

from __future__ import annotations

import hashlib

import pytest

from chatcore.errors import GroupError, MalformedMessage
from chatcore.group.consts import KIND_WELCOME
from chatcore.groupchat import (
    _BODY_BUDGET,
    KIND_WELCOME_PART,
    MAX_CONTROL_ITEMS,
    decode_control,
    pack_control,
    welcome_parts,
)
from chatcore.payload import ContentType
from tests.engine import texts
from tests.features import FWorld


def _welcome(size: int, gid: bytes = b"\x07" * 32) -> bytes:
    return bytes((KIND_WELCOME,)) + gid + hashlib.shake_256(b"w").digest(size - 33)


def test_pack_control_keeps_every_body_under_the_cap_and_the_order() -> None:
    ops = [bytes((0x14,)) + bytes([i % 251]) * (200 + 37 * i) for i in range(120)]
    big = _welcome(3 * 60 * 1024 + 5)
    bodies = pack_control([ops[0], big, *ops[1:]])
    assert all(len(b) <= _BODY_BUDGET for b in bodies)
    items = [i for b in bodies for i in decode_control(b)]
    assert all(len(decode_control(b)) <= MAX_CONTROL_ITEMS for b in bodies)
    parts = [i for i in items if i[0] == KIND_WELCOME_PART]
    assert len(parts) == 4 and parts == welcome_parts(big)
    assert [i for i in items if i[0] != KIND_WELCOME_PART] == ops  # in order, none lost
    assert items.index(parts[0]) == 1


def test_welcome_parts_over_the_bound_are_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        welcome_parts(_welcome(64 * 60 * 1024 + 1))


def _churn(w: FWorld, admin: bytes, gid: bytes, extra: bytes, rounds: int) -> None:
    n = w.node(admin)
    for _ in range(rounds):
        w.route(n.groups.add(gid, extra), frm=n)
        w.route(n.groups.remove(gid, extra), frm=n)


def test_a_newcomer_joins_a_group_whose_log_outgrew_one_payload() -> None:
    w = FWorld()
    a, b, x, c = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b])
    _churn(w, a, gid, x, 160)  # 321 ops: about 80 KB of log
    assert len(w.node(a).groups.load(gid).welcome()) > _BODY_BUDGET  # type: ignore[union-attr]
    na = w.node(a)
    w.route(na.groups.add(gid, c), frm=na)
    st = w.node(c).groups.load(gid)
    assert st is not None and st.is_member and c in st.members()
    assert st.ops.keys() == w.node(a).groups.load(gid).ops.keys()  # type: ignore[union-attr]
    assert not w.dev(c).store.group_parts_from(w.dev(a).inst)
    s = w.f(b).send_group_message(gid, ContentType.TEXT, b"welcome, c")
    w.route(s.frames, frm=w.node(b))
    assert "welcome, c" in texts(w.dev(c).store, gid)


def test_bad_welcome_parts_are_refused_and_change_nothing() -> None:
    w = FWorld()
    a, b, x, c = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b])
    _churn(w, a, gid, x, 160)
    welcome = w.node(a).groups.load(gid).welcome()  # type: ignore[union-attr]
    parts = welcome_parts(welcome)
    nc = w.node(c)
    sender, inst = a, w.dev(a).inst
    # a part whose bytes were changed: the whole does not match its digest
    bad = parts[-1][:-1] + bytes((parts[-1][-1] ^ 1,))
    for p in parts[:-1]:
        assert nc.groups._apply_item(gid, sender, inst, p) == ([], [])
    with pytest.raises(MalformedMessage, match="do not make it up"):
        nc.groups._apply_item(gid, sender, inst, bad)
    assert nc.groups.load(gid) is None and nc.dev.store.group_parts_from(inst) == []
    # bad numbering
    for mangled in (parts[0][:65] + b"\x05\x02" + b"x", parts[0][:65] + b"\x00\x41" + b"x"):
        with pytest.raises(MalformedMessage):
            nc.groups._apply_item(gid, sender, inst, mangled)
    # parts from two senders are never mixed
    other = w.dev(b).inst
    for p in parts[:-1]:
        nc.groups._apply_item(gid, sender, inst, p)
    assert nc.groups._apply_item(gid, b, other, parts[-1]) == ([], [])
    assert nc.groups.load(gid) is None


def test_junk_parts_are_bounded_per_sender_and_refused_from_non_members() -> None:
    w = FWorld()
    a, b, x, c = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b])
    nc, inst = w.node(c), w.dev(x).inst
    for n in range(5):  # five never-finished welcomes from one installation of x
        junk = welcome_parts(_welcome(3 * 60 * 1024, gid=bytes([n]) * 32))
        for p in junk[:-1]:
            nc.groups._apply_item(bytes([n]) * 32, x, inst, p)
    kept = nc.dev.store.group_parts_from(inst)
    assert len({(g, h[33:65]) for _, g, h in kept}) == 2 and len(kept) == 4
    # b is a member of gid: parts for it from x, who is not, are refused
    nb = w.node(b)
    part = welcome_parts(_welcome(2 * 60 * 1024, gid=gid))[0]
    with pytest.raises(GroupError, match="non-member"):
        nb.groups._apply_item(gid, x, inst, part)
    assert nb.dev.store.group_parts_from(inst) == []


def test_a_welcome_part_sent_again_is_kept_once() -> None:
    """Parts are kept until their welcome is whole, only those of a sender's latest two
    welcomes; but the same part sent again was kept again, each time (60 KB a copy, up to
    the store's bound of 1,024 items from one installation: 61 MB instead of 7.7 MB)."""
    w = FWorld()
    x, c = w.person(), w.person()
    nc, inst = w.node(c), w.dev(x).inst
    gid = b"\x05" * 32
    parts = welcome_parts(_welcome(3 * 60 * 1024, gid=gid))
    for _ in range(20):
        assert nc.groups._apply_item(gid, x, inst, parts[0]) == ([], [])
    assert len(nc.dev.store.group_parts_from(inst)) == 1
    for p in parts[1:-1]:
        nc.groups._apply_item(gid, x, inst, p)
    with pytest.raises(MalformedMessage):  # whole now (junk: it does not decode)
        nc.groups._apply_item(gid, x, inst, parts[-1])
    assert nc.dev.store.group_parts_from(inst) == []


def test_a_welcome_too_costly_to_check_is_refused_early() -> None:
    """Ops that merge branches fold their whole causal past: a welcome whose merges sum to
    more than MAX_MERGE_WORK is refused before that work (and a forged op fails first)."""
    from chatcore.group import GroupState, OpKind
    from chatcore.group import consts as gconsts
    from chatcore.group import state as gstate
    from chatcore.group.ops import make_op
    from chatcore.group.state import encode_welcome

    from . import World

    w = World(5)
    a, b = w.person(), w.person()
    w.create(a, [b])
    st = w.dev(a).state
    assert st is not None
    key = w.dev(a).key
    for i in range(6):  # two concurrent renames, then a merge, six times over
        r1 = make_op(key, OpKind.RENAME, group_id=st.group_id, epoch=len(st.ops),
                     deps=st.heads, author=a, created_ms=w.now, name=f"x{i}")  # fmt: skip
        r2 = make_op(key, OpKind.RENAME, group_id=st.group_id, epoch=len(st.ops),
                     deps=st.heads, author=a, created_ms=w.now, name=f"y{i}")  # fmt: skip
        st, _, _ = st.apply_ops([r1.raw, r2.raw], w.directory, w.rng)
        assert len(st.heads) == 2
        st, _ = st.rename(f"m{i}", key, w.directory, w.rng, w.now)
    newcomer = w.person()
    st, _ = st.add_member(newcomer, key, w.directory, w.rng, w.now)
    welcome = encode_welcome(st.group_id, st.ops.values())
    inst = w.dev(newcomer).key.public
    GroupState.join(welcome, newcomer, inst, w.directory, w.rng)  # within the bound
    work = sum(o.epoch for o in st.ops.values() if len(o.deps) > 1)
    saved = gconsts.MAX_MERGE_WORK
    try:
        gstate.MAX_MERGE_WORK = work - 1
        with pytest.raises(GroupError, match="too costly"):
            GroupState.join(welcome, newcomer, inst, w.directory, w.rng)
    finally:
        gstate.MAX_MERGE_WORK = saved


def test_an_op_naming_a_redundant_dependency_is_refused() -> None:
    from chatcore.group import OpKind
    from chatcore.group.ops import make_op

    from . import World

    w = World(6)
    a, b = w.person(), w.person()
    w.create(a, [b])
    st = w.dev(a).state
    assert st is not None
    first = st.heads
    st, _ = st.rename("n1", w.dev(a).key, w.directory, w.rng, w.now)
    bad = make_op(w.dev(a).key, OpKind.RENAME, group_id=st.group_id, epoch=len(st.ops),
                  deps=(*st.heads, *first), author=a, created_ms=w.now, name="n2")  # fmt: skip
    sb = w.dev(b).state
    assert sb is not None
    sb, _ = sb.apply_op(st.op_log()[-1], w.directory, w.rng)
    with pytest.raises(GroupError, match="another of its dependencies"):
        sb.apply_op(bad.raw, w.directory, w.rng)


def test_remembered_rosters_are_bounded_by_the_members_they_hold() -> None:
    from chatcore.group import state as gstate
    from chatcore.group.roster import Roster

    saved = dict(gstate._ROSTER_AFTER), gstate._roster_after_members
    try:
        gstate._ROSTER_AFTER.clear()
        gstate._roster_after_members = 0
        big = Roster("g", frozenset(i.to_bytes(32, "big") for i in range(100_000)), frozenset())
        for n in range(40):  # 4 M members offered, 1 M (2**20) kept at most
            gstate._remember_roster(n.to_bytes(32, "big"), big)
        total = sum(len(r.members) for r in gstate._ROSTER_AFTER.values())
        assert total == gstate._roster_after_members <= gstate._ROSTER_AFTER_MAX_MEMBERS
        assert b"\x00" * 31 + b"\x27" in gstate._ROSTER_AFTER  # the newest stay
        huge = Roster("g", frozenset(i.to_bytes(32, "big") for i in range(300_000)), frozenset())
        gstate._remember_roster(b"\xff" * 32, huge)  # more than a quarter: never kept
        assert b"\xff" * 32 not in gstate._ROSTER_AFTER
    finally:
        gstate._ROSTER_AFTER.clear()
        gstate._ROSTER_AFTER.update(saved[0])
        gstate._roster_after_members = saved[1]


def test_adding_to_a_group_whose_log_no_welcome_holds_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatcore import groupchat

    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b])
    monkeypatch.setattr(groupchat, "MAX_WELCOME_BYTES", 100)
    with pytest.raises(GroupError, match="too large to welcome anyone"):
        w.node(a).groups.add(gid, c)
    st = w.node(a).groups.load(gid)
    assert st is not None and c not in st.members()
    # and a welcome that large is never sent (no untyped error on the way)
    assert pack_control([b"\x14" + b"x" * 40, _welcome(200 * 1024)]) == [
        pack_control([b"\x14" + b"x" * 40])[0]
    ]


def test_more_concurrent_heads_than_an_op_may_name() -> None:
    """A member signs 256 leaves on the same dependencies (all valid: it is a member in
    each one's past), so the log has 256 heads, more than one op may name (MAX_DEPS).
    Changes go on: an op names the first MAX_DEPS heads, the next one merges the rest."""
    from chatcore.group import OpKind
    from chatcore.group.consts import MAX_DEPS
    from chatcore.group.ops import make_op

    from . import World

    w = World(8)
    a, b, m = w.person(), w.person(), w.person()
    w.create(a, [b, m])
    sm = w.dev(m).state
    assert sm is not None
    leaves = [
        make_op(
            w.dev(m).key,
            OpKind.LEAVE,
            group_id=sm.group_id,
            epoch=len(sm.ops),
            deps=sm.heads,
            author=m,
            created_ms=w.now + i,
        ).raw
        for i in range(MAX_DEPS + 1)
    ]
    sa, sb = w.dev(a).state, w.dev(b).state
    assert sa is not None and sb is not None
    sa, _, rejected = sa.apply_ops(leaves, w.directory, w.rng)
    sb, _, _ = sb.apply_ops(leaves, w.directory, w.rng)
    assert not rejected and len(sa.heads) == MAX_DEPS + 1 and m not in sa.members()
    z = w.person()
    sa, out = sa.add_member(z, w.dev(a).key, w.directory, w.rng, w.now)
    assert len(sa.heads) == 2 and z in sa.members()
    sa, out2 = sa.rename("merged", w.dev(a).key, w.directory, w.rng, w.now)
    assert len(sa.heads) == 1
    sb, _ = sb.apply_op(out[0].payload, w.directory, w.rng)
    sb, _ = sb.apply_op(out2[0].payload, w.directory, w.rng)
    assert (sb.members(), sb.admins(), sb.name) == (sa.members(), sa.admins(), sa.name)


def test_a_welcome_of_void_ops_costs_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stranger's welcome: a chain of renames by e, each on the one before, all concurrent
    with e's removal. Set aside one by one, each op brought all the earlier ones with it
    (its closure): quadratic work, 15 s at 2,000 ops. A welcome's log is taken as it is:
    the void renames enter the log (as in the welcomer's) and count for nothing."""
    from chatcore.group import GroupState, OpKind
    from chatcore.group import state as gstate
    from chatcore.group.ops import make_op
    from chatcore.group.state import encode_welcome

    from . import World

    w = World(505)
    atk, e, victim = w.person(), w.person(), w.person()
    w.create(atk, [e, victim])
    st = w.dev(atk).state
    assert st is not None
    (root,) = st.ops.values()
    key = w.dev(atk).key
    promote = make_op(key, OpKind.PROMOTE, group_id=root.group_id, epoch=1,
                      deps=(root.op_id,), author=atk, created_ms=w.now, target=e)  # fmt: skip
    remove = make_op(key, OpKind.REMOVE, group_id=root.group_id, epoch=2,
                     deps=(promote.op_id,), author=atk, created_ms=w.now, target=e)  # fmt: skip
    chain, prev = [], promote
    for i in range(300):
        prev = make_op(w.dev(e).key, OpKind.RENAME, group_id=root.group_id, epoch=2 + i,
                       deps=(prev.op_id,), author=e, created_ms=w.now, name=f"n{i}")  # fmt: skip
        chain.append(prev)
    welcome = encode_welcome(root.group_id, [root, promote, remove, *chain])
    sizes: list[int] = []
    real = gstate._closure

    def counting(*args: object) -> object:
        found = real(*args)  # type: ignore[arg-type]
        sizes.append(len(found or ()))
        return found

    monkeypatch.setattr(gstate, "_closure", counting)
    joined, _ = GroupState.join(welcome, victim, w.dev(victim).key.public, w.directory, w.rng)
    assert len(joined.ops) == 303 and not joined.candidates
    assert e not in joined.members() and joined.name == root.name  # the renames are void
    assert max(sizes, default=0) == 0


def test_a_create_naming_too_many_members_does_not_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    from chatcore.group import OpKind, decode_op
    from chatcore.group import ops as gops
    from chatcore.group.consts import MAX_MEMBERS

    from . import World

    w = World(9)
    a = w.person()
    monkeypatch.setattr(gops, "MAX_MEMBERS", MAX_MEMBERS + 1)
    members = (a, *(i.to_bytes(32, "big") for i in range(1, MAX_MEMBERS + 1)))
    gid = gops.group_id_for(a, b"\x02" * 32)
    big = gops.make_op(w.dev(a).key, OpKind.CREATE, group_id=gid, epoch=0, deps=(),
                       author=a, created_ms=w.now, name="g", members=members,
                       salt=b"\x02" * 32)  # fmt: skip
    monkeypatch.setattr(gops, "MAX_MEMBERS", MAX_MEMBERS)
    with pytest.raises(MalformedMessage, match="at most"):
        decode_op(big.raw)
