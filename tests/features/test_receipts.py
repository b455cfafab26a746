"""Receipts (sent → delivered → read, batched, per recipient / member) and end-to-end
retransmission driven by them (chatcore.reliability wired through chatcore.features)."""

from __future__ import annotations

import pytest

from chatcore import content
from chatcore.content import ContactState, ReceiptKind
from chatcore.engine import OutFrame, direct_conversation_id
from chatcore.errors import ContentError
from chatcore.payload import ContentType, Payload

from . import FWorld
from . import status as _status


def test_sent_delivered_read_on_every_device_batched() -> None:
    w = FWorld()
    a, b = w.person(2), w.person(2)
    sends = [w.send_text(a, b, f"m{i}") for i in range(3)]
    conv = sends[0].conversation_id
    for s in sends:
        for f in s.frames:
            w.dev(a).engine.acknowledged(f.outbox_id)
    assert _status(w, a, conv, sends[0].message_id) == "sent"
    for s in sends:
        w.route(s.frames)
    assert w.f(a).pending_acks() == 3
    # bob's two devices each send ONE delivered receipt naming all three, to the device
    # that wrote them (the one waiting for the ack); alice's other device is not told
    frames = w.node(b).f.flush()
    assert [f.subject for f in frames] == [w.dev(a).engine.inbox]
    w.route(frames, frm=w.node(b))
    w.route(w.node(b, 1).f.flush(), frm=w.node(b, 1))
    assert {_status(w, a, conv, s.message_id, 0) for s in sends} == {"delivered"}
    assert {_status(w, a, conv, s.message_id, 1) for s in sends} == {"sent"}
    # still waiting for alice's other device: it got sync copies, and acknowledges them
    assert w.f(a).pending_acks() == 3
    own = w.node(a, 1).f.flush()
    assert len(own) == 1  # one batched receipt, to alice's device 0
    w.route(own, frm=w.node(a, 1))
    assert w.f(a).pending_acks() == 0
    # alice wrote first: a request for bob; read receipts only once bob accepted her
    assert w.f(b).contact_state(a) == ContactState.REQUEST
    w.route(w.f(b).set_contact(a, ContactState.CONTACT))
    assert w.f(b, 1).contact_state(a) == ContactState.CONTACT
    # bob reads on device 0: read receipts to alice, read state to bob's device 1
    assert w.dev(b, 1).store.conversation(conv).unread == 3  # type: ignore[union-attr]
    assert w.f(b).mark_read(conv) == 3
    w.route(w.node(b).f.flush(), frm=w.node(b))
    for d in (0, 1):  # "read" reaches every device of alice
        assert {_status(w, a, conv, s.message_id, d) for s in sends} == {"read"}
    assert w.dev(b, 1).store.conversation(conv).unread == 0  # type: ignore[union-attr]
    v = w.f(a).view(w.dev(a).store.message(conv, sends[0].message_id))  # type: ignore[arg-type]
    assert v.receipts == {b: "read"}
    # status never goes back: a late "delivered" does not undo "read"
    late = content.encode_receipt(ReceiptKind.DELIVERED, [sends[0].message_id])
    frames = w.f(b)._signal(a, w.own(a), ContentType.RECEIPT, late)
    w.route(frames)
    assert _status(w, a, conv, sends[0].message_id) == "read"


def test_read_receipts_switched_off() -> None:
    w = FWorld()
    a, b = w.person(), w.person(2)
    s = w.send_text(a, b, "hi")
    w.route(s.frames)
    w.flush_all()
    assert _status(w, a, s.conversation_id, s.message_id) == "delivered"
    w.route(w.f(b).set_contact(a, ContactState.CONTACT))
    frames = w.f(b).set_read_receipts(False)
    w.route(frames)
    assert not w.f(b, 1).read_receipts  # the setting synced to bob's other device
    w.f(b).mark_read(s.conversation_id)
    out = w.node(b).f.flush()
    assert all(f.subject != w.dev(a).engine.inbox for f in out)  # nothing to alice
    w.route(out)
    assert _status(w, a, s.conversation_id, s.message_id) == "delivered"
    assert w.dev(b, 1).store.conversation(s.conversation_id).unread == 0  # type: ignore[union-attr]


def test_accepting_a_request_sends_read_receipts_for_what_was_read_before() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(b, a, "hello stranger")
    w.route(s.frames)
    assert w.f(a).mark_read(s.conversation_id) == 1
    w.flush_all()
    assert _status(w, b, s.conversation_id, s.message_id) == "delivered"  # a request: no read
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))
    w.flush_all()
    assert _status(w, b, s.conversation_id, s.message_id) == "read"


