"""What the hot paths ask of the messages table seeks an index (schema 10), however long the
conversation: the query plans, read with EXPLAIN QUERY PLAN on the very statements issued.
(``python -m bench.store_scale`` times them in a home of 200,000 messages.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from chatcore.features import Features
from chatcore.store import SCHEMA_VERSION, Store, StoredMessage
from tests.engine import drop_schema_12

CONV = b"c" * 16
PEER = b"p" * 32
INST_A, INST_B = b"a" * 32, b"b" * 32


def _msg(n: int, sender: bytes, inst: bytes, outgoing: bool, status: str) -> StoredMessage:
    return StoredMessage(
        CONV, n.to_bytes(8, "big"), sender, inst, n, n, n, 1, b"hi", outgoing, status, n
    )


def _store(n: int = 300) -> Store:
    st = Store.memory()
    st.ensure_conversation(CONV, "direct", PEER, None, 0)
    for i in range(1, n + 1):
        out = i % 3 == 0
        st.add_message(
            _msg(i, b"m" * 32 if out else PEER, b"o" * 32 if out else INST_A, out,
                 "sent" if out else ("received" if i > n - 5 else "read")),
            check_clock=False,
        )  # fmt: skip
    st._db.execute("ANALYZE")  # as a store grown large would plan (sqlite_stat1)
    return st


def _plans(st: Store, fn: Callable[[], object], table: str = "messages") -> list[str]:
    """The query plan of every statement ``fn`` issues that reads ``table``."""
    stmts: list[str] = []
    st._db.set_trace_callback(stmts.append)
    try:
        fn()
    finally:
        st._db.set_trace_callback(None)
    out = []
    for s in stmts:
        if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")) and table in s:
            plan = st._db.execute("EXPLAIN QUERY PLAN " + s).fetchall()
            out.append(" / ".join(str(p[-1]) for p in plan))
    assert out, "no statement read the table"
    return out


def test_new_device_of_answers() -> None:
    st = _store(20)
    assert st.new_device_of(CONV, PEER, INST_B)  # wrote here from A only
    assert not st.new_device_of(CONV, PEER, INST_A)
    assert not st.new_device_of(CONV, b"x" * 32, INST_B)  # never wrote here
    assert not st.new_device_of(CONV, b"m" * 32, INST_B)  # our own (outgoing) ones do not count


def test_new_device_of_seeks_the_sender_index() -> None:
    st = _store()
    for plan in _plans(st, lambda: st.new_device_of(CONV, PEER, INST_B)):
        assert "USING COVERING INDEX messages_by_sender" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_unread_messages_seek_the_partial_index() -> None:
    st = _store()
    f = Features.__new__(Features)  # only the store helpers are used
    f.store = st
    unread = [i for i in range(296, 301) if i % 3]  # the last five, ours left out
    assert f.unread_ids(CONV) == [i.to_bytes(8, "big") for i in unread]
    for fn in (lambda: f.unread_ids(CONV), lambda: st.recount_unread(CONV)):
        plans = _plans(st, fn)
        assert any("messages_unread" in p for p in plans), plans
    assert st.conversation(CONV).unread == len(unread)  # type: ignore[union-attr]


def test_schema_9_store_gets_the_indexes() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    st = Store(conn)
    for ix in ("messages_by_sender", "messages_unread"):
        conn.execute(f"DROP INDEX {ix}")
    for trigger in ("rel_due_on_insert", "rel_due_on_update", "rel_due_on_delete"):
        conn.execute(f"DROP TRIGGER {trigger}")  # and what schemas 11 and 12 added
    conn.execute("DROP TABLE rel_due")
    drop_schema_12(conn)
    conn.execute("PRAGMA user_version = 9")
    st = Store(conn)
    assert st.schema_version == SCHEMA_VERSION
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"messages_by_sender", "messages_unread"} <= names


def test_next_message_number_seeks_the_seq_index() -> None:
    """Each stored message asks for the highest number given out: one seek in
    messages_by_seq (schema 9), not a scan of every message."""
    st = _store()
    assert st.next_seq() == 301
    for plan in _plans(st, st.next_seq):
        assert "messages_by_seq" in plan, plan
        assert not plan.startswith("SCAN messages"), plan
