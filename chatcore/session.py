"""1:1 session: handshake + Double Ratchet behind one object, producing complete wire frames.

Frames (first byte = ``WIRE_VERSION << 4 | kind``)::

    session frame   (kind 2): hdr(1) | tag(8) | body
    handshake frame (kind 1): hdr(1) | tag(8) | prefix | body
    body   = dh(32) | pn varint | n varint | AES-256-GCM(plaintext) (+16)
    prefix = see :mod:`chatcore.handshake` (ek, masked ids, ML-KEM ct, sealed sender)

``tag`` is an 8-byte routing tag both sides derive from the handshake secret: random-looking,
the same for the whole session, revealing nobody. Until the initiator has received a message
from the responder every frame it sends is a handshake frame, so the responder can set up from
whichever one arrives first; an established session also accepts handshake frames of its own
handshake (lost or reordered first messages).

``decrypt`` mutates the session only when the frame authenticated; after any exception the
session is unchanged. Persist the session (``to_bytes``) before sending what ``encrypt``
returned: restoring an older state and encrypting again would reuse a message key.
"""

from __future__ import annotations

import hmac
import struct
from typing import Final

from .consts import (
    ED25519_PUB_LEN,
    KIND_HANDSHAKE,
    KIND_SESSION,
    SESSION_STATE_VERSION,
    SESSION_TAG_LEN,
    WIRE_VERSION,
    X25519_LEN,
)
from .crypto import Rng, sha256
from .errors import DecryptionError, HandshakeError, MalformedMessage
from .handshake import PeerInfo, PqLookup, PrekeyLookup, accept, initiate
from .keys import InstallationKeys, PeerKeys
from .ratchet import MIN_BODY_LEN, RatchetState

__all__ = ["PeerInfo", "Session", "parse_frame"]

_HDR_HS: Final = (WIRE_VERSION << 4) | KIND_HANDSHAKE
_HDR_S: Final = (WIRE_VERSION << 4) | KIND_SESSION
_HEAD: Final = 1 + SESSION_TAG_LEN


def parse_frame(frame: bytes) -> tuple[int, bytes | None]:
    """Route a frame: (kind, session tag). The tag is None for kinds 3..15, which belong to
    other modules (groups); their bytes after the first are not looked at here.

    Raises ``MalformedMessage`` for an empty frame, an unknown version, kind 0, or a 1:1 frame
    too short to hold its tag and a body.
    """
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise TypeError("frame must be bytes")
    if len(frame) < 1:
        raise MalformedMessage("empty frame")
    h = frame[0]
    if h >> 4 != WIRE_VERSION:
        raise MalformedMessage(f"unknown frame version {h >> 4}")
    kind = h & 0x0F
    if kind == 0:
        raise MalformedMessage("frame kind 0")
    if kind in (KIND_HANDSHAKE, KIND_SESSION):
        if len(frame) < _HEAD + MIN_BODY_LEN:
            raise MalformedMessage("frame too short")
        return kind, bytes(frame[1:_HEAD])
    return kind, None