def test_accepting_a_request_killed_midway_still_sends_the_read_receipts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Crash review: ``requests accept`` made the request a contact in one transaction and
    queued the read receipts of what was read meanwhile after it. A process killed in
    between had accepted the request with nothing queued, and accepting again (a contact
    now) queued nothing either: the author saw "delivered" for good. Both commit together."""
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(b, a, "hello stranger")
    w.route(s.frames)
    assert w.f(a).mark_read(s.conversation_id) == 1
    w.flush_all()

    def killed(*args: object) -> None:
        raise SystemExit("killed")  # the process dies here

    with monkeypatch.context() as m:
        m.setattr(type(w.f(a)), "_queue_read_of_earlier", killed)
        with pytest.raises(SystemExit):
            w.f(a).set_contact(b, ContactState.CONTACT)
    w.restart(w.dev(a))
    w.route(w.f(a).set_contact(b, ContactState.CONTACT))  # the user accepts again
    w.flush_all()
    assert w.f(a).contact(b).state == ContactState.CONTACT  # type: ignore[union-attr]
    assert _status(w, b, s.conversation_id, s.message_id) == "read"


def test_lost_frame_is_retransmitted_with_backoff_until_acknowledged() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    w.route(w.send_text(a, b, "first").frames)  # a session exists
    w.flush_all()
    w.dropped.add(w.dev(b).engine.inbox)
    s = w.send_text(a, b, "lost on the way")
    w.route(s.frames)
    w.dropped.clear()
    assert w.dev(b).store.message(s.conversation_id, s.message_id) is None
    assert w.f(a).flush() == []  # not due yet
    w.clock.now += 31_000
    again = w.f(a).flush()
    assert len(again) == 1 and again[0].frame != s.frames[0].frame  # re-encrypted
    w.route(again)
    assert w.dev(b).store.message(s.conversation_id, s.message_id) is not None
    w.flush_all()
    assert w.f(a).pending_acks() == 0
    assert _status(w, a, s.conversation_id, s.message_id) == "delivered"
    w.clock.now += 10**7
    assert w.f(a).flush() == []


def test_lost_sync_copy_is_retransmitted_to_our_other_device() -> None:
    """Our other devices are recipients too: a sync copy lost on the way comes back (as a
    sync copy, re-encrypted) until that device acknowledges it; it is shown once."""
    w = FWorld()
    a, b = w.person(2), w.person()
    w.route(w.send_text(a, b, "first").frames)
    w.flush_all()
    assert w.f(a).pending_acks() == 0
    w.dropped.add(w.dev(a, 1).engine.inbox)
    s = w.send_text(a, b, "my other device misses this")
    w.route(s.frames)
    w.dropped.clear()
    w.flush_all()  # bob acknowledges; alice's device 1 has nothing to acknowledge
    assert w.f(a).unacked(s.conversation_id, s.message_id) == {w.dev(a, 1).inst}
    assert w.dev(a, 1).store.message(s.conversation_id, s.message_id) is None
    w.clock.now += 31_000
    again = w.f(a).flush()
    assert len(again) == 1 and again[0].subject == w.dev(a, 1).engine.inbox
    w.route(again)
    m = w.dev(a, 1).store.message(s.conversation_id, s.message_id)
    assert m is not None and m.outgoing and m.body == b"my other device misses this"
    w.flush_all()
    assert w.f(a).pending_acks() == 0
    w.route(w.f(a).flush())  # nothing due, and a duplicate copy would be stored once
    assert len(w.dev(a, 1).store.history(s.conversation_id)) == 2


def test_lost_receipt_duplicate_is_acked_again_and_stored_once() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "hello")
    w.route(s.frames)
    w.node(b).f.flush()  # the receipt is lost
    w.clock.now += 31_000
    w.route(w.f(a).flush())  # retransmission: bob already has it
    assert len(w.dev(b).store.history(s.conversation_id)) == 1
    w.flush_all()
    assert w.f(a).pending_acks() == 0
    # backoff doubles: after the first retransmission the next one waits 60 s
    s2 = w.send_text(a, b, "again")
    w.clock.now += 31_000
    assert len(w.f(a).flush()) == 1
    w.clock.now += 31_000
    assert w.f(a).flush() == []
    w.clock.now += 30_000
    assert len(w.f(a).flush()) == 1
    del s2


def test_reliability_survives_restart() -> None:
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "x")
    w.restart(w.dev(a))
    assert w.f(a).pending_acks() == 1
    w.route(s.frames)
    w.flush_all()
    assert w.f(a).pending_acks() == 0


def test_bad_receipts_are_rejected_and_change_nothing() -> None:
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    s = w.send_text(a, b, "to bob")
    w.route(s.frames)
    w.route(w.send_text(c, a, "carol here").frames)
    n = w.node(a)
    # carol names alice→bob's message: unknown in alice↔carol
    body = content.encode_receipt(ReceiptKind.READ, [s.message_id])
    with pytest.raises(ContentError):
        w.route(w.f(c)._signal(a, w.own(a), ContentType.RECEIPT, body), strict=True)
    # unknown ids
    body = content.encode_receipt(ReceiptKind.DELIVERED, [b"\x01" * 8])
    with pytest.raises(ContentError):
        w.route(w.f(b)._signal(a, w.own(a), ContentType.RECEIPT, body), strict=True)
    # bob "acknowledges" his own message (a spoofed receipt)
    assert _status(w, a, s.conversation_id, s.message_id) == "sending"
    assert n.f.receipts(s.conversation_id, s.message_id) == {}
    r = w.send_text(b, a, "from bob")  # names "to bob" in its causal history: a receipt
    w.route(r.frames)
    assert _status(w, a, s.conversation_id, s.message_id) == "read"  # (answering reads)
    body = content.encode_receipt(ReceiptKind.READ, [r.message_id])
    with pytest.raises(ContentError):
        w.route(w.f(b)._signal(a, w.own(a), ContentType.RECEIPT, body), strict=True)
    assert _status(w, a, s.conversation_id, s.message_id) == "read"
    assert w.dev(a).store.message(r.conversation_id, r.message_id).status == "received"  # type: ignore[union-attr]
    assert n.f.receipts(s.conversation_id, s.message_id) == {b: "read"}
    # malformed receipt bodies are MalformedMessage (typed) too
    with pytest.raises(Exception) as ei:
        content.decode_receipt(b"\x09" + b"\x00" * 8)
    assert type(ei.value).__name__ == "MalformedMessage"


def test_group_receipts_per_member() -> None:
    w = FWorld()
    a, b, c = w.person(), w.person(2), w.person()
    gid = w.group(a, [b, c])
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"hello group")
    w.route(s.frames, frm=w.node(a))
    assert w.f(a).unacked(gid, s.message_id) == frozenset(
        {w.dev(b, 0).inst, w.dev(b, 1).inst, w.dev(c).inst}
    )
    w.route(w.node(b).f.flush(), frm=w.node(b))
    w.route(w.node(c).f.flush(), frm=w.node(c))
    v = w.f(a).view(w.dev(a).store.message(gid, s.message_id))  # type: ignore[arg-type]
    assert v.receipts == {b: "delivered", c: "delivered"}
    assert _status(w, a, gid, s.message_id) == "delivered"
    assert w.f(a).unacked(gid, s.message_id) == frozenset({w.dev(b, 1).inst})
    w.route(w.node(b, 1).f.flush(), frm=w.node(b, 1))
    assert w.f(a).pending_acks() == 0
    w.f(b).mark_read(gid)
    w.route(w.node(b).f.flush(), frm=w.node(b))
    v = w.f(a).view(w.dev(a).store.message(gid, s.message_id))  # type: ignore[arg-type]
    assert v.receipts == {b: "read", c: "delivered"}
    assert _status(w, a, gid, s.message_id) == "delivered"  # not everyone read it yet
    w.f(c).mark_read(gid)
    w.route(w.node(c).f.flush(), frm=w.node(c))
    assert _status(w, a, gid, s.message_id) == "read"
    # bob's other device learned the read state from the group receipt of bob's device 0
    assert w.dev(b, 1).store.conversation(gid).unread == 0  # type: ignore[union-attr]


def test_receipt_is_small_and_text_overhead_unchanged() -> None:
    body = content.encode_receipt(ReceiptKind.DELIVERED, [b"\x00" * 8] * 10)
    assert len(body) == 81
    p = Payload(ContentType.TEXT, 5, 1_800_000_000_000, b"x" * 200, (b"abcd",) * 2)
    assert len(p.encode()) - 200 == 15  # type+flags, lamport, sent-at, history: no new bytes
    assert direct_conversation_id(b"a" * 32, b"b" * 32) == direct_conversation_id(
        b"b" * 32, b"a" * 32
    )


def test_group_receipts_go_pairwise_to_the_author_only() -> None:
    """A member's receipt reaches the author's devices (and, for "read", the member's own
    other devices), never the group topic: the other members do not get it."""
    w = FWorld()
    a, b, c = w.person(2), w.person(2), w.person()
    gid = w.group(a, [b, c])
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"hello group")
    w.route(s.frames, frm=w.node(a))
    w.f(b).mark_read(gid)
    frames = w.f(b).flush()
    inboxes = {w.dev(a, i).engine.inbox for i in (0, 1)} | {w.dev(b, 1).engine.inbox}
    assert frames and {f.subject for f in frames} == inboxes  # nothing for carol, no topic
    w.route(frames, frm=w.node(b))
    for i in (0, 1):
        assert w.f(a, i).receipts(gid, s.message_id) == {b: "read"}
    assert w.f(c).receipts(gid, s.message_id) == {}
    assert w.dev(b, 1).store.conversation(gid).unread == 0  # type: ignore[union-attr]
    # a pairwise group receipt from a non-member, or naming a group we do not share, fails
    from chatcore.content import encode_group_receipt

    d = w.person()
    body = encode_group_receipt(gid, ReceiptKind.DELIVERED, [s.message_id])
    forged = w.node(d).f._signal(a, w.own(a), ContentType.GROUP_RECEIPT, body)
    w.route(forged, frm=w.node(d))
    assert any(isinstance(e, ContentError) for e in w.node(a).errors)
    assert w.f(a).receipts(gid, s.message_id) == {b: "read"}


def test_a_refused_own_op_is_not_acknowledged_so_it_comes_again() -> None:
    """Our other device's edit arrives before the message it edits: it is refused, and
    not acknowledged, so the retransmission brings it once the message is here."""
    w = FWorld()
    a, b = w.person(2), w.person()
    w.route(w.send_text(a, b, "hello").frames)  # sessions exist
    w.flush_all()
    msg = w.send_text(a, b, "helo", device=1)
    edit = w.node(a, 1).f.send_op(
        w.directory.peer(b), ContentType.EDIT, content.encode_edit(msg.message_id, "hi!"),
        w.own(a),
    )  # fmt: skip
    to_dev0 = [f for f in edit.frames if f.subject == w.dev(a, 0).engine.inbox]
    w.route(to_dev0, frm=w.node(a, 1))  # device 0 gets the edit first: refused
    assert w.f(a, 0).queued_receipts() == 0
    w.route([*msg.frames, *(f for f in edit.frames if f not in to_dev0)], frm=w.node(a, 1))
    w.flush_all()
    w.clock.now += 31_000
    w.route(w.f(a, 1).flush(), frm=w.node(a, 1))  # the edit again, for device 0 only
    m = w.dev(a, 0).store.message(msg.conversation_id, msg.message_id)
    assert m is not None and w.f(a, 0).view(m).text == "hi!"


def test_a_lamport_leap_is_refused_and_acknowledged_nowhere() -> None:
    from chatcore.errors import MalformedMessage
    from chatcore.payload import MAX_LAMPORT_STEP

    w = FWorld()
    a, b = w.person(), w.person()
    w.route(w.send_text(a, b, "hi").frames)
    w.flush_all()
    eng = w.dev(a).engine
    p = Payload(ContentType.TEXT, MAX_LAMPORT_STEP + 10, w.clock.now, b"far ahead")
    with w.dev(a).store.transaction():
        frame = eng._encrypt_to(b, w.dev(b).peer_keys, p.encode(), w.clock.now, None, None)
    with pytest.raises(MalformedMessage, match="leaps"):
        w.dev(b).engine.receive(frame.frame, cursor=(w.dev(b).engine.inbox, 99))
    assert w.f(b).queued_receipts() == 0
    conv = direct_conversation_id(a, b)
    assert [m.body for m in w.dev(b).store.history(conv)] == [b"hi"]
    w.route(w.send_text(b, a, "still fine").frames)  # the conversation goes on


def test_a_group_retransmission_is_the_first_frame_unreadable_to_members_added_since() -> None:
    # d misses c's message; e is added; c's retransmission for d must not let e read it
    w = FWorld(9)
    a, c, d, e = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [c, d])
    w.flush_all()
    w.deaf.add(w.dev(d).inst)
    res = w.node(c).f.send_group_message(gid, ContentType.TEXT, b"before e joined")
    w.route(res.frames, frm=w.node(c))
    w.flush_all()
    w.route(w.node(a).groups.add(gid, e), frm=w.node(a))
    w.flush_all()
    w.clock.now += 31_000
    again = [f for f in w.f(c).flush() if f.subject == res.frames[0].subject]
    w.deaf.clear()
    w.route(again, frm=w.node(c))
    assert w.dev(d).store.message(gid, res.message_id) is not None
    assert w.dev(e).store.message(gid, res.message_id) is None  # e was added after it
    assert [f.frame for f in again] == [res.frames[0].frame]  # the very bytes, not re-encrypted
    # once d has acknowledged it, the kept frame goes
    w.flush_all()
    w.flush_all()
    assert w.f(c).pending_acks() == 0
    assert w.dev(c).store.group_sent(gid, res.message_id) is None


def test_a_group_retransmission_stops_for_members_gone_since() -> None:
    w = FWorld(10)
    a, c, d = w.person(), w.person(), w.person()
    gid = w.group(a, [c, d])
    w.flush_all()
    w.deaf.add(w.dev(d).inst)
    res = w.node(c).f.send_group_message(gid, ContentType.TEXT, b"d never reads this")
    w.route(res.frames, frm=w.node(c))
    w.flush_all()
    w.deaf.clear()
    w.route(w.node(a).groups.remove(gid, d), frm=w.node(a))
    w.flush_all()
    w.clock.now += 31_000
    assert [f for f in w.f(c).flush() if f.subject == res.frames[0].subject] == []
    assert w.f(c).pending_acks() == 0


def test_owed_read_receipts_survive_a_restart() -> None:
    """bob reads alice's messages and quits before the receipts go out (or answers: the
    answer carries a few of them). After a restart they still go out: alice sees "read"
    and bob's other device clears its unread count (they lived in memory only, and were
    lost for good: read here, nothing unread was left to send them for)."""
    w = FWorld()
    a, b = w.person(), w.person(2)
    w.route(w.f(b).set_contact(a, ContactState.CONTACT))
    sends = [w.send_text(a, b, f"m{i}") for i in range(12)]
    conv = sends[0].conversation_id
    for s in sends:
        w.route(s.frames)
    w.flush_all()
    assert w.dev(b, 1).store.conversation(conv).unread == 12  # type: ignore[union-attr]
    assert w.f(b).mark_read(conv) == 12  # queued, not sent yet
    w.restart(w.dev(b))
    assert w.f(b).queued_receipts() >= 12
    w.route(w.f(b).flush(), frm=w.node(b))
    assert {_status(w, a, conv, s.message_id) for s in sends} == {"read"}
    assert w.dev(b, 1).store.conversation(conv).unread == 0  # type: ignore[union-attr]
    assert w.f(b).queued_receipts() == 0


def test_messages_to_someone_blocked_stop_waiting_for_their_receipts() -> None:
    """Receipts of a blocked identity are dropped: a message it had not acknowledged must
    not be retransmitted to it for 30 days (nor hold up a rotation of our installation)."""
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "something I regret")
    assert w.f(a).pending_acks() == 1
    w.f(a).set_contact(b, ContactState.BLOCKED)
    assert w.f(a).pending_acks() == 0
    w.clock.now += 7 * 3_600_000
    assert w.f(a).flush() == []
    del s


def test_a_group_message_stored_before_a_crash_is_still_acknowledged() -> None:
    """bob's process dies after storing a group message and before its receipt went out.
    The retransmitted frame is a duplicate there (dropped without a new receipt), so the
    receipt must outlive the crash: it does, and alice stops re-publishing."""
    w = FWorld()
    a, b = w.person(), w.person()
    gid = w.group(a, [b])
    w.flush_all()
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"hello team")
    w.route(s.frames, frm=w.node(a))
    w.restart(w.dev(b))  # nothing flushed
    w.route(w.f(b).flush(), frm=w.node(b))
    assert _status(w, a, gid, s.message_id) == "delivered"
    assert w.f(a).pending_acks() == 0


def test_notices_are_not_unread() -> None:
    """ "you were added" and the like are not counted unread: reading them could not clear
    them on our other devices (no receipt names a notice), so the counts drifted apart."""
    w = FWorld()
    a, b = w.person(), w.person(2)
    gid = w.group(a, [b])
    w.flush_all()
    for d in (0, 1):
        c = w.dev(b, d).store.conversation(gid)
        assert c is not None and c.unread == 0
        assert [m.status for m in w.dev(b, d).store.history(gid)] == ["system"]
    w.route(w.f(a).send_group_message(gid, ContentType.TEXT, b"hi").frames, frm=w.node(a))
    assert [w.dev(b, d).store.conversation(gid).unread for d in (0, 1)] == [1, 1]  # type: ignore[union-attr]


def test_answering_a_request_sends_the_read_receipts_of_what_was_read() -> None:
    """dave reads erin's first message (a request: no read receipt yet), then answers,
    which accepts the request: erin's message becomes "read" for her, as with "requests
    accept" (the answer carried a "delivered" and dropped the read receipt for good)."""
    w = FWorld()
    d, e = w.person(2), w.person()
    s = w.send_text(e, d, "erin msg one")
    w.route(s.frames)
    conv = s.conversation_id
    assert w.f(d).contact_state(e) == ContactState.REQUEST
    assert w.f(d).mark_read(conv) == 1
    w.route(w.send_text(d, e, "dave replies").frames, frm=w.node(d))
    w.flush_all()
    assert w.f(d).contact_state(e) == ContactState.CONTACT
    assert _status(w, e, conv, s.message_id) == "read"
    assert w.dev(d, 1).store.conversation(conv).unread == 0  # type: ignore[union-attr]


