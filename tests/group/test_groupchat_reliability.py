"""GroupChat reliability in the core (docs/reliability.md, group findings 4 and 5): held group
frames retried after control items, op-log anti-entropy, bounded held-frame storage."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcore.errors import GroupError
from chatcore.groupchat import GroupChat
from chatcore.payload import ContentType
from chatcore.store import SCHEMA_VERSION, Store
from tests.features import FWorld


def test_frame_before_its_sender_key_is_held_and_delivered_later() -> None:
    w = FWorld(3)
    a, b, c, d = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b, c, d])
    na, nb = w.node(a), w.node(b)
    # a removes d and rotates its sender key; b misses the op and the new key for now
    frames = na.groups.remove(gid, d)
    w.dropped.add(nb.dev.engine.inbox)
    w.route(frames, frm=na)
    w.dropped.clear()
    res = na.groups.send(gid, ContentType.TEXT, b"after the rotation")
    nb.got.clear()
    w.route(res.frames, frm=na)
    assert any(isinstance(e, GroupError) for e in nb.errors)
    assert nb.dev.store.group_held_count(gid) == 1
    assert not any(r.body == b"after the rotation" for r in nb.got)
    # the control frames arrive late: the held frame is retried and delivered exactly once
    w.route([f for f in frames if f.subject == nb.dev.engine.inbox], frm=na)
    got = [r for r in nb.got if r.body == b"after the rotation"]
    assert len(got) == 1 and got[0].sender_identity == a
    assert nb.dev.store.group_held_count(gid) == 0
    assert nb.dev.store.has_message(gid, res.message_id)


def test_junk_on_a_group_topic_from_someone_without_the_group_id_is_not_held() -> None:
    """Anyone who can publish to a group's topic (its subject is no secret to the delivery
    network) filled the frames held for later with random bytes: each was held (up to
    MAX_HELD_FRAMES), retried after every control item for the group, and pushed out a
    member's message that waited for its sender key (lost). A frame tagged with no epoch of
    the group is no member's (the tag needs the group id): it is refused, not held."""
    import random

    from chatcore.group.consts import KIND_GROUP_MESSAGE
    from chatcore.groupchat import MAX_HELD_FRAMES, group_topic

    w = FWorld(3)
    a, b, c, d = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b, c, d])
    na, nb = w.node(a), w.node(b)
    frames = na.groups.remove(gid, d)
    w.dropped.add(nb.dev.engine.inbox)  # b misses the removal and a's new key for now
    w.route(frames, frm=na)
    w.dropped.clear()
    res = na.groups.send(gid, ContentType.TEXT, b"after the rotation")
    w.route(res.frames, frm=na)
    assert nb.dev.store.group_held_count(gid) == 1
    rnd = random.Random(5)
    subject = group_topic(gid)
    for _ in range(MAX_HELD_FRAMES):
        junk = bytes((KIND_GROUP_MESSAGE,)) + rnd.randbytes(12) + b"\x00" + rnd.randbytes(150)
        with pytest.raises(GroupError):
            nb.groups.receive(subject, junk, None)
    assert nb.dev.store.group_held_count(gid) == 1
    w.route([f for f in frames if f.subject == nb.dev.engine.inbox], frm=na)
    assert nb.dev.store.has_message(gid, res.message_id)


def test_own_echo_and_non_member_frames_are_not_held_forever() -> None:
    w = FWorld(4)
    a, b = w.person(), w.person()
    gid = w.group(a, [b])
    na = w.node(a)
    res = na.groups.send(gid, ContentType.TEXT, b"mine")
    subject = res.frames[0].subject
    try:
        na.groups.receive(subject, res.frames[0].frame, (subject, 99))
    except GroupError:
        pass
    assert na.dev.store.group_held_count(gid) == 0  # our own message echoed by the topic


def _concurrent_changes(anti_entropy: bool) -> tuple[FWorld, bytes, bytes, bytes]:
    w = FWorld(5)
    a, p, x, y, z = (w.person() for _ in range(5))
    gid = w.group(a, [p, y, z])
    for n in w.nodes.values():
        n.groups.anti_entropy = anti_entropy
    na, np_ = w.node(a), w.node(p)
    w.route(na.groups.promote(gid, p), frm=na)
    add = na.groups.add(gid, x)  # a adds x ...
    rem = np_.groups.remove(gid, y)  # ... while p (not knowing x) removes y
    w.route(add, frm=na)
    w.route(rem, frm=np_)
    return w, gid, a, x


