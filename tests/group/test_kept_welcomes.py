"""Kept welcomes (``keep_welcome`` / ``GroupChat.join_kept_welcomes``): a link or an
installation rotation killed before joining its groups joins them on the next sync. A kept
welcome is older than what the store may have learnt since under our previous installation
(a removal, an add): joining it must not roll that back. One welcome that fails for a
reason other than itself must not keep the others from joining."""

from __future__ import annotations

import pytest

from chatcore.engine import OutFrame
from chatcore.errors import GroupError, UntrustedIdentity
from chatcore.group import GroupState
from chatcore.group.ops import OpKind
from chatcore.groupchat import KEPT_WELCOME, encode_control, group_topic, keep_welcome
from chatcore.payload import ContentType
from tests.features import FWorld, Node


def _rotated(w: FWorld, who: bytes, gid: bytes, welcome: bytes) -> None:
    """``who``'s second device as the store of a rotation killed before its joins: the group
    state of the previous installation (device 0) and the welcome kept at the rotation."""
    old = w.dev(who, 0).store.group_state(gid)
    assert old is not None
    new = w.dev(who, 1)
    with new.store.transaction():
        new.store.save_group(gid, group_topic(gid), old, w.clock())
        keep_welcome(new.store, welcome)


def test_a_kept_welcome_does_not_undo_a_removal_learnt_since() -> None:
    w = FWorld(seed=71)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    gid = w.group(bob, [alice], name="crew")
    kept = w.node(alice).groups.load(gid).welcome()  # type: ignore[union-attr]
    # the old installation then learnt that bob took alice out
    w.route(w.node(bob).groups.remove(gid, alice), strict=True, frm=w.node(bob))
    assert not w.node(alice).groups.info(gid).is_member
    w.add_device(alice)
    _rotated(w, alice, gid, kept)
    g2 = w.node(alice, 1).groups
    g2.join_kept_welcomes()
    info = g2.info(gid)
    assert not info.is_member and alice not in info.members
    assert w.dev(alice, 1).store.secrets_with_prefix(KEPT_WELCOME) == []


def test_a_kept_welcome_keeps_the_ops_learnt_since() -> None:
    w = FWorld(seed=72)
    alice, bob, carol = (w.person(name=n) for n in ("alice", "bob", "carol"))
    gid = w.group(bob, [alice], name="crew")
    kept = w.node(alice).groups.load(gid).welcome()  # type: ignore[union-attr]
    w.route(w.node(bob).groups.add(gid, carol), strict=True, frm=w.node(bob))
    assert carol in w.node(alice).groups.info(gid).members
    w.add_device(alice)
    _rotated(w, alice, gid, kept)
    g2 = w.node(alice, 1).groups
    g2.join_kept_welcomes()
    info = g2.info(gid)
    assert info.is_member
    assert g2.load(gid).installation == w.dev(alice, 1).inst  # type: ignore[union-attr]
    assert info.members == w.node(bob).groups.info(gid).members
    assert carol in info.members


