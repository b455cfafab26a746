"""Bodies of the non-text content types, and their rules. Pure: no I/O, no state.

Every body is compact binary (the payload header already carries type, Lamport clock and
sent-at). Message ids are the 8-byte derived ids of :meth:`chatcore.payload.Payload.message_id`.

    REPLY      target id (8) | UTF-8 text
    REACTION   target id (8) | UTF-8 emoji (≤ 32 bytes; empty = take my reaction back)
    EDIT       target id (8) | UTF-8 new text
    DELETE     target id (8)                       (delete for everyone)
    TYPING     state (1): 1 = typing, 0 = stopped   (EPHEMERAL: never stored, never acked)
    RECEIPT    kind (1): 1 = delivered, 2 = read | n × message id (8)   (batched, not acked)
    GROUP_RECEIPT  group id (32) | RECEIPT body     (pairwise: to the messages' author's
                                                     devices, and "read" to our other devices)
    DEVICE_SYNC  op (1) | op fields                 (only between one identity's devices)
        1 CONTACT   identity (32) | state (1) | alias (UTF-8, rest)
        2 CONV      conversation id (16) | flags (1): 1 muted, 2 archived
        3 SETTING   read receipts on (1)
        4 OWNER_KEY the identity's new owner key (32)
        5 HISTORY   zlib(JSON): messages a new device missed between its approval and its
                    first bundle, in the linking handover's format (chatcore.identity)

Decoding raises :class:`~chatcore.errors.MalformedMessage`; rule violations found by the
handler (spoofed edits, receipts for unknown messages, ...) raise
:class:`~chatcore.errors.ContentError`.
"""

from __future__ import annotations

import enum
import json
import unicodedata
import zlib
from dataclasses import dataclass, field
from typing import Any

from chatcore.errors import MalformedMessage
from chatcore.payload import ContentType

MID = 8
MAX_EMOJI_BYTES = 32
MAX_RECEIPT_IDS = 512
MAX_TEXT_BYTES = 16 * 1024


class ReceiptKind(enum.IntEnum):
    DELIVERED = 1
    READ = 2


class ContactState(enum.IntEnum):
    NONE = 0  # removed / never a contact
    CONTACT = 1
    BLOCKED = 2
    REQUEST = 3  # wrote to us first; not answered yet
    DECLINED = 4


class SyncOp(enum.IntEnum):
    CONTACT = 1
    CONV = 2
    SETTING = 3
    OWNER_KEY = 4
    HISTORY = 5


#: status of an outgoing message, in order; a status never goes back
STATUS_RANK = {"sending": 0, "sent": 1, "delivered": 2, "read": 3}

#: content types that are chat messages (stored as messages, acknowledged, retransmitted)
MESSAGE_TYPES = frozenset({ContentType.TEXT, ContentType.REPLY})
#: content types that change an earlier message (stored apart, acknowledged, retransmitted)
OP_TYPES = frozenset({ContentType.EDIT, ContentType.DELETE, ContentType.REACTION})
#: content types whose body starts with the id of the message they are about
TARGETED_TYPES = OP_TYPES | {ContentType.REPLY}
#: content types that are signals (never stored as messages, never acknowledged)
SIGNAL_TYPES = frozenset(
    {ContentType.TYPING, ContentType.RECEIPT, ContentType.GROUP_RECEIPT, ContentType.DEVICE_SYNC}
)
GROUP_ID = 32


def _utf8(b: bytes, what: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"{what} is not valid UTF-8") from exc


def _target(body: bytes, what: str) -> tuple[bytes, bytes]:
    if len(body) < MID:
        raise MalformedMessage(f"{what} without a target message id")
    return body[:MID], body[MID:]


# --- reply, edit, reaction, delete -------------------------------------------------------------
def encode_reply(target: bytes, text: str) -> bytes:
    return _check_mid(target) + check_text(text)


def encode_edit(target: bytes, text: str) -> bytes:
    return _check_mid(target) + check_text(text)


