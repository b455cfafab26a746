"""discovery.records: encoding, text form, signatures and every verify() outcome. Pure, no chain."""

from __future__ import annotations

import base64
import dataclasses
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.errors import (
    BadSignature,
    ExpiredPrekey,
    HashMismatch,
    InvalidRecord,
    MalformedRecord,
    UnusableKey,
    WrongChain,
)
from discovery.records import (
    BUNDLE_SIZE,
    MLKEM768_PUBLIC_KEY_SIZE,
    PQ_RECORD_SIZE,
    TEXT_PREFIX,
    ChainBinding,
    IntroBundle,
    PqKeyRecord,
    decode_text,
    encode_text,
    looks_like_text,
    x25519_usable,
)

REGISTRY = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
BINDING = ChainBinding(31337, REGISTRY)
NOW = 1_800_000_000


def seed_and_pub(seed: bytes | None = None) -> tuple[bytes, bytes]:
    seed = seed if seed is not None else os.urandom(32)
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return seed, pub


SEED, INSTALLATION = seed_and_pub(bytes(range(32)))
IDENTITY = keccak(b"identity")


def make_bundle(seed: bytes = SEED, **over: object) -> IntroBundle:
    _, pub = seed_and_pub(seed)
    fields: dict[str, object] = dict(
        chain_id=31337,
        registry=REGISTRY,
        identity_id=IDENTITY,
        installation_id=pub,
        ik_x25519=b"\x11" * 32,
        spk_id=7,
        spk_pub=b"\x22" * 32,
        spk_not_after=NOW + 3600,
        seq=3,
        issued_at=NOW - 10,
    )
    fields.update(over)
    return IntroBundle(**fields).signed(seed)  # type: ignore[arg-type]


PQ_PUB = MLKEM768PrivateKey.from_seed_bytes(bytes(range(64))).public_key().public_bytes_raw()
assert len(PQ_PUB) == MLKEM768_PUBLIC_KEY_SIZE


def make_pq(seed: bytes = SEED, **over: object) -> PqKeyRecord:
    _, pub = seed_and_pub(seed)
    fields: dict[str, object] = dict(
        chain_id=31337,
        registry=REGISTRY,
        identity_id=IDENTITY,
        installation_id=pub,
        pq_key_id=1,
        not_after=NOW + 86400,
        issued_at=NOW,
        pq_pub=PQ_PUB,
    )
    fields.update(over)
    return PqKeyRecord(**fields).signed(seed)  # type: ignore[arg-type]


# --- encoding ---------------------------------------------------------------------------------
def test_bundle_layout_and_round_trip() -> None:
    b = make_bundle()
    raw = b.encode()
    assert len(raw) == BUNDLE_SIZE == 249
    assert raw[0] == 1
    assert raw[1:9] == (31337).to_bytes(8, "big")
    assert raw[9:29] == REGISTRY
    assert raw[29:61] == IDENTITY
    assert raw[61:93] == INSTALLATION
    assert raw[169:177] == (3).to_bytes(8, "big")  # seq
    assert IntroBundle.decode(raw) == b
    assert b.hash() == keccak(raw)
    assert b.signature_ok()
    b.verify(
        BINDING, NOW, expected_hash=keccak(raw), identity_id=IDENTITY, installation_id=INSTALLATION
    )


def test_encoding_is_deterministic() -> None:
    assert make_bundle().encode() == make_bundle().encode()
    assert make_bundle(seq=4).hash() != make_bundle().hash()


def test_text_form_round_trip() -> None:
    b = make_bundle()
    text = b.to_text()
    assert text.startswith(f"{TEXT_PREFIX}1_")
    assert "=" not in text and "+" not in text and "/" not in text
    assert looks_like_text("  " + text)
    assert IntroBundle.from_text(text) == b
    assert IntroBundle.from_text(f"  {text}\n") == b


def test_pq_record_round_trip() -> None:
    r = make_pq()
    raw = r.encode()
    assert len(raw) == PQ_RECORD_SIZE == 1361
    assert PqKeyRecord.decode(raw) == r
    r.verify(
        BINDING, NOW, expected_hash=keccak(raw), identity_id=IDENTITY, installation_id=INSTALLATION
    )


