from __future__ import annotations

import pytest

from chatcore import handshake
from chatcore.consts import MAX_SENDER_INFO
from chatcore.errors import HandshakeError
from chatcore.keys import InstallationKeys, PeerKeys, PqPrekey, SignedPrekey
from tests.chatcore import SENDER_INFO, make_parties, seeded_rng


def _accept(
    b: InstallationKeys, prefix: bytes, spks: object, pqs: object, **kw: bool
) -> handshake.Accepted:
    return handshake.accept(b, prefix, 0, spks, pqs, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("pq", [True, False])
def test_both_sides_derive_the_same_keys(pq: bool) -> None:
    a, b, spk, rng = make_parties()
    init = handshake.initiate(a, b.peer_keys(spk, with_pq=pq), SENDER_INFO, rng)
    acc = _accept(b, init.prefix, {spk.id: spk}, {b.pq.id: b.pq})
    assert acc.root_key == init.root_key
    assert acc.chain_key == init.chain_key
    assert acc.session_tag == init.session_tag and len(acc.session_tag) == 8
    assert acc.ad == init.ad
    assert acc.ek_pub == init.ek_pub
    assert acc.prefix_end == len(init.prefix)
    assert acc.peer == handshake.PeerInfo(a.installation_id, a.ik_x25519, SENDER_INFO)
    assert len(init.prefix) == 32 + 11 + (1088 if pq else 0) + 64 + len(SENDER_INFO) + 16


def test_classical_handshake_is_deterministic_given_rng() -> None:
    a, b, spk, _ = make_parties()
    one = handshake.initiate(a, b.peer_keys(spk, with_pq=False), b"", seeded_rng(9))
    two = handshake.initiate(a, b.peer_keys(spk, with_pq=False), b"", seeded_rng(9))
    assert one.prefix == two.prefix and one.root_key == two.root_key


def test_hybrid_handshake_mixes_in_the_kem_secret() -> None:
    a, b, spk, _ = make_parties()
    one = handshake.initiate(a, b.peer_keys(spk), b"", seeded_rng(9))
    two = handshake.initiate(a, b.peer_keys(spk), b"", seeded_rng(9))
    # same EK, different encapsulation randomness (drawn inside pyca) -> different keys
    assert one.ek_pub == two.ek_pub and one.root_key != two.root_key


def test_unknown_prekey_id() -> None:
    a, b, spk, rng = make_parties()
    init = handshake.initiate(a, b.peer_keys(spk), SENDER_INFO, rng)
    with pytest.raises(HandshakeError):
        _accept(b, init.prefix, {spk.id + 1: spk}, {b.pq.id: b.pq})
    with pytest.raises(HandshakeError):
        _accept(b, init.prefix, {spk.id: spk}, {})

    def lookup_raises(key_id: int) -> SignedPrekey:
        raise KeyError(key_id)

    with pytest.raises(HandshakeError):
        _accept(b, init.prefix, lookup_raises, {b.pq.id: b.pq})


def test_old_prekeys_in_grace_window_still_work() -> None:
    a, b, spk_old, rng = make_parties()
    init = handshake.initiate(a, b.peer_keys(spk_old), SENDER_INFO, rng)
    spk_new = SignedPrekey.generate(rng, spk_old.id + 1, 2**50)
    pq_new = PqPrekey.generate(rng, b.pq.id + 1)
    table = {spk_old.id: spk_old, spk_new.id: spk_new}
    acc = _accept(b.with_pq(pq_new), init.prefix, table.get, {b.pq.id: b.pq, pq_new.id: pq_new})
    assert acc.root_key == init.root_key


def test_require_pq() -> None:
    a, b, spk, rng = make_parties()
    init = handshake.initiate(a, b.peer_keys(spk, with_pq=False), SENDER_INFO, rng)
    with pytest.raises(HandshakeError):
        _accept(b, init.prefix, {spk.id: spk}, {b.pq.id: b.pq}, require_pq=True)


def test_wrong_responder_cannot_open() -> None:
    a, b, spk, rng = make_parties()
    other = InstallationKeys.generate(rng)
    init = handshake.initiate(a, b.peer_keys(spk), SENDER_INFO, rng)
    with pytest.raises(HandshakeError):
        _accept(other, init.prefix, {spk.id: spk}, {other.pq.id: other.pq, b.pq.id: b.pq})


def test_every_prefix_byte_is_authenticated() -> None:
    a, b, spk, rng = make_parties()
    init = handshake.initiate(a, b.peer_keys(spk, with_pq=False), SENDER_INFO, rng)
    for i in range(len(init.prefix)):
        bad = bytearray(init.prefix)
        bad[i] ^= 0x01
        try:
            acc = _accept(b, bytes(bad), {spk.id: spk}, {})
        except HandshakeError:
            continue
        assert acc.root_key != init.root_key  # would then fail the first message


def test_truncated_prefix() -> None:
    a, b, spk, rng = make_parties()
    init = handshake.initiate(a, b.peer_keys(spk), SENDER_INFO, rng)
    for n in (0, 10, 43, 500, len(init.prefix) - 1):
        with pytest.raises(HandshakeError):
            _accept(b, init.prefix[:n], {spk.id: spk}, {b.pq.id: b.pq})


def test_low_order_peer_key_is_a_handshake_error() -> None:
    a, b, spk, rng = make_parties()
    peer = PeerKeys(b.installation_id, b.ik_x25519, spk.id, bytes(32))
    with pytest.raises(HandshakeError):
        handshake.initiate(a, peer, b"", rng)


def test_no_identity_in_clear() -> None:
    a, b, spk, rng = make_parties()
    init = handshake.initiate(a, b.peer_keys(spk), SENDER_INFO, rng)
    for secret in (
        a.installation_id,
        a.ik_x25519,
        b.installation_id,
        b.ik_x25519,
        spk.pub,
        SENDER_INFO,
        b.pq.pub[:32],
        spk.id.to_bytes(4, "big"),
    ):
        assert secret not in init.prefix


def test_bad_arguments() -> None:
    a, b, spk, rng = make_parties()
    with pytest.raises(ValueError):
        handshake.initiate(a, b.peer_keys(spk), b"x" * (MAX_SENDER_INFO + 1), rng)
    with pytest.raises(TypeError):
        handshake.initiate(a, b.peer_keys(spk), "text", rng)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        handshake.initiate(a, b.peer_keys(spk), b"", lambda n: b"short")


@pytest.mark.parametrize(
    "field_values",
    [
        {"installation_id": b"x" * 31},
        {"ik_x25519": b"x" * 33},
        {"spk_pub": b""},
        {"pq_pub": b"x" * 1183},
        {"spk_id": -1},
        {"pq_key_id": 2**32},
    ],
)
def test_peer_keys_wrong_lengths(field_values: dict[str, object]) -> None:
    base: dict[str, object] = {
        "installation_id": b"i" * 32,
        "ik_x25519": b"k" * 32,
        "spk_id": 1,
        "spk_pub": b"s" * 32,
        "pq_key_id": 1,
        "pq_pub": b"p" * 1184,
    }
    PeerKeys(**base)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PeerKeys(**{**base, "spk_pub": "s" * 32})  # type: ignore[arg-type]
    base.update(field_values)
    with pytest.raises(ValueError):
        PeerKeys(**base)  # type: ignore[arg-type]


def test_keys_serialisation_round_trip_and_repr() -> None:
    a, _, spk, _rng = make_parties()
    a2 = InstallationKeys.from_bytes(a.to_bytes())
    assert (a2.installation_id, a2.ik_x25519, a2.pq.pub, a2.pq.id) == (
        a.installation_id,
        a.ik_x25519,
        a.pq.pub,
        a.pq.id,
    )
    spk2 = SignedPrekey.from_bytes(spk.to_bytes())
    assert (spk2.id, spk2.pub, spk2.not_after_ms) == (spk.id, spk.pub, spk.not_after_ms)
    assert spk.expired(spk.not_after_ms + 1) and not spk.expired(spk.not_after_ms)
    assert PqPrekey.from_bytes(a.pq.to_bytes()).pub == a.pq.pub
    priv_hex = a.dh_key.private_bytes_raw().hex()
    assert priv_hex not in repr(a) and spk.key.private_bytes_raw().hex() not in repr(spk)
    assert "key=" not in repr(spk).replace("not_after", "")
    for bad in (b"", a.to_bytes()[:-1], b"\x09" + a.to_bytes()[1:]):
        with pytest.raises(ValueError):
            InstallationKeys.from_bytes(bad)
    with pytest.raises(ValueError):
        SignedPrekey.from_bytes(spk.to_bytes() + b"\x00")
    with pytest.raises(ValueError):
        PqPrekey.from_bytes(b"\x01")
    sig = a.sign(b"bundle")
    from chatcore.crypto import ed25519_verify

    assert ed25519_verify(a.installation_id, sig, b"bundle")
