"""The 1:1 chat engine: sessions, fan-out to devices, payloads and local state. No network I/O.

The engine turns "send this text to that identity" into encrypted frames for every active
installation of the peer and every other installation of our own, and turns frames that
arrived on our inbox into stored messages. It never touches the network: frames to send are
written to the outbox (in the same transaction as the ratchet state that produced them) and
handed back to the caller; randomness and time are passed in. Discovery is reached through
the :class:`Directory` interface (the real one reads the synced on-chain index; tests and the
simulator pass their own).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatcore import session as sess
from chatcore.consts import KIND_HANDSHAKE, KIND_SESSION, PREKEY_GRACE_S
from chatcore.errors import (
    DuplicateMessage,
    HandshakeError,
    MalformedMessage,
    ProtocolError,
    StoreUnavailable,
    UntrustedIdentity,
)
from chatcore.keys import InstallationKeys, PeerKeys, PqPrekey, SignedPrekey
from chatcore.payload import MAX_HISTORY, RECENT_HISTORY, ContentType, Payload
from chatcore.store import Store, StoredMessage

log = logging.getLogger("chatcore.engine")

#: Receiving a frame is retried this often when another process on the same home saved
#: the session between our read and our write (two CLI commands, an app and the CLI).
_RACE_RETRIES = 3


class _SessionRaced(Exception):
    """The session changed under us (see Engine._save_received); never escapes receive."""


Rng = Callable[[int], bytes]
INBOX_DOMAIN = b"logos-chat/inbox/v1"
DM_DOMAIN = b"logos-chat/dm/v1"
SENDER_INFO_VERSION = 1


def inbox_subject(installation_id: bytes) -> str:
    """The delivery subject of an installation's inbox: a hash, never the key itself."""
    return "lc.v1.inbox." + hashlib.sha256(INBOX_DOMAIN + installation_id).digest()[:16].hex()


def direct_conversation_id(a: bytes, b: bytes) -> bytes:
    """Both sides of a 1:1 conversation derive the same 16-byte id."""
    lo, hi = sorted((a, b))
    return hashlib.sha256(DM_DOMAIN + lo + hi).digest()[:16]


def causal_history(recent: Sequence[bytes], acks: Sequence[bytes] = ()) -> tuple[bytes, ...]:
    """A message's causal history: the conversation's newest short ids, then the short ids of
    received messages it acknowledges (piggybacked acks), up to ``MAX_HISTORY`` in all."""
    out = list(dict.fromkeys(recent))
    for mid in acks:
        if len(out) >= MAX_HISTORY:
            break
        short = mid[:4]
        if short not in out:
            out.append(short)
    return tuple(out)


def frame_msg_id(frame: bytes) -> str:
    """Dedup id for the delivery network: retransmissions of one frame share it."""
    return hashlib.sha256(frame).digest()[:16].hex()


@dataclass(frozen=True, slots=True)
class Peer:
    """A resolved, verified identity and its active installations."""

    identity_id: bytes
    display: str | None
    installations: tuple[PeerKeys, ...]


class Directory(Protocol):
    """Verified on-chain identity data, as the engine needs it."""

    def peer(self, identity_id: bytes) -> Peer:
        """All active installations of an identity (raises UnknownContact if none)."""
        ...

    def check_installation(
        self, identity_id: bytes, installation_id: bytes, ik_x25519: bytes
    ) -> None:
        """Raise UntrustedIdentity unless the installation is registered, active, with that key."""
        ...


@dataclass(frozen=True, slots=True)
class OutFrame:
    outbox_id: int
    subject: str
    frame: bytes = field(repr=False)
    msg_id: str


@dataclass(frozen=True, slots=True)
class SendResult:
    conversation_id: bytes
    message_id: bytes
    lamport: int
    sent_at: int
    frames: tuple[OutFrame, ...]