def test_a_group_messages_status_counts_the_members_it_was_sent_to() -> None:
    """A member added after a message cannot read it, so never acknowledges it: the status
    counts the members it was sent to (it stayed "sent" for good). A member removed before
    acknowledging no longer holds it back, at once (it waited for some later receipt)."""
    w = FWorld()
    a, b, c, d = w.person(), w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    first = w.f(a).send_group_message(gid, ContentType.TEXT, b"to b and c")
    w.route(first.frames, frm=w.node(a))
    w.f(b).mark_read(gid)
    w.route(w.f(b).flush(), frm=w.node(b))
    assert _status(w, a, gid, first.message_id) == "sent"  # c has not acknowledged
    w.route(w.node(a).groups.remove(gid, c), frm=w.node(a))
    assert _status(w, a, gid, first.message_id) == "read"
    second = w.f(a).send_group_message(gid, ContentType.TEXT, b"before d")
    w.route(second.frames, frm=w.node(a))
    w.route(w.node(a).groups.add(gid, d), frm=w.node(a))
    w.f(b).mark_read(gid)
    w.route(w.f(b).flush(), frm=w.node(b))
    w.flush_all()
    assert _status(w, a, gid, second.message_id) == "read"
    view = w.f(a).view(w.dev(a).store.message(gid, second.message_id))  # type: ignore[arg-type]
    assert view.receipts == {b: "read"}
    assert w.f(a).recipients(gid, second.message_id, gid) == [b]


