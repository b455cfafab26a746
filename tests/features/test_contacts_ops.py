"""Contacts, requests, blocking (synced across own devices); edit / delete / react / reply and
their abuse cases; conversation flags and local delete; full-text search."""

from __future__ import annotations

import pytest

from chatcore import content
from chatcore.content import ContactState
from chatcore.errors import ContentError, MalformedMessage
from chatcore.payload import ContentType
from chatcore.store import RESTORED_AT_META
from tests.engine import snapshot, texts

from . import FWorld


def test_first_message_is_a_request_then_accept_or_decline() -> None:
    w = FWorld()
    a, b, c = w.person(2), w.person(), w.person()
    s = w.send_text(b, a, "hi, it's bob")
    w.route(s.frames)
    for d in (0, 1):
        assert w.f(a, d).contact_state(b) == ContactState.REQUEST
        assert w.f(a, d).is_request(s.conversation_id)
    assert texts(w.dev(a).store, s.conversation_id) == ["hi, it's bob"]
    w.route(w.f(a).set_contact(b, ContactState.CONTACT, "Bobby"))
    assert w.f(a, 1).contact(b).alias == "Bobby"  # type: ignore[union-attr]
    assert not w.f(a, 1).is_request(s.conversation_id)
    # the sender made alice a contact by writing to her
    assert w.f(b).contact_state(a) == ContactState.CONTACT
    # carol is declined: her later messages are not shown (nor stored) on any device
    w.route(w.send_text(c, a, "carol 1").frames)
    w.route(w.f(a, 1).set_contact(c, ContactState.DECLINED))
    assert w.f(a).contact_state(c) == ContactState.DECLINED
    s2 = w.send_text(c, a, "carol 2")
    shown = w.route(s2.frames)
    assert shown == []
    for d in (0, 1):
        assert texts(w.dev(a, d).store, s2.conversation_id) == ["carol 1"]


def test_block_drops_before_storage_on_all_devices_and_unblock() -> None:
    w = FWorld()
    a, b = w.person(2), w.person()
    w.route(w.send_text(b, a, "before").frames)
    w.flush_all()
    w.route(w.f(a).set_contact(b, ContactState.BLOCKED))
    assert w.f(a, 1).contact_state(b) == ContactState.BLOCKED
    before = [snapshot(w.dev(a, d).store) for d in (0, 1)]
    s = w.send_text(b, a, "you can't see this")
    assert w.route(s.frames) == []
    for d in (0, 1):
        after = snapshot(w.dev(a, d).store)
        assert after["messages"] == before[d]["messages"]
        assert after["conversations"] == before[d]["conversations"]
        assert w.node(a, d).f.queued_receipts() == 0  # no receipt goes back either
    with pytest.raises(ContentError):
        w.send_text(a, b, "blocked people get nothing")
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))
    s = w.send_text(b, a, "after")
    w.route(s.frames)
    assert texts(w.dev(a, 1).store, s.conversation_id) == ["before", "after"]


def test_what_was_sent_during_a_block_stays_dropped_after_unblock() -> None:
    w = FWorld()
    a, b = w.person(2), w.person()
    w.route(w.send_text(b, a, "before").frames)
    w.flush_all()
    w.route(w.f(a).set_contact(b, ContactState.BLOCKED))
    blocked = w.send_text(b, a, "sent while blocked")
    assert w.route(blocked.frames) == []
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))
    # bob's client retransmits what was never acknowledged: it is still not shown
    w.clock.now += 31_000
    again = w.f(b).flush()
    assert again, "the blocked message is retransmitted (it was never acknowledged)"
    assert w.route(again, frm=w.node(b)) == []
    for d in (0, 1):
        assert texts(w.dev(a, d).store, blocked.conversation_id) == ["before"]
    after = w.send_text(b, a, "after the unblock")
    w.route(after.frames)
    assert texts(w.dev(a).store, blocked.conversation_id) == ["before", "after the unblock"]


@pytest.mark.parametrize("state", [ContactState.BLOCKED, ContactState.DECLINED])
def test_invitations_from_blocked_or_declined_identities_are_ignored(state: ContactState) -> None:
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    w.route(w.f(a).set_contact(b, state))
    gid = w.group(b, [a, c])  # b invites a (ignored) and c
    assert w.node(a).groups.load(gid) is None
    assert w.dev(a).store.conversation(gid) is None
    assert w.node(c).groups.load(gid) is not None
    s = w.f(b).send_group_message(gid, ContentType.TEXT, b"buy crypto")
    w.route(s.frames, frm=w.node(b))
    assert "buy crypto" in texts(w.dev(c).store, gid)
    assert all(r.conversation_id != gid for r in w.node(a).got)
    assert w.dev(a).store.conversation(gid) is None
    # an invitation from someone else to a group b is in is accepted
    gid2 = w.group(c, [a, b])
    assert w.node(a).groups.load(gid2) is not None


