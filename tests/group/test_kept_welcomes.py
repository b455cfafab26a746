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


def test_a_stale_device_is_told_once_per_op_log_head() -> None:
    w = FWorld(seed=75)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    gid = w.group(bob, [alice], name="crew")
    a2 = _stale_join(w, alice, bob, gid)
    w.deaf.add(a2.dev.inst)  # offline: it misses bob's answer
    w.route(a2.groups.join_kept_welcomes(), frm=a2)
    assert a2.groups.info(gid).is_member  # not told yet
    bob_node = w.node(bob)
    st = a2.groups.load(gid)
    assert st is not None and st.own is not None
    dist = st.own.distribution(gid, alice, a2.dev.inst)
    bob_keys = w.directory.peer(bob).installations[0]

    def answers() -> list[OutFrame]:
        """Bob's answers to alice's new device sending its sender key again."""
        fr = a2.dev.engine.send_control(bob, bob_keys, encode_control([dist]))
        bob_node.dev.engine.receive(fr.frame)
        return [f for f in bob_node.dev.engine.drain()[1] if f.subject == a2.dev.engine.inbox]

    assert answers() == []  # told already (at the join), and nothing changed since
    # bob's log moves on: one more answer, then none again
    w.route(bob_node.groups.rename(gid, "crew two"), strict=True, frm=bob_node)
    told = answers()
    assert told
    assert answers() == []
    w.deaf.discard(a2.dev.inst)
    w.route(told, frm=bob_node)
    info = a2.groups.info(gid)
    assert not info.is_member and alice not in info.members
    assert info.name == "crew"  # what the group did after she was out is not hers to learn


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