def test_a_late_delivered_receipt_does_not_undo_read() -> None:
    """Receipts can arrive out of order (a retransmitted or another device's "delivered"
    after "read"): a member's receipt never goes back down."""
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "hi")
    w.route(s.frames)
    conv, mid = s.conversation_id, s.message_id
    read = content.encode_receipt(ReceiptKind.READ, [mid])
    w.route(w.f(b)._signal(a, w.own(a), ContentType.RECEIPT, read), strict=True)
    assert w.f(a).receipts(conv, mid) == {b: "read"}
    late = content.encode_receipt(ReceiptKind.DELIVERED, [mid])
    w.route(w.f(b)._signal(a, w.own(a), ContentType.RECEIPT, late), strict=True)
    assert w.f(a).receipts(conv, mid) == {b: "read"}
    assert _status(w, a, conv, mid) == "read"


def test_a_members_receipt_for_someone_elses_message_records_nothing() -> None:
    """A group member can send us a receipt naming another member's message (a buggy or
    hostile client): it is not our message, so no receipt is recorded and nothing shown."""
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"from alice")
    w.route(s.frames, frm=w.node(a))
    before = _status(w, b, gid, s.message_id)
    body = content.encode_group_receipt(gid, ReceiptKind.READ, [s.message_id])
    shown = w.route(w.f(c)._signal(b, w.own(b), ContentType.GROUP_RECEIPT, body), strict=True)
    assert shown == []
    assert w.f(b).receipts(gid, s.message_id) == {}
    assert _status(w, b, gid, s.message_id) == before


