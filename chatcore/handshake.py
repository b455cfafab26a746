"""PQXDH-style sealed handshake (X25519 + ML-KEM-768), sans I/O.

The initiator A holds the resolved public keys of B (:class:`~chatcore.keys.PeerKeys`) and
computes, with a fresh ephemeral key EK_A::

    DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   (CT, SS) = Encaps(PQ_B)
    SK  = HKDF(0xFF*32 || DH1 || DH2 || DH3 || SS, salt=h1, info=PROTOCOL_NAME)

Sealed sender (Noise-IK-like order ``e, es, pq, s, ss``): nothing identifying either party is
sent in clear. The prekey ids are masked with a key from DH2 (only B can unmask them), and A's
static keys plus the caller's opaque ``sender_info`` are AEAD-sealed under a key derived only from
DH2, DH3 and SS, with the transcript hash ``h0`` (B's installation id, IK_B, SPK_B, PQ_B, EK_A,
masked ids, CT) as associated data. ``h1 = H(h0 || sealed)`` salts the final HKDF, so SK commits
to the whole prefix. A is authenticated by DH1: only the holder of IK_A derives SK, and the
responder only accepts once the first ratchet message (keyed from SK) authenticates. The engine
must still check that ``installation_id`` and ``ik_x25519`` belong together on chain.

Handshake prefix layout (all integers big-endian)::

    ek(32) | masked(11) = XOR(flags(1) | spk_id u32 | pq_key_id u32 | sealed_len u16, mask)
           | ct(1088, only if flags & 1) | sealed(sealed_len)
    sealed = AES-256-GCM(k_seal, installation_id_A(32) | ik_x25519_A(32) | sender_info)

No one-time prekeys exist, so a recorded handshake frame can be replayed while SPK_B lives; the
engine should remember session tags / prefix hashes it has accepted.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .consts import (
    AEAD_TAG_LEN,
    ED25519_PUB_LEN,
    MAX_SENDER_INFO,
    MLKEM768_CT_LEN,
    PROTOCOL_NAME,
    SESSION_TAG_LEN,
    X25519_LEN,
)
from .crypto import (
    Rng,
    aead_decrypt,
    aead_encrypt,
    hkdf_sha256,
    mlkem768_decaps,
    mlkem768_encaps,
    sha256,
    x25519_dh,
    x25519_keypair,
)
from .errors import DecryptionError, HandshakeError
from .keys import InstallationKeys, PeerKeys, PqPrekey, SignedPrekey

__all__ = [
    "Accepted",
    "Initiated",
    "PeerInfo",
    "PqLookup",
    "PrekeyLookup",
    "accept",
    "initiate",
    "session_ad",
]

PrekeyLookup = Mapping[int, SignedPrekey] | Callable[[int], SignedPrekey | None]
"""spk_id -> our SignedPrekey (current or still in its grace window), or None / KeyError."""
PqLookup = Mapping[int, PqPrekey] | Callable[[int], PqPrekey | None]
"""pq_key_id -> our PqPrekey, or None / KeyError."""

_F = b"\xff" * 32
_MASK_LEN = 11
_FLAG_PQ = 0x01
_SEAL_FIXED = ED25519_PUB_LEN + X25519_LEN  # installation_id_A | ik_x25519_A
_INFO_MASK = PROTOCOL_NAME + b" mask"
_INFO_SEAL = PROTOCOL_NAME + b" seal"
_SK_LEN = 32 + 32 + SESSION_TAG_LEN


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who the initiator says it is (sealed in the first message), for the engine to check."""

    installation_id: bytes
    ik_x25519: bytes
    sender_info: bytes

    def __post_init__(self) -> None:
        if len(self.installation_id) != ED25519_PUB_LEN or len(self.ik_x25519) != X25519_LEN:
            raise ValueError("bad key length in PeerInfo")


