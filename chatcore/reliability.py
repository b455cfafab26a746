"""End-to-end reliability bookkeeping, SDS-style. Pure: no I/O, no clock, no randomness.

The delivery store acknowledges that it *stored* a frame (the engine's outbox handles that);
this module tracks what the *recipients* confirmed, in the spirit of the Logos SDS spec:

* every message has an id; for each sent message we keep the recipient installations that have
  not acknowledged it yet (receipts are the acks);
* unacknowledged messages are due for retransmission on an exponential backoff schedule
  (:class:`RetryPolicy`), daily once a message is two days old; a 1:1 retransmission is
  re-encrypted (the receiver's store drops a copy it already has, and it acks it again), a
  group retransmission re-publishes the first frame;
* every arriving message is checked against a bounded window of ids already seen (dedup) and its
  causal history (the short ids :class:`chatcore.payload.Payload` carries) against what we have:
  references to messages we never saw are *gaps*, kept until the message arrives (or is repaired).

One :class:`Reliability` per installation holds a :class:`ConversationLog` per conversation.
State serialises with a version byte (:meth:`Reliability.to_bytes`) so it can be written in the
same store transaction as the message that changed it. Every method takes ``now_ms``
explicitly, so the same code runs under the wall clock and in the simulator's virtual time.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = [
    "Arrival",
    "ConversationLog",
    "Reliability",
    "Retransmit",
    "RetryPolicy",
]

STATE_VERSION = 1
SHORT_ID_SIZE = 4
#: Message ids remembered per conversation for dedup (the store is the durable dedup).
DEDUP_WINDOW = 4096
#: Unresolved gaps remembered per conversation (oldest dropped beyond this).
MAX_GAPS = 256
#: Sent messages tracked per conversation until acknowledged; beyond this the oldest stops
#: being retransmitted (a recipient that never acknowledges — a lost phone never revoked, a
#: peer withholding receipts — must not grow the state and every retransmission round for
#: ever).
MAX_PENDING = 1000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: ``first_ms * factor**attempt``, capped at ``max_ms``."""

    first_ms: int = 30_000
    factor: int = 2
    max_ms: int = 6 * 3_600_000
    #: a message not acknowledged this long after it was sent is no longer retransmitted:
    #: the delivery network keeps each copy 30 days, so a device gone up to about twice
    #: this long still finds the last one
    give_up_ms: int = 30 * 86_400_000
    #: a message still unacknowledged this long after it was sent is retransmitted only every
    #: ``slow_ms`` (or ``max_ms`` if longer): its recipient has been silent for days. Every
    #: retransmission is re-encrypted and takes a number in the sender's ratchet chain, so
    #: this keeps the chain growth toward a peer away for weeks to ~46 per message (the
    #: receiver fast-forwards at most ``chatcore.consts.MAX_FORWARD`` = 50,000: enough for
    #: ``MAX_PENDING`` messages) and each copy still reaches the last day before give-up
    slow_after_ms: int = 2 * 86_400_000
    slow_ms: int = 86_400_000

    def __post_init__(self) -> None:
        if (
            self.first_ms <= 0
            or self.factor < 1
            or self.max_ms < self.first_ms
            or self.give_up_ms < self.max_ms
            or self.slow_after_ms <= 0
            or self.slow_ms <= 0
        ):
            raise ValueError("bad retry policy")

    def delay(self, attempt: int, age_ms: int = 0) -> int:
        """Wait before retransmission number ``attempt + 1`` (attempt 0 = after the first send)
        of a message sent ``age_ms`` ago."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        if age_ms >= self.slow_after_ms:
            return max(self.slow_ms, self.max_ms)
        d = self.first_ms
        for _ in range(attempt):
            d *= self.factor
            if d >= self.max_ms:
                return self.max_ms
        return min(d, self.max_ms)


@dataclass(frozen=True, slots=True)
class Retransmit:
    """A sent message that is due again, for these recipient installations."""

    conversation_id: bytes
    message_id: bytes
    recipients: tuple[bytes, ...]
    attempt: int


@dataclass(frozen=True, slots=True)
class Arrival:
    """What :meth:`ConversationLog.received` learned from one arriving message."""

    duplicate: bool
    #: short ids in the message's causal history that we have not seen (new gaps)
    missing: tuple[bytes, ...] = ()
    #: gaps this message closed (its own short id was awaited)
    filled: bool = False


@dataclass(slots=True)
class _Pending:
    recipients: set[bytes]
    sent_at: int
    attempts: int
    next_at: int


@dataclass(slots=True)
class ConversationLog:
    """Reliability state of one conversation as seen by one installation."""

    conversation_id: bytes
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    outgoing: dict[bytes, _Pending] = field(default_factory=dict)
    seen: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    gaps: dict[bytes, int] = field(default_factory=dict)  # short id -> first noticed (ms)

    # --- sending --------------------------------------------------------------------------------
    def sent(
        self, message_id: bytes, recipients: tuple[bytes, ...] | list[bytes], now_ms: int
    ) -> None:
        """Track a message just handed to the outbox, until every recipient acknowledged it."""
        _check_mid(message_id)
        self._remember(message_id)
        if recipients:
            self.outgoing[message_id] = _Pending(
                set(recipients), now_ms, 0, now_ms + self.policy.delay(0)
            )
            while len(self.outgoing) > MAX_PENDING:  # the oldest first (insertion order)
                del self.outgoing[next(iter(self.outgoing))]

    def acked(self, message_id: bytes, recipient: bytes) -> bool:
        """A receipt from ``recipient``. True when that completed the message (all acked)."""
        p = self.outgoing.get(message_id)
        if p is None or recipient not in p.recipients:
            return False
        p.recipients.discard(recipient)
        if not p.recipients:
            del self.outgoing[message_id]
            return True
        return False

    def unacked(self, message_id: bytes) -> frozenset[bytes]:
        p = self.outgoing.get(message_id)
        return frozenset() if p is None else frozenset(p.recipients)

    def due(self, now_ms: int) -> list[Retransmit]:
        """Messages to retransmit now; each is rescheduled with the next backoff step. One
        sent ``give_up_ms`` ago or more is no longer tracked (it stays unacknowledged)."""
        out: list[Retransmit] = []
        for mid, p in list(self.outgoing.items()):
            if now_ms - p.sent_at >= self.policy.give_up_ms:
                del self.outgoing[mid]
                continue
            if p.next_at <= now_ms:
                p.attempts += 1
                p.next_at = now_ms + self.policy.delay(p.attempts, now_ms - p.sent_at)
                out.append(
                    Retransmit(self.conversation_id, mid, tuple(sorted(p.recipients)), p.attempts)
                )
        return out

    def next_due(self) -> int | None:
        return min((p.next_at for p in self.outgoing.values()), default=None)

    def wake_at(self) -> int | None:
        """When :meth:`due` next changes something (ms): a message is due again, or one is
        given up on (``give_up_ms`` after it was sent); None with nothing pending."""
        give_up = self.policy.give_up_ms
        times = (min(p.next_at, p.sent_at + give_up) for p in self.outgoing.values())
        return min(times, default=None)

    # --- receiving ------------------------------------------------------------------------------
    def received(self, message_id: bytes, history: tuple[bytes, ...], now_ms: int) -> Arrival:
        """An arriving message (also a sync copy of our own). Dedup, then gap bookkeeping."""
        _check_mid(message_id)
        if message_id in self.seen:
            return Arrival(duplicate=True)
        self._remember(message_id)
        filled = self.gaps.pop(message_id[:SHORT_ID_SIZE], None) is not None
        known = {m[:SHORT_ID_SIZE] for m in self.seen}
        missing = []
        for h in history:
            if len(h) != SHORT_ID_SIZE:
                raise ValueError("history entries are short ids")
            if h not in known and h not in self.gaps:
                self.gaps[h] = now_ms
                missing.append(h)
        while len(self.gaps) > MAX_GAPS:
            del self.gaps[next(iter(self.gaps))]
        return Arrival(False, tuple(missing), filled)

    def open_gaps(self, now_ms: int, older_than_ms: int = 0) -> tuple[bytes, ...]:
        """Short ids referenced but not received for at least ``older_than_ms`` (to repair)."""
        return tuple(h for h, t in self.gaps.items() if now_ms - t >= older_than_ms)

    def _remember(self, message_id: bytes) -> None:
        self.seen[message_id] = None
        self.seen.move_to_end(message_id)
        while len(self.seen) > DEDUP_WINDOW:
            self.seen.popitem(last=False)


class Reliability:
    """Per-installation reliability state: one :class:`ConversationLog` per conversation."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self.conversations: dict[bytes, ConversationLog] = {}

    def log(self, conversation_id: bytes) -> ConversationLog:
        c = self.conversations.get(conversation_id)
        if c is None:
            c = ConversationLog(conversation_id, self.policy)
            self.conversations[conversation_id] = c
        return c

    def acked(self, conversation_id: bytes, message_id: bytes, recipient: bytes) -> bool:
        c = self.conversations.get(conversation_id)
        return False if c is None else c.acked(message_id, recipient)

    def due(self, now_ms: int) -> list[Retransmit]:
        out: list[Retransmit] = []
        for cid in sorted(self.conversations):
            out += self.conversations[cid].due(now_ms)
        return out

    def next_due(self) -> int | None:
        return min(
            (t for c in self.conversations.values() if (t := c.next_due()) is not None),
            default=None,
        )

    def drop_recipient(self, installation_id: bytes) -> int:
        """An installation was revoked: stop waiting for its acks (nobody is left to send
        them). Returns how many pending messages waited for it; those it completes are done."""
        n = 0
        for c in self.conversations.values():
            for mid in [m for m, p in c.outgoing.items() if installation_id in p.recipients]:
                n += 1
                c.acked(mid, installation_id)
        return n

    def pending_count(self) -> int:
        return sum(len(c.outgoing) for c in self.conversations.values())

    def has_pending(self) -> bool:
        """Any sent message still waiting for a recipient (cheaper than ``pending_count``)."""
        return any(c.outgoing for c in self.conversations.values())

    def gap_count(self) -> int:
        return sum(len(c.gaps) for c in self.conversations.values())

    # --- persistence --------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """version | n_conv u32 | per conversation: id(16) | outgoing | seen | gaps."""
        out = [struct.pack(">BI", STATE_VERSION, len(self.conversations))]
        for cid in sorted(self.conversations):
            c = self.conversations[cid]
            if len(cid) != 16:
                raise ValueError("conversation ids are 16 bytes")
            out.append(cid + struct.pack(">I", len(c.outgoing)))
            for mid, p in c.outgoing.items():
                out.append(
                    mid + struct.pack(">qIqH", p.sent_at, p.attempts, p.next_at, len(p.recipients))
                )
                out.extend(sorted(p.recipients))
            out.append(struct.pack(">I", len(c.seen)))
            out.extend(c.seen)
            out.append(struct.pack(">I", len(c.gaps)))
            for h, t in c.gaps.items():
                out.append(h + struct.pack(">q", t))
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes, policy: RetryPolicy | None = None) -> Reliability:
        """Inverse of :meth:`to_bytes`; raises ``ValueError`` on anything malformed."""
        r = cls(policy)
        try:
            ver, n = struct.unpack_from(">BI", data, 0)
            if ver != STATE_VERSION:
                raise ValueError(f"unknown reliability state version {ver}")
            pos = 5
            for _ in range(n):
                cid = bytes(data[pos : pos + 16])
                (no,) = struct.unpack_from(">I", data, pos + 16)
                pos += 20
                c = r.log(cid)
                for _ in range(no):
                    mid = bytes(data[pos : pos + 8])
                    sent_at, attempts, next_at, nr = struct.unpack_from(">qIqH", data, pos + 8)
                    pos += 8 + 22
                    recips = {bytes(data[pos + 32 * i : pos + 32 * (i + 1)]) for i in range(nr)}
                    pos += 32 * nr
                    c.outgoing[mid] = _Pending(recips, sent_at, attempts, next_at)
                (ns,) = struct.unpack_from(">I", data, pos)
                pos += 4
                for _ in range(ns):
                    c.seen[bytes(data[pos : pos + 8])] = None
                    pos += 8
                (ng,) = struct.unpack_from(">I", data, pos)
                pos += 4
                for _ in range(ng):
                    h = bytes(data[pos : pos + SHORT_ID_SIZE])
                    (t,) = struct.unpack_from(">q", data, pos + SHORT_ID_SIZE)
                    c.gaps[h] = t
                    pos += SHORT_ID_SIZE + 8
            if pos != len(data):
                raise ValueError("trailing bytes in reliability state")
        except struct.error as exc:
            raise ValueError("truncated reliability state") from exc
        return r


def _check_mid(message_id: bytes) -> None:
    if not isinstance(message_id, bytes) or len(message_id) != 8:
        raise ValueError("message ids are 8 bytes")
