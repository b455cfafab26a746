"""1:1 chat end to end: real Clients, real anvil (registries, index, resolver), real JetStream."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import shutil

import pytest

from chatcore.client import Client
from chatcore.engine import Received, direct_conversation_id, inbox_subject
from chatcore.keys import SignedPrekey
from chatcore.payload import ContentType
from chatcore.transport.nats import NatsTransport
from tests.fixtures.nats import NatsServer, Wiretap

from .conftest import PASSPHRASE, People, Person

pytestmark = pytest.mark.devnet


class Listener:
    """Collects what ``Client.listen()`` yields, in a background task."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.q: asyncio.Queue[Received] = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for r in self.client.listen():
            self.q.put_nowait(r)

    async def next(self, timeout: float = 10.0) -> Received:
        return await asyncio.wait_for(self.q.get(), timeout)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def texts_of(p: Person, other: Person) -> list[str]:
    conv = direct_conversation_id(p.c.identity_id, other.c.identity_id)
    return [m.body.decode() for m in p.c.history(conv, 1000)]


async def test_offline_delivery(people: People) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    await bob.close()
    sent = [f"while you were away {i}" for i in range(3)]
    for t in sent:
        res = await alice.c.send_text(bob.name, t)
        assert len(res.frames) == 1
    assert alice.c.store.outbox_size() == 0
    conv = direct_conversation_id(alice.c.identity_id, alice.c.resolve_peer(bob.name).identity_id)
    assert [m.status for m in alice.c.history(conv)] == ["sent"] * 3

    b = bob.open()
    got = await b.sync()
    assert [r.text for r in got] == sent
    assert all(r.sender_identity == alice.c.identity_id and not r.outgoing for r in got)
    assert all(r.conversation_id == conv for r in got)
    assert await b.sync() == []  # nothing twice
    assert b.store.peer_display(alice.c.identity_id) == alice.name
    (c,) = b.conversations()
    assert c.id == conv and c.unread == 3 and c.peer_identity == alice.c.identity_id


async def test_both_restart_mid_conversation(people: People) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    await alice.c.send_text(bob.name, "1 a")
    await bob.c.sync()
    await bob.c.send_text(alice.name, "2 b")
    await alice.c.send_text(bob.name, "3 a (bob is about to restart)")
    await alice.close()
    await bob.close()

    alice.open()
    bob.open()
    assert [r.text for r in await alice.c.sync()] == ["2 b"]
    assert [r.text for r in await bob.c.sync()] == ["3 a (bob is about to restart)"]
    await bob.c.send_text(alice.name, "4 b")
    # a live listener after the restart replays nothing old, only what is new
    lst = Listener(alice.c)
    try:
        r = await lst.next()
        assert r.text == "4 b"
        await bob.c.send_text(alice.name, "5 b")
        assert (await lst.next()).text == "5 b"
    finally:
        await lst.stop()
    await alice.c.send_text(bob.name, "6 a")
    await bob.c.sync()
    # "2 b" and "3 a" were sent concurrently (same Lamport time): either order, the rest fixed
    for h in (texts_of(alice, bob), texts_of(bob, alice)):
        assert h[0] == "1 a" and set(h[1:3]) == {"2 b", "3 a (bob is about to restart)"}
        assert h[3:] == ["4 b", "5 b", "6 a"]
    conv = direct_conversation_id(alice.c.identity_id, bob.c.identity_id)
    assert [m.lamport for m in alice.c.history(conv)] == [1, 2, 2, 3, 4, 5]
    assert alice.c.store.count_sessions() == 1 and bob.c.store.count_sessions() == 1