def test_anti_entropy_converges_a_member_added_concurrently() -> None:
    w, gid, a, x = _concurrent_changes(True)
    sa, sx = w.node(a).groups.load(gid), w.node(x).groups.load(gid)
    assert sa is not None and sx is not None
    assert set(sx.ops) == set(sa.ops) and sx.members() == sa.members()
    # and everyone converged on the same op set
    states = [n.groups.load(gid) for n in w.nodes.values()]
    logs = {frozenset(s.ops) for s in states if s is not None and s.is_member}
    assert len(logs) == 1


def test_without_anti_entropy_the_new_member_diverges() -> None:
    w, gid, a, x = _concurrent_changes(False)
    sa, sx = w.node(a).groups.load(gid), w.node(x).groups.load(gid)
    assert sa is not None and sx is not None
    assert set(sx.ops) != set(sa.ops)


def test_held_frames_are_bounded_and_idempotent() -> None:
    s = Store.memory()
    gid = b"\x01" * 32
    for i in range(10):
        s.add_group_held(gid, bytes([i]) * 40, 1, limit=4)
    s.add_group_held(gid, bytes([9]) * 40, 2, limit=4)  # the same frame again: ignored
    held = s.group_held(gid)
    assert [f[0] for _, f, _, _ in held] == [6, 7, 8, 9]
    s.group_held_tried(held[0][0])
    assert s.group_held(gid)[0][3] == 1
    s.delete_group_held(held[0][0])
    assert s.group_held_count(gid) == 3 and s.group_held_count() == 3
    assert s.schema_version == SCHEMA_VERSION


def test_groupchat_anti_entropy_flag_defaults_on() -> None:
    w = FWorld(6)
    a = w.person()
    assert isinstance(w.node(a).groups, GroupChat) and w.node(a).groups.anti_entropy


def test_own_message_echoed_by_the_topic_is_skipped_quietly() -> None:
    """Every subscriber of a group topic gets every frame, the sender included: its own
    frame is recognised (its own sender key) and skipped without an error or a copy."""

    w = FWorld()
    a, b = w.person(), w.person()
    gid = w.group(a, [b])
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"echo?")
    n = w.node(a)
    before = len(w.dev(a).store.history(gid))
    fr = s.frames[0]
    assert n.groups.receive(fr.subject, fr.frame, cursor=(fr.subject, 7)) is None
    assert len(w.dev(a).store.history(gid)) == before
    assert w.dev(a).store.cursor(fr.subject) == 7


def test_a_member_missing_an_op_asks_for_it_and_applies_the_removal() -> None:
    """q misses b's add; a's later removal of x depends on it. Without the admins' re-offer
    of their logs (pushing), q asks a for the ops it lacks (pulling), gets them, and
    applies the removal; q's next message is not readable by x."""
    w = FWorld(6)
    a, b, q, x, y = (w.person() for _ in range(5))
    gid = w.group(a, [b, q, x])
    for n in w.nodes.values():
        n.groups.anti_entropy = False
    na, nb, nq, nx = w.node(a), w.node(b), w.node(q), w.node(x)
    w.route(na.groups.promote(gid, b), frm=na)
    w.dropped.add(nq.dev.engine.inbox)
    w.route(nb.groups.add(gid, y), frm=nb)
    w.dropped.clear()
    before = nq.groups.info(gid)
    assert y not in before.members
    w.route(na.groups.remove(gid, x), frm=na)
    after = nq.groups.info(gid)
    assert x not in after.members and y in after.members
    res = nq.groups.send(gid, ContentType.TEXT, b"x must not read this")
    nx.got.clear()
    w.route(res.frames, frm=nq)
    assert not any(r.body == b"x must not read this" for r in nx.got)


def frames_body(node: object, frame: bytes) -> bytes:
    """The control body inside a pairwise frame, as its receiver decrypts it."""
    from chatcore import session as sess
    from chatcore.payload import Payload

    engine = node.dev.engine  # type: ignore[attr-defined]
    _kind, tag = sess.parse_frame(frame)
    row = engine.store.session_by_tag(tag)
    if row is None:
        _s, _info, plaintext = sess.Session.respond(
            engine.own.keys, engine._prekey, engine._pq, frame
        )
    else:
        plaintext = sess.Session.from_bytes(row[2]).decrypt(frame)
    return Payload.decode(plaintext).body


