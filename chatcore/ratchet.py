"""Double Ratchet (Signal spec) with a bounded skipped-message-key store, sans I/O.

Message body layout (the part of a frame the ratchet owns)::

    dh(32) | pn varint | n varint | AES-256-GCM ciphertext (plaintext + 16-byte tag)

``pn`` is the length of the sender's previous sending chain, ``n`` the message number in the
current one; varints are unsigned LEB128, minimal, at most 5 bytes (u32). The AEAD associated
data is the caller's session AD followed by the body header ``dh | pn | n``.

KDFs: root ``HKDF-SHA256(salt=rk, ikm=DH, info="LogosChat ratchet") -> rk', ck``; chain
``BLAKE2b-512(key=ck, "\\x01", person="LogosChatCK1") -> mk | ck'`` (see :mod:`chatcore.crypto`).
Each message key is used once, with a constant nonce.

Skipping: one message may move a receiving chain up to ``MAX_FORWARD`` message numbers ahead
(CPU-bounded); only the newest ``MAX_SKIP`` skipped keys of that walk are kept (at most
``MAX_SKIPPED_KEYS`` in all). A new chain whose header says more than ``MAX_SKIP`` messages of
the previous chain are missing drops that chain's remaining keys once the message
authenticates (the spec would refuse it for ever: a peer that was offline past the delivery
network's retention could then never read its sender again).

Differences from the spec, on purpose:

* The sending half of a DH ratchet step happens lazily at the next :meth:`RatchetState.encrypt`
  (which is handed ``rng``) instead of at receive time, so :meth:`RatchetState.decrypt` needs no
  randomness. The derived keys are the same as the spec's.
* The handshake's ephemeral key doubles as the initiator's first ratchet key and its first
  sending chain comes straight from the handshake secret (DH(EK_A, SPK_B) is already in it).

:meth:`RatchetState.decrypt` mutates the state only after the message authenticated; on any
error the state is exactly as before (all work happens on locals first).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .codec import read_varint, varint
from .consts import (
    AEAD_TAG_LEN,
    MAX_COUNTER,
    MAX_FORWARD,
    MAX_OLD_CHAINS,
    MAX_SKIP,
    MAX_SKIPPED_KEYS,
    RATCHET_STATE_VERSION,
    X25519_LEN,
)
from .crypto import NONCE, Rng, hkdf_sha256, x25519_dh, x25519_keypair
from .errors import DecryptionError, DuplicateMessage, MalformedMessage, TooManySkipped

__all__ = ["MIN_BODY_LEN", "RatchetState", "decode_varint", "encode_varint"]

_blake2b = hashlib.blake2b
_PERSON: Final = b"LogosChatCK1"
_CK_IN: Final = b"\x01"
_RK_INFO: Final = b"LogosChat ratchet"
_V1: Final = tuple(bytes((i,)) for i in range(128))
_U32 = struct.Struct(">I")

#: Smallest possible body: dh + two 1-byte varints + AEAD tag (empty plaintext).
MIN_BODY_LEN: Final = X25519_LEN + 2 + AEAD_TAG_LEN


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 of a u32."""
    if value < 0x80:
        if value < 0:
            raise ValueError("varint must be non-negative")
        return _V1[value]
    if value > MAX_COUNTER:
        raise ValueError("varint exceeds u32")
    return varint(value)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a minimal LEB128 u32 at ``data[pos]``: (value, next position).

    Raises ``MalformedMessage`` on truncation, overlong or non-minimal encodings.
    """
    value, pos = read_varint(data, pos, limit=5)
    if value > MAX_COUNTER:
        raise MalformedMessage("varint exceeds u32")
    return value, pos


def _kdf_rk(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    okm = hkdf_sha256(dh_out, rk, _RK_INFO, 64)
    return okm[:32], okm[32:]


def _chain(ck: bytes) -> tuple[bytes, bytes]:
    out = _blake2b(_CK_IN, key=ck, digest_size=64, person=_PERSON).digest()
    return out[:32], out[32:]


def _walk(ck: bytes, dh: bytes, start: int, stop: int, out: list[tuple[bytes, bytes]]) -> bytes:
    """Advance chain key ``ck`` (at message ``start``) to message ``stop``; append the skipped
    keys to ``out``, only the newest :data:`MAX_SKIP` of them (a longer walk, up to
    :data:`MAX_FORWARD`, costs CPU but no memory). Returns the chain key at ``stop``."""
    keep_from = stop - MAX_SKIP
    if start < keep_from:  # the oldest keys are not kept: just step over them
        for _ in range(keep_from - start):
            ck = _blake2b(_CK_IN, key=ck, digest_size=64, person=_PERSON).digest()[32:]
        start = keep_from
    for j in range(start, stop):
        mk, ck = _chain(ck)
        out.append((dh + _U32.pack(j), mk))
    return ck


def _open(mk: bytes, ct: bytes, ad: bytes) -> bytes:
    try:
        return AESGCM(mk).decrypt(NONCE, ct, ad)
    except InvalidTag:
        raise DecryptionError("decryption failed") from None


class RatchetState:
    """Mutable Double Ratchet state of one session. Not thread-safe.

    Build with :meth:`initiator` / :meth:`responder` (from handshake output) or
    :meth:`from_bytes`. ``copy()`` gives an independent state.
    """

    __slots__ = (
        "_dhs",
        "ckr",
        "cks",
        "dhr",
        "dhs_priv",
        "dhs_pub",
        "need_send_ratchet",
        "nr",
        "ns",
        "old_dhr",
        "pn",
        "rk",
        "skipped",
    )

    def __init__(self) -> None:
        self.rk: bytes = b""
        self._dhs: X25519PrivateKey | None = None
        self.dhs_priv: bytes | None = None
        self.dhs_pub: bytes | None = None
        self.dhr: bytes | None = None
        self.cks: bytes | None = None
        self.ns = 0
        self.pn = 0
        self.ckr: bytes | None = None
        self.nr = 0
        self.need_send_ratchet = False
        #: (dh(32) | n u32) -> message key, oldest first
        self.skipped: dict[bytes, bytes] = {}
        self.old_dhr: list[bytes] = []

    def __repr__(self) -> str:
        return (
            f"RatchetState(ns={self.ns}, pn={self.pn}, nr={self.nr}, skipped={len(self.skipped)})"
        )

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def initiator(
        cls, root_key: bytes, chain_key: bytes, ek: X25519PrivateKey, ek_pub: bytes, peer_spk: bytes
    ) -> RatchetState:
        """Initiator state: sends on ``chain_key`` with ``ek`` as its first ratchet key."""
        s = cls()
        s.rk, s.cks = root_key, chain_key
        s._dhs, s.dhs_priv, s.dhs_pub = ek, ek.private_bytes_raw(), ek_pub
        s.dhr = peer_spk
        return s

    @classmethod
    def responder(cls, root_key: bytes, chain_key: bytes, peer_ek: bytes) -> RatchetState:
        """Responder state: receives on ``chain_key``; ratchets on its first send."""
        s = cls()
        s.rk, s.ckr, s.dhr = root_key, chain_key, peer_ek
        s.need_send_ratchet = True
        return s

    def copy(self) -> RatchetState:
        s = RatchetState()
        for name in RatchetState.__slots__:
            setattr(s, name, getattr(self, name))
        s.skipped = dict(self.skipped)
        s.old_dhr = list(self.old_dhr)
        return s

    # --- encrypt ------------------------------------------------------------------------------

    def _dhs_key(self) -> X25519PrivateKey | None:
        if self._dhs is None and self.dhs_priv is not None:
            self._dhs = X25519PrivateKey.from_private_bytes(self.dhs_priv)
        return self._dhs

    def _send_ratchet(self, rng: Rng) -> None:
        assert self.dhr is not None
        priv, pub = x25519_keypair(rng)
        rk, cks = _kdf_rk(self.rk, x25519_dh(priv, self.dhr))
        self.rk, self.cks = rk, cks
        self._dhs, self.dhs_priv, self.dhs_pub = priv, priv.private_bytes_raw(), pub
        self.pn, self.ns = self.ns, 0
        self.need_send_ratchet = False

    def encrypt(self, plaintext: bytes, ad: bytes, rng: Rng) -> bytes:
        """Encrypt one message: the body ``dh | pn | n | ciphertext``. Advances the state.

        ``rng`` is used only when a DH ratchet step is due (32 bytes).
        """
        if self.need_send_ratchet:
            self._send_ratchet(rng)
        ns, pn = self.ns, self.pn
        if ns > MAX_COUNTER:
            raise ValueError("sending chain exhausted")
        out = _blake2b(_CK_IN, key=self.cks, digest_size=64, person=_PERSON).digest()  # type: ignore[arg-type]
        pub = self.dhs_pub
        assert pub is not None  # set by the first sending ratchet step
        header = (
            pub
            + (_V1[pn] if pn < 128 else encode_varint(pn))
            + (_V1[ns] if ns < 128 else encode_varint(ns))
        )
        ct = AESGCM(out[:32]).encrypt(NONCE, plaintext, ad + header)
        self.cks = out[32:]
        self.ns = ns + 1
        return header + ct

    # --- decrypt ------------------------------------------------------------------------------

    def decrypt(self, data: bytes, off: int, ad: bytes) -> bytes:
        """Decrypt the body starting at ``data[off]``; commits the new state only on success.

        Raises ``MalformedMessage`` (unparseable), ``DuplicateMessage`` (key already used),
        ``TooManySkipped`` (gap over :data:`~chatcore.consts.MAX_FORWARD`) or ``DecryptionError``.
        """
        end = len(data)
        i = off + X25519_LEN
        if end - off < MIN_BODY_LEN:
            raise MalformedMessage("frame too short")
        b = data[i]
        if b < 0x80:
            pn = b
            i += 1
        else:
            pn, i = decode_varint(data, i)
        if i < end and (b := data[i]) < 0x80:
            n = b
            i += 1
        else:
            n, i = decode_varint(data, i)
        if end - i < AEAD_TAG_LEN:
            raise MalformedMessage("frame too short")
        dh = data[off : off + X25519_LEN]
        ckr = self.ckr
        if n == self.nr and dh == self.dhr and ckr is not None:
            out = _blake2b(_CK_IN, key=ckr, digest_size=64, person=_PERSON).digest()
            try:
                pt = AESGCM(out[:32]).decrypt(NONCE, data[i:], ad + data[off:i])
            except InvalidTag:
                raise DecryptionError("decryption failed") from None
            self.ckr = out[32:]
            self.nr = n + 1
            return pt
        return self._decrypt_slow(data[i:], ad + data[off:i], dh, pn, n)

    def _decrypt_slow(self, ct: bytes, ad: bytes, dh: bytes, pn: int, n: int) -> bytes:
        key = dh + _U32.pack(n)
        mk = self.skipped.get(key)
        if mk is not None:
            pt = _open(mk, ct, ad)
            del self.skipped[key]
            return pt
        new: list[tuple[bytes, bytes]] = []
        if dh == self.dhr:
            if self.ckr is None:
                raise DecryptionError("decryption failed")
            if n < self.nr:
                raise DuplicateMessage(f"message {n} already received")
            if n - self.nr > MAX_FORWARD:
                raise TooManySkipped(f"gap of {n - self.nr} messages")
            ck = _walk(self.ckr, dh, self.nr, n, new)
            mk, ck = _chain(ck)
            pt = _open(mk, ct, ad)
            self.ckr, self.nr = ck, n + 1
            self._store_skipped(new)
            return pt
        if dh in self.old_dhr:
            raise DuplicateMessage(f"message {n} of a past chain already received or dropped")
        dhs = self._dhs_key()
        if dhs is None or dh == self.dhs_pub:
            raise DecryptionError("decryption failed")
        if n > MAX_FORWARD:
            raise TooManySkipped(f"gap of {n} messages")
        if self.ckr is not None and self.dhr is not None and pn - self.nr <= MAX_SKIP:
            _walk(self.ckr, self.dhr, self.nr, pn, new)
        # else: more than MAX_SKIP of the previous chain are missing. They are not derived
        # (that would be CPU for anyone who forges a header); once this frame authenticates,
        # the previous chain is dropped: the sender re-encrypts what we do not acknowledge in
        # its current chain, so a peer offline past the delivery retention heals.
        try:
            shared = x25519_dh(dhs, dh)
        except ValueError:
            raise DecryptionError("decryption failed") from None
        rk, ck = _kdf_rk(self.rk, shared)
        ck = _walk(ck, dh, 0, n, new)
        mk, ck = _chain(ck)
        pt = _open(mk, ct, ad)
        # authenticated: commit
        if self.dhr is not None:
            self.old_dhr.append(self.dhr)
            del self.old_dhr[:-MAX_OLD_CHAINS]
        self.rk, self.dhr, self.ckr, self.nr = rk, dh, ck, n + 1
        self.need_send_ratchet = True
        self._store_skipped(new)
        return pt

    def _store_skipped(self, new: list[tuple[bytes, bytes]]) -> None:
        if not new:
            return
        store = self.skipped
        store.update(new)
        excess = len(store) - MAX_SKIPPED_KEYS
        if excess > 0:
            for k in list(store)[:excess]:
                del store[k]

    # --- serialisation ------------------------------------------------------------------------

    _F_DHS, _F_DHR, _F_CKS, _F_CKR, _F_NEED = 1, 2, 4, 8, 16

    def to_bytes(self) -> bytes:
        """version | flags | rk | [dhs_priv dhs_pub] | [dhr] | [cks] | ns pn | [ckr] | nr |
        n_old u8 | old dhr* | n_skipped u32 | (dh n mk)*  (integers u32 big-endian)."""
        f = 0
        parts = [b"", self.rk]
        if self.dhs_priv is not None and self.dhs_pub is not None:
            f |= self._F_DHS
            parts += [self.dhs_priv, self.dhs_pub]
        if self.dhr is not None:
            f |= self._F_DHR
            parts.append(self.dhr)
        if self.cks is not None:
            f |= self._F_CKS
            parts.append(self.cks)
        parts.append(struct.pack(">II", self.ns, self.pn))
        if self.ckr is not None:
            f |= self._F_CKR
            parts.append(self.ckr)
        parts.append(_U32.pack(self.nr))
        if self.need_send_ratchet:
            f |= self._F_NEED
        parts[0] = bytes((RATCHET_STATE_VERSION, f))
        parts.append(bytes((len(self.old_dhr),)))
        parts.extend(self.old_dhr)
        parts.append(_U32.pack(len(self.skipped)))
        for k, v in self.skipped.items():
            parts += [k, v]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> RatchetState:
        """Inverse of :meth:`to_bytes`. Raises ``ValueError`` on anything malformed."""
        data = bytes(data)
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(data):
                raise ValueError("truncated ratchet state")
            out = data[pos : pos + n]
            pos += n
            return out

        if len(data) < 2 or data[0] != RATCHET_STATE_VERSION:
            raise ValueError("not a v1 ratchet state")
        f = data[1]
        pos = 2
        if f & ~31:
            raise ValueError("unknown ratchet state flags")
        s = cls()
        s.rk = take(32)
        if f & cls._F_DHS:
            s.dhs_priv, s.dhs_pub = take(32), take(32)
        if f & cls._F_DHR:
            s.dhr = take(32)
        if f & cls._F_CKS:
            s.cks = take(32)
        s.ns, s.pn = struct.unpack(">II", take(8))
        if f & cls._F_CKR:
            s.ckr = take(32)
        (s.nr,) = _U32.unpack(take(4))
        s.need_send_ratchet = bool(f & cls._F_NEED)
        s.old_dhr = [take(32) for _ in range(take(1)[0])]
        (count,) = _U32.unpack(take(4))
        if count > MAX_SKIPPED_KEYS:
            raise ValueError("too many skipped keys")
        for _ in range(count):
            k = take(36)
            s.skipped[k] = take(32)
        if pos != len(data):
            raise ValueError("trailing bytes in ratchet state")
        return s
