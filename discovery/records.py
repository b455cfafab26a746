"""Intro bundles and post-quantum key records: encoding, hashing, signing, verifying. Pure.

An *intro bundle* is what one installation (device) publishes so that others can start a
session with it. Its encoding is fixed-layout binary, version first, so it is deterministic
and its keccak256 hash (stored on chain) pins exactly one byte string:

    offset size field
    0      1    version (1)
    1      8    chain id (big endian)
    9      20   registry contract address
    29     32   identity id
    61     32   installation id  (= the installation's Ed25519 public key)
    93     32   installation X25519 key
    125    4    signed prekey id
    129    32   signed prekey (X25519)
    161    8    prekey not-after (unix seconds)
    169    8    sequence number
    177    8    issued-at (unix seconds)
    185    64   Ed25519 signature by the installation key over
                 DOMAIN_BUNDLE || bytes[0:185]
    = 249 bytes

The ML-KEM-768 key is published in its own record (rotated rarely, so the frequent prekey
refresh stays small and cheap in gas):

    0 version(1) | 1 chain id(8) | 9 registry(20) | 29 identity(32) | 61 installation(32)
    | 93 pq key id(4) | 97 not-after(8) | 105 issued-at(8) | 113 ML-KEM-768 public key(1184)
    | 1297 signature(64) over DOMAIN_PQ || bytes[0:1297]      = 1361 bytes

Text form, for sharing out of band (QR, link): ``logos_chatintro_<version>_<base64url>``.
"""

from __future__ import annotations

import base64
import binascii
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from eth_utils.crypto import keccak

from discovery.errors import (
    BadSignature,
    ExpiredPrekey,
    HashMismatch,
    MalformedRecord,
    UnusableKey,
    WrongChain,
)

BUNDLE_VERSION = 1
PQ_VERSION = 1
DOMAIN_BUNDLE = b"logos-chat/intro-bundle/v1"
DOMAIN_PQ = b"logos-chat/pq-key/v1"
TEXT_PREFIX = "logos_chatintro_"
MLKEM768_PUBLIC_KEY_SIZE = 1184

_BUNDLE_BODY = struct.Struct(">BQ20s32s32s32sI32sQQQ")
_PQ_HEAD = struct.Struct(">BQ20s32s32sIQQ")
BUNDLE_SIZE = _BUNDLE_BODY.size + 64
PQ_RECORD_SIZE = _PQ_HEAD.size + MLKEM768_PUBLIC_KEY_SIZE + 64


