"""A 1:1 peer offline past the delivery network's 30-day retention (design.md "Delivery").

Every retransmission is re-encrypted, so it takes a new number in the sender's chain; once the
oldest frames expired, every frame left was more than MAX_SKIP ahead of the receiver, which
refused them all with TooManySkipped, and, after a reply, the sender's new chain too, for ever
(found by a review; its reproduction, made a regression test)."""

from __future__ import annotations

from collections import Counter

from chatcore.engine import direct_conversation_id
from chatcore.errors import ChatCoreError
from chatcore.payload import ContentType
from tests.features import FWorld

DAY = 86_400_000
RETENTION = 30 * DAY  # the JetStream stream's max_age


def test_peer_offline_past_retention_reads_everything_and_the_session_goes_on() -> None:
    w = FWorld(seed=5)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    b = w.dev(bob)
    conv = direct_conversation_id(alice, bob)
    w.route(w.send_text(alice, bob, "hi bob").frames)
    w.route(w.send_text(bob, alice, "hi alice").frames)
    w.flush_all()

    # bob is away 42 days; alice writes 20 messages on day one (one every 10 minutes);
    # her client flushes due retransmissions every 10 minutes
    inbox = []  # (published at, frame) as bob's inbox stream holds them

    def publish(frames):  # type: ignore[no-untyped-def]
        inbox.extend((w.clock.now, f.frame) for f in frames if f.subject == b.engine.inbox)

    t_end, sent = w.clock.now + 42 * DAY, 0
    while w.clock.now < t_end:
        if sent < 20:
            publish(w.send_text(alice, bob, f"message {sent}").frames)
            sent += 1
        publish(w.f(alice).flush(due_only=True))
        w.clock.now += 10 * 60_000
    kept = [fr for at, fr in inbox if at >= w.clock.now - RETENTION]
    assert len(kept) < len(inbox)  # the oldest frames are gone

    errors: Counter[str] = Counter()
    for fr in kept:
        try:
            b.receive(fr)
        except ChatCoreError as e:
            errors[type(e).__name__] += 1
    assert set(errors) <= {"DuplicateMessage"}
    texts = {
        m.body.decode()
        for m in b.store.history(conv, 1000)
        if m.content_type == ContentType.TEXT and not m.outgoing
    }
    assert {f"message {i}" for i in range(20)} <= texts

    for i in range(3):  # the conversation goes on, both ways
        w.route(w.send_text(bob, alice, f"bob {i}").frames)
        r = b.receive(w.frame_for(w.send_text(alice, bob, f"alice {i}"), b))
        assert r is not None and r.text == f"alice {i}"


def test_retransmission_slows_down_toward_a_peer_silent_for_days() -> None:
    """An unacknowledged message is retransmitted daily once it is two days old (every 6 h
    before): fewer frames to the stream, and a sender chain that grows less while the peer
    is away (at most ~46 numbers per message in the 30 days before retransmission gives up)."""
    w = FWorld(seed=6)
    alice, bob = w.person(name="alice"), w.person(name="bob")
    w.route(w.send_text(alice, bob, "hi bob").frames)
    w.route(w.send_text(bob, alice, "hi alice").frames)
    w.flush_all()
    w.send_text(alice, bob, "are you there?")  # bob never sees it
    frames = 0
    t_end = w.clock.now + 31 * DAY
    while w.clock.now < t_end:
        frames += len(w.f(alice).flush(due_only=True))
        w.clock.now += 10 * 60_000
    assert 40 <= frames <= 48
