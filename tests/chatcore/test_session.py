from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.consts import KIND_HANDSHAKE, KIND_SESSION, WIRE_VERSION
from chatcore.errors import (
    ChatCoreError,
    DecryptionError,
    DuplicateMessage,
    HandshakeError,
    MalformedMessage,
)
from chatcore.keys import InstallationKeys, SignedPrekey
from chatcore.session import Session, parse_frame
from tests.chatcore import SENDER_INFO, make_pair, make_parties, seeded_rng

HS = bytes(((WIRE_VERSION << 4) | KIND_HANDSHAKE,))
SF = bytes(((WIRE_VERSION << 4) | KIND_SESSION,))


def test_first_frames_are_handshakes_until_the_peer_answers() -> None:
    a, b, spk, rng = make_parties()
    alice = Session.initiate(a, b.peer_keys(spk), SENDER_INFO, rng)
    frames = [alice.encrypt(b"m%d" % i, rng) for i in range(3)]
    assert all(parse_frame(f) == (KIND_HANDSHAKE, alice.tag) for f in frames)
    assert not alice.established
    # the second frame arrives first
    bob, info, pt = Session.respond(b, {spk.id: spk}, {b.pq.id: b.pq}, frames[1])
    assert (pt, info.installation_id, info.ik_x25519, info.sender_info) == (
        b"m1",
        a.installation_id,
        a.ik_x25519,
        SENDER_INFO,
    )
    assert bob.tag == alice.tag and bob.peer_installation_id == a.installation_id
    assert alice.peer_installation_id == b.installation_id
    assert bob.decrypt(frames[0]) == b"m0"
    assert bob.decrypt(frames[2]) == b"m2"
    with pytest.raises(DuplicateMessage):
        bob.decrypt(frames[1])
    reply = bob.encrypt(b"hi", rng)
    assert parse_frame(reply) == (KIND_SESSION, bob.tag)
    assert alice.decrypt(reply) == b"hi" and alice.established
    nxt = alice.encrypt(b"steady", rng)
    assert parse_frame(nxt) == (KIND_SESSION, alice.tag)
    assert bob.decrypt(nxt) == b"steady"


def test_wire_overhead_in_steady_state() -> None:
    alice, bob, _ = make_pair()
    for size in (0, 200, 5000):
        frame = alice.encrypt(bytes(size), seeded_rng(0))
        assert len(frame) - size == 59  # 1 + 8 + 32 + 1 + 1 + 16
        bob.decrypt(frame)


def test_parse_frame() -> None:
    for bad in (
        b"",
        bytes((0x02,)) + bytes(80),
        bytes((WIRE_VERSION << 4,)) + bytes(80),
        SF + bytes(20),
        HS,
    ):
        with pytest.raises(MalformedMessage):
            parse_frame(bad)
    assert parse_frame(bytes(((WIRE_VERSION << 4) | 3,))) == (3, None)
    with pytest.raises(TypeError):
        parse_frame("text")  # type: ignore[arg-type]


def _flip_all(session: Session, frame: bytes) -> None:
    for i in range(len(frame)):
        for bit in (0x01, 0x80):
            bad = bytearray(frame)
            bad[i] ^= bit
            before = session.to_bytes()
            with pytest.raises(ChatCoreError):
                session.decrypt(bytes(bad))
            assert session.to_bytes() == before


def test_bit_flips_in_session_frames() -> None:
    alice, bob, _ = make_pair()
    frame = alice.encrypt(b"payload" * 5, seeded_rng(1))
    _flip_all(bob, frame)
    assert bob.decrypt(frame) == b"payload" * 5


def test_bit_flips_in_handshake_frames() -> None:
    a, b, spk, rng = make_parties()
    alice = Session.initiate(a, b.peer_keys(spk), SENDER_INFO, rng)
    frames = [alice.encrypt(b"hello", rng) for _ in range(2)]
    for i in range(len(frames[0])):
        bad = bytearray(frames[0])
        bad[i] ^= 0x10
        with pytest.raises((HandshakeError, MalformedMessage)):
            Session.respond(b, {spk.id: spk}, {b.pq.id: b.pq}, bytes(bad))
    bob, _, _ = Session.respond(b, {spk.id: spk}, {b.pq.id: b.pq}, frames[1])
    _flip_all(bob, frames[0])  # via the established session
    assert bob.decrypt(frames[0]) == b"hello"