def test_a_retransmitted_edit_is_applied_once_and_acknowledged_again() -> None:
    """An edit whose acknowledgement was lost comes again: it is not applied or shown a
    second time, and it is acknowledged again so that its sender stops sending it."""
    w = FWorld()
    a, b = w.person(), w.person()
    s = w.send_text(a, b, "helo")
    w.route(s.frames)
    w.flush_all()
    conv, mid = s.conversation_id, s.message_id
    e = w.f(a).send_op(
        w.directory.peer(b), ContentType.EDIT, content.encode_edit(mid, "hello"), w.own(a)
    )
    assert [r.content_type for r in w.route(e.frames, strict=True)] == [ContentType.EDIT]
    w.node(b).f.flush()  # the acknowledgement is lost
    w.clock.now += 31_000
    again = w.f(a).flush()
    assert again  # the edit is retransmitted
    assert w.route(again, strict=True) == []  # not shown twice
    w.flush_all()
    assert w.f(a).pending_acks() == 0
    ops = (
        w.dev(b)
        .store._x("SELECT COUNT(*) FROM content_ops WHERE conversation_id=?", (conv,))
        .fetchone()
    )
    assert ops[0] == 1
    assert w.f(b).view(w.dev(b).store.message(conv, mid)).text == "hello"  # type: ignore[arg-type]


