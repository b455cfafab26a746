"""Plaintext payloads: what travels inside an encrypted frame. Pure, compact, versioned.

    byte 0      content type (low 5 bits, ContentType) | flags (high 3 bits):
                0x20 SYNC (a copy for the sender's own other devices: the conversation's
                peer identity id follows), 0x40 EPHEMERAL (never stored), 0x80 READ (the
                sender has read the messages its causal history names)
    [32 B]      peer identity id, only with SYNC
    varint      Lamport clock of the conversation
    varint      sent-at: seconds since 2025-01-01 UTC (sender's clock; display only)
    1 B         n = causal history length (≤ MAX_HISTORY)
    n × 4 B     short ids (first 4 bytes of message ids): the newest messages of the
                conversation (RECENT_HISTORY) and then received messages not yet
                acknowledged (piggybacked acks, SDS-style: naming a message acknowledges it)
    rest        body, by content type (text: UTF-8)

The message id is not sent: both ends derive it (:meth:`Payload.message_id`) from the
sending installation, the conversation, the Lamport clock, the content type and the body.
A sender's Lamport clock strictly increases, so two messages of one installation never
share an id, a retransmission (or a re-encryption) of one message always does, and the
sender's own devices compute the same id from its sync copy. That saves 8 bytes a message
against a random id (the wire budget is 80 B of overhead for a 200-byte message).

Reliability fields (derived message id, Lamport clock, causal history) are in the spirit of
the Logos SDS spec; they are encrypted, so the network sees none of them.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

from chatcore.codec import read_varint, varint
from chatcore.errors import MalformedMessage

#: short ids a payload may carry (decoders refuse more)
MAX_HISTORY = 8
#: the newest messages of the conversation every message names (its causal history proper)
RECENT_HISTORY = 2
MAX_BODY = 64 * 1024
#: Bounds on what a peer may claim, far beyond any real value and below SQLite's 2**63 (a
#: value beyond them made the store raise, and one at 2**63 - 1 stopped every later send).
#: A clock may also move at most MAX_LAMPORT_STEP past its conversation's (chatcore.store),
#: so pushing a conversation to the bound takes 2**30 messages, not one.
MAX_LAMPORT = 2**62
MAX_LAMPORT_STEP = 2**32
MAX_SENT_AT_MS = 2**47  # the year 6429
MESSAGE_ID_SIZE = 8
SHORT_ID_SIZE = 4

FLAG_SYNC = 0x20
FLAG_EPHEMERAL = 0x40
FLAG_READ = 0x80
_TYPE_MASK = 0x1F
_KNOWN_FLAGS = FLAG_SYNC | FLAG_EPHEMERAL | FLAG_READ
#: sent-at travels as seconds since this instant (2025-01-01T00:00:00Z), in milliseconds
SENT_AT_EPOCH_MS = 1_735_689_600_000
MESSAGE_ID_DOMAIN = b"logos-chat/message-id/v1"


class ContentType(enum.IntEnum):
    TEXT = 1
    REPLY = 2
    REACTION = 3
    EDIT = 4
    DELETE = 5
    TYPING = 6
    RECEIPT = 7
    GROUP_CONTROL = 8
    CONTACT_REQUEST = 9
    DEVICE_SYNC = 10
    GROUP_RECEIPT = 11  # a group member's receipt, pairwise to the author (and our devices)


#: unsigned LEB128 (``chatcore.codec.varint``)
encode_varint = varint


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A varint of up to 64 bits (10 bytes); non-minimal encodings are accepted here."""
    return read_varint(data, pos, limit=10, minimal=False)


