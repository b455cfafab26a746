"""End to end (anvil + nats-server): a group member registers a device whose signed prekey is
a low-order X25519 point (found by a review). Before, every other member's Client.sync()
raised HandshakeError on every call and read nothing, unrelated 1:1 messages included."""

from __future__ import annotations

import pytest

from chatcore.keys import InstallationKeys
from discovery.records import IntroBundle
from tests.integration.conftest import PASSPHRASE, People

pytestmark = pytest.mark.devnet


async def test_member_with_an_unusable_device_breaks_nobodys_sync(people: People) -> None:
    alice, bob, mallory = people.new("alice"), people.new("bob"), people.new("mallory")
    gid = await alice.c.create_group("g", [bob.name, mallory.name])
    for p in (bob, mallory, alice):
        await p.c.sync()

    # mallory registers a second installation with a low-order signed prekey
    m = mallory.c
    keys = InstallationKeys.generate(m.rng)
    now_s = m.clock_ms() // 1000
    bundle = IntroBundle(
        chain_id=m.network.chain_id, registry=m.network.binding.registry,
        identity_id=m.identity_id, installation_id=keys.installation_id,
        ik_x25519=keys.ik_x25519, spk_id=1, spk_pub=bytes(32),
        spk_not_after=now_s + 7 * 86400, seq=1, issued_at=now_s,
    ).signed(keys.sign)  # fmt: skip
    m.registry.add_installation(
        m._owner(PASSPHRASE), m.identity_id, keys.installation_id, bundle.encode()
    )

    await alice.c.send_text(bob.name, "hi bob, 1:1")
    got = await bob.c.sync()
    assert "hi bob, 1:1" in [r.text for r in got]
    await alice.c.sync()
    await bob.c.sync()  # and again: no error

    # the chain lists the device, the resolver rejects it: nobody writes to it
    resolved = alice.c.resolver.resolve_id(m.identity_id)
    assert keys.installation_id not in {i.installation_id for i in resolved.installations}
    assert keys.installation_id in dict(resolved.rejected)
    assert "low-order" in dict(resolved.rejected)[keys.installation_id]

    # the group and 1:1 with mallory go on
    await alice.c.send_group_text(gid, "still here")
    await alice.c.send_text(mallory.name, "hi mallory")
    texts = [r.text for r in await mallory.c.sync()]
    assert "still here" in texts and "hi mallory" in texts


async def test_one_groups_device_refresh_failing_does_not_stop_sync(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    await alice.c.create_group("g", [bob.name])
    await bob.c.sync()

    def broken(gid: bytes) -> list[object]:
        raise RuntimeError("this group's device refresh fails")

    monkeypatch.setattr(bob.c.groups, "refresh_devices", broken)
    await alice.c.send_text(bob.name, "1:1 still arrives")
    assert "1:1 still arrives" in [r.text for r in await bob.c.sync()]