def test_unanswered_invitations_by_strangers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stranger (not a contact) can put only so many groups on our devices while we do not
    write in them; writing in one, leaving one, or making them a contact makes room."""
    from chatcore import features

    monkeypatch.setattr(features, "MAX_QUIET_INVITES_PER_STRANGER", 2)
    monkeypatch.setattr(features, "MAX_QUIET_STRANGER_INVITES", 3)
    w = FWorld()
    a, b, c, d = w.person(), w.person(), w.person(), w.person()

    def joined(gid: bytes) -> bool:
        return w.node(a).groups.load(gid) is not None and (
            w.dev(a).store.conversation(gid) is not None
        )

    w.route(w.f(d).set_contact(b, ContactState.CONTACT))  # d knows b; a does not
    b1, b2, b3 = (w.group(b, [a, d], f"b{i}") for i in range(3))
    assert joined(b1) and joined(b2) and not joined(b3)  # the third is ignored, nothing kept
    assert w.node(d).groups.load(b3) is not None  # d, whose contact b is, has it
    # we write in b1: it is answered, so b has room again
    w.route(w.f(a).send_group_message(b1, ContentType.TEXT, b"hi").frames, frm=w.node(a))
    b4 = w.group(b, [a], "b4")
    assert joined(b4)
    # the total bound: b2, b4 and c1 are unanswered; c2 is one too many
    c1, c2 = w.group(c, [a], "c1"), w.group(c, [a], "c2")
    assert joined(c1) and not joined(c2)
    # leaving one makes room
    w.route(w.node(a).groups.leave(b2), frm=w.node(a))
    c3 = w.group(c, [a], "c3")
    assert joined(c3)
    # a contact's invitations are not counted, and make them count for nothing
    w.route(w.f(a).set_contact(d, ContactState.CONTACT))
    d1, d2, d3 = (w.group(d, [a], f"d{i}") for i in range(3))
    assert joined(d1) and joined(d2) and joined(d3)
    # an invitation by a stranger and a contact (b made the group, d added us) is d's too
    assert not joined(w.group(b, [a], "b5"))  # (b4, c1, c3 unanswered: b alone gets nowhere)
    g = w.group(b, [d], "b and d")
    w.route(w.node(b).groups.promote(g, d), frm=w.node(b))
    w.route(w.node(d).groups.add(g, a), frm=w.node(d))
    assert joined(g)


def test_being_added_back_is_an_invitation_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from chatcore import features

    monkeypatch.setattr(features, "MAX_QUIET_INVITES_PER_STRANGER", 1)
    w = FWorld()
    a, b = w.person(), w.person()
    g1 = w.group(b, [a])
    w.route(w.node(a).groups.leave(g1), frm=w.node(a))  # leaving makes room ...
    g2 = w.group(b, [a])
    assert w.node(a).groups.load(g2) is not None  # ... which g2 takes
    w.route(w.node(b).groups.add(g1, a), frm=w.node(b))  # welcome and op: both refused
    st = w.node(a).groups.load(g1)
    assert st is not None and not st.is_member


def test_being_added_back_by_an_op_that_waited_is_an_invitation_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The op adding us back arrives before the op it depends on: it waits (pending) and is
    applied when that one comes; the invitation bound holds there too (found by review)."""
    from chatcore import features
    from chatcore.group.ops import OpKind
    from chatcore.groupchat import encode_control

    monkeypatch.setattr(features, "MAX_QUIET_INVITES_PER_STRANGER", 1)
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    g1 = w.group(b, [a, c])
    w.route(w.node(a).groups.leave(g1), frm=w.node(a))
    g2 = w.group(b, [a])
    assert w.node(a).groups.load(g2) is not None  # the one room is taken
    nb = w.node(b)
    nb.groups.remove(g1, c)  # op x, not delivered
    before = set(nb.groups.load(g1).ops)  # type: ignore[union-attr]
    nb.groups.add(g1, a)  # op y (on x), not delivered
    st = nb.groups.load(g1)
    assert st is not None
    (y,) = [o for oid, o in st.ops.items() if oid not in before]
    (x,) = [o for o in st.ops.values() if o.kind is OpKind.REMOVE and o.target == c]
    na, binst = w.node(a), w.dev(b).inst
    for op in (y, x):  # y waits for x, then is replayed
        with w.dev(a).store.transaction():
            na.groups.handle_control(b, binst, encode_control([op.raw]))
    sa = na.groups.load(g1)
    assert sa is not None and not sa.is_member


