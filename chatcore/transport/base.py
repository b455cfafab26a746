"""The delivery-network interface shared by every transport adapter.

A transport moves opaque bytes between subjects of one append-only store (a JetStream stream in
production, :class:`~chatcore.transport.memory.MemoryNetwork` in tests and the simulator).

Sequence numbers and cursors
----------------------------
Every stored message gets a *stream sequence*: one counter for the whole store, strictly
increasing, never reused. ``Delivery.seq`` is that number. A subscriber remembers, per subject,
the ``seq`` of the last delivery it processed (``Subscription.cursors`` keeps this map up to
date) and passes it back as ``after=`` when it comes back online: everything on that subject with
a larger sequence that is still retained is replayed first, in order, then live messages follow.

``after`` on :meth:`Transport.subscribe` / :meth:`Subscription.add_subjects`:

* ``None``: only messages published from now on (the store's current last sequence is the cursor).
* ``int n``: every subject starts after stream sequence ``n`` (``0`` = everything retained).
* ``Mapping[str, int]``: per-subject cursors; a subject missing from the map starts at ``0``.

Delivery is in stream order (so in publish order per subject), at most once per subscription per
stored message (the adapter filters repeats after reconnects), and at least once across
reconnects as long as the message is retained.

Subjects are opaque strings under ``lc.v1.`` built from hashes (``inbox_subject`` /
``group_subject``) so the network learns nothing about identities.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from chatcore.errors import TransportError

__all__ = [
    "SUBJECT_PREFIX",
    "Cursor",
    "Delivery",
    "Subscription",
    "Transport",
    "TransportError",
    "group_subject",
    "inbox_subject",
    "resolve_cursors",
    "validate_subject",
]

SUBJECT_PREFIX = "lc.v1."
TAG_LEN = 16

# tokens of printable ASCII without wildcards, separators or whitespace
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]+$")

Cursor = Mapping[str, int] | int | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One stored message as read back from the delivery network."""

    subject: str
    data: bytes
    seq: int  # stream sequence (store-wide, strictly increasing)
    timestamp_ms: int  # store time of the message, ms since the Unix epoch (or virtual clock)


def _tag_hex(tag: bytes) -> str:
    if not isinstance(tag, bytes | bytearray | memoryview):
        raise TypeError(f"subject tag must be bytes, not {type(tag).__name__}")
    tag = bytes(tag)
    if len(tag) != TAG_LEN:
        raise ValueError(f"subject tag must be {TAG_LEN} bytes (a hash prefix), got {len(tag)}")
    return tag.hex()


def inbox_subject(tag: bytes) -> str:
    """Subject of a per-installation inbox: ``lc.v1.inbox.<32 hex>``. Pass a hash, never an id."""
    return f"{SUBJECT_PREFIX}inbox.{_tag_hex(tag)}"


def group_subject(tag: bytes) -> str:
    """Subject of a conversation topic: ``lc.v1.group.<32 hex>``. Pass a hash, never an id."""
    return f"{SUBJECT_PREFIX}group.{_tag_hex(tag)}"


def validate_subject(subject: str) -> str:
    """Return ``subject`` if it is a concrete (wildcard-free) subject under ``lc.v1.``."""
    if not isinstance(subject, str):
        raise TypeError(f"subject must be str, not {type(subject).__name__}")
    if not subject.startswith(SUBJECT_PREFIX) or len(subject) > 255:
        raise ValueError(f"subject must start with {SUBJECT_PREFIX!r}: {subject!r}")
    tokens = subject.split(".")
    if not all(_TOKEN_RE.match(t) for t in tokens):
        raise ValueError(f"subject has an empty, wildcard or invalid token: {subject!r}")
    return subject


def resolve_cursors(subjects: Sequence[str], after: Cursor, last_seq: int) -> dict[str, int]:
    """Turn an ``after`` argument into a per-subject cursor map (see module doc)."""
    if isinstance(subjects, str):
        raise TypeError("subjects must be a sequence of subjects, not one str")
    subs = [validate_subject(s) for s in subjects]
    if after is None:
        return {s: last_seq for s in subs}
    if isinstance(after, bool):
        raise TypeError("after must be None, an int or a mapping of subject -> seq")
    if isinstance(after, int):
        if after < 0:
            raise ValueError("after must be >= 0")
        return {s: after for s in subs}
    if isinstance(after, Mapping):
        out: dict[str, int] = {}
        for s in subs:
            v = after.get(s, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"cursor for {s!r} must be an int >= 0, got {v!r}")
            out[s] = v
        return out
    raise TypeError("after must be None, an int or a mapping of subject -> seq")


@runtime_checkable
class Subscription(Protocol):
    """A live, replaying stream of deliveries on a set of subjects."""

    @property
    def subjects(self) -> frozenset[str]: ...

    @property
    def cursors(self) -> dict[str, int]:
        """Per subject, the seq of the last delivery handed out (or the starting cursor)."""
        ...

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def __anext__(self) -> Delivery: ...

    async def add_subjects(self, subjects: Sequence[str], after: Cursor = None) -> None:
        """Also deliver ``subjects`` from now on (replaying after ``after`` first)."""
        ...

    async def close(self) -> None:
        """Stop; iteration ends (``StopAsyncIteration``). Idempotent."""
        ...


@runtime_checkable
class Transport(Protocol):
    """An adapter to the delivery network. All methods raise TransportError on network failure."""

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> int:
        """Store ``data`` on ``subject``; return its stream seq once the store acknowledged.

        ``msg_id`` makes retransmissions idempotent: a second publish with the same id within
        the store's duplicate window is not stored again and returns the original seq. It is
        visible to the network operator, so pass an opaque random or hashed value.
        """
        ...

    async def subscribe(self, subjects: Sequence[str], after: Cursor = None) -> Subscription:
        """Deliver stored messages after ``after`` (see module doc), then live ones."""
        ...

    async def fetch(self, subject: str, after: int = 0, limit: int = 1000) -> list[Delivery]:
        """Up to ``limit`` retained messages on ``subject`` with seq > ``after``, in order."""
        ...

    async def last_seq(self) -> int:
        """The store's current last sequence (0 when empty)."""
        ...

    async def close(self) -> None:
        """Close every subscription and the connection. Idempotent."""
        ...
