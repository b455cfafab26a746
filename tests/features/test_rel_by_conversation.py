"""The reliability state (what each sent message still waits for) is kept by conversation:
a message sent, or acknowledged, in one conversation reads and writes that conversation's
log only, whatever waits in the others (it was one blob of every conversation's, parsed
and written whole at every such message)."""

from __future__ import annotations

from chatcore import content
from chatcore.engine import direct_conversation_id
from chatcore.features import REL_CONV_META, REL_META
from chatcore.payload import ContentType
from chatcore.reliability import Reliability

from . import FWorld


def _setup() -> tuple[FWorld, bytes, bytes, bytes, bytes]:
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    w.deaf.add(w.dev(c).inst)  # c never acknowledges: what a sends c stays awaited
    for i in range(3):
        w.route(w.send_text(a, c, f"to c {i}").frames)
    gid = w.group(a, [b, c])
    res = w.f(a).send_group_message(gid, ContentType.TEXT, b"to the group")
    w.route(res.frames, frm=w.node(a))
    w.flush_all()  # b's receipts: only c is awaited
    return w, a, b, c, gid


def test_a_message_touches_its_own_conversations_log_only() -> None:
    w, a, b, c, gid = _setup()
    fa = w.f(a)
    other_keys = [fa._rk(direct_conversation_id(a, c)), fa._rk(gid)]
    assert all(fa.store.get_meta(REL_CONV_META + k.hex()) for k in other_keys)
    stmts: list[str] = []
    fa.store._db.set_trace_callback(stmts.append)
    try:
        res = w.send_text(a, b, "to b")  # sent: tracked
        w.route(res.frames)
        w.route(w.f(b).flush(), frm=w.node(b))  # b's receipt: acknowledged
    finally:
        fa.store._db.set_trace_callback(None)
    assert not fa.unacked(res.conversation_id, res.message_id)  # b acknowledged
    touched = [s for s in stmts if REL_CONV_META in s]
    key = fa._rk(res.conversation_id).hex()
    assert touched and all(key in s for s in touched), [s[:90] for s in touched if key not in s]
    assert not [s for s in stmts if f"'{REL_META}'" in s and not s.startswith("SELECT")]
    # and the others still wait for c
    assert fa.pending_acks() == 4
    assert all(fa.store.get_meta(REL_CONV_META + k.hex()) for k in other_keys)


def test_state_of_one_blob_is_split_and_kept() -> None:
    w, a, _b, c, _gid = _setup()
    fa = w.f(a)
    # the state as an older version kept it: one blob
    whole = fa._rel()
    old = Reliability(fa.policy)
    old.conversations = dict(whole.conversations)
    for name, _ in fa.store.meta_with_prefix(REL_CONV_META):
        fa.store.delete_meta(name)
    fa.store.set_meta(REL_META, old.to_bytes())
    assert fa.pending_acks() == 4  # read, split
    assert fa.store.get_meta(REL_META) is None
    assert len(fa.store.meta_with_prefix(REL_CONV_META)) == 2
    # the group frame kept for retransmission is still there: c is still awaited
    assert fa.store.group_sent_keys()
    w.clock.now += 10 * 60_000  # due: retransmitted, in both conversations
    subjects = {f.subject for f in fa.flush()}
    assert {w.dev(c).engine.inbox, *w.node(a).groups.subjects()} <= subjects
    assert fa.pending_acks() == 4


def _as_one_blob(w: FWorld, a: bytes) -> None:
    """The state as an older version kept it."""
    fa = w.f(a)
    whole = fa._rel()
    old = Reliability(fa.policy)
    old.conversations = dict(whole.conversations)
    with fa.store.transaction():
        for name, _ in fa.store.meta_with_prefix(REL_CONV_META):
            fa.store.delete_meta(name)
        fa.store.set_meta(REL_META, old.to_bytes())


def test_a_group_message_sent_first_after_the_upgrade_keeps_its_frame() -> None:
    w, a, _b, _c, gid = _setup()
    _as_one_blob(w, a)
    fa = w.f(a)
    res = fa.send_group_message(gid, ContentType.TEXT, b"first thing after the upgrade")
    assert fa.unacked(gid, res.message_id)
    assert (gid, res.message_id) in fa.store.group_sent_keys()  # kept for retransmission
    assert fa.store.get_meta(REL_META) is None and fa.pending_acks() == 5