def test_a_restored_home_takes_its_groups_back_unbounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A home made by `recovery restore` knows no contacts and has written nowhere, and the
    members welcome its new device once: for a while every group comes in."""
    from chatcore import features

    monkeypatch.setattr(features, "MAX_QUIET_INVITES_PER_STRANGER", 1)
    w = FWorld()
    a, b = w.person(), w.person()
    with w.dev(a).store.transaction():
        restored = w.clock.now + 60_000 - features.INVITES_UNBOUNDED_AFTER_RESTORE_MS
        w.dev(a).store.set_meta(RESTORED_AT_META, str(restored).encode())
    gids = [w.group(b, [a], f"g{i}") for i in range(3)]
    assert all(w.node(a).groups.load(g) is not None for g in gids)
    w.clock.now += 60_001
    late = w.group(b, [a], "late")
    assert w.node(a).groups.load(late) is None


def test_blocked_member_in_a_group_is_not_shown() -> None:
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    w.route(w.f(c).set_contact(b, ContactState.BLOCKED))
    s = w.f(b).send_group_message(gid, ContentType.TEXT, b"noise")
    w.route(s.frames, frm=w.node(b))
    assert "noise" in texts(w.dev(a).store, gid)
    assert "noise" not in texts(w.dev(c).store, gid)


def _edit(w: FWorld, who: bytes, to: bytes, ct: ContentType, body: bytes, dev: int = 0):
    return w.node(who, dev).f.send_op(w.directory.peer(to), ct, body, w.own(who))


def test_edit_delete_react_reply_on_every_device() -> None:
    w = FWorld()
    a, b = w.person(2), w.person(2)
    s = w.send_text(a, b, "helo")
    w.route(s.frames)
    conv, mid = s.conversation_id, s.message_id
    e = _edit(w, a, b, ContentType.EDIT, content.encode_edit(mid, "hello"))
    shown = w.route(e.frames)
    assert {r.content_type for r in shown} == {ContentType.EDIT}
    r = _edit(w, b, a, ContentType.REACTION, content.encode_reaction(mid, "👍"), dev=1)
    w.route(r.frames)
    rep = w.node(b).f.send_message(
        w.directory.peer(a), ContentType.REPLY, content.encode_reply(mid, "yes!"), w.own(b)
    )
    w.route(rep.frames)
    for who in (a, b):
        for d in (0, 1):
            st = w.dev(who, d).store
            v = w.node(who, d).f.view(st.message(conv, mid))  # type: ignore[arg-type]
            assert (v.text, v.edited, v.deleted) == ("hello", True, False)
            assert v.reactions == {"👍": [b]}
            rv = w.node(who, d).f.view(st.message(conv, rep.message_id))  # type: ignore[arg-type]
            assert rv.text == "yes!" and rv.reply_to == mid
            assert len(st.history(conv)) == 2  # edits and reactions are not messages
            assert st.conversation(conv).unread in (0, 1)  # type: ignore[union-attr]
    # reaction changed, then taken back
    w.route(_edit(w, b, a, ContentType.REACTION, content.encode_reaction(mid, "🎉")).frames)
    assert w.f(a, 1).view(w.dev(a, 1).store.message(conv, mid)).reactions == {"🎉": [b]}  # type: ignore[arg-type]
    w.route(_edit(w, b, a, ContentType.REACTION, content.encode_reaction(mid, "")).frames)
    assert w.f(a).view(w.dev(a).store.message(conv, mid)).reactions == {}  # type: ignore[arg-type]
    # delete for everyone
    d = _edit(w, a, b, ContentType.DELETE, content.encode_delete(mid), dev=1)
    w.route(d.frames)
    for who in (a, b):
        for i in (0, 1):
            v = w.node(who, i).f.view(w.dev(who, i).store.message(conv, mid))  # type: ignore[arg-type]
            assert v.deleted and v.text == ""
            assert w.dev(who, i).store.message(conv, mid).body == b""  # type: ignore[union-attr]
    # acks for ops flow like for messages
    w.flush_all()
    assert w.f(a).pending_acks() == 0 and w.f(b).pending_acks() == 0


def test_spoofed_or_invalid_ops_are_rejected_and_change_nothing() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "mine")
    w.route(s.frames)
    conv, mid = s.conversation_id, s.message_id
    before = snapshot(w.dev(a).store)
    # bob edits / deletes alice's message
    for ct, body in (
        (ContentType.EDIT, content.encode_edit(mid, "pwned")),
        (ContentType.DELETE, content.encode_delete(mid)),
    ):
        with pytest.raises(ContentError):
            _edit(w, b, a, ct, body)  # refused locally already
        frames = w.f(b)._signal(a, w.own(a), ct, body)  # a hostile client sends it anyway
        with pytest.raises(ContentError):
            w.route(frames, strict=True)
    # an edit of an unknown message
    with pytest.raises(ContentError):
        w.route(
            w.f(b)._signal(a, w.own(a), ContentType.EDIT, content.encode_edit(b"\x07" * 8, "x")),
            strict=True,
        )
    # a reaction to a deleted message
    w.route(_edit(w, a, b, ContentType.DELETE, content.encode_delete(mid)).frames)
    with pytest.raises(ContentError):
        _edit(w, b, a, ContentType.REACTION, content.encode_reaction(mid, "😀"))
    # sent anyway (or racing the delete): it can never apply, so it is dropped and
    # acknowledged (else its sender would send it again for ever)
    queued = w.f(a).queued_receipts()
    late = w.f(b)._signal(a, w.own(a), ContentType.REACTION, content.encode_reaction(mid, "😀"))
    assert w.route(late, strict=True) == []
    assert w.f(a).queued_receipts() == queued + 1
    after = snapshot(w.dev(a).store)
    assert after["reactions"] == [] and after["content_ops"] != before["content_ops"]
    assert w.dev(a).store.message(conv, mid).body == b""  # type: ignore[union-attr]
    with pytest.raises(MalformedMessage):
        content.decode_targeted(ContentType.REACTION, mid + b"two words")
    with pytest.raises(ValueError):
        content.encode_reaction(mid, "x" * 40)


def test_group_ops_and_spoofs() -> None:
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"group hello")
    w.route(s.frames, frm=w.node(a))
    e = w.f(a).send_group_op(gid, ContentType.EDIT, content.encode_edit(s.message_id, "group hi"))
    w.route(e.frames, frm=w.node(a))
    r = w.f(c).send_group_op(gid, ContentType.REACTION, content.encode_reaction(s.message_id, "❤"))
    w.route(r.frames, frm=w.node(c))
    for who in (a, b, c):
        v = w.f(who).view(w.dev(who).store.message(gid, s.message_id))  # type: ignore[arg-type]
        assert v.text == "group hi" and v.reactions == {"❤": [c]}
    # b (a member, not the author) tries to edit a's message over the group topic
    from chatcore.payload import Payload

    n = w.node(b)
    p = Payload(ContentType.EDIT, 99, w.clock(), content.encode_edit(s.message_id, "spoof"))
    with n.dev.store.transaction():
        fr = n.f._group_frame(gid, p, None)
    w.route([fr], frm=n)
    assert any(isinstance(e, ContentError) for e in w.node(a).errors)
    assert w.f(a).view(w.dev(a).store.message(gid, s.message_id)).text == "group hi"  # type: ignore[arg-type]


def test_typing_is_ephemeral_rate_limited_and_expires() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "hi")
    w.route(s.frames)
    conv = s.conversation_id
    before = snapshot(w.dev(b).store)
    frames = w.f(a).send_typing(conv)
    assert w.f(a).send_typing(conv) == []  # sender side rate limit (3 s)
    shown = w.route(frames)
    assert [r.content_type for r in shown] == [ContentType.TYPING]
    assert w.f(b).typing_now(conv) == [a]
    after = snapshot(w.dev(b).store)
    assert after["messages"] == before["messages"] and after["outbox"] == before["outbox"]
    assert after["conversations"] == before["conversations"]
    # a flood (a hostile client ignoring the limit) is dropped with a typed error
    flood = w.f(a).send_typing(conv, force=True)
    with pytest.raises(ContentError):
        w.route(flood, strict=True)
    # expiry
    w.clock.now += 6_000
    assert w.f(b).typing_now(conv) == []
    # a message from the typer clears the indicator at once
    w.route(w.f(a).send_typing(conv))
    assert w.f(b).typing_now(conv) == [a]
    w.route(w.send_text(a, b, "done typing").frames)
    assert w.f(b).typing_now(conv) == []
    # group typing
    gid = w.group(a, [b])
    w.clock.now += 2_000
    w.route(w.f(a).send_typing(gid), frm=w.node(a))
    assert w.f(b).typing_now(gid) == [a]


def test_group_conversation_flags_sync_to_our_other_devices() -> None:
    w = FWorld()
    a, b = w.person(2), w.person()
    gid = w.group(b, [a])
    w.route(w.f(a).set_conversation_flags(gid, muted=True, archived=True), frm=w.node(a))
    for d in (0, 1):
        conv = w.dev(a, d).store.conversation(gid)
        assert conv is not None and conv.muted and conv.archived


def test_conversation_flags_sync_delete_is_local_and_search() -> None:
    w = FWorld()
    a, b = w.person(2), w.person()
    s1 = w.send_text(b, a, "the quick brown fox")
    w.route(s1.frames)
    s2 = w.send_text(b, a, "jumps over the lazy dog")
    w.route(s2.frames)
    conv = s1.conversation_id
    w.route(w.f(a).set_conversation_flags(conv, muted=True, archived=True))
    c1 = w.dev(a, 1).store.conversation(conv)
    assert c1 is not None and c1.muted and c1.archived
    f = w.f(a)
    assert [m.message_id for m in f.search("fox")] == [s1.message_id]
    assert [m.message_id for m in f.search("the")] == [s2.message_id, s1.message_id]
    assert f.search("cat") == []
    assert f.search('"; DROP') == []  # user text is quoted, never FTS syntax
    # edits are searchable by their new text, deletes vanish from search
    w.route(
        w.f(b)
        .send_op(
            w.directory.peer(a),
            ContentType.EDIT,
            content.encode_edit(s1.message_id, "a slow red cat"),
            w.own(b),
        )
        .frames
    )
    assert [m.message_id for m in f.search("cat")] == [s1.message_id]
    assert f.search("fox") == []
    w.route(
        w.f(b)
        .send_op(
            w.directory.peer(a), ContentType.DELETE, content.encode_delete(s2.message_id), w.own(b)
        )
        .frames
    )
    assert f.search("lazy") == []
    # delete is local: device 1 keeps it
    assert f.delete_conversation(conv) == 2
    assert w.dev(a).store.conversation(conv) is None and f.search("cat") == []
    assert len(w.dev(a, 1).store.history(conv)) == 2
    # the conversation comes back with the next message
    w.route(w.send_text(b, a, "still there?").frames)
    assert texts(w.dev(a).store, conv) == ["still there?"]


def test_membership_changes_refused_in_plain_words_and_change_nothing() -> None:
    from chatcore.errors import GroupError

    w = FWorld()
    a, b, c, d = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    ga, gb = w.node(a).groups, w.node(b).groups
    before = ga.load(gid).to_bytes()  # type: ignore[union-attr]
    cases = [
        (lambda: gb.add(gid, d), "only an admin can add"),
        (lambda: ga.add(gid, b), "already a member"),
        (lambda: ga.remove(gid, d), "not a member"),
        (lambda: ga.promote(gid, a), "already an admin"),
        (lambda: ga.remove(gid, a), "leave the group"),
    ]
    for call, words in cases:
        with pytest.raises(GroupError, match=words):
            call()
    assert ga.load(gid).to_bytes() == before  # type: ignore[union-attr]
    w.route(gb.leave(gid), frm=w.node(b))
    with pytest.raises(GroupError, match="not a member of this group"):
        gb.leave(gid)


@pytest.mark.parametrize("admin_gets_new_device", [False, True])
def test_a_new_device_with_no_other_device_gets_the_group_from_the_members(
    admin_gets_new_device: bool,
) -> None:
    """Recovery: the new installation has no own device to hand it the groups; the admins
    (or, when the recovered identity is the only admin, the members) welcome it."""
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    who = a if admin_gets_new_device else b
    new = w.add_device(who)  # no handover: an empty store, as after 'recovery restore'
    node = w.nodes[new.inst]
    assert node.groups.load(gid) is None
    for p in (a, b, c):  # every member notices the new device on its next sync
        w.route(w.node(p).groups.refresh_devices(gid), frm=w.node(p))
    st = node.groups.load(gid)
    assert st is not None and st.is_member
    other = c if who != c else b
    s = w.f(other).send_group_message(gid, ContentType.TEXT, b"for everyone")
    w.route(s.frames, frm=w.node(other))
    assert "for everyone" in texts(new.store, gid)


def _with_past_devices(w: FWorld, identity: bytes, dev: int = 0) -> None:
    """Give a device's GroupChat the chain's whole installation history, as Client does."""
    node = w.node(identity, dev)
    node.groups.past_devices = lambda ident: [
        p.installation_id for p in w.directory.installations.get(ident, [])
    ]


def test_a_welcome_signed_by_a_revoked_device_only_from_a_member() -> None:
    """The creator lost the device that made the group. A member may hand a member who
    never got it that history (it vouches for it); a stranger forwarding it is refused."""
    from chatcore.groupchat import encode_control

    w = FWorld()
    a, b, c, m = w.person(2), w.person(), w.person(), w.person()
    w.dropped.add(w.dev(c).engine.inbox)  # c misses its welcome
    gid = w.group(a, [b, c])  # made by a's device 0
    w.dropped.clear()
    assert w.node(c).groups.load(gid) is None
    w.directory.revoked.add(w.dev(a, 0).inst)
    welcome = w.node(b).groups.load(gid).welcome()  # type: ignore[union-attr]

    def hand(frm: bytes) -> None:
        with w.dev(frm).store.transaction():
            f = w.dev(frm).engine.send_control(c, w.dev(c).peer_keys, encode_control([welcome]))
        w.route([f], frm=w.node(frm))

    hand(b)  # only active signers known: the history does not verify
    assert w.node(c).groups.load(gid) is None
    _with_past_devices(w, c)
    hand(m)  # a stranger vouches for nothing
    assert w.node(c).groups.load(gid) is None
    hand(b)  # a member does
    st = w.node(c).groups.load(gid)
    assert st is not None and st.is_member and st.members() == {a, b, c}


def test_an_invitation_forwarded_for_a_blocked_identity_is_ignored() -> None:
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    w.route(w.f(a).set_contact(b, ContactState.BLOCKED))
    gid = w.group(b, [a, c])  # b's invitation to a is ignored
    assert w.node(a).groups.load(gid) is None
    from chatcore.groupchat import encode_control

    # c (not blocked) forwards the same history: it is still b's invitation
    welcome = w.node(c).groups.load(gid).welcome()  # type: ignore[union-attr]
    with w.dev(c).store.transaction():
        frame = w.dev(c).engine.send_control(a, w.dev(a).peer_keys, encode_control([welcome]))
    w.route([frame], frm=w.node(c))
    assert w.node(a).groups.load(gid) is None


def test_membership_notices_say_who_did_what() -> None:
    w = FWorld()
    a, b, c, d = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    ga = w.node(a).groups
    w.route(ga.add(gid, d), frm=w.node(a))
    w.route(ga.promote(gid, b), frm=w.node(a))
    w.route(w.node(c).groups.leave(gid), frm=w.node(c))
    w.route(ga.remove(gid, d), frm=w.node(a))

    def notices(who: bytes) -> list[tuple[bytes, str]]:
        return [
            (m.sender_identity, m.body.decode())
            for m in w.dev(who).store.history(gid, 50)
            if m.status == "system"
        ]

    short = {x: "0x" + x.hex()[:8] + "…" for x in (b, c, d)}
    assert notices(b)[0] == (a, "you were added to “g”")  # by who added us
    assert notices(d)[0] == (a, "you were added to “g”")
    assert notices(b)[1:] == [
        (a, f"added {short[d]}"),
        (a, "made you an admin"),
        (c, "left the group"),
        (a, f"removed {short[d]}"),
    ]
    assert (a, "removed you") in notices(d)


def test_a_group_made_on_our_other_device_says_this_device_joined() -> None:
    """Review finding: the creator's second device said "me: you were added"."""
    w = FWorld()
    a, b = w.person(2), w.person()
    gid = w.group(a, [b])
    notices = [
        (m.sender_identity, m.body.decode())
        for m in w.dev(a, 1).store.history(gid, 50)
        if m.status == "system"
    ]
    assert notices[0] == (a, "joined “g” on this device")


