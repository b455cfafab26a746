"""Chat features on top of the engine: contacts and requests, blocking, receipts with end-to-end
retransmission, edits, deletes, reactions, replies, typing indicators, conversation flags and
full-text search. Sans-I/O like the engine: time comes from ``engine.clock_ms``, frames go to
the outbox and are returned for the caller to publish.

Receiving: :meth:`Features.handle` is the engine's (and the group layer's) ``content_handler``.
It runs inside the receive transaction after decryption and sender checks, and

* drops anything from a blocked (or, 1:1, declined) identity before storage;
* marks the first message of an unknown identity as a contact request;
* applies edits, deletes and reactions (stored apart in ``content_ops``, never as messages),
  rejecting spoofed ones (not the author), ones for unknown or deleted messages with
  :class:`~chatcore.errors.ContentError`;
* applies receipts (per member, status only ever moves forward: sent → delivered → read) and
  acknowledges the message in :mod:`chatcore.reliability`, so it is not retransmitted again;
* shows typing indicators (ephemeral, never stored, at most one per second per sender device,
  expiring after :data:`TYPING_TTL_MS`);
* applies device-sync items (contacts, blocks, mute/archive, settings, the history a newly
  linked device missed) from our own devices.

Sending: :meth:`send_message` / :meth:`send_group_message` wrap the engine's send and track
the message for acknowledgements; :meth:`flush` batches queued receipts into one RECEIPT
payload per conversation and kind, and re-encrypts every message that is due for
retransmission (``Reliability.due``) for the recipients that have not acknowledged it.

Acknowledgements cost as few bytes as we can make them (SDS-style):

* a message names the conversation's newest messages in its causal history, and naming a
  message acknowledges it: a reply is its author's receipt, no RECEIPT frame needed;
* receipts a user owes are first offered to the next message they send in that conversation
  (piggybacked in its causal history, up to ``MAX_HISTORY`` ids; the READ flag says they were
  read); sending in a conversation marks it read, as in every chat app;
* a long-running client calls ``flush(due_only=True)``: a receipt waits up to
  :data:`DIRECT_ACK_DELAY_MS` (1:1) / :data:`GROUP_ACK_DELAY_MS` (groups) for such a message,
  then goes out batched with every other receipt of that conversation;
* a read receipt that will reach the peer replaces the delivered receipt for the same message.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from chatcore import content as ct_
from chatcore.content import ContactState, ReceiptKind
from chatcore.engine import (
    Engine,
    OutFrame,
    Peer,
    Received,
    SendResult,
    causal_history,
    direct_conversation_id,
    inbox_subject,
)
from chatcore.errors import ChatCoreError, ContentError, StoreError, UnknownContact
from chatcore.keys import PeerKeys
from chatcore.payload import RECENT_HISTORY, ContentType, Payload
from chatcore.reliability import ConversationLog, Reliability, RetryPolicy
from chatcore.store import RESTORED_AT_META, UNREAD_WHERE, Store, StoredMessage, prefix_range

if TYPE_CHECKING:
    from chatcore.groupchat import GroupChat

log = logging.getLogger("chatcore.features")

TYPING_TTL_MS = 5_000
TYPING_MIN_INTERVAL_MS = 1_000  # receive side: more often than this from one device = flood
TYPING_SEND_INTERVAL_MS = 3_000  # send side: at most one indicator per conversation per 3 s
TYPING_STALE_MS = 30_000  # an indicator older than this (delivered late) is ignored
#: meta: the reliability state of every conversation in one blob (before: now split, once)
REL_META = "reliability"
#: meta key prefix (+ the conversation's 16-byte reliability key in hex): its log
REL_CONV_META = "rel:"
#: contact states whose messages are not shown (in groups only BLOCKED counts)
_SHUT = (ContactState.BLOCKED, ContactState.DECLINED)
#: no rows (of a backup)
_NO_ROWS: Mapping[Any, Any] = MappingProxyType({})
#: ids of messages dropped while their author was blocked, kept so that a retransmission
#: after an unblock stays dropped (16 bytes of id each)
MAX_DROPPED_IDS = 10_000
#: a message counts as written during a block only if its sent-at second lies inside the
#: block with this much to spare (senders' clocks differ a little from ours)
CLOCK_SLACK_MS = 2_000
#: the content types a peer may send us (CONTACT_REQUEST, 9, is reserved and never sent:
#: a first message is the request)
_ACCEPTED = ct_.MESSAGE_TYPES | ct_.OP_TYPES | ct_.SIGNAL_TYPES
#: unanswered group invitations (groups we have not written in) by identities that are not
#: contacts: at most this many per inviter, and in all; more are ignored until we write in
#: one, leave one, or make the inviter a contact (a contact's invitations are not counted)
MAX_QUIET_INVITES_PER_STRANGER = 8
MAX_QUIET_STRANGER_INVITES = 64
#: a home made by ``recovery restore`` takes every group its members send it, unbounded, for
#: this long (it knows no contacts yet, and the admins welcome its new device only once)
INVITES_UNBOUNDED_AFTER_RESTORE_MS = 7 * 86_400_000
#: how long a receipt may wait for a message of ours to carry it (``flush(due_only=True)``);
#: both far below the sender's first retransmission (``RetryPolicy.first_ms``, 30 s)
DIRECT_ACK_DELAY_MS = 3_000
#: kind of an ``owed_receipts`` row for a sync copy's receipt to our own devices
_OWN = 0
GROUP_ACK_DELAY_MS = 15_000


@dataclass(frozen=True, slots=True)
class Handled:
    """What the content handler did with a payload: ``event`` is returned (None = dropped)."""

    event: Received | None


@dataclass(frozen=True, slots=True)
class Contact:
    identity_id: bytes
    alias: str | None
    state: ContactState
    updated_at: int


@dataclass(frozen=True, slots=True)
class MessageView:
    """Display state of a stored message: edits, delete, reactions, receipts."""

    text: str
    edited: bool
    deleted: bool
    reply_to: bytes | None
    reactions: dict[str, list[bytes]]
    receipts: dict[bytes, str]  # member identity -> delivered | read


#: a typing indicator goes to no one in these states (``Features.send_typing``)
_NO_TYPING_TO = frozenset((ContactState.BLOCKED, ContactState.REQUEST, ContactState.DECLINED))


class _Rel(Reliability):
    """Reliability state as loaded by ``Features._rel``: the logs of the conversations
    ``keys`` (all, if empty), which of them were stored (``loaded``) and their stored bytes."""

    def __init__(self, policy: RetryPolicy, keys: tuple[bytes, ...]) -> None:
        super().__init__(policy)
        self.keys = keys
        self.loaded: set[bytes] = set()
        self.raw: dict[bytes, bytes | None] = {}


class Features:
    def __init__(
        self,
        engine: Engine,
        groups: GroupChat | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.groups = groups
        self.policy = policy or RetryPolicy()
        # Receipts owed are kept in the store (``owed_receipts``: conversation, kind, message
        # id, when queued), so a quit or a crash loses none: a read receipt is sent once.
        # Kind ``_OWN``: sync copies of our other devices' 1:1 messages, acknowledged to our
        # own devices (their sender tracks them too).
        #: (conversation, message id) -> (identity, installation) that wrote it, for what we
        #: acknowledge without storing it (dropped: its receipt must still find its author)
        self._unstored: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
        #: (sender installation, conversation, typing?) -> last accepted ms (flood limit)
        self._typing_seen: dict[tuple[bytes, bytes, bool], int] = {}
        self._typing_sent: dict[bytes, int] = {}  # conversation -> last sent ms
        #: (conversation, identity, installation) -> until when (ms) that device types: a
        #: person shows as typing while any of their devices does
        self.typing: dict[tuple[bytes, bytes, bytes], int] = {}
        if groups is not None:
            groups.refuse_invites_from = lambda identity: self.contact_state(identity) in _SHUT
            groups.invitation_refusal = self._invitation_refusal
            groups.members_left = self._members_left
            engine.sent_handler = self._reached_network

    # ==== small store helpers (tables of schema version 3) ====
    def _x(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self.store._x(sql, args)

    @property
    def me(self) -> bytes:
        return self.engine.identity_id

    def now(self) -> int:
        return self.engine.clock_ms()

    def _rel(self, *keys: bytes) -> _Rel:
        """The reliability state of the conversations with these keys (``_rk``), or of all
        with none named. Each conversation's log is kept under its own meta key: a message
        reads and writes its own conversation's, not those of all (with a few thousand
        messages awaited across the groups, the whole state was ~350 KB parsed and written
        again at every message sent or acknowledged)."""
        self._split_rel()
        rel = _Rel(self.policy, keys)
        if keys:
            rows = [(k, self.store.get_meta(REL_CONV_META + k.hex())) for k in keys]
        else:
            rows = [
                (bytes.fromhex(name[len(REL_CONV_META) :]), raw)
                for name, raw in self.store.meta_with_prefix(REL_CONV_META)
            ]
        for key, raw in rows:
            if raw is None:
                continue
            rel.loaded.add(key)
            rel.raw[key] = raw
            try:
                got = Reliability.from_bytes(raw, self.policy).conversations.get(key)
            except ValueError:
                log.warning("reliability state of a conversation unreadable; starting afresh")
                continue
            if got is not None:
                rel.conversations[key] = got
        return rel

    def _split_rel(self) -> None:
        """The state as one blob (before the logs were kept by conversation): split once."""
        if self.store.get_meta(REL_META) is None:
            return
        with self.store.transaction():
            # read again under the lock: another process on this home (an app and a CLI
            # command after an upgrade) may have split it meanwhile, and written logs since
            # that the blob read before would overwrite (a message sent there no longer
            # retransmitted, its kept group frame swept)
            raw = self.store.get_meta(REL_META)
            if raw is None:
                return
            try:
                old = Reliability.from_bytes(raw, self.policy)
            except ValueError:
                log.warning("reliability state unreadable; starting afresh")
                old = Reliability(self.policy)
            self.store.delete_meta(REL_META)
            # the logs only: not through _save_rel, whose sweep of the kept group frames
            # took the frame of a group message being sent (kept before it is tracked)
            # when that send was the first use of the state after an upgrade
            for key, log_ in old.conversations.items():
                log_.seen.clear()
                if log_.outgoing or log_.gaps:
                    self.store.set_meta(REL_CONV_META + key.hex(), self._log_bytes(key, log_))

    def _log_bytes(self, key: bytes, log_: ConversationLog) -> bytes:
        """One conversation's log as stored under ``REL_CONV_META``."""
        one = Reliability(self.policy)
        one.conversations[key] = log_
        return one.to_bytes()

    def _rk(self, conv: bytes) -> bytes:
        """Reliability logs are keyed by 16-byte ids; group ids are longer: a digest + a map."""
        if len(conv) == 16:
            return conv
        key = hashlib.sha256(b"logos-chat/rel-conv/v1" + conv).digest()[:16]
        if self.store.get_meta("relconv:" + key.hex()) is None:
            self.store.set_meta("relconv:" + key.hex(), conv)
        return key

    # ---- receipts owed (table owed_receipts) ----
    def _owed(self, conv: bytes, kind: int) -> dict[bytes, int]:
        """{message id: when queued (ms)} owed in ``conv``, oldest first."""
        rows = self._x(
            "SELECT message_id, queued_at FROM owed_receipts WHERE conversation_id=? AND kind=? "
            "ORDER BY queued_at, message_id",
            (conv, kind),
        ).fetchall()
        return {bytes(r[0]): int(r[1]) for r in rows}

    def _owed_all(self, own: bool) -> dict[tuple[bytes, int], dict[bytes, int]]:
        """Everything owed, by (conversation, kind): our own devices' (``own``) or peers'."""
        rows = self._x(
            "SELECT conversation_id, kind, message_id, queued_at FROM owed_receipts WHERE "
            f"kind {'=' if own else '!='} ? ORDER BY conversation_id, kind, queued_at, message_id",
            (_OWN,),
        ).fetchall()
        out: dict[tuple[bytes, int], dict[bytes, int]] = {}
        for conv, kind, mid, at in rows:
            out.setdefault((bytes(conv), int(kind)), {})[bytes(mid)] = int(at)
        return out

    def _owe(self, conv: bytes, kind: int, mid: bytes, at: int) -> None:
        self._x("INSERT OR IGNORE INTO owed_receipts VALUES (?,?,?,?)", (conv, kind, mid, at))

    def _unowe(self, conv: bytes, kind: int, mids: Sequence[bytes]) -> None:
        for start in range(0, len(mids), 500):  # one statement per 500 ids, not one per id
            chunk = tuple(mids[start : start + 500])
            self._x(
                "DELETE FROM owed_receipts WHERE conversation_id=? AND kind=? AND message_id "
                f"IN ({','.join('?' * len(chunk))})",
                (conv, kind, *chunk),
            )

    def _is_owed(self, conv: bytes, kind: int, mid: bytes) -> bool:
        return (
            self._x(
                "SELECT 1 FROM owed_receipts WHERE conversation_id=? AND kind=? AND message_id=?",
                (conv, kind, mid),
            ).fetchone()
            is not None
        )

    def _conv_of(self, key: bytes) -> bytes:
        return self.store.get_meta("relconv:" + key.hex()) or key

    def _save_rel(self, rel: _Rel) -> None:
        """Write back the logs of the conversations ``rel`` holds (those it was loaded for)."""
        # Only the outgoing side is used here (the store is the durable dedup), so a log
        # keeps pending messages only: it stays small however long the conversation gets.
        for key in sorted(rel.loaded | rel.conversations.keys() | set(rel.keys)):
            log_ = rel.conversations.get(key)
            if log_ is not None:
                log_.seen.clear()
            if log_ is None or (not log_.outgoing and not log_.gaps):
                rel.conversations.pop(key, None)
                if key in rel.loaded:
                    self.store.delete_meta(REL_CONV_META + key.hex())
                    rel.loaded.discard(key)
                raw = None
            else:
                raw = self._log_bytes(key, log_)
                if rel.raw.get(key) != raw:
                    self.store.set_meta(REL_CONV_META + key.hex(), raw)
                    rel.loaded.add(key)
            rel.raw[key] = raw
            self._set_wake(key, None if log_ is None else log_.wake_at())
            if rel.keys:  # the group frames kept for retransmission, only while awaited
                conv = self._conv_of(key)
                for mid in self.store.group_sent_ids(conv):
                    if log_ is None or mid not in log_.outgoing:
                        self.store.delete_group_sent(conv, mid)
        if not rel.keys:  # the whole state: every kept frame
            for conv, mid in self.store.group_sent_keys():
                held = rel.conversations.get(self._rk(conv))
                if held is None or mid not in held.outgoing:
                    self.store.delete_group_sent(conv, mid)

    def _set_wake(self, key: bytes, at: int | None) -> None:
        """Keep when a conversation's log next has work (store table ``rel_due``, schema 11)
        with the log: the timer reads only the logs due (``_retransmit``)."""
        if at is None:
            self._x("DELETE FROM rel_due WHERE key=?", (key.hex(),))
        else:
            self._x(
                "INSERT INTO rel_due VALUES (?,?) ON CONFLICT(key) DO UPDATE SET "
                "due_at=excluded.due_at WHERE due_at != excluded.due_at",
                (key.hex(), at),
            )

    def _due_keys(self, now: int) -> list[bytes]:
        """The conversations whose log has work at ``now`` (or was written by other code:
        due at 0, read to learn its time)."""
        self._split_rel()
        rows = self._x("SELECT key FROM rel_due WHERE due_at <= ? ORDER BY key", (now,))
        return [bytes.fromhex(r[0]) for r in rows.fetchall()]

    def next_due(self) -> int | None:
        """When :meth:`flush` with ``due_only`` next has work (ms): a retransmission (or a
        message given up on) or a queued receipt (the shorter 1:1 delay is assumed for
        all), or None."""
        self._split_rel()
        (wake,) = self._x("SELECT MIN(due_at) FROM rel_due").fetchone()
        times = [t for t in (wake, self.next_receipt_due()) if t is not None]
        return min(times, default=None)

    def next_receipt_due(self) -> int | None:
        """When the oldest queued receipt is due (ms; the shorter 1:1 delay), or None."""
        (oldest,) = self._x("SELECT MIN(queued_at) FROM owed_receipts").fetchone()
        return None if oldest is None else int(oldest) + DIRECT_ACK_DELAY_MS

    def drop_recipient(self, installation_id: bytes) -> int:
        """An installation was revoked: stop waiting for its receipts (see
        ``Reliability.drop_recipient``). Returns how many sent messages waited for it."""
        with self.store.transaction():
            rel = self._rel()
            n = rel.drop_recipient(installation_id)
            if n:
                self._save_rel(rel)
        return n

    def pending_acks(self) -> int:
        """Sent messages still waiting for some recipient's receipt (a cheap count: see
        :meth:`pending_by_conversation` for those of an earlier installation of ours)."""
        return self._rel().pending_count()

    def pending_by_conversation(self) -> dict[bytes, int]:
        """Conversation id -> how many of this installation's messages there still wait
        for a receipt.

        What an earlier installation of ours sent (before a forced key rotation, or by
        another process on this home still on the old keys) can neither be resent (its id is
        that installation's) nor acknowledged here, and a recipient that had not fetched it
        refuses it once those keys are revoked: such messages are taken out of the log here
        and are ``failed`` unless a receipt said they got everywhere (a read receipt sent
        to every device of ours can still come in, and moves one on). They held up every
        later key rotation until their first retransmission was due."""
        with self.store.transaction():
            rel = self._rel()
            me, dropped = self.engine.installation_id, 0
            home = self._home_installation()
            for key, log_ in rel.conversations.items():
                conv = self._conv_of(key)
                for mid in list(log_.outgoing):
                    author = self._author(conv, mid)
                    if author is not None and author[1] not in (me, home):
                        del log_.outgoing[mid]
                        self._given_up(conv, mid)
                        dropped += 1
            if dropped:
                log.info(
                    "%d message(s) of an earlier installation of ours no longer awaited", dropped
                )
                self._save_rel(rel)
        return {
            self._conv_of(key): len(c.outgoing)
            for key, c in sorted(rel.conversations.items())
            if c.outgoing
        }

    def unacked(self, conv: bytes, mid: bytes) -> frozenset[bytes]:
        key = self._rk(conv)
        return self._rel(key).log(key).unacked(mid)

    # ---- contacts ----
    def contact(self, identity: bytes) -> Contact | None:
        row = self._x(
            "SELECT identity_id, alias, state, updated_at FROM contacts WHERE identity_id=?",
            (identity,),
        ).fetchone()
        if row is None or (row[2] == ContactState.NONE and not row[1]):
            return None  # (a removed contact's row only keeps its stamp: see _set_contact)
        return _contact(row)

    def contact_state(self, identity: bytes) -> ContactState:
        c = self.contact(identity)
        return ContactState.NONE if c is None else c.state

    def contacts(self, *states: ContactState) -> list[Contact]:
        rows = self._x(
            "SELECT identity_id, alias, state, updated_at FROM contacts ORDER BY updated_at, "
            "identity_id"
        ).fetchall()
        out = [_contact(r) for r in rows]
        if states:
            return [c for c in out if c.state in states]
        # a contact the user removed is kept as a row for device sync (see _set_contact)
        return [c for c in out if c.state != ContactState.NONE or c.alias]

    def _set_contact(
        self,
        identity: bytes,
        state: ContactState,
        alias: str | None,
        stamp: bytes | None = None,
        at: int | None = None,
    ) -> None:
        """Write a contact. ``stamp`` (a change the user made, here or on another device of
        ours: see ``_stamp``) is kept for device sync's last-writer-wins; changes this
        device makes by itself (a stranger's first message makes a request) keep the old
        one. ``at``: when the change was made (ms), this device's clock by default."""
        at = self.now() if at is None else at
        was = self.contact_state(identity)
        if self.store.contact_state_changed(identity, int(was), int(state), at):
            self.stop_waiting_for(identity)  # a block (or decline) begins
        if (
            state == ContactState.NONE
            and not alias
            and stamp is None
            and self._stamp_of(identity) is None
        ):
            self._x("DELETE FROM contacts WHERE identity_id=?", (identity,))
            return
        # a contact removed by the user stays as a row (state NONE): its stamp must outlive
        # it, or an older change from another device would bring the contact back
        self._x(
            "INSERT INTO contacts (identity_id, alias, state, updated_at, stamp) "
            "VALUES (?,?,?,?,?) ON CONFLICT(identity_id) DO UPDATE SET "
            "alias=excluded.alias, state=excluded.state, updated_at=excluded.updated_at, "
            "stamp=COALESCE(excluded.stamp, contacts.stamp)",
            (identity, alias, int(state), at, stamp),
        )

    def _stamp_of(self, identity: bytes) -> bytes | None:
        row = self._x("SELECT stamp FROM contacts WHERE identity_id=?", (identity,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def _stamp(self, at: int, installation: bytes | None = None) -> bytes:
        """Order of the user's changes across its devices: when (whole seconds, as a
        payload carries its time), then which device. Two changes of one device within a
        second have equal stamps: the one that arrives later is the later (``_newer``)."""
        return (at // 1000).to_bytes(8, "big") + (installation or self.engine.installation_id)

    def _local_at(self, old: bytes | None) -> int:
        """When (ms) a change the user makes here now is stamped: now, but never before the
        change it replaces (``old``, its stamp), so that our other devices take it whatever
        our clocks say (a device whose clock is behind made changes the others dropped)."""
        now = self.now()
        if old is None:
            return now
        old_s = int.from_bytes(old[:8], "big")
        floor_s = old_s if old[8:] == self.engine.installation_id else old_s + 1
        return max(now, floor_s * 1000)

    @staticmethod
    def _newer(stamp: bytes, old: bytes | None) -> bool:
        """Does a change stamped ``stamp`` replace one stamped ``old``? (One device's
        changes reach us in the order it made them.)"""
        if old is None:
            return True
        return stamp >= old if stamp[8:] == old[8:] else stamp > old

    def stop_waiting_for(self, identity: bytes) -> None:
        """Blocked (or declined): its receipts are dropped from now on, so our messages it
        had not acknowledged must not wait for them (retransmitted to it for 30 days, and
        holding up ``keys rotate --installation``)."""
        rows = self._x(
            "SELECT DISTINCT peer_installation FROM sessions WHERE peer_identity=?", (identity,)
        ).fetchall()
        rel = self._rel()
        if sum(rel.drop_recipient(bytes(r[0])) for r in rows):
            self._save_rel(rel)

    def drop_written_while_shut(
        self, identity: bytes, keep: Mapping[tuple[bytes, bytes], Mapping[str, Any]] = _NO_ROWS
    ) -> int:
        """A block (or decline) learned only now that began before (a backup's): what
        ``identity`` wrote since it began and was stored here meanwhile (as a request, say)
        goes, as the block would have dropped it when it came (its id is kept: a
        retransmission stays dropped). ``keep``: (conversation, message id) -> its row in
        the backup (:func:`chatcore.identity.snapshot`) of what the backup itself holds: it
        came there before the block (a block drops what comes during it), though its
        sent-at (the sender's clock) may say later. Returns how many messages went.

        Its edits, deletes and reactions of that time go too (:meth:`_undo_ops_while_shut`).
        """
        row = self._x(
            "SELECT state, start_ms FROM block_periods WHERE identity_id=? AND end_ms IS NULL",
            (identity,),
        ).fetchone()
        if row is None:
            return 0
        sql = (
            "SELECT rowid, conversation_id, message_id FROM messages WHERE sender_identity=? "
            "AND outgoing=0 AND status != 'system' AND sent_at >= ?"
        )
        args: tuple[Any, ...] = (identity, int(row[1]))
        if int(row[0]) != ContactState.BLOCKED:  # a decline shuts the 1:1 conversation only
            sql += " AND conversation_id=?"
            args += (direct_conversation_id(self.me, identity),)
        with self.store.transaction():
            rows = [
                r for r in self._x(sql, args).fetchall() if (bytes(r[1]), bytes(r[2])) not in keep
            ]
            if rows:
                self.store.keep_seq_floor()  # their numbers are not given out again
            for rowid, conv, mid in rows:
                self._x("DELETE FROM message_fts WHERE rowid=?", (rowid,))
                for table in ("messages", "reactions"):
                    self._x(
                        f"DELETE FROM {table} WHERE conversation_id=? AND message_id=?",
                        (conv, mid),
                    )
                self._drop_for_good(bytes(conv), bytes(mid))
            if rows:
                # SQLite hands the freed highest rowids out again: the index must take them
                (top,) = self._x("SELECT COALESCE(MAX(rowid), 0) FROM messages").fetchone()
                if int(top) < int(self.store.get_meta("fts_rowid") or b"0"):
                    self.store.set_meta("fts_rowid", str(int(top)).encode())
                for conv in {bytes(r[1]) for r in rows}:
                    self.store.recount_unread(conv)
                    self.store.recount_last_at(conv)  # the list's order
            self._undo_ops_while_shut(identity, int(row[1]), int(row[0]), keep)
        return len(rows)

    def _undo_ops_while_shut(
        self,
        identity: bytes,
        start_ms: int,
        state: int,
        keep: Mapping[tuple[bytes, bytes], Mapping[str, Any]],
    ) -> None:
        """The edits and reactions ``identity`` made since ``start_ms`` (a block, or a
        decline: 1:1 only, that began then) and that were applied here meanwhile go, as the
        block would have dropped them on arrival (their ids are kept: a retransmission stays
        dropped), and what they replaced is shown again:

        * a reaction: its reaction before, from its earlier reactions here (their text is
          kept) and the backup's (``keep``'s rows);
        * an edit of its own message: the text shown before, if it is still known: the
          backup's edit if no earlier edit here is newer, or the message's own text if no
          edit of it came before (here or in the backup). Otherwise (an earlier edit came
          here, whose text is not kept: a peer's replaced edits are kept as ids only) the
          edit stays shown, and stays applied;
        * a delete stays (the text is gone here); so does an edit or reaction shown that a
          newer one (not of the block) replaced."""
        sql = (
            "SELECT conversation_id, message_id, lamport, content_type, body FROM content_ops "
            "WHERE sender_identity=? AND sent_at >= ? AND content_type IN (?,?)"
        )
        args: tuple[Any, ...] = (
            identity, start_ms, int(ContentType.EDIT), int(ContentType.REACTION)
        )  # fmt: skip
        if state != ContactState.BLOCKED:
            sql += " AND conversation_id=?"
            args += (direct_conversation_id(self.me, identity),)
        ops: dict[tuple[bytes, bytes, int], list[tuple[bytes, int, str]]] = {}
        for conv, mid, lamport, ct, body in self._x(sql, args).fetchall():
            emoji = bytes(body)[ct_.MID :].decode("utf-8", "replace")  # an edit's: not kept
            key = (bytes(conv), bytes(body)[: ct_.MID], int(ct))
            ops.setdefault(key, []).append((bytes(mid), int(lamport), emoji))
        for (conv, target, ct), during in ops.items():
            flags = self._x(
                "SELECT deleted, edit_lamport FROM messages WHERE conversation_id=? "
                "AND message_id=?",
                (conv, target),
            ).fetchone()
            held = keep.get((conv, target))
            if flags is None or flags[0]:
                pass  # its message went (or was deleted): nothing of them is shown
            elif ct == ContentType.REACTION:
                self._undo_reactions(identity, conv, target, during, held)
            elif not self._undo_edits(identity, conv, target, during, int(flags[1]), held):
                continue  # stays applied (the text before is not known)
            for mid, _lamport, _emoji in during:
                self._x(
                    "DELETE FROM content_ops WHERE conversation_id=? AND message_id=?", (conv, mid)
                )
                self._drop_for_good(conv, mid)

    def _undo_reactions(
        self,
        identity: bytes,
        conv: bytes,
        target: bytes,
        during: list[tuple[bytes, int, str]],
        held: Mapping[str, Any] | None,
    ) -> None:
        row = self._x(
            "SELECT lamport, emoji FROM reactions WHERE conversation_id=? AND message_id=? "
            "AND reactor=?",
            (conv, target, identity),
        ).fetchone()
        if row is not None and (int(row[0]), str(row[1])) > max((lam, e) for _m, lam, e in during):
            return  # a newer one (not of the block) is shown
        self._x(
            "DELETE FROM reactions WHERE conversation_id=? AND message_id=? AND reactor=?",
            (conv, target, identity),
        )
        gone = {m for m, _l, _e in during}
        for mid, lamport, body in self._x(
            "SELECT message_id, lamport, body FROM content_ops WHERE conversation_id=? "
            "AND sender_identity=? AND content_type=? AND substr(body, 1, ?)=?",
            (conv, identity, int(ContentType.REACTION), ct_.MID, target),
        ).fetchall():
            if bytes(mid) not in gone:
                emoji = bytes(body)[ct_.MID :].decode("utf-8", "replace")
                apply_reaction(self.store, conv, target, identity, emoji, int(lamport))
        for who, emoji, lamport in (held or {}).get("rx", ()):
            if bytes.fromhex(who) == identity:
                apply_reaction(self.store, conv, target, identity, str(emoji), int(lamport))

    def _undo_edits(
        self,
        identity: bytes,
        conv: bytes,
        target: bytes,
        during: list[tuple[bytes, int, str]],
        shown: int,
        held: Mapping[str, Any] | None,
    ) -> bool:
        """The edits ``during`` of ``identity``'s message ``target`` are undone (True), or
        they stay (False: the text shown before is not known)."""
        if shown > max(lam for _m, lam, _e in during):
            return True  # a newer one (not of the block) is shown: they are undone already
        gone = {m for m, _l, _e in during}
        before = max(
            (
                int(lamport)
                for mid, lamport in self._x(
                    "SELECT message_id, lamport FROM content_ops WHERE conversation_id=? "
                    "AND sender_identity=? AND content_type=? AND substr(body, 1, ?)=?",
                    (conv, identity, int(ContentType.EDIT), ct_.MID, target),
                ).fetchall()
                if bytes(mid) not in gone
            ),
            default=0,
        )
        if held is not None and "e" in held and int(held["el"]) >= before:
            text: bytes | None = base64.b64decode(held["e"])
            lamport = int(held["el"])
        elif before == 0:
            text, lamport = None, 0  # never edited before: its own text
        else:
            return False
        self._x(
            "UPDATE messages SET edited_body=?, edit_lamport=? WHERE conversation_id=? "
            "AND message_id=?",
            (text, lamport, conv, target),
        )
        reindex(self.store, conv, target)
        return True

    def set_contact(
        self,
        identity: bytes,
        state: ContactState,
        alias: str | None = None,
        *,
        keep_alias: bool = True,
    ) -> list[OutFrame]:
        """Change a contact's state (and alias) here and on every other device of ours."""
        state = ContactState(state)  # ValueError before anything is written (7, "contact")
        if identity == self.me:
            raise ValueError("you cannot add, block or answer yourself")
        with self.store.transaction():
            old = self.contact(identity)
            if alias is None and keep_alias and old is not None:
                alias = old.alias
            now = self._local_at(self._stamp_of(identity))
            self._set_contact(identity, state, alias, self._stamp(now), now)
            frames = self._sync_own(ct_.SyncContact(identity, state, alias), now)
            # accepting a request: in the same transaction (a process killed after the
            # accept had queued nothing, and accepting again, a contact then, neither)
            if (
                state == ContactState.CONTACT
                and old is not None
                and old.state == ContactState.REQUEST
            ):
                self._queue_read_of_earlier(identity)
        return frames

    def _queue_read_of_earlier(self, identity: bytes) -> None:
        """A request just accepted: what the user already read while it was a request now
        gets its read receipt (read receipts go to contacts only)."""
        if not self.read_receipts:
            return
        conv = direct_conversation_id(self.me, identity)
        rows = self._x(
            "SELECT message_id FROM messages WHERE conversation_id=? AND outgoing=0 "
            "AND status='read' AND content_type IN (?,?)",
            (conv, int(ContentType.TEXT), int(ContentType.REPLY)),
        ).fetchall()
        self._queue_read(conv, [bytes(r[0]) for r in rows])

    # ---- settings ----
    @property
    def read_receipts(self) -> bool:
        return self.store.get_meta("read_receipts") != b"0"

    def set_read_receipts(self, on: bool) -> list[OutFrame]:
        with self.store.transaction():
            now = self._local_at(self.store.get_meta("read_receipts_stamp"))
            self.store.set_meta("read_receipts", b"1" if on else b"0")
            self.store.set_meta("read_receipts_stamp", self._stamp(now))
            return self._sync_own(ct_.SyncSetting(on), now)

    # ---- conversations ----
    def set_conversation_flags(
        self, conv: bytes, muted: bool | None = None, archived: bool | None = None
    ) -> list[OutFrame]:
        with self.store.transaction():
            c = self.store.conversation(conv)
            if c is None:
                raise UnknownContact("no such conversation")
            m = c.muted if muted is None else muted
            a = c.archived if archived is None else archived
            (old,) = self._x("SELECT flags_stamp FROM conversations WHERE id=?", (conv,)).fetchone()
            now = self._local_at(None if old is None else bytes(old))
            self._x(
                "UPDATE conversations SET muted=?, archived=?, flags_stamp=? WHERE id=?",
                (int(m), int(a), self._stamp(now), conv),
            )
            return self._sync_own(ct_.SyncConv(conv, m, a), now)

    def delete_conversation(self, conv: bytes) -> int:
        """Delete a conversation and everything in it, on this device only."""
        with self.store.transaction():
            rows = self._x("SELECT rowid FROM messages WHERE conversation_id=?", (conv,)).fetchall()
            for (rowid,) in rows:
                self._x("DELETE FROM message_fts WHERE rowid=?", (rowid,))
            self.store.keep_seq_floor()  # their numbers are not given out again
            # the ids in ``dropped`` stay: a blocked author's retransmission stays dropped
            for table in ("messages", "content_ops", "reactions", "receipts"):
                self._x(f"DELETE FROM {table} WHERE conversation_id=?", (conv,))
            # SQLite hands the freed highest rowids out again: the index must take them
            (top,) = self._x("SELECT COALESCE(MAX(rowid), 0) FROM messages").fetchone()
            if int(top) < int(self.store.get_meta("fts_rowid") or b"0"):
                self.store.set_meta("fts_rowid", str(int(top)).encode())
            self.store.delete_conversation_row(conv)
            rel = self._rel(self._rk(conv))
            if rel.conversations.pop(self._rk(conv), None) is not None:
                self._save_rel(rel)
            return len(rows)

    def unread_ids(self, conv: bytes) -> list[bytes]:
        rows = self._x(
            f"SELECT message_id FROM messages WHERE conversation_id=? AND {UNREAD_WHERE} "
            "ORDER BY lamport, seq",
            (conv,),
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def _recount_unread(self, conv: bytes) -> None:
        self.store.recount_unread(conv)

    def mark_read(self, conv: bytes) -> int:
        """The user saw the conversation: mark it read, queue read receipts. Returns how many."""
        with self.store.transaction():
            ids = self.unread_ids(conv)
            for mid in ids:
                self.store.set_status(conv, mid, "read")
            self.store.mark_read(conv)
            self._queue_read(conv, ids)  # with the status: read here means a receipt owed
        return len(ids)

    def _queue_read(self, conv: bytes, ids: list[bytes]) -> None:
        """Queue read receipts for ``ids`` (batched by ``flush_receipts``)."""
        if not ids:
            return
        now = self.now()
        delivered = self._owed(conv, ReceiptKind.DELIVERED)
        for mid in ids:
            self._owe(conv, ReceiptKind.READ, mid, delivered.get(mid, now))
        if self._read_reaches_peer(conv):
            self._unowe(conv, ReceiptKind.DELIVERED, ids)  # "read" tells the peer both

    def _read_reaches_peer(self, conv: bytes) -> bool:
        """Will a read receipt for this conversation be sent to the other side?"""
        if not self.read_receipts:
            return False
        c = self.store.conversation(conv)
        if c is None:
            return False
        if c.kind == "group":
            return True
        return c.peer_identity is not None and (
            self.contact_state(c.peer_identity) == ContactState.CONTACT
        )

    def _invitation_refusal(self, inviters: set[bytes]) -> str | None:
        """Bound what strangers can put on this device: unanswered group invitations."""
        if not inviters or any(
            a == self.me or self.contact_state(a) == ContactState.CONTACT for a in inviters
        ):
            return None
        restored = self.store.get_meta(RESTORED_AT_META)
        if restored is not None and self.now() < int(restored) + INVITES_UNBOUNDED_AFTER_RESTORE_MS:
            return None  # a restored home getting its groups back
        for a in sorted(inviters):
            if self.store.quiet_invitations(self.me, a) >= MAX_QUIET_INVITES_PER_STRANGER:
                return (
                    f"{MAX_QUIET_INVITES_PER_STRANGER} invitations by 0x{a.hex()[:8]}… are "
                    "unanswered (not a contact)"
                )
        if self.store.quiet_invitations(self.me) >= MAX_QUIET_STRANGER_INVITES:
            return f"{MAX_QUIET_STRANGER_INVITES} invitations by strangers are unanswered"
        return None

    def is_request(self, conv: bytes) -> bool:
        c = self.store.conversation(conv)
        if c is None or c.peer_identity is None:
            return False
        return self.contact_state(c.peer_identity) == ContactState.REQUEST

    # ==== receiving ====
    def handle(
        self, sender: bytes, inst: bytes, payload: Payload, gid: bytes | None
    ) -> Handled | None:
        ct = payload.content_type
        me = self.me
        if ct not in _ACCEPTED:  # e.g. CONTACT_REQUEST (9), reserved: never sent
            raise ContentError(f"{ct.name.lower()}: not a content type this version accepts")
        if ct == ContentType.GROUP_RECEIPT:
            if gid is not None:
                raise ContentError("a pairwise group receipt on a group topic")
            return Handled(self._apply_group_receipt(sender, inst, payload))
        if gid is None:
            if ct == ContentType.DEVICE_SYNC:
                if sender != me or payload.sync_peer is not None:
                    raise ContentError("device sync from another identity")
                self._apply_sync(ct_.decode_sync(payload.body), payload.sent_at_ms, inst)
                return Handled(None)
            if sender == me:
                if payload.sync_peer is None:
                    return None  # the engine rejects it
                peer = payload.sync_peer
            else:
                if payload.sync_peer is not None:
                    return None  # the engine rejects it
                peer = sender
            conv = direct_conversation_id(me, peer)
        else:
            if ct == ContentType.DEVICE_SYNC:
                raise ContentError("device sync on a group topic")
            conv, peer = gid, None
        state = self.contact_state(sender) if sender != me else ContactState.CONTACT
        kept = ct in ct_.MESSAGE_TYPES or ct in ct_.OP_TYPES
        # the message id is derived (a hash over the payload): once per message
        mid = payload.message_id(inst, conv) if kept else b""
        if state == ContactState.BLOCKED or (gid is None and state == ContactState.DECLINED):
            log.info("dropped %s from a blocked/declined identity", ct.name)
            if kept:  # never shown later either, e.g. retransmitted after an unblock
                self._drop_for_good(conv, mid)
            return Handled(None)
        if kept:
            if sender != me and self._sent_while_shut(sender, payload.sent_at_ms, gid):
                # written while its author was blocked, arriving now: acknowledged (we are
                # not blocking it any more), so that its author stops sending it
                self._ack_unstored(conv, mid, sender, inst)
                return Handled(None)
            if self._dropped_before(conv, mid):
                self._ack_unstored(conv, mid, sender, inst)  # as above: stays dropped
                return Handled(None)  # sent while its author was blocked
            # refused before anything below queues an acknowledgement in memory
            self.store._check_lamport_step(conv, payload.lamport)
        if payload.history and kept:
            self._history_acks(sender, inst, payload, conv, gid)
        if ct in ct_.MESSAGE_TYPES:
            if ct == ContentType.REPLY:
                ct_.decode_targeted(ct, payload.body)
            if sender == me:
                if gid is None:
                    self._owe(conv, _OWN, mid, self.now())
                else:  # our other device's: who it is for, as send_group_message keeps it
                    self._keep_recipients(gid, mid)
                if peer is not None and self.contact_state(peer) in (
                    ContactState.NONE,
                    ContactState.REQUEST,
                    ContactState.DECLINED,
                ):
                    self._set_contact(peer, ContactState.CONTACT, self._alias(peer))
                return None
            self._ack(conv, mid)  # a duplicate is acknowledged again (the ack may have been lost)
            self.typing.pop((conv, sender, inst), None)
            if gid is None and state == ContactState.NONE:
                self._set_contact(sender, ContactState.REQUEST, None)
            return None
        if ct in ct_.OP_TYPES:
            event = self._apply_op(sender, inst, payload, conv)  # raises if refused
            if sender == me and gid is None:  # a sync copy of our other device's op: only
                # once applied is it acknowledged
                self._owe(conv, _OWN, mid, self.now())
            return Handled(event)
        if ct == ContentType.RECEIPT:
            return Handled(self._apply_receipt(sender, inst, payload, conv, gid))
        if ct == ContentType.TYPING:
            return Handled(self._apply_typing(sender, inst, payload, conv))
        return None

    def _drop_for_good(self, conv: bytes, mid: bytes) -> None:
        """Remember the id (only) of a message dropped because its author is blocked;
        bounded, the oldest go first (a sender retransmits for hours, not years)."""
        self._x("INSERT OR IGNORE INTO dropped VALUES (?,?,?)", (conv, mid, self.now()))
        self._x(
            "DELETE FROM dropped WHERE rowid IN (SELECT rowid FROM dropped "
            "ORDER BY at DESC, rowid DESC LIMIT -1 OFFSET ?)",
            (MAX_DROPPED_IDS,),
        )

    def _dropped_before(self, conv: bytes, mid: bytes) -> bool:
        row = self._x(
            "SELECT 1 FROM dropped WHERE conversation_id=? AND message_id=?", (conv, mid)
        ).fetchone()
        return row is not None

    def _sent_while_shut(self, sender: bytes, sent_at_ms: int, gid: bytes | None) -> bool:
        """Did ``sender`` write this while we had it blocked (or, 1:1, declined)? A message
        can arrive long after it was written: a group message whose sender key came only
        after an unblock, say. The sender's clock decides: lying can only make a message
        look newer, and newer ones are allowed anyway. Sent-at travels in whole seconds
        and clocks differ a little: a message counts as written during a block only if
        its whole second, widened by ``CLOCK_SLACK_MS``, lies inside it."""
        latest = sent_at_ms + 999 + CLOCK_SLACK_MS
        states = (int(ContactState.BLOCKED),) if gid is not None else tuple(map(int, _SHUT))
        row = self._x(
            "SELECT 1 FROM block_periods WHERE identity_id=? AND end_ms IS NOT NULL "
            f"AND ? >= start_ms AND ? < end_ms AND state IN ({','.join('?' * len(states))})",
            (sender, sent_at_ms, latest, *states),
        ).fetchone()
        return row is not None

    def _alias(self, identity: bytes) -> str | None:
        c = self.contact(identity)
        return None if c is None else c.alias

    def _ack_unstored(self, conv: bytes, mid: bytes, sender: bytes, inst: bytes) -> None:
        self._unstored[(conv, mid)] = (sender, inst)
        self._ack(conv, mid)

    def _ack(self, conv: bytes, mid: bytes) -> None:
        if self._is_owed(conv, ReceiptKind.READ, mid) and self._read_reaches_peer(conv):
            return  # already read (a duplicate): the queued read receipt covers it
        self._owe(conv, ReceiptKind.DELIVERED, mid, self.now())

    def _named(
        self, conv: bytes, history: tuple[bytes, ...]
    ) -> list[tuple[bytes, bytes, bytes, StoredMessage | None]]:
        """(id, author, author installation, stored message or None for an op) of the messages
        and ops of ``conv`` whose short ids ``history`` names."""
        out: list[tuple[bytes, bytes, bytes, StoredMessage | None]] = [
            (m.message_id, m.sender_identity, m.sender_installation, m)
            for m in self.store.messages_named(conv, history)
            if m.status != "system"
        ]
        for short in dict.fromkeys(history):
            sql, args = prefix_range("message_id", short)
            rows = self._x(
                "SELECT message_id, sender_identity, sender_installation FROM content_ops "
                f"WHERE conversation_id=? AND {sql}",
                (conv, *args),
            ).fetchall()
            out += [(bytes(r[0]), bytes(r[1]), bytes(r[2]), None) for r in rows]
        return out

    def _history_acks(
        self, sender: bytes, inst: bytes, p: Payload, conv: bytes, gid: bytes | None
    ) -> None:
        """Naming a message in a causal history acknowledges it (SDS): a reply is a receipt.

        From another identity: our messages it names are delivered to (or, with the READ
        flag, read by) that member, and acknowledged for retransmission. From one of our own
        devices with the READ flag: the messages it names were read there."""
        me = self.me
        named = self._named(conv, p.history)
        if sender == me:
            # our other device names our message: it has it (its sync copy is acknowledged)
            self._ack_own(conv, [(mid, ai) for mid, _a, ai, _m in named], inst)
            if p.read:
                changed = False
                for _mid, _author, _inst, m in named:
                    if m is not None and not m.outgoing and m.status == "received":
                        self.store.set_status(conv, m.message_id, "read")
                        changed = True
                if changed:
                    self._recount_unread(conv)
            return
        status = "read" if p.read else "delivered"
        rel: _Rel | None = None
        for mid, author, author_inst, m in named:
            if author != me:
                continue
            if author_inst == self.engine.installation_id:
                rel = rel or self._rel(self._rk(conv))
                rel.acked(self._rk(conv), mid, inst)
            if m is not None:
                self._record_receipt(conv, mid, sender, status)
                self._update_status(conv, mid, gid)
        if rel is not None:
            self._save_rel(rel)

    def _piggyback(self, conv: bytes) -> tuple[list[bytes], bool]:
        """Receipts the next message in ``conv`` can carry: (message ids, read?).

        Sending in a conversation marks it read first. With read receipts reaching the peer
        the queued read receipts ride along (READ flag); otherwise the delivered ones do."""
        self.mark_read(conv)
        read = self._read_reaches_peer(conv)
        kind = ReceiptKind.READ if read else ReceiptKind.DELIVERED
        # sync copies of our other devices' messages ride along too: our devices get the same
        # history in their sync copy of this message, and that acknowledges them there
        queued = {**self._owed(conv, _OWN), **self._owed(conv, kind)}
        if not queued:
            return [], read
        oldest_first = sorted(queued, key=queued.__getitem__)  # closest to a retransmission
        named = causal_history(self.store.recent_short_ids(conv, RECENT_HISTORY), oldest_first)
        return [mid for mid in oldest_first if mid[:4] in named], read

    def _carried(self, conv: bytes, ids: list[bytes], read: bool) -> None:
        """The message just sent carries these receipts: they leave the queue."""
        if not ids:
            return
        # our own devices learn "read" from the sync copy (1:1, always READ-flagged) or the
        # group frame itself; with group read receipts off they are never told (as before)
        # a message without the READ flag tells "delivered" only: the read receipts it named
        # stay owed (to our own devices at least, which learn the read state from them)
        kinds = (ReceiptKind.READ,) if read else ()
        for kind in (*kinds, ReceiptKind.DELIVERED, _OWN):
            self._unowe(conv, kind, ids)

    def _event(self, sender: bytes, inst: bytes, p: Payload, conv: bytes, mid: bytes) -> Received:
        return Received(
            conv, mid, sender, inst, p.content_type, p.body, p.lamport, p.sent_at_ms,
            self.now(), sender == self.me,
        )  # fmt: skip

    # ---- edits, deletes, reactions ----
    def _apply_op(self, sender: bytes, inst: bytes, p: Payload, conv: bytes) -> Received | None:
        ct = p.content_type
        mid = p.message_id(inst, conv)
        if self._op_exists(conv, mid):
            if sender != self.me:
                self._ack(conv, mid)
            return None
        t = ct_.decode_targeted(ct, p.body)
        target = self.store.message(conv, t.target)
        what = ct.name.lower()
        if target is None or target.content_type not in (ContentType.TEXT, ContentType.REPLY):
            raise ContentError(f"{what} of an unknown message")
        if self._flags(conv, t.target)[0]:  # deleted
            if inst == self.engine.installation_id:  # we are sending it
                raise ContentError(f"{what} of a deleted message")
            # it raced a delete and can never apply: acknowledged, so it is not resent
            if sender != self.me:
                self._ack_unstored(conv, mid, sender, inst)
            log.info("%s of a deleted message dropped", what)
            return None
        if ct in (ContentType.EDIT, ContentType.DELETE) and target.sender_identity != sender:
            raise ContentError(f"{what} by someone who is not the message's sender")
        body = p.body
        if ct == ContentType.EDIT:
            if apply_edit(self.store, conv, t.target, p.lamport, t.text.encode("utf-8")):
                # the text of a peer's earlier edits is never shown again: only their ids
                # are kept (for duplicates), so a peer's edits cannot grow the store unseen
                self._x(
                    "UPDATE content_ops SET body=substr(body, 1, ?) WHERE conversation_id=? "
                    "AND content_type=? AND sender_identity!=? AND substr(body, 1, ?)=?",
                    (ct_.MID, conv, int(ct), self.me, ct_.MID, t.target),
                )
            if sender != self.me:  # ours are kept whole: they may be sent again
                body = p.body[: ct_.MID]
        elif ct == ContentType.DELETE:
            mark_deleted(self.store, conv, t.target)
            rel = self._rel(self._rk(conv))
            log_ = rel.conversations.get(self._rk(conv))
            if log_ is not None and log_.outgoing.pop(t.target, None) is not None:
                self._save_rel(rel)
        else:
            apply_reaction(self.store, conv, t.target, sender, t.text, p.lamport)
        self._x(
            "INSERT INTO content_ops VALUES (?,?,?,?,?,?,?,?,?)",
            (conv, mid, sender, inst, p.lamport, p.sent_at_ms, self.now(), int(ct), body),
        )
        self.store.bump_lamport(conv, p.lamport)
        if sender != self.me:
            self._ack(conv, mid)
        return self._event(sender, inst, p, conv, mid)

    def _op_exists(self, conv: bytes, mid: bytes) -> bool:
        return (
            self._x(
                "SELECT 1 FROM content_ops WHERE conversation_id=? AND message_id=?", (conv, mid)
            ).fetchone()
            is not None
        )

    def _op(self, conv: bytes, mid: bytes) -> tuple[bytes, bytes, int, int, int, bytes] | None:
        row = self._x(
            "SELECT sender_identity, sender_installation, lamport, sent_at, content_type, body "
            "FROM content_ops WHERE conversation_id=? AND message_id=?",
            (conv, mid),
        ).fetchone()
        if row is None:
            return None
        return bytes(row[0]), bytes(row[1]), int(row[2]), int(row[3]), int(row[4]), bytes(row[5])

    def _flags(self, conv: bytes, mid: bytes) -> tuple[bool, int]:
        row = self._x(
            "SELECT deleted, edit_lamport FROM messages WHERE conversation_id=? AND message_id=?",
            (conv, mid),
        ).fetchone()
        return (False, 0) if row is None else (bool(row[0]), int(row[1]))

    # ---- receipts ----
    def _apply_receipt(
        self, sender: bytes, inst: bytes, p: Payload, conv: bytes, gid: bytes | None
    ) -> Received | None:
        kind, ids = ct_.decode_receipt(p.body)
        me = self.me
        if sender == me:
            # one of our devices got (or read) these: the sync copies of ours are delivered
            authors = {mid: self._author(conv, mid) for mid in ids}
            self._ack_own(conv, [(mid, a[1] if a else None) for mid, a in authors.items()], inst)
            # one of our devices read these: the same read state here
            if kind == ReceiptKind.READ:
                for mid in ids:
                    m = self.store.message(conv, mid)
                    if m is not None and not m.outgoing and m.status == "received":
                        self.store.set_status(conv, mid, "read")
                self._recount_unread(conv)
            return None
        status = "read" if kind == ReceiptKind.READ else "delivered"
        rel: _Rel | None = None
        known = 0
        mine: list[bytes] = []
        for mid in ids:
            m = self.store.message(conv, mid)
            if m is not None:
                author, author_inst = m.sender_identity, m.sender_installation
            else:
                op = self._op(conv, mid)
                if op is None:
                    continue
                author, author_inst = op[0], op[1]
            if author == sender:
                raise ContentError("a receipt for the sender's own message")
            known += 1
            if author != me:
                continue  # a member's receipt for someone else's message
            if author_inst == self.engine.installation_id:
                rel = rel or self._rel(self._rk(conv))
                rel.acked(self._rk(conv), mid, inst)
            if m is not None:
                self._record_receipt(conv, mid, sender, status)
                mine.append(mid)
        if not known:
            raise ContentError("a receipt for unknown messages")
        if rel is not None:
            self._save_rel(rel)
        for mid in mine:
            self._update_status(conv, mid, gid)
        return self._event(sender, inst, p, conv, p.message_id(inst, conv)) if mine else None

    def _apply_group_receipt(self, sender: bytes, inst: bytes, p: Payload) -> Received | None:
        """A member's receipt for our group messages, sent to us pairwise (or our other
        device's read state for a group)."""
        gid, kind, ids = ct_.decode_group_receipt(p.body)
        st = self.groups.load(gid) if self.groups is not None else None
        if st is None or (sender != self.me and sender not in st.members()):
            raise ContentError("a group receipt for a group we do not share with the sender")
        if self.contact_state(sender) == ContactState.BLOCKED:
            return None
        inner = Payload(ContentType.RECEIPT, p.lamport, p.sent_at_ms, ct_.encode_receipt(kind, ids))
        return self._apply_receipt(sender, inst, inner, gid, gid)

    def _group_receipts(self, gid: bytes, kind: ReceiptKind, ids: list[bytes]) -> list[OutFrame]:
        """Receipts for group messages go pairwise to each message's author (every device of
        it), not to the topic: O(members) frames per window instead of O(members²)
        deliveries; a read receipt also tells our other devices."""
        by_author: dict[bytes, list[bytes]] = {}
        for mid in ids:
            found = self._author(gid, mid)
            if found is not None and found[0] != self.me:
                by_author.setdefault(found[0], []).append(mid)
        frames: list[OutFrame] = []
        # out of the group (removed, or left): its members drop receipts from a non-member
        # (and a frame about the group from us is one too many); our devices still learn
        st = self.groups.load(gid) if self.groups is not None else None
        if st is not None and not st.is_member:
            by_author = {}
        if kind != ReceiptKind.READ or self.read_receipts:
            for author in sorted(by_author):
                try:
                    insts = self.engine.directory.peer(author).installations
                    for to, ids_ in self._receipt_targets(gid, insts, by_author[author], kind):
                        body = ct_.encode_group_receipt(gid, kind, ids_)
                        frames += self._signal(author, to, ContentType.GROUP_RECEIPT, body)
                except Exception as exc:  # best effort, as for 1:1 receipts (see flush_receipts)
                    log.warning("group receipt not sent: %s: %s", type(exc).__name__, exc)
        if kind == ReceiptKind.READ:
            body = ct_.encode_group_receipt(gid, kind, ids)
            frames += self._signal(self.me, self._own_devices(), ContentType.GROUP_RECEIPT, body)
        return frames

    def _receipt_targets(
        self,
        conv: bytes,
        insts: Sequence[PeerKeys],
        ids: list[bytes],
        kind: ReceiptKind | None = None,
    ) -> list[tuple[list[PeerKeys], list[bytes]]]:
        """Where a receipt goes: "read" to every device of the author (each shows it);
        "delivered" only to the device that wrote each message (the one waiting for the
        ack), which saves a frame per other device of the author."""
        if kind is None or kind == ReceiptKind.READ:
            return [(list(insts), ids)]
        by_inst: dict[bytes, list[bytes]] = {}
        for mid in ids:
            found = self._author(conv, mid)
            if found is not None:
                by_inst.setdefault(found[1], []).append(mid)
        keys = {i.installation_id: i for i in insts}
        return [([keys[i]], by_inst[i]) for i in sorted(by_inst) if i in keys]

    def _author(self, conv: bytes, mid: bytes) -> tuple[bytes, bytes] | None:
        """(identity, installation) that wrote a message or an op of ``conv``, if known."""
        unstored = self._unstored.get((conv, mid))
        if unstored is not None:
            return unstored
        m = self.store.message(conv, mid)
        if m is not None:
            return m.sender_identity, m.sender_installation
        op = self._op(conv, mid)
        return None if op is None else (op[0], op[1])

    def _ack_own(
        self, conv: bytes, authored: list[tuple[bytes, bytes | None]], inst: bytes
    ) -> None:
        """Our device ``inst`` has these messages: ack the ones this installation wrote
        (their sync copies to it need no retransmission)."""
        mine = [mid for mid, author_inst in authored if author_inst == self.engine.installation_id]
        if not mine:
            return
        rel = self._rel(self._rk(conv))
        for mid in mine:
            rel.acked(self._rk(conv), mid, inst)
        self._save_rel(rel)

    def _record_receipt(self, conv: bytes, mid: bytes, member: bytes, status: str) -> None:
        row = self._x(
            "SELECT status FROM receipts WHERE conversation_id=? AND message_id=? AND member=?",
            (conv, mid, member),
        ).fetchone()
        if row is not None and ct_.STATUS_RANK[str(row[0])] >= ct_.STATUS_RANK[status]:
            return
        if row is None and status != "sent" and self.groups is not None:
            # our group message with no rows of who it was for (it came with a handover or a
            # forward): the members of now, before the first receipt counts it for them only
            known = self._x(
                "SELECT 1 FROM receipts WHERE conversation_id=? AND message_id=? LIMIT 1",
                (conv, mid),
            ).fetchone()
            if known is None and self.groups.load(conv) is not None:
                for other in self._members(conv, conv):
                    if other != member:
                        self._x(
                            "INSERT OR IGNORE INTO receipts VALUES (?,?,?,?,?)",
                            (conv, mid, other, "sent", self.now()),
                        )
        self._x(
            "INSERT OR REPLACE INTO receipts VALUES (?,?,?,?,?)",
            (conv, mid, member, status, self.now()),
        )

    def receipts(self, conv: bytes, mid: bytes) -> dict[bytes, str]:
        """Who has acknowledged one of our messages: member -> delivered | read."""
        rows = self._x(
            "SELECT member, status FROM receipts WHERE conversation_id=? AND message_id=? "
            "AND status != 'sent' ORDER BY member",
            (conv, mid),
        ).fetchall()
        return {bytes(r[0]): str(r[1]) for r in rows}

    def recipients(self, conv: bytes, mid: bytes, gid: bytes | None) -> list[bytes]:
        """Who one of our messages is for, as its status counts them: a group message's
        members when it was sent that are members still (since the ninth session; before,
        the members of today — so a member added since held it at "sent" for good, and one
        removed since until some later receipt came), or the 1:1 peer."""
        now = self._members(conv, gid)
        if gid is None:
            return now
        rows = self._x(
            "SELECT member FROM receipts WHERE conversation_id=? AND message_id=?", (conv, mid)
        ).fetchall()
        if not rows:
            return now  # sent before the recipients were kept
        then = {bytes(r[0]) for r in rows}
        return [m for m in now if m in then]

    def _keep_recipients(self, gid: bytes, mid: bytes) -> None:
        """Keep who our group message is for: the other members now. For nobody else (we
        are the only member) a row of our own says so; with no rows at all, the members of
        later were taken for its recipients (see ``recipients``), and one added before the
        network took it held it at "sent" for good."""
        for member in self._members(gid, gid) or [self.me]:
            self._record_receipt(gid, mid, member, "sent")

    def _members_left(self, gid: bytes) -> None:
        """Members left the group: our messages that waited on them may be done now."""
        rows = self._x(
            "SELECT message_id FROM messages WHERE conversation_id=? AND outgoing=1 "
            "AND status IN ('sent', 'failed', 'delivered') ORDER BY seq DESC LIMIT 1000",
            (gid,),
        ).fetchall()
        for (mid,) in rows:
            self._update_status(gid, bytes(mid), gid)

    def _members(self, conv: bytes, gid: bytes | None) -> list[bytes]:
        if gid is not None and self.groups is not None:
            st = self.groups.load(gid)
            if st is not None:
                return sorted(st.members() - {self.me})
        c = self.store.conversation(conv)
        return [c.peer_identity] if c is not None and c.peer_identity is not None else []

    def _home_installation(self) -> bytes | None:
        """The installation whose keys this home holds now: not ours when another process
        rotated them (``rotate_installation``) while this one runs on the old keys. Its
        messages are not an earlier installation's, to be given up here (they were taken
        out of the log and marked ``failed`` by such a process). None: not kept here."""
        raw = self.store.get_secret("installation")
        if raw is None:
            return None
        from chatcore.keys import InstallationKeys

        return InstallationKeys.from_bytes(raw).installation_id

    def _given_up(self, conv: bytes, mid: bytes) -> None:
        """One of our messages is no longer resent to who has not acknowledged it (an
        earlier installation of ours wrote it): ``failed``, unless it got everywhere."""
        m = self.store.message(conv, mid)
        if m is not None and m.outgoing and m.status in ("sending", "sent"):
            self.store.set_status(conv, mid, "failed")

    def _reached_network(self, conv: bytes, mid: bytes) -> None:
        """One of our messages is "sent" now: a group message may need no more."""
        if self.groups is not None and self.groups.load(conv) is not None:
            self._update_status(conv, mid, conv)

    def _update_status(self, conv: bytes, mid: bytes, gid: bytes | None) -> None:
        m = self.store.message(conv, mid)
        if m is None:
            return
        got = self.receipts(conv, mid)
        members = self.recipients(conv, mid, gid) or list(got)
        if members:
            new = min(ct_.STATUS_RANK.get(got.get(x, "sent"), 1) for x in members)
        elif gid is not None and m.status != "sending":
            # a group message nobody holds back (we were the only member, or all it was
            # for left before acknowledging it): it reached everyone there is — "delivered",
            # not "read" (nobody read it)
            new = ct_.STATUS_RANK["delivered"]
        else:
            return
        # "failed" (see _given_up) ranks as "sent": a receipt saying it got everywhere
        # moves it on, one from some of its recipients only does not
        if new > ct_.STATUS_RANK.get("sent" if m.status == "failed" else m.status, 0):
            status = next(s for s, r in ct_.STATUS_RANK.items() if r == new)
            self.store.set_status(conv, mid, status)

    # ---- typing ----
    def _apply_typing(self, sender: bytes, inst: bytes, p: Payload, conv: bytes) -> Received | None:
        active = ct_.decode_typing(p.body)
        if sender == self.me:
            return None
        now = self.now()
        if p.sent_at_ms < now - TYPING_STALE_MS:
            return None  # delivered late: meaningless now
        if self.store.conversation(conv) is None:
            return None  # none here (deleted, or a stranger typing first): nothing shows it
        # one device, one conversation, one state: "stopped" right after "typing", or typing
        # in two conversations in a second, is what a user does, not a flood
        key = (inst, conv, active)
        last = self._typing_seen.get(key)
        if last is not None and now - last < TYPING_MIN_INTERVAL_MS:
            raise ContentError("typing indicators too often (flood)")
        if len(self._typing_seen) >= 4096:  # forget what no longer limits anything
            self._typing_seen = {
                k: t for k, t in self._typing_seen.items() if now - t < TYPING_MIN_INTERVAL_MS
            }
        self._typing_seen[key] = now
        if active:
            self.typing[(conv, sender, inst)] = now + TYPING_TTL_MS
        else:
            self.typing.pop((conv, sender, inst), None)
        return self._event(sender, inst, p, conv, b"\x00" * 8)

    def typing_now(self, conv: bytes) -> list[bytes]:
        """Identities shown as typing in a conversation right now (expired ones forgotten)."""
        now = self.now()
        for k in [k for k, until in self.typing.items() if until <= now]:
            del self.typing[k]
        return sorted({i for (c, i, _inst) in self.typing if c == conv})

    # ---- device sync ----
    def _apply_sync(self, item: ct_.SyncItem, at: int, installation: bytes) -> None:
        """A change the user made on another device (at ``at`` ms, on ``installation``): the
        newest change wins, whatever order the two devices' changes arrive in (applied
        unconditionally, two devices changing one setting at once ended swapped)."""
        stamp = self._stamp(at, installation)
        if isinstance(item, ct_.SyncContact):
            if item.identity == self.me:
                return
            if self._newer(stamp, self._stamp_of(item.identity)):
                self._set_contact(item.identity, item.state, item.alias, stamp, at)
        elif isinstance(item, ct_.SyncConv):
            row = self._x(
                "SELECT flags_stamp FROM conversations WHERE id=?", (item.conversation_id,)
            ).fetchone()
            if row is not None and self._newer(stamp, None if row[0] is None else bytes(row[0])):
                self._x(
                    "UPDATE conversations SET muted=?, archived=?, flags_stamp=? WHERE id=?",
                    (int(item.muted), int(item.archived), stamp, item.conversation_id),
                )
        elif isinstance(item, ct_.SyncOwnerKey):
            # picked up (and moved into the passphrase-encrypted keystore) by Client._owner
            self.store.put_secret("owner_key_update", item.private_key)
        elif isinstance(item, ct_.SyncHistory):
            # what the device that approved us got before peers counted us as a device
            from chatcore.identity import forward_allowed, import_forwarded

            if not forward_allowed(self.store, installation, self.now()):
                raise ContentError("history sync from a device that did not link this one")
            shut: list[bytes] = []
            added = import_forwarded(self.store, item.content, shut)
            # a block (or decline) it brings that began here: as a backup's (import_backup),
            # what the person wrote during it and that came here (to a request, say) goes,
            # not what the part holds (it came to our other device before the block)
            held = {
                (bytes.fromhex(m["c"]), bytes.fromhex(m["m"])): m
                for m in item.content.get("messages", [])
            }
            for identity in shut:
                self.stop_waiting_for(identity)
                self.drop_written_while_shut(identity, keep=held)
            for m in added:  # shown as they arrive
                if m.content_type not in ContentType._value2member_map_:
                    continue
                ev = Received(
                    m.conversation_id, m.message_id, m.sender_identity, m.sender_installation,
                    ContentType(m.content_type), m.body, m.lamport, m.sent_at, m.received_at,
                    m.outgoing,
                )  # fmt: skip
                self.engine.side_events.append(ev)
        else:
            if self._newer(stamp, self.store.get_meta("read_receipts_stamp")):
                self.store.set_meta("read_receipts", b"1" if item.read_receipts else b"0")
                self.store.set_meta("read_receipts_stamp", stamp)

    # ==== sending ====
    def _own_devices(self) -> list[PeerKeys]:
        try:
            insts = self.engine.directory.peer(self.me).installations
        except ChatCoreError:
            return []
        return [i for i in insts if i.installation_id != self.engine.installation_id]

    def _sync_own(self, item: ct_.SyncItem, at: int | None = None) -> list[OutFrame]:
        """Tell our other devices of a change the user made (at ``at`` ms: its stamp)."""
        body = ct_.encode_sync(item)
        return self._signal(self.me, self._own_devices(), ContentType.DEVICE_SYNC, body, at=at)

    def forward_history(self, device: PeerKeys, part: dict[str, Any]) -> list[OutFrame]:
        """A part of the history a device of ours missed (``chatcore.identity.forward_parts``),
        to that device only."""
        body = ct_.encode_sync(ct_.SyncHistory(part))
        return self._signal(self.me, [device], ContentType.DEVICE_SYNC, body)

    def _signal(
        self,
        to: bytes,
        insts: Sequence[PeerKeys],
        ct: ContentType,
        body: bytes,
        sync_peer: bytes | None = None,
        ephemeral: bool = False,
        at: int | None = None,
    ) -> list[OutFrame]:
        """A payload that is not a chat message (Lamport 0, not stored, not acknowledged);
        ``at``: its time (ms), now by default."""
        if not insts:
            return []
        now = self.now() if at is None else at
        data = Payload(ct, 0, now, body, (), sync_peer, ephemeral).encode()
        with self.store.transaction():
            return self.engine.encrypt_each(to, insts, data, now, None, None)

    def send_message(
        self, peer: Peer, ct: ContentType, body: bytes, own_devices: Sequence[PeerKeys] = ()
    ) -> SendResult:
        """A text or reply to a 1:1 peer; tracked until every peer device acknowledged it."""
        if self.contact_state(peer.identity_id) == ContactState.BLOCKED:
            raise ContentError("you blocked this identity (contacts unblock first)")
        conv = direct_conversation_id(self.me, peer.identity_id)
        if ct == ContentType.REPLY:
            self._check_target(conv, body[: ct_.MID])
        with self.store.transaction():
            # writing to someone makes them a contact (answering a request accepts it), before
            # the receipts this message carries are chosen: read ones go to contacts only
            was = self.contact_state(peer.identity_id)
            if was != ContactState.CONTACT:
                self._set_contact(
                    peer.identity_id, ContactState.CONTACT, self._alias(peer.identity_id)
                )
                if was == ContactState.REQUEST:
                    self._queue_read_of_earlier(peer.identity_id)
            acks, read = self._piggyback(conv)
            res = self.engine.send(peer, ct, body, own_devices, acks, read)
            self._track(
                res.conversation_id,
                res.message_id,
                _recipients(self, peer, own_devices, res.frames),
            )
            self._carried(conv, acks, read)
        return res

    def send_op(
        self, peer: Peer, ct: ContentType, body: bytes, own_devices: Sequence[PeerKeys] = ()
    ) -> SendResult:
        """An edit, delete or reaction in a 1:1 conversation (applied here first)."""
        conv = direct_conversation_id(self.me, peer.identity_id)
        now = self.now()
        if self.store.conversation(conv) is None:
            raise UnknownContact("no conversation with that identity")
        acks, read = self._piggyback(conv)
        with self.store.transaction():
            lamport = self.store.next_lamport(conv, now)
            history = causal_history(self.store.recent_short_ids(conv, RECENT_HISTORY), acks)
            p = Payload(ct, lamport, now, body, history, read=read)
            ev = self._apply_op(self.me, self.engine.installation_id, p, conv)
            assert ev is not None
            frames = self.engine.encrypt_each(
                peer.identity_id, peer.installations, p.encode(), now, conv, ev.message_id
            )
            sync = Payload(
                ct, lamport, now, body, history, sync_peer=peer.identity_id, read=True
            ).encode()
            others = [i for i in own_devices if i.installation_id != self.engine.installation_id]
            frames += self.engine.encrypt_each(self.me, others, sync, now, conv, ev.message_id)
            self._track(conv, ev.message_id, _recipients(self, peer, own_devices, frames))
        self._carried(conv, acks, read)
        return SendResult(conv, ev.message_id, lamport, now, tuple(frames))

    def _group(self) -> GroupChat:
        if self.groups is None:
            raise ContentError("groups are not enabled")
        return self.groups

    def _group_recipients(self, gid: bytes) -> list[bytes]:
        st = self._group().load(gid)
        if st is None:
            return []
        return sorted(i for ident, insts in st.devices.items() if ident != self.me for i in insts)

    def send_group_message(self, gid: bytes, ct: ContentType, body: bytes) -> SendResult:
        if ct == ContentType.REPLY:
            self._check_target(gid, body[: ct_.MID])
        acks, read = self._piggyback(gid)
        with self.store.transaction():
            res = self._group().send(gid, ct, body, acks, read)
            self.store.add_group_sent(gid, res.message_id, res.frames[0].frame)
            self._track(gid, res.message_id, self._group_recipients(gid))
            # who it was for: its status is measured against them (a member added later
            # cannot read it, so never acknowledges it), not against the members of today
            self._keep_recipients(gid, res.message_id)
        self._carried(gid, acks, read)
        return res

    def _group_frame(self, gid: bytes, p: Payload, mid: bytes | None) -> OutFrame:
        from chatcore.engine import frame_msg_id
        from chatcore.errors import GroupError
        from chatcore.groupchat import group_topic

        g = self._group()
        state = g.load(gid)
        if state is None or not state.is_member:
            raise GroupError("you are not a member of this group")
        new, frame = state.encrypt(p.encode())
        g._save(new)
        subject = group_topic(gid)
        msg_id = frame_msg_id(frame)
        oid = self.store.add_outbox(subject, frame, msg_id, self.now(), gid if mid else None, mid)
        return OutFrame(oid, subject, frame, msg_id)

    def _resend_group(
        self, log_: ConversationLog, gid: bytes, mid: bytes, recipients: tuple[bytes, ...]
    ) -> list[OutFrame]:
        """Re-publish a group message as it first went out, for the member installations that
        have not acknowledged it and still are members' installations. Never re-encrypted
        under today's chain: a member added since the message must not read it (a new
        member's chain starts after it). Devices revoked or members gone since are no
        longer waited for; with nobody left, or the frame not kept, the message is let go."""
        from chatcore.engine import frame_msg_id
        from chatcore.groupchat import group_topic

        pending = log_.outgoing.get(mid)
        frame = self.store.group_sent(gid, mid)
        state = self._group().load(gid)
        current = set(self._group_recipients(gid)) if state and state.is_member else set()
        waiting = [r for r in recipients if r in current]
        if pending is not None:
            pending.recipients.intersection_update(current)
        if frame is None or not waiting:
            log_.outgoing.pop(mid, None)
            return []
        subject = group_topic(gid)
        attempt = pending.attempts if pending is not None else 0
        msg_id = f"{frame_msg_id(frame)}-{attempt}"  # not deduplicated with the first copy
        oid = self.store.add_outbox(subject, frame, msg_id, self.now(), gid, mid)
        return [OutFrame(oid, subject, frame, msg_id)]

    def send_group_op(self, gid: bytes, ct: ContentType, body: bytes) -> SendResult:
        now = self.now()
        acks, read = self._piggyback(gid)
        with self.store.transaction():
            lamport = self.store.next_lamport(gid, now)
            history = causal_history(self.store.recent_short_ids(gid, RECENT_HISTORY), acks)
            p = Payload(ct, lamport, now, body, history, read=read)
            ev = self._apply_op(self.me, self.engine.installation_id, p, gid)
            assert ev is not None
            frame = self._group_frame(gid, p, ev.message_id)
            self.store.add_group_sent(gid, ev.message_id, frame.frame)
            self._track(gid, ev.message_id, self._group_recipients(gid))
        self._carried(gid, acks, read)
        return SendResult(gid, ev.message_id, lamport, now, (frame,))

    def send_typing(
        self, conv: bytes, active: bool = True, *, force: bool = False
    ) -> list[OutFrame]:
        """A typing indicator (rate-limited: at most one per conversation per 3 s)."""
        now = self.now()
        last = self._typing_sent.get(conv)
        if active and not force and last is not None and now - last < TYPING_SEND_INTERVAL_MS:
            return []
        self._typing_sent[conv] = now if active else 0
        body = ct_.encode_typing(active)
        c = self.store.conversation(conv)
        if c is None:
            raise UnknownContact("no such conversation")
        if c.kind == "group":
            p = Payload(ContentType.TYPING, 0, now, body, (), None, True)
            with self.store.transaction():
                return [self._group_frame(conv, p, None)]
        assert c.peer_identity is not None
        if self.contact_state(c.peer_identity) in _NO_TYPING_TO:
            # nothing to someone we blocked (as messages), nor to a stranger whose request
            # we have not accepted (replying accepts it) or declined: as read receipts, it
            # would tell them we are here and reading
            return []
        peer = self.engine.directory.peer(c.peer_identity)
        return self._signal(
            c.peer_identity, peer.installations, ContentType.TYPING, body, None, True
        )

    def _check_target(self, conv: bytes, target: bytes) -> None:
        m = self.store.message(conv, target)
        if m is None or m.content_type not in (ContentType.TEXT, ContentType.REPLY):
            raise ContentError("reply to an unknown message")
        if self._flags(conv, target)[0]:
            raise ContentError("reply to a deleted message")

    def _track(self, conv: bytes, mid: bytes, recipients: list[bytes]) -> None:
        rel = self._rel(self._rk(conv))
        rel.log(self._rk(conv)).sent(mid, recipients, self.now())
        self._save_rel(rel)

    # ---- receipts out, retransmission ----
    def queued_receipts(self) -> int:
        return int(self._x("SELECT COUNT(*) FROM owed_receipts").fetchone()[0])

    def flush(self, due_only: bool = False) -> list[OutFrame]:
        """Queued receipts (batched) and due retransmissions, as frames to publish.

        ``due_only`` (a long-running client's timer): a conversation's receipts wait until the
        oldest has been queued for the conversation's ack delay, in case a message of ours
        carries them first. Otherwise (one-shot commands, shutdown) every receipt goes now."""
        return self.flush_receipts(due_only) + self.retransmit()

    def retransmit(self) -> list[OutFrame]:
        """Messages due for retransmission, re-encrypted for who has not acknowledged them."""
        try:
            return self._retransmit()
        except (ChatCoreError, ValueError) as exc:  # ValueError: a message we cannot re-encode
            log.warning("retransmission failed: %s", exc)
            return []

    def flush_receipts(self, due_only: bool = False) -> list[OutFrame]:
        """Queued receipts, batched (``due_only`` as in :meth:`flush`). A receipt leaves the
        queue in the transaction that puts its frames in the outbox."""
        frames: list[OutFrame] = []
        now = self.now()
        for (conv, kind), ids_d in self._owed_all(own=False).items():
            with self.store.transaction():
                frames += self._flush_owed(conv, kind, ids_d, now, due_only)
        if self._unstored:  # authors of what still waits for its receipt
            waiting = {(c, m) for (c, _k), q in self._owed_all(own=False).items() for m in q}
            self._unstored = {k: v for k, v in self._unstored.items() if k in waiting}
        return frames + self._flush_own_acks(due_only)

    def _flush_owed(
        self, conv: bytes, kind: int, ids_d: dict[bytes, int], now: int, due_only: bool
    ) -> list[OutFrame]:
        c = self.store.conversation(conv)
        if c is not None and due_only:
            delay = GROUP_ACK_DELAY_MS if c.kind == "group" else DIRECT_ACK_DELAY_MS
            if now - min(ids_d.values()) < delay:
                return []  # not yet: a message of ours may carry it
        ids = list(ids_d)
        self._unowe(conv, kind, ids)
        if c is None:
            return []  # the conversation was deleted
        frames: list[OutFrame] = []
        read = kind == ReceiptKind.READ
        for start in range(0, len(ids), ct_.MAX_RECEIPT_IDS):
            chunk = ids[start : start + ct_.MAX_RECEIPT_IDS]
            body = ct_.encode_receipt(ReceiptKind(kind), chunk)
            try:
                if c.kind == "group":
                    frames += self._group_receipts(conv, ReceiptKind(kind), chunk)
                    continue
                assert c.peer_identity is not None
                pid = c.peer_identity
                to_peer = not read or (
                    self.read_receipts and self.contact_state(pid) == ContactState.CONTACT
                )
                if to_peer:
                    peer = self.engine.directory.peer(pid)
                    rk = ReceiptKind(kind)
                    for to, ids_ in self._receipt_targets(conv, peer.installations, chunk, rk):
                        body_ = ct_.encode_receipt(rk, ids_)
                        frames += self._signal(pid, to, ContentType.RECEIPT, body_)
                if read:  # our other devices mark the same messages read, and the sync
                    # copies they sent us that are waiting for a receipt go in the same one
                    own_ids = list(self._owed(conv, _OWN))
                    room = ct_.MAX_RECEIPT_IDS - len(chunk)
                    if own_ids and room > 0:
                        body = ct_.encode_receipt(ReceiptKind.READ, chunk + own_ids[:room])
                        self._unowe(conv, _OWN, own_ids[:room])
                    frames += self._signal(
                        self.me, self._own_devices(), ContentType.RECEIPT, body, sync_peer=pid
                    )
            except Exception as exc:
                if isinstance(exc, StoreError):
                    raise  # nothing is lost: the receipts stay owed
                # the directory is injected: discovery errors (every device of the peer
                # revoked, chain unreachable) arrive here too. A receipt is best effort:
                # the sender's retransmission brings the message back and we ack again.
                log.warning("receipt not sent: %s: %s", type(exc).__name__, exc)
        return frames

    def _flush_own_acks(self, due_only: bool) -> list[OutFrame]:
        """Delivered receipts for sync copies, to our own devices (batched per conversation)."""
        frames: list[OutFrame] = []
        now = self.now()
        for (conv, _kind), ids_d in self._owed_all(own=True).items():
            if due_only and now - min(ids_d.values()) < DIRECT_ACK_DELAY_MS:
                continue
            with self.store.transaction():
                ids = list(ids_d)
                self._unowe(conv, _OWN, ids)
                c = self.store.conversation(conv)
                if c is None or c.peer_identity is None:
                    continue
                try:
                    own = self._own_devices()
                    for start in range(0, len(ids), ct_.MAX_RECEIPT_IDS):
                        body = ct_.encode_receipt(
                            ReceiptKind.DELIVERED, ids[start : start + ct_.MAX_RECEIPT_IDS]
                        )
                        frames += self._signal(
                            self.me, own, ContentType.RECEIPT, body, sync_peer=c.peer_identity
                        )
                except StoreError:
                    raise
                except Exception as exc:  # best effort, as for receipts to peers
                    log.warning("receipt to our devices not sent: %s: %s", type(exc).__name__, exc)
        return frames

    def _retransmit(self) -> list[OutFrame]:
        now = self.now()
        # only the logs with work now: a tick with nothing due reads one index, not every
        # conversation's log (it read and parsed them all, 5 ms with 3,300 messages awaited)
        keys = self._due_keys(now)
        if not keys:
            return []
        with self.store.transaction():
            rel = self._rel(*keys)  # read again under the lock
            due = rel.due(now)
            frames: list[OutFrame] = []
            for r in due:
                frames += self._resend(
                    rel, self._conv_of(r.conversation_id), r.message_id, r.recipients
                )
            self._save_rel(rel)
        return frames

    def _resend(
        self, rel: Reliability, conv: bytes, mid: bytes, recipients: tuple[bytes, ...]
    ) -> list[OutFrame]:
        log_ = rel.log(self._rk(conv))
        m = self.store.message(conv, mid)
        if m is not None and not self._flags(conv, mid)[0]:
            p = Payload(ContentType(m.content_type), m.lamport, m.sent_at, m.body)
        else:
            op = self._op(conv, mid)
            if op is None:
                log_.outgoing.pop(mid, None)
                return []
            p = Payload(ContentType(op[4]), op[2], op[3], op[5])
        if p.message_id(self.engine.installation_id, conv) != mid:
            author = self._author(conv, mid)
            if author is not None and author[1] == self._home_installation():
                return []  # this home's keys now (we run on keys it rotated away): not ours
            log_.outgoing.pop(mid, None)  # an earlier installation's: see pending_by_conversation
            self._given_up(conv, mid)
            return []
        c = self.store.conversation(conv)
        if c is None:
            log_.outgoing.pop(mid, None)
            return []
        if c.kind == "group":
            return self._resend_group(log_, conv, mid, recipients)
        assert c.peer_identity is not None
        try:
            insts = {
                i.installation_id: i
                for i in self.engine.directory.peer(c.peer_identity).installations
            }
        except UnknownContact:
            insts = {}
        own = {i.installation_id: i for i in self._own_devices()}
        sync = replace(p, sync_peer=c.peer_identity, read=True)  # as Engine.send makes it
        frames = []
        for r in recipients:
            if r in insts:
                got = self.engine.encrypt_each(
                    c.peer_identity, [insts[r]], p.encode(), self.now(), conv, mid
                )
            elif r in own:
                got = self.engine.encrypt_each(
                    self.me, [own[r]], sync.encode(), self.now(), conv, mid
                )
            else:
                got = []
            if not got:  # that device is gone (revoked) or unusable: nobody left to wait for
                log_.acked(mid, r)
            frames += got
        return frames

    # ==== views ====
    def view(self, m: StoredMessage) -> MessageView:
        row = self._x(
            "SELECT edited_body, deleted FROM messages WHERE conversation_id=? AND message_id=?",
            (m.conversation_id, m.message_id),
        ).fetchone()
        edited_body = None if row is None or row[0] is None else bytes(row[0])
        deleted = bool(row[1]) if row is not None else False
        if deleted:
            text = ""
        elif edited_body is not None:
            text = edited_body.decode("utf-8", errors="replace")
        else:
            text = ct_.display_text(m.content_type, m.body)
        reactions: dict[str, list[bytes]] = {}
        for who, emoji in self._x(
            "SELECT reactor, emoji FROM reactions WHERE conversation_id=? AND message_id=? "
            "ORDER BY lamport, reactor",
            (m.conversation_id, m.message_id),
        ).fetchall():
            reactions.setdefault(str(emoji), []).append(bytes(who))
        return MessageView(
            text,
            edited_body is not None,
            deleted,
            ct_.reply_target(m.content_type, m.body),
            reactions,
            self.receipts(m.conversation_id, m.message_id) if m.outgoing else {},
        )

    # ---- search ----
    def _index(self) -> None:
        """Bring the full-text index up to date with the messages table (incremental)."""
        done = int(self.store.get_meta("fts_rowid") or b"0")
        rows = self._x(
            "SELECT rowid, content_type, body, edited_body, deleted FROM messages WHERE rowid > ? "
            "ORDER BY rowid",
            (done,),
        ).fetchall()
        with self.store.transaction():
            for rowid, ct, body, edited, deleted in rows:
                done = max(done, int(rowid))
                if deleted or int(ct) not in (ContentType.TEXT, ContentType.REPLY):
                    continue
                text = (
                    bytes(edited).decode("utf-8", "replace")
                    if edited is not None
                    else ct_.display_text(int(ct), bytes(body))
                )
                self._x("INSERT INTO message_fts (rowid, text) VALUES (?,?)", (rowid, text))
            self.store.set_meta("fts_rowid", str(done).encode())

    def search(self, text: str, conv: bytes | None = None, limit: int = 50) -> list[StoredMessage]:
        """Messages whose (current) text matches every word of ``text``, newest first."""
        if "\x00" in text:  # SQLite's full-text query ends at a NUL ("unterminated string")
            raise ValueError("a search cannot hold a NUL character")
        words = text.split()
        if not words:
            raise ValueError("nothing to search for")
        self._index()
        query = " ".join('"' + w.replace('"', '""') + '"' for w in words)
        sql = (
            "SELECT m.conversation_id, m.message_id FROM message_fts f JOIN messages m "
            "ON m.rowid = f.rowid WHERE message_fts MATCH ?"
        )
        args: tuple[Any, ...] = (query,)
        if conv is not None:
            sql += " AND m.conversation_id = ?"
            args += (conv,)
        sql += " ORDER BY m.received_at DESC, m.seq DESC LIMIT ?"
        rows = self._x(sql, (*args, limit)).fetchall()
        out = []
        for cid, mid in rows:
            m = self.store.message(bytes(cid), bytes(mid))
            if m is not None:
                out.append(m)
        return out


def _recipients(
    f: Features, peer: Peer, own_devices: Sequence[PeerKeys], frames: Sequence[OutFrame]
) -> list[bytes]:
    """Who must acknowledge a 1:1 message: the peer's devices and our other devices that
    were sent a frame (not those skipped for unusable keys, see ``Engine.encrypt_each``)."""
    me = f.engine.installation_id
    sent = {fr.subject for fr in frames}
    return [
        i.installation_id
        for i in (*peer.installations, *own_devices)
        if i.installation_id != me and inbox_subject(i.installation_id) in sent
    ]


def _contact(r: Any) -> Contact:
    return Contact(bytes(r[0]), r[1], ContactState(int(r[2])), int(r[3]))


def reindex(store: Store, conv: bytes, mid: bytes) -> None:
    """Bring one message's search entry up to date after an edit or delete (a message not
    indexed yet is left to ``Features._index``, which takes its current text)."""
    row = store._x(
        "SELECT rowid, content_type, edited_body, deleted FROM messages WHERE "
        "conversation_id=? AND message_id=?",
        (conv, mid),
    ).fetchone()
    if row is None:
        return
    rowid = int(row[0])
    if rowid > int(store.get_meta("fts_rowid") or b"0"):
        return
    store._x("DELETE FROM message_fts WHERE rowid=?", (rowid,))
    if not row[3] and row[2] is not None:
        store._x(
            "INSERT INTO message_fts (rowid, text) VALUES (?,?)",
            (rowid, bytes(row[2]).decode("utf-8", "replace")),
        )


def apply_edit(store: Store, conv: bytes, target: bytes, lamport: int, text: bytes) -> bool:
    """Show ``text`` for a message if this edit is newer than the one shown: the later
    Lamport time wins, and between two of one time (the author's two devices at once) the
    larger text, so that every device shows the same. True if it was applied."""
    row = store._x(
        "SELECT edit_lamport, edited_body FROM messages WHERE conversation_id=? AND message_id=?",
        (conv, target),
    ).fetchone()
    if row is None or (lamport, text) <= (int(row[0]), bytes(row[1] or b"")):
        return False
    store._x(
        "UPDATE messages SET edited_body=?, edit_lamport=? WHERE conversation_id=? "
        "AND message_id=?",
        (text, lamport, conv, target),
    )
    reindex(store, conv, target)
    return True


def apply_reaction(
    store: Store, conv: bytes, target: bytes, reactor: bytes, emoji: str, lamport: int
) -> None:
    """``reactor``'s reaction to a message (an empty ``emoji`` takes it back), if newer than
    the one held: the later one wins; between two of one time, the larger emoji."""
    row = store._x(
        "SELECT lamport, emoji FROM reactions WHERE conversation_id=? AND message_id=? "
        "AND reactor=?",
        (conv, target, reactor),
    ).fetchone()
    if row is not None and (int(row[0]), str(row[1])) >= (lamport, emoji):
        return
    if emoji:
        store._x(
            "INSERT OR REPLACE INTO reactions VALUES (?,?,?,?,?)",
            (conv, target, reactor, emoji, lamport),
        )
    else:
        store._x(
            "DELETE FROM reactions WHERE conversation_id=? AND message_id=? AND reactor=?",
            (conv, target, reactor),
        )


def mark_deleted(store: Store, conv: bytes, target: bytes) -> None:
    """A message deleted for everyone: its text and reactions go, and its search entry."""
    store._x(
        "UPDATE messages SET deleted=1, body=x'', edited_body=NULL WHERE "
        "conversation_id=? AND message_id=?",
        (conv, target),
    )
    store._x("DELETE FROM reactions WHERE conversation_id=? AND message_id=?", (conv, target))
    store.recount_unread(conv)
    reindex(store, conv, target)