def test_a_welcome_failing_for_another_reason_leaves_the_rest_joining(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = FWorld(seed=73)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    gids = sorted(w.group(bob, [alice], name=n) for n in ("one", "two"))
    welcomes = [w.node(bob).groups.load(g).welcome() for g in gids]  # type: ignore[union-attr]
    new = w.add_device(alice)
    with new.store.transaction():
        for wel in welcomes:
            keep_welcome(new.store, wel)
    real = GroupState.join.__func__  # type: ignore[attr-defined]

    def join(cls: type[GroupState], welcome: bytes, *a: object, **k: object) -> object:
        if welcome == welcomes[0]:  # the first in the store's order
            raise UntrustedIdentity("the chain cannot say just now")
        return real(cls, welcome, *a, **k)

    monkeypatch.setattr(GroupState, "join", classmethod(join))
    g = w.node(alice, 1).groups
    g.join_kept_welcomes()
    assert g.load(gids[0]) is None
    assert g.info(gids[1]).is_member
    # the one that failed is kept for the next sync, which joins it
    assert [n for n, _ in new.store.secrets_with_prefix(KEPT_WELCOME)] == [
        KEPT_WELCOME + gids[0].hex()
    ]
    monkeypatch.undo()
    g.join_kept_welcomes()
    assert g.info(gids[0]).is_member
    assert new.store.secrets_with_prefix(KEPT_WELCOME) == []


def _stale_join(w: FWorld, alice: bytes, bob: bytes, gid: bytes) -> Node:
    """Alice's first device hands a welcome of ``gid`` over to a new device (kept); bob then
    removes alice, before the new device is counted as hers (nobody sends it the removal);
    the new device then joins from the kept welcome. Returns the new device's node."""
    kept = w.node(alice).groups.load(gid).welcome()  # type: ignore[union-attr]
    w.route(w.node(bob).groups.remove(gid, alice), strict=True, frm=w.node(bob))
    assert not w.node(alice).groups.info(gid).is_member
    new = w.add_device(alice)
    with new.store.transaction():
        keep_welcome(new.store, kept)
    return w.node(alice, 1)


def test_a_device_joining_from_a_stale_handover_welcome_learns_it_was_removed() -> None:
    w = FWorld(seed=74)
    alice, bob, carol = (w.person(name=n) for n in ("alice", "bob", "carol"))
    gid = w.group(bob, [alice, carol], name="crew")
    a2 = _stale_join(w, alice, bob, gid)
    w.route(a2.groups.join_kept_welcomes(), frm=a2)
    info = a2.groups.info(gid)
    assert not info.is_member and alice not in info.members
    assert info.members == w.node(bob).groups.info(gid).members
    assert any(
        r.conversation_id == gid and r.content_type == ContentType.GROUP_CONTROL
        and r.body.decode() in ("removed you", "you are no longer a member")
        for r in a2.got
    )  # fmt: skip
    # and it no longer writes there
    with pytest.raises(GroupError):
        a2.groups.send(gid, ContentType.TEXT, b"still here?")


def test_a_stale_device_learns_its_removal_and_nothing_the_group_did_after() -> None:
    w = FWorld(seed=76)
    alice, bob, carol = (w.person(name=n) for n in ("alice", "bob", "carol"))
    gid = w.group(bob, [carol], name="crew")
    nb, nc = w.node(bob), w.node(carol)
    w.route(nb.groups.promote(gid, carol), strict=True, frm=nb)
    w.route(nc.groups.add(gid, alice), strict=True, frm=nc)  # carol added alice
    kept = w.node(alice).groups.load(gid).welcome()  # type: ignore[union-attr]
    w.route(nb.groups.remove(gid, alice), strict=True, frm=nb)
    w.route(nb.groups.remove(gid, carol), strict=True, frm=nb)  # after alice was out
    new = w.add_device(alice)
    with new.store.transaction():
        keep_welcome(new.store, kept)
    a2 = w.node(alice, 1)
    w.route(a2.groups.join_kept_welcomes(), frm=a2)
    st = a2.groups.load(gid)
    assert st is not None and not st.is_member
    assert carol in st.members()  # carol's removal, later, was not sent
    assert not any(o.kind is OpKind.REMOVE and o.target == carol for o in st.ops.values())


def _poke(w: FWorld, dev: Node, member: bytes, gid: bytes) -> list[OutFrame]:
    """``dev`` (a device taking itself for a member of ``gid``) sends ``member``'s first
    device its sender key again: the frames that device sends back to ``dev``."""
    st = dev.groups.load(gid)
    assert st is not None and st.own is not None
    dist = st.own.distribution(gid, dev.dev.identity, dev.dev.inst)
    to = w.node(member)
    fr = dev.dev.engine.send_control(member, w.directory.peer(member).installations[0],
                                     encode_control([dist]))  # fmt: skip
    to.dev.engine.receive(fr.frame)
    return [f for f in to.dev.engine.drain()[1] if f.subject == dev.dev.engine.inbox]


def test_a_void_add_is_answered_without_what_the_group_did_after() -> None:
    """Alice's add by pat turned void (bob removed pat concurrently). Pat is added back
    later, the group renamed and eve added, then pat removed again: alice's device, still
    taking itself for a member, is sent what voided her add — not pat's later removal,
    whose causal past is all the group did since."""
    w = FWorld(seed=78)
    alice, bob, carol, pat, eve = (
        w.person(name=n) for n in ("alice", "bob", "carol", "pat", "eve")
    )
    gid = w.group(bob, [carol, pat], name="crew")
    nb, np_, na = w.node(bob), w.node(pat), w.node(alice)
    w.route(nb.groups.promote(gid, pat), strict=True, frm=nb)
    rem = nb.groups.remove(gid, pat)
    w.deaf.add(nb.dev.inst)  # bob, for whom alice is out, would tell her at once
    w.route(np_.groups.add(gid, alice), frm=np_)  # concurrent with pat's removal: void
    w.deaf.discard(nb.dev.inst)
    assert na.groups.info(gid).is_member
    w.deaf.add(na.dev.inst)  # alice is away: she misses being told then
    w.route(rem, frm=nb)
    w.route(nb.groups.add(gid, pat), frm=nb)
    w.route(nb.groups.rename(gid, "secret plans"), frm=nb)
    w.route(nb.groups.add(gid, eve), frm=nb)
    w.route(nb.groups.remove(gid, pat), frm=nb)
    w.deaf.discard(na.dev.inst)
    assert na.groups.info(gid).is_member
    w.route(_poke(w, na, carol, gid), frm=w.node(carol))
    st = na.groups.load(gid)
    assert st is not None and not st.is_member
    assert st.name == "crew" and eve not in st.members()
    assert not any(o.target == eve or o.kind is OpKind.RENAME for o in st.ops.values())


def test_a_device_re_added_by_a_void_add_after_its_removal_learns_it_is_out() -> None:
    """Alice was removed, then added back by pat, whose add is void (bob removed pat
    concurrently). Alice's device holds the add: her old removal alone does not show her
    she is out; what voided the add does."""
    w = FWorld(seed=79)
    alice, bob, carol, pat = (w.person(name=n) for n in ("alice", "bob", "carol", "pat"))
    gid = w.group(bob, [alice, carol, pat], name="crew")
    nb, np_, na = w.node(bob), w.node(pat), w.node(alice)
    w.route(nb.groups.promote(gid, pat), strict=True, frm=nb)
    w.route(nb.groups.remove(gid, alice), strict=True, frm=nb)
    rem = nb.groups.remove(gid, pat)
    w.deaf.add(nb.dev.inst)
    w.route(np_.groups.add(gid, alice), frm=np_)  # concurrent with pat's removal: void
    w.deaf.discard(nb.dev.inst)
    assert na.groups.info(gid).is_member
    w.deaf.add(na.dev.inst)
    w.route(rem, frm=nb)
    w.deaf.discard(na.dev.inst)
    assert na.groups.info(gid).is_member
    w.route(_poke(w, na, carol, gid), frm=w.node(carol))
    assert not na.groups.info(gid).is_member


def test_a_busy_group_does_not_send_a_stale_device_the_same_answer_again() -> None:
    """The answer is the same until the ops that took the identity out change: a device
    that keeps sending while the group is busy is not sent it again with every op (a
    4,000-op log makes it some 900 KB); only once a day, in case it was lost."""
    w = FWorld(seed=83)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    gid = w.group(bob, [alice], name="crew")
    a2 = _stale_join(w, alice, bob, gid)
    w.deaf.add(a2.dev.inst)  # offline: it misses bob's answer
    w.route(a2.groups.join_kept_welcomes(), frm=a2)
    nb = w.node(bob)
    for i in range(3):
        w.route(nb.groups.rename(gid, f"crew {i}"), strict=True, frm=nb)
        assert _poke(w, a2, bob, gid) == []
    w.clock.now += 86_400_000
    told = _poke(w, a2, bob, gid)
    assert told
    assert _poke(w, a2, bob, gid) == []
    w.deaf.discard(a2.dev.inst)
    w.route(told, frm=nb)
    info = a2.groups.info(gid)
    assert not info.is_member and alice not in info.members
    assert info.name == "crew"


def test_a_member_is_not_told_the_ops_that_once_took_it_out() -> None:
    """Taken out, then added again: a member now, so its items get no exit ops back."""
    w = FWorld(seed=77)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    gid = w.group(bob, [alice], name="crew")
    na, nb = w.node(alice), w.node(bob)
    w.route(nb.groups.remove(gid, alice), strict=True, frm=nb)
    w.route(nb.groups.add(gid, alice), strict=True, frm=nb)
    w.route(nb.groups.rename(gid, "crew two"), strict=True, frm=nb)  # (its log moves on)
    assert na.groups.info(gid).is_member and alice in nb.groups.info(gid).members
    st = na.groups.load(gid)
    assert st is not None and st.own is not None
    dist = st.own.distribution(gid, alice, na.dev.inst)
    bob_keys = w.directory.peer(bob).installations[0]
    fr = na.dev.engine.send_control(bob, bob_keys, encode_control([dist]))
    nb.dev.engine.receive(fr.frame)
    assert [f for f in nb.dev.engine.drain()[1] if f.subject == na.dev.engine.inbox] == []


def test_what_raced_ahead_of_a_kept_welcome_is_taken_when_it_is_joined() -> None:
    """A member's sender key that reached the new device before it joined from its kept
    welcome is kept aside, and taken at the join: the member's next message reads."""
    w = FWorld(seed=78)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    gid = w.group(bob, [alice], name="crew")
    kept = w.node(alice).groups.load(gid).welcome()  # type: ignore[union-attr]
    new = w.add_device(alice)
    with new.store.transaction():
        keep_welcome(new.store, kept)
    a2, nb = w.node(alice, 1), w.node(bob)
    st = nb.groups.load(gid)
    assert st is not None and st.own is not None
    dist = st.own.distribution(gid, bob, nb.dev.inst)
    fr = nb.dev.engine.send_control(alice, new.peer_keys, encode_control([dist]))
    w.route([fr], strict=True, frm=nb)
    assert new.store.group_pending(gid)  # no group here yet: kept aside
    w.route(a2.groups.join_kept_welcomes(), frm=a2)
    assert new.store.group_pending(gid) == []
    res = nb.groups.send(gid, ContentType.TEXT, b"read me")
    w.deaf.add(w.dev(alice).inst)
    shown = w.route(res.frames, strict=True, frm=nb)
    assert [r.text for r in shown if r.conversation_id == gid] == ["read me"]