@pytest.mark.parametrize("in_group", [False, True])
def test_written_during_a_block_stays_hidden_when_it_arrives_after(in_group: bool) -> None:
    """A message can arrive long after it was written (delayed, or a group message whose
    sender key comes only later): written while blocked, it is never shown."""
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(c, [a, b]) if in_group else None
    if not in_group:
        w.route(w.send_text(b, a, "hello").frames)
    w.route(w.f(a).set_contact(b, ContactState.BLOCKED))
    w.clock.now += 5_000
    if gid is not None:
        during = w.f(b).send_group_message(gid, ContentType.TEXT, b"written while blocked")
    else:
        during = w.send_text(b, a, "written while blocked")
    w.clock.now += 5_000
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))
    w.clock.now += 5_000
    w.route(during.frames, frm=w.node(b))  # arrives only now
    conv = gid if gid is not None else during.conversation_id
    assert "written while blocked" not in texts(w.dev(a).store, conv)
    if gid is not None:
        assert "written while blocked" in texts(w.dev(c).store, conv)
    if gid is not None:
        later = w.f(b).send_group_message(gid, ContentType.TEXT, b"after the unblock")
    else:
        later = w.send_text(b, a, "after the unblock")
    w.route(later.frames, frm=w.node(b))
    assert "after the unblock" in texts(w.dev(a).store, conv)