def test_our_other_devices_status_of_a_group_message_counts_every_member_it_was_for() -> None:
    """Our other device takes our group message from the topic; it counted only the members
    whose receipts it had (the rows of who a message was for are written by the device that
    sends it): one member's read receipt showed "read" there while another had not even
    fetched it (found by a walk through the CLI on devnet)."""
    w = FWorld()
    a, b, c = w.person(2), w.person(), w.person()
    gid = w.group(a, [b, c])
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"hello group")
    w.route(s.frames, frm=w.node(a))
    assert _status(w, a, gid, s.message_id, 1) == "sent"
    w.f(b).mark_read(gid)
    w.route(w.f(b).flush(), frm=w.node(b))
    assert _status(w, a, gid, s.message_id) == "sent"  # carol has not acknowledged it
    assert _status(w, a, gid, s.message_id, 1) == "sent"  # here too
    w.f(c).mark_read(gid)
    w.route(w.f(c).flush(), frm=w.node(c))
    assert _status(w, a, gid, s.message_id) == _status(w, a, gid, s.message_id, 1) == "read"


def _published(w: FWorld, who: bytes, frames: tuple[OutFrame, ...]) -> None:
    """The delivery network stored these frames of ``who``'s (its PubAcks came back)."""
    for f in frames:
        w.dev(who).engine.acknowledged(f.outbox_id)


