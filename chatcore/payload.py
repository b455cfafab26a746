"""Plaintext payloads: what travels inside an encrypted frame. Pure, compact, versioned.

    byte 0      content type (ContentType)
    byte 1      flags: bit0 SYNC (a copy for the sender's own other devices: the
                conversation's peer identity id follows), bit1 EPHEMERAL (never stored)
    [32 B]      peer identity id, only with SYNC
    8 B         message id (random; unique within a conversation)
    varint      Lamport clock of the conversation
    varint      sent-at, unix milliseconds (sender's clock; for display only)
    1 B         n = causal history length (≤ MAX_HISTORY)
    n × 4 B     short ids (first 4 bytes of message ids) of the newest messages seen
    rest        body, by content type (text: UTF-8)

Reliability fields (message id, Lamport clock, causal history) are in the spirit of the Logos
SDS spec; they are encrypted, so the network sees none of them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from chatcore.errors import MalformedMessage

MAX_HISTORY = 3
MAX_BODY = 64 * 1024
MESSAGE_ID_SIZE = 8
SHORT_ID_SIZE = 4

FLAG_SYNC = 0x01
FLAG_EPHEMERAL = 0x02
_KNOWN_FLAGS = FLAG_SYNC | FLAG_EPHEMERAL


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


def encode_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise MalformedMessage("truncated varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise MalformedMessage("varint too long")


@dataclass(frozen=True, slots=True)
class Payload:
    content_type: ContentType
    message_id: bytes
    lamport: int
    sent_at_ms: int
    body: bytes = field(repr=False)
    history: tuple[bytes, ...] = ()
    sync_peer: bytes | None = None
    ephemeral: bool = False

    def __post_init__(self) -> None:
        if len(self.message_id) != MESSAGE_ID_SIZE:
            raise ValueError(f"message_id must be {MESSAGE_ID_SIZE} bytes")
        if len(self.history) > MAX_HISTORY or any(len(h) != SHORT_ID_SIZE for h in self.history):
            raise ValueError("bad causal history")
        if self.sync_peer is not None and len(self.sync_peer) != 32:
            raise ValueError("sync_peer must be a 32-byte identity id")
        if len(self.body) > MAX_BODY:
            raise ValueError("body too large")

    def encode(self) -> bytes:
        flags = (FLAG_SYNC if self.sync_peer is not None else 0) | (
            FLAG_EPHEMERAL if self.ephemeral else 0
        )
        parts = [bytes((int(self.content_type), flags))]
        if self.sync_peer is not None:
            parts.append(self.sync_peer)
        parts += [
            self.message_id,
            encode_varint(self.lamport),
            encode_varint(self.sent_at_ms),
            bytes((len(self.history),)),
            *self.history,
            self.body,
        ]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Payload:
        if len(data) < 2:
            raise MalformedMessage("payload too short")
        try:
            ctype = ContentType(data[0])
        except ValueError as exc:
            raise MalformedMessage(f"unknown content type {data[0]}") from exc
        flags = data[1]
        if flags & ~_KNOWN_FLAGS:
            raise MalformedMessage("unknown payload flags")
        pos = 2
        peer = None
        if flags & FLAG_SYNC:
            peer = data[pos : pos + 32]
            pos += 32
        mid = data[pos : pos + MESSAGE_ID_SIZE]
        pos += MESSAGE_ID_SIZE
        if len(mid) != MESSAGE_ID_SIZE or (peer is not None and len(peer) != 32):
            raise MalformedMessage("payload truncated")
        lamport, pos = decode_varint(data, pos)
        sent_at, pos = decode_varint(data, pos)
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
            message_id=mid,
            lamport=lamport,
            sent_at_ms=sent_at,
            body=body,
            history=hist,
            sync_peer=peer,
            ephemeral=bool(flags & FLAG_EPHEMERAL),
        )

    def text(self) -> str:
        if self.content_type is not ContentType.TEXT:
            raise MalformedMessage("not a text message")
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessage("text is not valid UTF-8") from exc