def test_a_split_made_by_another_process_meanwhile_is_not_overwritten() -> None:
    """Two processes on one home after an upgrade (an app and a CLI command): the second
    read the old blob before the first split it and sent a group message; splitting its
    stale copy afterwards lost that message's log (never retransmitted) and its kept frame."""
    w, a, _b, _c, gid = _setup()
    _as_one_blob(w, a)
    fa = w.f(a)
    store = fa.store
    get_meta = store.get_meta
    sent: list[bytes] = []

    def other_process_meanwhile(key: str) -> bytes | None:
        raw = get_meta(key)
        if key == REL_META and not sent:
            store.get_meta = get_meta  # type: ignore[method-assign]
            # the other process: splits the blob, then sends in the group
            res = fa.send_group_message(gid, ContentType.TEXT, b"sent by the other process")
            sent.append(res.message_id)
            store.get_meta = other_process_meanwhile  # type: ignore[method-assign]
        return raw

    store.get_meta = other_process_meanwhile  # type: ignore[method-assign]
    try:
        pending = fa.pending_acks()
    finally:
        store.get_meta = get_meta  # type: ignore[method-assign]
    assert sent and fa.unacked(gid, sent[0])  # still awaited (by b and c)
    assert (gid, sent[0]) in fa.store.group_sent_keys()  # and kept for retransmission
    assert pending == fa.pending_acks() == 5


def test_a_group_frame_is_kept_while_awaited_and_dropped_once_acknowledged() -> None:
    """The kept frame of a group message (for retransmission) goes when its last member
    acknowledges it: an acknowledgement reads and writes one conversation's log, and sweeps
    that conversation's kept frames with it."""
    w = FWorld()
    a, b, c = w.person(), w.person(), w.person()
    gid = w.group(a, [b, c])
    w.deaf.add(w.dev(c).inst)  # c is offline for a while
    fa = w.f(a)
    res = fa.send_group_message(gid, ContentType.TEXT, b"to the group")
    w.route(res.frames, frm=w.node(a))
    w.flush_all()  # b's receipts: only c is awaited
    kept = fa.store.group_sent_ids(gid)
    assert kept and all(fa.unacked(gid, mid) for mid in kept)  # c has not acknowledged
    w.deaf.discard(w.dev(c).inst)
    w.clock.now += 10 * 60_000  # due: retransmitted, and c gets it now
    w.route(fa.flush(), frm=w.node(a))
    w.route(w.f(c).flush(), frm=w.node(c))  # c's receipts
    assert not any(fa.unacked(gid, mid) for mid in kept)
    assert fa.store.group_sent_ids(gid) == []  # no longer kept
    assert fa.pending_acks() == 0


def test_deleting_a_groups_history_drops_its_kept_frames_with_its_log() -> None:
    w, a, _b, _c, gid = _setup()
    fa = w.f(a)
    assert fa.store.group_sent_ids(gid)  # c still awaited
    fa.delete_conversation(gid)
    assert fa.store.get_meta(REL_CONV_META + fa._rk(gid).hex()) is None
    assert fa.store.group_sent_ids(gid) == []  # nothing left to retransmit it for
    assert fa.pending_acks() == 3  # the 1:1 messages to c still wait


def test_a_message_deleted_from_another_device_of_ours_is_no_longer_awaited() -> None:
    """A delete of a message this device sent (made on our other device) ends its wait
    here: it is not retransmitted (nor kept waiting in pending_acks)."""
    w = FWorld()
    a, c = w.person(), w.person()
    w.add_device(a)
    w.deaf.add(w.dev(c).inst)  # c never acknowledges
    res = w.send_text(a, c, "sent, then deleted")
    w.route(res.frames, frm=w.node(a))
    fa = w.f(a)
    assert fa.unacked(res.conversation_id, res.message_id) and fa.pending_acks() == 1
    delete = content.encode_delete(res.message_id)
    other = w.f(a, 1).send_op(w.directory.peer(c), ContentType.DELETE, delete, w.own(a))
    w.route(other.frames, strict=True, frm=w.node(a, 1))
    assert not fa.unacked(res.conversation_id, res.message_id)
    assert fa.pending_acks() == 0  # (the delete waits at the device that sent it)
