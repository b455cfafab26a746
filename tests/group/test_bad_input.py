"""Malformed, forged, stale, replayed and tampered input: typed errors, state unchanged."""

from __future__ import annotations

import pytest

from chatcore.errors import (
    ChatCoreError,
    DecryptionError,
    DuplicateMessage,
    GroupError,
    MalformedMessage,
    TooManySkipped,
)
from chatcore.group import GroupState, InstallationKey, OpKind
from chatcore.group.consts import EPOCH_AHEAD, EPOCH_GRACE, MAX_SKIP
from chatcore.group.ops import make_op

from . import World


def _group() -> tuple[World, bytes, bytes, bytes]:
    w = World(3)
    a, b, c = w.person(), w.person(), w.person()
    w.create(a, [b, c])
    return w, a, b, c


def _state(w: World, who: bytes) -> GroupState:
    st = w.dev(who).state
    assert st is not None
    return st


def test_bit_flips_anywhere_are_rejected_and_state_unchanged() -> None:
    w, a, b, _ = _group()
    frame = w.send(a, b"y" * 40)
    st = _state(w, b)
    before = st.to_bytes()
    for i in range(len(frame)):
        for bit in (0x01, 0x80):
            bad = bytearray(frame)
            bad[i] ^= bit
            with pytest.raises((DecryptionError, GroupError, MalformedMessage)):
                st.decrypt(bytes(bad))
    assert st.to_bytes() == before
    assert st.decrypt(frame)[3] == b"y" * 40


@pytest.mark.parametrize("junk", [b"", b"\x13", b"\x13" + b"\x00" * 40, b"\x01" * 200, b"\x14x"])
def test_malformed_frames(junk: bytes) -> None:
    w, _, b, _ = _group()
    with pytest.raises(MalformedMessage):
        _state(w, b).decrypt(junk)


def test_wrong_type_is_typeerror() -> None:
    w, _, b, _ = _group()
    with pytest.raises(TypeError):
        _state(w, b).decrypt("text")  # type: ignore[arg-type]


def test_duplicate_out_of_order_and_gap() -> None:
    w, a, b, _ = _group()
    frames = [w.send(a, b"%d" % i) for i in range(5)]
    st = _state(w, b)
    st, *_r, pt = st.decrypt(frames[3])
    assert pt == b"3"
    for i in (1, 0, 4, 2):
        st, *_r, pt = st.decrypt(frames[i])
        assert pt == b"%d" % i
    for f in frames:
        with pytest.raises(DuplicateMessage):
            st.decrypt(f)
    sa = _state(w, a)
    for _ in range(MAX_SKIP):
        sa, _f = sa.encrypt(b"lost")
    sa, edge = sa.encrypt(b"edge")  # exactly MAX_SKIP past st's next iteration
    sa, over = sa.encrypt(b"over")
    with pytest.raises(TooManySkipped):
        _state(w, b).decrypt(over)  # from iteration 5: a gap of MAX_SKIP + 1
    assert st.decrypt(edge)[3] == b"edge"


def test_non_member_sender_rejected() -> None:
    w, _a, b, _ = _group()
    outsider = w.person()
    # the outsider runs a group of its own for a chain, and uses our group's routing tag
    od = w.dev(outsider)
    sb = _state(w, b)
    fake, _ = GroupState.create(w.rng(32), "fake", outsider, od.key, [], w.directory, w.rng, w.now)
    assert fake.own is not None
    frame = fake.own.encrypt(sb.tag, b"let me in", od.inst)[1]
    with pytest.raises(GroupError):
        sb.decrypt(frame)