@pytest.mark.parametrize("hard", [False, True], ids=["graceful", "kill"])
async def test_nats_restart_between_send_and_sync(
    people: People, nats_server: NatsServer, hard: bool
) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    await alice.c.send_text(bob.name, "before the restart")
    await nats_server.arestart(hard=hard)
    await alice.c.send_text(bob.name, "after the restart")  # the client reconnects
    got = await bob.c.sync()
    assert [r.text for r in got] == ["before the restart", "after the restart"]
    # a live subscription survives another restart too
    lst = Listener(alice.c)
    try:
        await bob.c.send_text(alice.name, "live 1")
        assert (await lst.next()).text == "live 1"
        await nats_server.arestart(hard=hard, down_for=0.3)
        await bob.c.send_text(alice.name, "live 2")
        assert (await lst.next(timeout=15)).text == "live 2"
    finally:
        await lst.stop()
    assert await alice.c.sync() == []
    assert alice.c.store.outbox_size() == bob.c.store.outbox_size() == 0


async def _lose_the_store(nats_server: NatsServer) -> None:
    """The server comes back on the same URL without its JetStream store (a disk replaced,
    the stream deleted and made again): its sequence numbers start over at 1."""
    await asyncio.to_thread(nats_server.stop)
    await asyncio.to_thread(shutil.rmtree, nats_server.store_dir)
    await asyncio.to_thread(nats_server.start)


async def test_a_delivery_network_that_lost_its_store_is_read_from_its_start(
    people: People, nats_server: NatsServer
) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    for i in range(6):  # bob's cursor moves well past what a new stream starts with
        await alice.c.send_text(bob.name, f"old {i}")
    assert len(await bob.c.sync()) == 6
    await _lose_the_store(nats_server)
    # alice's connected client sends on (the stream is made again), bob reads it
    await alice.c.send_text(bob.name, "new 1")
    assert [r.text for r in await bob.c.sync()] == ["new 1"]
    # a live listener of a home that last read the old store, too
    await bob.close()
    await _lose_the_store(nats_server)
    await alice.c.send_text(bob.name, "new 2")
    bob.open()
    lst = Listener(bob.c)
    try:
        assert (await lst.next(timeout=15)).text == "new 2"
        # and a store lost while it listens
        await _lose_the_store(nats_server)
        await alice.c.send_text(bob.name, "new 3")
        assert (await lst.next(timeout=15)).text == "new 3"
    finally:
        await lst.stop()
    assert await bob.c.sync() == []
    assert alice.c.store.outbox_size() == 0


async def test_crash_between_sent_and_acknowledged(people: People, nats_server: NatsServer) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    a = alice.c
    await asyncio.to_thread(a.sync_directory)
    peer = a.resolve_peer(bob.name)
    own = a.directory.own_devices(a.identity_id)
    conv = direct_conversation_id(a.identity_id, peer.identity_id)

    # 1. crash after the engine wrote the outbox, before anything was published
    res = a.engine.send(peer, ContentType.TEXT, b"written, never published", own)
    assert a.store.outbox_size() == 1
    await alice.crash()
    assert await bob.c.sync() == []
    a = alice.open()
    assert a.store.outbox_size() == 1
    assert a.store.message(conv, res.message_id).status == "sending"  # type: ignore[union-attr]
    assert await a.flush_outbox() == 1
    assert a.store.outbox_size() == 0
    assert a.store.message(conv, res.message_id).status == "sent"  # type: ignore[union-attr]
    assert [r.text for r in await bob.c.sync()] == ["written, never published"]

    # 2. crash after the publish reached the store, before the ack was recorded
    res2 = a.engine.send(peer, ContentType.TEXT, b"published, ack lost", own)
    (f,) = res2.frames
    t = await NatsTransport.connect(nats_server.url)
    try:
        await t.publish(f.subject, f.frame, msg_id=f.msg_id)
    finally:
        await t.close()
    await alice.crash()
    a = alice.open()
    assert a.store.outbox_size() == 1
    await a.sync()  # flushes the outbox first: the same frame again
    assert a.store.outbox_size() == 0
    assert [r.text for r in await bob.c.sync()] == ["published, ack lost"]
    assert await bob.c.sync() == []
    assert texts_of(bob, alice) == ["written, never published", "published, ack lost"]
    # exactly once on the wire as well: the store dropped the retransmission by msg_id
    t = await NatsTransport.connect(nats_server.url)
    try:
        stored = await t.fetch(bob.c.engine.inbox, after=0)
    finally:
        await t.close()
    assert len(stored) == 2


