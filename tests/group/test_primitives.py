"""The group core's Ed25519 signer and verifier (dalek through vodozemac, keys checked by
libsodium)."""

from __future__ import annotations

import os

import pytest
import vodozemac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.group import _primitives
from chatcore.group._primitives import (
    chain_sign,
    chain_signer,
    ed25519_from_seed,
    ed25519_sign,
    ed25519_verify,
)

L = 2**252 + 27742317777372353535851937790883648493  # order of the Ed25519 base point


def test_libsodium_and_openssl_signatures_verify() -> None:
    public, secret = ed25519_from_seed(bytes(range(32)))
    msg = b"group message"
    assert ed25519_verify(public, ed25519_sign(secret, msg), msg)
    k = Ed25519PrivateKey.generate()
    pub = k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert ed25519_verify(pub, k.sign(msg), msg)


def test_rejects_tampering() -> None:
    public, secret = ed25519_from_seed(os.urandom(32))
    msg = b"x" * 200
    sig = ed25519_sign(secret, msg)
    for i in (0, 31, 32, 63):
        bad = bytearray(sig)
        bad[i] ^= 1
        assert not ed25519_verify(public, bytes(bad), msg)
    assert not ed25519_verify(public, sig, msg + b"!")
    assert not ed25519_verify(ed25519_from_seed(os.urandom(32))[0], sig, msg)
    assert not ed25519_verify(public, sig[:63], msg)
    assert not ed25519_verify(public[:31], sig, msg)


def test_rejects_non_canonical_s() -> None:
    public, secret = ed25519_from_seed(os.urandom(32))
    msg = b"malleable?"
    sig = ed25519_sign(secret, msg)
    s = int.from_bytes(sig[32:], "little") + L  # same signature mod L, non-canonical encoding
    assert s < 2**256
    assert not ed25519_verify(public, sig[:32] + s.to_bytes(32, "little"), msg)


def test_rejects_small_order_and_invalid_keys() -> None:
    # identity point (small order): with R = identity and S = 0 it would "verify" anything
    identity = (1).to_bytes(32, "little")
    forged = identity + bytes(32)
    assert not ed25519_verify(identity, forged, b"anything")
    assert not ed25519_verify(bytes(32), forged, b"anything")
    assert not ed25519_verify(b"\xff" * 32, forged, b"anything")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=600))
def test_chain_signer_is_rfc8032_byte_for_byte(seed: bytes, msg: bytes) -> None:
    """The per-message signer (dalek, our key moved into a vodozemac Account) signs exactly
    as libsodium does with the same seed, and the signature verifies."""
    public, secret = ed25519_from_seed(seed)
    sig = chain_sign(chain_signer(secret), msg)
    assert sig == ed25519_sign(secret, msg)
    assert ed25519_verify(public, sig, msg)


def test_chain_signer_refuses_a_bad_secret_and_notices_a_key_it_did_not_get(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError):
        chain_signer(b"short")
    _, secret = ed25519_from_seed(os.urandom(32))
    # a vodozemac that ignored the key we hand it (a pickle format change) must not sign
    monkeypatch.setattr(_primitives.Account, "from_pickle", lambda *_: vodozemac.Account())
    with pytest.raises(RuntimeError):
        chain_signer(secret)
