"""The facade under partial faults, as an app meets them (found by an embedding review):
the delivery network failing midway through a sync or for a moment under listen(), the chain
unreachable, the local index locked, offline group actions, groups an app creates while it
listens. Real anvil + JetStream; faults are injected by wrapping the real transport."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest

from chatcore import DeliveryPending, StoreUnavailable, TransportError, UnknownContact
from chatcore.errors import FrameRefused
from chatcore.payload import ContentType
from chatcore.transport.base import Transport

from .conftest import People, Person

pytestmark = pytest.mark.devnet


class Faulty:
    """The real transport, with ``fail_fetch`` / ``fail_publish`` calls failing."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.fail_fetch_after: int | None = None  # fail every fetch after this many succeed
        self.fail_publish = False
        self.fetches = 0
        self.publishes = 0  # attempts, failed ones too
        self.refuse_next = False  # the next publish is refused (the network is up)

    async def fetch(self, subject: str, after: Any = None, limit: int = 500) -> Any:
        if self.fail_fetch_after is not None and self.fetches >= self.fail_fetch_after:
            raise TransportError("fetch: delivery network unreachable (injected)")
        self.fetches += 1
        return await self.inner.fetch(subject, after=after, limit=limit)

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> Any:
        self.publishes += 1
        if self.refuse_next:
            self.refuse_next = False
            raise FrameRefused("publish refused (injected)")
        if self.fail_publish:
            raise TransportError("publish: delivery network unreachable (injected)")
        return await self.inner.publish(subject, data, msg_id=msg_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def faulty(p: Person) -> Faulty:
    f = Faulty(await p.c.connect())
    p.c.transport = f  # type: ignore[assignment]
    return f


def texts(msgs: Sequence[Any]) -> list[str]:
    return [m.text for m in msgs if m.content_type == ContentType.TEXT]


async def test_a_sync_broken_off_returns_what_it_stored_next_time(people: People) -> None:
    alice, bob = people.new("fa"), people.new("fb")
    await alice.c.send_text(bob.name, "one")
    await alice.c.send_text(bob.name, "two")
    f = await faulty(bob)
    f.fail_fetch_after = 1  # the inbox's first batch arrives, then the network goes
    with pytest.raises(TransportError):
        await bob.c.sync()
    assert [m.body for m in bob.c.history(bob.c.conversation_id(alice.name))] == [b"one", b"two"]
    f.fail_fetch_after = None
    assert texts(await bob.c.sync()) == ["one", "two"]  # stored, and now reported once
    assert texts(await bob.c.sync()) == []


async def test_what_a_broken_off_read_stored_is_returned_by_the_next_client_on_the_home(
    people: People,
) -> None:
    """A sync broken off by the network, or cut by a wait_for timeout, returned what it had
    stored with this Client's next sync() only: an app that closed then (a push handler out
    of time) and opened the home again never got those messages from sync() or listen()
    (they were in history, unannounced). close() keeps them for the next Client."""
    alice, bob = people.new("ua"), people.new("ub")
    await alice.c.send_text(bob.name, "one")
    await alice.c.send_text(bob.name, "two")
    f = await faulty(bob)
    f.fail_fetch_after = 1  # the inbox's first batch arrives, then the network goes
    with pytest.raises(TransportError):
        await bob.c.sync()
    assert [m.body for m in bob.c.history(bob.c.conversation_id(alice.name))] == [b"one", b"two"]
    await bob.close()
    bob.open()
    assert texts(await bob.c.sync()) == ["one", "two"]
    assert texts(await bob.c.sync()) == []
    await bob.close()
    bob.open()  # returned once: not again by the Client after
    assert texts(await bob.c.sync()) == []
    # a listen() cut off between storing and returning (the key hand-outs that reading an
    # invitation publishes hang), then a Client that only reads before it closes: listen()
    # of the one after returns it
    gid = await alice.c.create_group("cut off", [bob.name])
    t = _Hanging(await bob.c.connect())
    bob.c.transport = t  # type: ignore[assignment]
    t.hang = True
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(first_message(bob.c), 3)
    bob.c.transport = t.inner  # type: ignore[assignment]
    await bob.close()
    assert bob.open().group_info(gid).is_member
    await bob.close()
    r = await asyncio.wait_for(first_message(bob.open()), 20)
    assert (r.conversation_id, r.text) == (gid, "you were added to “cut off”")


async def test_what_clients_open_at_once_on_a_home_kept_is_all_returned(people: People) -> None:
    """A Client that took what the last one closed had kept (a command run beside the app)
    and closed after the app's next Client kept its own: the second's were overwritten."""
    from chatcore import Client

    from .conftest import PASSPHRASE

    alice, bob = people.new("uc"), people.new("ud")
    conv = await alice.c.send_text(bob.name, "one")
    (await faulty(bob)).fail_fetch_after = 1
    with pytest.raises(TransportError):
        await bob.c.sync()
    await bob.close()  # keeps "one"
    beside = Client.open(bob.home, PASSPHRASE, bob.network)  # takes "one", only reads
    try:
        bob.open()
        await alice.c.send_text(bob.name, "two")
        (await faulty(bob)).fail_fetch_after = 1
        with pytest.raises(TransportError):
            await bob.c.sync()
        await bob.close()  # keeps "two"
        assert [m.body for m in beside.history(conv.conversation_id)] == [b"one", b"two"]
    finally:
        beside.close()  # "one" kept again, "two" with it
    bob.open()
    assert sorted(texts(await bob.c.sync())) == ["one", "two"]
    assert texts(await bob.c.sync()) == []


async def first_message(client: Any) -> Any:
    async for r in client.listen():
        return r
    return None


async def test_listen_reads_on_when_a_side_frame_cannot_be_published(people: People) -> None:
    alice, bob = people.new("la"), people.new("lb")
    await alice.c.send_text(bob.name, "hi")
    await bob.c.sync()
    f = await faulty(bob)
    f.fail_publish = True  # bob's acks and key hand-outs cannot go out for now
    gid = await alice.c.create_group("flaky", [bob.name])
    await alice.c.send_text(bob.name, "after the group")
    got: list[Any] = []

    async def listen() -> None:
        async for r in bob.c.listen():
            got.append(r)
            if r.text == "after the group":
                return

    await asyncio.wait_for(listen(), 20)
    assert any(r.conversation_id == gid for r in got)  # the "you were added" notice
    assert bob.c.store.pending_outbox()  # what could not go waits in the outbox
    f.fail_publish = False
    assert await bob.c.flush_outbox() > 0


async def test_sync_reads_with_the_chain_unreachable(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    from discovery.errors import ChainUnavailable

    alice, bob = people.new("ca"), people.new("cb")
    await alice.c.send_text(bob.name, "known")
    await bob.c.sync()
    await alice.c.send_text(bob.name, "while the chain is down")

    def down(*_a: object, **_k: object) -> int:
        raise ChainUnavailable("chain unreachable (injected)")

    monkeypatch.setattr(bob.c.index, "sync", down)
    assert texts(await bob.c.sync()) == ["while the chain is down"]
    assert bob.c.conversation_id(alice.name) == bob.c.conversation_id(
        bob.c.conversation_id(alice.name)
    )
    res = await bob.c.send_text(alice.name, "answer without the chain")
    monkeypatch.undo()
    assert texts(await alice.c.sync()) == ["answer without the chain"]
    assert res.conversation_id == bob.c.conversation_id(alice.name)


async def test_offline_group_actions_raise_delivery_pending_with_the_result(
    people: People,
) -> None:
    alice, bob, carol = people.new("ga"), people.new("gb"), people.new("gc")
    await alice.c.sync()
    f = await faulty(alice)
    f.fail_publish = True
    with pytest.raises(DeliveryPending) as err:
        await alice.c.create_group("offline team", [bob.name])
    gid = err.value.result
    assert isinstance(gid, bytes) and alice.c.group_info(gid).name == "offline team"
    with pytest.raises(DeliveryPending):
        await alice.c.group_change(gid, "add", carol.name)  # by the id create_group gave
    assert len(alice.c.group_info(gid).members) == 3
    f.fail_publish = False
    await alice.c.flush_outbox()
    await bob.c.sync()
    assert bob.c.find_group("offline team") == gid
    assert len(bob.c.group_ids()) == 1  # one group, not one per retry
    with pytest.raises(UnknownContact):
        alice.c.find_group(b"\x00" * 32)


async def test_listen_follows_a_group_the_app_creates_while_listening(people: People) -> None:
    bob, carol = people.new("sb"), people.new("sc")
    await carol.c.sync()
    got: list[str] = []

    async def listen() -> None:
        async for r in bob.c.listen():
            if r.content_type == ContentType.TEXT:
                got.append(r.text)
                return

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    gid = await bob.c.create_group("made while listening", [carol.name])
    await carol.c.sync()
    await carol.c.send_group_text(gid, "in the new group")
    await asyncio.wait_for(task, 20)
    assert got == ["in the new group"]


async def test_a_locked_local_index_is_store_unavailable(people: People) -> None:
    alice, bob = people.new("ia"), people.new("ib")
    await bob.c.sync()
    people.new("ic")  # a new chain event for bob's index to take in
    lock = sqlite3.connect(bob.home / "index.db", timeout=0)
    lock.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            await bob.c.sync()
    finally:
        lock.rollback()
        lock.close()
    assert isinstance(await bob.c.sync(), list)
    assert alice.c is not None


async def test_a_released_name_passes_to_its_new_holder_in_what_we_show(people: People) -> None:
    from discovery.resolver import parse_query

    from .conftest import PASSPHRASE

    bob, carol = people.new("nb"), people.new("nc")
    await bob.c.send_text(carol.name, "hi, bob here")
    await carol.c.sync()
    assert carol.c.display(bob.c.identity_id) == bob.name  # remembered
    bob.c.registry.release_name(bob.c._owner(PASSPHRASE), parse_query(bob.name)[1])
    mallory = people.new("nm")
    mallory.c.claim_name(PASSPHRASE, bob.name)  # the name is hers now
    await carol.c.sync()
    assert carol.c.display(bob.c.identity_id) != bob.name  # bob no longer shows under it


async def test_a_name_that_moved_to_someone_else_is_not_a_silent_switch_of_person(
    people: People,
) -> None:
    # carol knows bob by his name; bob gives it up and mallory (a contact of carol's under
    # another name) claims it: 'send bob' and a group's member 'bob' must not quietly mean
    # mallory now
    from chatcore.content import ContactState
    from chatcore.errors import AmbiguousName
    from discovery.resolver import parse_query

    from .conftest import PASSPHRASE

    bob, carol, mallory = people.new("mb"), people.new("mc"), people.new("mm")
    await carol.c.send_text(bob.name, "hi bob")
    await carol.c.send_text(mallory.name, "hi mallory")
    await bob.c.sync()
    await mallory.c.sync()
    bob.c.registry.release_name(bob.c._owner(PASSPHRASE), parse_query(bob.name)[1])
    mallory.c.registry.release_name(mallory.c._owner(PASSPHRASE), parse_query(mallory.name)[1])
    mallory.c.claim_name(PASSPHRASE, bob.name)  # her only name now: she shows under it
    await asyncio.sleep(1.1)  # carol's view of the chain is older than DIRECTORY_MAX_AGE_MS
    for attempt in (
        lambda: carol.c.send_text(bob.name, "for bob's eyes"),
        lambda: carol.c.create_group("moved", [bob.name]),
    ):
        with pytest.raises(AmbiguousName) as err:
            await attempt()
        assert mallory.id_hex in str(err.value) and bob.id_hex in str(err.value)
    with pytest.raises(AmbiguousName):  # reading or muting "his" conversation, too
        carol.c.find_conversation(bob.name)
    assert await mallory.c.sync() == []
    assert carol.c.display(mallory.c.identity_id) == f"{bob.name} (new holder of the name)"
    assert carol.c.display(bob.c.identity_id) != bob.name
    # the ids say who is meant; once carol took mallory as a contact again, the name is hers
    await carol.c.send_text(bob.id_hex, "still to bob")
    await carol.c.set_contact(mallory.id_hex, ContactState.CONTACT)
    assert carol.c.display(mallory.c.identity_id) == bob.name
    await carol.c.send_text(bob.name, "to mallory, knowingly")
    assert texts(await mallory.c.sync()) == ["to mallory, knowingly"]
    assert texts(await bob.c.sync()) == ["still to bob"]


async def test_a_second_name_that_moved_to_someone_else_is_not_a_silent_switch_of_person(
    people: People,
) -> None:
    """Found by a walk through the identity model on devnet: carol writes to bob by a second
    name of his (not the one she shows him under); bob gives it up and mallory claims it:
    'send NAME' quietly went to mallory (only the name shown for a person was watched)."""
    from chatcore.content import ContactState
    from chatcore.errors import AmbiguousName
    from discovery.resolver import parse_query

    from .conftest import PASSPHRASE

    bob, carol, mallory = people.new("sb"), people.new("sc"), people.new("sm")
    second = bob.name + "-too"
    bob.c.claim_name(PASSPHRASE, second)
    await carol.c.send_text(bob.name, "hi bob")
    await asyncio.sleep(1.1)  # carol's view of the chain is older than DIRECTORY_MAX_AGE_MS
    await carol.c.send_text(second, "hi bob, by your other name")
    await carol.c.send_text(mallory.name, "hi mallory")
    await bob.c.sync()
    await mallory.c.sync()
    bob.c.registry.release_name(bob.c._owner(PASSPHRASE), parse_query(second)[1])
    mallory.c.claim_name(PASSPHRASE, second)
    await asyncio.sleep(1.1)
    with pytest.raises(AmbiguousName) as err:
        await carol.c.send_text(second, "for bob's eyes")
    assert mallory.id_hex in str(err.value) and bob.id_hex in str(err.value)
    assert await mallory.c.sync() == []
    # once carol took mallory as a contact (by id), the name means her
    await carol.c.set_contact(mallory.id_hex, ContactState.CONTACT)
    await carol.c.send_text(second, "to mallory, knowingly")
    assert texts(await mallory.c.sync()) == ["to mallory, knowingly"]


async def test_a_moved_name_once_taken_for_its_new_holder_stays_theirs(people: People) -> None:
    """Once carol took the new holder of bob's second name as a contact and wrote to her by
    it, the move was settled (as for a wallet address): the move was still remembered, so
    when carol later removed mallory from her contacts (or blocked and unblocked her), the
    name she had been using for mallory was refused again as having passed from bob."""
    from chatcore.content import ContactState
    from chatcore.errors import AmbiguousName
    from discovery.resolver import parse_query

    from .conftest import PASSPHRASE

    bob, carol, mallory = people.new("tb"), people.new("tc"), people.new("tm")
    second = bob.name + "-too"
    bob.c.claim_name(PASSPHRASE, second)
    await carol.c.send_text(second, "hi bob, by your other name")
    await bob.c.sync()
    bob.c.registry.release_name(bob.c._owner(PASSPHRASE), parse_query(second)[1])
    mallory.c.claim_name(PASSPHRASE, second)
    await asyncio.sleep(1.1)  # carol's view of the chain is older than DIRECTORY_MAX_AGE_MS
    with pytest.raises(AmbiguousName):
        await carol.c.send_text(second, "for bob's eyes")
    await carol.c.set_contact(mallory.id_hex, ContactState.CONTACT)
    await carol.c.send_text(second, "to mallory, knowingly")
    await carol.c.set_contact(mallory.id_hex, ContactState.NONE)  # contacts remove
    await carol.c.send_text(second, "still to mallory")
    assert texts(await mallory.c.sync()) == ["to mallory, knowingly", "still to mallory"]
    assert texts(await bob.c.sync()) == []


async def test_a_wallet_address_that_moved_to_someone_else_is_not_a_silent_switch_of_person(
    people: People,
) -> None:
    """carol writes to bob by his wallet's address; the wallet's key (not bob's identity)
    moves the address to mallory: '0xWALLET' must not quietly mean mallory now, as with a
    name that moved."""
    from eth_account import Account

    from chatcore.content import ContactState
    from chatcore.errors import AmbiguousName
    from chatcore.identity import bind_wallet, unbind_wallet, wallet_link_signature

    from .conftest import PASSPHRASE

    bob, carol, mallory = people.new("wb"), people.new("wc"), people.new("wm")
    wallet = Account.create()

    def bind(p: Person) -> None:
        deadline = p.c.registry.latest_timestamp() + 600
        sig = wallet_link_signature(wallet, p.c.identity_id, p.network, p.c.registry, deadline)
        bind_wallet(p.c, PASSPHRASE, wallet.address, sig, deadline)

    bind(bob)
    await carol.c.send_text(wallet.address, "hi bob")
    await carol.c.send_text(mallory.name, "hi mallory")
    assert texts(await bob.c.sync()) == ["hi bob"]
    await mallory.c.sync()
    unbind_wallet(bob.c, PASSPHRASE, wallet.address)
    bind(mallory)  # the wallet's holder moves it
    await asyncio.sleep(1.1)  # carol's view of the chain is older than DIRECTORY_MAX_AGE_MS
    for attempt in (
        lambda: carol.c.send_text(wallet.address, "for bob's eyes"),
        lambda: carol.c.create_group("moved wallet", [wallet.address.lower()]),
    ):
        with pytest.raises(AmbiguousName) as err:
            await attempt()
        assert mallory.id_hex in str(err.value) and bob.id_hex in str(err.value)
    with pytest.raises(AmbiguousName):  # reading or muting "his" conversation, too
        carol.c.find_conversation(wallet.address)
    assert await mallory.c.sync() == []
    # once carol took mallory as a contact (by id), the address means her
    await carol.c.set_contact(mallory.id_hex, ContactState.CONTACT)
    await carol.c.send_text(wallet.address, "to mallory, knowingly")
    await carol.c.send_text(wallet.address, "and again")  # settled: no second warning
    assert texts(await mallory.c.sync()) == ["to mallory, knowingly", "and again"]
    assert await bob.c.sync() == []


async def _name_and_wallet_moved(people: People, names: tuple[str, str, str]) -> tuple[Any, ...]:
    """bob holds a second name and a wallet, and carol writes to him by both; then both pass
    to mallory, and carol's view of the chain is old again (she has not noticed the moves).
    Returns bob, carol, mallory, the name and the wallet (an eth_account account)."""
    from eth_account import Account

    from chatcore.identity import bind_wallet, unbind_wallet, wallet_link_signature
    from discovery.resolver import parse_query

    from .conftest import PASSPHRASE

    bob, carol, mallory = (people.new(n) for n in names)
    second, wallet = bob.name + "-too", Account.create()

    def bind(p: Person) -> None:
        deadline = p.c.registry.latest_timestamp() + 600
        sig = wallet_link_signature(wallet, p.c.identity_id, p.network, p.c.registry, deadline)
        bind_wallet(p.c, PASSPHRASE, wallet.address, sig, deadline)

    bob.c.claim_name(PASSPHRASE, second)
    bind(bob)
    await asyncio.sleep(1.1)  # carol's view of the chain is older than DIRECTORY_MAX_AGE_MS
    await carol.c.send_text(second, "hi bob, by your other name")
    await carol.c.send_text(wallet.address, "hi bob, by your wallet")
    assert len(texts(await bob.c.sync())) == 2
    bob.c.registry.release_name(bob.c._owner(PASSPHRASE), parse_query(second)[1])
    unbind_wallet(bob.c, PASSPHRASE, wallet.address)
    mallory.c.claim_name(PASSPHRASE, second)
    bind(mallory)
    await asyncio.sleep(1.1)
    return bob, carol, mallory, second, wallet


async def test_a_move_is_taken_by_adding_its_new_holder_before_it_was_noticed(
    people: People,
) -> None:
    """Thirteenth session's walk: carol added mallory (by id) after bob's name and wallet
    passed to her, before carol's client noticed the moves: the name and the address were
    refused once more as having passed from bob, until carol added mallory a second time."""
    from chatcore.content import ContactState

    bob, carol, mallory, second, wallet = await _name_and_wallet_moved(people, ("ab", "ac", "am"))
    await carol.c.set_contact(mallory.id_hex, ContactState.CONTACT)  # once
    await carol.c.send_text(second, "to mallory, knowingly")
    await carol.c.send_text(wallet.address, "to mallory's wallet, knowingly")
    assert texts(await mallory.c.sync()) == [
        "to mallory, knowingly", "to mallory's wallet, knowingly",
    ]  # fmt: skip
    assert await bob.c.sync() == []


async def test_a_move_is_taken_by_writing_to_its_new_holder_before_it_was_noticed(
    people: People,
) -> None:
    """As adding the new holder as a contact (above), writing to them by id makes them one
    (docs/api.md: "writing to them by id does"): a move not noticed yet when carol wrote
    to mallory by id was refused once more afterwards, as having passed from bob."""
    bob, carol, mallory, second, wallet = await _name_and_wallet_moved(
        people, ("wb2", "wc2", "wm2")
    )
    await carol.c.send_text(mallory.id_hex, "hi mallory, by id")  # a contact now
    await carol.c.send_text(second, "to mallory, knowingly")
    await carol.c.send_text(wallet.address, "to mallory's wallet, knowingly")
    assert texts(await mallory.c.sync()) == [
        "hi mallory, by id", "to mallory, knowingly", "to mallory's wallet, knowingly",
    ]  # fmt: skip
    assert await bob.c.sync() == []


async def test_offline_sends_try_the_network_once_per_call(people: People) -> None:
    # an unreachable network costs the transport's timeout per attempt: one per send, not
    # one per frame waiting in the outbox (nor one more for the new message)
    alice, bob = people.new("oa"), people.new("ob")
    gid = await alice.c.create_group("offline sends", [bob.name])
    await bob.c.sync()
    await alice.c.sync()
    f = await faulty(alice)
    f.fail_publish = True
    for i in range(3):
        f.publishes = 0
        with pytest.raises(DeliveryPending):
            await alice.c.send_group_text(gid, f"offline {i}")
        assert f.publishes == 1, i
        f.publishes = 0
        with pytest.raises(DeliveryPending):
            await alice.c.send_text(bob.name, f"offline 1:1 {i}")
        assert f.publishes == 1, i
    f.fail_publish = False
    await alice.c.flush_outbox()
    got = [r.text for r in await bob.c.sync()]
    assert sorted(got) == sorted(
        [f"offline {i}" for i in range(3)] + [f"offline 1:1 {i}" for i in range(3)]
    )


async def test_a_chain_that_hangs_is_asked_once_for_a_flood_of_unknown_senders(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from chatcore.errors import UntrustedIdentity
    from discovery.errors import ChainUnavailable

    alice, bob = people.new("ua"), people.new("ub")
    await bob.c.sync()
    for i in range(6):
        await alice.c.send_text(bob.name, f"m{i}")
    attempts: list[float] = []

    def hangs(*_a: object, **_k: object) -> int:
        attempts.append(time.monotonic())
        time.sleep(0.2)  # a node that answers nothing, then times out
        raise ChainUnavailable("chain unreachable (injected)")

    def unknown_sender(_frame: bytes, cursor: Any = None) -> Any:
        if cursor is not None:
            bob.c.store.set_cursor(*cursor)
        raise UntrustedIdentity("sender not on chain (as for a made-up sender)")

    await asyncio.sleep(1.1)  # the last index sync is older than DIRECTORY_MAX_AGE_MS
    monkeypatch.setattr(bob.c.index, "sync", hangs)
    monkeypatch.setattr(bob.c.engine, "receive", unknown_sender)
    await bob.c.sync()
    assert 1 <= len(attempts) <= 2  # the sync itself, then one for the first frame at most


async def test_names_are_rechecked_when_another_process_synced_the_index(
    people: People,
) -> None:
    from discovery.index import Index
    from discovery.resolver import parse_query

    from .conftest import PASSPHRASE

    bob, carol = people.new("pb"), people.new("pc")
    await bob.c.send_text(carol.name, "hi")
    await carol.c.sync()
    assert carol.c.display(bob.c.identity_id) == bob.name
    bob.c.registry.release_name(bob.c._owner(PASSPHRASE), parse_query(bob.name)[1])
    people.new("pm").c.claim_name(PASSPHRASE, bob.name)
    other = Index(carol.home / "index.db", carol.c.registry)  # e.g. a CLI 'lookup'
    assert other.sync() > 0
    other.close()
    await carol.c.sync()
    assert carol.c.display(bob.c.identity_id) != bob.name


async def test_a_refused_frame_does_not_hold_up_the_frames_after_it(people: People) -> None:
    alice, bob = people.new("ra"), people.new("rb")
    await alice.c.send_text(bob.name, "first")
    await bob.c.sync()
    f = await faulty(alice)
    f.fail_publish = True
    for t in ("two", "three"):
        with pytest.raises(DeliveryPending):
            await alice.c.send_text(bob.name, t)
    f.fail_publish = False
    f.refuse_next = True  # the network is up, but refuses the oldest frame
    with pytest.raises(TransportError):
        await alice.c.flush_outbox()
    assert [r.text for r in await bob.c.sync()] == ["three"]
    assert len(alice.c.store.pending_outbox()) == 1  # the refused one waits


async def test_a_frame_refused_for_good_holds_up_neither_sync_nor_later_sends(
    people: People,
) -> None:
    alice, bob = people.new("xa"), people.new("xb")
    await alice.c.send_text(bob.name, "first")
    await bob.c.sync()
    f = await faulty(alice)
    refused: set[bytes] = set()
    real = f.publish

    async def refuse_one(subject: str, data: bytes, msg_id: str | None = None) -> Any:
        if data in refused or (not refused and subject == bob.c.engine.inbox):
            refused.add(data)  # this frame, every time it is tried
            raise FrameRefused("publish refused (injected, for good)")
        return await real(subject, data, msg_id)

    f.publish = refuse_one  # type: ignore[method-assign]
    with pytest.raises(DeliveryPending):
        await alice.c.send_text(bob.name, "refused one")
    await bob.c.send_text(alice.name, "hello alice")
    assert texts(await alice.c.sync()) == ["hello alice"]  # the network is up: read on
    await alice.c.send_text(bob.name, "a later one")  # went out: no DeliveryPending
    assert texts(await bob.c.sync()) == ["a later one"]


class _Hanging:
    """The real transport, with publishing hanging when ``hang`` is set."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.hang = False

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> Any:
        if self.hang:
            await asyncio.sleep(3600)
        return await self.inner.publish(subject, data, msg_id=msg_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_read_cut_off_by_cancellation_returns_its_events_later(people: People) -> None:
    """Reading a group invitation publishes key hand-outs; an app's wait_for timed out there
    (the network slow): the frame was stored and the cursor past it, but its "you were added"
    was never returned by any sync() or listen() (found by a concurrency review)."""
    alice, bob = people.new("ta"), people.new("tb")
    for how in ("sync", "listen"):
        gid = await alice.c.create_group(f"cut off {how}", [bob.name])
        await alice.c.send_group_text(gid, f"hello {how}")
        t = _Hanging(await bob.c.connect())
        bob.c.transport = t  # type: ignore[assignment]
        t.hang = True
        if how == "sync":
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(bob.c.sync(), 3)
        else:

            async def first() -> Any:
                async for r in bob.c.listen():
                    return r
                return None

            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(first(), 3)
        t.hang = False
        got = [r.text for r in await bob.c.sync()]
        assert f"you were added to “cut off {how}”" in " ".join(got), got
        assert f"hello {how}" in got
        bob.c.transport = t.inner  # type: ignore[assignment]


async def test_delivery_pending_says_in_words_why_the_network_did_not_take_it(
    people: People,
) -> None:
    """A NATS URL where something listens but never speaks NATS (a mistyped port): the
    connection times out with an exception whose text is empty, and DeliveryPending said only
    'DeliveryPending' (the CLI printed that as the reason); a group send said it still (a
    new-user review, with nats-server stopped by SIGSTOP), and the 1:1 send ended in
    ": TimeoutError()"."""
    alice, bob = people.new("alice"), people.new("bob")
    gid = await alice.c.create_group("pending", [bob.name])
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        await alice.close()
        alice.network = dataclasses.replace(
            alice.network, nats_url=f"nats://127.0.0.1:{mute.getsockname()[1]}"
        )
        alice.open()
        with pytest.raises(DeliveryPending) as exc:
            await alice.c.send_text(bob.name, "to a network that never answers")
        with pytest.raises(DeliveryPending) as gexc:
            await alice.c.send_group_text(gid, "to a group, the same")
    for said in (str(exc.value), str(gexc.value)):
        assert "delivery network unreachable at nats://127.0.0.1:" in said, said
        assert said.endswith(": timed out") and "()" not in said, said


async def _chain_starts_hanging(
    people: People, monkeypatch: pytest.MonkeyPatch, tag: str
) -> tuple[Person, Person, list[int]]:
    """alice has written to bob; then every index sync of alice's fails (and is counted)."""
    from discovery.errors import ChainUnavailable

    alice, bob = people.new(tag + "a"), people.new(tag + "b")
    await alice.c.send_text(bob.name, "while the chain answers")
    attempts: list[int] = []

    def hangs(*_a: object, **_k: object) -> int:
        attempts.append(1)
        raise ChainUnavailable("chain unreachable (injected)")

    await asyncio.sleep(1.1)  # the last index sync is older than DIRECTORY_MAX_AGE_MS
    monkeypatch.setattr(alice.c.index, "sync", hangs)
    return alice, bob, attempts


async def test_sends_wait_on_a_hanging_chain_once_not_per_message(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each send asks the chain first (devices linked since); with a node that hangs, every
    message of a chat waited a whole timeout before going out from the local index."""
    alice, bob, attempts = await _chain_starts_hanging(people, monkeypatch, "h")
    for i in range(3):
        await alice.c.send_text(bob.name, f"chain hangs {i}")
        await asyncio.sleep(1.1)
    assert len(attempts) == 1
    assert texts(await bob.c.sync())[-3:] == [f"chain hangs {i}" for i in range(3)]


async def test_syncs_and_sends_wait_on_a_hanging_chain_once_between_them(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app that syncs in a loop and sends in between: a sync that found the chain hanging
    did not tell the sends (nor the next sync), so each asked it again and waited again."""
    alice, bob, attempts = await _chain_starts_hanging(people, monkeypatch, "hs")
    for i in range(2):
        await alice.c.sync()
        await alice.c.send_text(bob.name, f"chain hangs {i}")
        await asyncio.sleep(1.1)
    assert len(attempts) == 1
    assert texts(await bob.c.sync())[-2:] == [f"chain hangs {i}" for i in range(2)]


@pytest.mark.parametrize("to", ["name", "address"])
async def test_a_send_from_a_new_process_asks_a_hanging_chain_once(
    people: People, monkeypatch: pytest.MonkeyPatch, to: str
) -> None:
    """A CLI send is a new process: it has no earlier failure to remember. With a node that
    takes connections and answers nothing, it waited one timeout for the index sync and then
    one more for each name or address it checked with storage (five in all: 50 s for one
    'logos-chat send'). Every request to the node is counted; each fails as a timeout."""
    import requests

    alice, bob = people.new(f"hn{to[0]}a"), people.new(f"hn{to[0]}b")
    await alice.c.send_text(bob.name, "while the chain answers")
    await bob.c.sync()
    target = bob.name if to == "name" else bob.c.store.get_meta("owner").decode()  # type: ignore[union-attr]
    await alice.c.send_text(target, "the address is checked while the chain answers")
    await alice.crash()
    alice.open()
    asked: list[str] = []

    def hangs(method: str, params: object) -> object:
        asked.append(method)
        raise requests.exceptions.ReadTimeout("no answer (injected)")

    monkeypatch.setattr(alice.c.registry.w3.provider, "make_request", hangs)
    await alice.c.send_text(target, "the chain hangs")
    assert len(asked) == 1, asked
    got = texts(await bob.c.sync())
    assert got[-1] == "the chain hangs", got


@pytest.mark.parametrize("group", [False, True])
async def test_an_edit_of_a_message_still_in_the_outbox_goes_after_it(
    people: People, group: bool
) -> None:
    """A message sent offline, then fixed (edit, delete, reaction) once the network is back:
    the action went out alone, ahead of the message still waiting in the outbox; receivers
    dropped it ("edit of an unknown message") and showed the old text until a
    retransmission, ~30 s later."""
    alice, bob = people.new("oa" + "g" * group), people.new("ob" + "g" * group)
    await alice.c.send_text(bob.name, "hi")  # bob knows alice
    gid = await alice.c.create_group("outbox", [bob.name]) if group else None
    await bob.c.sync()
    f = await faulty(alice)
    f.fail_publish = True
    with pytest.raises(DeliveryPending) as pending:
        if gid is not None:
            await alice.c.send_group_text(gid, "helo")
        else:
            await alice.c.send_text(bob.name, "helo")
    mid = pending.value.result.message_id
    f.fail_publish = False  # back, and the user fixes the typo before any sync or timer
    await alice.c.edit(mid, "hello")
    await alice.c.react(mid, "👍")
    got = await bob.c.sync()
    assert [(r.content_type, r.text) for r in got] == [
        (ContentType.TEXT, "helo"),
        (ContentType.EDIT, "hello"),
        (ContentType.REACTION, "👍"),
    ]
    v = bob.c.view(bob.c.message(mid))
    assert (v.text, v.edited, v.reactions) == ("hello", True, {"👍": [alice.c.identity_id]})


async def test_a_chat_started_with_the_chain_hanging_waits_on_it_once(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: a process that had not synced the directory yet (a chat started
    while the node hangs: it goes on from the local index) asked the chain again before
    each message when resolving the person (``resolve_peer``), after ``_refresh_directory``
    had already skipped it: a whole RPC timeout per message, as before the fix for sends."""
    from discovery.errors import ChainUnavailable

    alice, bob = people.new("hc"), people.new("hd")
    await alice.c.send_text(bob.name, "while the chain answers")
    await alice.crash()
    alice.open()
    attempts: list[int] = []

    def hangs(*_a: object, **_k: object) -> int:
        attempts.append(1)
        raise ChainUnavailable("chain unreachable (injected)")

    monkeypatch.setattr(alice.c.index, "sync", hangs)
    for i in range(3):  # as 'chat' sends: to the person's id
        await alice.c.send_text(bob.id_hex, f"chain hangs {i}")
    assert len(attempts) == 1
    assert texts(await bob.c.sync())[-3:] == [f"chain hangs {i}" for i in range(3)]


async def test_a_domain_document_is_signed_with_the_chain_unreachable(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: since the owner key is handed out only after a directory sync (a
    revoked device says so), 'bind domain --print', which only signs with it, failed with
    ChainUnavailable while the node was down (it worked offline before)."""
    from chatcore.identity import domain_document
    from discovery.errors import ChainUnavailable

    from .conftest import PASSPHRASE

    alice = people.new("dom")
    await asyncio.sleep(1.1)  # the last index sync is older than DIRECTORY_MAX_AGE_MS

    def down(*_a: object, **_k: object) -> int:
        raise ChainUnavailable("chain unreachable (injected)")

    monkeypatch.setattr(alice.c.index, "sync", down)
    doc = domain_document(alice.c, PASSPHRASE, "example.org")
    assert doc["signer"] == alice.c.home.load_owner_key(PASSPHRASE).address


async def test_a_sync_asks_the_chain_however_recent_its_last_read(people: People) -> None:
    """A sync reads the chain every time (a send may use a view up to DIRECTORY_MAX_AGE_MS
    old): a sender registered since the last read is known at once."""
    alice, bob = people.new("sra"), people.new("srb")
    await alice.c.send_text(bob.name, "hi")
    assert texts(await bob.c.sync()) == ["hi"]
    now = bob.c.clock_ms()
    bob.c.clock_ms = lambda: now  # no time passes for bob: his last read is 0 ms old
    carol = people.new("src")  # on chain after bob's last read
    await carol.c.send_text(bob.name, "new here")
    assert texts(await bob.c.sync()) == ["new here"]
    assert bob.c.index.synced_block >= carol.c.index.synced_block


class Hanging(Faulty):
    """The real transport, whose publishes hang while ``hang`` is set (a network that
    does not answer: they would end only after the transport's own 10 s)."""

    hang = False

    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> Any:
        self.publishes += 1
        if self.hang:
            await asyncio.Event().wait()
        return await self.inner.publish(subject, data, msg_id=msg_id)


async def test_publish_timeout_bounds_what_a_send_waits_for_the_network(
    people: People,
) -> None:
    """An interactive app (the CLI's chat) sets ``publish_timeout``: a send the network does
    not take by then is DeliveryPending (saved, its message id in ``.result``) instead of
    waiting on; the outbox sends it later, once, before what is sent after it."""
    alice, bob = people.new("pta"), people.new("ptb")
    h = Hanging(await alice.c.connect())
    alice.c.transport = h  # type: ignore[assignment]
    alice.c.publish_timeout = 0.5
    h.hang = True
    with pytest.raises(DeliveryPending) as exc:  # (wait_for: without the bound it hangs)
        await asyncio.wait_for(alice.c.send_text(bob.name, "while the network hangs"), 60)
    assert "did not take it within 0.5s" in str(exc.value), str(exc.value)
    mid = exc.value.result.message_id  # type: ignore[attr-defined]
    conv = alice.c.conversation_id(bob.name)
    assert alice.c.store.message(conv, mid).status == "sending"  # type: ignore[union-attr]
    h.hang = False
    await alice.c.send_text(bob.name, "after it answers again")
    assert alice.c.store.message(conv, mid).status == "sent"  # type: ignore[union-attr]
    assert texts(await bob.c.sync()) == ["while the network hangs", "after it answers again"]


async def test_check_installation_says_when_another_client_rotated_the_home(
    people: People,
) -> None:
    """A Client left open while another one on the home rotates its installation acts as the
    old, revoked device: ``check_installation`` says so (InstallationReplaced)."""
    from chatcore.client import Client
    from chatcore.errors import InstallationReplaced
    from chatcore.identity import rotate_installation

    from .conftest import PASSPHRASE

    alice = people.new("cia")
    alice.c.check_installation()  # its own keys: nothing to say
    other = Client.open(alice.home, PASSPHRASE, alice.network)
    _, rotated = await rotate_installation(other, PASSPHRASE)
    try:
        rotated.check_installation()
        with pytest.raises(InstallationReplaced, match="replaced by another process"):
            alice.c.check_installation()
    finally:
        await rotated.aclose()


class HangingReads(Hanging):
    """As ``Hanging``, with its fetches hanging too."""

    async def fetch(self, subject: str, after: Any = None, limit: int = 500) -> Any:
        if self.hang:
            await asyncio.Event().wait()
        return await super().fetch(subject, after=after, limit=limit)


async def test_a_group_send_waits_for_the_network_once_and_within_publish_timeout(
    people: People,
) -> None:
    """A group send reads our inbox first. With the network not answering, that read
    waited past ``publish_timeout`` (the transport's own bound: an interactive app's send
    hung), and a read that failed was followed by a publish that waited again. The read is
    bounded as a publish is; if it fails, the message is saved (DeliveryPending) without
    a second wait, as when the outbox could not be sent first. The same for a reaction."""
    alice, bob = people.new("gwa"), people.new("gwb")
    gid = await alice.c.create_group("once", [bob.name])
    await bob.c.sync()
    await bob.c.send_group_text("once", "hello")
    (hello,) = [m for m in await alice.c.sync() if m.conversation_id == gid]
    h = HangingReads(await alice.c.connect())
    alice.c.transport = h  # type: ignore[assignment]
    alice.c.publish_timeout = 0.5
    h.hang = True
    publishes = h.publishes
    with pytest.raises(DeliveryPending) as exc:  # (wait_for: without the bound it hangs)
        await asyncio.wait_for(alice.c.send_group_text("once", "while it hangs"), 60)
    assert h.publishes == publishes  # not a second wait
    mid = exc.value.result.message_id  # type: ignore[attr-defined]
    assert alice.c.store.message(gid, mid).status == "sending"  # type: ignore[union-attr]
    with pytest.raises(DeliveryPending):
        await asyncio.wait_for(alice.c.react(hello.message_id, "👍"), 60)
    assert h.publishes == publishes
    h.hang = False
    await alice.c.send_group_text("once", "once it answers")
    assert alice.c.store.message(gid, mid).status == "sent"  # type: ignore[union-attr]
    got = [m for m in await bob.c.sync() if m.conversation_id == gid]
    assert texts(got) == ["while it hangs", "once it answers"]
    assert any(m.content_type == ContentType.REACTION for m in got)