def test_a_want_is_answered_once_per_op_and_within_the_payload_cap() -> None:
    """A member asks 64 times for the create op of a 40-member group (2.7 KB): the answer
    carries it once, and no answer passes the payload cap (an oversized one made the whole
    control message fail with an untyped error)."""
    from chatcore.group import OpKind
    from chatcore.groupchat import decode_control, encode_control, encode_want
    from chatcore.payload import MAX_BODY

    w = FWorld(31)
    people = [w.person() for _ in range(40)]
    a, b = people[0], people[1]
    gid = w.group(a, people[1:])
    na, nb = w.node(a), w.node(b)
    sa = na.groups.load(gid)
    assert sa is not None
    create = next(o for o in sa.ops.values() if o.kind is OpKind.CREATE)
    body = encode_control([encode_want(gid, [create.op_id] * 64)])
    _events, frames = na.groups.handle_control(b, nb.dev.inst, body)
    assert len(frames) == 1 and len(frames[0].frame) < MAX_BODY
    items = decode_control(frames_body(nb, frames[0].frame))
    assert items == [create.raw]


def test_wants_in_one_control_message_are_answered_once_per_op() -> None:
    """One control message of 64 wants, each naming the ops of a 40-member group, was
    answered with every op 64 times (the create op is 2.7 KB here, 32 KB in a group of a
    thousand: 64 wants of 65 bytes naming it brought 2 MB back)."""
    from chatcore.groupchat import MAX_CONTROL_ITEMS, decode_control, encode_control, encode_want

    w = FWorld(32)
    people = [w.person() for _ in range(40)]
    a, b = people[0], people[1]
    gid = w.group(a, people[1:])
    na, nb = w.node(a), w.node(b)
    for who in people[2:5]:
        w.route(na.groups.promote(gid, who), frm=na)
    sa = na.groups.load(gid)
    assert sa is not None
    ids = list(sa.ops)
    body = encode_control([encode_want(gid, ids)] * MAX_CONTROL_ITEMS)
    _events, frames = na.groups.handle_control(b, nb.dev.inst, body)
    items = [i for f in frames for i in decode_control(frames_body(nb, f.frame))]
    assert sorted(items) == sorted(o.raw for o in sa.ops.values())


def test_ops_missing_dependencies_in_one_control_message_bring_one_want() -> None:
    """Each op whose dependencies we lack made us ask its sender for them, one want frame
    per op: anyone who knows the group id (a removed member) got 64 frames back for one
    control message of 64 ops naming made-up dependencies (checked before the signature).
    The ops of one control message bring one want to their sender, naming what they lack
    (each id once, at most 64)."""
    from chatcore.group import OpKind
    from chatcore.group.ops import make_op
    from chatcore.groupchat import MAX_CONTROL_ITEMS, decode_control, decode_want, encode_control

    w = FWorld(33)
    a, b, x = w.person(), w.person(), w.person()
    gid = w.group(a, [b, x])
    na, nb, nx = w.node(a), w.node(b), w.node(x)
    w.route(na.groups.remove(gid, x), frm=na)
    ops = [
        make_op(
            nx.groups._key, OpKind.RENAME, group_id=gid, epoch=5,
            deps=tuple(sorted(w.rng(32) for _ in range(3))), author=x,
            created_ms=w.clock(), name=f"n{i}",
        ).raw
        for i in range(MAX_CONTROL_ITEMS)
    ]  # fmt: skip
    with w.dev(b).store.transaction():
        _events, frames = nb.groups.handle_control(x, nx.dev.inst, encode_control(ops))
    assert len(frames) == 1
    (want,) = decode_control(frames_body(nx, frames[0].frame))
    asked = decode_want(want)
    assert len(asked) == len(set(asked)) == MAX_CONTROL_ITEMS


def test_an_admin_never_relays_an_op_whose_signer_was_revoked_since() -> None:
    """What an admin relays counts as vouched for, so an op that an admin keeps aside
    because its signing device was revoked since (a thief's, dated back, passed on by a
    member) must not go out in an answer to a want."""
    from chatcore.group.ops import decode_op
    from chatcore.groupchat import encode_want

    w = FWorld(21)
    a, b, c, m, z = w.person(), w.person(), w.person(), w.person(), w.person()
    w.add_device(a)
    gid = w.group(a, [b, c, m])
    w.route(w.node(a).groups.promote(gid, b), frm=w.node(a))
    every = {ident: [k.installation_id for k in w.devices_of(ident)] for ident in (a, b, c, m, z)}
    for n in w.nodes.values():
        n.groups.past_devices = lambda ident: every.get(ident, [])
    a1 = w.node(a).groups
    st = a1.load(gid)
    assert st is not None
    _new, out = st.add_member(z, a1._key, a1._ids, w.rng, w.clock())
    forged = out[0].payload  # made by a's first device, never sent: a thief's later
    w.directory.revoked.add(w.dev(a).inst)
    gb = w.node(b).groups
    m_inst = w.dev(m).inst
    with w.dev(b).store.transaction():
        gb._apply_item(gid, m, m_inst, forged)  # m (not an admin) passes it to b: aside
    sb = gb.load(gid)
    assert sb is not None and decode_op(forged).op_id in {x.op_id for x in sb.candidates}
    want = encode_want(gid, [decode_op(forged).op_id])
    assert gb._answer_want(sb, c, w.dev(c).inst, want) == []


