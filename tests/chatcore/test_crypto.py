from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from chatcore import crypto
from chatcore.errors import DecryptionError
from tests.chatcore import seeded_rng

H = bytes.fromhex

# RFC 7748 section 6.1
X_A_PRIV = H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
X_A_PUB = H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
X_B_PRIV = H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
X_B_PUB = H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
X_SHARED = H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def fixed(value: bytes):  # rng that returns one preset value
    return lambda n: value[:n]


def test_x25519_rfc7748() -> None:
    a, a_pub = crypto.x25519_keypair(fixed(X_A_PRIV))
    b, b_pub = crypto.x25519_keypair(fixed(X_B_PRIV))
    assert (a_pub, b_pub) == (X_A_PUB, X_B_PUB)
    assert crypto.x25519_dh(a, X_B_PUB) == X_SHARED
    assert crypto.x25519_dh(b, X_A_PUB) == X_SHARED


@pytest.mark.parametrize("low_order", [bytes(32), b"\x01" + bytes(31)])
def test_x25519_rejects_all_zero_shared_secret(low_order: bytes) -> None:
    priv = X25519PrivateKey.from_private_bytes(X_A_PRIV)
    with pytest.raises(ValueError):
        crypto.x25519_dh(priv, low_order)


@pytest.mark.parametrize("n", [0, 31, 33])
def test_x25519_wrong_length(n: int) -> None:
    priv = X25519PrivateKey.from_private_bytes(X_A_PRIV)
    with pytest.raises(ValueError):
        crypto.x25519_dh(priv, b"\x09" * n)


def test_rng_must_return_requested_length() -> None:
    with pytest.raises(ValueError):
        crypto.x25519_keypair(lambda n: b"\x01" * (n - 1))


# RFC 8032 section 7.1, TEST 1 and TEST 2
@pytest.mark.parametrize(
    ("seed", "pub", "msg", "sig"),
    [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc6"
            "1e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e45"
            "8f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
    ],
)
def test_ed25519_rfc8032(seed: str, pub: str, msg: str, sig: str) -> None:
    priv, pub_b = crypto.ed25519_keypair(fixed(H(seed)))
    assert pub_b == H(pub)
    assert crypto.ed25519_sign(priv, H(msg)) == H(sig)
    assert crypto.ed25519_verify(H(pub), H(sig), H(msg))
    bad = bytearray(H(sig))
    bad[0] ^= 1
    assert not crypto.ed25519_verify(H(pub), bytes(bad), H(msg))
    assert not crypto.ed25519_verify(H(pub), H(sig), H(msg) + b"x")
    assert not crypto.ed25519_verify(H(pub), H(sig)[:63], H(msg))


def test_ed25519_verify_wrong_key_length() -> None:
    with pytest.raises(ValueError):
        crypto.ed25519_verify(b"\x01" * 31, bytes(64), b"")
    assert isinstance(Ed25519PrivateKey.from_private_bytes(bytes(32)), Ed25519PrivateKey)


# RFC 5869 appendix A, test cases 1 and 3
@pytest.mark.parametrize(
    ("ikm", "salt", "info", "length", "okm"),
    [
        (
            "0b" * 22,
            "000102030405060708090a0b0c",
            "f0f1f2f3f4f5f6f7f8f9",
            42,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (
            "0b" * 22,
            "",
            "",
            42,
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ],
)
def test_hkdf_rfc5869(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    assert crypto.hkdf_sha256(H(ikm), H(salt), H(info), length) == H(okm)


def test_hkdf_length_bounds() -> None:
    with pytest.raises(ValueError):
        crypto.hkdf_sha256(b"k", b"", b"", 0)
    with pytest.raises(ValueError):
        crypto.hkdf_sha256(b"k", b"", b"", 255 * 32 + 1)


def test_mlkem_roundtrip_and_determinism() -> None:
    priv, pub = crypto.mlkem768_keypair(seeded_rng(3))
    priv2, pub2 = crypto.mlkem768_keypair(seeded_rng(3))
    assert pub == pub2 and len(pub) == 1184
    ct, ss = crypto.mlkem768_encaps(pub)
    assert len(ct) == 1088 and len(ss) == 32
    assert crypto.mlkem768_decaps(priv2, ct) == ss
    tampered = bytes([ct[0] ^ 1]) + ct[1:]
    assert crypto.mlkem768_decaps(priv, tampered) != ss  # implicit rejection


def test_mlkem_wrong_lengths() -> None:
    priv, pub = crypto.mlkem768_keypair(seeded_rng(3))
    with pytest.raises(ValueError):
        crypto.mlkem768_encaps(pub[:-1])
    with pytest.raises(ValueError):
        crypto.mlkem768_decaps(priv, bytes(1087))


def test_aead_roundtrip_and_tamper() -> None:
    key = bytes(range(32))
    ct = crypto.aead_encrypt(key, b"hello", b"ad")
    assert crypto.aead_decrypt(key, ct, b"ad") == b"hello"
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x80
        with pytest.raises(DecryptionError):
            crypto.aead_decrypt(key, bytes(bad), b"ad")
    with pytest.raises(DecryptionError):
        crypto.aead_decrypt(key, ct, b"AD")
    with pytest.raises(DecryptionError):
        crypto.aead_decrypt(key, ct[:15], b"ad")
    with pytest.raises(ValueError):
        crypto.aead_encrypt(key[:16], b"x", b"")


def test_chain_step_is_deterministic_and_distinct() -> None:
    mk, ck = crypto.chain_step(bytes(32))
    assert (mk, ck) == crypto.chain_step(bytes(32))
    assert len(mk) == len(ck) == 32 and mk != ck
    assert crypto.chain_step(ck)[0] != mk


def test_sha256_concatenates() -> None:
    assert crypto.sha256(b"ab", b"c") == crypto.sha256(b"abc")
