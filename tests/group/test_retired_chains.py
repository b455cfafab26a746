"""A member who leaves or is removed: what it sent before still arrives (retired chains)."""

from __future__ import annotations

import pytest

from chatcore.errors import DecryptionError, GroupError
from chatcore.group import GroupState
from chatcore.group.consts import RETIRED_CHAIN_MS

from . import World


def _trio(clock: bool) -> tuple[World, bytes, bytes, bytes]:
    """a (admin) created a group with b and c."""
    w = World(clock=clock)
    a, b, c = w.person(), w.person(), w.person()
    w.create(a, [b, c])
    return w, a, b, c


def test_in_flight_message_of_a_removed_member_still_decrypts() -> None:
    w, a, b, c = _trio(clock=True)
    in_flight = w.send(c, b"sent just before the removal")
    w.act(a, "remove_member", c)
    sb = w.dev(b).state
    assert sb is not None and c not in sb.members() and len(sb.retired) == 1
    assert w.read(b, in_flight) == b"sent just before the removal"
    assert w.read(a, in_flight) == b"sent just before the removal"


def test_without_a_clock_the_core_drops_a_leavers_chains_at_once() -> None:
    w, a, b, c = _trio(clock=False)
    in_flight = w.send(c, b"lost without retired chains")
    w.act(a, "remove_member", c)
    with pytest.raises(GroupError, match="unknown sender key"):
        w.read(b, in_flight)


def test_member_catching_up_reads_the_last_messages_of_one_who_left() -> None:
    """The catching-up member applies the leave op (inbox) before it reads the topic."""
    w = World(clock=True)
    a, b, c = w.person(), w.person(2), w.person()
    w.create(a, [b, c])
    w.dev(b, 1).online = False
    bye = [w.send(c, b"bye 1"), w.send(c, b"bye 2")]
    w.act(c, "leave")
    w.now += 10 * 60_000
    w.go_online(w.dev(b, 1))
    sb = w.dev(b, 1).state
    assert sb is not None and c not in sb.members()
    assert [w.read(b, f, device=1) for f in bye] == [b"bye 1", b"bye 2"]


def test_a_leavers_key_that_arrives_after_the_removal_is_installed_retired() -> None:
    w = World(clock=True)
    a, b = w.person(), w.person()
    w.create(a, [b])
    w.dev(b).online = False  # b gets the add, c's key and the removal only later
    c = w.person()
    w.act(a, "add_member", c)
    hello = w.send(c, b"hello, briefly")
    w.act(a, "remove_member", c)
    w.go_online(w.dev(b))  # ops first (add + remove), then c's key over the pairwise session
    sb = w.dev(b).state
    assert sb is not None and c not in sb.members()
    assert w.read(b, hello) == b"hello, briefly"


def test_message_tagged_after_the_removal_epoch_is_refused() -> None:
    """c saw an op the remover had not seen; what c sends at that later epoch is refused
    by every member that applied the removal (its epoch is past the removal op's)."""
    w = World(clock=True)
    a, b, c, d = w.person(), w.person(), w.person(), w.person()
    w.create(a, [b, c, d])
    w.act(a, "promote", d)
    before = w.send(c, b"before anything")
    w.dev(a).online = False
    e = w.person()
    w.act(d, "add_member", e)  # a does not see this yet
    w.dev(c).online = False
    w.act(a, "remove_member", c)  # made on a's older view; c does not see it yet
    sc = w.dev(c).state
    assert sc is not None and c in sc.members()
    late = w.send(c, b"after I saw more ops")
    assert w.read(b, before) == b"before anything"
    with pytest.raises(GroupError, match="after it left"):
        w.read(b, late)


def test_the_window_bounds_what_a_leaver_can_still_inject() -> None:
    """A removed member that kept its old state can still make frames tagged with the
    pre-removal epoch; they are accepted only inside RETIRED_CHAIN_MS (the price of
    delivering in-flight messages, as MLS clients that keep past epochs pay it)."""
    w, a, b, c = _trio(clock=True)
    c_old = w.dev(c).state
    assert c_old is not None
    w.act(a, "remove_member", c)
    c_old, inside = c_old.encrypt(b"inside the window")
    w.now += RETIRED_CHAIN_MS
    assert w.read(b, inside) == b"inside the window"
    c_old, outside = c_old.encrypt(b"after the window")
    w.now += 1
    with pytest.raises(GroupError, match="after it left"):
        w.read(b, outside)
    # and an op applied after the window forgets the retired chain altogether
    w.act(a, "rename", "later")
    sb = w.dev(b).state
    assert sb is not None and sb.retired == ()
    with pytest.raises(GroupError, match="unknown sender key"):
        w.read(b, outside)