# --- tampering: every byte counts ---------------------------------------------------------------
_OFFSETS = sorted(
    {
        0,
        1,
        8,
        9,
        28,
        29,
        60,
        61,
        92,
        93,
        124,
        125,
        128,
        129,
        160,
        161,
        168,
        169,
        176,
        177,
        184,
        185,
        200,
        220,
        247,
        248,
    }
    | set(range(2, 249, 17))
)


@pytest.mark.parametrize("offset", _OFFSETS)
def test_single_byte_flip_breaks_verify(offset: int) -> None:
    b = make_bundle()
    raw = bytearray(b.encode())
    expected = keccak(bytes(raw))
    raw[offset] ^= 0x01
    try:
        flipped = IntroBundle.decode(bytes(raw))
    except MalformedRecord:
        assert offset == 0  # the version byte
        return
    assert flipped.hash() != expected
    # against the hash stored on chain: always rejected
    with pytest.raises(InvalidRecord):
        flipped.verify(BINDING, NOW, expected_hash=expected)
    with pytest.raises(HashMismatch):
        flipped.verify(BINDING, NOW, expected_hash=expected)
    # even without the chain's hash, the signature (or the chain binding) catches it
    if 1 <= offset < 29:
        with pytest.raises(WrongChain):
            flipped.verify(BINDING, NOW)
    else:
        assert not flipped.signature_ok()
        with pytest.raises(BadSignature):
            flipped.verify(BINDING, NOW)


@pytest.mark.parametrize("offset", [0, 1, 9, 29, 61, 93, 97, 105, 113, 700, 1296, 1297, 1360])
def test_pq_record_byte_flip_breaks_verify(offset: int) -> None:
    r = make_pq()
    raw = bytearray(r.encode())
    expected = keccak(bytes(raw))
    raw[offset] ^= 0x80
    try:
        flipped = PqKeyRecord.decode(bytes(raw))
    except MalformedRecord:
        assert offset == 0
        return
    with pytest.raises(HashMismatch):
        flipped.verify(BINDING, NOW, expected_hash=expected)
    with pytest.raises((BadSignature, WrongChain)):
        flipped.verify(BINDING, NOW)


# --- malformed input ------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 185, 248, 250, 300])
def test_decode_wrong_length(n: int) -> None:
    raw = (make_bundle().encode() + b"\x00" * 64)[:n]
    with pytest.raises(MalformedRecord):
        IntroBundle.decode(raw)


def test_decode_unknown_version() -> None:
    raw = bytearray(make_bundle().encode())
    raw[0] = 2
    with pytest.raises(MalformedRecord, match="version"):
        IntroBundle.decode(bytes(raw))


def test_decode_not_bytes() -> None:
    with pytest.raises(MalformedRecord):
        IntroBundle.decode("not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, 1360, 1362])
def test_pq_decode_wrong_length(n: int) -> None:
    with pytest.raises(MalformedRecord):
        PqKeyRecord.decode((make_pq().encode() + b"\x00")[:n])


@pytest.mark.parametrize(
    "field,value",
    [
        ("registry", b"\x00" * 19),
        ("identity_id", b"\x00" * 31),
        ("installation_id", b"\x00" * 33),
        ("ik_x25519", b""),
        ("spk_pub", b"\x00" * 64),
        ("signature", b"\x00" * 63),
        ("seq", -1),
        ("seq", 2**64),
        ("chain_id", 2**64),
        ("spk_id", 2**32),
    ],
)
def test_constructor_rejects_wrong_sizes(field: str, value: object) -> None:
    b = make_bundle()
    with pytest.raises(ValueError):
        dataclasses.replace(b, **{field: value})  # type: ignore[arg-type]


def test_binding_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        ChainBinding(31337, b"\x00" * 19)
    with pytest.raises(ValueError):
        ChainBinding(0, REGISTRY)
    assert ChainBinding.from_hex(31337, "0x" + REGISTRY.hex().upper()) == BINDING


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "logos_chatintr_1_AAAA",
        "LOGOS_CHATINTRO_1_AAAA",
        "logos_chatintro_",
        "logos_chatintro_1",
        "logos_chatintro_1_",
        "logos_chatintro_x_AAAA",
        "logos_chatintro__AAAA",
        "logos_chatintro_1_AA+A",
        "logos_chatintro_1_AA/A",
        "logos_chatintro_1_AA=A",
        "logos_chatintro_1_A",  # 6 bits: not a whole byte
        "logos_chatintro_1_AAAA",  # decodes, but far too short for a bundle
        "logos_chatintro_1_AA AA",
        "logos_chatintro_²_AAAA",  # a digit to str.isdigit, not to int()
        "logos_chatintro_" + "9" * 5000 + "_AAAA",  # past Python's int-from-str limit
    ],
)
def test_bad_text_is_malformed(text: str) -> None:
    with pytest.raises(MalformedRecord):
        IntroBundle.from_text(text)