@dataclass(frozen=True, slots=True)
class Payload:
    content_type: ContentType
    lamport: int
    sent_at_ms: int
    body: bytes = field(repr=False)
    history: tuple[bytes, ...] = ()
    sync_peer: bytes | None = None
    ephemeral: bool = False
    read: bool = False  # the sender has read the messages ``history`` names

    def __post_init__(self) -> None:
        if not isinstance(self.lamport, int) or not 0 <= self.lamport <= MAX_LAMPORT:
            raise ValueError("lamport must be an int in [0, MAX_LAMPORT]")
        if not isinstance(self.sent_at_ms, int) or not 0 <= self.sent_at_ms <= MAX_SENT_AT_MS:
            raise ValueError("sent_at_ms must be an int in [0, MAX_SENT_AT_MS]")
        if len(self.history) > MAX_HISTORY or any(len(h) != SHORT_ID_SIZE for h in self.history):
            raise ValueError("bad causal history")
        if self.sync_peer is not None and len(self.sync_peer) != 32:
            raise ValueError("sync_peer must be a 32-byte identity id")
        if len(self.body) > MAX_BODY:
            raise ValueError("body too large")

    def message_id(self, sender_installation: bytes, conversation_id: bytes) -> bytes:
        """The 8-byte message id both ends derive (see the module docstring)."""
        return hashlib.sha256(
            MESSAGE_ID_DOMAIN
            + sender_installation
            + bytes((len(conversation_id),))
            + conversation_id
            + encode_varint(self.lamport)
            + bytes((int(self.content_type),))
            + self.body
        ).digest()[:MESSAGE_ID_SIZE]

    def encode(self) -> bytes:
        flags = (
            (FLAG_SYNC if self.sync_peer is not None else 0)
            | (FLAG_EPHEMERAL if self.ephemeral else 0)
            | (FLAG_READ if self.read else 0)
        )
        secs = max(0, self.sent_at_ms - SENT_AT_EPOCH_MS) // 1000
        parts = [bytes((int(self.content_type) | flags,))]
        if self.sync_peer is not None:
            parts.append(self.sync_peer)
        parts += [
            encode_varint(self.lamport),
            encode_varint(secs),
            bytes((len(self.history),)),
            *self.history,
            self.body,
        ]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Payload:
        if len(data) < 1:
            raise MalformedMessage("payload too short")
        first = data[0]
        try:
            ctype = ContentType(first & _TYPE_MASK)
        except ValueError as exc:
            raise MalformedMessage(f"unknown content type {first & _TYPE_MASK}") from exc
        flags = first & ~_TYPE_MASK
        if flags & ~_KNOWN_FLAGS:
            raise MalformedMessage("unknown payload flags")
        pos = 1
        peer = None
        if flags & FLAG_SYNC:
            peer = data[pos : pos + 32]
            pos += 32
            if len(peer) != 32:
                raise MalformedMessage("payload truncated")
        lamport, pos = decode_varint(data, pos)
        secs, pos = decode_varint(data, pos)
        if lamport > MAX_LAMPORT or SENT_AT_EPOCH_MS + secs * 1000 > MAX_SENT_AT_MS:
            raise MalformedMessage("lamport clock or time out of range")
        if pos >= len(data):
            raise MalformedMessage("payload truncated")
        n = data[pos]
        pos += 1
        if n > MAX_HISTORY or pos + n * SHORT_ID_SIZE > len(data):
            raise MalformedMessage("bad causal history")
        hist = tuple(
            data[pos + i * SHORT_ID_SIZE : pos + (i + 1) * SHORT_ID_SIZE] for i in range(n)
        )
        pos += n * SHORT_ID_SIZE
        body = data[pos:]
        if len(body) > MAX_BODY:
            raise MalformedMessage("body too large")
        return cls(
            content_type=ctype,
            lamport=lamport,
            sent_at_ms=SENT_AT_EPOCH_MS + secs * 1000,
            body=body,
            history=hist,
            sync_peer=peer,
            ephemeral=bool(flags & FLAG_EPHEMERAL),
            read=bool(flags & FLAG_READ),
        )

    def text(self) -> str:
        if self.content_type is not ContentType.TEXT:
            raise MalformedMessage("not a text message")
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessage("text is not valid UTF-8") from exc