def test_only_the_authors_own_device_vouches_for_an_op_of_a_revoked_device() -> None:
    from chatcore.group.ops import decode_op

    w = FWorld(22)
    a, b, c, z = w.person(), w.person(), w.person(), w.person()
    w.add_device(a)
    gid = w.group(a, [b, c])
    w.route(w.node(a).groups.promote(gid, b), frm=w.node(a))
    every = {ident: [k.installation_id for k in w.devices_of(ident)] for ident in (a, b, c, z)}
    for n in w.nodes.values():
        n.groups.past_devices = lambda ident: every.get(ident, [])
    a1 = w.node(a).groups
    st = a1.load(gid)
    assert st is not None
    op = st.add_member(z, a1._key, a1._ids, w.rng, w.clock())[1][0].payload
    w.directory.revoked.add(w.dev(a).inst)  # a's first device is lost
    gc = w.node(c).groups
    oid = decode_op(op).op_id
    with w.dev(c).store.transaction():
        gc._apply_item(gid, b, w.dev(b).inst, op)  # another admin relays it: aside
    sc = gc.load(gid)
    assert sc is not None and oid not in sc.ops
    with w.dev(c).store.transaction():
        gc._apply_item(gid, a, w.dev(a, 1).inst, op)  # a's other device: a vouches
    sc = gc.load(gid)
    assert sc is not None and oid in sc.ops and z in sc.members()


def test_a_member_cannot_welcome_a_newcomer_with_a_forged_op_of_a_revoked_device() -> None:
    from chatcore.group.ops import OpKind, make_op
    from chatcore.group.state import encode_welcome

    w = FWorld(23)
    a, t, b, y = w.person(), w.person(), w.person(), w.person()
    w.add_device(a)
    gid = w.group(a, [t, b])
    every = {ident: [k.installation_id for k in w.devices_of(ident)] for ident in (a, t, b, y)}
    for n in w.nodes.values():
        n.groups.past_devices = lambda ident: every.get(ident, [])
    stolen = w.node(a).groups._key
    w.directory.revoked.add(w.dev(a).inst)  # a's first device: t has its key
    g1 = w.node(a, 1).groups  # a's other device adds y
    s1 = g1.load(gid)
    assert s1 is not None
    add = s1.add_member(y, g1._key, g1._ids, w.rng, w.clock())[1][0].payload
    gt = w.node(t).groups
    st = gt.load(gid)
    assert st is not None
    st, _ = st.apply_op(add, gt._ids, w.rng)
    forged = make_op(
        stolen, OpKind.PROMOTE, group_id=gid, epoch=len(st.ops), deps=st.heads,
        author=a, created_ms=w.clock(), target=t,
    )  # fmt: skip
    welcome = encode_welcome(gid, [*st.ops.values(), forged])
    gy = w.node(y).groups
    with pytest.raises(GroupError, match="vouch"):
        with w.dev(y).store.transaction():
            gy._apply_item(gid, t, w.dev(t).inst, welcome)
    assert gy.load(gid) is None


def test_a_revoked_device_cannot_write_to_a_group_before_any_change() -> None:
    """A device revoked on chain (lost or stolen) keeps its sender key in the group's state
    until the next membership change: its messages are refused all the same."""
    from chatcore.errors import UntrustedIdentity

    w = FWorld(22)
    a, b = w.person(), w.person(2)
    gid = w.group(a, [b])
    ok = w.f(b, 1).send_group_message(gid, ContentType.TEXT, b"before")
    w.route(ok.frames, frm=w.node(b, 1))
    assert w.dev(a).store.message(gid, ok.message_id) is not None
    w.directory.revoked.add(w.dev(b, 1).inst)
    s = w.f(b, 1).send_group_message(gid, ContentType.TEXT, b"from the thief")
    w.route(s.frames, frm=w.node(b, 1))
    assert any(isinstance(e, UntrustedIdentity) for e in w.node(a).errors)
    assert w.dev(a).store.message(gid, s.message_id) is None


def test_a_non_member_asking_for_ops_gets_none() -> None:
    """The op log says who is in a group and what it is called: one removed from it (or
    anyone else) asking a member for ops gets none; a member asking gets them."""
    from chatcore.groupchat import encode_want

    w = FWorld(23)
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    w.route(w.node(a).groups.remove(gid, c), frm=w.node(a))
    gb = w.node(b).groups
    sb = gb.load(gid)
    assert sb is not None and c not in sb.members()
    want = encode_want(gid, list(sb.ops))
    assert gb._answer_want(sb, c, w.dev(c).inst, want) == []
    assert gb._answer_want(sb, a, w.dev(a).inst, want) != []