def test_stopped_typing_and_typing_elsewhere_are_not_a_flood() -> None:
    # the receiver limits one device per conversation and state: "stopped" right after
    # "typing", and typing in a group then in a 1:1 within a second, are what users do
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "hi")
    w.route(s.frames)
    conv = s.conversation_id
    gid = w.group(a, [b])
    w.clock.now += 5_000
    w.route(w.f(a).send_typing(gid), frm=w.node(a))
    w.route(w.f(a).send_typing(conv), strict=True)
    assert w.f(b).typing_now(gid) == [a] and w.f(b).typing_now(conv) == [a]
    w.clock.now += 300
    shown = w.route(w.f(a).send_typing(conv, False), strict=True)
    assert [r.content_type for r in shown] == [ContentType.TYPING]
    assert w.f(b).typing_now(conv) == []


def test_two_devices_changing_one_setting_at_once_end_with_the_newest_change() -> None:
    """Both of alice's devices change bob's contact state (and the conversation's mute)
    before they see each other's change: both end with the newer change, whichever order
    the sync items arrive in (applied as they came, the two ended swapped for good)."""
    w = FWorld()
    a, b = w.person(2), w.person()
    s = w.send_text(b, a, "hi")
    w.route(s.frames)
    conv = s.conversation_id
    first = w.f(a, 0).set_contact(b, ContactState.BLOCKED)
    w.clock.now += 2_000
    second = w.f(a, 1).set_contact(b, ContactState.CONTACT, alias="Bobby")
    w.route(second)
    w.route(first)
    for d in (0, 1):
        c = w.f(a, d).contact(b)
        assert c is not None and (c.state, c.alias) == (ContactState.CONTACT, "Bobby")
    first = w.f(a, 1).set_conversation_flags(conv, muted=True)
    w.clock.now += 2_000
    second = w.f(a, 0).set_conversation_flags(conv, muted=False)
    w.route(second)
    w.route(first)
    assert [w.dev(a, d).store.conversation(conv).muted for d in (0, 1)] == [False, False]  # type: ignore[union-attr]
    # within one second, one device's later change still wins (they arrive in order)
    w.route(w.f(a, 0).set_contact(b, ContactState.BLOCKED))
    w.route(w.f(a, 0).set_contact(b, ContactState.NONE))
    assert [w.f(a, d).contact_state(b) for d in (0, 1)] == [ContactState.NONE] * 2
    # a removed contact keeps its stamp: an earlier change from the other device, arriving
    # after the removal, stays older
    w.clock.now += 5_000
    late = w.f(a, 1).set_contact(b, ContactState.BLOCKED)
    w.clock.now += 2_000
    w.route(w.f(a, 0).set_contact(b, ContactState.NONE))
    w.route(late)
    assert [w.f(a, d).contact_state(b) for d in (0, 1)] == [ContactState.NONE] * 2