class Session:
    """A 1:1 Double Ratchet session with one peer installation.

    Create with :meth:`initiate` or :meth:`respond`; restore with :meth:`from_bytes`.
    Attributes: ``tag`` (8-byte routing tag), ``peer_installation_id``, ``peer_ik_x25519``,
    ``is_initiator``.
    """

    __slots__ = (
        "_ad",
        "_head",
        "_prefix",
        "_prefix_hash",
        "_prefix_len",
        "_r",
        "is_initiator",
        "peer_ik_x25519",
        "peer_installation_id",
        "tag",
    )

    def __init__(
        self,
        *,
        ratchet: RatchetState,
        tag: bytes,
        ad: bytes,
        prefix: bytes | None,
        prefix_hash: bytes,
        prefix_len: int,
        peer_installation_id: bytes,
        peer_ik_x25519: bytes,
        is_initiator: bool,
    ) -> None:
        self._r = ratchet
        self.tag = tag
        self._ad = ad
        self._prefix = prefix
        self._prefix_hash = prefix_hash
        self._prefix_len = prefix_len
        self.peer_installation_id = peer_installation_id
        self.peer_ik_x25519 = peer_ik_x25519
        self.is_initiator = is_initiator
        self._set_head()

    def _set_head(self) -> None:
        if self._prefix is not None:
            self._head = bytes((_HDR_HS,)) + self.tag + self._prefix
        else:
            self._head = bytes((_HDR_S,)) + self.tag

    def __repr__(self) -> str:
        return (
            f"Session(tag={self.tag.hex()}, initiator={self.is_initiator}, "
            f"established={self.established}, {self._r!r})"
        )

    @property
    def established(self) -> bool:
        """True once we know the peer has the session (responder: always)."""
        return self._prefix is None

    # --- setup --------------------------------------------------------------------------------

    @classmethod
    def initiate(
        cls, own: InstallationKeys, peer: PeerKeys, sender_info: bytes, rng: Rng
    ) -> Session:
        """Start a session to ``peer`` from its resolved bundle keys.

        No frame is produced until :meth:`encrypt`. Raises ``ValueError``/``TypeError`` on bad
        arguments and ``HandshakeError`` on unusable peer keys.
        """
        hs = initiate(own, peer, sender_info, rng)
        ratchet = RatchetState.initiator(hs.root_key, hs.chain_key, hs.ek, hs.ek_pub, peer.spk_pub)
        return cls(
            ratchet=ratchet,
            tag=hs.session_tag,
            ad=hs.ad,
            prefix=hs.prefix,
            prefix_hash=sha256(hs.prefix),
            prefix_len=len(hs.prefix),
            peer_installation_id=peer.installation_id,
            peer_ik_x25519=peer.ik_x25519,
            is_initiator=True,
        )

    @classmethod
    def respond(
        cls,
        own: InstallationKeys,
        prekeys: PrekeyLookup,
        pq_keys: PqLookup,
        frame: bytes,
        *,
        require_pq: bool = False,
    ) -> tuple[Session, PeerInfo, bytes]:
        """Set up the responder side from a handshake frame and decrypt its message.

        ``prekeys`` / ``pq_keys`` map key ids to our :class:`~chatcore.keys.SignedPrekey` /
        :class:`~chatcore.keys.PqPrekey` (mapping or callable), so prekeys kept for a grace
        window still work. Returns (session, who the sender claims to be, plaintext); the engine
        must check ``PeerInfo`` against the chain before trusting it.

        Raises ``MalformedMessage`` (not a parseable frame), ``HandshakeError`` (not a handshake
        frame, unknown prekey id, does not authenticate), ``TooManySkipped``.
        """
        kind, tag = parse_frame(frame)
        if kind != KIND_HANDSHAKE or tag is None:
            raise HandshakeError("not a handshake frame")
        frame = bytes(frame)
        acc = accept(own, frame, _HEAD, prekeys, pq_keys, require_pq=require_pq)
        if not hmac.compare_digest(acc.session_tag, tag):
            raise HandshakeError("handshake does not authenticate")
        ratchet = RatchetState.responder(acc.root_key, acc.chain_key, acc.ek_pub)
        try:
            plaintext = ratchet.decrypt(frame, acc.prefix_end, acc.ad)
        except DecryptionError:
            raise HandshakeError("handshake does not authenticate") from None
        prefix = frame[_HEAD : acc.prefix_end]
        session = cls(
            ratchet=ratchet,
            tag=tag,
            ad=acc.ad,
            prefix=None,
            prefix_hash=sha256(prefix),
            prefix_len=len(prefix),
            peer_installation_id=acc.peer.installation_id,
            peer_ik_x25519=acc.peer.ik_x25519,
            is_initiator=False,
        )
        return session, acc.peer, plaintext

    # --- messages -----------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, rng: Rng) -> bytes:
        """Encrypt ``plaintext`` into a complete wire frame (handshake frame until the peer has
        answered). ``rng`` is used only when a DH ratchet step is due."""
        return self._head + self._r.encrypt(plaintext, self._ad, rng)

    def decrypt(self, frame: bytes) -> bytes:
        """Decrypt a frame of this session (kind 2, or kind 1 carrying our own handshake).

        Mutates the session on success only. Raises ``MalformedMessage``, ``DecryptionError``
        (including a frame for another session), ``DuplicateMessage``, ``TooManySkipped``.
        """
        if type(frame) is not bytes:
            if not isinstance(frame, bytearray | memoryview):
                raise TypeError("frame must be bytes")
            frame = bytes(frame)
        if len(frame) < _HEAD:
            raise MalformedMessage("frame too short")
        h = frame[0]
        if h == _HDR_S:
            if frame[1:_HEAD] != self.tag:
                raise DecryptionError("frame of another session")
            pt = self._r.decrypt(frame, _HEAD, self._ad)
        elif h == _HDR_HS:
            if frame[1:_HEAD] != self.tag:
                raise DecryptionError("frame of another session")
            end = _HEAD + self._prefix_len
            if len(frame) < end or sha256(frame[_HEAD:end]) != self._prefix_hash:
                raise DecryptionError("handshake of another session")
            pt = self._r.decrypt(frame, end, self._ad)
        else:
            parse_frame(frame)  # raises MalformedMessage for bad versions / kind 0
            raise MalformedMessage("not a 1:1 frame")
        if self._prefix is not None:
            # Only the responder can produce a frame that authenticates: it has the session.
            self._prefix = None
            self._set_head()
        return pt

    # --- serialisation ------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """version | flags | tag(8) | ad(32) | prefix_hash(32) | prefix_len u32 |
        peer_installation_id(32) | peer_ik(32) | [prefix] | ratchet state."""
        flags = (1 if self.is_initiator else 0) | (2 if self._prefix is not None else 0)
        return b"".join(
            (
                bytes((SESSION_STATE_VERSION, flags)),
                self.tag,
                self._ad,
                self._prefix_hash,
                struct.pack(">I", self._prefix_len),
                self.peer_installation_id,
                self.peer_ik_x25519,
                self._prefix or b"",
                self._r.to_bytes(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        """Inverse of :meth:`to_bytes`. Raises ``ValueError`` on anything malformed."""
        data = bytes(data)
        fixed = 2 + SESSION_TAG_LEN + 32 + 32 + 4 + ED25519_PUB_LEN + X25519_LEN
        if len(data) < fixed or data[0] != SESSION_STATE_VERSION or data[1] & ~3:
            raise ValueError("not a v1 session state")
        flags = data[1]
        pos = 2
        tag = data[pos : pos + SESSION_TAG_LEN]
        pos += SESSION_TAG_LEN
        ad, prefix_hash = data[pos : pos + 32], data[pos + 32 : pos + 64]
        pos += 64
        (prefix_len,) = struct.unpack_from(">I", data, pos)
        pos += 4
        iid = data[pos : pos + ED25519_PUB_LEN]
        pos += ED25519_PUB_LEN
        ik = data[pos : pos + X25519_LEN]
        pos += X25519_LEN
        prefix = None
        if flags & 2:
            prefix = data[pos : pos + prefix_len]
            if len(prefix) != prefix_len or sha256(prefix) != prefix_hash:
                raise ValueError("bad pending handshake in session state")
            pos += prefix_len
        ratchet = RatchetState.from_bytes(data[pos:])
        return cls(
            ratchet=ratchet,
            tag=tag,
            ad=ad,
            prefix=prefix,
            prefix_hash=prefix_hash,
            prefix_len=prefix_len,
            peer_installation_id=iid,
            peer_ik_x25519=ik,
            is_initiator=bool(flags & 1),
        )
