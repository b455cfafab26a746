"""The ``chatcore.Client`` facade as an app embeds it (docs/api.md): every chat feature
through public methods only, on real anvil + JetStream, including the delivery network
going away (``DeliveryPending``: done here, sent later, nothing lost)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcore import (
    Client,
    ContactState,
    DeliveryPending,
    GroupError,
    UnknownContact,
    UnknownMessage,
)
from tests.fixtures.nats import NatsServer

from .conftest import PASSPHRASE, People

pytestmark = pytest.mark.devnet


async def test_one_to_one_features_through_the_facade(people: People) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    sent = await alice.c.send_text(bob.name, "helo bob")
    conv, mid = sent.conversation_id, sent.message_id

    # a first message from a stranger is a request until bob answers it
    [got] = await bob.c.sync()
    assert got.text == "helo bob" and got.conversation_id == conv
    assert bob.c.is_request(conv)
    assert [c.identity_id for c in bob.c.contacts(ContactState.REQUEST)] == [alice.c.identity_id]
    c = await bob.c.set_contact(alice.name, ContactState.CONTACT, alias="Al")
    assert c is not None and c.state == ContactState.CONTACT and c.alias == "Al"
    assert not bob.c.is_request(conv)

    # read state and receipts
    assert await bob.c.mark_read(conv) == 1
    assert await bob.c.mark_read(conv) == 0
    await alice.c.sync()
    assert alice.c.receipts(alice.c.message(mid)) == {bob.c.identity_id: "read"}
    assert alice.c.message(mid).status == "read"

    # edit by id prefix, a reaction and a reply from bob, then a delete
    prefix = "0x" + mid.hex()[:10]
    await alice.c.edit(prefix, "hello bob")
    await bob.c.sync()
    assert bob.c.view(bob.c.message(mid)).text == "hello bob"
    assert bob.c.view(bob.c.message(mid)).edited
    await bob.c.react(mid, "👍")
    answer = await bob.c.reply(mid, "hi alice")
    await alice.c.sync()
    v = alice.c.view(alice.c.message(mid))
    assert v.reactions == {"👍": [bob.c.identity_id]}
    assert alice.c.view(alice.c.message(answer.message_id)).reply_to == mid
    await bob.c.react(mid, "")  # taken back
    await alice.c.sync()
    assert alice.c.view(alice.c.message(mid)).reactions == {}
    await alice.c.delete_message(mid)
    await bob.c.sync()
    assert bob.c.view(bob.c.message(mid)).deleted

    # full-text search sees current text only
    assert [m.message_id for m in bob.c.search("alice")] == [answer.message_id]
    assert bob.c.search("helo") == []

    # conversation flags, typing (rate-limited), and the conversation by name
    assert alice.c.conversation_id(bob.name) == conv
    flags = await alice.c.set_conversation_flags(conv, muted=True)
    assert flags.muted and not flags.archived
    assert await alice.c.send_typing(conv) == 1
    assert await alice.c.send_typing(conv) == 0

    # bad references are typed errors
    with pytest.raises(UnknownMessage):
        alice.c.message("0xzzzz")
    with pytest.raises(UnknownMessage):
        alice.c.message("0x" + "00" * 16)
    with pytest.raises(UnknownContact):
        alice.c.conversation_id(alice.name)  # yourself
    with pytest.raises(ValueError):
        await alice.c.edit(answer.message_id, "")
    # a switch that is no bool is refused and changes nothing ("no" is truthy: it would
    # have switched read receipts on, archived, or sent "typing")
    assert alice.c.read_receipts
    await alice.c.set_read_receipts(False)
    with pytest.raises(TypeError):
        await alice.c.set_read_receipts("yes")  # type: ignore[arg-type]
    assert not alice.c.read_receipts
    with pytest.raises(TypeError):
        await alice.c.set_conversation_flags(conv, archived="no")  # type: ignore[arg-type]
    assert not alice.c.store.conversation(conv).archived  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        await alice.c.send_typing(conv, active=0)  # type: ignore[arg-type]


async def test_offline_actions_raise_delivery_pending_and_go_later(
    people: People, nats_server: NatsServer
) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    first = await alice.c.send_text(bob.name, "before the outage")
    await bob.c.sync()
    nats_server.stop()
    await alice.close()
    alice.open()

    with pytest.raises(DeliveryPending) as err:
        await alice.c.send_text(bob.name, "during the outage")
    during = err.value.result
    assert alice.c.message(during.message_id).status == "sending"
    with pytest.raises(DeliveryPending):
        await alice.c.edit(first.message_id, "edited offline")
    assert alice.c.view(alice.c.message(first.message_id)).text == "edited offline"

    nats_server.start()
    await alice.close()
    alice.open()
    assert await alice.c.flush_outbox() >= 2
    texts = {r.text for r in await bob.c.sync()}
    assert "during the outage" in texts
    assert bob.c.view(bob.c.message(first.message_id)).text == "edited offline"


async def test_group_features_through_the_facade(people: People) -> None:
    a, b, c = people.new("a"), people.new("b"), people.new("c")
    gid = await a.c.create_group("crew", [b.name, c.name])
    await b.c.sync()
    await c.c.sync()
    info = b.c.group_info("crew")
    assert info.group_id == gid and info.members == {
        a.c.identity_id,
        b.c.identity_id,
        c.c.identity_id,
    }
    assert info.admins == {a.c.identity_id} and b.c.group_ids() == [gid]

    msg = await a.c.send_group_text("crew", "ship it?")
    await b.c.sync()
    await c.c.sync()
    await a.c.sync()
    m = a.c.message(msg.message_id)
    assert a.c.receipts(m) == {b.c.identity_id: "delivered", c.c.identity_id: "delivered"}
    await b.c.react(msg.message_id, "🚀")  # acting in a conversation means having read it
    assert await b.c.mark_read(gid) == 0
    assert await c.c.mark_read(gid) == 1
    await a.c.sync()
    assert a.c.view(m).reactions == {"🚀": [b.c.identity_id]}
    assert a.c.receipts(m) == {b.c.identity_id: "read", c.c.identity_id: "read"}

    await a.c.group_change("crew", "remove", c.name)
    await c.c.sync()
    assert not c.c.group_info(gid).is_member
    with pytest.raises(GroupError):
        await c.c.send_group_text("crew", "still here?")


async def test_devices_list_offline_is_as_last_synced(people: People, tmp_path: Path) -> None:
    import dataclasses
    import socket

    from chatcore.identity import list_devices
    from discovery.errors import ChainUnavailable

    alice = people.new("alice")
    await alice.c.sync()
    online = [(d.installation_id, d.status) for d in list_devices(alice.c)]
    await alice.close()
    with socket.socket() as s:  # a port nobody listens on: the chain is gone
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    offline_net = dataclasses.replace(people.network, rpc_url=dead)
    c = Client.open(alice.home, PASSPHRASE, offline_net)
    try:
        assert [(d.installation_id, d.status) for d in list_devices(c)] == online
    finally:
        c.close()
    # a home that never synced has nothing to show: the missing chain is the error
    fresh, _ = Client.init(tmp_path / "fresh", PASSPHRASE, people.network, None)
    fresh.close()
    c = Client.open(tmp_path / "fresh", PASSPHRASE, offline_net)
    try:
        with pytest.raises(ChainUnavailable):
            list_devices(c)
    finally:
        c.close()


async def test_a_group_whose_history_was_deleted_still_has_its_conversation(
    people: People,
) -> None:
    """``delete_conversation(gid)`` deletes the history here; the group goes on. Then
    ``conversation_id(gid)`` said "no conversation" and mute/typing by the group's id raised
    UnknownContact, though ``conversation_id`` documents it makes the conversation."""
    alice, bob = people.new("alice"), people.new("bob")
    gid = await alice.c.create_group("team", [bob.name])
    await alice.c.send_group_text(gid, "hello team")
    assert alice.c.delete_conversation(gid) >= 1
    assert alice.c.conversation_id(gid) == gid
    assert alice.c.conversation_id("team") == gid
    flags = await alice.c.set_conversation_flags(gid, muted=True)
    assert flags.id == gid and flags.kind == "group" and flags.muted
    assert await alice.c.send_typing(gid) == 1
    assert alice.c.history(gid) == []
    alice.c.delete_conversation(gid)
    assert alice.c.conversation_id("team") == gid  # by its name, too, it is made again
    assert gid in [c.id for c in alice.c.conversations()]


async def test_conversation_actions_on_an_id_this_home_never_had_are_unknown_contact(
    people: People,
) -> None:
    """``mark_read``, ``is_request`` and ``delete_conversation`` on an id this home never
    had returned 0 / False silently (a wrong id looked like an empty conversation), while
    mute, typing and ``conversation_id`` raised UnknownContact. A conversation deleted here,
    or a group whose history was deleted here, is no wrong id: 0 / False as before."""
    alice, bob = people.new("alice"), people.new("bob")
    sent = await alice.c.send_text(bob.name, "hello")
    direct = sent.conversation_id
    gid = await alice.c.create_group("team", [bob.name])
    await alice.c.send_group_text(gid, "hello team")
    for wrong in (b"\x07" * 16, b"\x07" * 32, direct[:-1] + bytes([direct[-1] ^ 1])):
        with pytest.raises(UnknownContact):
            await alice.c.mark_read(wrong)
        with pytest.raises(UnknownContact):
            alice.c.is_request(wrong)
        with pytest.raises(UnknownContact):
            alice.c.delete_conversation(wrong)
        with pytest.raises(UnknownContact):  # as the others do
            await alice.c.set_conversation_flags(wrong, muted=True)
    for not_bytes in ("0x" + direct.hex(), None):
        with pytest.raises(TypeError):
            await alice.c.mark_read(not_bytes)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            alice.c.is_request(not_bytes)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            alice.c.delete_conversation(not_bytes)  # type: ignore[arg-type]
    assert alice.c.history(direct) != [] and alice.c.history(gid) != []

    # deleted here: the person and the group are still there; deleting again is no error
    for conv in (direct, gid):
        assert alice.c.delete_conversation(conv) >= 1
        assert alice.c.delete_conversation(conv) == 0
        assert await alice.c.mark_read(conv) == 0
        assert not alice.c.is_request(conv)
    # and when it comes back it is an ordinary conversation again
    await bob.c.sync()
    await bob.c.send_text(alice.name, "still here")
    await alice.c.sync()
    assert alice.c.is_request(direct) is False and await alice.c.mark_read(direct) == 1


async def _make_again(c: Client, how: str, conv: bytes) -> None:
    if how == "conversation_id":
        assert c.conversation_id(conv) == conv
    elif how == "send_typing":
        assert await c.send_typing(conv) >= 1
    else:
        assert (await c.set_conversation_flags(conv, muted=True)).muted


@pytest.mark.parametrize("how", ["conversation_id", "send_typing", "set_conversation_flags"])
async def test_a_one_to_one_conversation_deleted_here_is_made_again_by_its_id(
    people: People, how: str
) -> None:
    """A 1:1 conversation deleted here was known to ``mark_read``, ``is_request`` and
    ``delete_conversation`` but ``conversation_id(bytes)``, ``send_typing`` and
    ``set_conversation_flags`` raised UnknownContact, while ``conversation_id(person)`` made
    it again and a group deleted here is made again by its id. Each of them makes it again
    now (empty, with its person and its clock), for a 1:1 conversation as for a group."""
    alice, bob = people.new("alice"), people.new("bob")
    first = await alice.c.send_text(bob.name, "hello")
    direct = first.conversation_id
    gid = await alice.c.create_group("team", [bob.name])
    await alice.c.send_group_text(gid, "hello team")
    for conv, kind, peer in ((direct, "direct", bob.c.identity_id), (gid, "group", None)):
        assert alice.c.delete_conversation(conv) >= 1
        await _make_again(alice.c, how, conv)
        [again] = [c for c in alice.c.conversations() if c.id == conv]
        assert (again.kind, again.peer_identity) == (kind, peer)
        assert alice.c.history(conv) == []

    # the clock it had is kept: alice's next message sorts after the old one at bob's
    mine = await alice.c.send_text(bob.name, "me again")
    assert mine.conversation_id == direct and mine.lamport > first.lamport
    await bob.c.sync()
    assert [m.message_id for m in bob.c.history(direct)] == [first.message_id, mine.message_id]
    # and bob's answer lands in it, with the flags alice set
    answer = await bob.c.send_text(alice.name, "hi")
    await alice.c.sync()
    [now] = [c for c in alice.c.conversations() if c.id == direct]
    assert now.muted == (how == "set_conversation_flags")
    assert [m.message_id for m in alice.c.history(direct)] == [mine.message_id, answer.message_id]


async def test_a_conversation_deleted_before_its_person_was_kept_is_found_again(
    people: People,
) -> None:
    """A home whose 1:1 conversation was deleted before the person was kept with its clock
    (only the clock: an older home) finds the person among the people it knows."""
    alice, bob = people.new("alice"), people.new("bob")
    direct = (await alice.c.send_text(bob.name, "hello")).conversation_id
    assert alice.c.delete_conversation(direct) == 1
    alice.c.store.delete_meta("deleted_peer:" + direct.hex())
    assert await alice.c.send_typing(direct) >= 1
    [again] = [c for c in alice.c.conversations() if c.id == direct]
    assert again.peer_identity == bob.c.identity_id
