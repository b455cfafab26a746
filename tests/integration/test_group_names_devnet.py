"""A group's name never takes what is meant for a person (found by a new-user review): a
stranger named groups after someone's name, identity id and address, added us, and our 1:1
messages to that person went into the stranger's groups. Real anvil + JetStream."""

from __future__ import annotations

import pytest

from chatcore.errors import AmbiguousName

from .conftest import People

pytestmark = pytest.mark.devnet


async def test_a_group_named_after_a_person_does_not_take_their_messages(people: People) -> None:
    alice, bob, carol = people.new("na"), people.new("nb"), people.new("nc")
    for bad in (alice.id_hex, alice.id_hex[:10], "0x" + bob.c.identity_id.hex()[:40]):
        with pytest.raises(ValueError, match="look like an id"):
            await carol.c.create_group(bad, [bob.name])
    gid = await carol.c.create_group(alice.name, [bob.name])
    await bob.c.sync()
    assert bob.c.group_info(gid).name == alice.name
    # alice's name names a group and a person: the CLI's "send alice" asks which
    with pytest.raises(AmbiguousName, match="names a group and a person"):
        bob.c.find_group(alice.name)
    # so does conversation_id (it gave the 1:1 conversation: an app's mark_read or
    # send_typing there went to the person when the user meant the group)
    with pytest.raises(AmbiguousName, match="names a group and a person"):
        bob.c.conversation_id(alice.name)
    assert bob.c.find_group("0x" + gid.hex()[:8]) == gid  # the id still finds it
    # the 1:1 API and ids always mean the person
    for to in (alice.name, alice.id_hex):
        res = await bob.c.send_text(to, f"for alice only, by {to[:6]}")
        assert res.conversation_id != gid
    assert bob.c.conversation_id(alice.id_hex) != gid
    got = [r.text for r in await alice.c.sync()]
    assert got == [f"for alice only, by {alice.name[:6]}", f"for alice only, by {alice.id_hex[:6]}"]
    assert all("for alice" not in (r.text or "") for r in await carol.c.sync())
    # a group we left no longer shadows the person at all
    await bob.c.group_change(gid, "leave")
    res = await bob.c.send_text(alice.name, "after leaving")
    assert res.conversation_id == bob.c.conversation_id(alice.id_hex)


async def test_an_alias_cannot_be_an_address_or_someone_elses_name(people: People) -> None:
    """Aliases come before on-chain names in lookups: one that is another person's name,
    or looks like an id or address, sent that person's messages to the aliased contact."""
    from chatcore.content import ContactState

    alice, bob, carol = people.new("aa"), people.new("ab"), people.new("ac")
    bob_address = "0x" + bob.c.identity_id.hex()[:40]
    for alias in (bob.name, bob.id_hex, bob_address, "0xabc"):
        with pytest.raises(ValueError):
            await alice.c.set_contact(carol.name, ContactState.CONTACT, alias=alias)
    await alice.c.set_contact(carol.name, ContactState.CONTACT, alias="Caro")
    res = await alice.c.send_text(bob.name, "for bob")
    assert res.conversation_id == alice.c.conversation_id(bob.id_hex)
    assert alice.c.resolve_peer("Caro").identity_id == carol.c.identity_id


async def test_case_and_at_do_not_get_a_group_or_alias_past_a_persons_name(
    people: People,
) -> None:
    """On-chain names are compared as lookups take them (case aside, "@name" is a name):
    "ALICE" and "@alice" shadowed alice as group names, and "BOB" passed as an alias.
    Groups we left, several of them, no longer hide the person either."""
    from chatcore.content import ContactState

    alice, bob, carol = people.new("ca"), people.new("cb"), people.new("cc")
    for name in (alice.name.upper(), "@" + alice.name):
        gid = await carol.c.create_group(name, [bob.name])
        await bob.c.sync()
        with pytest.raises(AmbiguousName, match="names a group and a person"):
            bob.c.find_group(name)
        await bob.c.group_change(gid, "leave")
    twins = [await carol.c.create_group("twins", [bob.name]) for _ in range(2)]
    await bob.c.sync()
    # two groups of one name: conversation_id says so (it looked the name up as a person's
    # and said "no identity found for 'twins'")
    with pytest.raises(AmbiguousName, match="2 groups are named 'twins'"):
        bob.c.conversation_id("twins")
    for gid in twins:
        await bob.c.group_change(gid, "leave")
    for name in (alice.name, alice.name):  # two groups of one name, both left
        gid = await carol.c.create_group(name, [bob.name])
        await bob.c.sync()
        await bob.c.group_change(gid, "leave")
    res = await bob.c.send_text(alice.name, "still alice")
    assert res.conversation_id == bob.c.conversation_id(alice.id_hex)
    for alias in (bob.name.upper(), "@" + bob.name):
        with pytest.raises(ValueError, match="someone else's name"):
            await alice.c.set_contact(carol.name, ContactState.CONTACT, alias=alias)


async def test_remembered_names_are_not_asked_of_the_chain_at_every_block(
    people: People,
) -> None:
    """A remembered name is checked against storage once, then again only when the logs
    stop agreeing: one nameOwner call per contact on every sync where the chain moved (by
    an empty block, too) was 25 s per sync for 500 contacts at 50 ms a call."""
    alice = people.new("ra")
    others = [people.new(f"r{i}") for i in range(5)]
    c = alice.c
    for p in others:
        c.store.set_peer_display(p.c.identity_id, p.name, c.clock_ms())
    c.registry.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    calls = []
    real = c.registry.name_owner
    c.registry.name_owner = lambda name: (calls.append(name), real(name))[1]  # type: ignore[method-assign]
    c.sync_directory()
    assert sorted(calls) == sorted(p.name for p in others)  # once each
    for _ in range(3):
        calls.clear()
        c.registry.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        c.sync_directory()
        assert calls == []
    assert [c.display(p.c.identity_id) for p in others] == [p.name for p in others]