def test_a_group_message_to_nobody_else_is_delivered_once_on_the_network() -> None:
    """Alone in a group, a message reached everyone there is once the network has it: it
    showed "sent" for good (nobody would ever acknowledge it). "delivered", not "read"."""
    w = FWorld()
    a, b = w.person(), w.person()
    gid = w.group(a, [b])
    w.route(w.node(a).groups.remove(gid, b), frm=w.node(a))
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"just me here")
    assert _status(w, a, gid, s.message_id) == "sending"  # not on the network yet
    _published(w, a, s.frames)
    assert _status(w, a, gid, s.message_id) == "delivered"
    v = w.f(a).view(w.dev(a).store.message(gid, s.message_id))  # type: ignore[arg-type]
    assert v.receipts == {}


def test_a_group_message_whose_members_all_left_unacknowledged_is_delivered() -> None:
    w = FWorld(3)
    a, c, d = w.person(), w.person(), w.person()
    gid = w.group(a, [c, d])
    w.flush_all()
    w.deaf |= {w.dev(c).inst, w.dev(d).inst}
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"nobody reads this")
    _published(w, a, s.frames)
    w.route(s.frames, frm=w.node(a))
    assert _status(w, a, gid, s.message_id) == "sent"  # c and d have not acknowledged it
    w.route(w.node(a).groups.remove(gid, c), frm=w.node(a))
    assert _status(w, a, gid, s.message_id) == "sent"  # d still holds it back
    w.route(w.node(a).groups.remove(gid, d), frm=w.node(a))
    assert _status(w, a, gid, s.message_id) == "delivered"


def test_a_failed_message_moves_on_only_once_it_got_everywhere() -> None:
    """'failed' (a message of an earlier installation of ours no longer resent: see
    Features.pending_by_conversation) ranks as 'sent': a receipt from some recipients does
    not make it 'sent' again; receipts from all of them make it 'delivered'."""
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    w.flush_all()
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"late")
    _published(w, a, s.frames)
    w.dev(a).store.set_status(gid, s.message_id, "failed")  # as a forced rotation leaves it
    w.route(s.frames, frm=w.node(a))
    w.route(w.node(b).f.flush(), frm=w.node(b))
    assert _status(w, a, gid, s.message_id) == "failed"
    w.route(w.node(c).f.flush(), frm=w.node(c))
    assert _status(w, a, gid, s.message_id) == "delivered"


