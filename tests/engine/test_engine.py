"""The 1:1 engine over in-memory stores and a fake directory (no network, no chain)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from chatcore.consts import KIND_HANDSHAKE, KIND_SESSION
from chatcore.engine import (
    SENDER_INFO_VERSION,
    Peer,
    direct_conversation_id,
    frame_msg_id,
    inbox_subject,
)
from chatcore.errors import (
    ChatCoreError,
    DecryptionError,
    DuplicateMessage,
    HandshakeError,
    MalformedMessage,
    ProtocolError,
    UntrustedIdentity,
)
from chatcore.payload import ContentType

from . import World, snapshot, texts


def kind(frame: bytes) -> int:
    return frame[0] & 0x0F


def receive_dup(dev, frame: bytes) -> None:  # type: ignore[no-untyped-def]
    """A duplicate is either ignored (None) or refused as DuplicateMessage; never stored."""
    try:
        assert dev.receive(frame) is None
    except DuplicateMessage:
        pass


# --- basics -------------------------------------------------------------------------------------
def test_inbox_subject_and_conversation_id() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    assert direct_conversation_id(a, b) == direct_conversation_id(b, a)
    assert len(direct_conversation_id(a, b)) == 16
    assert direct_conversation_id(a, b) != direct_conversation_id(a, b"\x03" * 32)
    s = inbox_subject(a)
    assert s.startswith("lc.v1.inbox.") and a.hex() not in s and a.hex()[:8] not in s
    assert inbox_subject(a) != inbox_subject(b)


def test_first_message_sets_up_session_then_replies() -> None:
    w = World()
    alice, bob = w.person(name="alice"), w.person(name="bob")
    a, b = w.dev(alice), w.dev(bob)
    conv = direct_conversation_id(alice, bob)

    res = w.send(alice, bob, "hello bob")
    assert res.conversation_id == conv and res.lamport == 1 and len(res.frames) == 1
    f1 = w.frame_for(res, b)
    assert kind(f1) == KIND_HANDSHAKE
    assert b"hello bob" not in f1
    assert a.store.count_sessions() == 1 and b.store.count_sessions() == 0

    r = b.receive(f1)
    assert r is not None
    assert (r.text, r.sender_identity, r.sender_installation) == ("hello bob", alice, a.inst)
    assert r.conversation_id == conv and r.message_id == res.message_id and not r.outgoing
    assert (
        r.content_type is ContentType.TEXT
        and r.lamport == 1
        and r.sent_at == res.sent_at // 1000 * 1000
    )
    assert b.store.count_sessions() == 1
    c = b.store.conversation(conv)
    assert c is not None and c.peer_identity == alice and c.unread == 1 and c.kind == "direct"

    # until alice hears back, her frames keep carrying the handshake
    res2 = w.send(alice, bob, "still there?")
    assert kind(w.frame_for(res2, b)) == KIND_HANDSHAKE
    assert b.receive(w.frame_for(res2, b)) is not None

    reply = w.send(bob, alice, "hi alice")
    fr = w.frame_for(reply, a)
    assert kind(fr) == KIND_SESSION and reply.lamport == 3
    r2 = a.receive(fr)
    assert r2 is not None and r2.text == "hi alice" and r2.sender_identity == bob
    # one session each way, no second handshake
    assert a.store.count_sessions() == 1 and b.store.count_sessions() == 1
    res3 = w.send(alice, bob, "now established")
    assert kind(w.frame_for(res3, b)) == KIND_SESSION
    assert b.receive(w.frame_for(res3, b)) is not None
    assert (
        texts(a.store, conv)
        == texts(b.store, conv)
        == [
            "hello bob",
            "still there?",
            "hi alice",
            "now established",
        ]
    )


def test_many_messages_both_ways_in_bursts() -> None:
    w = World(seed=2)
    alice, bob = w.person(), w.person()
    a, b = w.dev(alice), w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    rnd = random.Random(5)
    expected: list[str] = []
    for turn in range(40):
        sender, to = (alice, bob) if turn % 2 == 0 else (bob, alice)
        for i in range(rnd.randint(1, 6)):
            text = f"{turn}.{i} " + "x" * rnd.randint(0, 300)
            expected.append(text)
            res = w.send(sender, to, text)
            got = w.deliver(res)
            assert [g.text for g in got if g] == [text]
    assert texts(a.store, conv) == texts(b.store, conv) == expected
    ha, hb = a.store.history(conv, 10_000), b.store.history(conv, 10_000)
    assert [m.lamport for m in ha] == list(range(1, len(expected) + 1))
    assert [m.message_id for m in ha] == [m.message_id for m in hb]
    assert a.store.count_sessions() == 1 and b.store.count_sessions() == 1
    assert a.store.conversation(conv).lamport == len(expected)  # type: ignore[union-attr]


def test_simultaneous_first_messages_both_work() -> None:
    """Both sides start a session at once (two handshakes cross); both keep working after."""
    w = World(seed=3)
    alice, bob = w.person(), w.person()
    a, b = w.dev(alice), w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    ra = w.send(alice, bob, "a1")
    rb = w.send(bob, alice, "b1")
    assert ra.lamport == rb.lamport == 1
    w.deliver(ra)
    w.deliver(rb)
    for i in range(5):
        w.deliver(w.send(alice, bob, f"a{i + 2}"))
        w.deliver(w.send(bob, alice, f"b{i + 2}"))
    assert sorted(texts(a.store, conv)) == sorted(texts(b.store, conv))
    assert len(texts(a.store, conv)) == 12
    # Lamport: the first two tie at 1; everything after is ordered the same on both sides
    assert texts(a.store, conv)[2:] == texts(b.store, conv)[2:]


# --- multi-device -------------------------------------------------------------------------------
def test_fan_out_to_peer_devices_and_sync_copy_to_own() -> None:
    w = World(seed=4)
    alice, bob = w.person(2), w.person(2)
    a0, a1 = w.people[alice]
    b0, b1 = w.people[bob]
    conv = direct_conversation_id(alice, bob)

    res = w.send(alice, bob, "to both of your phones")
    assert {f.subject for f in res.frames} == {b0.engine.inbox, b1.engine.inbox, a1.engine.inbox}
    assert len(res.frames) == 3  # never to ourselves
    for d in (b0, b1):
        r = d.receive(w.frame_for(res, d))
        assert r is not None and r.text == "to both of your phones" and not r.outgoing
        assert r.conversation_id == conv and r.sender_installation == a0.inst
    r = a1.receive(w.frame_for(res, a1))
    assert r is not None and r.outgoing and r.sender_identity == alice
    assert r.conversation_id == conv and r.message_id == res.message_id
    m = a1.store.message(conv, res.message_id)
    assert m is not None and m.outgoing and m.sender_identity == alice and m.status == "sent"
    c = a1.store.conversation(conv)
    assert c is not None and c.peer_identity == bob and c.unread == 0

    # bob answers from his second device: both of alice's devices get it, b0 a sync copy
    rep = w.send(bob, alice, "answer from b1", device=1)
    assert len(rep.frames) == 3
    got = w.deliver(rep)
    assert all(g is not None for g in got)
    for d in (a0, a1, b0, b1):
        assert texts(d.store, conv) == ["to both of your phones", "answer from b1"], d
    assert b0.store.message(conv, rep.message_id).outgoing  # type: ignore[union-attr]
    assert not a0.store.message(conv, rep.message_id).outgoing  # type: ignore[union-attr]
    # a1 now talks too
    w.deliver(w.send(alice, bob, "from a1", device=1))
    for d in (a0, a1, b0, b1):
        assert texts(d.store, conv)[-1] == "from a1"


def test_sync_copy_from_another_identity_is_refused() -> None:
    w = World(seed=5)
    alice, bob, carol = w.person(), w.person(), w.person()
    a, b = w.dev(alice), w.dev(bob)
    # alice's engine is told bob's device is one of her own: bob must not accept a "sync copy"
    res = a.engine.send(
        w.directory.peer(carol), ContentType.TEXT, b"spoof", (w.directory.peer(bob).installations)
    )
    before = snapshot(b.store)
    with pytest.raises(ProtocolError):
        b.receive(w.frame_for(res, b))
    assert snapshot(b.store) == before


def test_message_from_own_device_without_conversation_is_refused() -> None:
    w = World(seed=6)
    alice = w.person(2)
    a0, a1 = w.people[alice]
    res = a0.engine.send(Peer(alice, None, (a1.peer_keys,)), ContentType.TEXT, b"note to self", ())
    with pytest.raises(ProtocolError):
        a1.receive(w.frame_for(res, a1))
    assert a1.store.conversations() == []


# --- duplicates and replays -----------------------------------------------------------------------
def test_duplicate_frames_are_not_stored_twice() -> None:
    w = World(seed=7)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    f1 = w.frame_for(w.send(alice, bob, "one"), b)
    assert b.receive(f1) is not None
    receive_dup(b, f1)
    w.deliver(w.send(bob, alice, "ack"))
    f2 = w.frame_for(w.send(alice, bob, "two"), b)
    assert kind(f2) == KIND_SESSION
    assert b.receive(f2) is not None
    before = snapshot(b.store)
    for _ in range(3):
        receive_dup(b, f2)
        receive_dup(b, f1)
    assert snapshot(b.store) == before
    assert texts(b.store, conv) == ["one", "ack", "two"]
    assert b.store.conversation(conv).unread == 2  # type: ignore[union-attr]
    # the conversation goes on
    assert b.receive(w.frame_for(w.send(alice, bob, "three"), b)) is not None


def test_replayed_handshake_after_restart_and_reply() -> None:
    w = World(seed=8)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    hs1 = w.frame_for(w.send(alice, bob, "first"), b)
    hs2 = w.frame_for(w.send(alice, bob, "second"), b)
    assert kind(hs1) == kind(hs2) == KIND_HANDSHAKE
    assert b.receive(hs2) is not None  # second handshake frame arrives first
    assert b.receive(hs1) is not None
    receive_dup(b, hs1)
    receive_dup(b, hs2)
    w.deliver(w.send(bob, alice, "reply"))
    w.restart(b)
    before = snapshot(b.store)
    receive_dup(b, hs1)
    receive_dup(b, hs2)
    assert snapshot(b.store) == before
    assert b.store.count_sessions() == 1
    assert texts(b.store, conv) == ["first", "second", "reply"]


# --- bad input -----------------------------------------------------------------------------------
def _flips(frame: bytes, n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    positions = sorted(
        set(rnd.sample(range(len(frame)), min(n, len(frame))))
        | {0, 1, 8, 9, 10, 40, 41, 42, len(frame) - 17, len(frame) - 1}
    )
    out = []
    for p in positions:
        t = bytearray(frame)
        t[p] ^= 1 << rnd.randrange(8)
        out.append(bytes(t))
    return out


@pytest.mark.parametrize("established", [False, True])
def test_tampered_frames_raise_typed_errors_and_change_nothing(established: bool) -> None:
    w = World(seed=9)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    if established:
        w.deliver(w.send(alice, bob, "hello"))
        w.deliver(w.send(bob, alice, "hi"))
    frame = w.frame_for(w.send(alice, bob, "the real one"), b)
    assert kind(frame) == (KIND_SESSION if established else KIND_HANDSHAKE)
    before = snapshot(b.store)
    expected_types = (DecryptionError, HandshakeError, MalformedMessage, ProtocolError)
    for i, bad in enumerate(_flips(frame, 60, seed=1 if established else 100)):
        cursor_before = b.store.cursor(b.engine.inbox)
        with pytest.raises(ChatCoreError) as ei:
            b.receive(bad)
        assert isinstance(ei.value, expected_types), repr(ei.value)
        assert not isinstance(ei.value, DuplicateMessage)
        assert snapshot(b.store) == before, f"flip {i} changed the store"
        assert b.store.cursor(b.engine.inbox) == cursor_before + 1  # the cursor still moves
    # the untouched frame still decrypts afterwards
    r = b.receive(frame)
    assert r is not None and r.text == "the real one"
    assert texts(b.store, conv)[-1] == "the real one"


def test_truncated_and_extended_frames() -> None:
    w = World(seed=10)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    frame = w.frame_for(w.send(alice, bob, "cut me"), b)
    before = snapshot(b.store)
    for cut in (1, 5, 9, 20, 41, 60, len(frame) - 16, len(frame) - 1):
        with pytest.raises((MalformedMessage, ProtocolError)):
            b.receive(frame[:cut])
    with pytest.raises(ProtocolError):
        b.receive(frame + b"\x00")
    assert snapshot(b.store) == before
    assert b.receive(frame) is not None


def test_frame_for_unknown_session() -> None:
    w = World(seed=11)
    alice, bob, carol = w.person(), w.person(), w.person()
    b, c = w.dev(bob), w.dev(carol)
    w.deliver(w.send(alice, bob, "x"))
    w.deliver(w.send(bob, alice, "y"))
    f = w.frame_for(w.send(alice, bob, "for bob only"), b)
    assert kind(f) == KIND_SESSION
    with pytest.raises(ProtocolError):
        c.receive(f)
    assert c.store.count_sessions() == 0 and c.store.conversations() == []


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x11",
        b"\x12" + b"\x00" * 10,
        b"\x10" + b"\x00" * 80,  # kind 0
        b"\x21" + b"\x00" * 80,  # version 2
        b"\xf2" + b"\x00" * 80,
        b"\x13" + b"\x00" * 80,  # a group kind does not belong in an inbox
        b"\x1f" + b"\xff" * 200,
    ],
)
def test_malformed_bytes(data: bytes) -> None:
    w = World(seed=12)
    bob = w.person()
    b = w.dev(bob)
    with pytest.raises(MalformedMessage):
        b.receive(data)
    assert b.store.count_sessions() == 0 and b.store.conversations() == []
    assert b.store.cursor(b.engine.inbox) == 1


def test_garbage_handshake_frame_is_a_handshake_error() -> None:
    w = World(seed=13)
    bob = w.person()
    b = w.dev(bob)
    rnd = random.Random(1)
    for n in (80, 200, 1500):
        with pytest.raises((HandshakeError, MalformedMessage)):
            b.receive(b"\x11" + rnd.randbytes(n))
    assert b.store.count_sessions() == 0


# --- trust --------------------------------------------------------------------------------------
def test_unregistered_sender_is_untrusted_and_nothing_is_stored() -> None:
    w = World(seed=14)
    bob = w.person()
    b = w.dev(bob)
    mallory_id = w.rng(32)
    m = w.make_device(mallory_id, register=False)
    res = m.engine.send(w.directory.peer(bob), ContentType.TEXT, b"trust me", ())
    with pytest.raises(UntrustedIdentity):
        b.receive(w.frame_for(res, b))
    assert b.store.count_sessions() == 0 and b.store.conversations() == []
    assert b.store.cursor(b.engine.inbox) == 1


def test_impersonating_a_registered_identity_is_untrusted() -> None:
    w = World(seed=15)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    # mallory's own keys, but she claims alice's identity id in the sealed sender info
    m = w.make_device(alice, register=False)
    res = m.engine.send(w.directory.peer(bob), ContentType.TEXT, b"it's alice, honest", ())
    with pytest.raises(UntrustedIdentity):
        b.receive(w.frame_for(res, b))
    assert b.store.count_sessions() == 0 and b.store.conversations() == []


def test_revoked_installation_messages_are_dropped() -> None:
    w = World(seed=16)
    alice, bob = w.person(2), w.person()
    a0 = w.dev(alice)
    b = w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    w.deliver(w.send(alice, bob, "before"))
    w.deliver(w.send(bob, alice, "ok"))
    pending = w.frame_for(w.send(alice, bob, "in flight when revoked"), b)
    w.directory.revoked.add(a0.inst)
    before = snapshot(b.store)
    with pytest.raises(UntrustedIdentity):
        b.receive(pending)
    assert snapshot(b.store) == before
    # a0 keeps its (now stale) view of bob and tries again: still refused
    res = a0.engine.send(w.directory.peer(bob), ContentType.TEXT, b"after", ())
    with pytest.raises(UntrustedIdentity):
        b.receive(w.frame_for(res, b))
    assert texts(b.store, conv) == ["before", "ok"]
    # alice's other device still gets through
    assert b.receive(w.frame_for(w.send(alice, bob, "from a1", device=1), b)) is not None


def test_unknown_prekey_is_a_handshake_error() -> None:
    w = World(seed=17)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    frame = w.frame_for(w.send(alice, bob, "to an old prekey"), b)
    b.store.delete_secret("spk:0000000001")
    with pytest.raises(HandshakeError):
        b.receive(frame)
    assert b.store.count_sessions() == 0 and b.store.conversations() == []


# --- ordering and restarts ------------------------------------------------------------------------
@pytest.mark.parametrize("established", [False, True])
def test_out_of_order_burst(established: bool) -> None:
    w = World(seed=18)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    if established:
        w.deliver(w.send(alice, bob, "m-start"))
        w.deliver(w.send(bob, alice, "r-start"))
    sent = [f"burst {i}" for i in range(30)]
    frames = [w.frame_for(w.send(alice, bob, t), b) for t in sent]
    order = list(range(len(frames)))
    random.Random(3).shuffle(order)
    for i in order:
        r = b.receive(frames[i])
        assert r is not None and r.text == sent[i]
    got = texts(b.store, conv)
    assert got[-30:] == sent  # history is in Lamport order, not arrival order
    for i in order[:5]:
        receive_dup(b, frames[i])
    assert len(texts(b.store, conv)) == len(got)


def test_restart_mid_conversation() -> None:
    w = World(seed=19)
    alice, bob = w.person(), w.person()
    a, b = w.dev(alice), w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    w.deliver(w.send(alice, bob, "1"))
    pending = w.send(alice, bob, "2 (arrives after bob restarts)")
    w.restart(a)
    w.restart(b)
    w.deliver(pending)
    w.deliver(w.send(bob, alice, "3"))
    w.restart(a)
    w.deliver(w.send(alice, bob, "4"))
    w.restart(b)
    w.deliver(w.send(bob, alice, "5"))
    expected = ["1", "2 (arrives after bob restarts)", "3", "4", "5"]
    assert texts(a.store, conv) == texts(b.store, conv) == expected
    assert a.store.count_sessions() == b.store.count_sessions() == 1


def test_lamport_clock_follows_the_peer() -> None:
    w = World(seed=20)
    alice, bob = w.person(), w.person()
    a, b = w.dev(alice), w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    lams = [w.send(alice, bob, f"a{i}") for i in range(5)]
    assert [r.lamport for r in lams] == [1, 2, 3, 4, 5]
    # bob gets only the last one (the others are delayed), then replies: after 5 comes 6
    last = w.frame_for(lams[-1], b)
    assert b.receive(last).lamport == 5  # type: ignore[union-attr]
    rep = w.send(bob, alice, "b")
    assert rep.lamport == 6
    for r in lams[:-1]:
        w.deliver(r)
    assert texts(b.store, conv) == ["a0", "a1", "a2", "a3", "a4", "b"]
    w.deliver(rep)
    assert texts(a.store, conv) == ["a0", "a1", "a2", "a3", "a4", "b"]
    assert w.send(alice, bob, "c").lamport == 7


# --- outbox and cursor --------------------------------------------------------------------------
def test_outbox_keeps_frames_until_acknowledged() -> None:
    w = World(seed=21)
    alice, bob = w.person(2), w.person(2)
    a = w.dev(alice)
    conv = direct_conversation_id(alice, bob)
    res = w.send(alice, bob, "persist me")
    assert len(res.frames) == 3
    pending = a.store.pending_outbox()
    assert [(p.id, p.subject, p.frame, p.msg_id) for p in pending] == [
        (f.outbox_id, f.subject, f.frame, f.msg_id) for f in res.frames
    ]
    assert all(p.conversation_id == conv and p.message_id == res.message_id for p in pending)
    assert all(f.msg_id == frame_msg_id(f.frame) for f in res.frames)
    assert a.store.message(conv, res.message_id).status == "sending"  # type: ignore[union-attr]
    w.restart(a)  # the outbox survives a crash
    for f in res.frames[:-1]:
        a.engine.acknowledged(f.outbox_id)
        assert a.store.message(conv, res.message_id).status == "sending"  # type: ignore[union-attr]
    a.engine.acknowledged(res.frames[-1].outbox_id)
    assert a.store.outbox_size() == 0
    assert a.store.message(conv, res.message_id).status == "sent"  # type: ignore[union-attr]
    a.engine.acknowledged(res.frames[0].outbox_id)  # a late second ack is harmless
    assert a.store.message(conv, res.message_id).status == "sent"  # type: ignore[union-attr]
    # frames from the outbox are still deliverable after the sender restarted
    w.deliver(res)
    assert texts(w.dev(bob, 1).store, conv) == ["persist me"]


def test_cursor_advances_on_dropped_and_duplicate_frames() -> None:
    w = World(seed=22)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    inbox = b.engine.inbox
    f = w.frame_for(w.send(alice, bob, "x"), b)
    with pytest.raises(MalformedMessage):
        b.engine.receive(b"junk", cursor=(inbox, 7))
    assert b.store.cursor(inbox) == 7
    assert b.engine.receive(f, cursor=(inbox, 8)) is not None
    assert b.store.cursor(inbox) == 8
    try:
        assert b.engine.receive(f, cursor=(inbox, 9)) is None
    except DuplicateMessage:
        pass
    assert b.store.cursor(inbox) == 9
    with pytest.raises(MalformedMessage):
        b.engine.receive(b"junk", cursor=(inbox, 5))  # an old cursor never moves it back
    assert b.store.cursor(inbox) == 9
    with pytest.raises(MalformedMessage):
        b.engine.receive(b"junk")  # no cursor given: nothing written
    assert b.store.cursor(inbox) == 9


def test_receive_is_one_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """If storing the message fails, the ratchet state is not advanced either."""
    w = World(seed=23)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    w.deliver(w.send(alice, bob, "a"))
    w.deliver(w.send(bob, alice, "b"))
    f = w.frame_for(w.send(alice, bob, "c"), b)
    before = snapshot(b.store)

    def boom(*_a: object, **_k: object) -> bool:
        raise RuntimeError("disk full")

    monkeypatch.setattr(b.store, "add_message", boom)
    with pytest.raises(RuntimeError):
        b.receive(f)
    assert snapshot(b.store) == before
    monkeypatch.undo()
    r = b.receive(f)
    assert r is not None and r.text == "c"
    assert texts(b.store, conv) == ["a", "b", "c"]


def test_no_secret_or_identity_bytes_in_frames() -> None:
    w = World(seed=24)
    alice, bob = w.person(2), w.person()
    a0, a1 = w.people[alice]
    b = w.dev(bob)
    frames = []
    for i in range(3):
        frames += [f.frame for f in w.send(alice, bob, f"secret text {i}").frames]
        frames += [f.frame for f in w.send(bob, alice, f"secret reply {i}").frames]
    needles = [
        alice,
        bob,
        a0.inst,
        a1.inst,
        b.inst,
        a0.keys.ik_x25519,
        b.keys.ik_x25519,
        b.spk.pub,
        b"secret text",
        b"secret reply",
    ]
    for f in frames:
        for n in needles:
            assert n not in f


def test_same_message_id_in_a_new_frame_is_stored_once() -> None:
    """A re-encryption of a message already stored (e.g. a resend) is recognised by its id."""
    from chatcore.payload import Payload

    w = World(seed=25)
    alice, bob = w.person(), w.person()
    a, b = w.dev(alice), w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    res = w.send(alice, bob, "only once")
    w.deliver(res)
    again = Payload(ContentType.TEXT, res.lamport, res.sent_at, b"only once")
    assert again.message_id(a.inst, conv) == res.message_id
    f = a.engine._encrypt_to(bob, b.peer_keys, again.encode(), w.clock(), conv, res.message_id)
    assert f.frame != w.frame_for(res, b)
    assert b.receive(f.frame) is None
    assert texts(b.store, conv) == ["only once"]
    assert b.store.conversation(conv).unread == 1  # type: ignore[union-attr]
    # the ratchet moved on all the same: the next message decrypts
    assert b.receive(w.frame_for(w.send(alice, bob, "next"), b)) is not None


def test_fuzzed_frames_only_raise_typed_errors() -> None:
    """Random bodies behind a valid header and a known session tag: never a crash, never a
    change (only ChatCoreError subclasses, which the client logs and skips)."""
    w = World(seed=26)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    w.deliver(w.send(alice, bob, "x"))
    w.deliver(w.send(bob, alice, "y"))
    hs = w.frame_for(w.send(alice, bob, "z"), b)  # handshake-less now: a session frame
    tag = hs[1:9]
    before = snapshot(b.store)
    rnd = random.Random(7)
    for i in range(400):
        head = bytes((0x10 | rnd.choice((1, 2)),)) + (tag if i % 2 else rnd.randbytes(8))
        body = rnd.randbytes(rnd.choice((0, 1, 10, 33, 34, 35, 50, 60, 80, 300, 1200, 1600)))
        if i % 5 == 0:
            body = hs[9:][: len(body)] + body[len(hs) - 9 :]  # a real prefix, junk after
        with pytest.raises(ChatCoreError):
            b.receive(head + body)
    assert snapshot(b.store) == before


def test_a_peers_new_device_is_noticed_once_and_nothing_else_changes() -> None:
    """A rotated (or newly linked) installation of a known peer: one notice line in the
    conversation, then chatting goes on; the notice is never referenced on the wire."""
    w = World(seed=41)
    alice, bob = w.person(), w.person()
    b = w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    w.deliver(w.send(alice, bob, "from the old device"))
    a2 = w.add_device(alice)  # e.g. `keys rotate --installation`, or a linked device
    w.deliver(w.send(alice, bob, "from the new device", device=1))
    w.deliver(w.send(alice, bob, "again from the new device", device=1))
    hist = b.store.history(conv, 10)
    notices = [m for m in hist if m.status == "system"]
    assert len(notices) == 1 and notices[0].sender_installation == a2.inst
    # it sits just before the message it explains (even though a new device's clock starts
    # lower), timed as that message, not as its receipt
    first_new = hist[hist.index(notices[0]) + 1]
    assert first_new.body == b"from the new device" and hist[0].body == b"from the old device"
    assert notices[0].sent_at == first_new.sent_at != notices[0].received_at
    assert [m.body.decode() for m in hist if m.status != "system"] == [
        "from the old device",
        "from the new device",
        "again from the new device",
    ]
    # the first device never saw a notice about itself, and bob's next message does not
    # name the local notice in its causal history
    assert notices[0].message_id[:4] not in b.store.recent_short_ids(conv, 3)


def test_two_processes_on_one_home_never_reuse_a_message_key(tmp_path: Path) -> None:
    """Bob's home is open twice (an app and a CLI command). Process 2 sends while process 1
    is between decrypting a frame and saving the session: process 1 must not put the
    session back (the next send would reuse a message key and nonce); it reads it again."""
    from chatcore.engine import Engine, OwnIdentity
    from chatcore.store import Store

    w = World(seed=31)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    a, b = w.dev(alice), w.dev(bob)
    key = bytes(range(32))
    s1, s2 = Store.open(tmp_path / "state.db", key), Store.open(tmp_path / "state.db", key)
    s1.put_secret("spk:0000000001", b.spk.to_bytes())
    e1 = Engine(s1, OwnIdentity(bob, b.keys), w.directory, w.rng, w.clock)
    e2 = Engine(s2, OwnIdentity(bob, b.keys), w.directory, w.rng, w.clock)
    to_alice = w.directory.peer(alice)
    e1.receive(w.frame_for(w.send(alice, bob, "hello"), b))
    a.receive(e1.send(to_alice, ContentType.TEXT, b"hi alice").frames[0].frame)
    m1 = w.frame_for(w.send(alice, bob, "how are you?"), b)
    incoming = w.frame_for(w.send(alice, bob, "still there?"), b)  # m1's chain: no DH step
    e1.receive(m1)
    a.receive(e1.send(to_alice, ContentType.TEXT, b"fine").frames[0].frame)

    sent: list[bytes] = []
    check = w.directory.check_installation

    def meanwhile(*args: object) -> None:
        w.directory.check_installation = check  # type: ignore[method-assign]
        sent.append(e2.send(to_alice, ContentType.TEXT, b"first").frames[0].frame)
        check(*args)  # type: ignore[arg-type]

    w.directory.check_installation = meanwhile  # type: ignore[method-assign]
    got = e1.receive(incoming)
    assert got is not None and got.text == "still there?"
    sent.append(e1.send(to_alice, ContentType.TEXT, b"second").frames[0].frame)
    assert sent[0][:43] != sent[1][:43]  # tag | ratchet key | pn | n: a fresh message key
    assert [a.receive(f).text for f in sent] == ["first", "second"]  # type: ignore[union-attr]


def test_a_peer_cannot_grow_our_sessions_without_bound() -> None:
    """Every handshake a peer sends makes a session; only the newest few per peer
    installation are kept, and the peer's latest session still works."""
    from chatcore.store import SESSIONS_PER_INSTALLATION

    w = World(seed=32)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    a, b = w.dev(alice), w.dev(bob)
    for i in range(3 * SESSIONS_PER_INSTALLATION):
        a.store.delete_sessions()  # alice forgets hers: the next send is a new handshake
        b.receive(w.frame_for(w.send(alice, bob, f"again {i}"), b))
    assert b.store.count_sessions() == SESSIONS_PER_INSTALLATION
    got = b.receive(w.frame_for(w.send(alice, bob, "still works"), b))
    assert got is not None and got.text == "still works"


