"""The local store: schema, encryption at rest, paging, conversation views, transactions."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from chatcore.errors import StoreError, WrongPassphrase
from chatcore.store import SCHEMA_VERSION, Store, StoredMessage

KEY = bytes(range(32))


def msg(
    conv: bytes,
    i: int,
    *,
    lamport: int | None = None,
    outgoing: bool = False,
    at: int | None = None,
    seq: int | None = None,
) -> StoredMessage:
    return StoredMessage(
        conversation_id=conv,
        message_id=i.to_bytes(8, "big"),
        sender_identity=b"\x01" * 32,
        sender_installation=b"\x02" * 32,
        lamport=i if lamport is None else lamport,
        sent_at=1000 + i,
        received_at=1000 + i if at is None else at,
        content_type=1,
        body=f"m{i}".encode(),
        outgoing=outgoing,
        status="sent" if outgoing else "received",
        seq=i if seq is None else seq,
    )


def test_schema_version_memory_and_file(tmp_path: Path) -> None:
    assert Store.memory().schema_version == SCHEMA_VERSION
    p = tmp_path / "s.db"
    s = Store.open(p, KEY)
    assert s.schema_version == SCHEMA_VERSION
    s.set_meta("x", b"1")
    s.close()
    s = Store.open(p, KEY)  # reopening migrates nothing and keeps data
    assert s.schema_version == SCHEMA_VERSION and s.get_meta("x") == b"1"
    s._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    s.close()
    with pytest.raises(StoreError):
        Store.open(p, KEY)


def test_wrong_key_on_a_real_file(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    s = Store.open(p, KEY)
    secret = b"very secret session state " * 4
    with s.transaction():
        s.put_secret("installation", secret)
        s.set_meta("identity_id", b"\x42" * 32)
    s.close()
    raw = p.read_bytes() + (
        (tmp_path / "s.db-wal").read_bytes() if (tmp_path / "s.db-wal").exists() else b""
    )
    assert not raw.startswith(b"SQLite format 3")
    assert secret[:20] not in raw and b"installation" not in raw
    with pytest.raises(WrongPassphrase):
        Store.open(p, bytes(32))
    with pytest.raises(WrongPassphrase):
        Store.open(p, os.urandom(32))
    with pytest.raises(ValueError):
        Store.open(p, KEY[:16])
    s = Store.open(p, KEY)  # the failed attempts changed nothing
    assert s.get_secret("installation") == secret
    s.close()


def test_history_paging() -> None:
    s = Store.memory()
    conv, other = b"\xaa" * 16, b"\xbb" * 16
    s.ensure_conversation(conv, "direct", b"\x01" * 32, None, 0)
    s.ensure_conversation(other, "direct", b"\x03" * 32, None, 0)
    for i in range(1, 26):
        assert s.add_message(msg(conv, i))
        s.add_message(msg(other, 100 + i, lamport=i))
    assert not s.add_message(msg(conv, 3))  # already there: nothing written
    page = s.history(conv, limit=10)
    assert [m.lamport for m in page] == list(range(16, 26))  # newest ten, oldest first
    seen = [m.message_id for m in page]
    while True:
        first = page[0]
        page = s.history(conv, limit=10, before=(first.lamport, first.seq))
        if not page:
            break
        assert page[-1].lamport < first.lamport
        seen = [m.message_id for m in page] + seen
    assert seen == [i.to_bytes(8, "big") for i in range(1, 26)]
    assert s.last_message(conv).lamport == 25  # type: ignore[union-attr]


def test_history_ties_break_by_arrival() -> None:
    s = Store.memory()
    conv = b"\xaa" * 16
    s.ensure_conversation(conv, "direct", None, None, 0)
    s.add_message(msg(conv, 1, lamport=1, seq=1))
    s.add_message(msg(conv, 3, lamport=2, seq=4))
    s.add_message(msg(conv, 2, lamport=2, seq=3))
    s.add_message(msg(conv, 4, lamport=3, seq=2))
    assert [m.body for m in s.history(conv)] == [b"m1", b"m2", b"m3", b"m4"]
    assert [m.body for m in s.history(conv, before=(2, 4))] == [b"m1", b"m2"]
    assert s.recent_short_ids(conv, 2) == [(4).to_bytes(8, "big")[:4], (3).to_bytes(8, "big")[:4]]


def test_conversations_newest_first_with_unread() -> None:
    s = Store.memory()
    c1, c2, c3 = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
    for c in (c1, c2, c3):
        s.ensure_conversation(c, "direct", c * 2, None, 0)
    s.add_message(msg(c1, 1, at=10))
    s.add_message(msg(c2, 2, at=20))
    s.add_message(msg(c2, 3, at=21, outgoing=True))
    s.add_message(msg(c3, 4, at=15))
    s.add_message(msg(c3, 5, at=16))
    assert [c.id for c in s.conversations()] == [c2, c3, c1]
    assert {c.id: c.unread for c in s.conversations()} == {c1: 1, c2: 1, c3: 2}
    s.add_message(msg(c1, 6, at=30))
    assert [c.id for c in s.conversations()] == [c1, c2, c3]
    assert s.conversation(c1).unread == 2  # type: ignore[union-attr]
    s.mark_read(c1)
    assert s.conversation(c1).unread == 0  # type: ignore[union-attr]
    assert s.conversation(c1).lamport == 6  # type: ignore[union-attr]
    # ensure_conversation never resets an existing one
    s.ensure_conversation(c2, "direct", None, "x", 99)
    cv = s.conversation(c2)
    assert cv is not None and cv.peer_identity == c2 * 2 and cv.unread == 1 and cv.last_at == 21


def test_transaction_rolls_back_on_error() -> None:
    s = Store.memory()
    conv = b"\x01" * 16
    s.ensure_conversation(conv, "direct", None, None, 0)
    with pytest.raises(RuntimeError):
        with s.transaction():
            s.add_message(msg(conv, 1))
            s.put_secret("k", b"v")
            s.set_cursor("lc.v1.inbox.x", 5)
            raise RuntimeError("boom")
    assert s.history(conv) == [] and s.get_secret("k") is None
    assert s.cursor("lc.v1.inbox.x") == 0
    assert s.conversation(conv).unread == 0  # type: ignore[union-attr]
    # nested: an inner failure that escapes rolls back the outer work too
    with pytest.raises(KeyError):
        with s.transaction():
            s.put_secret("outer", b"1")
            with s.transaction():
                s.put_secret("inner", b"2")
                raise KeyError("x")
    assert s.get_secret("outer") is None and s.get_secret("inner") is None
    with s.transaction():
        s.put_secret("ok", b"3")
    assert s.get_secret("ok") == b"3"


def test_transaction_rolls_back_on_a_file_store(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    s = Store.open(p, KEY)
    with pytest.raises(RuntimeError):
        with s.transaction():
            s.put_secret("k", b"v")
            raise RuntimeError
    s.close()
    s = Store.open(p, KEY)
    assert s.get_secret("k") is None
    s.close()


def test_outbox_and_cursors() -> None:
    s = Store.memory()
    conv, mid = b"\x01" * 16, b"\x02" * 8
    a = s.add_outbox("lc.v1.inbox.a", b"f1", "id1", 100, conv, mid)
    b = s.add_outbox("lc.v1.inbox.b", b"f2", "id2", 100, conv, mid)
    c = s.add_outbox("lc.v1.inbox.c", b"f3", "id3", 100)
    assert [i.id for i in s.pending_outbox()] == [a, b, c]
    s.outbox_retry_later(b, 500)
    assert [i.id for i in s.pending_outbox(now=200)] == [a, c]
    assert [i.attempts for i in s.pending_outbox()] == [0, 1, 0]
    assert s.outbox_done(a) == (conv, mid, False)
    assert s.outbox_done(b) == (conv, mid, True)
    assert s.outbox_done(c) == (None, None, False)
    assert s.outbox_done(c) == (None, None, False)
    assert s.outbox_size() == 0
    s.set_cursor("lc.v1.inbox.a", 10)
    s.set_cursor("lc.v1.inbox.a", 4)
    assert s.cursor("lc.v1.inbox.a") == 10 and s.cursor("lc.v1.inbox.b") == 0


def test_sessions_pick_confirmed_then_newest() -> None:
    s = Store.memory()
    inst = b"\x07" * 32
    s.save_session(b"t1" * 4, b"\x01" * 32, inst, b"s1", 1)
    s.save_session(b"t2" * 4, b"\x01" * 32, inst, b"s2", 2)
    assert s.session_for(inst) == (b"t2" * 4, b"s2")
    s.save_session(b"t1" * 4, b"\x01" * 32, inst, b"s1b", 3, confirmed=True)
    s.save_session(b"t2" * 4, b"\x01" * 32, inst, b"s2b", 4)
    assert s.session_for(inst) == (b"t1" * 4, b"s1b")
    s.save_session(b"t1" * 4, b"\x01" * 32, inst, b"s1c", 5, confirmed=False)  # stays confirmed
    assert s.session_for(inst) == (b"t1" * 4, b"s1c")
    assert s.session_by_tag(b"t2" * 4) == (b"\x01" * 32, inst, b"s2b")
    assert s.count_sessions() == 2


def test_messages_named_by_short_id_prefix() -> None:
    """A causal history names messages by their first 4 bytes: found by a key range seek,
    including the all-0xff prefix (no upper bound), never a neighbouring prefix."""
    s = Store.memory()
    conv, other = b"c" * 16, b"o" * 16
    ids = [
        bytes.fromhex("00000001aaaaaaaa"),
        bytes.fromhex("00000001bbbbbbbb"),
        bytes.fromhex("00000002aaaaaaaa"),
        bytes.fromhex("ffffffff00000000"),
    ]
    for n, mid in enumerate(ids):
        s.add_message(replace(msg(conv, n + 1), message_id=mid))
    s.add_message(replace(msg(other, 9), message_id=bytes.fromhex("00000001cccccccc")))
    found = s.messages_named(conv, [bytes.fromhex("00000001"), bytes.fromhex("ffffffff")])
    assert sorted(m.message_id for m in found) == [ids[0], ids[1], ids[3]]
    assert s.messages_named(conv, [bytes.fromhex("00000003")]) == []
    # a short id named twice is looked up once
    assert len(s.messages_named(conv, [ids[2][:4], ids[2][:4]])) == 1


def test_pending_group_items_are_bounded_per_sender() -> None:
    """A stranger picks the group ids of what waits for a welcome: one sender's share is
    bounded, and another sender's items are not pushed out by it."""
    s = Store.memory()
    honest = b"\x01" * 32
    s.add_group_pending(b"\x09" * 32, honest, b"key", 1)
    flood = b"\x02" * 32
    for i in range(1100):
        s.add_group_pending(i.to_bytes(32, "big"), flood, b"junk", 2)
    rows = s._x("SELECT from_installation, COUNT(*) FROM group_pending GROUP BY 1").fetchall()
    assert {bytes(r[0]): r[1] for r in rows} == {honest: 1, flood: 1024}
    assert s.group_pending(b"\x09" * 32)[0][1:] == (honest, b"key")