def test_stale_epoch_rejected() -> None:
    w, a, b, _ = _group()
    old = w.send(a, b"old")
    w.act(a, "add_member", w.person())
    assert w.read(b, w.send(a, b"grace ok")) == b"grace ok"
    fresh = _state(w, b)
    assert fresh.decrypt(old)[3] == b"old"  # one epoch back: in-flight grace
    # in flight across several changes: still accepted while within EPOCH_GRACE epochs
    # (the sender key and signature authenticate it, not the epoch tag)
    for _ in range(EPOCH_GRACE - 1):
        w.act(a, "add_member", w.person())
    assert _state(w, b).decrypt(old)[3] == b"old"
    w.act(a, "add_member", w.person())
    with pytest.raises(GroupError):
        _state(w, b).decrypt(old)


def _op(w: World, author: bytes, kind: OpKind, st: GroupState, **kw: object) -> bytes:
    return make_op(
        w.dev(author).key, kind, group_id=st.group_id, epoch=len(st.ops), deps=st.heads,
        author=author, created_ms=w.now, **kw,  # type: ignore[arg-type]
    ).raw  # fmt: skip


def test_forged_and_unauthorised_ops_rejected_state_unchanged() -> None:
    w, a, b, c = _group()
    sc = _state(w, c)
    before = sc.to_bytes()
    d = w.person()
    cases = {
        "non-admin add": _op(w, b, OpKind.ADD, sc, target=d),
        "non-admin promote self": _op(w, b, OpKind.PROMOTE, sc, target=b),
        "outsider leave": _op(w, d, OpKind.LEAVE, sc),
        "add existing": _op(w, a, OpKind.ADD, sc, target=b),
        "second create": make_op(
            w.dev(a).key,
            OpKind.CREATE,
            group_id=sc.group_id,
            epoch=0,
            deps=(),
            author=a,
            created_ms=w.now,
            members=(a,),
            salt=next(o.salt for o in sc.ops.values() if o.kind is OpKind.CREATE),
        ).raw,
        "other group": make_op(
            w.dev(a).key,
            OpKind.ADD,
            group_id=b"\x01" * 32,
            epoch=len(sc.ops),
            deps=sc.heads,
            author=a,
            created_ms=w.now,
            target=d,
        ).raw,
        "wrong epoch": make_op(
            w.dev(a).key,
            OpKind.ADD,
            group_id=sc.group_id,
            epoch=5,
            deps=sc.heads,
            author=a,
            created_ms=w.now,
            target=d,
        ).raw,
        "missing deps": make_op(
            w.dev(a).key,
            OpKind.ADD,
            group_id=sc.group_id,
            epoch=1,
            deps=(b"\x02" * 32,),
            author=a,
            created_ms=w.now,
            target=d,
        ).raw,
    }
    # a's installation key signing as if it were b (claims b's identity)
    cases["impersonation"] = make_op(
        w.dev(a).key, OpKind.ADD, group_id=sc.group_id, epoch=len(sc.ops), deps=sc.heads,
        author=b, created_ms=w.now, target=d,
    ).raw  # fmt: skip
    forged = bytearray(_op(w, a, OpKind.ADD, sc, target=d))
    forged[-1] ^= 1
    cases["bad signature"] = bytes(forged)
    stranger = InstallationKey.generate(w.rng)
    cases["unregistered installation"] = make_op(
        stranger, OpKind.ADD, group_id=sc.group_id, epoch=len(sc.ops), deps=sc.heads,
        author=a, created_ms=w.now, target=d,
    ).raw  # fmt: skip
    # ops void by the membership rules say why, in the words a user sees for their own
    reasons = {
        "non-admin add": "only an admin can add members",
        "non-admin promote self": "only an admin can promote members",
        "outsider leave": "only a member can leave",
        "add existing": "already a member of this group",
    }
    for name, raw in cases.items():
        with pytest.raises(GroupError, match=reasons.get(name)):
            sc.apply_op(raw, w.directory, w.rng)
        assert sc.to_bytes() == before, name
    for junk in (b"", b"\x14", b"\x14\x09" + b"\x00" * 200, _op(w, a, OpKind.LEAVE, sc)[:-1]):
        with pytest.raises(MalformedMessage):
            sc.apply_op(junk, w.directory, w.rng)
    assert sc.to_bytes() == before