def test_a_key_that_reaches_a_member_before_its_removal_and_readding_is_kept() -> None:
    """Review finding (crash safety): an admin's process killed between the frames of a
    removal (the removed member's copy stayed in its outbox; an outage does the same), then
    re-adding that member: another member's sender key, sent on the re-add, reached the
    member before its removal. Applying the removal dropped every chain, the welcome did
    not bring that key back, and the member could not read that other member's messages
    until it re-keyed (retransmissions are the same frame: they do not help)."""
    w = FWorld(6)
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    na, nb, nc = w.node(a), w.node(b), w.node(c)
    c_inbox = nc.dev.engine.inbox
    removal = na.groups.remove(gid, c)
    w.route([f for f in removal if f.subject != c_inbox], frm=na)  # c's copy waits
    out = nb.groups.send(gid, ContentType.TEXT, b"while c is out")  # not for c
    w.route(out.frames, frm=nb)
    readd = na.groups.add(gid, c)
    w.route([f for f in readd if f.subject != c_inbox], frm=na)  # b sends c its key now
    # a's process comes back: its outbox goes out in order (the removal, then the welcome)
    w.route([f for f in removal if f.subject == c_inbox], frm=na)
    w.route([f for f in readd if f.subject == c_inbox], frm=na)
    st = nc.groups.load(gid)
    assert st is not None and st.is_member
    res = nb.groups.send(gid, ContentType.TEXT, b"from b after the re-add")
    nc.got.clear()
    w.route(res.frames, frm=nb)
    assert [r.body for r in nc.got] == [b"from b after the re-add"]
    assert not nc.dev.store.has_message(gid, out.message_id)


def test_a_member_whose_add_turned_void_learns_only_the_removal_that_voided_it() -> None:
    """A member whose view loses someone added by an admin removed concurrently tells that
    person it is out — with the removal and its causal past only: what the group did after
    (here: adding g) is not for someone who never validly was in it."""
    w = FWorld(7)
    a, b, c, d, f, g, h = (w.person() for _ in range(7))
    gid = w.group(a, [b, c, d])
    na, nb, nd, nf = w.node(a), w.node(b), w.node(d), w.node(f)
    w.route(na.groups.promote(gid, b), frm=na)
    rem = na.groups.remove(gid, b)
    add = nb.groups.add(gid, f)  # concurrent with b's removal: void
    w.route(add, frm=nb)  # everyone, d too, sees f added
    for n in (nd, w.node(c), nf, nb):  # only d is left to tell f, and only later
        w.deaf.add(n.dev.inst)
    w.route(rem, frm=na)
    w.route(na.groups.add(gid, g), frm=na)
    w.deaf.discard(nf.dev.inst)
    before = nf.groups.load(gid)
    assert before is not None and before.is_member
    w.deaf.discard(nd.dev.inst)
    w.route(na.groups.add(gid, h), frm=na)  # d catches up, and tells f
    st = nf.groups.load(gid)
    assert st is not None and not st.is_member
    assert g not in st.members() and h not in st.members()
    assert not any(o.target in (g, h) for o in st.ops.values())


def test_a_member_added_by_an_admin_whose_promotion_turned_void_learns_it_is_out() -> None:
    """a makes b an admin; b makes c one while a removes b (concurrent: b's promotion of c
    is void, so c was never an admin); c adds f. Every member's view loses f with no
    removal or leave of f, and its adder c was not removed either: f was sent nothing and
    took itself for a member for good (found by the simulator's group-adversary scenario).
    Now the removals of whoever made its adders admins are sent too, with their causal
    past, and f sees it is out."""
    w = FWorld(9)
    a, b, c, d, f = (w.person() for _ in range(5))
    gid = w.group(a, [b, c, d])
    na, nb, nc, nf = w.node(a), w.node(b), w.node(c), w.node(f)
    w.route(na.groups.promote(gid, b), frm=na)
    rem = na.groups.remove(gid, b)
    w.deaf.add(na.dev.inst)  # a does not see what b does next
    w.route(nb.groups.promote(gid, c), frm=nb)
    w.route(nc.groups.add(gid, f), frm=nc)
    sf = nf.groups.load(gid)
    assert sf is not None and sf.is_member
    w.deaf.discard(na.dev.inst)
    w.route(rem, frm=na)
    sd = w.node(d).groups.load(gid)
    assert sd is not None and f not in sd.members() and c not in sd.admins()
    sf = nf.groups.load(gid)
    assert sf is not None and not sf.is_member


