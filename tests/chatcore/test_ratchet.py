from __future__ import annotations

from collections.abc import Callable

import pytest

from chatcore import ratchet as ratchet_mod
from chatcore.consts import MAX_OLD_CHAINS, MAX_SKIP
from chatcore.crypto import x25519_keypair
from chatcore.errors import DecryptionError, DuplicateMessage, MalformedMessage, TooManySkipped
from chatcore.ratchet import RatchetState, decode_varint, encode_varint
from tests.chatcore import seeded_rng

AD = b"session-ad"


def pair(seed: int = 5) -> tuple[RatchetState, RatchetState, Callable[[int], bytes]]:
    rng = seeded_rng(seed)
    rk, ck = rng(32), rng(32)
    ek, ek_pub = x25519_keypair(rng)
    _, spk_pub = x25519_keypair(rng)
    return (
        RatchetState.initiator(rk, ck, ek, ek_pub, spk_pub),
        RatchetState.responder(rk, ck, ek_pub),
        rng,
    )


def enc(s: RatchetState, pt: bytes, rng: Callable[[int], bytes]) -> bytes:
    return s.encrypt(pt, AD, rng)


def dec(s: RatchetState, body: bytes) -> bytes:
    return s.decrypt(body, 0, AD)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**32 - 1])
def test_varint_round_trip(value: int) -> None:
    data = encode_varint(value)
    assert decode_varint(b"\xaa" + data + b"\xbb", 1) == (value, 1 + len(data))


@pytest.mark.parametrize(
    "data", [b"", b"\x80", b"\x80\x00", b"\xff\xff\xff\xff\xff\x01", b"\xff\xff\xff\xff\x7f"]
)
def test_varint_rejects_bad_encodings(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_varint(data, 0)


def test_varint_range() -> None:
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(ValueError):
        encode_varint(2**32)


def test_ping_pong_with_ratchet_steps() -> None:
    a, b, rng = pair()
    for round_ in range(5):
        for k in range(3):
            assert dec(b, enc(a, f"a{round_}{k}".encode(), rng)) == f"a{round_}{k}".encode()
        for k in range(2):
            assert dec(a, enc(b, f"b{round_}{k}".encode(), rng)) == f"b{round_}{k}".encode()
    # a replaced the peer's prekey and then 4 of b's 5 ratchet keys
    assert len(a.old_dhr) == min(5, MAX_OLD_CHAINS)


def test_out_of_order_across_chains() -> None:
    a, b, rng = pair()
    first = [enc(a, b"a%d" % i, rng) for i in range(4)]
    assert dec(b, first[2]) == b"a2"
    reply = enc(b, b"b0", rng)
    assert dec(a, reply) == b"b0"
    second = [enc(a, b"c%d" % i, rng) for i in range(3)]
    assert dec(b, second[1]) == b"c1"  # new chain; skips a3 (pn=4) and c0
    assert len(b.skipped) == 4  # a0, a1, a3, c0
    for body, pt in [
        (first[3], b"a3"),
        (first[0], b"a0"),
        (second[0], b"c0"),
        (first[1], b"a1"),
        (second[2], b"c2"),
    ]:
        assert dec(b, body) == pt
    assert b.skipped == {}


def test_duplicates() -> None:
    a, b, rng = pair()
    bodies = [enc(a, b"m%d" % i, rng) for i in range(3)]
    dec(b, bodies[2])
    dec(b, bodies[0])
    for body in (bodies[0], bodies[2]):
        before = b.to_bytes()
        with pytest.raises(DuplicateMessage):
            dec(b, body)
        assert b.to_bytes() == before
    # a duplicate from a chain that has since been replaced
    dec(a, enc(b, b"r", rng))
    dec(b, enc(a, b"n", rng))
    with pytest.raises(DuplicateMessage):
        dec(b, bodies[2])


def test_skip_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratchet_mod, "MAX_FORWARD", MAX_SKIP + 500)
    a, b, rng = pair()
    bodies = [enc(a, b"x%d" % i, rng) for i in range(MAX_SKIP + 502)]
    before = b.to_bytes()
    with pytest.raises(TooManySkipped):
        dec(b, bodies[MAX_SKIP + 501])  # would move the chain MAX_FORWARD + 1 ahead
    assert b.to_bytes() == before
    assert dec(b, bodies[MAX_SKIP + 500]) == b"x%d" % (MAX_SKIP + 500)  # exactly MAX_FORWARD
    # only the newest MAX_SKIP skipped keys are kept; the older ones were stepped over
    assert len(b.skipped) == MAX_SKIP
    assert dec(b, bodies[500]) == b"x500"
    with pytest.raises(DuplicateMessage):
        dec(b, bodies[499])
    assert dec(b, bodies[MAX_SKIP + 501]) == b"x%d" % (MAX_SKIP + 501)


def test_new_chain_past_the_skip_limit_drops_the_previous_chain() -> None:
    """The peer's previous chain is more than MAX_SKIP ahead of us (its frames expired from
    the delivery network): its new chain is taken once it authenticates, the old one
    dropped. Before, every later message was refused with TooManySkipped, for ever."""
    a2, b2, rng2 = pair(6)
    dec(b2, enc(a2, b"0", rng2))
    dec(a2, enc(b2, b"r", rng2))
    dec(b2, enc(a2, b"a1", rng2))  # a2's second chain: b2 will answer on a new chain
    lost = [enc(a2, b"lost", rng2) for _ in range(MAX_SKIP + 1)]  # b2 never gets these
    dec(a2, enc(b2, b"r2", rng2))
    # a2 ratchets; its new chain says pn = MAX_SKIP + 2, more than b2 would skip
    assert a2.need_send_ratchet is True
    body = enc(a2, b"new", rng2)
    assert a2.pn == MAX_SKIP + 2 and b2.nr == 1
    before = b2.to_bytes()
    forged = body[:-1] + bytes([body[-1] ^ 1])
    with pytest.raises(DecryptionError):
        dec(b2, forged)
    assert b2.to_bytes() == before  # nothing dropped for a frame that does not authenticate
    assert dec(b2, body) == b"new"
    assert len(b2.skipped) == 0  # the previous chain's keys were not derived
    with pytest.raises(DuplicateMessage):
        dec(b2, lost[-1])
    dec(a2, enc(b2, b"back", rng2))
    assert dec(b2, enc(a2, b"and on", rng2)) == b"and on"