def test_replayed_and_removed_member_ops_rejected() -> None:
    w, a, b, c = _group()
    w.act(a, "promote", b)
    sc = _state(w, c)
    op = w.published[-1]
    with pytest.raises(GroupError):
        sc.apply_op(op, w.directory, w.rng)  # replay
    w.act(a, "remove_member", b)
    sc = _state(w, c)
    sb_view = _state(w, a)  # b's op made after seeing its own removal
    with pytest.raises(GroupError):
        sc.apply_op(_op(w, b, OpKind.ADD, sb_view, target=w.person()), w.directory, w.rng)
    with pytest.raises(GroupError):
        _state(w, b).add_member(w.person(), w.dev(b).key, w.directory, w.rng, w.now)


def test_a_late_op_is_accepted_everywhere_and_sorts_where_it_was_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Acceptance depends only on the op and its causal past, never on how far ahead the
    receiver is (that split the log: members accepted different ops). A late rename
    counts at its place in the order: the later renames win. A full log refuses more."""
    w, a, _b, c = _group()
    sa0 = _state(w, a)
    late = _op(w, a, OpKind.RENAME, sa0, name="late")
    for i in range(20):
        w.act(a, "rename", f"n{i}")
    sa, _ = _state(w, a).apply_op(late, w.directory, w.rng)
    sc, _ = _state(w, c).apply_op(late, w.directory, w.rng)
    assert set(sa.ops) == set(sc.ops) and sa.name == sc.name == "n19"
    import chatcore.group.state as state_module

    monkeypatch.setattr(state_module, "MAX_OPS", len(sc.ops))
    with pytest.raises(GroupError, match="op log is full"):
        sc.apply_op(_op(w, a, OpKind.RENAME, sc, name="one more"), w.directory, w.rng)


def test_distribution_checks() -> None:
    w, a, b, c = _group()
    sb = _state(w, b)
    sa = _state(w, a)
    assert sa.own is not None
    dist = sa.own.distribution(sa.group_id, a, w.dev(a).inst)
    with pytest.raises(GroupError):
        sb.receive_distribution(w.dev(c).inst, dist)  # relayed by someone else
    with pytest.raises(MalformedMessage):
        sb.receive_distribution(w.dev(a).inst, dist[:-1])
    assert sb.receive_distribution(w.dev(a).inst, dist) is sb  # duplicate: no change
    with pytest.raises(ChatCoreError):
        sb.receive_distribution(w.dev(a).inst, b"\x15" + b"\x00" * 172)


def test_welcome_signed_by_a_revoked_installation_needs_the_past_signers() -> None:
    """The admin lost the device that made the group: a newcomer checks the log against
    every installation the admin ever had, but a live change from the lost device is
    refused."""
    from chatcore.group import GroupState
    from chatcore.group.consts import KIND_WELCOME

    from . import World

    w = World()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.create(a, [b])
    lost = w.dev(a)
    welcome = lost.state.welcome()  # type: ignore[union-attr]
    assert welcome[0] == KIND_WELCOME
    w.add_device(a)
    w.directory[a].remove(lost.inst)  # revoked: no longer an active installation
    active = dict(w.directory)
    ever = {**active, a: [*active[a], lost.inst]}
    with pytest.raises(GroupError, match="not signed by an installation of its author"):
        GroupState.join(welcome, b, w.dev(b).inst, active, w.rng)
    st, _out = GroupState.join(welcome, b, w.dev(b).inst, active, w.rng, signers=ever)
    assert st.group_id == gid and st.is_member
    # a live op from the lost device is refused even by someone who knows the past signers
    _lost_state, out = lost.state.add_member(c, lost.key, ever, w.rng, w.now)  # type: ignore[union-attr]
    op = next(o.payload for o in out if o.__class__.__name__ == "Publish")
    with pytest.raises(GroupError, match="not signed by an installation of its author"):
        st.apply_op(op, active, w.rng)


@pytest.mark.parametrize("junk_key", [False, True])
def test_a_member_redistributing_anothers_chain_gets_no_credit_and_blocks_nothing(
    junk_key: bool,
) -> None:
    """M hands a newcomer V's chain (key id, signing key) as its own, before V's own
    distribution arrives: V's messages still decrypt as V's (with a junk chain key too)."""
    from chatcore.group import SendTo
    from chatcore.group.sender_keys import SenderKeyDistribution

    w = World(9)
    a, v, m = w.person(), w.person(), w.person()
    w.create(a, [v, m])
    sm, mi, vi = _state(w, m), w.dev(m).inst, w.dev(v).inst
    n = w.person()
    ni = w.dev(n).inst
    _sa, out = _state(w, a).add_member(n, w.dev(a).key, w.directory, w.rng, w.now)
    welcome = next(o.payload for o in out if isinstance(o, SendTo) and o.installation == ni)
    sn, _ = GroupState.join(welcome, n, ni, w.directory, w.rng)
    sv, v_out = _state(w, v).apply_op(out[0].payload, w.directory, w.rng, w.now)
    v_dist = next(o.payload for o in v_out if isinstance(o, SendTo) and o.installation == ni)
    vchain = next(c for cs in sm.chains.values() for c in cs if c.installation == vi)
    copy = SenderKeyDistribution(
        sm.group_id, m, mi, vchain.key_id, vchain.epoch, vchain.iteration,
        b"\x00" * 32 if junk_key else vchain.chain_key, vchain.signing_public,
    ).to_bytes()  # fmt: skip
    sn = sn.receive_distribution(mi, copy, from_identity=m, now_ms=w.now)  # M's copy first
    sn = sn.receive_distribution(vi, v_dist, from_identity=v, now_ms=w.now)
    _sv, frame = sv.encrypt(b"written by V")
    _sn, sender, inst, pt = sn.decrypt(frame, w.now)
    assert (sender, inst, pt) == (v, vi, b"written by V")


def test_a_welcome_for_someone_elses_group_id_is_refused() -> None:
    """Someone who knows a group's id (a removed member) cannot make a newcomer join a
    group of theirs under that id: the id is bound to the creator by the create op."""
    from chatcore.group.ops import OP_DOMAIN, _body, decode_op
    from chatcore.group.state import encode_welcome

    w, a, b, c = _group()
    gid = _state(w, a).group_id
    r, u = w.person(), w.person()
    rd = w.dev(r)
    body = _body(OpKind.CREATE, gid, 0, (), r, rd.inst, w.now, b"", "g", (r, a, b, c, u), w.rng(32))
    fake_create = decode_op(body + rd.key.sign(OP_DOMAIN + body))
    assert fake_create.signature_valid()  # well-formed and signed: only the binding is off
    ud = w.dev(u)
    with pytest.raises(GroupError, match="not its creator's"):
        GroupState.join(encode_welcome(gid, [fake_create]), u, ud.inst, w.directory, w.rng)


def test_a_message_from_a_member_up_to_epoch_ahead_ops_ahead_is_read() -> None:
    """A member that applied ops we have not got yet tags its messages with a later epoch:
    up to EPOCH_AHEAD epochs ahead they are read (its sender key did not change), beyond
    that refused as an unknown epoch."""
    w, a, b, c = _group()
    behind = _state(w, b)
    w.dev(b).online = False  # b gets none of the ops below
    for _ in range(EPOCH_AHEAD):
        w.act(a, "add_member", w.person())
    assert _state(w, c).epoch == behind.epoch + EPOCH_AHEAD
    assert behind.decrypt(w.send(c, b"from ahead"))[3] == b"from ahead"
    w.act(a, "add_member", w.person())
    with pytest.raises(GroupError):
        behind.decrypt(w.send(c, b"too far"))


def test_a_removed_member_installs_no_sender_key() -> None:
    """Once removed, our state takes no member's sender key (one sent by a member that has
    not yet applied the removal, say): we read nothing of the group any more."""
    w, a, b, c = _group()
    w.act(a, "remove_member", b)
    st = _state(w, b)
    assert not st.is_member
    cst = _state(w, c)
    assert cst.own is not None
    dist = cst.own.distribution(cst.group_id, c, w.dev(c).inst)
    with pytest.raises(GroupError):
        st.receive_distribution(w.dev(c).inst, dist, from_identity=c)


def test_a_welcome_that_does_not_make_us_a_member_is_refused() -> None:
    """A welcome whose log has us removed (an old one forwarded after the removal, say)
    builds no group state we are silently not a member of."""
    w, a, _, c = _group()
    w.act(a, "remove_member", c)
    welcome = _state(w, a).welcome()
    with pytest.raises(GroupError, match="member"):
        GroupState.join(welcome, c, w.dev(c).inst, w.directory, w.rng)


def test_a_non_members_sender_keys_neither_grow_a_members_state_nor_push_out_a_newcomers() -> None:
    """A key from an installation that is not a member installation (yet) is held until
    the op that makes it one. A removed member (it knows the group id) sending key after
    key, or one naming another identity, made the held list grow to its bound (about 700 KB
    of state, written again at every message) and pushed out the key of a newcomer whose
    add had not arrived yet (its messages went unread)."""
    from chatcore.group import Publish, SenderKeyDistribution, SendTo
    from chatcore.group.consts import CHAINS_PER_INSTALLATION, KIND_WELCOME
    from chatcore.group.consts import MAX_PENDING_DISTRIBUTIONS as N

    w = World(3, clock=True)
    a, b, x, n = w.person(), w.person(), w.person(), w.person()
    gid = w.create(a, [b, x])
    w.act(a, "remove_member", x)
    da, dn, xi = w.dev(a), w.dev(n), w.dev(x).inst
    assert da.state is not None
    _sa, out = da.state.add_member(n, da.key, w.directory, w.rng, w.now)
    add = next(o.payload for o in out if isinstance(o, Publish))
    welcome = next(o.payload for o in out if isinstance(o, SendTo) and o.payload[0] == KIND_WELCOME)
    sn, nout = GroupState.join(welcome, n, dn.inst, w.directory, w.rng)
    to_b = next(
        o.payload for o in nout if isinstance(o, SendTo) and o.installation == w.dev(b).inst
    )
    sb = _state(w, b)
    sb = sb.receive_distribution(dn.inst, to_b, from_identity=n, now_ms=w.now)  # before the add
    size = len(sb.to_bytes())
    for i in range(N):
        junk = SenderKeyDistribution(gid, x, xi, i.to_bytes(4, "big"), i, 0, w.rng(32), w.rng(32))
        sb = sb.receive_distribution(xi, junk.to_bytes(), from_identity=x, now_ms=w.now)
    # one naming a member's identity, from x's installation: never that member's key
    forged = SenderKeyDistribution(gid, n, xi, b"nnnn", 9, 0, w.rng(32), w.rng(32)).to_bytes()
    with pytest.raises(GroupError):
        sb.receive_distribution(xi, forged, from_identity=x, now_ms=w.now)
    # at most CHAINS_PER_INSTALLATION keys of x as a leaver's (retired) and as many held
    assert len(sb.to_bytes()) <= size + 2 * CHAINS_PER_INSTALLATION * 200
    sb, _ = sb.apply_op(add, w.directory, w.rng, w.now)
    sn, frame = sn.encrypt(b"hello from the newcomer")
    assert sb.decrypt(frame, w.now)[3] == b"hello from the newcomer"


def test_a_members_skipped_keys_are_bounded_across_its_chains() -> None:
    """A frame may skip up to MAX_SKIP numbers of its chain, whose keys are kept (up to
    MAX_SKIPPED_KEYS a chain) for the frames still on their way. A member holding
    CHAINS_PER_INSTALLATION chains (it hands out as many keys as it likes) made each skip
    that far: eight frames of 96 bytes grew our state by 540 KB, written again at every
    message. The skipped keys of one installation are bounded in all now (those of its
    older chains go first), and what they are for still decrypts."""
    from dataclasses import replace

    from chatcore.group._primitives import sender_chain_step
    from chatcore.group.consts import CHAINS_PER_INSTALLATION, MAX_SKIPPED_KEYS
    from chatcore.group.sender_keys import SenderChain

    w = World(3, clock=True)
    a, b, m = w.person(), w.person(), w.person()
    gid = w.create(a, [b, m])
    mi = w.dev(m).inst
    sb = _state(w, b)
    size = len(sb.to_bytes())

    def at(chain: SenderChain, n: int) -> SenderChain:
        ck = chain.chain_key
        for _ in range(n):
            _mk, ck = sender_chain_step(ck)
        return replace(chain, iteration=n, chain_key=ck)

    skipped = b""
    for k in range(CHAINS_PER_INSTALLATION):
        ch = SenderChain.generate(w.rng, 1 + k, {})
        sb = sb.receive_distribution(mi, ch.distribution(gid, m, mi), from_identity=m)
        skipped = at(ch, MAX_SKIP - 1).encrypt(sb.tag, b"on its way", mi)[1]
        sb = sb.decrypt(at(ch, MAX_SKIP).encrypt(sb.tag, b"far ahead", mi)[1], w.now)[0]
    assert len(sb.to_bytes()) <= size + MAX_SKIPPED_KEYS * 40 + CHAINS_PER_INSTALLATION * 200
    assert sb.decrypt(skipped, w.now)[3] == b"on its way"  # the newest chain's keys stay


def test_an_op_by_someone_never_an_admin_is_refused_without_folding_its_past(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An op whose dependencies merge branches is checked against the fold of its causal
    past (~7 ms an op in a log of 2,000 ops with concurrent branches): a member who is no
    admin, or one removed, made a member spend seconds on one control message of such ops.
    An author who is an admin in no part of the log (not its creator, never promoted, and
    no admin ever taken out, which would make a member one) is refused before that fold; an
    admin's op of the same shape is checked as before."""
    from chatcore.group import state as gstate

    w = World(6)
    a, p, m = w.person(), w.person(), w.person()
    gid = w.create(a, [p, m])
    w.act(a, "promote", p)
    da, dp = w.dev(a), w.dev(p)
    sa, sp = da.state, dp.state
    assert sa is not None and sp is not None
    for i in range(2):  # a partition: a and p rename the group on their own sides
        sa, _ = sa.rename(f"a{i}", da.key, w.directory, w.rng, w.now)
        sp, _ = sp.rename(f"p{i}", dp.key, w.directory, w.rng, w.now)
    sm = _state(w, m)
    sm, _out, rejected = sm.apply_ops([*sa.op_log(), *sp.op_log()], w.directory, w.rng, w.now)
    assert not rejected
    first = [min((o for o in s.ops.values() if o.name[:1] == k), key=lambda o: o.epoch)
             for s, k in ((sa, "a"), (sp, "p"))]  # fmt: skip
    deps = tuple(sorted(o.op_id for o in first))  # two concurrent ops, not the heads
    folds: list[int] = []
    real = gstate.fold
    monkeypatch.setattr(gstate, "fold", lambda ops: folds.append(1) or real(ops))

    def op(who: bytes, name: str) -> bytes:
        return make_op(
            w.dev(who).key, OpKind.RENAME, group_id=gid, epoch=len(gstate._reach(sm.ops, deps)),
            deps=deps, author=who, created_ms=w.now, name=name,
        ).raw  # fmt: skip

    with pytest.raises(GroupError, match="admin"):
        sm.apply_op(op(m, "taken over"), w.directory, w.rng, w.now)
    assert folds == []
    sm.apply_op(op(a, "merged"), w.directory, w.rng, w.now)
    assert folds
