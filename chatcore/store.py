"""Local state in one SQLite file, encrypted whole with SQLCipher.

Everything on disk (keys, sessions, conversations, messages, who one talks to) is encrypted
under a 256-bit key derived from the passphrase with scrypt; a wrong passphrase fails with
:class:`WrongPassphrase` and touches nothing. The schema carries a version and upgrades in
``_MIGRATIONS``; every change caused by one incoming message is written in one transaction
(``with store.transaction():``).

``Store.memory()`` gives the same code on an unencrypted in-memory database, for unit tests
and the simulator (one per simulated device; it survives a simulated crash of its engine).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlcipher3 import dbapi2 as sqlcipher

from chatcore.content import ContactState
from chatcore.errors import StoreError, StoreUnavailable, WrongPassphrase

SCHEMA_VERSION = 14
#: the contact states whose time ``block_periods`` keeps (what such a person wrote meanwhile
#: stays hidden)
_SHUT_STATES = (int(ContactState.BLOCKED), int(ContactState.DECLINED))
#: meta: the highest message number given out before messages were deleted (next_seq)
SEQ_FLOOR = "seq_floor"
#: meta key set by ``recovery restore`` (when, ms): such a home knows none of the history its
#: peers hold (see :meth:`Store.next_lamport`, and ``chatcore.features`` on invitations)
RESTORED_AT_META = "restored_at"
#: meta key prefix (+ conversation id in hex): the Lamport clock of a conversation deleted
#: here (:meth:`Store.delete_conversation_row`), taken up again if it comes back
DELETED_CLOCK_META = "deleted_clock:"
#: meta key prefix (+ conversation id in hex): the person of a 1:1 conversation deleted here,
#: kept with its clock so that the conversation can be made again by its id
DELETED_PEER_META = "deleted_peer:"
#: Sessions kept per peer installation (each handshake a peer sends makes one: a peer
#: could otherwise grow our store without bound); the newest are kept.
SESSIONS_PER_INSTALLATION = 4

#: the messages that count as unread (a ``messages`` WHERE clause): notices have their own
#: status ("system"), edits and reactions are no messages. The partial index of schema 10
#: (``messages_unread``) is on these words exactly: SQLite uses it only for a query that
#: says them
UNREAD_WHERE = "outgoing=0 AND status='received' AND deleted=0"

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE sessions (
        tag BLOB PRIMARY KEY,
        peer_identity BLOB NOT NULL,
        peer_installation BLOB NOT NULL,
        state BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        confirmed INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX sessions_by_peer ON sessions (peer_installation, updated_at);
    CREATE TABLE conversations (
        id BLOB PRIMARY KEY,
        kind TEXT NOT NULL,
        peer_identity BLOB,
        title TEXT,
        created_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        lamport INTEGER NOT NULL DEFAULT 0,
        unread INTEGER NOT NULL DEFAULT 0,
        muted INTEGER NOT NULL DEFAULT 0,
        archived INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE messages (
        conversation_id BLOB NOT NULL,
        message_id BLOB NOT NULL,
        sender_identity BLOB NOT NULL,
        sender_installation BLOB NOT NULL,
        lamport INTEGER NOT NULL,
        sent_at INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        content_type INTEGER NOT NULL,
        body BLOB NOT NULL,
        outgoing INTEGER NOT NULL,
        status TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, message_id));
    CREATE INDEX messages_order ON messages (conversation_id, lamport, seq);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id BLOB,
        message_id BLOB,
        subject TEXT NOT NULL,
        frame BLOB NOT NULL,
        msg_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE cursors (subject TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    CREATE TABLE peers (
        identity_id BLOB PRIMARY KEY,
        display TEXT,
        updated_at INTEGER NOT NULL);
    """,
    2: """
    CREATE TABLE groups (
        id BLOB PRIMARY KEY,
        subject TEXT NOT NULL UNIQUE,
        state BLOB NOT NULL,
        updated_at INTEGER NOT NULL);
    CREATE TABLE group_pending (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        group_id BLOB NOT NULL,
        from_installation BLOB NOT NULL,
        item BLOB NOT NULL,
        created_at INTEGER NOT NULL);
    CREATE INDEX group_pending_by_group ON group_pending (group_id, id);
    """,
    # 3: chat features (chatcore.features): contacts, edits/deletes/reactions, receipts, search
    3: """
    CREATE TABLE contacts (
        identity_id BLOB PRIMARY KEY,
        alias TEXT,
        state INTEGER NOT NULL,
        updated_at INTEGER NOT NULL);
    ALTER TABLE messages ADD COLUMN edited_body BLOB;
    ALTER TABLE messages ADD COLUMN edit_lamport INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE content_ops (
        conversation_id BLOB NOT NULL,
        message_id BLOB NOT NULL,
        sender_identity BLOB NOT NULL,
        sender_installation BLOB NOT NULL,
        lamport INTEGER NOT NULL,
        sent_at INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        content_type INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (conversation_id, message_id));
    CREATE TABLE reactions (
        conversation_id BLOB NOT NULL,
        message_id BLOB NOT NULL,
        reactor BLOB NOT NULL,
        emoji TEXT NOT NULL,
        lamport INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, message_id, reactor));
    CREATE TABLE receipts (
        conversation_id BLOB NOT NULL,
        message_id BLOB NOT NULL,
        member BLOB NOT NULL,
        status TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, message_id, member));
    CREATE VIRTUAL TABLE message_fts USING fts5(text);
    """,
    # 4: group messages that could not be decrypted yet (sender key / op not here yet)
    4: """
    CREATE TABLE group_held (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        group_id BLOB NOT NULL,
        frame_hash BLOB NOT NULL,
        frame BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        UNIQUE (group_id, frame_hash));
    CREATE INDEX group_held_by_group ON group_held (group_id, id);
    """,
    # 5: ids of messages dropped because their sender was blocked or declined, so that a
    #    retransmission after an unblock is dropped too (ids only: nothing of the content);
    #    pending group items by sender (each sender's share is bounded); when an identity
    #    was blocked or declined, so what it sent then stays hidden whenever it arrives
    5: """
    CREATE TABLE dropped (
        conversation_id BLOB NOT NULL,
        message_id BLOB NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, message_id));
    CREATE INDEX group_pending_by_sender ON group_pending (from_installation, id);
    CREATE TABLE block_periods (
        identity_id BLOB NOT NULL,
        state INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER,
        PRIMARY KEY (identity_id, start_ms));
    """,
    # 6: who put us in each group (the creator, or the author of the add): invitations from
    #    identities that are not contacts are bounded while we have not written there
    6: """
    CREATE TABLE group_invites (
        group_id BLOB NOT NULL,
        inviter BLOB NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (group_id, inviter));
    CREATE INDEX group_invites_by_inviter ON group_invites (inviter);
    """,
    # 7: the frame each of our group messages went out as, while some member has not
    #    acknowledged it: a retransmission re-publishes these very bytes (under the chain
    #    and iteration of the time), so that a member added since cannot read it
    7: """
    CREATE TABLE group_sent (
        conversation_id BLOB NOT NULL,
        message_id BLOB NOT NULL,
        frame BLOB NOT NULL,
        PRIMARY KEY (conversation_id, message_id));
    """,
    # 8: receipts owed (read receipts are sent once: kept only in memory, a quit lost them
    #    for good); when the user last changed a contact or a conversation's flags, and on
    #    which device (device sync applies the newest change: last writer wins)
    8: """
    CREATE TABLE owed_receipts (
        conversation_id BLOB NOT NULL,
        kind INTEGER NOT NULL,
        message_id BLOB NOT NULL,
        queued_at INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, kind, message_id));
    ALTER TABLE contacts ADD COLUMN stamp BLOB;
    ALTER TABLE conversations ADD COLUMN flags_stamp BLOB;
    """,
    # 9: messages by arrival number: each stored message asks for the highest (a scan of
    #    the whole table before: 6 ms a message at 200,000 messages), and the history
    #    forwarded to a newly linked device is read from a number on
    9: """
    CREATE INDEX messages_by_seq ON messages (seq);
    """,
    # 10: what each received message asked of a whole conversation: whether its sender
    #    wrote here before from another device (every message of the conversation read,
    #    3 ms a message in a conversation of 20,000), and what is unread (every send marks
    #    the conversation read first: all its messages read to find the few unread)
    10: """
    CREATE INDEX messages_by_sender
        ON messages (conversation_id, sender_identity, outgoing, sender_installation);
    CREATE INDEX messages_unread ON messages (conversation_id, lamport, seq)
        WHERE outgoing=0 AND status='received' AND deleted=0;
    """,
    # 11: when each conversation's reliability log (meta ``rel:`` + its key in hex, see
    #    ``chatcore.features``) next has work (a retransmission, or a message to give up
    #    on): the retransmission timer read and parsed every log at each tick, due or not
    #    (5 ms a tick with 3,300 messages awaited). ``chatcore.features`` writes the time
    #    with the log; any other write of a log (the logs an upgrade had, a process of an
    #    older version still running on this home) marks its conversation due now (0), so
    #    that the next tick reads it and puts its real time there
    11: """
    CREATE TABLE rel_due (key TEXT PRIMARY KEY, due_at INTEGER NOT NULL);
    CREATE INDEX rel_due_by_time ON rel_due (due_at);
    INSERT INTO rel_due SELECT substr(key, 5), 0 FROM meta WHERE substr(key, 1, 4) = 'rel:';
    CREATE TRIGGER rel_due_on_insert AFTER INSERT ON meta
        WHEN substr(NEW.key, 1, 4) = 'rel:'
        BEGIN INSERT OR REPLACE INTO rel_due VALUES (substr(NEW.key, 5), 0); END;
    CREATE TRIGGER rel_due_on_update AFTER UPDATE ON meta
        WHEN substr(NEW.key, 1, 4) = 'rel:'
        BEGIN INSERT OR REPLACE INTO rel_due VALUES (substr(NEW.key, 5), 0); END;
    CREATE TRIGGER rel_due_on_delete AFTER DELETE ON meta
        WHEN substr(OLD.key, 1, 4) = 'rel:'
        BEGIN DELETE FROM rel_due WHERE key = substr(OLD.key, 5); END;
    """,
    # 12: when each contact row was last written here, as a number that only grows
    #    (``changed``; 0: before this schema): the contacts forwarded to a newly linked
    #    device are picked by it, not by their date (a change made on a device of ours
    #    whose clock is behind is dated before the cut it arrives after). The numbers come
    #    from an AUTOINCREMENT table (emptied at once: never given out twice, even when a
    #    contact row is deleted); triggers number every write, also one by a process of an
    #    older version still running on this home
    12: """
    ALTER TABLE contacts ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE contact_changes (n INTEGER PRIMARY KEY AUTOINCREMENT);
    CREATE TRIGGER contacts_changed_on_insert AFTER INSERT ON contacts
        BEGIN
            INSERT INTO contact_changes (n) VALUES (NULL);
            UPDATE contacts SET changed = last_insert_rowid()
                WHERE identity_id = NEW.identity_id;
            DELETE FROM contact_changes;
        END;
    CREATE TRIGGER contacts_changed_on_update
        AFTER UPDATE OF identity_id, alias, state, updated_at, stamp ON contacts
        BEGIN
            INSERT INTO contact_changes (n) VALUES (NULL);
            UPDATE contacts SET changed = last_insert_rowid()
                WHERE identity_id = NEW.identity_id;
            DELETE FROM contact_changes;
        END;
    """,
    # 13: the groups we are out of whose topic is no longer read (``group_reading``: read
    #    until ``until``, 0: not at all; no row: read, as every group before this schema).
    #    Filled as each group is saved; the groups of a home upgraded from an earlier
    #    schema are sorted once by the next GroupChat (``group_reading_todo``)
    13: """
    CREATE TABLE group_reading (id BLOB PRIMARY KEY, until INTEGER NOT NULL);
    INSERT INTO meta (key, value)
        SELECT 'group_reading_todo', x'01' WHERE EXISTS (SELECT 1 FROM groups);
    """,
    # 14: a write of a group's state forgets its ``group_reading`` row (read, as before
    #    schema 13) until the writer says otherwise: this version sets the row right after
    #    it saves the group (``GroupChat._save``), but a process of an older version still
    #    running on this home never does, and a group it took us back into stayed unread
    14: """
    CREATE TRIGGER group_reading_on_insert AFTER INSERT ON groups
        BEGIN DELETE FROM group_reading WHERE id = NEW.id; END;
    CREATE TRIGGER group_reading_on_update AFTER UPDATE OF state ON groups
        BEGIN DELETE FROM group_reading WHERE id = NEW.id; END;
    """,
}


