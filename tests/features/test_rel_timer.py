"""The retransmission timer reads only the reliability logs that have work: a tick with
nothing due read and parsed every conversation's log (with 3,300 messages awaited across
300 conversations, 5 ms a tick, every 0.3 s in ``chat``). When each log next has work is
kept with it in the store (table ``rel_due``, schema 11): a restart finds it there, and a
log written without it (before the upgrade, or by an older process still running on the
home) is read at the next tick."""

from __future__ import annotations

import sqlite3

from chatcore.engine import OutFrame, direct_conversation_id
from chatcore.features import REL_CONV_META, Features
from chatcore.store import Store
from tests.engine import drop_schema_12

from . import FWorld


def _world() -> tuple[FWorld, bytes, bytes, bytes, int]:
    """``a`` has messages awaited by ``c`` (sent at ``t0``) and by ``d`` (20 s later):
    neither ever acknowledges."""
    w = FWorld()
    a, c, d = w.person(), w.person(), w.person()
    w.deaf |= {w.dev(c).inst, w.dev(d).inst}
    t0 = w.clock.now
    for i in range(3):
        w.route(w.send_text(a, c, f"to c {i}").frames)
    w.clock.now += 20_000
    for i in range(3):
        w.route(w.send_text(a, d, f"to d {i}").frames)
    return w, a, c, d, t0


def _statements(store: Store, fn: object) -> list[str]:
    stmts: list[str] = []
    store._db.set_trace_callback(stmts.append)
    try:
        fn()  # type: ignore[operator]
    finally:
        store._db.set_trace_callback(None)
    return stmts


def _logs_read(stmts: list[str]) -> list[str]:
    return [s for s in stmts if REL_CONV_META in s]


def test_a_tick_with_nothing_due_reads_no_log_and_a_due_one_reads_its_own() -> None:
    w, a, c, d, t0 = _world()
    fa = w.f(a)
    first = fa.next_due()  # c's messages, the earliest
    assert first is not None and t0 + fa.policy.first_ms <= first < t0 + fa.policy.first_ms + 20
    w.clock.now = first - 100  # (each read of the test clock moves it on by 1 ms)
    frames: list[OutFrame] = []
    stmts = _statements(fa.store, lambda: frames.extend(fa.flush(due_only=True)))
    assert frames == []
    assert _logs_read(stmts) == [], _logs_read(stmts)  # no conversation's log read
    # c's conversation is due, d's not yet: only c's log is read, and c gets the copies
    w.clock.now = first + 100  # (the three went out a few ms apart)
    stmts = _statements(fa.store, lambda: frames.extend(fa.flush(due_only=True)))
    assert [f.subject for f in frames] == [w.dev(c).engine.inbox] * 3
    key_c = fa._rk(direct_conversation_id(a, c)).hex()
    read = _logs_read(stmts)
    assert read and all(key_c in s for s in read), read
    # and the next tick waits for d's messages
    second = fa.next_due()
    assert second is not None and first + 19_000 < second < first + 21_000
    w.clock.now = second - 100
    assert fa.flush(due_only=True) == []
    w.clock.now = second + 100
    assert [f.subject for f in fa.flush(due_only=True)] == [w.dev(d).engine.inbox] * 3
    assert fa.pending_acks() == 6  # nobody acknowledged: all still awaited


def test_a_restarted_device_retransmits_what_is_due() -> None:
    w, a, c, d, _t0 = _world()
    due = w.f(a).next_due()
    w.restart(w.dev(a))  # a crash: only the store is left
    fa = w.f(a)
    assert due is not None and fa.next_due() == due
    w.clock.now = due + 21_000
    subjects = [f.subject for f in fa.flush(due_only=True)]
    assert sorted(subjects) == sorted([w.dev(c).engine.inbox] * 3 + [w.dev(d).engine.inbox] * 3)


def test_logs_of_a_store_upgraded_to_schema_11_are_retransmitted() -> None:
    """A home at schema 10 had the logs, not when they are due: the upgrade marks every
    log due at once; the first tick reads them, retransmits what is due and learns the
    time of the rest."""
    w, a, c, d, _t0 = _world()
    fa = w.f(a)
    first = fa.next_due()
    assert first is not None
    conn: sqlite3.Connection = fa.store._db
    for trigger in ("rel_due_on_insert", "rel_due_on_update", "rel_due_on_delete"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE rel_due")
    drop_schema_12(conn)  # (and what came after)
    conn.execute("PRAGMA user_version = 10")
    Store(conn)  # opened by the new version: upgraded
    w.restart(w.dev(a))
    fa = w.f(a)
    w.clock.now = first + 100  # c's messages are due, d's are not
    assert fa.next_due() == 0  # not known yet: look now
    assert [f.subject for f in fa.flush(due_only=True)] == [w.dev(c).engine.inbox] * 3
    second = fa.next_due()  # learnt
    assert second is not None and first + 19_000 < second < first + 21_000
    w.clock.now = second + 100
    assert [f.subject for f in fa.flush(due_only=True)] == [w.dev(d).engine.inbox] * 3


def test_a_log_written_by_an_older_process_on_the_home_is_retransmitted() -> None:
    """A process of the version before (still running on the home when another upgraded
    it) writes a log without its time: it is read at the next tick, not forgotten."""
    w, a, c, _d, _t0 = _world()
    e = w.person()
    w.deaf.add(w.dev(e).inst)
    fa = w.f(a)
    older = Features.__dict__["_set_wake"]
    Features._set_wake = lambda self, key, at: None  # type: ignore[method-assign]
    try:
        res = w.send_text(a, e, "from the older process")
    finally:
        Features._set_wake = older  # type: ignore[method-assign]
    w.route(res.frames)
    w.clock.now += 60_000  # everything is due
    subjects = [f.subject for f in fa.flush(due_only=True)]
    assert subjects.count(w.dev(e).engine.inbox) == 1
    assert subjects.count(w.dev(c).engine.inbox) == 3
