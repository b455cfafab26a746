"""Plaintext payload encoding: round trips and malformed input (property-based)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.errors import MalformedMessage
from chatcore.payload import (
    MAX_BODY,
    MAX_HISTORY,
    ContentType,
    Payload,
    decode_varint,
    encode_varint,
)

payloads = st.builds(
    Payload,
    content_type=st.sampled_from(list(ContentType)),
    message_id=st.binary(min_size=8, max_size=8),
    lamport=st.integers(0, 2**63 - 1),
    sent_at_ms=st.integers(0, 2**63 - 1),
    body=st.binary(max_size=600),
    history=st.lists(st.binary(min_size=4, max_size=4), max_size=MAX_HISTORY).map(tuple),
    sync_peer=st.none() | st.binary(min_size=32, max_size=32),
    ephemeral=st.booleans(),
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


@given(payloads, st.data())
def test_truncations_and_flips_never_crash(p: Payload, data: st.DataObject) -> None:
    enc = p.encode()
    cut = data.draw(st.integers(0, len(enc)))
    for candidate in (enc[:cut], _flip(enc, data.draw(st.integers(0, max(0, len(enc) - 1))))):
        try:
            Payload.decode(candidate)
        except MalformedMessage:
            pass


def _flip(b: bytes, pos: int) -> bytes:
    if not b:
        return b
    t = bytearray(b)
    t[pos] ^= 0xFF
    return bytes(t)


def _good(**kw: object) -> Payload:
    base: dict[str, object] = dict(
        content_type=ContentType.TEXT,
        message_id=b"\x01" * 8,
        lamport=3,
        sent_at_ms=1_700_000_000_000,
        body=b"hello",
        history=(b"abcd", b"efgh"),
    )
    base.update(kw)
    return Payload(**base)  # type: ignore[arg-type]


def test_layout_of_a_text_payload() -> None:
    p = _good()
    enc = p.encode()
    assert enc[0] == ContentType.TEXT and enc[1] == 0
    assert enc[2:10] == b"\x01" * 8
    assert enc.endswith(b"abcdefghhello")
    assert len(enc) - len(p.body) == 2 + 8 + 1 + 6 + 1 + 8
    s = _good(sync_peer=b"\x09" * 32, ephemeral=True).encode()
    assert s[1] == 0x03 and s[2:34] == b"\x09" * 32
    assert p.text() == "hello"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",
        b"\x00\x00" + b"\x01" * 8 + b"\x01\x01\x00",  # content type 0
        b"\xc8\x00" + b"\x01" * 8 + b"\x01\x01\x00",  # content type 200
        b"\x01\x04" + b"\x01" * 8 + b"\x01\x01\x00",  # unknown flag
        b"\x01\x80" + b"\x01" * 8 + b"\x01\x01\x00",
        b"\x01\x00" + b"\x01" * 7,  # short message id
        b"\x01\x01" + b"\x09" * 20,  # SYNC without a whole peer id
        b"\x01\x00" + b"\x01" * 8,  # no lamport
        b"\x01\x00" + b"\x01" * 8 + b"\x81",  # truncated varint
        b"\x01\x00" + b"\x01" * 8 + b"\xff" * 11 + b"\x01",  # varint too long
        b"\x01\x00" + b"\x01" * 8 + b"\x01\x01",  # no history length
        b"\x01\x00" + b"\x01" * 8 + b"\x01\x01" + bytes((MAX_HISTORY + 1,)) + b"x" * 40,
        b"\x01\x00" + b"\x01" * 8 + b"\x01\x01\x02" + b"abcd",  # history shorter than n
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        Payload.decode(data)


def test_body_too_large() -> None:
    with pytest.raises(MalformedMessage):
        Payload.decode(b"\x01\x00" + b"\x01" * 8 + b"\x01\x01\x00" + bytes(MAX_BODY + 1))
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
        {"message_id": b"\x01" * 7},
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
