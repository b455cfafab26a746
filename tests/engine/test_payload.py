"""Plaintext payload encoding: round trips and malformed input (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.errors import MalformedMessage
from chatcore.payload import (
    MAX_BODY,
    MAX_HISTORY,
    MAX_LAMPORT,
    MAX_SENT_AT_MS,
    SENT_AT_EPOCH_MS,
    ContentType,
    Payload,
    decode_varint,
    encode_varint,
)

payloads = st.builds(
    Payload,
    content_type=st.sampled_from(list(ContentType)),
    lamport=st.integers(0, MAX_LAMPORT),
    # whole seconds from 2025 on: the wire carries seconds (display precision)
    sent_at_ms=st.integers(0, (MAX_SENT_AT_MS - SENT_AT_EPOCH_MS) // 1000).map(
        lambda s: SENT_AT_EPOCH_MS + s * 1000
    ),
    body=st.binary(max_size=600),
    history=st.lists(st.binary(min_size=4, max_size=4), max_size=MAX_HISTORY).map(tuple),
    sync_peer=st.none() | st.binary(min_size=32, max_size=32),
    ephemeral=st.booleans(),
    read=st.booleans(),
)


@given(payloads)
def test_round_trip(p: Payload) -> None:
    data = p.encode()
    assert Payload.decode(data) == p
    assert Payload.decode(data).body == p.body  # body is compare=True but repr=False


@given(st.integers(0, 2**64 - 1))
def test_varint_round_trip(n: int) -> None:
    enc = encode_varint(n)
    assert decode_varint(enc + b"tail", 0) == (n, len(enc))


@settings(max_examples=400)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_decode_or_raise_malformed(data: bytes) -> None:
    try:
        p = Payload.decode(data)
    except MalformedMessage:
        return
    assert Payload.decode(p.encode()) == p


def test_damaged_encodings_decode_canonically_or_raise_malformed() -> None:
    # random bytes almost never decode, so damage real encodings instead: whatever still
    # decodes must re-encode to the same payload (one byte flipped, cut or added)
    import random

    rng = random.Random(7)
    decoded = 0
    for i in range(3000):
        p = _good(body=rng.randbytes(rng.randrange(0, 40)), lamport=rng.randrange(0, 1 << 20))
        enc = bytearray(p.encode())
        how = i % 3
        pos = rng.randrange(len(enc))
        if how == 0:
            enc[pos] ^= 1 << rng.randrange(8)
        elif how == 1:
            del enc[pos:]
        else:
            enc.insert(pos, rng.randrange(256))
        try:
            q = Payload.decode(bytes(enc))
        except MalformedMessage:
            continue
        decoded += 1
        assert Payload.decode(q.encode()) == q
    assert decoded > 100  # the round trip above really ran


@given(payloads, st.data())
def test_truncations_and_flips_never_crash(p: Payload, data: st.DataObject) -> None:
    enc = p.encode()
    assert Payload.decode(enc) == p  # the damage below starts from a real encoding
    cut = data.draw(st.integers(0, len(enc)))
    for candidate in (enc[:cut], _flip(enc, data.draw(st.integers(0, max(0, len(enc) - 1))))):
        try:
            q = Payload.decode(candidate)
        except MalformedMessage:
            continue
        assert Payload.decode(q.encode()) == q


def _flip(b: bytes, pos: int) -> bytes:
    if not b:
        return b
    t = bytearray(b)
    t[pos] ^= 0xFF
    return bytes(t)


def _good(**kw: object) -> Payload:
    base: dict[str, object] = dict(
        content_type=ContentType.TEXT,
        lamport=3,
        sent_at_ms=SENT_AT_EPOCH_MS + 86_400_000,
        body=b"hello",
        history=(b"abcd", b"efgh"),
    )
    base.update(kw)
    return Payload(**base)  # type: ignore[arg-type]


def test_layout_of_a_text_payload() -> None:
    p = _good()
    enc = p.encode()
    assert enc[0] == ContentType.TEXT  # type in the low 5 bits, no flags
    assert enc[1] == 3  # lamport
    assert decode_varint(enc, 2) == (86_400, 2 + 3)  # seconds since 2025-01-01
    assert enc.endswith(b"abcdefghhello")
    # header: type|flags 1, lamport 1, sent-at 3, history 1 + 2 x 4 (no message id on the wire)
    assert len(enc) - len(p.body) == 1 + 1 + 3 + 1 + 8
    s = _good(sync_peer=b"\x09" * 32, ephemeral=True).encode()
    assert s[0] == ContentType.TEXT | 0x20 | 0x40 and s[1:33] == b"\x09" * 32
    assert p.text() == "hello"


def test_sent_at_is_whole_seconds_on_the_wire() -> None:
    p = _good(sent_at_ms=SENT_AT_EPOCH_MS + 1_234_567)
    assert Payload.decode(p.encode()).sent_at_ms == SENT_AT_EPOCH_MS + 1_234_000


def test_message_id_is_derived_and_distinguishes_what_it_must() -> None:
    inst, conv = b"\x01" * 32, b"\x02" * 16
    p = _good()
    mid = p.message_id(inst, conv)
    assert len(mid) == 8
    # the receiver derives the same id from the decoded payload (and a re-encryption of it)
    assert Payload.decode(p.encode()).message_id(inst, conv) == mid
    # anything that makes it another message makes another id
    assert _good(lamport=4).message_id(inst, conv) != mid
    assert _good(body=b"hellO").message_id(inst, conv) != mid
    assert _good(content_type=ContentType.REACTION).message_id(inst, conv) != mid
    assert p.message_id(b"\x03" * 32, conv) != mid
    assert p.message_id(inst, b"\x04" * 16) != mid
    # sent-at and causal history are not part of it: a retransmission keeps its id
    assert _good(sent_at_ms=SENT_AT_EPOCH_MS, history=()).message_id(inst, conv) == mid


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01\x01\x00",  # content type 0
        b"\x1f\x01\x01\x00",  # content type 31 (unknown)
        b"\x21" + b"\x09" * 20,  # SYNC without a whole peer id
        b"\x01",  # no lamport
        b"\x01\x81",  # truncated varint
        b"\x01" + b"\xff" * 11 + b"\x01",  # varint too long
        b"\x01\x01\x01",  # no history length
        b"\x01\x01\x01" + bytes((MAX_HISTORY + 1,)) + b"x" * 40,
        b"\x01\x01\x01\x02" + b"abcd",  # history shorter than n
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        Payload.decode(data)


def test_body_too_large() -> None:
    with pytest.raises(MalformedMessage):
        Payload.decode(b"\x01\x01\x01\x00" + bytes(MAX_BODY + 1))
    with pytest.raises(ValueError):
        _good(body=bytes(MAX_BODY + 1))


def test_text_rules() -> None:
    with pytest.raises(MalformedMessage):
        _good(body=b"\xff\xfe").text()
    with pytest.raises(MalformedMessage):
        _good(content_type=ContentType.REACTION).text()


@pytest.mark.parametrize(
    "kw",
    [
        {"history": (b"abc",)},
        {"history": (b"abcd",) * (MAX_HISTORY + 1)},
        {"sync_peer": b"\x01" * 31},
    ],
)
def test_bad_arguments(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _good(**kw)


def test_negative_clock_is_refused() -> None:
    with pytest.raises(ValueError):
        _good(lamport=-1).encode()


@pytest.mark.parametrize(
    ("lamport", "secs"), [(MAX_LAMPORT + 1, 0), (2**63, 0), (0, 2**63), (0, 2**64 - 1)]
)
def test_out_of_range_clocks_are_malformed(lamport: int, secs: int) -> None:
    """A peer's claim the store could not hold (it used to stop every later send)."""
    from chatcore.codec import varint

    data = bytes((int(ContentType.TEXT),)) + varint(lamport) + varint(secs) + b"\x00" + b"x"
    with pytest.raises(MalformedMessage, match="out of range"):
        Payload.decode(data)
    with pytest.raises(ValueError):
        Payload(ContentType.TEXT, MAX_LAMPORT + 1, SENT_AT_EPOCH_MS, b"x")
