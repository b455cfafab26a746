"""Private crypto primitives for the group core.

Every group message is signed by its sender and verified by every member, so Ed25519 is
the hot path. Measured here (``bench/group.py``, 300-byte messages):

* signing: ed25519-dalek through vodozemac 12.4 us, libsodium (PyNaCl) 14.4 us, OpenSSL
  (pyca) 32 us. vodozemac signs only with an Olm ``Account``'s key, and takes a key in only
  through its account pickle, so ``chain_signer`` builds one in memory from our seed
  (kept by the sending chain that uses it, no longer): the signatures are RFC 8032's, byte for byte
  libsodium's for the same seed (tested). The hot path (every group message) uses it;
  rare signatures (group ops) stay on libsodium;
* verifying: ed25519-dalek through vodozemac 37 us, libsodium 56 us, OpenSSL 107 us ->
  vodozemac, the audited Matrix crypto library (already pinned for the Megolm
  comparison). Its key parser accepts small-order points, so every public key is first
  checked with libsodium's ``crypto_core_ed25519_is_valid_point`` (once per key, cached),
  which keeps libsodium's rejection of weak keys; non-canonical ``S`` is rejected by dalek.

The signatures are standard Ed25519 (RFC 8032), interchangeable with pyca
``cryptography``. AEAD: AES-256-GCM from libsodium where the CPU has AES instructions, else
from pyca (the same bytes, see ``aead_seal``); hashing: hashlib.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings as _sodium
from vodozemac import (
    Account,
    Ed25519PublicKey,
    Ed25519Signature,
    KeyException,
    SignatureException,
)


def ed25519_from_seed(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, 64-byte libsodium secret) from a 32-byte seed."""
    if len(seed) != 32:
        raise ValueError("Ed25519 seed must be 32 bytes")
    public, secret = _sodium.crypto_sign_seed_keypair(seed)
    return public, secret


def ed25519_sign(secret: bytes, message: bytes) -> bytes:
    """Detached Ed25519 signature (64 bytes)."""
    return _sodium.crypto_sign(message, secret)[:64]


# The pickle below exists only in memory, for the length of one call: its key protects nothing.
_PICKLE_KEY = b"logos-chat in-memory signer only"


def chain_signer(secret: bytes) -> Account:
    """A vodozemac Account whose Ed25519 key is the one of ``secret`` (seed || public).

    vodozemac's account pickle (0.10): JSON with the signing key as its 32-byte seed
    (``Normal``; libolm's pickle format takes the expanded key instead, and vodozemac then
    signs at half the speed), an unused Curve25519 key (zeros) and no one-time or fallback
    keys; AES-256-CBC + HMAC-SHA256 (8 B) under HKDF-SHA256(key, salt 0x00, info "Pickle"),
    unpadded base64. The key is checked after loading, so a format change fails loudly.
    """
    if len(secret) != 64:
        raise ValueError("Ed25519 secret must be 64 bytes")
    seed, public = secret[:32], secret[32:]
    body = json.dumps(
        {
            "signing_key": {"Normal": list(seed)},
            "diffie_hellman_key": [0] * 32,
            "one_time_keys": {"next_key_id": 0, "public_keys": {}, "private_keys": {}},
            "fallback_keys": {"key_id": 0, "fallback_key": None, "previous_fallback_key": None},
        }
    ).encode()
    okm = HKDF(hashes.SHA256(), 80, b"\x00", b"Pickle").derive(_PICKLE_KEY)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(okm[:32]), modes.CBC(okm[64:])).encryptor()
    ct = enc.update(padder.update(body) + padder.finalize()) + enc.finalize()
    mac = hmac.new(okm[32:64], ct, hashlib.sha256).digest()[:8]
    account = Account.from_pickle(base64.b64encode(ct + mac).decode().rstrip("="), _PICKLE_KEY)
    if binascii.a2b_base64(account.ed25519_key.to_base64() + "=") != public:
        raise RuntimeError("vodozemac did not take the signing key")  # format drift
    return account


_a2b = binascii.a2b_base64
_b2a = binascii.b2a_base64


def chain_sign(signer: Account, message: bytes) -> bytes:
    """Detached Ed25519 signature (64 bytes) with ed25519-dalek (``chain_signer``): the
    per-message signer."""
    return _a2b(signer.sign(message).to_base64() + "==")


@lru_cache(maxsize=8192)
def _verifier(public: bytes) -> Ed25519PublicKey | None:
    """Parsed key, or None for anything libsodium would refuse (small order, not a point)."""
    if not _sodium.crypto_core_ed25519_is_valid_point(public):
        return None
    try:
        return Ed25519PublicKey.from_base64(base64.b64encode(public).decode())
    except KeyException:
        return None