#: what shows as no character, or moves the text around it: line and paragraph separators and
#: the bidi embeddings, overrides and isolates
_INVISIBLE = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ZWJ, _KEYCAP = "\u200d", "\u20e3"


def _controlling(ch: str) -> bool:
    """A control character, a lone surrogate, or one of ``_INVISIBLE``."""
    return ch in _INVISIBLE or unicodedata.category(ch) in ("Cc", "Cs")


def _emoji_part(ch: str, keycap: bool) -> bool:
    """Whether ``ch`` may stand in an emoji: a symbol (emoji, skin tones, flags' regional
    indicators), a combining mark (variation selectors, the keycap), the zero-width joiner,
    a tag character (subdivision flags), or with the keycap a digit, # or *."""
    cat = unicodedata.category(ch)
    return (
        (cat in ("So", "Sk", "Mn", "Me") and ord(ch) >= 0x80)  # (not ^ or `: ASCII is text)
        or ch == _ZWJ
        or 0xE0020 <= ord(ch) <= 0xE007F
        or (keycap and ch in "0123456789#*")
    )


def check_emoji(emoji: str) -> str:
    """``emoji`` if we may react with it: an emoji (symbols, with their modifiers and
    joiners; a keycap such as 1️⃣), at most ``MAX_EMOJI_BYTES`` of UTF-8, or "" (the
    reaction taken back). ValueError for text, spaces or control characters (TypeError for
    no string). Reactions others send are checked less (``decode_targeted``)."""
    check_str("an emoji", emoji)
    if len(emoji.encode("utf-8")) > MAX_EMOJI_BYTES:
        raise ValueError(f"a reaction is one emoji (at most {MAX_EMOJI_BYTES} bytes)")
    keycap = _KEYCAP in emoji
    if emoji and (
        unicodedata.category(emoji[0]) in ("Mn", "Me")
        or emoji[0] == _ZWJ
        or not all(_emoji_part(c, keycap) for c in emoji)
    ):
        raise ValueError(f"a reaction is one emoji, not text: {emoji!r}")
    return emoji


def check_alias(alias: str) -> str:
    """``alias`` if a contact may be given it: text of at most 64 bytes of UTF-8 with no
    control characters, not blank ("" drops the alias). ValueError (TypeError for no
    string) otherwise."""
    check_str("an alias", alias)
    if alias and not alias.strip():
        raise ValueError("an alias cannot be blank (give '' to drop it)")
    for ch in alias:
        if _controlling(ch):
            raise ValueError(f"an alias cannot hold control characters (U+{ord(ch):04X})")
    if len(alias.encode("utf-8")) > 64:
        raise ValueError("alias too long (64 bytes at most)")
    return alias


def encode_reaction(target: bytes, emoji: str) -> bytes:
    return _check_mid(target) + check_emoji(emoji).encode("utf-8")


def encode_delete(target: bytes) -> bytes:
    return _check_mid(target)


@dataclass(frozen=True, slots=True)
class Targeted:
    """A reply, edit, reaction or delete: the message it is about, and its text/emoji."""

    target: bytes
    text: str


def decode_targeted(ctype: ContentType, body: bytes) -> Targeted:
    target, rest = _target(body, ctype.name.lower())
    if ctype == ContentType.DELETE:
        if rest:
            raise MalformedMessage("trailing bytes in a delete")
        return Targeted(target, "")
    text = _utf8(rest, ctype.name.lower())
    if ctype == ContentType.REACTION:
        if len(rest) > MAX_EMOJI_BYTES or any(c.isspace() or _controlling(c) for c in text):
            raise MalformedMessage("a reaction is one short emoji")
    elif ctype in (ContentType.EDIT, ContentType.REPLY):
        if not text.strip():
            raise MalformedMessage(f"empty {ctype.name.lower()}")
        if len(rest) > MAX_TEXT_BYTES:
            raise MalformedMessage(f"{ctype.name.lower()} longer than {MAX_TEXT_BYTES} bytes")
    else:
        raise MalformedMessage(f"{ctype.name} has no target")
    return Targeted(target, text)