def _utc(seconds: int) -> str:
    """A Unix time as people read it (UTC)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _check_len(name: str, value: bytes, n: int) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) != n:
        raise ValueError(f"{name} must be {n} bytes, got {len(value)}")


#: Any X25519 private key serves for the trial exchange (clamping makes it a multiple of the
#: cofactor, so the output is all zero exactly for the low-order points)
_PROBE = X25519PrivateKey.from_private_bytes(bytes(range(32)))


def x25519_usable(pub: bytes) -> bool:
    """Can a session use this X25519 public key? False for the low-order points, whose
    Diffie-Hellman output is all zero (OpenSSL refuses it), found by a trial exchange."""
    try:
        _PROBE.exchange(X25519PublicKey.from_public_bytes(pub))
    except ValueError:
        return False
    return True


def mlkem768_usable(pub: bytes) -> bool:
    """Does this ML-KEM-768 encapsulation key load (FIPS 203 length and modulus checks)?"""
    try:
        MLKEM768PublicKey.from_public_bytes(pub)
    except ValueError:
        return False
    return True


def _sign(seed: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def _verify(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class ChainBinding:
    """Where a record is valid: one chain id and one registry contract."""

    chain_id: int
    registry: bytes  # 20-byte contract address

    def __post_init__(self) -> None:
        _check_len("registry", self.registry, 20)
        if not 0 < self.chain_id < 2**64:
            raise ValueError("chain_id out of range")

    @classmethod
    def from_hex(cls, chain_id: int, registry: str) -> ChainBinding:
        return cls(chain_id, bytes.fromhex(registry.removeprefix("0x")))


@dataclass(frozen=True, slots=True)
class IntroBundle:
    """One installation's signed intro bundle (see the module docstring for the layout)."""

    chain_id: int
    registry: bytes
    identity_id: bytes
    installation_id: bytes
    ik_x25519: bytes
    spk_id: int
    spk_pub: bytes
    spk_not_after: int
    seq: int
    issued_at: int
    signature: bytes = field(default=b"\x00" * 64, repr=False)
    version: int = BUNDLE_VERSION

    def __post_init__(self) -> None:
        _check_len("registry", self.registry, 20)
        _check_len("identity_id", self.identity_id, 32)
        _check_len("installation_id", self.installation_id, 32)
        _check_len("ik_x25519", self.ik_x25519, 32)
        _check_len("spk_pub", self.spk_pub, 32)
        _check_len("signature", self.signature, 64)
        for name in ("chain_id", "spk_not_after", "seq", "issued_at"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v < 2**64:
                raise ValueError(f"{name} out of range")
        if not 0 <= self.spk_id < 2**32:
            raise ValueError("spk_id out of range")

    # --- encoding ---------------------------------------------------------------------------
    def body(self) -> bytes:
        """The signed part of the encoding."""
        return _BUNDLE_BODY.pack(
            self.version,
            self.chain_id,
            self.registry,
            self.identity_id,
            self.installation_id,
            self.ik_x25519,
            self.spk_id,
            self.spk_pub,
            self.spk_not_after,
            self.seq,
            self.issued_at,
        )

    def encode(self) -> bytes:
        return self.body() + self.signature

    def hash(self) -> bytes:
        """keccak256 of the encoding: what the registry stores."""
        return keccak(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> IntroBundle:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedRecord("intro bundle must be bytes")
        data = bytes(data)
        if len(data) < 1:
            raise MalformedRecord("empty intro bundle")
        if data[0] != BUNDLE_VERSION:
            raise MalformedRecord(f"unknown intro bundle version {data[0]}")
        if len(data) != BUNDLE_SIZE:
            raise MalformedRecord(f"intro bundle must be {BUNDLE_SIZE} bytes, got {len(data)}")
        fields = _BUNDLE_BODY.unpack_from(data)
        return cls(
            version=fields[0],
            chain_id=fields[1],
            registry=fields[2],
            identity_id=fields[3],
            installation_id=fields[4],
            ik_x25519=fields[5],
            spk_id=fields[6],
            spk_pub=fields[7],
            spk_not_after=fields[8],
            seq=fields[9],
            issued_at=fields[10],
            signature=data[_BUNDLE_BODY.size :],
        )

    # --- signing and verifying ---------------------------------------------------------------
    def signed(self, key: bytes | Callable[[bytes], bytes]) -> IntroBundle:
        """A copy signed by the installation's Ed25519 key: a 32-byte seed or a sign function."""
        msg = DOMAIN_BUNDLE + self.body()
        sig = key(msg) if callable(key) else _sign(key, msg)
        return replace(self, signature=sig)

    def signature_ok(self) -> bool:
        return _verify(self.installation_id, self.signature, DOMAIN_BUNDLE + self.body())

    def verify(
        self,
        binding: ChainBinding,
        now: int,
        *,
        expected_hash: bytes | None = None,
        identity_id: bytes | None = None,
        installation_id: bytes | None = None,
    ) -> None:
        """Check everything that can be checked without the chain's installation status.

        Raises HashMismatch, WrongChain, BadSignature, UnusableKey (a low-order X25519 key) or
        ExpiredPrekey; returns None if valid.
        """
        _check_binding("intro bundle", self, binding, expected_hash, identity_id, installation_id)
        if not self.signature_ok():
            raise BadSignature("intro bundle signature does not verify")
        if self.spk_not_after <= now:
            raise ExpiredPrekey(
                f"signed prekey of installation 0x{self.installation_id.hex()[:16]}… "
                f"expired at {_utc(self.spk_not_after)} (its owner's next publish or sync "
                "renews it)"
            )
        for name, key in (
            ("installation X25519 key", self.ik_x25519),
            ("signed prekey", self.spk_pub),
        ):
            if not x25519_usable(key):
                raise UnusableKey(
                    f"intro bundle of installation 0x{self.installation_id.hex()[:16]}…: "
                    f"its {name} is a low-order point"
                )

    # --- text form ------------------------------------------------------------------------
    def to_text(self) -> str:
        return encode_text(self.encode(), self.version)

    @classmethod
    def from_text(cls, text: str) -> IntroBundle:
        version, raw = decode_text(text)
        bundle = cls.decode(raw)
        if bundle.version != version:
            raise MalformedRecord("text version and bundle version differ")
        return bundle


@dataclass(frozen=True, slots=True)
class PqKeyRecord:
    """An installation's signed ML-KEM-768 public key."""

    chain_id: int
    registry: bytes
    identity_id: bytes
    installation_id: bytes
    pq_key_id: int
    not_after: int
    issued_at: int
    pq_pub: bytes = field(repr=False)
    signature: bytes = field(default=b"\x00" * 64, repr=False)
    version: int = PQ_VERSION

    def __post_init__(self) -> None:
        _check_len("registry", self.registry, 20)
        _check_len("identity_id", self.identity_id, 32)
        _check_len("installation_id", self.installation_id, 32)
        _check_len("pq_pub", self.pq_pub, MLKEM768_PUBLIC_KEY_SIZE)
        _check_len("signature", self.signature, 64)
        if not 0 <= self.pq_key_id < 2**32:
            raise ValueError("pq_key_id out of range")

    def body(self) -> bytes:
        return (
            _PQ_HEAD.pack(
                self.version,
                self.chain_id,
                self.registry,
                self.identity_id,
                self.installation_id,
                self.pq_key_id,
                self.not_after,
                self.issued_at,
            )
            + self.pq_pub
        )

    def encode(self) -> bytes:
        return self.body() + self.signature

    def hash(self) -> bytes:
        return keccak(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> PqKeyRecord:
        data = bytes(data)
        if not data or data[0] != PQ_VERSION:
            raise MalformedRecord("unknown post-quantum key record version")
        if len(data) != PQ_RECORD_SIZE:
            raise MalformedRecord(f"post-quantum key record must be {PQ_RECORD_SIZE} bytes")
        f = _PQ_HEAD.unpack_from(data)
        end = _PQ_HEAD.size + MLKEM768_PUBLIC_KEY_SIZE
        return cls(
            version=f[0],
            chain_id=f[1],
            registry=f[2],
            identity_id=f[3],
            installation_id=f[4],
            pq_key_id=f[5],
            not_after=f[6],
            issued_at=f[7],
            pq_pub=data[_PQ_HEAD.size : end],
            signature=data[end:],
        )

    def signature_ok(self) -> bool:
        return _verify(self.installation_id, self.signature, DOMAIN_PQ + self.body())

    def signed(self, key: bytes | Callable[[bytes], bytes]) -> PqKeyRecord:
        msg = DOMAIN_PQ + self.body()
        sig = key(msg) if callable(key) else _sign(key, msg)
        return replace(self, signature=sig)

    def verify(
        self,
        binding: ChainBinding,
        now: int,
        *,
        expected_hash: bytes | None = None,
        identity_id: bytes | None = None,
        installation_id: bytes | None = None,
    ) -> None:
        _check_binding(
            "post-quantum key record", self, binding, expected_hash, identity_id, installation_id
        )
        if not self.signature_ok():
            raise BadSignature("post-quantum key record signature does not verify")
        if not mlkem768_usable(self.pq_pub):
            raise UnusableKey(
                f"post-quantum key of installation 0x{self.installation_id.hex()[:16]}… "
                "is not a valid ML-KEM-768 key"
            )
        if self.not_after <= now:
            raise ExpiredPrekey("post-quantum key has expired")


def _check_binding(
    what: str,
    rec: IntroBundle | PqKeyRecord,
    binding: ChainBinding,
    expected_hash: bytes | None,
    identity_id: bytes | None,
    installation_id: bytes | None,
) -> None:
    """The checks both record kinds share: stored hash, chain + registry, event ids."""
    if expected_hash is not None and rec.hash() != expected_hash:
        raise HashMismatch(f"{what} does not match the hash stored on chain")
    if rec.chain_id != binding.chain_id or rec.registry != binding.registry:
        raise WrongChain(
            f"{what} is bound to chain {rec.chain_id} / 0x{rec.registry.hex()}, "
            f"not chain {binding.chain_id} / 0x{binding.registry.hex()}"
        )
    if identity_id is not None and rec.identity_id != identity_id:
        raise HashMismatch(f"{what} names another identity than its event")
    if installation_id is not None and rec.installation_id != installation_id:
        raise HashMismatch(f"{what} names another installation than its event")


def encode_text(raw: bytes, version: int) -> str:
    b64 = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return f"{TEXT_PREFIX}{version}_{b64}"


def decode_text(text: str) -> tuple[int, bytes]:
    """Parse ``logos_chatintro_<version>_<base64url>``; raises MalformedRecord."""
    text = text.strip()
    if not text.startswith(TEXT_PREFIX):
        raise MalformedRecord(f"not an intro bundle text (expected prefix {TEXT_PREFIX!r})")
    version_s, sep, b64 = text[len(TEXT_PREFIX) :].partition("_")
    if not sep or not (0 < len(version_s) <= 4 and all(c in "0123456789" for c in version_s)):
        raise MalformedRecord("intro bundle text has no version (1-4 ASCII digits)")
    if not b64 or any(c not in _B64URL for c in b64):
        raise MalformedRecord("intro bundle text is not base64url")
    try:
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedRecord("intro bundle text is not base64url") from exc
    return int(version_s), raw


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def looks_like_text(query: str) -> bool:
    return query.strip().startswith(TEXT_PREFIX)