_ROLLBACK = type("_Rollback", (Exception,), {})


def _bad_control_world() -> tuple[FWorld, bytes, bytes, list[tuple[bytes, bytes, bytes]]]:
    """A group of a (admin), b, c and x, x removed; what c (no admin) and x could send b:
    (sender, sender installation, item) with c's and x's ops refused, a's log and keys."""
    from chatcore.group import OpKind
    from chatcore.group.ops import make_op
    from chatcore.groupchat import encode_want, welcome_parts

    w = FWorld(41)
    a, b, c, x = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b, c, x])
    na = w.node(a)
    w.route(na.groups.remove(gid, x), frm=na)
    sa = na.groups.load(gid)
    assert sa is not None and sa.own is not None
    items: list[tuple[bytes, bytes, bytes]] = []
    for who in (c, x):
        n = w.node(who)
        for kind in (OpKind.ADD, OpKind.REMOVE, OpKind.PROMOTE, OpKind.RENAME):
            op = make_op(
                n.groups._key, kind, group_id=gid, epoch=len(sa.ops), deps=sa.heads,
                author=who, created_ms=w.clock(), target=b if kind is not OpKind.ADD else who,
                name="taken over" if kind is OpKind.RENAME else "",
            )  # fmt: skip
            items.append((who, n.dev.inst, op.raw))
        items.append((who, n.dev.inst, encode_want(gid, list(sa.ops))))
        items += [(who, n.dev.inst, p) for p in welcome_parts(sa.welcome() + b"\0" * 70_000)]
    items.append((c, w.dev(c).inst, sa.welcome()))
    items.append((a, w.dev(a).inst, sa.own.distribution(gid, a, w.dev(a).inst)))
    return w, gid, b, items


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.randoms(use_true_random=False)), max_size=4))
def test_control_items_from_a_non_admin_or_a_removed_member_change_no_membership(
    picks: list[tuple[int, random.Random]],
) -> None:
    """Control items a member who is no admin, or one removed, can send (its own ops, its
    wants, welcome parts, a's log), whole or damaged: a typed error at most, and the roster
    of the receiver's group stays as it was."""
    from chatcore.errors import ChatCoreError
    from chatcore.groupchat import encode_control

    global _WORLD
    if _WORLD is None:
        _WORLD = _bad_control_world()
    w, gid, b, items = _WORLD
    nb = w.node(b)
    before = nb.groups.load(gid)
    assert before is not None
    by_sender: dict[tuple[bytes, bytes], list[bytes]] = {}
    for i, rnd in picks:
        who, inst, item = items[i % len(items)]
        if rnd.random() < 0.5:
            cut = rnd.randrange(34, len(item))
            item = item[:cut] + bytes((item[cut] ^ (1 << rnd.randrange(8)),)) + item[cut + 1 :]
        by_sender.setdefault((who, inst), []).append(item)
    for (who, inst), its in by_sender.items():
        try:
            with nb.dev.store.transaction():
                nb.groups.handle_control(who, inst, encode_control(its))
                after = nb.groups.load(gid)
                assert after is not None
                assert (after.members(), after.admins(), after.name) == (
                    before.members(), before.admins(), before.name,
                )  # fmt: skip
                raise _ROLLBACK
        except (_ROLLBACK, ChatCoreError):
            pass


_WORLD: tuple[FWorld, bytes, bytes, list[tuple[bytes, bytes, bytes]]] | None = None


def test_a_frame_that_reaches_a_member_out_for_a_while_is_held_until_it_is_back() -> None:
    """x, an admin, removes m while a removes x (concurrent: x's removal of m is void). m
    gets x's removal first (it is out in its own view), then a frame of a's new key (made
    as x went out, sent to m too: m is in a's view) before that key and a's removal of x.
    The frame was lost (a non-member held nothing); m keeps the chains it went out with for
    a while, so it holds the frame too, and reads it once it is back and has the key."""
    w = FWorld(11)
    a, b, c, x, m = (w.person() for _ in range(5))
    gid = w.group(a, [b, c, x, m])
    na, nx, nm = w.node(a), w.node(x), w.node(m)
    w.route(na.groups.promote(gid, x), frm=na)
    w.deaf.add(na.dev.inst)
    w.route(nx.groups.remove(gid, m), frm=nx)
    w.deaf.discard(na.dev.inst)
    sm = nm.groups.load(gid)
    assert sm is not None and not sm.is_member
    m_inbox = nm.dev.engine.inbox
    removal_of_x = na.groups.remove(gid, x)
    w.dropped.add(m_inbox)  # m gets none of it for now
    w.route(removal_of_x, frm=na)
    w.dropped.clear()
    res = na.groups.send(gid, ContentType.TEXT, b"for m too")
    w.route(res.frames, frm=na)
    sm = nm.groups.load(gid)
    assert sm is not None and not sm.is_member  # (m read the frame while out)
    assert not nm.dev.store.has_message(gid, res.message_id)
    w.route([f for f in removal_of_x if f.subject == m_inbox], frm=na)
    sm = nm.groups.load(gid)
    assert sm is not None and sm.is_member
    assert nm.dev.store.has_message(gid, res.message_id)