def test_a_device_whose_clock_is_behind_still_makes_the_later_change() -> None:
    """Device 1 sees device 0 block bob, then unblocks him (in the same second, or with its
    clock 30 s behind): its change is the later one and must win on both devices (stamped
    with its own clock, device 0 dropped it and the two stayed apart: blocked on one)."""
    w = FWorld()
    a, b = w.person(2), w.person()
    s = w.send_text(b, a, "hi")
    w.route(s.frames)
    conv = s.conversation_id
    for back in (0, 30_000):
        w.clock.now += 60_000
        w.route(w.f(a, 0).set_contact(b, ContactState.BLOCKED))
        w.route(w.f(a, 0).set_read_receipts(False))
        w.route(w.f(a, 0).set_conversation_flags(conv, muted=True))
        assert w.f(a, 1).contact_state(b) == ContactState.BLOCKED
        w.clock.now += 400 - back
        w.route(w.f(a, 1).set_contact(b, ContactState.CONTACT))
        w.route(w.f(a, 1).set_read_receipts(True))
        w.route(w.f(a, 1).set_conversation_flags(conv, muted=False))
        w.clock.now += back
        assert [w.f(a, d).contact_state(b) for d in (0, 1)] == [ContactState.CONTACT] * 2
        assert [w.f(a, d).read_receipts for d in (0, 1)] == [True, True]
        assert [w.dev(a, d).store.conversation(conv).muted for d in (0, 1)] == [False, False]  # type: ignore[union-attr]