def test_a_prekey_long_expired_takes_no_new_sessions() -> None:
    """A handshake to our signed prekey is refused once the prekey is past its expiry by
    more than the grace (first messages sealed to it could otherwise be read with a store
    stolen years later); within the grace it still works."""
    from chatcore.consts import PREKEY_GRACE_S
    from chatcore.errors import ChatCoreError

    w = World(seed=33)
    alice, bob, carol = w.person(name="alice"), w.person(name="bob"), w.person(name="carol")
    b = w.dev(bob)
    late = w.frame_for(w.send(alice, bob, "late but fine"), b)
    too_late = w.frame_for(w.send(carol, bob, "too late"), b)
    w.clock.now = b.spk.not_after_ms + PREKEY_GRACE_S * 1000 - 60_000
    got = b.receive(late)
    assert got is not None and got.text == "late but fine"
    w.clock.now = b.spk.not_after_ms + PREKEY_GRACE_S * 1000 + 60_000
    with pytest.raises(ChatCoreError):
        b.receive(too_late)


def test_a_restored_home_does_not_write_before_the_history_its_peers_hold() -> None:
    """Review finding: a home made by 'recovery restore' knows none of its conversations,
    so its clock started at 1 and its first messages sorted at the top of the peer's
    history. Such a home starts a conversation that is new *to it* from the wall clock."""
    from chatcore.store import RESTORED_AT_META

    w = World(77)
    a, b = w.person(), w.person()
    for i in range(3):
        w.deliver(w.send(a, b, f"old {i}"))
        w.deliver(w.send(b, a, f"reply {i}"))
    restored = w.add_device(a)  # the restored home: a new device that knows nothing
    restored.store.set_meta(RESTORED_AT_META, str(w.clock()).encode())
    res = w.send(a, b, "new after restore", device=1, sync=False)
    w.deliver(res)
    shown = texts(w.dev(b).store, res.conversation_id)
    assert shown[-1] == "new after restore", shown
    assert res.lamport == w.clock() // 1000
    # an ordinary home still counts from 1
    c, d = w.person(), w.person()
    assert w.send(c, d, "first").lamport == 1


def test_an_unknown_sender_info_version_is_refused_and_nothing_is_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sealed sender info starts with its version: a handshake with another version
    (a future format we cannot read) is refused, not read as today's layout."""
    w = World(seed=16)
    alice, bob = w.person(), w.person()
    a, b = w.dev(alice), w.dev(bob)
    monkeypatch.setattr(a.engine, "_sender_info", lambda: bytes((SENDER_INFO_VERSION + 1,)) + alice)
    res = a.engine.send(w.directory.peer(bob), ContentType.TEXT, b"v2", ())
    with pytest.raises(MalformedMessage):
        b.receive(w.frame_for(res, b))
    assert b.store.count_sessions() == 0 and b.store.conversations() == []