@pytest.mark.parametrize("shut", ["BLOCKED", "DECLINED"])
def test_a_member_out_for_a_while_is_back_whoever_wrote_the_op_that_brings_it_back(
    shut: str,
) -> None:
    """x, an admin, removes m while a removes x (concurrent: x's removal of m is void). m,
    who gets x's removal first, is out in its own view until a's removal of x comes. m had
    blocked (or declined) a: that op was taken for an invitation by a to come back, refused,
    and dropped, so m stayed out for good in its own view (everyone else has it in) and
    lacked an op of the log. Only an op that adds us is an invitation."""
    from chatcore.features import ContactState

    w = FWorld(19)
    a, b, x, m = (w.person() for _ in range(4))
    gid = w.group(a, [b, x, m])
    na, nx, nm = w.node(a), w.node(x), w.node(m)
    w.route(na.groups.promote(gid, x), frm=na)
    w.route(w.f(m).set_contact(a, getattr(ContactState, shut)), frm=nm)
    w.deaf.add(na.dev.inst)
    w.route(nx.groups.remove(gid, m), frm=nx)
    w.deaf.discard(na.dev.inst)
    sm = nm.groups.load(gid)
    assert sm is not None and not sm.is_member
    w.route(na.groups.remove(gid, x), frm=na)
    sb, sm = w.node(b).groups.load(gid), nm.groups.load(gid)
    assert sb is not None and sm is not None and m in sb.members()
    assert set(sm.ops) == set(sb.ops)  # (b got x's removal of m too, a did not)
    assert sm.is_member and sm.members() == sb.members()


def test_a_member_holding_itself_out_holds_frames_as_a_member_does() -> None:
    """x's first device removes m, and an hour later (m's chains kept as it went out are
    gone) x's second device leaves, not knowing of it: every member has m in, m holds itself
    out (nobody built on the leave yet). a rotates its key as x goes out and sends it to m,
    then writes: m, not a member in its view, keeps the key for later but dropped the frame
    (it held frames only while it kept chains it went out with), and read nothing of it
    once a built on the leave and it was back."""
    from chatcore.group.consts import RETIRED_CHAIN_MS

    w = FWorld(23)
    a, b, m = w.person(), w.person(), w.person()
    x = w.person(2)
    gid = w.group(a, [b, x, m])
    na, nb, nm = w.node(a), w.node(b), w.node(m)
    nx1, nx2 = w.node(x), w.node(x, 1)
    w.route(na.groups.promote(gid, x), frm=na)
    w.deaf |= {na.dev.inst, nb.dev.inst, nx2.dev.inst}
    w.route(nx1.groups.remove(gid, m), frm=nx1)  # (only m gets it)
    w.deaf.clear()
    sm = nm.groups.load(gid)
    assert sm is not None and not sm.is_member
    w.clock.now += RETIRED_CHAIN_MS + 1
    w.deaf.add(nx1.dev.inst)
    w.route(nx2.groups.leave(gid), frm=nx2)
    sm = nm.groups.load(gid)
    assert sm is not None and sm.held_out and m in w.node(a).groups.load(gid).members()
    res = na.groups.send(gid, ContentType.TEXT, b"for m too")
    w.route(res.frames, frm=na)
    assert not nm.dev.store.has_message(gid, res.message_id)
    w.route(na.groups.rename(gid, "on the leave"), frm=na)
    sm = nm.groups.load(gid)
    assert sm is not None and sm.is_member and sm.name == "on the leave"
    assert nm.dev.store.has_message(gid, res.message_id)


