"""What a peer's odd or hostile content must not do (found by the seventh session's review):
reserved content types, clocks a little apart at an unblock, ops that can never apply,
edits that grow the store unseen, two devices editing at once, the search index after a
conversation is deleted, typing to someone blocked."""

from __future__ import annotations

import pytest

from chatcore import content
from chatcore.content import ContactState
from chatcore.errors import ContentError, MalformedMessage
from chatcore.payload import MAX_BODY, ContentType
from tests.engine import texts

from . import FWorld


def test_a_reserved_content_type_is_refused_and_stores_nothing() -> None:
    """CONTACT_REQUEST (9) is reserved (a first message is the request): a client sending
    it got it stored as a plain message that skipped the request and block rules."""
    w = FWorld()
    a, m = w.person(), w.person()
    res = w.dev(m).engine.send(w.directory.peer(a), ContentType.CONTACT_REQUEST, b"click me")
    with pytest.raises(ContentError, match="not a content type"):
        w.route(res.frames, strict=True)
    assert w.dev(a).store.history(res.conversation_id) == []
    assert w.f(a).contact_state(m) == ContactState.NONE


def test_a_message_written_just_after_an_unblock_is_shown() -> None:
    """Sent-at travels in whole seconds: a message written 0.4 s after the unblock, in the
    same second, was taken for one written during the block, hidden, never acknowledged,
    and sent again for ever."""
    w = FWorld()
    a, b = w.person(), w.person()
    w.route(w.send_text(b, a, "hi").frames, strict=True)
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))
    w.flush_all()
    w.route(w.f(a).set_contact(b, ContactState.BLOCKED))
    w.clock.now += 600_000
    w.clock.now = (w.clock.now // 1000) * 1000 + 300
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))
    w.clock.now += 400
    s = w.send_text(b, a, "written after you unblocked me")
    w.route(s.frames, strict=True)
    assert texts(w.dev(a).store, s.conversation_id)[-1] == "written after you unblocked me"
    w.flush_all()
    assert w.f(b).pending_acks() == 0


def test_what_was_written_during_a_block_is_acknowledged_once_unblocked() -> None:
    """It stays hidden, but its author stops sending it."""
    w = FWorld()
    a, b = w.person(), w.person()
    w.route(w.send_text(b, a, "hi").frames, strict=True)
    w.flush_all()
    w.route(w.f(a).set_contact(b, ContactState.BLOCKED))
    w.clock.now += 60_000
    during = w.send_text(b, a, "written while blocked")
    w.clock.now += 60_000
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))
    w.route(during.frames)
    w.flush_all()
    assert "written while blocked" not in texts(w.dev(a).store, during.conversation_id)
    assert w.f(b).pending_acks() == 0


def test_deleting_a_conversation_keeps_what_was_dropped_dropped() -> None:
    w = FWorld()
    a, m = w.person(), w.person()
    w.route(w.send_text(m, a, "first").frames, strict=True)
    w.flush_all()
    spam = w.send_text(m, a, "written before the block, arriving during it")
    w.route(w.f(a).set_contact(m, ContactState.BLOCKED))
    w.clock.now += 60_000
    w.route(spam.frames)  # dropped: its id is remembered
    w.f(a).delete_conversation(spam.conversation_id)
    w.clock.now += 60_000
    w.route(w.f(a).set_contact(m, ContactState.CONTACT))
    w.clock.now += 3_600_000
    w.route(w.node(m).f.flush(), frm=w.node(m))  # sent again
    assert texts(w.dev(a).store, spam.conversation_id) == []


def test_search_finds_messages_stored_after_a_conversation_was_deleted() -> None:
    """SQLite hands the freed highest rowids out again; the index skipped them."""
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    w.route(w.send_text(b, a, "older conversation").frames, strict=True)
    for i in range(3):
        w.route(w.send_text(c, a, f"spam {i}").frames, strict=True)
    assert len(w.f(a).search("spam")) == 3
    w.f(a).delete_conversation(w.send_text(a, c, "bye").conversation_id)
    for i in range(3):
        w.route(w.send_text(b, a, f"pineapple {i}").frames, strict=True)
    assert sorted(m.body.decode() for m in w.f(a).search("pineapple")) == [
        "pineapple 0", "pineapple 1", "pineapple 2",
    ]  # fmt: skip
    assert w.f(a).search("spam") == []