def test_text_with_truncated_payload_is_malformed() -> None:
    text = make_bundle().to_text()
    with pytest.raises(MalformedRecord):
        IntroBundle.from_text(text[:-4])


def test_text_version_must_match_bundle_version() -> None:
    raw = make_bundle().encode()
    with pytest.raises(MalformedRecord):
        IntroBundle.from_text(encode_text(raw, 2))
    assert decode_text(encode_text(raw, 1)) == (1, raw)


def test_text_of_unknown_bundle_version_is_malformed() -> None:
    raw = bytearray(make_bundle().encode())
    raw[0] = 9
    b64 = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(MalformedRecord):
        IntroBundle.from_text(f"{TEXT_PREFIX}9_{b64}")


# --- verify outcomes ----------------------------------------------------------------------------
def test_verify_wrong_chain_id() -> None:
    with pytest.raises(WrongChain):
        make_bundle().verify(ChainBinding(1, REGISTRY), NOW)
    with pytest.raises(WrongChain):
        make_bundle(chain_id=999).verify(BINDING, NOW)


def test_verify_wrong_registry() -> None:
    with pytest.raises(WrongChain):
        make_bundle().verify(ChainBinding(31337, b"\x01" * 20), NOW)
    with pytest.raises(WrongChain):
        make_pq().verify(ChainBinding(31337, b"\x01" * 20), NOW)


def test_verify_expired_prekey() -> None:
    b = make_bundle(spk_not_after=NOW)
    b.verify(BINDING, NOW - 1)
    with pytest.raises(ExpiredPrekey):
        b.verify(BINDING, NOW)  # not-after is exclusive
    with pytest.raises(ExpiredPrekey):
        b.verify(BINDING, NOW + 10**6)
    with pytest.raises(ExpiredPrekey):
        make_pq(not_after=NOW).verify(BINDING, NOW)


def test_verify_wrong_expected_hash() -> None:
    b = make_bundle()
    with pytest.raises(HashMismatch):
        b.verify(BINDING, NOW, expected_hash=make_bundle(seq=4).hash())
    with pytest.raises(HashMismatch):
        b.verify(BINDING, NOW, expected_hash=b"\x00" * 32)
    with pytest.raises(HashMismatch):
        make_pq().verify(BINDING, NOW, expected_hash=b"\x00" * 32)


def test_verify_wrong_identity_or_installation() -> None:
    b = make_bundle()
    with pytest.raises(HashMismatch):
        b.verify(BINDING, NOW, identity_id=keccak(b"someone else"))
    with pytest.raises(HashMismatch):
        b.verify(BINDING, NOW, installation_id=b"\x00" * 32)


def test_signed_by_another_key_is_bad_signature() -> None:
    other_seed, _ = seed_and_pub()
    b = make_bundle()
    forged = dataclasses.replace(b, signature=b"\x00" * 64).signed(other_seed)
    assert forged.installation_id == INSTALLATION
    assert not forged.signature_ok()
    with pytest.raises(BadSignature):
        forged.verify(BINDING, NOW, expected_hash=forged.hash())
    pq = make_pq()
    with pytest.raises(BadSignature):
        pq.signed(other_seed).verify(BINDING, NOW)


