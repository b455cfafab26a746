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