def test_a_reaction_racing_a_delete_is_dropped_and_acknowledged() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "hello")
    w.route(s.frames, strict=True)
    w.route(w.f(b).set_contact(a, ContactState.CONTACT))
    w.flush_all()
    react = w.f(b).send_op(
        w.directory.peer(a), ContentType.REACTION,
        content.encode_reaction(s.message_id, "👍"), w.own(b),
    )  # fmt: skip
    dele = w.f(a).send_op(
        w.directory.peer(b), ContentType.DELETE, content.encode_delete(s.message_id), w.own(a)
    )
    w.route(dele.frames)
    w.route(react.frames, strict=True)  # no error: it can never apply
    w.flush_all()
    assert w.f(b).pending_acks() == 0 and w.f(a).pending_acks() == 0
    w.clock.now += 86_400_000
    assert w.node(b).f.flush() == []  # nothing is sent again


def test_a_peers_edits_do_not_grow_the_store_unseen() -> None:
    w = FWorld()
    a, m = w.person(), w.person()
    s = w.send_text(m, a, "hi")
    w.route(s.frames, strict=True)
    peer_a = w.directory.peer(a)
    huge = s.message_id + b"A" * (MAX_BODY - 64)  # beyond the 16 KiB of a text
    with pytest.raises(MalformedMessage, match="longer than"):
        w.route(w.f(m).send_op(peer_a, ContentType.EDIT, huge, ()).frames, strict=True)
    big = "B" * (content.MAX_TEXT_BYTES - 8)
    for i in range(20):
        body = content.encode_edit(s.message_id, f"{i:02}{big}")
        w.route(w.f(m).send_op(peer_a, ContentType.EDIT, body, ()).frames, strict=True)
    (n, size) = w.dev(a).store._x("SELECT COUNT(*), SUM(LENGTH(body)) FROM content_ops").fetchone()
    assert n == 20 and size == 19 * content.MID + content.MID  # only ids are kept
    shown = w.f(a).view(w.dev(a).store.message(s.conversation_id, s.message_id))  # type: ignore[arg-type]
    assert shown.text == f"19{big}"
    # the sender keeps its own whole (it may send them again)
    (size_m,) = w.dev(m).store._x("SELECT SUM(LENGTH(body)) FROM content_ops").fetchone()
    assert size_m > 20 * content.MAX_TEXT_BYTES - 20 * 16


def test_two_devices_editing_or_reacting_at_once_end_the_same_everywhere() -> None:
    w = FWorld()
    a, b = w.person(2), w.person()
    s = w.send_text(a, b, "original")
    w.route(s.frames, strict=True)
    w.route(w.f(b).set_contact(a, ContactState.CONTACT))
    w.flush_all()
    conv, mid = s.conversation_id, s.message_id
    peer_b = w.directory.peer(b)
    e0 = w.f(a, 0).send_op(
        peer_b, ContentType.EDIT, content.encode_edit(mid, "edit from phone"), w.own(a)
    )
    e1 = w.f(a, 1).send_op(
        peer_b, ContentType.EDIT, content.encode_edit(mid, "edit from laptop"), w.own(a)
    )
    assert e0.lamport == e1.lamport
    w.route(e0.frames, frm=w.node(a, 0))
    w.route(e1.frames, frm=w.node(a, 1))
    w.flush_all()
    shown = {
        w.f(who, d).view(w.dev(who, d).store.message(conv, mid)).text  # type: ignore[arg-type]
        for who, d in ((a, 0), (a, 1), (b, 0))
    }
    assert shown == {"edit from phone"}  # the larger text, at every device
    react = ContentType.REACTION
    r0 = w.f(a, 0).send_op(peer_b, react, content.encode_reaction(mid, "👍"), w.own(a))
    r1 = w.f(a, 1).send_op(peer_b, react, content.encode_reaction(mid, "🎉"), w.own(a))
    assert r0.lamport == r1.lamport
    w.route(r1.frames, frm=w.node(a, 1))
    w.route(r0.frames, frm=w.node(a, 0))
    w.flush_all()
    reactions = {
        repr(w.f(who, d).view(w.dev(who, d).store.message(conv, mid)).reactions)  # type: ignore[arg-type]
        for who, d in ((a, 0), (a, 1), (b, 0))
    }
    assert len(reactions) == 1, reactions