def test_domain_separation_between_record_kinds() -> None:
    # a bundle signature is not a valid signature of the same bytes under the PQ domain
    b = make_bundle()
    assert b.signature_ok()
    unsigned = dataclasses.replace(b, signature=b"\x00" * 64)
    assert (
        unsigned.signed(
            lambda m: Ed25519PrivateKey.from_private_bytes(SEED).sign(
                b"logos-chat/pq-key/v1" + m[len(b"logos-chat/intro-bundle/v1") :]
            )
        ).signature_ok()
        is False
    )


def test_signed_accepts_sign_function() -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    a = make_bundle()
    b = dataclasses.replace(a, signature=b"\x00" * 64).signed(key.sign)
    assert a == b


# --- property -------------------------------------------------------------------------------
_b32 = st.binary(min_size=32, max_size=32)
_u64 = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=60, deadline=None)
@given(
    chain_id=st.integers(min_value=1, max_value=2**64 - 1),
    registry=st.binary(min_size=20, max_size=20),
    identity_id=_b32,
    ik=_b32,
    spk_id=st.integers(min_value=0, max_value=2**32 - 1),
    spk_pub=_b32,
    not_after=_u64,
    seq=_u64,
    issued_at=_u64,
    seed=_b32,
)
def test_round_trip_property(
    chain_id: int,
    registry: bytes,
    identity_id: bytes,
    ik: bytes,
    spk_id: int,
    spk_pub: bytes,
    not_after: int,
    seq: int,
    issued_at: int,
    seed: bytes,
) -> None:
    _, pub = seed_and_pub(seed)
    b = IntroBundle(
        chain_id=chain_id,
        registry=registry,
        identity_id=identity_id,
        installation_id=pub,
        ik_x25519=ik,
        spk_id=spk_id,
        spk_pub=spk_pub,
        spk_not_after=not_after,
        seq=seq,
        issued_at=issued_at,
    ).signed(seed)
    raw = b.encode()
    assert len(raw) == BUNDLE_SIZE
    assert IntroBundle.decode(raw) == b
    assert IntroBundle.from_text(b.to_text()) == b
    assert b.signature_ok()
    binding = ChainBinding(chain_id, registry)
    if not_after > 0 and x25519_usable(ik) and x25519_usable(spk_pub):
        b.verify(binding, not_after - 1, expected_hash=keccak(raw))
    with pytest.raises(ExpiredPrekey):
        b.verify(binding, not_after, expected_hash=keccak(raw))


# Low-order X25519 points (RFC 7748 section 6.1 lists them; DH with any is all zero): 0, 1,
# the points of order 8, and p - 1, p, p + 1 in non-canonical form.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    ((1 << 255) - 19 - 1).to_bytes(32, "little"),
    ((1 << 255) - 19).to_bytes(32, "little"),
    ((1 << 255) - 19 + 1).to_bytes(32, "little"),
]


@pytest.mark.parametrize("point", LOW_ORDER)
@pytest.mark.parametrize("field", ["ik_x25519", "spk_pub"])
def test_bundle_with_a_low_order_key_is_unusable(field: str, point: bytes) -> None:
    """Anyone can sign such a bundle for a device of theirs; no session can be made with it
    (and before, trying broke every send and group change that fanned out to it)."""
    b = make_bundle(**{field: point})
    assert b.signature_ok()
    with pytest.raises(UnusableKey):
        b.verify(BINDING, NOW)
    assert isinstance(UnusableKey("x"), InvalidRecord)  # the resolver rejects the device


def test_pq_record_with_a_malformed_key_is_unusable() -> None:
    make_pq().verify(BINDING, NOW)
    for bad in (b"\xff" * MLKEM768_PUBLIC_KEY_SIZE, b"\xff" * 32 + PQ_PUB[32:]):
        r = make_pq(pq_pub=bad)
        assert r.signature_ok()
        with pytest.raises(UnusableKey):
            r.verify(BINDING, NOW)