def test_our_other_devices_copy_of_a_group_message_to_nobody_else_is_delivered_too() -> None:
    """Our other device takes our group message from the topic: one sent while we were the
    only member is 'delivered' there too (it stayed 'sent' there for good, 'delivered' only
    on the device that wrote it)."""
    w = FWorld()
    a, b = w.person(2), w.person()
    gid = w.group(a, [b])
    w.route(w.node(a).groups.remove(gid, b), frm=w.node(a))
    w.flush_all()
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"just me here")
    _published(w, a, s.frames)
    w.route(s.frames, frm=w.node(a))
    assert _status(w, a, gid, s.message_id) == _status(w, a, gid, s.message_id, 1) == "delivered"


def test_a_group_message_to_nobody_else_stays_so_when_someone_is_added_before_it_is_out() -> None:
    """Sent alone while offline, then a member added before the network took the message:
    the newcomer cannot read it (it was sent before they came), so it does not hold it back;
    it stayed 'sent' for good (no one was kept as its recipients, so the members of today
    were taken)."""
    w = FWorld()
    a, b, c = w.person(2), w.person(), w.person()
    gid = w.group(a, [b])
    w.route(w.node(a).groups.remove(gid, b), frm=w.node(a))
    w.flush_all()
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"a note before anyone comes")
    added = w.node(a).groups.add(gid, c)
    _published(w, a, s.frames)
    assert _status(w, a, gid, s.message_id) == "delivered"
    assert w.f(a).recipients(gid, s.message_id, gid) == []
    # our other device reads the message, then the add, from the topic: the same there
    w.route(s.frames, frm=w.node(a))
    w.route(added, frm=w.node(a))
    assert _status(w, a, gid, s.message_id, 1) == "delivered"
    assert w.f(a, 1).recipients(gid, s.message_id, gid) == []


def test_a_failed_group_message_moves_on_once_those_that_hold_it_back_left() -> None:
    """'failed' ranks as 'sent': like a 'sent' one, it is 'delivered' once every member
    that had not acknowledged it left the group (it stayed 'failed')."""
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    w.flush_all()
    w.deaf |= {w.dev(c).inst}
    s = w.f(a).send_group_message(gid, ContentType.TEXT, b"late")
    _published(w, a, s.frames)
    w.route(s.frames, frm=w.node(a))
    w.route(w.node(b).f.flush(), frm=w.node(b))
    w.dev(a).store.set_status(gid, s.message_id, "failed")  # as a forced rotation leaves it
    w.route(w.node(a).groups.remove(gid, c), frm=w.node(a))
    assert _status(w, a, gid, s.message_id) == "delivered"


def test_a_process_still_on_the_old_keys_gives_up_nothing_the_new_keys_sent() -> None:
    """'keys rotate --installation --force' in one process (a CLI command) while another
    (an app) still runs on the old keys: the app took what the new keys sent for an earlier
    installation's (its id is not one of the app's keys), out of the retransmission log and
    'failed', though the new keys are this home's now."""
    from chatcore.engine import Engine, OwnIdentity
    from chatcore.features import Features
    from chatcore.groupchat import GroupChat
    from chatcore.keys import InstallationKeys, SignedPrekey

    w = FWorld()
    a, b = w.person(), w.person()
    app = w.node(a)  # the process still on the old keys
    dev = w.dev(a)
    new_keys = InstallationKeys.generate(w.rng)
    spk = SignedPrekey.generate(w.rng, 2, w.clock.now + 10**10)
    dev.store.put_secret("spk:0000000002", spk.to_bytes())
    dev.store.put_secret("installation", new_keys.to_bytes())  # the rotation switched the home
    w.directory.register(a, new_keys.peer_keys(spk))
    engine = Engine(dev.store, OwnIdentity(a, new_keys), w.directory, w.rng, w.clock)
    groups = GroupChat(engine, w.devices_of)
    engine.control_handler = groups.handle_control
    cli = Features(engine, groups)
    engine.content_handler = cli.handle
    w.deaf |= {w.dev(b).inst}  # bob has not fetched it yet
    s = cli.send_message(w.directory.peer(b), ContentType.TEXT, b"from the new keys")
    _published(w, a, s.frames)
    conv = s.conversation_id
    assert _status(w, a, conv, s.message_id) == "sent"
    assert app.f.pending_by_conversation() == {conv: 1}  # not its to give up
    w.clock.now += 31_000
    app.f.flush()  # its retransmission timer
    assert _status(w, a, conv, s.message_id) == "sent"
    assert cli.pending_by_conversation() == {conv: 1}  # still awaited by the new keys
