"""Receipts cost as few bytes as possible: a reply is a receipt (its causal history names the
message), queued receipts ride on the next message, a long-running client waits a little for
that chance, and a read receipt replaces the delivered one."""

from __future__ import annotations

from chatcore.content import ContactState, ReceiptKind
from chatcore.features import DIRECT_ACK_DELAY_MS, GROUP_ACK_DELAY_MS
from chatcore.payload import MAX_HISTORY, ContentType

from . import FWorld
from . import status as _status


def test_a_reply_is_the_receipt_no_receipt_frame() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "hi bob")
    w.route(s.frames)
    assert w.f(b).queued_receipts() == 1
    assert w.f(b).flush(due_only=True) == []  # waits for a message of ours to carry it
    r = w.send_text(b, a, "hi alice")
    assert w.f(b).queued_receipts() == 0  # carried by the reply
    w.route(r.frames)
    # answering accepts alice's request and marks the conversation read: the reply says
    # "read" (it said "delivered" while the request was accepted only after it was sent)
    assert _status(w, a, s.conversation_id, s.message_id) == "read"
    assert w.f(a).pending_acks() == 0
    assert w.f(b).pending_acks() == 1  # bob's reply waits for alice's receipt
    assert w.f(a).unacked(s.conversation_id, s.message_id) == frozenset()
    w.clock.now += DIRECT_ACK_DELAY_MS + 1
    assert w.f(b).flush(due_only=True) == []  # nothing left to send for "hi bob"


def test_unanswered_receipt_goes_out_after_the_delay_batched() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    sends = [w.send_text(a, b, f"m{i}") for i in range(3)]
    for s in sends:
        w.route(s.frames)
    assert w.f(b).flush(due_only=True) == []
    w.clock.now += DIRECT_ACK_DELAY_MS
    frames = w.f(b).flush(due_only=True)
    assert len(frames) == 1  # one frame names all three
    w.route(frames, frm=w.node(b))
    conv = sends[0].conversation_id
    assert {_status(w, a, conv, s.message_id) for s in sends} == {"delivered"}
    assert w.f(a).pending_acks() == 0


def test_read_receipt_replaces_delivered_and_rides_with_read_flag() -> None:
    w = FWorld()
    a, b = w.person(), w.person(2)
    w.route(w.f(b).set_contact(a, ContactState.CONTACT))
    s = w.send_text(a, b, "read me")
    w.route(s.frames)
    conv = s.conversation_id
    assert w.f(b).mark_read(conv) == 1
    assert w.f(b)._owed(conv, ReceiptKind.DELIVERED) == {}
    assert w.f(b).queued_receipts() == 1  # only the read receipt
    r = w.send_text(b, a, "done")  # carries it, READ flag
    assert w.f(b).queued_receipts() == 0
    w.route(r.frames)
    assert _status(w, a, conv, s.message_id) == "read"
    assert w.f(a).receipts(conv, s.message_id) == {b: "read"}
    # bob's other device saw the sync copy of "done" with the READ flag: read there too
    assert _status(w, b, conv, s.message_id, dev=1) == "read"
    assert w.dev(b, 1).store.conversation(conv).unread == 0  # type: ignore[union-attr]


def test_without_read_receipts_the_reply_only_says_delivered() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    w.route(w.f(b).set_contact(a, ContactState.CONTACT))
    w.route(w.f(b).set_read_receipts(False))
    s = w.send_text(a, b, "secret reading")
    w.route(s.frames)
    w.route(w.send_text(b, a, "ok").frames)
    assert _status(w, a, s.conversation_id, s.message_id) == "delivered"


def test_history_overflow_leaves_the_rest_for_a_receipt() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    n = MAX_HISTORY + 4
    sends = [w.send_text(a, b, f"m{i}") for i in range(n)]
    for s in sends:
        w.route(s.frames)
    r = w.send_text(b, a, "reply")
    w.route(r.frames)
    assert 0 < w.f(a).pending_acks() < n  # some rode along, the rest wait
    w.route(w.f(b).flush(), frm=w.node(b))
    conv = sends[0].conversation_id
    # bob's reply made alice a contact: the rest went out as read receipts
    assert {_status(w, a, conv, s.message_id) for s in sends} <= {"delivered", "read"}
    assert w.f(a).pending_acks() == 0


def test_group_message_acknowledges_what_it_names() -> None:
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"hello group")
    w.route(s.frames, frm=w.node(a))
    for who in (b, c):
        assert w.f(who).flush(due_only=True) == []
    w.clock.now += DIRECT_ACK_DELAY_MS + 1
    assert w.f(b).flush(due_only=True) == []  # groups wait longer
    r = w.f(b).send_group_message(gid, ContentType.TEXT, b"hi all")
    w.route(r.frames, frm=w.node(b))
    assert w.f(a).receipts(gid, s.message_id) == {b: "read"}
    assert w.f(a).unacked(gid, s.message_id) == frozenset(w.dev(c).inst for _ in [0])
    w.clock.now += GROUP_ACK_DELAY_MS
    assert w.f(b).flush(due_only=True) == []  # bob's receipt rode on "hi all"
    frames = w.f(c).flush(due_only=True)
    # carol's delivered receipts, pairwise: one frame to each author (not one to the topic)
    assert sorted(f.subject for f in frames) == sorted(w.dev(x).engine.inbox for x in (a, b))
    w.route(frames, frm=w.node(c))
    w.route(w.f(a).flush(), frm=w.node(a))  # alice's receipt for "hi all"
    assert w.f(a).pending_acks() == 0 and w.f(b).pending_acks() == 0
    assert _status(w, a, gid, s.message_id) == "delivered"


def test_our_other_device_acknowledges_sync_copies_without_a_frame_of_its_own() -> None:
    """A sync copy is acknowledged by what our other device sends anyway: its own message
    in the conversation (the sync copy we get names ours), or its read receipt to our
    devices (the ids ride in it). Only when neither happens does a receipt go alone."""
    w = FWorld()
    a, b = w.person(2), w.person()
    w.route(w.f(b).set_contact(a, ContactState.CONTACT))
    first = w.send_text(a, b, "from device 0")
    w.route(first.frames)
    conv = first.conversation_id
    assert w.f(a).unacked(conv, first.message_id) == {w.dev(b).inst, w.dev(a, 1).inst}
    assert w.f(a, 1).queued_receipts() == 1
    # alice's device 1 writes in the same conversation: its sync copy names "from device 0"
    second = w.send_text(a, b, "from device 1", device=1)
    assert w.f(a, 1).queued_receipts() == 0
    w.route(second.frames, frm=w.node(a, 1))
    assert w.dev(a, 1).inst not in w.f(a).unacked(conv, first.message_id)
    # device 0 writes again; device 1 reads what bob wrote: one read receipt carries the ack
    third = w.send_text(a, b, "again from device 0")
    w.route(third.frames)
    w.route(w.f(b).flush())
    reply = w.send_text(b, a, "hello both")
    w.route(reply.frames, frm=w.node(b))
    w.f(a, 1).mark_read(conv)
    frames = w.f(a, 1).flush(due_only=True)
    w.clock.now += DIRECT_ACK_DELAY_MS + 1
    frames += w.f(a, 1).flush(due_only=True)
    own = [f for f in frames if f.subject == w.dev(a).engine.inbox]
    assert len(own) == 1  # the read receipt to device 0, with the sync-copy ack inside
    w.route(frames, frm=w.node(a, 1))
    assert w.dev(a, 1).inst not in w.f(a).unacked(conv, third.message_id)