def test_retired_chains_survive_a_restart_and_older_states_still_load() -> None:
    w, a, b, c = _trio(clock=True)
    f1, f2 = w.send(c, b"one"), w.send(c, b"two")
    w.act(a, "remove_member", c)
    sb = w.dev(b).state
    assert sb is not None and sb.retired
    reloaded = GroupState.from_bytes(sb.to_bytes())
    assert reloaded.retired == sb.retired
    w.dev(b).state = reloaded
    assert w.read(b, f2) == b"two"
    assert w.read(b, f1) == b"one"  # the skipped key was kept across the reload

    plain = w.dev(a).state
    assert plain is not None
    sa = GroupState.from_bytes(plain.to_bytes())
    fresh = World()
    x, y = fresh.person(), fresh.person()
    fresh.create(x, [y])
    sx = fresh.dev(x).state
    assert sx is not None and sx.retired == ()
    v3 = sx.to_bytes()
    assert v3[0] == 3 and v3[-3:] == b"\x00\x00\x00"  # no retired chains, leavers, candidates
    v2 = bytes((2,)) + v3[1:-1]
    v1 = bytes((1,)) + v3[1:-3]
    assert GroupState.from_bytes(v2).to_bytes() == GroupState.from_bytes(v1).to_bytes() == v3
    assert sa.to_bytes() == plain.to_bytes()


def test_key_held_before_the_ops_is_retired_when_they_say_its_sender_left() -> None:
    """b gets c's key before the ops that add c and then see c leave (one batch): the key
    waits among the pending ones, and the batch retires it instead of dropping it."""
    w, a, b, _ = _trio(clock=True)
    db = w.dev(b)
    db.online = False
    c = w.person()
    w.act(a, "add_member", c)
    hello = w.send(c, b"hello and goodbye")
    w.act(c, "leave")
    inbox, db.inbox = db.inbox, []
    keys = [(frm, p) for frm, p in inbox if frm is not None and w.owner(frm) == c]
    ops = [p for frm, p in inbox if frm is None]
    assert keys and ops and db.state is not None
    for frm, p in keys:  # the key first: c is not a member in b's view yet
        db.state = db.state.receive_distribution(frm, p, from_identity=c, now_ms=w.now)
    assert db.state.pending and not db.state.retired
    db.state, _out, _rej = db.state.apply_ops(ops, w.directory, w.rng, w.now)
    db.online = True
    assert c not in db.state.members() and not db.state.pending
    assert w.read(b, hello) == b"hello and goodbye"


def test_a_key_sent_after_leaving_never_opens_a_new_window() -> None:
    """A removed member that sends a fresh sender key later joins the window opened when
    the receiver applied its removal (same end); once that window is over, the key is not
    installed and its messages are refused."""
    from chatcore.group.sender_keys import SenderChain

    w, a, b, c = _trio(clock=True)
    gid = w.dev(a).state.group_id  # type: ignore[union-attr]
    c_inst = w.dev(c).inst
    w.act(a, "remove_member", c)
    sb = w.dev(b).state
    assert sb is not None
    until = sb.left[c]
    assert all(r.until_ms == until for r in sb.retired if r.chain.identity == c)

    def fresh_key(epoch: int) -> tuple[SenderChain, bytes]:
        chain = SenderChain.generate(w.rng, epoch, {})
        return chain, chain.distribution(gid, c, c_inst)

    _k1, d1 = fresh_key(sb.epoch - 1)
    w.now += 60_000
    sb = sb.receive_distribution(c_inst, d1, from_identity=c, now_ms=w.now)
    assert {r.until_ms for r in sb.retired if r.chain.identity == c} == {until}  # not extended
    k2, d2 = fresh_key(sb.epoch - 1)
    w.now = until + 1
    sb = sb.receive_distribution(c_inst, d2, from_identity=c, now_ms=w.now)
    assert all(r.chain.key_id != k2.key_id for r in sb.retired)
    tag = next(t for t, e in sb.tags.items() if e == sb.epoch - 1)  # the pre-removal tag
    _k2, late = k2.encrypt(tag, b"late", c_inst)
    with pytest.raises(GroupError):
        sb.decrypt(late, w.now)


def test_a_removed_member_cannot_push_out_other_leavers_retired_chains() -> None:
    """Within its window a removed member may send new keys dated before its removal;
    they replace only its own oldest retired chains, so another leaver's message that is
    still in flight decrypts."""
    from chatcore.group.consts import CHAINS_PER_INSTALLATION, MAX_RETIRED_CHAINS
    from chatcore.group.sender_keys import SenderChain

    w = World(31, clock=True)
    a, b, c, r = (w.person() for _ in range(4))
    w.create(a, [b, c, r])
    in_flight = w.send(c, b"c's last words")
    w.act(c, "leave")
    w.act(a, "remove_member", r)
    sb = w.dev(b).state
    assert sb is not None
    r_inst = w.dev(r).inst
    for _ in range(MAX_RETIRED_CHAINS):
        chain = SenderChain.generate(w.rng, 0, {})
        sb = sb.receive_distribution(
            r_inst, chain.distribution(sb.group_id, r, r_inst), from_identity=r, now_ms=w.now
        )
    assert sum(x.chain.installation == r_inst for x in sb.retired) == CHAINS_PER_INSTALLATION
    assert sb.decrypt(in_flight, w.now)[3] == b"c's last words"