@dataclass(frozen=True, slots=True)
class Initiated:
    """Initiator side output: the wire prefix and the keys to start the ratchet with."""

    prefix: bytes = field(repr=False)
    root_key: bytes = field(repr=False)
    chain_key: bytes = field(repr=False)
    session_tag: bytes
    ad: bytes = field(repr=False)
    ek: X25519PrivateKey = field(repr=False, compare=False)
    ek_pub: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Accepted:
    """Responder side output (not yet authenticated: the caller must open the first message)."""

    peer: PeerInfo
    root_key: bytes = field(repr=False)
    chain_key: bytes = field(repr=False)
    session_tag: bytes
    ad: bytes = field(repr=False)
    ek_pub: bytes = field(repr=False)
    prefix_end: int


def session_ad(init_iid: bytes, init_ik: bytes, resp_iid: bytes, resp_ik: bytes) -> bytes:
    """32-byte associated data binding both installations' keys into every ratchet message."""
    return sha256(PROTOCOL_NAME, b" ad", init_iid, init_ik, resp_iid, resp_ik)


def _lookup(table: Mapping[int, object] | Callable[[int], object | None], key: int) -> object:
    try:
        if isinstance(table, Mapping):
            return table.get(key)
        return table(key)
    except KeyError:
        return None


def _derive(dh1: bytes, dh2: bytes, dh3: bytes, ss: bytes, h1: bytes) -> tuple[bytes, bytes, bytes]:
    okm = hkdf_sha256(_F + dh1 + dh2 + dh3 + ss, h1, PROTOCOL_NAME, _SK_LEN)
    return okm[:32], okm[32:64], okm[64:]


def initiate(own: InstallationKeys, peer: PeerKeys, sender_info: bytes, rng: Rng) -> Initiated:
    """Run the initiator half against ``peer``'s resolved keys.

    ``sender_info`` is opaque (the engine puts identity id + installation id there); it travels
    only inside the sealed box. Raises ``ValueError`` on bad arguments and ``HandshakeError`` if a
    peer key is unusable (low-order X25519 point, malformed ML-KEM key).
    """
    if not isinstance(sender_info, bytes):
        raise TypeError("sender_info must be bytes")
    if len(sender_info) > MAX_SENDER_INFO:
        raise ValueError(f"sender_info longer than {MAX_SENDER_INFO} bytes")
    if not isinstance(peer, PeerKeys) or not isinstance(own, InstallationKeys):
        raise TypeError("own must be InstallationKeys and peer PeerKeys")
    ek, ek_pub = x25519_keypair(rng)
    try:
        dh2 = x25519_dh(ek, peer.ik_x25519)
        dh3 = x25519_dh(ek, peer.spk_pub)
        dh1 = x25519_dh(own.dh_key, peer.spk_pub)
        if peer.pq_pub is not None:
            ct, ss = mlkem768_encaps(peer.pq_pub)
        else:
            ct, ss = b"", b""
    except ValueError as e:
        raise HandshakeError(f"unusable peer key: {e}") from None
    flags = _FLAG_PQ if ct else 0
    sealed_len = _SEAL_FIXED + len(sender_info) + AEAD_TAG_LEN
    clear = struct.pack(">BIIH", flags, peer.spk_id, peer.pq_key_id if ct else 0, sealed_len)
    mask = hkdf_sha256(dh2, ek_pub, _INFO_MASK, _MASK_LEN)
    masked = bytes(a ^ b for a, b in zip(clear, mask, strict=True))
    h0 = sha256(
        PROTOCOL_NAME,
        peer.installation_id,
        peer.ik_x25519,
        peer.spk_pub,
        peer.pq_pub or b"",
        ek_pub,
        masked,
        ct,
    )
    k_seal = hkdf_sha256(_F + dh2 + dh3 + ss, h0, _INFO_SEAL, 32)
    sealed = aead_encrypt(k_seal, own.installation_id + own.ik_x25519 + sender_info, h0)
    h1 = sha256(h0, sealed)
    rk, ck, tag = _derive(dh1, dh2, dh3, ss, h1)
    ad = session_ad(own.installation_id, own.ik_x25519, peer.installation_id, peer.ik_x25519)
    return Initiated(ek_pub + masked + ct + sealed, rk, ck, tag, ad, ek, ek_pub)