@dataclass(frozen=True, slots=True)
class Received:
    conversation_id: bytes
    message_id: bytes
    sender_identity: bytes
    sender_installation: bytes
    content_type: ContentType
    body: bytes = field(repr=False)
    lamport: int
    sent_at: int
    received_at: int
    outgoing: bool  # sent by our own identity from another installation

    @property
    def text(self) -> str:
        """What it says: a text's or reply's text, an edit's new text, a reaction's emoji, a
        group notice (empty for a delete, a taken-back reaction, and signals)."""
        from chatcore import content

        body = self.body
        if self.content_type in content.TARGETED_TYPES:
            body = body[content.MID :]
        elif self.content_type in content.SIGNAL_TYPES:
            return ""
        return body.decode("utf-8", errors="replace")

    @property
    def target(self) -> bytes | None:
        """The message a reply, edit, reaction or delete refers to (None for others)."""
        from chatcore import content

        if self.content_type in content.TARGETED_TYPES and len(self.body) >= content.MID:
            return self.body[: content.MID]
        return None


@dataclass(frozen=True, slots=True)
class OwnIdentity:
    identity_id: bytes
    keys: InstallationKeys = field(repr=False)


class Engine:
    """One installation's protocol state machine over a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        own: OwnIdentity,
        directory: Directory,
        rng: Rng,
        clock_ms: Callable[[], int],
    ) -> None:
        self.store = store
        self.own = own
        self.directory = directory
        self.rng = rng
        self.clock_ms = clock_ms
        # Group control payloads (ops, welcomes, sender keys) arriving over a pairwise session
        # go to this handler (chatcore.groupchat.GroupChat.handle_control); what it produces
        # is collected here for the caller to drain after each receive.
        self.control_handler: (
            Callable[[bytes, bytes, bytes], tuple[list[Received], list[OutFrame]]] | None
        ) = None
        self.side_events: list[Received] = []
        self.side_frames: list[OutFrame] = []
        # Content rules (chatcore.features.Features.handle): called with (sender identity,
        # sender installation, payload, group id or None) inside the receive transaction; it
        # returns None (store the message as usual) or an object whose ``.event`` is what to
        # return after it handled the payload itself (None: dropped); ContentError rejects.
        self.content_handler: Callable[..., Any] | None = None
        # Called with (conversation, message id) when one of our messages reached the
        # network ("sending" -> "sent"), inside that transaction (chatcore.features: a group
        # message to nobody else is then as far as it gets); GroupChat calls it too when it
        # stores our other device's group message read from the topic
        self.sent_handler: Callable[[bytes, bytes], None] | None = None

    # --- identity -----------------------------------------------------------------------------
    @property
    def identity_id(self) -> bytes:
        return self.own.identity_id

    @property
    def installation_id(self) -> bytes:
        return self.own.keys.installation_id

    @property
    def inbox(self) -> str:
        return inbox_subject(self.own.keys.installation_id)

    def _sender_info(self) -> bytes:
        return bytes((SENDER_INFO_VERSION,)) + self.own.identity_id

    def _prekey(self, spk_id: int) -> SignedPrekey | None:
        """Our signed prekey ``spk_id``, unless it expired more than the grace ago (kept
        forever it would widen the window in which a stolen store reads first messages)."""
        raw = self.store.get_secret(f"spk:{spk_id:010d}")
        if raw is None:
            return None
        spk = SignedPrekey.from_bytes(raw)
        if spk.not_after_ms + PREKEY_GRACE_S * 1000 < self.clock_ms():
            return None
        return spk

    def _pq(self, pq_id: int) -> PqPrekey | None:
        if pq_id == self.own.keys.pq.id:
            return self.own.keys.pq
        raw = self.store.get_secret(f"pq:{pq_id:010d}")
        return None if raw is None else PqPrekey.from_bytes(raw)

    # --- sending ------------------------------------------------------------------------------
    def send(
        self,
        peer: Peer,
        content_type: ContentType,
        body: bytes,
        own_devices: Sequence[PeerKeys] = (),
        acks: Sequence[bytes] = (),
        read: bool = False,
    ) -> SendResult:
        """Encrypt one message for every installation of ``peer`` and our other devices.

        ``acks``: ids of received messages this message acknowledges (piggybacked in its
        causal history, see :func:`causal_history`); ``read``: tell the peer the user has read
        them (the sync copies for our own devices always say so).

        Everything (ratchet states, the stored message, the outbox frames) commits in one
        transaction; the frames are also returned so the caller can publish them at once.
        """
        now = self.clock_ms()
        conv = direct_conversation_id(self.identity_id, peer.identity_id)
        with self.store.transaction():
            self.store.ensure_conversation(conv, "direct", peer.identity_id, peer.display, now)
            lamport = self.store.next_lamport(conv, now)
            history = causal_history(self.store.recent_short_ids(conv, RECENT_HISTORY), acks)
            payload = Payload(content_type, lamport, now, body, history, read=read)
            mid = payload.message_id(self.installation_id, conv)
            frames = self.encrypt_each(
                peer.identity_id, peer.installations, payload.encode(), now, conv, mid
            )
            if peer.installations and not frames:
                raise HandshakeError("no device of that identity has usable keys")
            if own_devices:
                sync_copy = Payload(
                    content_type,
                    lamport,
                    now,
                    body,
                    history,
                    sync_peer=peer.identity_id,
                    read=True,  # for our own devices: sending in a conversation reads it
                )
                others = [i for i in own_devices if i.installation_id != self.installation_id]
                frames += self.encrypt_each(
                    self.identity_id, others, sync_copy.encode(), now, conv, mid
                )
            self.store.add_message(
                StoredMessage(
                    conversation_id=conv,
                    message_id=mid,
                    sender_identity=self.identity_id,
                    sender_installation=self.installation_id,
                    lamport=lamport,
                    sent_at=now,
                    received_at=now,
                    content_type=int(content_type),
                    body=body,
                    outgoing=True,
                    status="sending" if frames else "sent",
                    seq=self.store.next_seq(),
                )
            )
        return SendResult(conv, mid, lamport, now, tuple(frames))

    def _encrypt_to(
        self,
        peer_identity: bytes,
        inst: PeerKeys,
        plaintext: bytes,
        now: int,
        conv: bytes | None,
        mid: bytes | None,
    ) -> OutFrame:
        row = self.store.session_for(inst.installation_id)
        if row is not None:
            s = sess.Session.from_bytes(row[1])
        else:
            s = sess.Session.initiate(self.own.keys, inst, self._sender_info(), self.rng)
        frame = s.encrypt(plaintext, self.rng)
        self.store.save_session(s.tag, peer_identity, inst.installation_id, s.to_bytes(), now)
        subject = inbox_subject(inst.installation_id)
        msg_id = frame_msg_id(frame)
        oid = self.store.add_outbox(subject, frame, msg_id, now, conv, mid)
        return OutFrame(oid, subject, frame, msg_id)

    def encrypt_each(
        self,
        peer_identity: bytes,
        insts: Sequence[PeerKeys],
        plaintext: bytes,
        now: int,
        conv: bytes | None,
        mid: bytes | None,
    ) -> list[OutFrame]:
        """One frame per installation (inside the caller's transaction). An installation whose
        published keys no session can use (a low-order X25519 key, a malformed ML-KEM key:
        anyone can sign such a bundle for a device of theirs) is skipped and logged, so that
        it cannot stop a send, a group change or a sync for everyone else."""
        frames: list[OutFrame] = []
        for inst in insts:
            try:
                frames.append(self._encrypt_to(peer_identity, inst, plaintext, now, conv, mid))
            except HandshakeError as exc:  # raised before anything was written
                log.warning("device %s skipped: %s", inst.installation_id.hex()[:12], exc)
        return frames

    def send_control(self, peer_identity: bytes, inst: PeerKeys, body: bytes) -> OutFrame:
        """Encrypt a control payload (not a chat message) for one installation. Raises
        ``HandshakeError`` if its keys are unusable (see :meth:`encrypt_each`)."""
        now = self.clock_ms()
        payload = Payload(ContentType.GROUP_CONTROL, 0, now, body)
        with self.store.transaction():
            return self._encrypt_to(peer_identity, inst, payload.encode(), now, None, None)

    def drain(self) -> tuple[list[Received], list[OutFrame]]:
        """Events and frames produced as side effects of the last receives."""
        ev, fr = self.side_events, self.side_frames
        self.side_events, self.side_frames = [], []
        return ev, fr

    def new_device_notice(
        self, conv: bytes, peer: bytes, inst: bytes, lamport: int, sent_at: int, now: int
    ) -> None:
        """The new-device notice, placed just before (and timed as) the message it explains."""
        text = f"now also writing from device 0x{inst.hex()[:12]}… (new or rotated device keys)"
        mid = hashlib.sha256(b"notice" + conv + inst).digest()[:8]
        self.store.add_message(
            StoredMessage(
                conversation_id=conv,
                message_id=mid,
                sender_identity=peer,
                sender_installation=inst,
                lamport=lamport,  # the same: its lower seq puts it just before the message
                sent_at=sent_at,
                received_at=now,
                content_type=int(ContentType.GROUP_CONTROL),
                body=text.encode(),
                outgoing=False,
                status="system",
                seq=self.store.next_seq(),
            )
        )

    def acknowledged(self, outbox_id: int) -> None:
        """The delivery network stored a frame: drop it from the outbox, maybe mark 'sent'."""
        with self.store.transaction():
            conv, mid, last = self.store.outbox_done(outbox_id)
            if conv is not None and mid is not None and last:
                m = self.store.message(conv, mid)
                if m is not None and m.status == "sending":
                    self.store.set_status(conv, mid, "sent")
                    if self.sent_handler is not None:
                        self.sent_handler(conv, mid)

    # --- receiving ----------------------------------------------------------------------------
    def receive(self, frame: bytes, cursor: tuple[str, int] | None = None) -> Received | None:
        """Decrypt, verify and store one frame from our inbox.

        Returns the new message, or None for a duplicate. Raises a ChatCoreError subclass for
        bad input (malformed, tampered, unknown session, untrusted sender); then nothing but
        the cursor is written.
        """
        try:
            for _ in range(_RACE_RETRIES - 1):
                try:
                    return self._receive(frame, cursor)
                except _SessionRaced:
                    # another process on this home advanced the session meanwhile: read it
                    # again (the message may then be a duplicate it has handled already)
                    continue
            try:
                return self._receive(frame, cursor)
            except _SessionRaced:
                raise ProtocolError("session changed by another process; try again") from None
        except StoreUnavailable:
            raise  # nothing wrong with the frame: it is read again, not skipped
        except Exception:
            if cursor is not None:
                with self.store.transaction():
                    self.store.set_cursor(*cursor)
            raise

    def _save_received(
        self, s: sess.Session, read: bytes | None, peer_identity: bytes, peer_inst: bytes, now: int
    ) -> None:
        """Save the session a frame advanced, if no other process changed it since ``read``
        (otherwise _SessionRaced: the whole receive is retried). Inside a transaction."""
        if not self.store.replace_session(read, s.tag, peer_identity, peer_inst, s.to_bytes(), now):
            raise _SessionRaced

    def _receive(self, frame: bytes, cursor: tuple[str, int] | None) -> Received | None:
        now = self.clock_ms()
        kind, tag = sess.parse_frame(frame)
        if kind == KIND_SESSION or (
            kind == KIND_HANDSHAKE
            and tag is not None
            and self.store.session_by_tag(tag) is not None
        ):
            row = self.store.session_by_tag(tag) if tag is not None else None
            if row is None:
                raise ProtocolError("message for an unknown session")
            peer_identity, peer_inst, state = row
            read: bytes | None = state
            s = sess.Session.from_bytes(state)
            plaintext = s.decrypt(frame)
            s2 = s
            peer_ik = s2.peer_ik_x25519
        elif kind == KIND_HANDSHAKE:
            read = None
            s2, info, plaintext = sess.Session.respond(self.own.keys, self._prekey, self._pq, frame)
            if len(info.sender_info) != 33 or info.sender_info[0] != SENDER_INFO_VERSION:
                raise MalformedMessage("bad sender info in handshake")
            peer_identity = info.sender_info[1:]
            peer_inst = info.installation_id
            peer_ik = info.ik_x25519
        else:
            raise MalformedMessage(f"frame kind {kind} is not for an inbox")
        # The sender must be registered and active on chain for the identity it claims.
        self.directory.check_installation(peer_identity, peer_inst, peer_ik)
        payload = Payload.decode(plaintext)
        if payload.content_type == ContentType.GROUP_CONTROL:
            if self.control_handler is None:
                raise ProtocolError("group control message, but groups are not enabled")
            with self.store.transaction():
                self._save_received(s2, read, peer_identity, peer_inst, now)
                if cursor is not None:
                    self.store.set_cursor(*cursor)
                events, frames = self.control_handler(peer_identity, peer_inst, payload.body)
            self.side_events += events
            self.side_frames += frames
            return None
        if self.content_handler is not None:
            with self.store.transaction():
                handled = self.content_handler(peer_identity, peer_inst, payload, None)
                if handled is not None:
                    self._save_received(s2, read, peer_identity, peer_inst, now)
                    if cursor is not None:
                        self.store.set_cursor(*cursor)
            if handled is not None:
                return handled.event  # type: ignore[no-any-return]
        if peer_identity == self.identity_id:
            if payload.sync_peer is None:
                raise ProtocolError("a message from our own device without a conversation")
            conv = direct_conversation_id(self.identity_id, payload.sync_peer)
            conv_peer = payload.sync_peer
            outgoing = True
        else:
            if payload.sync_peer is not None:
                raise ProtocolError("a sync copy from another identity")
            conv = direct_conversation_id(self.identity_id, peer_identity)
            conv_peer = peer_identity
            outgoing = False
        with self.store.transaction():
            self._save_received(s2, read, peer_identity, peer_inst, now)
            if cursor is not None:
                self.store.set_cursor(*cursor)
            mid = payload.message_id(peer_inst, conv)
            self.store.ensure_conversation(conv, "direct", conv_peer, None, now)
            if self.store.has_message(conv, mid):
                return None
            if not outgoing and self.store.new_device_of(conv, peer_identity, peer_inst):
                # like a safety-number change: say so once, in the conversation, and go on
                self.new_device_notice(
                    conv, peer_identity, peer_inst, payload.lamport, payload.sent_at_ms, now
                )
            msg = StoredMessage(
                conversation_id=conv,
                message_id=mid,
                sender_identity=peer_identity,
                sender_installation=peer_inst,
                lamport=payload.lamport,
                sent_at=payload.sent_at_ms,
                received_at=now,
                content_type=int(payload.content_type),
                body=payload.body,
                outgoing=outgoing,
                status="sent" if outgoing else "received",
                seq=self.store.next_seq(),
            )
            self.store.add_message(msg)
        return Received(
            conversation_id=conv,
            message_id=mid,
            sender_identity=peer_identity,
            sender_installation=peer_inst,
            content_type=payload.content_type,
            body=payload.body,
            lamport=payload.lamport,
            sent_at=payload.sent_at_ms,
            received_at=now,
            outgoing=outgoing,
        )


__all__ = [
    "Directory",
    "DuplicateMessage",
    "Engine",
    "OutFrame",
    "OwnIdentity",
    "Peer",
    "Received",
    "SendResult",
    "UntrustedIdentity",
    "direct_conversation_id",
    "frame_msg_id",
    "inbox_subject",
]
