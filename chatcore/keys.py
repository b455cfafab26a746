"""Installation keys, prekeys, and the public keys a resolved bundle yields.

* :class:`InstallationKeys` - long-lived secrets of one installation: Ed25519 signing key (its
  32-byte public key *is* the installation id), X25519 identity DH key, ML-KEM-768 key.
* :class:`SignedPrekey` - a rotating X25519 prekey (the bundle signs its public half).
* :class:`PqPrekey` - the ML-KEM-768 key with its id (published in its own signed event).
* :class:`PeerKeys` - public values of a peer installation, as the resolver returns them.

Every ``to_bytes`` starts with a format version byte; ``from_bytes`` raises ``ValueError`` on a
wrong version or length. Private keys never appear in ``repr``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .consts import (
    ED25519_PUB_LEN,
    INSTALLATION_KEYS_VERSION,
    MAX_KEY_ID,
    MLKEM768_PUB_LEN,
    MLKEM768_SEED_LEN,
    PQ_PREKEY_VERSION,
    SIGNED_PREKEY_VERSION,
    X25519_LEN,
)
from .crypto import Rng, ed25519_keypair, ed25519_sign, mlkem768_keypair, x25519_keypair

__all__ = ["InstallationKeys", "PeerKeys", "PqPrekey", "SignedPrekey"]


def _check_bytes(name: str, value: object, n: int) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes")
    if len(value) != n:
        raise ValueError(f"{name} must be {n} bytes, got {len(value)}")


def _check_id(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be int")
    if not 0 <= value <= MAX_KEY_ID:
        raise ValueError(f"{name} must be in 0..{MAX_KEY_ID}")


@dataclass(frozen=True, slots=True)
class PqPrekey:
    """An ML-KEM-768 key of ours with its id. ``pub`` is the 1184-byte encapsulation key."""

    id: int
    key: MLKEM768PrivateKey = field(repr=False, compare=False)
    pub: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_id("id", self.id)
        _check_bytes("pub", self.pub, MLKEM768_PUB_LEN)

    @classmethod
    def generate(cls, rng: Rng, id: int) -> PqPrekey:
        key, pub = mlkem768_keypair(rng)
        return cls(id, key, pub)

    def to_bytes(self) -> bytes:
        """version(1) | id u32 | seed(64)."""
        return struct.pack(">BI", PQ_PREKEY_VERSION, self.id) + self.key.private_bytes_raw()

    @classmethod
    def from_bytes(cls, data: bytes) -> PqPrekey:
        if len(data) != 5 + MLKEM768_SEED_LEN or data[0] != PQ_PREKEY_VERSION:
            raise ValueError("not a v1 PqPrekey encoding")
        (id_,) = struct.unpack_from(">I", data, 1)
        key = MLKEM768PrivateKey.from_seed_bytes(bytes(data[5:]))
        return cls(id_, key, key.public_key().public_bytes_raw())


@dataclass(frozen=True, slots=True)
class SignedPrekey:
    """A rotating X25519 prekey: id, key pair and expiry (ms since the epoch)."""

    id: int
    key: X25519PrivateKey = field(repr=False, compare=False)
    pub: bytes
    not_after_ms: int

    def __post_init__(self) -> None:
        _check_id("id", self.id)
        _check_bytes("pub", self.pub, X25519_LEN)
        if not isinstance(self.not_after_ms, int) or not 0 <= self.not_after_ms < 2**64:
            raise ValueError("not_after_ms must be a u64 int")

    @classmethod
    def generate(cls, rng: Rng, id: int, not_after_ms: int) -> SignedPrekey:
        key, pub = x25519_keypair(rng)
        return cls(id, key, pub, not_after_ms)

    def expired(self, now_ms: int) -> bool:
        return now_ms > self.not_after_ms

    def to_bytes(self) -> bytes:
        """version(1) | id u32 | not_after_ms u64 | private(32)."""
        return (
            struct.pack(">BIQ", SIGNED_PREKEY_VERSION, self.id, self.not_after_ms)
            + self.key.private_bytes_raw()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedPrekey:
        if len(data) != 13 + X25519_LEN or data[0] != SIGNED_PREKEY_VERSION:
            raise ValueError("not a v1 SignedPrekey encoding")
        _, id_, not_after = struct.unpack_from(">BIQ", data, 0)
        key = X25519PrivateKey.from_private_bytes(bytes(data[13:]))
        return cls(id_, key, key.public_key().public_bytes_raw(), not_after)


@dataclass(frozen=True, slots=True)
class InstallationKeys:
    """Long-lived keys of one installation.

    ``installation_id`` is the Ed25519 public key; ``ik_x25519`` the X25519 identity key used in
    the handshake; ``pq`` the current ML-KEM-768 key (rotated rarely, see :meth:`with_pq`).
    """

    signing_key: Ed25519PrivateKey = field(repr=False, compare=False)
    dh_key: X25519PrivateKey = field(repr=False, compare=False)
    pq: PqPrekey = field(repr=False)
    installation_id: bytes
    ik_x25519: bytes

    def __post_init__(self) -> None:
        _check_bytes("installation_id", self.installation_id, ED25519_PUB_LEN)
        _check_bytes("ik_x25519", self.ik_x25519, X25519_LEN)
        if not isinstance(self.pq, PqPrekey):
            raise TypeError("pq must be a PqPrekey")

    @classmethod
    def generate(cls, rng: Rng, pq_key_id: int = 1) -> InstallationKeys:
        """New installation keys, all derived from ``rng`` bytes."""
        sk, sk_pub = ed25519_keypair(rng)
        dh, dh_pub = x25519_keypair(rng)
        return cls(sk, dh, PqPrekey.generate(rng, pq_key_id), sk_pub, dh_pub)

    def with_pq(self, pq: PqPrekey) -> InstallationKeys:
        """The same installation with a rotated ML-KEM key (keep the old one for a grace window
        in the ``pq_lookup`` the responder uses)."""
        return InstallationKeys(
            self.signing_key, self.dh_key, pq, self.installation_id, self.ik_x25519
        )

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature by the installation key (for bundles and prekey events)."""
        return ed25519_sign(self.signing_key, message)

    def peer_keys(self, spk: SignedPrekey, *, with_pq: bool = True) -> PeerKeys:
        """The public view of this installation as a resolver would return it (tests, loopback)."""
        return PeerKeys(
            installation_id=self.installation_id,
            ik_x25519=self.ik_x25519,
            spk_id=spk.id,
            spk_pub=spk.pub,
            pq_key_id=self.pq.id if with_pq else 0,
            pq_pub=self.pq.pub if with_pq else None,
        )

    def to_bytes(self) -> bytes:
        """version(1) | ed25519 seed(32) | x25519 private(32) | PqPrekey encoding(69)."""
        return (
            bytes((INSTALLATION_KEYS_VERSION,))
            + self.signing_key.private_bytes_raw()
            + self.dh_key.private_bytes_raw()
            + self.pq.to_bytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> InstallationKeys:
        if len(data) != 1 + 32 + 32 + 5 + MLKEM768_SEED_LEN or data[0] != INSTALLATION_KEYS_VERSION:
            raise ValueError("not a v1 InstallationKeys encoding")
        sk = Ed25519PrivateKey.from_private_bytes(bytes(data[1:33]))
        dh = X25519PrivateKey.from_private_bytes(bytes(data[33:65]))
        pq = PqPrekey.from_bytes(bytes(data[65:]))
        return cls(
            sk, dh, pq, sk.public_key().public_bytes_raw(), dh.public_key().public_bytes_raw()
        )


@dataclass(frozen=True, slots=True)
class PeerKeys:
    """Public keys of a peer installation from a resolved (verified) bundle.

    ``pq_pub`` is None for a classical-only handshake (``pq_key_id`` is then ignored).
    """

    installation_id: bytes
    ik_x25519: bytes
    spk_id: int
    spk_pub: bytes
    pq_key_id: int = 0
    pq_pub: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_bytes("installation_id", self.installation_id, ED25519_PUB_LEN)
        _check_bytes("ik_x25519", self.ik_x25519, X25519_LEN)
        _check_id("spk_id", self.spk_id)
        _check_bytes("spk_pub", self.spk_pub, X25519_LEN)
        _check_id("pq_key_id", self.pq_key_id)
        if self.pq_pub is not None:
            _check_bytes("pq_pub", self.pq_pub, MLKEM768_PUB_LEN)