def test_a_leavers_late_message_is_read_alike_whatever_order_the_removals_came_in() -> None:
    """The message epoch of a removal is counted in that removal's own past, so members
    holding the same ops agree on a leaver's late message (review finding: one read it and
    one refused it, by the order two removals arrived)."""
    from chatcore.group import Publish
    from chatcore.group.consts import KIND_GROUP_OP

    w = World(5, clock=True)
    a, y, b, x, m1, m2, z = (w.person() for _ in range(7))
    w.create(a, [y, b, x, m1, m2])
    w.act(a, "promote", y)
    w.act(a, "promote", b)

    def make(who: bytes, method: str, target: bytes) -> bytes:
        d = w.dev(who)
        assert d.state is not None
        d.state, out = getattr(d.state, method)(target, d.key, w.directory, w.rng, w.now)
        return next(
            o.payload for o in out if isinstance(o, Publish) and o.payload[0] == KIND_GROUP_OP
        )

    def apply(who: bytes, op: bytes) -> None:
        d = w.dev(who)
        assert d.state is not None
        d.state, _ = d.state.apply_op(op, w.directory, w.rng, w.now)

    void_add = make(y, "add_member", z)  # y adds z while a, not knowing it, removes y
    rm_y = make(a, "remove_member", y)
    for who in (b, x, m1, m2):
        apply(who, void_add)
    late = w.send(x, b"written while still a member")
    rm_x = make(b, "remove_member", x)
    apply(m1, rm_y)
    apply(m1, rm_x)
    apply(m2, rm_x)
    apply(m2, rm_y)
    w.now += 1000
    assert w.read(m1, late) == w.read(m2, late) == b"written while still a member"


def test_a_retired_chain_still_needs_the_leavers_signature() -> None:
    """Every member holds a leaver's chain key; only the leaver's signature says it wrote a
    message. A frame of a retired chain whose signature does not verify is refused (a
    member could otherwise write as the one who left, during its window)."""
    w, a, b, c = _trio(clock=True)
    in_flight = w.send(c, b"signed by c")
    w.act(a, "remove_member", c)
    sb = w.dev(b).state
    assert sb is not None and len(sb.retired) == 1
    forged = in_flight[:-1] + bytes([in_flight[-1] ^ 1])
    with pytest.raises((GroupError, DecryptionError)):
        sb.decrypt(forged, w.now)
    assert w.read(b, in_flight) == b"signed by c"


def test_a_leavers_skipped_keys_are_bounded_across_its_retired_chains() -> None:
    """In its window a removed member may hand out keys dated before its removal (up to
    CHAINS_PER_INSTALLATION retired chains) and skip MAX_SKIP numbers of each with one
    frame: eight 96-byte frames grew our state by 540 KB, kept until the next membership
    change. The skipped keys of one installation's retired chains are bounded in all."""
    from dataclasses import replace

    from chatcore.group import group_tag
    from chatcore.group._primitives import sender_chain_step
    from chatcore.group.consts import CHAINS_PER_INSTALLATION, MAX_SKIP, MAX_SKIPPED_KEYS
    from chatcore.group.sender_keys import SenderChain

    w, a, b, r = _trio(clock=True)
    w.act(a, "remove_member", r)
    sb = w.dev(b).state
    assert sb is not None
    size = len(sb.to_bytes())
    r_inst = w.dev(r).inst
    tag = group_tag(sb.group_id, 1)  # the epoch its removal was made at
    skipped = b""
    for _ in range(CHAINS_PER_INSTALLATION):
        chain = SenderChain.generate(w.rng, 0, {})
        dist = chain.distribution(sb.group_id, r, r_inst)
        sb = sb.receive_distribution(r_inst, dist, from_identity=r, now_ms=w.now)
        ck = chain.chain_key
        for _ in range(MAX_SKIP - 1):
            _mk, ck = sender_chain_step(ck)
        before = replace(chain, iteration=MAX_SKIP - 1, chain_key=ck)
        skipped = before.encrypt(tag, b"on its way", r_inst)[1]
        ahead = before.encrypt(tag, b"", r_inst)[0]
        sb = sb.decrypt(ahead.encrypt(tag, b"far ahead", r_inst)[1], w.now)[0]
    assert len(sb.to_bytes()) <= size + MAX_SKIPPED_KEYS * 40 + CHAINS_PER_INSTALLATION * 200
    assert sb.decrypt(skipped, w.now)[3] == b"on its way"  # the newest chain's keys stay