def test_respond_rejects_non_handshake_and_unknown_prekey() -> None:
    a, b, spk, rng = make_parties()
    alice, _bob, _ = make_pair()
    with pytest.raises(HandshakeError):
        Session.respond(b, {spk.id: spk}, {}, alice.encrypt(b"x", rng))
    fresh = Session.initiate(a, b.peer_keys(spk), b"", rng)
    with pytest.raises(HandshakeError):
        Session.respond(b, {spk.id + 1: spk}, {b.pq.id: b.pq}, fresh.encrypt(b"x", rng))
    with pytest.raises(MalformedMessage):
        Session.respond(b, {spk.id: spk}, {b.pq.id: b.pq}, b"")


def test_frames_of_another_session_are_rejected() -> None:
    _alice, bob, _ = make_pair(1)
    carol, dave, _ = make_pair(2)
    frame = carol.encrypt(b"x", seeded_rng(3))
    before = bob.to_bytes()
    with pytest.raises(DecryptionError):
        bob.decrypt(frame)
    # same tag forced: still rejected by authentication
    forged = frame[:1] + bob.tag + frame[9:]
    with pytest.raises(DecryptionError):
        bob.decrypt(forged)
    assert bob.to_bytes() == before
    assert dave.decrypt(frame) == b"x"


def test_simultaneous_initiation_gives_two_working_sessions() -> None:
    rng = seeded_rng(11)
    a, b = InstallationKeys.generate(rng), InstallationKeys.generate(rng)
    spk_a, spk_b = SignedPrekey.generate(rng, 1, 2**50), SignedPrekey.generate(rng, 1, 2**50)
    ab = Session.initiate(a, b.peer_keys(spk_b), b"a", rng)
    ba = Session.initiate(b, a.peer_keys(spk_a), b"b", rng)
    f_ab, f_ba = ab.encrypt(b"from a", rng), ba.encrypt(b"from b", rng)
    b_side, _, pt1 = Session.respond(b, {1: spk_b}, {b.pq.id: b.pq}, f_ab)
    a_side, _, pt2 = Session.respond(a, {1: spk_a}, {a.pq.id: a.pq}, f_ba)
    assert (pt1, pt2) == (b"from a", b"from b")
    assert ab.tag != ba.tag
    assert ab.decrypt(b_side.encrypt(b"r1", rng)) == b"r1"
    assert ba.decrypt(a_side.encrypt(b"r2", rng)) == b"r2"
    with pytest.raises(DecryptionError):
        ab.decrypt(a_side.encrypt(b"wrong session", rng))


def test_session_serialisation_round_trip() -> None:
    a, b, spk, rng = make_parties()
    alice = Session.initiate(a, b.peer_keys(spk), SENDER_INFO, rng)
    alice = Session.from_bytes(alice.to_bytes())  # pending handshake survives
    f0 = alice.encrypt(b"0", rng)
    assert parse_frame(f0)[0] == KIND_HANDSHAKE
    bob, _, _ = Session.respond(b, {spk.id: spk}, {b.pq.id: b.pq}, f0)
    bob = Session.from_bytes(bob.to_bytes())
    alice = Session.from_bytes(alice.to_bytes())
    assert alice.decrypt(bob.encrypt(b"1", rng)) == b"1"
    alice = Session.from_bytes(alice.to_bytes())
    assert alice.established and bob.decrypt(alice.encrypt(b"2", rng)) == b"2"
    with pytest.raises(DuplicateMessage):
        bob.decrypt(f0)
    for bad in (b"", b"\x07" + bob.to_bytes()[1:], bob.to_bytes()[:-1]):
        with pytest.raises(ValueError):
            Session.from_bytes(bad)