def test_new_chain_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratchet_mod, "MAX_FORWARD", 1200)
    a, b, rng = pair(7)
    dec(b, enc(a, b"0", rng))
    dec(a, enc(b, b"r", rng))
    bodies = [enc(a, b"n%d" % i, rng) for i in range(1202)]  # a's second chain
    before = b.to_bytes()
    with pytest.raises(TooManySkipped):
        dec(b, bodies[1201])
    assert b.to_bytes() == before
    assert dec(b, bodies[1200]) == b"n1200"
    assert len(b.skipped) == MAX_SKIP
    assert dec(b, bodies[200]) == b"n200"
    with pytest.raises(DuplicateMessage):
        dec(b, bodies[199])


def test_total_skipped_cap_evicts_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratchet_mod, "MAX_SKIPPED_KEYS", 5)
    a, b, rng = pair()
    bodies = [enc(a, b"m%d" % i, rng) for i in range(9)]
    dec(b, bodies[8])
    assert len(b.skipped) == 5  # m3..m7 kept, m0..m2 evicted
    assert dec(b, bodies[3]) == b"m3"
    with pytest.raises(DuplicateMessage):
        dec(b, bodies[0])


def test_state_unchanged_after_failed_decrypt() -> None:
    a, b, rng = pair()
    dec(b, enc(a, b"warm", rng))
    dec(a, enc(b, b"up", rng))
    bodies = [enc(a, b"m%d" % i, rng) for i in range(3)]
    for body in (bodies[0], bodies[2]):
        for i in range(len(body)):
            bad = bytearray(body)
            bad[i] ^= 0x04
            before = b.to_bytes()
            with pytest.raises(
                (DecryptionError, MalformedMessage, DuplicateMessage, TooManySkipped)
            ):
                dec(b, bytes(bad))
            assert b.to_bytes() == before
    assert [dec(b, x) for x in bodies] == [b"m0", b"m1", b"m2"]
    with pytest.raises(DuplicateMessage):  # replay detection comes before authentication
        b.decrypt(bodies[0], 0, AD + b"x")
    # wrong AD on a fresh message
    nxt = enc(a, b"m3", rng)
    before = b.to_bytes()
    with pytest.raises(DecryptionError):
        b.decrypt(nxt, 0, b"other-ad")
    assert b.to_bytes() == before


def test_truncated_bodies_are_malformed() -> None:
    a, b, rng = pair()
    body = enc(a, b"", rng)
    for n in range(len(body)):
        with pytest.raises((MalformedMessage, DecryptionError)):
            dec(b, body[:n])


def test_reflected_message_is_rejected() -> None:
    a, _b, rng = pair()
    body = enc(a, b"mine", rng)
    with pytest.raises(DecryptionError):
        dec(a, body)


def test_serialisation_round_trip_mid_conversation() -> None:
    a, b, rng = pair()
    bodies = [enc(a, b"m%d" % i, rng) for i in range(4)]
    dec(b, bodies[3])
    dec(a, enc(b, b"r", rng))
    b2 = RatchetState.from_bytes(b.to_bytes())
    a2 = RatchetState.from_bytes(a.to_bytes())
    assert b2.to_bytes() == b.to_bytes() and a2.to_bytes() == a.to_bytes()
    assert dec(b2, bodies[1]) == b"m1"
    assert dec(b2, enc(a2, b"after", rng)) == b"after"
    assert dec(a2, enc(b2, b"back", rng)) == b"back"
    c = b2.copy()
    dec(c, bodies[0])
    assert len(b2.skipped) == 2 and len(c.skipped) == 1
    assert "rk" not in repr(b2) and b2.rk.hex() not in repr(b2)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: b"",
        lambda d: b"\x02" + d[1:],
        lambda d: d[:1] + b"\xff" + d[2:],
        lambda d: d[:-1],
        lambda d: d + b"\x00",
    ],
)
def test_from_bytes_rejects_malformed(mutate: Callable[[bytes], bytes]) -> None:
    a, _, rng = pair()
    enc(a, b"x", rng)
    with pytest.raises(ValueError):
        RatchetState.from_bytes(mutate(a.to_bytes()))


def test_new_chain_exactly_at_the_skip_limit_keeps_the_previous_chain() -> None:
    """A new chain whose header says exactly MAX_SKIP messages of the previous chain are
    missing derives and keeps their keys (only more than MAX_SKIP drops the chain): the
    late messages of the previous chain still decrypt."""
    a, b, rng = pair(8)
    dec(b, enc(a, b"0", rng))
    dec(a, enc(b, b"r", rng))
    dec(b, enc(a, b"a1", rng))  # a's second chain; b.nr == 1
    late = [enc(a, b"late%d" % i, rng) for i in range(MAX_SKIP)]  # delayed, not lost
    dec(a, enc(b, b"r2", rng))
    body = enc(a, b"new", rng)
    assert a.pn - b.nr == MAX_SKIP
    assert dec(b, body) == b"new"
    assert len(b.skipped) == MAX_SKIP
    assert dec(b, late[0]) == b"late0"
    assert dec(b, late[-1]) == b"late%d" % (MAX_SKIP - 1)
