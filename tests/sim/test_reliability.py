"""chatcore.reliability: pure SDS-style bookkeeping."""

from __future__ import annotations

import pytest

from chatcore.reliability import MAX_GAPS, Reliability, RetryPolicy

CONV = bytes(16)
A, B = b"\x01" * 32, b"\x02" * 32


def mid(i: int) -> bytes:
    return i.to_bytes(8, "little")  # distinct short ids


def test_backoff_doubles_and_caps() -> None:
    p = RetryPolicy(1_000, 2, 5_000)
    assert [p.delay(i) for i in range(5)] == [1_000, 2_000, 4_000, 5_000, 5_000]
    with pytest.raises(ValueError):
        RetryPolicy(0)


def test_ack_completes_and_due_reschedules() -> None:
    r = Reliability(RetryPolicy(1_000, 2, 60_000))
    log = r.log(CONV)
    assert not r.has_pending()
    log.sent(mid(1), [A, B], now_ms=0)
    assert r.has_pending() and r.pending_count() == 1
    assert r.due(999) == []
    due = r.due(1_000)
    assert [(d.message_id, d.recipients, d.attempt) for d in due] == [(mid(1), (A, B), 1)]
    assert r.next_due() == 3_000
    assert not r.acked(CONV, mid(1), A)
    assert r.acked(CONV, mid(1), B)  # the last recipient: done
    assert r.pending_count() == 0 and r.next_due() is None and not r.has_pending()
    assert not r.acked(CONV, mid(1), B)  # a late duplicate receipt changes nothing


def test_revoked_recipient_is_no_longer_waited_for() -> None:
    r = Reliability()
    r.log(CONV).sent(mid(1), [A, B], now_ms=0)
    r.log(bytes([1]) * 16).sent(mid(2), [A], now_ms=0)
    assert r.drop_recipient(A) == 2
    assert r.pending_count() == 1 and r.log(CONV).unacked(mid(1)) == {B}
    assert r.drop_recipient(A) == 0 and r.drop_recipient(B) == 1
    assert not r.has_pending()


def test_dedup_and_gaps() -> None:
    log = Reliability().log(CONV)
    a = log.received(mid(2), (mid(1)[:4],), now_ms=5)
    assert not a.duplicate and a.missing == (mid(1)[:4],)
    assert log.received(mid(2), (), now_ms=6).duplicate
    b = log.received(mid(1), (), now_ms=7)
    assert b.filled and log.open_gaps(7) == ()


def test_roundtrip_and_bad_state() -> None:
    r = Reliability()
    r.log(CONV).sent(mid(1), [A], 10)
    r.log(CONV).received(mid(3), (mid(9)[:4],), 11)
    r2 = Reliability.from_bytes(r.to_bytes())
    assert r2.to_bytes() == r.to_bytes()
    assert r2.log(CONV).unacked(mid(1)) == {A}
    with pytest.raises(ValueError):
        Reliability.from_bytes(r.to_bytes()[:-3])
    with pytest.raises(ValueError):
        Reliability.from_bytes(b"\x09" + r.to_bytes()[1:])


def test_a_recipient_that_never_acknowledges_is_not_waited_for_for_ever() -> None:
    """Review finding: a lost phone never revoked (or a peer withholding receipts) kept every
    message pending for ever, each re-sent every 6 h, the state growing with each send."""
    from chatcore.reliability import MAX_PENDING

    day = 86_400_000
    r = Reliability(RetryPolicy(1_000, 2, 6 * 3_600_000, give_up_ms=30 * day))
    log = r.log(CONV)
    log.sent(mid(1), [A], now_ms=0)
    assert [d.message_id for d in r.due(29 * day)] == [mid(1)]  # still retransmitted
    assert r.due(30 * day) == [] and not r.has_pending()  # then given up
    for i in range(MAX_PENDING + 50):
        log.sent(mid(10 + i), [A], now_ms=31 * day + i)
    assert r.pending_count() == MAX_PENDING
    assert log.unacked(mid(10)) == frozenset()  # the oldest went first
    assert log.unacked(mid(10 + MAX_PENDING + 49)) == {A}
    log.sent(mid(5_000), [A], now_ms=32 * day)
    assert r.pending_count() == MAX_PENDING  # bounded
    with pytest.raises(ValueError):
        RetryPolicy(1_000, 2, 5_000, give_up_ms=4_000)


def test_retry_slows_down_once_a_message_is_days_old() -> None:
    p = RetryPolicy()
    assert p.delay(20) == 6 * 3_600_000
    assert p.delay(20, age_ms=2 * 86_400_000 - 1) == 6 * 3_600_000
    assert p.delay(20, age_ms=2 * 86_400_000) == 86_400_000
    assert p.delay(1, age_ms=3 * 86_400_000) == 86_400_000


def test_open_gaps_are_bounded_oldest_forgotten_first() -> None:
    """Each arriving message may name ids we never got; a peer naming ids that never come
    cannot grow the gap list past MAX_GAPS: the oldest are forgotten first."""
    log = Reliability().log(CONV)
    names = [mid(1000 + i)[:4] for i in range(MAX_GAPS + 10)]
    for n, i in enumerate(range(0, len(names), 5)):
        log.received(mid(n + 1), tuple(names[i : i + 5]), now_ms=n)
    assert len(log.gaps) == MAX_GAPS
    assert set(log.open_gaps(10**6)) == set(names[10:])