def test_two_processes_upgrading_one_store_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app and a CLI command start together after an update: the one that waits for the
    other's upgrade must not run it again (it read the old version before the lock, and
    failed with "table ... already exists")."""
    import threading

    from sqlcipher3 import dbapi2 as sqlcipher

    from chatcore import store as store_mod

    p = tmp_path / "s.db"
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION - 1)
    Store.open(p, KEY).close()
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION)
    first = sqlcipher.connect(str(p), isolation_level=None, check_same_thread=False)
    first.execute(f"PRAGMA key = \"x'{KEY.hex()}'\"")
    first.execute("BEGIN IMMEDIATE")
    for stmt in store_mod._statements(store_mod._MIGRATIONS[SCHEMA_VERSION]):
        first.execute(stmt)
    first.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    result: list[object] = []

    def second() -> None:
        try:
            result.append(Store.open(p, KEY))
        except StoreError as exc:
            result.append(exc)

    t = threading.Thread(target=second)
    t.start()
    t.join(0.5)  # it waits for the lock
    first.execute("COMMIT")
    first.close()
    t.join(10)
    (opened,) = result
    assert isinstance(opened, Store) and opened.schema_version == SCHEMA_VERSION
    opened.close()


def test_each_contact_write_gets_a_higher_number_never_given_out_twice(tmp_path: Path) -> None:
    """Schema 12: a contact row written (added, changed, or taken from a handover only when
    newer) is numbered after every write before it, also after the highest is deleted; a
    write that changes nothing (an older handover row) keeps its number."""
    s = Store.open(tmp_path / "s.db", KEY)
    put = (
        "INSERT INTO contacts (identity_id, alias, state, updated_at) VALUES (?,?,1,?) "
        "ON CONFLICT(identity_id) DO UPDATE SET alias=excluded.alias, "
        "updated_at=excluded.updated_at WHERE excluded.updated_at > contacts.updated_at"
    )

    def number(who: bytes) -> int:
        return int(s._x("SELECT changed FROM contacts WHERE identity_id=?", (who,)).fetchone()[0])

    with s.transaction():
        s._x(put, (b"a", "a", 5))
        s._x(put, (b"b", "b", 5))
    assert 0 < number(b"a") < number(b"b") == s.last_contact_change()
    with s.transaction():
        s._x(put, (b"a", "a2", 1))  # older: not written
    assert number(b"a") < number(b"b")
    with s.transaction():
        s._x(put, (b"a", "a3", 9))
    assert number(b"a") > number(b"b")
    top = s.last_contact_change()
    with s.transaction():
        s._x("DELETE FROM contacts WHERE identity_id=?", (b"a",))
        s._x(put, (b"c", "c", 5))
    assert number(b"c") > top
    s.close()