def test_no_identity_or_sender_info_in_any_frame() -> None:
    a, b, spk, rng = make_parties()
    alice = Session.initiate(a, b.peer_keys(spk), SENDER_INFO, rng)
    frames = [alice.encrypt(b"hello", rng)]
    bob, _, _ = Session.respond(b, {spk.id: spk}, {b.pq.id: b.pq}, frames[0])
    for i in range(6):
        frames.append(bob.encrypt(b"r%d" % i, rng))
        alice.decrypt(frames[-1])
        frames.append(alice.encrypt(b"a%d" % i, rng))
        bob.decrypt(frames[-1])
    secrets = [
        a.installation_id,
        a.ik_x25519,
        b.installation_id,
        b.ik_x25519,
        spk.pub,
        SENDER_INFO,
        SENDER_INFO[:12],
        b.pq.pub[:16],
        a.pq.pub[:16],
    ]
    for frame in frames:
        for secret in secrets:
            assert secret not in frame


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=1400))
def test_garbage_never_crashes(data: bytes) -> None:
    _alice, bob, _ = make_pair()
    _a, b, spk, _ = make_parties()
    for frame in (data, SF + bob.tag + data, HS + bob.tag + data):
        with pytest.raises(ChatCoreError):
            bob.decrypt(frame)
        with pytest.raises(ChatCoreError):
            Session.respond(b, {spk.id: spk}, {b.pq.id: b.pq}, frame)


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["a_send", "b_send", "to_b", "to_a", "replay", "persist"]),
        st.integers(0, 2**16),
    ),
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(ACTIONS, st.integers(0, 2**32))
def test_random_interleavings_decrypt(actions: list[tuple[str, int]], seed: int) -> None:
    a, b, spk, _ = make_parties(seed)
    rng = seeded_rng(seed)
    alice = Session.initiate(a, b.peer_keys(spk, with_pq=seed % 4 != 0), SENDER_INFO, rng)
    bob: Session | None = None
    to_b: list[tuple[bytes, bytes]] = []
    to_a: list[tuple[bytes, bytes]] = []
    delivered: list[tuple[str, bytes]] = []
    counter = 0

    def deliver_b(frame: bytes, pt: bytes) -> None:
        nonlocal bob
        if bob is None:
            bob, info, got = Session.respond(b, {spk.id: spk}, {b.pq.id: b.pq}, frame)
            assert info.sender_info == SENDER_INFO
        else:
            got = bob.decrypt(frame)
        assert got == pt
        delivered.append(("b", frame))

    for action, k in actions:
        counter += 1
        if action == "a_send":
            pt = b"a%d" % counter
            to_b.append((alice.encrypt(pt, rng), pt))
        elif action == "b_send" and bob is not None:
            pt = b"b%d" % counter
            to_a.append((bob.encrypt(pt, rng), pt))
        elif action == "to_b" and to_b:
            deliver_b(*to_b.pop(k % len(to_b)))
        elif action == "to_a" and to_a:
            frame, pt = to_a.pop(k % len(to_a))
            assert alice.decrypt(frame) == pt
            delivered.append(("a", frame))
        elif action == "replay" and delivered:
            who, frame = delivered[k % len(delivered)]
            target = alice if who == "a" else bob
            assert target is not None
            before = target.to_bytes()
            with pytest.raises((DuplicateMessage, DecryptionError)):
                target.decrypt(frame)
            assert target.to_bytes() == before
        elif action == "persist":
            alice = Session.from_bytes(alice.to_bytes())
            if bob is not None:
                bob = Session.from_bytes(bob.to_bytes())
    # everything still in flight arrives, in a random order
    rest = [("b", f, p) for f, p in to_b] + [("a", f, p) for f, p in to_a]
    random.Random(seed).shuffle(rest)
    for who, frame, pt in rest:
        if who == "b":
            deliver_b(frame, pt)
        else:
            assert alice.decrypt(frame) == pt