def display_text(ctype: int, body: bytes) -> str:
    """What a stored message says (text or reply), for display and search."""
    if ctype == ContentType.REPLY and len(body) >= MID:
        body = body[MID:]
    return body.decode("utf-8", errors="replace")


def reply_target(ctype: int, body: bytes) -> bytes | None:
    return body[:MID] if ctype == ContentType.REPLY and len(body) >= MID else None


# --- typing -------------------------------------------------------------------------------------
def encode_typing(active: bool = True) -> bytes:
    return b"\x01" if active else b"\x00"


def decode_typing(body: bytes) -> bool:
    if body not in (b"\x00", b"\x01"):
        raise MalformedMessage("bad typing indicator")
    return body == b"\x01"


# --- receipts -----------------------------------------------------------------------------------
def encode_receipt(kind: ReceiptKind, ids: list[bytes] | tuple[bytes, ...]) -> bytes:
    if not ids or len(ids) > MAX_RECEIPT_IDS:
        raise ValueError(f"a receipt names 1..{MAX_RECEIPT_IDS} messages")
    return bytes((int(kind),)) + b"".join(_check_mid(i) for i in ids)


def decode_receipt(body: bytes) -> tuple[ReceiptKind, tuple[bytes, ...]]:
    if len(body) < 1 + MID or (len(body) - 1) % MID:
        raise MalformedMessage("bad receipt length")
    try:
        kind = ReceiptKind(body[0])
    except ValueError as exc:
        raise MalformedMessage("unknown receipt kind") from exc
    n = (len(body) - 1) // MID
    if n > MAX_RECEIPT_IDS:
        raise MalformedMessage("too many ids in a receipt")
    ids = tuple(body[1 + i * MID : 1 + (i + 1) * MID] for i in range(n))
    return kind, tuple(dict.fromkeys(ids))


def encode_group_receipt(
    group_id: bytes, kind: ReceiptKind, ids: list[bytes] | tuple[bytes, ...]
) -> bytes:
    if len(group_id) != GROUP_ID:
        raise ValueError("group ids are 32 bytes")
    return group_id + encode_receipt(kind, ids)


def decode_group_receipt(body: bytes) -> tuple[bytes, ReceiptKind, tuple[bytes, ...]]:
    if len(body) < GROUP_ID:
        raise MalformedMessage("bad group receipt length")
    kind, ids = decode_receipt(body[GROUP_ID:])
    return body[:GROUP_ID], kind, ids


# --- device sync --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SyncContact:
    identity: bytes
    state: ContactState
    alias: str | None


@dataclass(frozen=True, slots=True)
class SyncConv:
    conversation_id: bytes
    muted: bool
    archived: bool


@dataclass(frozen=True, slots=True)
class SyncSetting:
    read_receipts: bool


@dataclass(frozen=True, slots=True)
class SyncOwnerKey:
    """The identity's new owner key after ``keys rotate --owner`` (so every device of the
    identity can go on publishing its own prekeys). Travels only inside the E2E-encrypted
    sessions between one identity's own installations, like the linking handover."""

    private_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SyncHistory:
    """Messages (with what edits, deletes and reactions made of them), their conversations
    and contacts, as the linking handover carries them: what the approving device stored
    between a new device's approval and that device's first bundle, which no peer sent to
    the new device (``chatcore.identity.forward_linked_history``). A JSON object."""

    content: dict[str, Any] = field(repr=False)


SyncItem = SyncContact | SyncConv | SyncSetting | SyncOwnerKey | SyncHistory

#: a HISTORY body decompresses to at most this much JSON
MAX_SYNC_HISTORY_JSON = 4 * 1024 * 1024


