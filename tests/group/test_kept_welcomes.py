"""Kept welcomes (``keep_welcome`` / ``GroupChat.join_kept_welcomes``): a link or an
installation rotation killed before joining its groups joins them on the next sync. A kept
welcome is older than what the store may have learnt since under our previous installation
(a removal, an add): joining it must not roll that back. One welcome that fails for a
reason other than itself must not keep the others from joining."""

from __future__ import annotations

import pytest

from chatcore.errors import UntrustedIdentity
from chatcore.group import GroupState
from chatcore.groupchat import KEPT_WELCOME, encode_control, group_topic, keep_welcome
from chatcore.payload import ContentType
from tests.features import FWorld


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
