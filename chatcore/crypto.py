"""Thin wrappers over pyca ``cryptography`` (and ``hashlib``) used by the 1:1 core.

Nothing here draws randomness itself: key generation takes ``rng``, a callable returning that
many random bytes (``os.urandom`` in production, a seeded generator in tests). The one
exception is ML-KEM encapsulation, whose randomness pyca draws internally (no API to inject it).

Choices, measured on the target machine (see ``bench/``):

* AEAD: AES-256-GCM (pyca: ~0.6 µs for 200 B vs ~1.0 µs for ChaCha20-Poly1305). Every message
  key is used for exactly one message, so the nonce is a constant; callers must therefore never
  encrypt twice under the same chain position (persist ratchet state before sending).
* Chain KDF: keyed BLAKE2b-512 (RFC 7693 MAC mode) with a personalisation string; one call
  yields the message key and the next chain key (0.6 µs vs 2 x 1.6 µs for two HMAC-SHA256).
* Root / handshake KDF: HKDF-SHA256 (RFC 5869), implemented on ``hmac.digest``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .consts import (
    AEAD_KEY_LEN,
    AEAD_TAG_LEN,
    ED25519_PUB_LEN,
    ED25519_SIG_LEN,
    MLKEM768_CT_LEN,
    MLKEM768_PUB_LEN,
    MLKEM768_SEED_LEN,
    X25519_LEN,
)
from .errors import DecryptionError

__all__ = [
    "NONCE",
    "Rng",
    "aead_decrypt",
    "aead_encrypt",
    "chain_step",
    "ed25519_keypair",
    "ed25519_sign",
    "ed25519_verify",
    "hkdf_sha256",
    "mlkem768_decaps",
    "mlkem768_encaps",
    "mlkem768_keypair",
    "sha256",
    "x25519_dh",
    "x25519_keypair",
]

Rng = Callable[[int], bytes]
"""Source of randomness: ``rng(n)`` returns ``n`` random bytes (e.g. ``os.urandom``)."""

#: Constant AEAD nonce: sound only because every AEAD key encrypts a single message.
NONCE = bytes(12)
_ZERO32 = bytes(32)
_CHAIN_PERSON = b"LogosChatCK1"  # BLAKE2b personalisation (<= 16 bytes)
_CHAIN_INPUT = b"\x01"


def _rand(rng: Rng, n: int) -> bytes:
    out = rng(n)
    if not isinstance(out, bytes) or len(out) != n:
        raise ValueError(f"rng({n}) must return exactly {n} bytes")
    return out


def _check_len(name: str, value: bytes, n: int) -> None:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{name} must be bytes")
    if len(value) != n:
        raise ValueError(f"{name} must be {n} bytes, got {len(value)}")


# --- X25519 -----------------------------------------------------------------------------------


def x25519_keypair(rng: Rng) -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair built from ``rng(32)``: (private key, 32-byte public key)."""
    priv = X25519PrivateKey.from_private_bytes(_rand(rng, X25519_LEN))
    return priv, priv.public_key().public_bytes_raw()


def x25519_dh(priv: X25519PrivateKey, peer_pub: bytes) -> bytes:
    """X25519(priv, peer_pub). Raises ``ValueError`` on a bad length or an all-zero result
    (a low-order peer point)."""
    _check_len("peer_pub", peer_pub, X25519_LEN)
    try:
        out = priv.exchange(X25519PublicKey.from_public_bytes(bytes(peer_pub)))
    except ValueError:
        # OpenSSL already refuses the all-zero output of low-order points.
        raise ValueError("X25519 produced an all-zero shared secret") from None
    if hmac.compare_digest(out, _ZERO32):  # pragma: no cover - defensive, OpenSSL checks too
        raise ValueError("X25519 produced an all-zero shared secret")
    return out


# --- Ed25519 ----------------------------------------------------------------------------------