def _statements(script: str) -> list[str]:
    """The statements of a migration (a trigger's body holds semicolons of its own)."""
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf)
            buf = ""
    if buf.strip(" \n;"):
        raise ValueError("an incomplete statement in a migration")
    return out


def store_error(exc: Exception) -> StoreError:
    """A typed error for a failed SQLite call: ``StoreUnavailable`` for what is about this
    device and may pass (locked, read-only, full, I/O), ``StoreError`` for the rest."""
    if isinstance(exc, (sqlite3.OperationalError, sqlcipher.OperationalError)):
        return StoreUnavailable(f"local store unavailable: {exc}")
    if isinstance(exc, MemoryError):  # how SQLCipher reports a page that fails its check
        return StoreError("local store damaged (a page does not decrypt) or out of memory")
    return StoreError(f"local store error: {exc}")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    conversation_id: bytes
    message_id: bytes
    sender_identity: bytes
    sender_installation: bytes
    lamport: int
    sent_at: int
    received_at: int
    content_type: int
    body: bytes
    outgoing: bool
    #: ours: "sending" | "sent" | "delivered" | "read", or "failed" (an earlier installation
    #: of ours sent it and it is no longer retransmitted: docs/api.md); others':
    #: "received"; notices: "system"
    status: str
    seq: int