def test_the_topic_of_a_group_we_are_out_of_is_no_longer_read() -> None:
    """A member removed from a group (or that left) read the group's topic for good: every
    message posted there since, unreadable by design, was downloaded and dropped. It reads
    it while it keeps the group's chains retired (what was sent before it went out), then
    no longer; taken back, it reads it again (from where it stopped: its cursor)."""
    from chatcore.group.consts import RETIRED_CHAIN_MS
    from chatcore.groupchat import group_topic

    w = FWorld(31)
    a, b, m = w.person(), w.person(), w.person()
    gid = w.group(a, [b, m])
    na, nm = w.node(a), w.node(m)
    topic = group_topic(gid)
    w.route(na.groups.remove(gid, m), frm=na)
    sm = nm.groups.load(gid)
    assert sm is not None and not sm.is_member and topic in nm.groups.subjects()
    w.clock.now += RETIRED_CHAIN_MS + 1
    assert topic not in nm.groups.subjects()
    assert topic in nm.dev.store.group_subjects()  # (the group is kept: history, a re-add)
    res = na.groups.send(gid, ContentType.TEXT, b"not for m")
    nm.errors.clear()
    w.route(res.frames, frm=na)
    assert not nm.errors  # not even read
    w.route(na.groups.add(gid, m), frm=na)
    assert topic in nm.groups.subjects()
    res = na.groups.send(gid, ContentType.TEXT, b"for m again")
    w.route(res.frames, frm=na)
    assert nm.dev.store.has_message(gid, res.message_id)
    # b, in the group all along, reads it throughout; so does a member that leaves, for
    # the same hour
    assert topic in w.node(b).groups.subjects()
    w.route(w.node(b).groups.leave(gid), frm=w.node(b))
    assert topic in w.node(b).groups.subjects()
    w.clock.now += RETIRED_CHAIN_MS + 1
    assert topic not in w.node(b).groups.subjects() and topic in nm.groups.subjects()


def test_a_home_from_before_store_schema_13_sorts_its_groups_once() -> None:
    """Schema 13 marks a home that has groups; its next GroupChat finds the groups it is
    out of (it would otherwise read their topics until each changed again)."""
    from chatcore.group.consts import RETIRED_CHAIN_MS
    from chatcore.groupchat import group_topic
    from chatcore.store import _MIGRATIONS, _statements
    from tests.engine import drop_schema_13

    w = FWorld(32)
    a, b, m = w.person(), w.person(), w.person()
    g_in, g_out = w.group(a, [b, m], "in"), w.group(a, [b, m], "out")
    na, nm = w.node(a), w.node(m)
    w.route(na.groups.remove(g_out, m), frm=na)
    w.clock.now += RETIRED_CHAIN_MS + 1
    store = nm.dev.store
    # the home as schema 12 left it: no reading rows; then schema 13's migration
    drop_schema_13(store._db)
    for stmt in _statements(_MIGRATIONS[13]):
        store._x(stmt)
    assert store.get_meta("group_reading_todo") is not None
    assert set(store.group_subjects(w.clock())) == {group_topic(g_in), group_topic(g_out)}
    assert nm.groups.subjects() == [group_topic(g_in)]
    assert store.get_meta("group_reading_todo") is None
    assert store.group_subjects(w.clock()) == [group_topic(g_in)]
    # a home with no groups is not marked
    s = Store.memory()
    drop_schema_13(s._db)
    for stmt in _statements(_MIGRATIONS[13]):
        s._x(stmt)
    assert s.get_meta("group_reading_todo") is None


def test_a_group_an_older_process_on_the_home_writes_is_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process of the version before store schema 13, still running on the home, writes
    groups but never ``group_reading``: once it took us back into a group we had stopped
    reading (its re-add, read by that process), the row saying "not read" stayed, and the
    new version never read the topic of a group it is a member of. A write to ``groups``
    forgets the row (read: as before schema 13) until this version saves the group."""
    from chatcore.group.consts import RETIRED_CHAIN_MS
    from chatcore.groupchat import group_topic

    w = FWorld(33)
    a, b, m = w.person(), w.person(), w.person()
    gid = w.group(a, [b, m])
    na, nm = w.node(a), w.node(m)
    topic = group_topic(gid)
    w.route(na.groups.remove(gid, m), frm=na)
    w.clock.now += RETIRED_CHAIN_MS + 1
    assert topic not in nm.groups.subjects()
    # the older process reads the re-add: it saves the group, not knowing group_reading
    with monkeypatch.context() as mp:
        mp.setattr(Store, "set_group_reading", lambda self, gid, until: None)
        w.route(na.groups.add(gid, m), frm=na)
    sm = nm.groups.load(gid)
    assert sm is not None and sm.is_member
    assert topic in nm.groups.subjects()
    res = na.groups.send(gid, ContentType.TEXT, b"for m again")
    w.route(res.frames, frm=na)
    assert nm.dev.store.has_message(gid, res.message_id)
    # this version's own saves still stop reading a group it is out of
    w.route(na.groups.remove(gid, m), frm=na)
    w.clock.now += RETIRED_CHAIN_MS + 1
    assert topic not in nm.groups.subjects()