def ed25519_verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` by ``public``."""
    if type(public) is not bytes or len(public) != 32 or len(signature) != 64:
        return False
    key = _verifier(public)
    if key is None:
        return False
    try:
        sig = Ed25519Signature.from_base64(_b2a(signature, newline=False).decode())
        key.verify_signature(message, sig)
    except (SignatureException, KeyException, TypeError):
        return False
    return True


_SK_PERSON = b"LogosChatSK1"  # BLAKE2b personalisation: the sender-key chain's own domain


def sender_chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """(message key, next chain key), both 32 bytes, from one keyed BLAKE2b-512 call.

    One hash call instead of Signal's two HMAC-SHA256 calls (message key with 0x01,
    chain key with 0x02): the two halves of one PRF output are independent keys, and
    the chain stays one-way. The 1:1 ratchet does the same under its own personalisation.
    """
    out = hashlib.blake2b(b"\x01", key=chain_key, digest_size=64, person=_SK_PERSON).digest()
    return out[:32], out[32:]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# AES-256-GCM, 12-byte nonces, 16-byte tags. Each message has its own key, so pyca's AESGCM
# object (~0.7 us to build) cannot be kept; libsodium's one-shot call through PyNaCl's CFFI
# module takes ~0.8 us for a 200-byte message against pyca's ~1.3 us in all. Same algorithm,
# the same bytes (tested against pyca). libsodium offers it only with AES-NI (or the ARM
# crypto extensions): elsewhere pyca does it. PyNaCl's public wrappers
# (``nacl.bindings.crypto_aead_aes256gcm_*``) check their arguments and the CPU on every call:
# about 4 times this call's cost and twice pyca's (8.3, 1.9 and 3.6 us a seal on a loaded
# machine), so the CFFI module is called (checked at import, see ``_sodium_gcm``).
_GCM_KEY, _GCM_NONCE, _GCM_TAG = 32, 12, 16
# set by _sodium_gcm from PyNaCl's CFFI module (untyped)
_ffi_new: Any
_ffi_buffer: Any
_NULL: Any
_gcm_seal: Any
_gcm_open: Any


def _pyca_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    if len(key) != _GCM_KEY or len(nonce) != _GCM_NONCE:
        raise ValueError("AES-256-GCM takes a 32-byte key and a 12-byte nonce")
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def _pyca_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
    if len(key) != _GCM_KEY or len(nonce) != _GCM_NONCE:
        raise ValueError("AES-256-GCM takes a 32-byte key and a 12-byte nonce")
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        return None


def _sodium_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    # libsodium reads 32 and 12 bytes through these pointers: the lengths must be right
    if len(key) != _GCM_KEY or len(nonce) != _GCM_NONCE:
        raise ValueError("AES-256-GCM takes a 32-byte key and a 12-byte nonce")
    n = len(plaintext)
    out = _ffi_new("unsigned char[]", n + _GCM_TAG)
    if _gcm_seal(out, _NULL, plaintext, n, aad, len(aad), _NULL, nonce, key):
        raise RuntimeError("libsodium's AES-256-GCM failed")  # never with AES instructions
    sealed: bytes = _ffi_buffer(out)[:]
    return sealed


def _sodium_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
    if len(key) != _GCM_KEY or len(nonce) != _GCM_NONCE:
        raise ValueError("AES-256-GCM takes a 32-byte key and a 12-byte nonce")
    n = len(ciphertext) - _GCM_TAG
    if n < 0:
        return None
    out = _ffi_new("unsigned char[]", n)
    if _gcm_open(out, _NULL, _NULL, ciphertext, n + _GCM_TAG, aad, len(aad), nonce, key):
        return None
    opened: bytes = _ffi_buffer(out)[:]
    return opened


def _sodium_gcm() -> bool:
    """Whether libsodium's AES-256-GCM is here (``nacl._sodium``, PyNaCl's CFFI module: not
    its public API) and seals and opens as pyca does. A PyNaCl other than the pinned one may
    lack the module or the functions, or declare them otherwise: then pyca does it (such a
    PyNaCl failed the import of the group core, or sealed wrongly)."""
    global _ffi_new, _ffi_buffer, _NULL, _gcm_seal, _gcm_open
    try:
        from nacl._sodium import ffi, lib

        # nacl.bindings (imported above) ran sodium_init, which detects the CPU's features
        if lib.crypto_aead_aes256gcm_is_available() != 1:
            return False  # pragma: no cover - no AES instructions
        _ffi_new, _ffi_buffer, _NULL = ffi.new, ffi.buffer, ffi.NULL
        _gcm_seal = lib.crypto_aead_aes256gcm_encrypt
        _gcm_open = lib.crypto_aead_aes256gcm_decrypt
        key, nonce, pt, aad = bytes(range(32)), bytes(range(12)), bytes(range(40)), b"\x13aad"
        sealed = _pyca_seal(key, nonce, pt, aad)
        forged = sealed[:-1] + bytes((sealed[-1] ^ 1,))
        return (
            _sodium_seal(key, nonce, pt, aad) == sealed
            and _sodium_open(key, nonce, sealed, aad) == pt
            and _sodium_open(key, nonce, forged, aad) is None
        )
    except (ImportError, AttributeError, TypeError, RuntimeError):
        return False


SODIUM_GCM: bool = _sodium_gcm()
aead_seal, aead_open = (_sodium_seal, _sodium_open) if SODIUM_GCM else (_pyca_seal, _pyca_open)