def ed25519_keypair(rng: Rng) -> tuple[Ed25519PrivateKey, bytes]:
    """A fresh Ed25519 key pair from a 32-byte seed ``rng(32)``: (private key, public key)."""
    priv = Ed25519PrivateKey.from_private_bytes(_rand(rng, 32))
    return priv, priv.public_key().public_bytes_raw()


def ed25519_sign(priv: Ed25519PrivateKey, message: bytes) -> bytes:
    """A 64-byte Ed25519 signature (deterministic, RFC 8032)."""
    return priv.sign(message)


def ed25519_verify(pub: bytes, signature: bytes, message: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` under ``pub``."""
    _check_len("pub", pub, ED25519_PUB_LEN)
    if len(signature) != ED25519_SIG_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(pub)).verify(bytes(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- ML-KEM-768 -------------------------------------------------------------------------------


def mlkem768_keypair(rng: Rng) -> tuple[MLKEM768PrivateKey, bytes]:
    """An ML-KEM-768 key pair from a 64-byte seed ``rng(64)`` (FIPS 203 d||z form):
    (private key, 1184-byte encapsulation key)."""
    priv = MLKEM768PrivateKey.from_seed_bytes(_rand(rng, MLKEM768_SEED_LEN))
    return priv, priv.public_key().public_bytes_raw()


def mlkem768_encaps(pub: bytes) -> tuple[bytes, bytes]:
    """Encapsulate to ``pub``: (1088-byte ciphertext, 32-byte shared secret).

    The encapsulation randomness is drawn inside pyca/OpenSSL (no way to pass ``rng``); this is
    the one place the core uses randomness it was not handed. Raises ``ValueError`` on a
    malformed key.
    """
    _check_len("pub", pub, MLKEM768_PUB_LEN)
    ss, ct = MLKEM768PublicKey.from_public_bytes(bytes(pub)).encapsulate()
    return ct, ss


def mlkem768_decaps(priv: MLKEM768PrivateKey, ct: bytes) -> bytes:
    """Decapsulate ``ct`` (1088 bytes): the 32-byte shared secret (implicit rejection: a
    tampered ciphertext yields an unrelated secret, not an error)."""
    _check_len("ct", ct, MLKEM768_CT_LEN)
    return priv.decapsulate(bytes(ct))


# --- hashing / KDFs ---------------------------------------------------------------------------


def sha256(*parts: bytes) -> bytes:
    """SHA-256 over the concatenation of ``parts``."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) extract-and-expand. An empty salt means 32 zero bytes."""
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF length out of range")
    prk = hmac.digest(salt or _ZERO32, ikm, "sha256")
    out = b""
    block = b""
    i = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((i,)), "sha256")
        out += block
        i += 1
    return out[:length]


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """Symmetric-ratchet step: (message key, next chain key), both 32 bytes."""
    out = hashlib.blake2b(
        _CHAIN_INPUT, key=chain_key, digest_size=64, person=_CHAIN_PERSON
    ).digest()
    return out[:32], out[32:]


# --- AEAD -------------------------------------------------------------------------------------


def aead_encrypt(key: bytes, plaintext: bytes, ad: bytes, nonce: bytes = NONCE) -> bytes:
    """AES-256-GCM; ``key`` must be single-use when the default constant nonce is used."""
    _check_len("key", key, AEAD_KEY_LEN)
    return AESGCM(bytes(key)).encrypt(nonce, plaintext, ad)


def aead_decrypt(key: bytes, ciphertext: bytes, ad: bytes, nonce: bytes = NONCE) -> bytes:
    """AES-256-GCM open. Raises ``DecryptionError`` on any authentication failure."""
    _check_len("key", key, AEAD_KEY_LEN)
    if len(ciphertext) < AEAD_TAG_LEN:
        raise DecryptionError("ciphertext too short")
    try:
        return AESGCM(bytes(key)).decrypt(nonce, ciphertext, ad)
    except InvalidTag:
        raise DecryptionError("decryption failed") from None