@dataclass(frozen=True, slots=True)
class Conversation:
    id: bytes
    kind: str
    peer_identity: bytes | None
    title: str | None
    created_at: int
    last_at: int
    lamport: int
    unread: int
    muted: bool
    archived: bool


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    conversation_id: bytes | None
    message_id: bytes | None
    subject: str
    frame: bytes
    msg_id: str
    attempts: int


_MSG_COLS = (
    "conversation_id, message_id, sender_identity, sender_installation, lamport, sent_at, "
    "received_at, content_type, body, outgoing, status, seq"
)
_CONV_COLS = "id, kind, peer_identity, title, created_at, last_at, lamport, unread, muted, archived"


def prefix_range(column: str, prefix: bytes) -> tuple[str, tuple[bytes, ...]]:
    """SQL condition (and its arguments) for a BLOB ``column`` starting with ``prefix``, as a
    range an index on the column can seek (BLOBs compare bytewise)."""
    n = int.from_bytes(prefix, "big") + 1
    if not prefix or n >> (8 * len(prefix)):
        return f"{column} >= ?", (prefix,)
    return f"{column} >= ? AND {column} < ?", (prefix, n.to_bytes(len(prefix), "big"))


class Store:
    """One device's local state."""

    def __init__(self, conn: Any) -> None:
        self._db = conn
        self._lock = threading.RLock()
        self._depth = 0
        self._migrate()

    # --- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, key: bytes) -> Store:
        """Open (or create) the encrypted database at ``path`` with a 32-byte raw key."""
        if len(key) != 32:
            raise ValueError("store key must be 32 bytes")
        try:
            conn = sqlcipher.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA cipher_log_level = NONE")
            conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlcipher.OperationalError as exc:  # cannot open the file at all
            raise StoreUnavailable(f"cannot open the local store {path}: {exc}") from exc
        except sqlcipher.DatabaseError as exc:
            # a wrong key and a damaged first page look alike (``Home.open_store`` tells them
            # apart by the owner keystore)
            raise WrongPassphrase("wrong passphrase (cannot decrypt the local store)") from exc
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk (the WAL fsynced) before the frame it made is
            # published; with NORMAL a power cut could roll back a ratchet step whose
            # ciphertext had left, and the next send would reuse its message key and nonce
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA busy_timeout = 5000")
            return cls(conn)
        except (sqlcipher.Error, MemoryError) as exc:
            conn.close()
            raise store_error(exc) from exc

    @classmethod
    def memory(cls) -> Store:
        return cls(sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False))

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        cur = self._db.execute("PRAGMA user_version").fetchone()[0]
        if cur > SCHEMA_VERSION:
            raise StoreError(f"store schema {cur} is newer than this software ({SCHEMA_VERSION})")
        for v in range(cur + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                # another process may have upgraded since we read the version (an app and a
                # CLI command starting at once after an update): read it again under the lock
                if self._db.execute("PRAGMA user_version").fetchone()[0] >= v:
                    continue
                for stmt in _statements(_MIGRATIONS[v]):
                    self._db.execute(stmt)
                self._db.execute(f"PRAGMA user_version = {v}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all (nestable)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._x("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self._x("COMMIT")
            except StoreError:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _x(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        try:
            return self._db.execute(sql, args)
        except (sqlite3.Error, sqlcipher.Error, MemoryError) as exc:
            raise store_error(exc) from exc

    # --- meta and secrets -----------------------------------------------------------------------
    def get_meta(self, key: str) -> bytes | None:
        row = self._x("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        self._x("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))

    def record_invitation(self, group_id: bytes, inviter: bytes, at: int) -> None:
        self._x("INSERT OR IGNORE INTO group_invites VALUES (?,?,?)", (group_id, inviter, at))

    def forget_invitations(self, group_id: bytes) -> None:
        self._x("DELETE FROM group_invites WHERE group_id=?", (group_id,))

    def quiet_invitations(self, me: bytes, inviter: bytes | None = None) -> int:
        """Groups we are in by the invitation of someone who is not a contact (state 1),
        ``inviter`` or anyone, and in which we have not written: unanswered invitations.
        A conversation deleted here no longer counts."""
        sql = (
            "SELECT COUNT(DISTINCT g.group_id) FROM group_invites g "
            "JOIN conversations c ON c.id = g.group_id "
            "LEFT JOIN contacts k ON k.identity_id = g.inviter "
            "WHERE COALESCE(k.state, 0) != 1 AND g.inviter != ? "
            "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = g.group_id "
            "AND m.outgoing = 1 AND m.status != 'system')"
        )
        args: tuple[Any, ...] = (me,)
        if inviter is not None:
            sql += " AND g.inviter = ?"
            args += (inviter,)
        return int(self._x(sql, args).fetchone()[0])

    def meta_with_prefix(self, prefix: str) -> list[tuple[str, bytes]]:
        rows = self._x(
            "SELECT key, value FROM meta WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\uffff"),
        ).fetchall()
        return [(str(k), bytes(v)) for k, v in rows]

    def delete_meta(self, key: str) -> None:
        self._x("DELETE FROM meta WHERE key=?", (key,))

    def delete_meta_with_prefix(self, prefix: str) -> None:
        self._x("DELETE FROM meta WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff"))

    def get_secret(self, name: str) -> bytes | None:
        row = self._x("SELECT value FROM secrets WHERE name=?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_secret(self, name: str, value: bytes) -> None:
        self._x("INSERT OR REPLACE INTO secrets VALUES (?,?)", (name, value))

    def secrets_with_prefix(self, prefix: str) -> list[tuple[str, bytes]]:
        rows = self._x(
            "SELECT name, value FROM secrets WHERE name >= ? AND name < ? ORDER BY name",
            (prefix, prefix + "\uffff"),
        ).fetchall()
        return [(str(n), bytes(v)) for n, v in rows]

    def delete_secret(self, name: str) -> None:
        self._x("DELETE FROM secrets WHERE name=?", (name,))

    # --- sessions -----------------------------------------------------------------------------
    def save_session(
        self,
        tag: bytes,
        peer_identity: bytes,
        peer_installation: bytes,
        state: bytes,
        now: int,
        confirmed: bool = False,
    ) -> None:
        self._x(
            "INSERT INTO sessions (tag, peer_identity, peer_installation, state, created_at, "
            "updated_at, confirmed) VALUES (?,?,?,?,?,?,?) ON CONFLICT(tag) DO UPDATE SET "
            "state=excluded.state, updated_at=excluded.updated_at, "
            "confirmed=MAX(confirmed, excluded.confirmed)",
            (tag, peer_identity, peer_installation, state, now, now, int(confirmed)),
        )

    def replace_session(
        self,
        expected: bytes | None,
        tag: bytes,
        peer_identity: bytes,
        peer_installation: bytes,
        state: bytes,
        now: int,
    ) -> bool:
        """Save a session a received frame advanced, only if its stored state is still
        ``expected`` (None: there was none). Call inside a transaction. False: another
        process on this home changed it since it was read (its write must not be undone:
        a sending chain put back would reuse a message key). Keeps the newest
        ``SESSIONS_PER_INSTALLATION`` sessions per peer installation."""
        row = self._x("SELECT state FROM sessions WHERE tag=?", (tag,)).fetchone()
        if (None if row is None else bytes(row[0])) != expected:
            return False
        self.save_session(tag, peer_identity, peer_installation, state, now, confirmed=True)
        if row is None:
            self._x(
                "DELETE FROM sessions WHERE peer_installation=? AND tag NOT IN (SELECT tag FROM "
                "sessions WHERE peer_installation=? ORDER BY updated_at DESC, rowid DESC "
                "LIMIT ?)",
                (peer_installation, peer_installation, SESSIONS_PER_INSTALLATION),
            )
        return True

    def session_by_tag(self, tag: bytes) -> tuple[bytes, bytes, bytes] | None:
        """(peer_identity, peer_installation, state) of the session with this routing tag."""
        row = self._x(
            "SELECT peer_identity, peer_installation, state FROM sessions WHERE tag=?", (tag,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]), bytes(row[2]))

    def session_for(self, peer_installation: bytes) -> tuple[bytes, bytes] | None:
        """(tag, state) of the session to use for sending to an installation: the newest."""
        row = self._x(
            "SELECT tag, state FROM sessions WHERE peer_installation=? "
            "ORDER BY confirmed DESC, updated_at DESC, rowid DESC LIMIT 1",
            (peer_installation,),
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def count_sessions(self) -> int:
        return int(self._x("SELECT COUNT(*) FROM sessions").fetchone()[0])

    def delete_sessions(self) -> None:
        """Forget every pairwise session (after this installation's keys were rotated)."""
        self._x("DELETE FROM sessions")

    # --- conversations ----------------------------------------------------------------------------
    def ensure_conversation(
        self, conv_id: bytes, kind: str, peer_identity: bytes | None, title: str | None, now: int
    ) -> None:
        self._x(
            "INSERT OR IGNORE INTO conversations (id, kind, peer_identity, title, created_at, "
            "last_at) VALUES (?,?,?,?,?,?)",
            (conv_id, kind, peer_identity, title, now, now),
        )
        key = DELETED_CLOCK_META + conv_id.hex()
        clock = self.get_meta(key)
        if clock is not None:  # deleted here, the peers still hold its history
            self._x(
                "UPDATE conversations SET lamport=MAX(lamport, ?) WHERE id=?", (int(clock), conv_id)
            )
            self.delete_meta(key)
            self.delete_meta(DELETED_PEER_META + conv_id.hex())

    def delete_conversation_row(self, conv_id: bytes) -> None:
        """Forget a conversation here, but not its clock: the group or the person is still
        there, and our next message in it must sort after what the peers hold (with the
        clock back at 0 it showed at the top of the conversation at every peer)."""
        c = self.conversation(conv_id)
        if c is None:
            return
        self._x("DELETE FROM conversations WHERE id=?", (conv_id,))
        self.set_meta(DELETED_CLOCK_META + conv_id.hex(), str(c.lamport).encode())
        if c.peer_identity is not None:
            self.set_meta(DELETED_PEER_META + conv_id.hex(), c.peer_identity)

    def deleted_here(self, conv_id: bytes) -> bool:
        """Was this conversation deleted here (and not made again since)?"""
        return self.get_meta(DELETED_CLOCK_META + conv_id.hex()) is not None

    def deleted_peer(self, conv_id: bytes) -> bytes | None:
        """The person of a 1:1 conversation deleted here, if it was kept (None for a group,
        or a conversation deleted before the person was kept with the clock)."""
        return self.get_meta(DELETED_PEER_META + conv_id.hex())

    def known_identities(self) -> list[bytes]:
        """Everyone this home has a session, a name or a contact state with."""
        rows = self._x(
            "SELECT peer_identity FROM sessions UNION SELECT identity_id FROM peers "
            "UNION SELECT identity_id FROM contacts"
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def conversation(self, conv_id: bytes) -> Conversation | None:
        row = self._x(f"SELECT {_CONV_COLS} FROM conversations WHERE id=?", (conv_id,)).fetchone()
        return None if row is None else _conv(row)

    def conversations(self) -> list[Conversation]:
        rows = self._x(
            f"SELECT {_CONV_COLS} FROM conversations ORDER BY last_at DESC, id"
        ).fetchall()
        return [_conv(r) for r in rows]

    def find_conversations(self, prefix: bytes) -> list[Conversation]:
        rows = self._x(
            f"SELECT {_CONV_COLS} FROM conversations WHERE substr(id, 1, ?) = ? LIMIT 16",
            (len(prefix), prefix),
        ).fetchall()
        return [_conv(r) for r in rows]

    def next_lamport(self, conv_id: bytes, now_ms: int) -> int:
        """The Lamport value of our next message in a conversation: one past the clock. In
        a home made by ``recovery restore`` a conversation may be new *here* while peers
        hold its history (whose clock we cannot know): one that starts here starts from the
        wall clock in seconds, so that our first messages do not sort before that history
        at the peers (before, they showed at the top of the conversation)."""
        c = self.conversation(conv_id)
        if c is not None:
            current = c.lamport
        else:  # new here, or deleted here (its clock kept)
            current = int(self.get_meta(DELETED_CLOCK_META + conv_id.hex()) or b"0")
        if (
            self.get_meta(RESTORED_AT_META) is not None
            and not self._x(
                "SELECT 1 FROM messages WHERE conversation_id=? AND status!='system' LIMIT 1",
                (conv_id,),
            ).fetchone()
        ):  # nothing here but our own notices ("you were added"): new here
            return max(current + 1, now_ms // 1000)
        return current + 1

    def bump_lamport(self, conv_id: bytes, seen: int) -> int:
        """Lamport rule: local clock = max(local, seen). Returns the new value.
        Raises MalformedMessage if ``seen`` leaps too far."""
        self._check_lamport_step(conv_id, seen)
        self._x("UPDATE conversations SET lamport=MAX(lamport, ?) WHERE id=?", (seen, conv_id))
        row = self._x("SELECT lamport FROM conversations WHERE id=?", (conv_id,)).fetchone()
        return int(row[0]) if row else seen

    def mark_read(self, conv_id: bytes) -> None:
        self._x("UPDATE conversations SET unread=0 WHERE id=?", (conv_id,))

    def recount_unread(self, conv_id: bytes) -> None:
        """Count again what is unread: received here, not read, not deleted for everyone."""
        self._x(
            f"UPDATE conversations SET unread=(SELECT COUNT(*) FROM messages WHERE "
            f"conversation_id=? AND {UNREAD_WHERE}) WHERE id=?",
            (conv_id, conv_id),
        )

    def recount_last_at(self, conv_id: bytes) -> None:
        """Its last activity again, after messages went (as :meth:`add_message` keeps it):
        when its newest message came, or, without any, when it was made."""
        self._x(
            "UPDATE conversations SET last_at=COALESCE((SELECT MAX(received_at) FROM messages "
            "WHERE conversation_id=?), created_at) WHERE id=?",
            (conv_id, conv_id),
        )

    # --- messages -----------------------------------------------------------------------------
    def has_message(self, conv_id: bytes, message_id: bytes) -> bool:
        row = self._x(
            "SELECT 1 FROM messages WHERE conversation_id=? AND message_id=?", (conv_id, message_id)
        ).fetchone()
        return row is not None

    def _check_lamport_step(self, conv_id: bytes, lamport: int) -> None:
        """A peer's clock may not leap far past the conversation's (chatcore.payload)."""
        from chatcore.errors import MalformedMessage
        from chatcore.payload import MAX_LAMPORT_STEP

        row = self._x("SELECT lamport FROM conversations WHERE id=?", (conv_id,)).fetchone()
        if lamport > (int(row[0]) if row else 0) + MAX_LAMPORT_STEP:
            raise MalformedMessage("lamport clock leaps too far ahead of the conversation")

    def add_message(self, m: StoredMessage, *, check_clock: bool = True) -> bool:
        """Insert a message; False (and nothing written) if it is already there.
        Raises MalformedMessage if its Lamport clock leaps too far (``check_clock=False``:
        our own copy of a history, such as a backup, where clocks moved with edits that are
        not in it)."""
        if check_clock:
            self._check_lamport_step(m.conversation_id, m.lamport)
        cur = self._x(
            f"INSERT OR IGNORE INTO messages ({_MSG_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                m.conversation_id,
                m.message_id,
                m.sender_identity,
                m.sender_installation,
                m.lamport,
                m.sent_at,
                m.received_at,
                m.content_type,
                m.body,
                int(m.outgoing),
                m.status,
                m.seq,
            ),
        )
        if cur.rowcount != 1:
            return False
        self._x(
            "UPDATE conversations SET last_at=MAX(last_at, ?), lamport=MAX(lamport, ?), "
            "unread=unread + ? WHERE id=?",
            # notices ("system") are not unread: reading cannot mark them on our other devices
            (
                m.received_at,
                m.lamport,
                int(not m.outgoing and m.status == "received"),
                m.conversation_id,
            ),
        )
        return True

    def new_device_of(self, conv_id: bytes, identity: bytes, installation: bytes) -> bool:
        """Has ``identity`` written in this conversation before, but never from ``installation``?"""
        # two seeks in messages_by_sender (not every message of the identity here)
        return self.wrote_here(conv_id, identity) and not self.wrote_here(
            conv_id, identity, installation
        )

    def wrote_here(
        self, conv_id: bytes, identity: bytes, installation: bytes | None = None
    ) -> bool:
        """Is a message of ``identity`` (from ``installation``, if given) stored here?"""
        q = "SELECT 1 FROM messages WHERE conversation_id=? AND sender_identity=? AND outgoing=0"
        if installation is None:
            return self._x(q + " LIMIT 1", (conv_id, identity)).fetchone() is not None
        q += " AND sender_installation=? LIMIT 1"
        return self._x(q, (conv_id, identity, installation)).fetchone() is not None

    def next_seq(self) -> int:
        """The next arrival number: past every message stored, and past those deleted
        (``keep_seq_floor``), so a number is never given out twice."""
        return max(self._top_seq(), self._seq_floor()) + 1

    def contact_state_changed(self, identity: bytes, was: int | None, now: int, at: int) -> bool:
        """Keep the block periods (``block_periods``) as a contact's state goes from ``was``
        to ``now`` at ``at`` (ms): a block or decline that ends there, or begins. True if
        one begins."""
        if now == was:
            return False
        if was in _SHUT_STATES:
            self._x(
                "UPDATE block_periods SET end_ms=? WHERE identity_id=? AND end_ms IS NULL",
                (at, identity),
            )
        if now not in _SHUT_STATES:
            return False
        self._x("INSERT OR REPLACE INTO block_periods VALUES (?,?,?,NULL)", (identity, now, at))
        return True

    def last_contact_change(self) -> int:
        """The number of the latest write of a contact row here (``contacts.changed``, schema
        12): the contacts written after a cut are those numbered higher."""
        (top,) = self._x("SELECT COALESCE(MAX(changed), 0) FROM contacts").fetchone()
        return int(top)

    def keep_seq_floor(self) -> None:
        """Before messages are deleted: remember the highest number given out."""
        top = self._top_seq()
        if top > self._seq_floor():
            self.set_meta(SEQ_FLOOR, str(top).encode())

    def _top_seq(self) -> int:
        (top,) = self._x("SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()
        return int(top)

    def _seq_floor(self) -> int:
        return int(self.get_meta(SEQ_FLOOR) or b"0")

    def set_status(self, conv_id: bytes, message_id: bytes, status: str) -> None:
        self._x(
            "UPDATE messages SET status=? WHERE conversation_id=? AND message_id=?",
            (status, conv_id, message_id),
        )

    def history(
        self, conv_id: bytes, limit: int = 50, before: tuple[int, int] | None = None
    ) -> list[StoredMessage]:
        """Messages in causal (Lamport, then arrival) order; the newest ``limit`` before a point."""
        if before is None:
            rows = self._x(
                f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id=? "
                "ORDER BY lamport DESC, seq DESC LIMIT ?",
                (conv_id, limit),
            ).fetchall()
        else:
            rows = self._x(
                f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id=? "
                "AND (lamport < ? OR (lamport = ? AND seq < ?)) "
                "ORDER BY lamport DESC, seq DESC LIMIT ?",
                (conv_id, before[0], before[0], before[1], limit),
            ).fetchall()
        return [_msg(r) for r in reversed(rows)]

    def message(self, conv_id: bytes, message_id: bytes) -> StoredMessage | None:
        row = self._x(
            f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id=? AND message_id=?",
            (conv_id, message_id),
        ).fetchone()
        return None if row is None else _msg(row)

    def messages_named(self, conv_id: bytes, shorts: Sequence[bytes]) -> list[StoredMessage]:
        """Messages of ``conv_id`` whose ids start with one of ``shorts`` (the short ids a
        causal history names): one primary-key range seek per short id."""
        out: list[StoredMessage] = []
        for short in dict.fromkeys(shorts):
            sql, args = prefix_range("message_id", short)
            rows = self._x(
                f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id=? AND {sql}",
                (conv_id, *args),
            ).fetchall()
            out += [_msg(r) for r in rows]
        return out

    def find_message(self, message_id_prefix: bytes) -> list[StoredMessage]:
        """Messages whose id starts with the prefix (at most a few: ids are random)."""
        rows = self._x(
            f"SELECT {_MSG_COLS} FROM messages WHERE substr(message_id, 1, ?) = ? LIMIT 16",
            (len(message_id_prefix), message_id_prefix),
        ).fetchall()
        return [_msg(r) for r in rows]

    def last_message(self, conv_id: bytes) -> StoredMessage | None:
        h = self.history(conv_id, limit=1)
        return h[0] if h else None

    def recent_short_ids(self, conv_id: bytes, n: int) -> list[bytes]:
        """Causal history for the next message: newest real messages (local notices are
        never on the wire, so they must not be referenced)."""
        rows = self._x(
            "SELECT message_id FROM messages WHERE conversation_id=? AND status != 'system' "
            "ORDER BY lamport DESC, seq DESC LIMIT ?",
            (conv_id, n),
        ).fetchall()
        return [bytes(r[0])[:4] for r in rows]

    # --- group frames kept for retransmission ----------------------------------------------
    def add_group_sent(self, conv_id: bytes, message_id: bytes, frame: bytes) -> None:
        self._x(
            "INSERT OR REPLACE INTO group_sent (conversation_id, message_id, frame) "
            "VALUES (?, ?, ?)",
            (conv_id, message_id, frame),
        )

    def group_sent(self, conv_id: bytes, message_id: bytes) -> bytes | None:
        row = self._x(
            "SELECT frame FROM group_sent WHERE conversation_id=? AND message_id=?",
            (conv_id, message_id),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def group_sent_keys(self) -> list[tuple[bytes, bytes]]:
        rows = self._x("SELECT conversation_id, message_id FROM group_sent").fetchall()
        return [(bytes(r[0]), bytes(r[1])) for r in rows]

    def group_sent_ids(self, conv_id: bytes) -> list[bytes]:
        rows = self._x(
            "SELECT message_id FROM group_sent WHERE conversation_id=?", (conv_id,)
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def delete_group_sent(self, conv_id: bytes, message_id: bytes) -> None:
        self._x(
            "DELETE FROM group_sent WHERE conversation_id=? AND message_id=?",
            (conv_id, message_id),
        )

    # --- outbox -------------------------------------------------------------------------------
    def add_outbox(
        self,
        subject: str,
        frame: bytes,
        msg_id: str,
        now: int,
        conv_id: bytes | None = None,
        message_id: bytes | None = None,
    ) -> int:
        cur = self._x(
            "INSERT INTO outbox (conversation_id, message_id, subject, frame, msg_id, "
            "created_at, next_at) VALUES (?,?,?,?,?,?,?)",
            (conv_id, message_id, subject, frame, msg_id, now, now),
        )
        return int(cur.lastrowid)

    def pending_outbox(self, now: int | None = None) -> list[OutboxItem]:
        sql = "SELECT id, conversation_id, message_id, subject, frame, msg_id, attempts FROM outbox"
        args: tuple[Any, ...] = ()
        if now is not None:
            sql += " WHERE next_at <= ?"
            args = (now,)
        rows = self._x(sql + " ORDER BY id", args).fetchall()
        return [
            OutboxItem(
                int(r[0]),
                None if r[1] is None else bytes(r[1]),
                None if r[2] is None else bytes(r[2]),
                str(r[3]),
                bytes(r[4]),
                str(r[5]),
                int(r[6]),
            )
            for r in rows
        ]

    def outbox_done(self, item_id: int) -> tuple[bytes | None, bytes | None, bool]:
        """Remove an acknowledged item. Returns (conv, message, whether it was the last)."""
        row = self._x(
            "SELECT conversation_id, message_id FROM outbox WHERE id=?", (item_id,)
        ).fetchone()
        self._x("DELETE FROM outbox WHERE id=?", (item_id,))
        if row is None or row[1] is None:
            return None, None, False
        left = self._x(
            "SELECT COUNT(*) FROM outbox WHERE conversation_id=? AND message_id=?",
            (row[0], row[1]),
        ).fetchone()[0]
        return bytes(row[0]), bytes(row[1]), left == 0

    def outbox_retry_later(self, item_id: int, next_at: int) -> None:
        self._x("UPDATE outbox SET attempts=attempts + 1, next_at=? WHERE id=?", (next_at, item_id))

    def outbox_size(self) -> int:
        return int(self._x("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # --- cursors ------------------------------------------------------------------------------
    def cursor(self, subject: str) -> int:
        row = self._x("SELECT seq FROM cursors WHERE subject=?", (subject,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_cursor(self, subject: str, seq: int) -> None:
        self._x(
            "INSERT INTO cursors VALUES (?,?) ON CONFLICT(subject) DO UPDATE SET "
            "seq=MAX(seq, excluded.seq)",
            (subject, seq),
        )

    def max_cursor(self) -> int:
        return int(self._x("SELECT COALESCE(MAX(seq), 0) FROM cursors").fetchone()[0])

    def reset_cursors(self) -> None:
        """Every subject is read from its start again (the delivery network's store was made
        again: its sequence numbers started over)."""
        self._x("DELETE FROM cursors")

    def set_conversation_title(self, conv_id: bytes, title: str | None) -> None:
        self._x("UPDATE conversations SET title=? WHERE id=?", (title, conv_id))

    # --- groups -------------------------------------------------------------------------------
    def group_state(self, group_id: bytes) -> bytes | None:
        row = self._x("SELECT state FROM groups WHERE id=?", (group_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def save_group(self, group_id: bytes, subject: str, state: bytes, now: int) -> None:
        self._x(
            "INSERT INTO groups VALUES (?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
            "state=excluded.state, updated_at=excluded.updated_at",
            (group_id, subject, state, now),
        )

    def group_subjects(self, now: int | None = None) -> list[str]:
        """The topics of our groups; with ``now``, only those still read then (see
        ``set_group_reading``)."""
        if now is None:
            return [str(r[0]) for r in self._x("SELECT subject FROM groups ORDER BY subject")]
        rows = self._x(
            "SELECT g.subject FROM groups g LEFT JOIN group_reading r ON r.id = g.id "
            "WHERE r.until IS NULL OR r.until >= ? ORDER BY g.subject",
            (now,),
        )
        return [str(r[0]) for r in rows]

    def set_group_reading(self, group_id: bytes, until: int | None) -> None:
        """Read the group's topic until ``until`` (our clock, ms; 0: no longer), or for good
        (``None``: we are in the group). After ``save_group``: saving forgets it (schema 14)."""
        if until is None:
            self._x("DELETE FROM group_reading WHERE id=?", (group_id,))
        else:
            self._x("INSERT OR REPLACE INTO group_reading VALUES (?,?)", (group_id, until))

    def group_ids(self) -> list[bytes]:
        return [bytes(r[0]) for r in self._x("SELECT id FROM groups ORDER BY id")]

    def group_by_subject(self, subject: str) -> bytes | None:
        row = self._x("SELECT id FROM groups WHERE subject=?", (subject,)).fetchone()
        return None if row is None else bytes(row[0])

    def add_group_pending(self, group_id: bytes, inst: bytes, item: bytes, now: int) -> None:
        self._x(
            "INSERT INTO group_pending (group_id, from_installation, item, created_at) "
            "VALUES (?,?,?,?)",
            (group_id, inst, item, now),
        )
        # bounded: forget the oldest beyond 4,096 per group, beyond 1,024 from one sending
        # installation (it picks the group ids, so the first bound alone does not hold it),
        # and beyond 16,384 in all
        self._x(
            "DELETE FROM group_pending WHERE group_id=? AND id NOT IN (SELECT id FROM "
            "group_pending WHERE group_id=? ORDER BY id DESC LIMIT 4096)",
            (group_id, group_id),
        )
        self._x(
            "DELETE FROM group_pending WHERE from_installation=? AND id NOT IN (SELECT id FROM "
            "group_pending WHERE from_installation=? ORDER BY id DESC LIMIT 1024)",
            (inst, inst),
        )
        self._x(
            "DELETE FROM group_pending WHERE id NOT IN (SELECT id FROM group_pending "
            "ORDER BY id DESC LIMIT 16384)"
        )

    def group_pending(self, group_id: bytes) -> list[tuple[int, bytes, bytes]]:
        """Pending items of a group, welcome parts (kind 0x18) left out: see group_parts."""
        rows = self._x(
            "SELECT id, from_installation, item FROM group_pending WHERE group_id=? "
            "AND substr(item, 1, 1) != x'18' ORDER BY id",
            (group_id,),
        ).fetchall()
        return [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    def group_parts_from(self, inst: bytes) -> list[tuple[int, bytes, bytes]]:
        """(id, group id, first 96 bytes) of the welcome parts kept from one installation."""
        rows = self._x(
            "SELECT id, group_id, substr(item, 1, 96) FROM group_pending "
            "WHERE from_installation=? AND substr(item, 1, 1) = x'18' ORDER BY id",
            (inst,),
        ).fetchall()
        return [(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    def group_pending_items(self, ids: list[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for pid in ids:
            row = self._x("SELECT item FROM group_pending WHERE id=?", (pid,)).fetchone()
            if row is not None:
                out[pid] = bytes(row[0])
        return out

    def delete_group_pending(self, pending_id: int) -> None:
        self._x("DELETE FROM group_pending WHERE id=?", (pending_id,))

    def add_group_held(self, group_id: bytes, frame: bytes, now: int, limit: int) -> None:
        """Keep a group frame that could not be decrypted yet (idempotent; the oldest
        beyond ``limit`` per group are forgotten)."""
        h = hashlib.sha256(frame).digest()[:16]
        self._x(
            "INSERT OR IGNORE INTO group_held (group_id, frame_hash, frame, created_at) "
            "VALUES (?,?,?,?)",
            (group_id, h, frame, now),
        )
        self._x(
            "DELETE FROM group_held WHERE group_id=? AND id NOT IN (SELECT id FROM "
            "group_held WHERE group_id=? ORDER BY id DESC LIMIT ?)",
            (group_id, group_id, limit),
        )

    def group_held(self, group_id: bytes) -> list[tuple[int, bytes, int, int]]:
        """(id, frame, created_at, attempts) of held frames, oldest first."""
        rows = self._x(
            "SELECT id, frame, created_at, attempts FROM group_held WHERE group_id=? ORDER BY id",
            (group_id,),
        ).fetchall()
        return [(int(r[0]), bytes(r[1]), int(r[2]), int(r[3])) for r in rows]

    def group_held_count(self, group_id: bytes | None = None) -> int:
        if group_id is None:
            return int(self._x("SELECT COUNT(*) FROM group_held").fetchone()[0])
        q = "SELECT COUNT(*) FROM group_held WHERE group_id=?"
        return int(self._x(q, (group_id,)).fetchone()[0])

    def group_held_tried(self, held_id: int) -> None:
        self._x("UPDATE group_held SET attempts = attempts + 1 WHERE id=?", (held_id,))

    def delete_group_held(self, held_id: int) -> None:
        self._x("DELETE FROM group_held WHERE id=?", (held_id,))

    # --- peers (display names cache) ------------------------------------------------------------
    def set_peer_display(self, identity_id: bytes, display: str | None, now: int) -> None:
        self._x(
            "INSERT INTO peers VALUES (?,?,?) ON CONFLICT(identity_id) DO UPDATE SET "
            "display=excluded.display, updated_at=excluded.updated_at",
            (identity_id, display, now),
        )

    def peer_displays(self) -> list[tuple[bytes, str]]:
        """Every remembered (identity, name) pair."""
        rows = self._x("SELECT identity_id, display FROM peers WHERE display IS NOT NULL")
        return [(bytes(r[0]), str(r[1])) for r in rows.fetchall()]

    def peer_display(self, identity_id: bytes) -> str | None:
        row = self._x("SELECT display FROM peers WHERE identity_id=?", (identity_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])


def _msg(r: Any) -> StoredMessage:
    return StoredMessage(
        bytes(r[0]),
        bytes(r[1]),
        bytes(r[2]),
        bytes(r[3]),
        int(r[4]),
        int(r[5]),
        int(r[6]),
        int(r[7]),
        bytes(r[8]),
        bool(r[9]),
        str(r[10]),
        int(r[11]),
    )


def _conv(r: Any) -> Conversation:
    return Conversation(
        bytes(r[0]),
        str(r[1]),
        None if r[2] is None else bytes(r[2]),
        r[3],
        int(r[4]),
        int(r[5]),
        int(r[6]),
        int(r[7]),
        bool(r[8]),
        bool(r[9]),
    )