def test_device_sync_from_another_identity_is_refused_and_changes_nothing() -> None:
    """Only our own devices may change our contacts, settings or owner key: a DEVICE_SYNC
    from anyone else (a contact's hostile client) is refused and changes nothing."""
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    w.route(w.send_text(b, a, "hello").frames)
    for item in (
        content.SyncContact(c, ContactState.BLOCKED, "spam"),
        content.SyncSetting(False),
        content.SyncOwnerKey(b"\x07" * 32),
    ):
        frames = w.f(b)._signal(a, w.own(a), ContentType.DEVICE_SYNC, content.encode_sync(item))
        with pytest.raises(ContentError):
            w.route(frames, strict=True)
    assert w.f(a).contact_state(c) == ContactState.NONE
    assert w.f(a).read_receipts
    assert w.dev(a).store.get_secret("owner_key_update") is None


@pytest.mark.parametrize("bad", [7, -1, "contact"])
def test_set_contact_with_no_contact_state_changes_nothing(bad: object) -> None:
    """A state that is no ContactState (an app's own int, a string) is refused before the
    store is written: it used to be stored, and every later contacts() (and create_group,
    which reads them) raised ValueError for good."""
    w = FWorld()
    a, b = w.person(), w.person()
    w.route(w.f(a).set_contact(b, ContactState.CONTACT, "Bobby"))
    with pytest.raises(ValueError):
        w.f(a).set_contact(b, bad)  # type: ignore[arg-type]
    assert w.f(a).contact_state(b) == ContactState.CONTACT
    assert [(c.identity_id, c.alias) for c in w.f(a).contacts()] == [(b, "Bobby")]