def test_no_typing_indicator_goes_to_someone_blocked() -> None:
    w = FWorld()
    a, m = w.person(), w.person()
    s = w.send_text(m, a, "hey")
    w.route(s.frames, strict=True)
    w.route(w.f(a).set_contact(m, ContactState.BLOCKED))
    assert w.f(a).send_typing(s.conversation_id) == []
    assert w.f(m).typing_now(s.conversation_id) == []


def test_an_edit_racing_a_delete_is_dropped_and_the_text_stays_gone() -> None:
    """Deleted for everyone means gone: an edit that arrives after the delete (sent before
    it reached its author's other device, or by a client that ignores it) does not bring
    text back, not even to search; it is acknowledged so that it is not sent again. Our
    own device refuses to edit a deleted message."""
    w = FWorld()
    a, b = w.person(2), w.person()
    s = w.send_text(a, b, "secret plan")
    w.route(s.frames)
    conv, mid = s.conversation_id, s.message_id
    late = w.f(a, 1).send_op(
        w.directory.peer(b), ContentType.EDIT, content.encode_edit(mid, "secret plan v2"),
        w.own(a),
    )  # fmt: skip
    d = w.f(a).send_op(
        w.directory.peer(b), ContentType.DELETE, content.encode_delete(mid), w.own(a)
    )
    w.route(d.frames, strict=True)
    queued = w.f(b).queued_receipts()
    assert w.route([f for f in late.frames if f.subject == w.dev(b).engine.inbox]) == []
    assert w.f(b).queued_receipts() == queued + 1
    m = w.dev(b).store.message(conv, mid)
    assert m is not None and m.body == b""
    v = w.f(b).view(m)
    assert v.deleted and v.text == "" and not v.edited
    (edited,) = (
        w.dev(b)
        .store._x(
            "SELECT edited_body FROM messages WHERE conversation_id=? AND message_id=?", (conv, mid)
        )
        .fetchone()
    )
    assert edited is None
    assert w.f(b).search("plan") == []
    with pytest.raises(ContentError):
        w.f(a).send_op(
            w.directory.peer(b), ContentType.EDIT, content.encode_edit(mid, "again"), w.own(a)
        )


def test_no_typing_indicator_goes_to_a_stranger_not_accepted() -> None:
    """A stranger's first message makes a request: our typing went to them while we had not
    accepted it, or had declined it (as a read receipt would, it tells them we are here and
    reading). Only once we accept (a reply does) do they see it."""
    w = FWorld()
    a, m = w.person(), w.person()
    s = w.send_text(m, a, "hey, it's me")
    w.route(s.frames, strict=True)
    conv = s.conversation_id
    assert w.f(a).contact_state(m) == ContactState.REQUEST
    assert w.f(a).send_typing(conv, force=True) == []
    w.route(w.f(a).set_contact(m, ContactState.DECLINED))
    assert w.f(a).send_typing(conv, force=True) == []
    assert w.f(m).typing_now(conv) == []
    w.route(w.send_text(a, m, "oh hi").frames)  # a reply accepts the request
    w.route(w.f(a).send_typing(conv, force=True), strict=True)
    assert w.f(m).typing_now(conv) == [a]