async def test_revoked_installation_messages_are_dropped(people: People) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    await alice.c.send_text(bob.name, "before revocation")
    assert [r.text for r in await bob.c.sync()] == ["before revocation"]
    await bob.c.send_text(alice.name, "ok")
    await alice.c.sync()

    owner = alice.c.home.load_owner_key(PASSPHRASE)
    await asyncio.to_thread(
        alice.c.registry.revoke_installation, owner, alice.c.identity_id, alice.c.installation_id
    )
    # the revoked device does not know (or does not care) and keeps sending on its session
    await alice.c.send_text(bob.name, "after revocation")
    assert alice.c.store.outbox_size() == 0  # it did reach the delivery network
    assert await bob.c.sync() == []
    assert texts_of(bob, alice) == ["before revocation", "ok"]
    conv = direct_conversation_id(alice.c.identity_id, bob.c.identity_id)
    # bob's reply marked the conversation read; the dropped frame added nothing unread
    assert bob.c.store.conversation(conv).unread == 0  # type: ignore[union-attr]
    # and the cursor moved past it: the next sync does not try again
    inbox = bob.c.engine.inbox
    assert bob.c.store.cursor(inbox) >= 2


def _forms(b: bytes) -> list[bytes]:
    return [
        b,
        b.hex().encode(),
        b.hex().upper().encode(),
        base64.b64encode(b).rstrip(b"="),
        base64.urlsafe_b64encode(b).rstrip(b"="),
    ]


async def test_wiretap_sees_no_identities_keys_names_or_text(
    people: People, wiretap: Wiretap
) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    wiretap.clear()  # registration traffic is on chain, not NATS; start clean anyway
    lst = Listener(bob.c)
    secret_texts = [
        "plaintext-canary-one",
        "plaintext-canary-two",
        "reply-canary-three",
        "live-canary-four",
    ]
    try:
        r1 = await alice.c.send_text(bob.name, secret_texts[0])
        await alice.c.send_text(bob.name, secret_texts[1])
        assert (await lst.next()).text == secret_texts[0]
        assert (await lst.next()).text == secret_texts[1]
        await bob.c.send_text(alice.name, secret_texts[2])
        assert [r.text for r in await alice.c.sync()] == [secret_texts[2]]
        await alice.c.send_text(bob.name, secret_texts[3])
        assert (await lst.next()).text == secret_texts[3]
    finally:
        await lst.stop()
    await wiretap.settle()

    # positive control: the tap did see the chat frames
    app = wiretap.app_subjects()
    assert app == {inbox_subject(alice.c.installation_id), inbox_subject(bob.c.installation_id)}
    assert all(re.fullmatch(r"lc\.v1\.inbox\.[0-9a-f]{32}", s) for s in app)
    assert wiretap.seen(r1.frames[0].frame)
    assert sum(1 for s, _ in wiretap.messages if s.startswith("lc.v1.")) >= 4

    needles: dict[str, bytes] = {}
    for t in secret_texts:
        needles[t] = t.encode()
    for p in (alice, bob):
        c = p.c
        keys = c.engine.own.keys
        needles[f"{p.name} name"] = p.name.encode()
        for label, value in [
            ("identity", c.identity_id),
            ("installation/ed25519", keys.installation_id),
            ("x25519", keys.ik_x25519),
            ("mlkem", keys.pq.pub),
        ]:
            for i, form in enumerate(_forms(value)):
                needles[f"{p.name} {label} form{i}"] = form
        for sname, raw in c.store.secrets_with_prefix("spk:"):
            for i, form in enumerate(_forms(SignedPrekey.from_bytes(raw).pub)):
                needles[f"{p.name} prekey {sname} form{i}"] = form
        owner = c.store.get_meta("owner")
        assert owner is not None
        needles[f"{p.name} owner"] = owner.decode().lower().removeprefix("0x").encode()
        needles[f"{p.name} owner checksummed"] = owner.decode().removeprefix("0x").encode()
    leaks = [label for label, n in needles.items() if wiretap.seen(n)]
    assert leaks == [], f"seen on the wire: {leaks}"