def test_a_message_deleted_for_everyone_is_no_longer_unread() -> None:
    """Unread counts what the user can still read: a deletion takes the message out of the
    count on every device, and a later recount (a read on another device) agrees."""
    w = FWorld()
    a, b = w.person(), w.person(2)
    s1, s2 = w.send_text(a, b, "one"), w.send_text(a, b, "two")
    w.route(s1.frames + s2.frames)
    conv = s1.conversation_id
    for d in (0, 1):
        assert w.dev(b, d).store.conversation(conv).unread == 2  # type: ignore[union-attr]
    w.route(_edit(w, a, b, ContentType.DELETE, content.encode_delete(s1.message_id)).frames)
    for d in (0, 1):
        assert w.dev(b, d).store.conversation(conv).unread == 1  # type: ignore[union-attr]
    w.route(w.f(b).set_contact(a, ContactState.CONTACT))
    assert w.f(b).mark_read(conv) == 1  # only the message that is left
    w.route(w.node(b).f.flush(), frm=w.node(b))
    assert w.dev(b, 1).store.conversation(conv).unread == 0  # type: ignore[union-attr]


def test_one_device_stopping_does_not_hide_another_still_typing() -> None:
    """alice types on two devices; one stops (or sends): she is still typing on the other."""
    w = FWorld()
    a, b = w.person(2), w.person()
    s = w.send_text(a, b, "hi")
    w.route(s.frames)
    conv = s.conversation_id
    w.route(w.node(a, 0).f.send_typing(conv), frm=w.node(a, 0))
    w.route(w.node(a, 1).f.send_typing(conv), frm=w.node(a, 1))
    assert w.f(b).typing_now(conv) == [a]
    w.clock.now += 1_500
    w.route(w.node(a, 1).f.send_typing(conv, False), frm=w.node(a, 1))
    assert w.f(b).typing_now(conv) == [a]  # device 0 still types
    w.route(w.send_text(a, b, "from device 0").frames)
    assert w.f(b).typing_now(conv) == []


def test_message_numbers_are_never_given_out_again_after_a_deletion() -> None:
    """``seq`` orders what this device stored (the history forwarded to a newly linked
    device is everything past a seq): deleting the conversation that held the newest ones
    handed their numbers out again, so later messages could fall behind such a cut."""
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    w.route(w.send_text(a, b, "first").frames)
    last = w.send_text(c, b, "newest")
    w.route(last.frames)
    store = w.dev(b).store
    top = store.message(last.conversation_id, last.message_id).seq  # type: ignore[union-attr]
    w.f(b).delete_conversation(last.conversation_id)
    later = w.send_text(a, b, "after the deletion")
    w.route(later.frames)
    assert store.message(later.conversation_id, later.message_id).seq > top  # type: ignore[union-attr]


def test_typing_in_a_conversation_not_here_is_not_shown() -> None:
    """A typing indicator for a conversation this device does not have (never written, or
    deleted here) was yielded as an event whose conversation id names nothing here: an app
    asking ``is_request`` or ``mark_read`` of it got UnknownContact. Nothing shows it now;
    the next message brings the conversation back as before."""
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "hi")
    w.route(s.frames, strict=True)
    conv = s.conversation_id
    w.f(b).delete_conversation(conv)
    assert w.dev(b).store.conversation(conv) is None
    assert w.route(w.f(a).send_typing(conv), strict=True) == []
    assert w.f(b).typing_now(conv) == []
    assert [r.text for r in w.route(w.send_text(a, b, "again").frames, strict=True)] == ["again"]
    w.clock.now += 4_000
    shown = w.route(w.f(a).send_typing(conv), strict=True)
    assert [r.content_type for r in shown] == [ContentType.TYPING]
    assert w.f(b).typing_now(conv) == [a]