def encode_sync(item: SyncItem) -> bytes:
    if isinstance(item, SyncContact):
        if len(item.identity) != 32:
            raise ValueError("identity ids are 32 bytes")
        alias = (item.alias or "").encode("utf-8")
        if len(alias) > 64:
            raise ValueError("alias too long (64 bytes at most)")
        return bytes((SyncOp.CONTACT,)) + item.identity + bytes((int(item.state),)) + alias
    if isinstance(item, SyncConv):
        if len(item.conversation_id) not in (16, 32):
            raise ValueError("conversation ids are 16 bytes (1:1) or 32 (a group)")
        flags = (1 if item.muted else 0) | (2 if item.archived else 0)
        return bytes((SyncOp.CONV,)) + item.conversation_id + bytes((flags,))
    if isinstance(item, SyncOwnerKey):
        if len(item.private_key) != 32:
            raise ValueError("owner keys are 32 bytes")
        return bytes((SyncOp.OWNER_KEY,)) + item.private_key
    if isinstance(item, SyncHistory):
        body = json.dumps(item.content, separators=(",", ":"), sort_keys=True).encode()
        return bytes((SyncOp.HISTORY,)) + zlib.compress(body, 6)
    return bytes((SyncOp.SETTING, 1 if item.read_receipts else 0))


def decode_sync(body: bytes) -> SyncItem:
    if not body:
        raise MalformedMessage("empty device sync")
    op = body[0]
    if op == SyncOp.CONTACT:
        if len(body) < 34 or len(body) > 34 + 64:
            raise MalformedMessage("bad contact sync")
        try:
            state = ContactState(body[33])
        except ValueError as exc:
            raise MalformedMessage("unknown contact state") from exc
        alias = _utf8(body[34:], "alias") or None
        return SyncContact(body[1:33], state, alias)
    if op == SyncOp.CONV:  # op | conversation id (16: 1:1, 32: a group) | flags
        if len(body) not in (18, 34) or body[-1] & ~3:
            raise MalformedMessage("bad conversation sync")
        return SyncConv(body[1:-1], bool(body[-1] & 1), bool(body[-1] & 2))
    if op == SyncOp.SETTING:
        if len(body) != 2 or body[1] > 1:
            raise MalformedMessage("bad setting sync")
        return SyncSetting(body[1] == 1)
    if op == SyncOp.OWNER_KEY:
        if len(body) != 33:
            raise MalformedMessage("bad owner key sync")
        return SyncOwnerKey(body[1:])
    if op == SyncOp.HISTORY:
        d = zlib.decompressobj()
        try:
            raw = d.decompress(body[1:], MAX_SYNC_HISTORY_JSON)
            content = json.loads(raw)
        except (zlib.error, ValueError, RecursionError) as exc:
            raise MalformedMessage("bad history sync") from exc
        if d.unconsumed_tail or not d.eof or not isinstance(content, dict):
            raise MalformedMessage("bad history sync")
        return SyncHistory(content)
    raise MalformedMessage(f"unknown device sync op {op}")


# --- helpers ------------------------------------------------------------------------------------
def _check_mid(mid: bytes) -> bytes:
    if not isinstance(mid, bytes) or len(mid) != MID:
        raise ValueError("message ids are 8 bytes")
    return mid


def utf8(what: str, value: object) -> bytes:
    """The UTF-8 of an argument that must be a string. TypeError if it is none (an app's bug,
    reported as such rather than as an AttributeError from inside); ValueError naming the
    argument if it has no UTF-8 (a lone surrogate: what Python makes of a byte that is not
    UTF-8 in a command-line argument or an environment variable), rather than Python's
    UnicodeEncodeError from wherever the text is first encoded."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        ch = ord(value[exc.start])
        raise ValueError(
            f"{what} is not valid text: a lone surrogate (U+{ch:04X}) at character "
            f"{exc.start} has no UTF-8"
        ) from None


def check_str(what: str, value: object) -> None:
    """TypeError for an argument that must be a string and is not, ValueError for one that
    is not valid text (see :func:`utf8`)."""
    utf8(what, value)


def check_text(text: str) -> bytes:
    """The UTF-8 of a message's text; ValueError if it is blank, over the limit (the same
    for messages, replies and edits) or not valid text; TypeError if it is no string."""
    b = utf8("a message's text", text)
    if not text.strip():
        raise ValueError("empty message")
    if len(b) > MAX_TEXT_BYTES:
        raise ValueError(f"message too long: {len(b)} bytes, at most {MAX_TEXT_BYTES}")
    return b
