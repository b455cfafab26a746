"""Receipts and end-to-end retransmission through real Clients on anvil + JetStream."""

from __future__ import annotations

import pytest

from chatcore.reliability import RetryPolicy

from .conftest import People

pytestmark = pytest.mark.devnet


async def test_lost_receipt_means_retransmission_then_delivered(people: People) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    fast = RetryPolicy(first_ms=1, factor=2, max_ms=1_000)
    alice.c.features.policy = fast
    res = await alice.c.send_text(bob.name, "are you getting this?")
    conv, mid = res.conversation_id, res.message_id
    assert alice.c.features.pending_acks() == 1
    # bob receives, but his receipt is lost on the way
    real_flush = bob.c.features.flush
    bob.c.features.flush = lambda *a, **k: (  # type: ignore[method-assign]
        bob.c.features._x("DELETE FROM owed_receipts"),
        [],
    )[1]
    assert [r.text for r in await bob.c.sync()] == ["are you getting this?"]
    bob.c.features.flush = real_flush  # type: ignore[method-assign]
    assert alice.c.store.message(conv, mid).status == "sent"  # type: ignore[union-attr]
    # alice's next sync retransmits (re-encrypted, backoff due); bob acknowledges the duplicate
    await alice.c.sync()
    assert alice.c.features.pending_acks() == 1
    assert await bob.c.sync() == []  # a duplicate: not shown twice
    assert len(bob.c.history(conv)) == 1
    await alice.c.sync()
    assert alice.c.features.pending_acks() == 0
    assert alice.c.store.message(conv, mid).status == "delivered"  # type: ignore[union-attr]


async def test_group_receipts_per_member(people: People) -> None:
    a, b, c = people.new("a"), people.new("b"), people.new("c")
    gid = await a.c.create_group("trio", [b.name, c.name])
    await b.c.sync()
    await c.c.sync()
    res = await a.c.send_group_text("trio", "read me")
    await b.c.sync()
    await c.c.sync()
    await a.c.sync()
    m = a.c.store.message(gid, res.message_id)
    assert m is not None and m.status == "delivered"
    assert a.c.features.receipts(gid, res.message_id) == {
        b.c.identity_id: "delivered",
        c.c.identity_id: "delivered",
    }
    b.c.features.mark_read(gid)
    await b.c.flush_features()
    await a.c.sync()
    assert a.c.features.receipts(gid, res.message_id)[b.c.identity_id] == "read"
    assert a.c.store.message(gid, res.message_id).status == "delivered"  # type: ignore[union-attr]
    assert a.c.features.pending_acks() == 0