def accept(
    own: InstallationKeys,
    data: bytes,
    offset: int,
    spk_lookup: PrekeyLookup,
    pq_lookup: PqLookup,
    *,
    require_pq: bool = False,
) -> Accepted:
    """Run the responder half on the prefix starting at ``data[offset]``.

    Raises ``HandshakeError`` for a truncated prefix, an unknown prekey / PQ key id, a missing PQ
    part when ``require_pq``, or a sealed box that does not open. The result is only
    authenticated once the first ratchet message under ``chain_key`` decrypts.
    """
    end = offset + X25519_LEN + _MASK_LEN
    if len(data) < end:
        raise HandshakeError("truncated handshake")
    ek_pub = bytes(data[offset : offset + X25519_LEN])
    masked = bytes(data[offset + X25519_LEN : end])
    try:
        dh2 = x25519_dh(own.dh_key, ek_pub)
    except ValueError:
        raise HandshakeError("bad ephemeral key") from None
    mask = hkdf_sha256(dh2, ek_pub, _INFO_MASK, _MASK_LEN)
    clear = bytes(a ^ b for a, b in zip(masked, mask, strict=True))
    flags, spk_id, pq_id, sealed_len = struct.unpack(">BIIH", clear)
    if flags & ~_FLAG_PQ or sealed_len < _SEAL_FIXED + AEAD_TAG_LEN:
        raise HandshakeError("bad handshake header")
    has_pq = bool(flags & _FLAG_PQ)
    if require_pq and not has_pq:
        raise HandshakeError("post-quantum part required")
    spk = _lookup(spk_lookup, spk_id)
    if not isinstance(spk, SignedPrekey):
        raise HandshakeError("unknown signed prekey id")
    pq: PqPrekey | None = None
    if has_pq:
        found = _lookup(pq_lookup, pq_id)
        if not isinstance(found, PqPrekey):
            raise HandshakeError("unknown post-quantum key id")
        pq = found
    ct_end = end + (MLKEM768_CT_LEN if has_pq else 0)
    prefix_end = ct_end + sealed_len
    if len(data) < prefix_end:
        raise HandshakeError("truncated handshake")
    ct = bytes(data[end:ct_end])
    sealed = bytes(data[ct_end:prefix_end])
    try:
        dh3 = x25519_dh(spk.key, ek_pub)
    except ValueError:  # pragma: no cover - dh2 already rejected a low-order ek
        raise HandshakeError("bad ephemeral key") from None
    ss = mlkem768_decaps(pq.key, ct) if pq is not None else b""
    h0 = sha256(
        PROTOCOL_NAME,
        own.installation_id,
        own.ik_x25519,
        spk.pub,
        pq.pub if pq is not None else b"",
        ek_pub,
        masked,
        ct,
    )
    k_seal = hkdf_sha256(_F + dh2 + dh3 + ss, h0, _INFO_SEAL, 32)
    try:
        opened = aead_decrypt(k_seal, sealed, h0)
    except DecryptionError:
        raise HandshakeError("handshake does not open") from None
    iid, ik = opened[:ED25519_PUB_LEN], opened[ED25519_PUB_LEN:_SEAL_FIXED]
    info = opened[_SEAL_FIXED:]
    try:
        dh1 = x25519_dh(spk.key, ik)
    except ValueError:
        raise HandshakeError("bad initiator identity key") from None
    h1 = sha256(h0, sealed)
    rk, ck, tag = _derive(dh1, dh2, dh3, ss, h1)
    ad = session_ad(iid, ik, own.installation_id, own.ik_x25519)
    return Accepted(PeerInfo(iid, ik, info), rk, ck, tag, ad, ek_pub, prefix_end)
