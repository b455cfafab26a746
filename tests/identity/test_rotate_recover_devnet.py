"""Rotation, recovery, backups, bindings and groups across devices on real anvil + NATS."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from eth_account import Account

from chatcore.client import DIRECTORY_MAX_AGE_MS, ROTATION_SETTLE_MS, Client
from chatcore.engine import direct_conversation_id
from chatcore.identity import (
    IdentityError,
    WrongRecoveryPhrase,
    bind_wallet,
    export_backup,
    import_backup,
    list_devices,
    restore,
    rotate_installation,
    rotate_owner,
    rotate_prekey,
    unbind_wallet,
    wallet_link_signature,
)
from discovery.errors import RegistryReverted
from discovery.network import NetworkConfig
from tests.fixtures.killed import run_killed
from tests.integration.conftest import PASSPHRASE, People

from .test_link_devnet import link, texts

pytestmark = pytest.mark.devnet


async def test_rotations_are_invisible_to_peers(people: People, network: NetworkConfig) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    await bob.c.send_text(alice.name, "hello alice")
    await alice.c.sync()
    ident = alice.c.identity_id
    # 1. prekey
    r = rotate_prekey(alice.c, PASSPHRASE)
    assert r.what == "prekey" and r.gas_used < 45_000
    # 2. installation keys: new installation registered, old one revoked
    old_inst = alice.c.installation_id
    r, alice.client = await rotate_installation(alice.c, PASSPHRASE)
    assert alice.c.identity_id == ident and alice.c.installation_id != old_inst
    t0 = time.perf_counter()
    bob.c.sync_directory()
    res = await bob.c.send_text(alice.name, "still there?")
    got = await alice.c.sync()
    converge_ms = (time.perf_counter() - t0) * 1000
    assert len(res.frames) == 1 and [m.text for m in got] == ["still there?"]
    await alice.c.send_text(bob.name, "yes, new keys")
    assert [m.text for m in await bob.c.sync()] == ["yes, new keys"]
    # same conversation on both sides, full history kept
    assert texts(alice.c, bob.c.identity_id) == ["hello alice", "still there?", "yes, new keys"]
    assert texts(bob.c, ident) == ["hello alice", "still there?", "yes, new keys"]
    # 3. owner account; the old owner key can no longer act
    old_owner = alice.c._owner(PASSPHRASE)
    r = rotate_owner(alice.c, PASSPHRASE)
    assert r.new != old_owner.address
    with pytest.raises(RegistryReverted, match="NotAuthorized"):
        alice.c.registry.revoke_installation(old_owner, ident, alice.c.installation_id)
    rotate_prekey(alice.c, PASSPHRASE)  # the new owner key works
    assert alice.c.lookup("0x" + ident.hex()).owner == r.new
    await bob.c.send_text(alice.name, "after owner change")
    assert [m.text for m in await alice.c.sync()] == ["after owner change"]
    print(f"\nconvergence to a rotated installation: {converge_ms:.0f} ms")


_ROTATE_OWNER_KILLED = """
import os, signal, sys
from pathlib import Path
from chatcore.client import Client
from chatcore.identity import rotate_owner
from discovery.network import NetworkConfig

client = Client.open(sys.argv[1], sys.argv[2], NetworkConfig.load(Path(sys.argv[3])))
set_owner = client.registry.set_owner


def landed_then_killed(*args, **kwargs):  # the chain took it; the process dies at once
    set_owner(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)


client.registry.set_owner = landed_then_killed
rotate_owner(client, sys.argv[2])
"""


async def test_an_owner_rotation_killed_after_the_chain_took_it_keeps_the_new_key(
    people: People, network: NetworkConfig, tmp_path: Path
) -> None:
    """Review finding: ``keys rotate --owner`` made the new owner key in memory and wrote it
    to the keystore only after ``setOwner`` landed. A process killed in between (kill -9, a
    power cut) lost the identity's owner key for good: every publish, prekey refresh and
    device change was refused (NotAuthorized), on this device and the linked ones. The key
    is kept in the store first; the next command that needs the owner finishes the
    rotation, and the other devices get the key as after a whole rotation."""
    alice = people.new("alice")
    a2 = await link(alice, tmp_path / "alice2", network)
    try:
        old_owner = alice.c._owner(PASSPHRASE).address
        await alice.crash()
        run_killed(_ROTATE_OWNER_KILLED, alice.home, PASSPHRASE, network, tmp_path)
        alice.open()
        on_chain = alice.c.registry.get_identity(alice.c.identity_id).owner
        assert on_chain != old_owner  # the chain took the new owner
        rotate_prekey(alice.c, PASSPHRASE)  # the new owner key is at hand here
        assert alice.c._owner(PASSPHRASE).address == on_chain
        await alice.c.flush_outbox()
        await a2.sync()  # and the linked device got it, and can act as the owner
        rotate_prekey(a2, PASSPHRASE)
        assert a2._owner(PASSPHRASE).address == on_chain
    finally:
        a2.close()


_ROTATE_INSTALLATION_KILLED = """
import asyncio, os, signal, sys
from pathlib import Path
from chatcore.client import Client
from chatcore.identity import rotate_installation
from discovery.network import NetworkConfig

client = Client.open(sys.argv[1], sys.argv[2], NetworkConfig.load(Path(sys.argv[3])))
reg = client.registry
name, when = sys.argv[4].split(":")
call = getattr(reg, name)


def killed(*args, **kwargs):
    if when == "after":  # the chain took it; the process dies at once
        call(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)


setattr(reg, name, killed)
asyncio.run(rotate_installation(client, sys.argv[2], force=True))
"""


def _rotate_killed(home: Path, network: NetworkConfig, tmp_path: Path, at: str) -> None:
    """Run ``rotate_installation`` on ``home`` in a process that SIGKILLs itself at ``at``
    (``registry call:before|after``)."""
    run_killed(_ROTATE_INSTALLATION_KILLED, home, PASSPHRASE, network, tmp_path, at)


def _active(client: Client) -> list[bytes]:
    """The identity's installations the chain holds active."""
    installations = client.registry.get_identity(client.identity_id).installations
    return [i.installation_id for i in installations if not i.revoked]


def _settled(client: Client) -> None:
    """The client's clock runs ROTATION_SETTLE_MS ahead: a rotation is no longer under way."""
    real = client.clock_ms
    client.clock_ms = lambda: real() + ROTATION_SETTLE_MS  # type: ignore[method-assign]


@pytest.mark.parametrize("at", ["add_installation:after", "revoke_installation:before"])
async def test_an_installation_rotation_killed_midway_leaves_no_device_active(
    people: People, network: NetworkConfig, tmp_path: Path, at: str
) -> None:
    """Review finding: ``keys rotate --installation`` killed once the chain registered the
    new keys but before the home held them left an installation active for good whose keys
    nobody has (peers encrypted every message to it too); killed before the old keys were
    revoked, it left them active (a rotation is what a user does to retire keys). The next
    ``refresh_prekey_if_due`` (every 'sync') revokes what was left, once the rotation is
    not under way in another process on the home."""
    alice, bob = people.new("alice"), people.new("bob")
    await alice.crash()
    _rotate_killed(alice.home, network, tmp_path, at)
    alice.open()
    assert len(_active(alice.c)) == 2  # one nobody holds the keys of
    alice.c.refresh_prekey_if_due(PASSPHRASE)  # (it may be under way in another process)
    assert len(_active(alice.c)) == 2
    _settled(alice.c)
    alice.c.refresh_prekey_if_due(PASSPHRASE)
    assert _active(alice.c) == [alice.c.installation_id]
    assert alice.c.finish_key_rotation(PASSPHRASE) == []  # done: no chain call
    bob.c.sync_directory()
    res = await bob.c.send_text(alice.name, "one device")
    assert len(res.frames) == 1
    assert [m.text for m in await alice.c.sync()] == ["one device"]


async def test_an_installation_rotation_run_again_after_a_kill_still_revokes_the_first(
    people: People, network: NetworkConfig, tmp_path: Path
) -> None:
    """Review finding: a user whose 'keys rotate --installation' was killed once the chain
    registered the new keys runs it again. The second run replaced the staged keys of the
    first, so the installation the first registered (nobody holds its keys) was forgotten
    and stayed active for good: peers encrypted every message to it."""
    alice = people.new("alice")
    await alice.crash()
    _rotate_killed(alice.home, network, tmp_path, "add_installation:after")
    alice.open()
    _rotated, alice.client = await rotate_installation(alice.c, PASSPHRASE, force=True)
    _settled(alice.c)
    alice.c.refresh_prekey_if_due(PASSPHRASE)
    assert _active(alice.c) == [alice.c.installation_id]


async def test_a_process_still_on_the_old_keys_does_not_mark_them_revoked(
    people: People, network: NetworkConfig, tmp_path: Path
) -> None:
    """Review finding: an app still running on the old keys (it opened the home before a
    rotation that another process ran and was killed before revoking them) left its own
    installation alone in ``finish_key_rotation``, as it must, but marked it done: the
    process on the new keys then found nothing left, and the old keys stayed active."""
    alice = people.new("alice")
    old_app = alice.c  # the app: still open, on the old keys
    alice.client = None
    _rotate_killed(alice.home, network, tmp_path, "revoke_installation:before")
    _settled(old_app)
    assert old_app.finish_key_rotation(PASSPHRASE) == []  # not its own keys
    await old_app.aclose()
    alice.open()
    _settled(alice.c)
    alice.c.refresh_prekey_if_due(PASSPHRASE)
    assert _active(alice.c) == [alice.c.installation_id]


async def test_installation_rotation_waits_for_receipts_of_what_it_sent(
    people: People,
) -> None:
    from chatcore.errors import AwaitingReceipts, WrongPassphrase

    alice, bob = people.new("alice"), people.new("bob")
    await alice.c.send_text(bob.name, "sent just before rotating")
    old = alice.c.installation_id
    with pytest.raises(WrongPassphrase):  # a wrong passphrase says so first
        await rotate_installation(alice.c, "not the passphrase")
    with pytest.raises(AwaitingReceipts):  # bob has not fetched it: it would be lost to him
        await rotate_installation(alice.c, PASSPHRASE)
    assert alice.c.installation_id == old
    assert [m.text for m in await bob.c.sync()] == ["sent just before rotating"]
    await bob.c.flush_features()  # bob's receipt
    _r, alice.client = await rotate_installation(alice.c, PASSPHRASE)
    assert alice.c.installation_id != old


async def test_messages_of_a_revoked_installation_of_ours_hold_up_no_later_rotation(
    people: People,
) -> None:
    """New-user review: 'keys rotate --installation --force' while a send and a group send
    ran on the same home. The recipients never get those messages (as --force says), and
    afterwards every 'keys rotate --installation' was refused: they were counted as waiting
    for receipts that can never come (frames of the revoked installation are refused, and
    they cannot be resent: their ids are the old installation's)."""
    from chatcore.errors import AwaitingReceipts

    alice, bob = people.new("alice"), people.new("bob")
    gid = await alice.c.create_group("crew", [bob.name])
    await bob.c.sync()
    await bob.c.flush_features()
    await alice.c.sync()
    assert alice.c.features.pending_acks() == 0
    await alice.c.send_text(bob.name, "x")
    await alice.c.send_group_text(gid, "y")
    with pytest.raises(AwaitingReceipts) as refused:
        await rotate_installation(alice.c, PASSPHRASE)
    # it says where they wait, and what to do
    assert f"1 to {bob.name}" in str(refused.value) and "1 to crew" in str(refused.value)
    assert "--force" in str(refused.value)
    _r, alice.client = await rotate_installation(alice.c, PASSPHRASE, force=True)
    assert "x" not in [m.text for m in await bob.c.sync()]  # lost, as --force says
    await bob.c.flush_features()
    await alice.c.sync()
    # nothing this device sent waits: the next rotation goes ahead without --force
    assert alice.c.features.pending_by_conversation() == {}
    old = alice.c.installation_id
    _r, alice.client = await rotate_installation(alice.c, PASSPHRASE)
    assert alice.c.installation_id != old
    # and what the new keys send is awaited as before
    await alice.c.send_text(bob.name, "after")
    assert list(alice.c.features.pending_by_conversation().values()) == [1]
    with pytest.raises(AwaitingReceipts):
        await rotate_installation(alice.c, PASSPHRASE)


async def test_what_the_old_keys_sent_unacknowledged_is_failed_after_a_forced_rotation(
    people: People,
) -> None:
    """Twelfth session's review: such messages showed "sent" for good (nobody resends them,
    nobody acknowledges them). What got everywhere keeps its status."""
    alice, bob = people.new("alice"), people.new("bob")
    gid = await alice.c.create_group("crew", [bob.name])
    got = await alice.c.send_text(bob.name, "got there")
    await bob.c.sync()
    await bob.c.flush_features()
    await alice.c.sync()
    conv = direct_conversation_id(alice.c.identity_id, bob.c.identity_id)
    assert alice.c.message(got.message_id, conv).status == "delivered"
    lost = await alice.c.send_text(bob.name, "x")
    lost_too = await alice.c.send_group_text(gid, "y")
    assert alice.c.message(lost.message_id, conv).status == "sent"
    _r, alice.client = await rotate_installation(alice.c, PASSPHRASE, force=True)
    assert alice.c.message(lost.message_id, conv).status == "failed"
    assert alice.c.message(lost_too.message_id, gid).status == "failed"
    assert alice.c.message(got.message_id, conv).status == "delivered"
    await bob.c.sync()
    await bob.c.flush_features()
    await alice.c.sync()
    assert alice.c.message(lost.message_id, conv).status == "failed"


async def test_recovery_restore_and_backup(
    people: People, network: NetworkConfig, tmp_path: Path
) -> None:
    # a phrase we know: init shows it once
    alice, bob = people.new("alice"), people.new("bob")
    phrase_holder = tmp_path / "alice-r"
    c, res = Client.init(phrase_holder, PASSPHRASE, network, alice.name + "-r")
    alice_r = c
    try:
        await bob.c.send_text(res.name, "hi")
        await alice_r.sync()
        await alice_r.send_text(bob.name, "hi bob")
        await bob.c.sync()
        backup = tmp_path / "backup.lcb"
        assert export_backup(alice_r, backup, res.recovery_phrase) == 2
        lost_inst = alice_r.installation_id
    finally:
        await alice_r.aclose()
    # wrong phrases
    with pytest.raises(WrongRecoveryPhrase):
        restore(tmp_path / "x", PASSPHRASE, network, "not a phrase at all")
    _, other_phrase = Account.create_with_mnemonic()
    with pytest.raises(WrongRecoveryPhrase, match="no identity"):
        restore(tmp_path / "x", PASSPHRASE, network, other_phrase)
    # every device lost: restore on a new home
    client, r = restore(tmp_path / "new", PASSPHRASE, network, res.recovery_phrase)
    try:
        assert r.identity_id == res.identity_id and r.revoked == (lost_inst,)
        assert res.name in r.names
        devs = {d.installation_id: d.status for d in list_devices(client)}
        assert devs == {lost_inst: "revoked", r.installation_id: "active"}
        with pytest.raises(IdentityError, match="wrong passphrase or phrase"):
            import_backup(client, backup, "wrong")
        assert import_backup(client, backup, res.recovery_phrase) == 2
        assert import_backup(client, backup, res.recovery_phrase) == 0  # idempotent
        assert texts(client, bob.c.identity_id) == ["hi", "hi bob"]
        # peers resume with the new installation, same conversation
        bob.c.sync_directory()
        sent = await bob.c.send_text(res.name, "welcome back")
        assert len(sent.frames) == 1
        assert [m.text for m in await client.sync()] == ["welcome back"]
        assert texts(bob.c, res.identity_id) == ["hi", "hi bob", "welcome back"]
    finally:
        await client.aclose()


async def test_recovered_identity_gets_its_groups_back(
    people: People, network: NetworkConfig, tmp_path: Path
) -> None:
    bob, carol = people.new("bob"), people.new("carol")
    lost, res = Client.init(tmp_path / "lost", PASSPHRASE, network, bob.name + "-admin")
    try:
        gid = await lost.create_group("club", [bob.name, carol.name])
        await bob.c.sync()
        await carol.c.sync()
    finally:
        await lost.aclose()
    client, _r = restore(tmp_path / "new", PASSPHRASE, network, res.recovery_phrase)
    try:
        # the members notice the new installation and, the only admin being the one who
        # lost everything, hand it the group themselves
        await bob.c.sync()
        await carol.c.sync()
        await client.sync()
        info = client.group_info(gid)
        assert info.is_member and info.admins == {res.identity_id}
        await bob.c.send_group_text("club", "still here?")
        assert "still here?" in [m.text for m in await client.sync()]
        await carol.c.sync()
        await client.send_group_text("club", "back again")
        for p in (bob.c, carol.c):
            assert "back again" in [m.text for m in await p.sync()]
    finally:
        await client.aclose()


async def test_bind_wallet_and_replay(people: People, network: NetworkConfig) -> None:
    alice = people.new("alice")
    c = alice.c
    wallet = Account.create()
    deadline = c.registry.latest_timestamp() + 600
    sig = wallet_link_signature(wallet, c.identity_id, network, c.registry, deadline)
    gas = bind_wallet(c, PASSPHRASE, wallet.address, sig, deadline)
    assert gas < 80_000
    assert c.lookup(wallet.address).identity_id == c.identity_id
    unbind_wallet(c, PASSPHRASE, wallet.address)
    # the same consent replayed: its nonce was used
    with pytest.raises(RegistryReverted, match="InvalidSignature"):
        bind_wallet(c, PASSPHRASE, wallet.address, sig, deadline)
    hist = [h.event for h in c.lookup("0x" + c.identity_id.hex()).history]
    assert "WalletLinked" in hist and "WalletUnlinked" in hist


async def test_linked_device_in_groups(
    people: People, network: NetworkConfig, tmp_path: Path
) -> None:
    alice, bob, carol = people.new("alice"), people.new("bob"), people.new("carol")
    await alice.c.create_group("trio", [bob.name, carol.name])
    await bob.c.sync()
    await carol.c.sync()
    a2 = await link(alice, tmp_path / "alice2", network)
    try:
        for p in (alice.c, bob.c, carol.c):
            await p.sync()  # everyone notices alice's new device and hands it their key
        await a2.sync()
        assert a2.groups.info(a2.find_group("trio")).is_member
        await bob.c.send_group_text("trio", "hello group")
        got1 = [m.text for m in await alice.c.sync()]
        got2 = [m.text for m in await a2.sync()]
        assert "hello group" in got1 and "hello group" in got2
        await bob.c.sync()
        await carol.c.sync()
        await a2.send_group_text("trio", "from alice's second device")
        for p in (bob.c, carol.c, alice.c):
            assert "from alice's second device" in [m.text for m in await p.sync()]
    finally:
        await a2.aclose()


async def test_a_rotated_installation_stays_in_its_groups(people: People) -> None:
    """The groups are joined again as the new installation (from the welcomes kept at the
    rotation): members' messages reach it and its own reach them."""
    alice, bob = people.new("alice"), people.new("bob")
    gid = await alice.c.create_group("duo", [bob.name])
    await bob.c.sync()
    _r, alice.client = await rotate_installation(alice.c, PASSPHRASE)
    assert alice.c.groups.info(gid).is_member
    await alice.c.sync()
    await bob.c.sync()  # alice's new installation and its sender key
    await bob.c.send_group_text(gid, "still in the group?")
    assert [m.text for m in await alice.c.sync()] == ["still in the group?"]
    await alice.c.send_group_text(gid, "yes, new keys")
    assert "yes, new keys" in [m.text for m in await bob.c.sync()]


async def test_a_device_linked_a_moment_ago_reads_the_next_group_message(
    people: People, network: NetworkConfig, tmp_path: Path
) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    await alice.c.create_group("duo", [bob.name])
    await bob.c.sync()
    a2 = await link(alice, tmp_path / "alice2", network)
    try:
        await a2.sync()  # it has the group (from alice's first device), but no key of bob's
        # bob has not synced since: sending re-reads the chain (when its view is older than
        # DIRECTORY_MAX_AGE_MS, as here) and hands a2 his key first
        time.sleep(DIRECTORY_MAX_AGE_MS / 1000 + 0.1)
        await bob.c.send_group_text("duo", "right after you linked")
        assert "right after you linked" in [m.text for m in await a2.sync()]
    finally:
        await a2.aclose()


async def test_twenty_installations(people: People, network: NetworkConfig, tmp_path: Path) -> None:
    """No fixed cap: 20 installations on one identity, all active and reachable."""
    from chatcore.keys import InstallationKeys, SignedPrekey
    from discovery.records import IntroBundle

    alice, bob = people.new("alice"), people.new("bob")
    owner = alice.c._owner(PASSPHRASE)
    now = int(time.time())
    for _ in range(19):
        k = InstallationKeys.generate(__import__("os").urandom)
        spk = SignedPrekey.generate(__import__("os").urandom, 1, (now + 3600) * 1000)
        b = IntroBundle(
            network.chain_id, network.binding.registry, alice.c.identity_id, k.installation_id,
            k.ik_x25519, 1, spk.pub, now + 3600, 1, now,
        ).signed(k.sign)  # fmt: skip
        alice.c.registry.add_installation(owner, alice.c.identity_id, k.installation_id, b.encode())
    devs = list_devices(alice.c)
    assert len(devs) == 20 and all(d.status == "active" for d in devs)
    bob.c.sync_directory()
    res = await bob.c.send_text(alice.name, "twenty")
    assert len(res.frames) == 20
    conv = direct_conversation_id(alice.c.identity_id, bob.c.identity_id)
    assert [m.text for m in await alice.c.sync()] == ["twenty"]
    assert alice.c.store.conversation(conv) is not None


async def test_a_rotation_refused_by_an_unreachable_chain_leaves_the_client_on_its_keys(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: since ``_owner`` hands out the owner key with the chain unreachable,
    ``rotate_installation`` gets as far as the chain call; failing there, the client it was
    given had already switched its engine to the new, unregistered keys: what it sent next
    no peer could read."""
    import asyncio

    from discovery.errors import ChainUnavailable

    alice, bob = people.new("rkc"), people.new("rkd")
    await alice.c.send_text(bob.name, "before")
    await bob.c.sync()
    await asyncio.sleep(DIRECTORY_MAX_AGE_MS / 1000 + 0.1)

    def down(*_a: object, **_k: object) -> int:
        raise ChainUnavailable("chain unreachable (injected)")

    old = alice.c.installation_id
    with monkeypatch.context() as m:
        m.setattr(alice.c.index, "sync", down)
        m.setattr(alice.c.registry, "add_installation", down)
        with pytest.raises(ChainUnavailable):
            await rotate_installation(alice.c, PASSPHRASE, force=True)
    assert alice.c.installation_id == old
    await bob.c.send_text(alice.name, "reply")
    await alice.c.sync()
    assert texts(alice.c, bob.c.identity_id)[-1:] == ["reply"]


async def test_a_prekey_renewal_dropped_by_a_reorg_is_published_again(people: People) -> None:
    """The chain took a renewed bundle, then a reorg dropped it: the chain advertises the
    previous prekey again, which ends earlier than the one this device took as current.
    The next refresh (once the index has seen the new fork past the renewal's block)
    publishes again, instead of waiting for the wrong prekey's end."""
    from devnet.chain import mine

    alice = people.new("reorg")
    w3 = alice.c.registry.w3
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    renewed = alice.c.publish(PASSPHRASE)
    assert alice.c.refresh_prekey_if_due(PASSPHRASE) is None  # nothing due: it just renewed
    assert w3.provider.make_request("evm_revert", [snap])["result"]  # type: ignore[arg-type]
    mine(w3, 3)  # the new fork, past the renewal's height
    alice.c.sync_directory()

    def advertised() -> int:
        r = alice.c.resolver.resolve_id(alice.c.identity_id, fresh_prekeys=False)
        return r.installation(alice.c.installation_id).bundle.spk_id  # type: ignore[union-attr]

    assert advertised() < renewed.prekey_id  # the renewal is gone from the chain
    again = alice.c.refresh_prekey_if_due(PASSPHRASE)
    assert again is not None
    alice.c.sync_directory()
    assert advertised() == again.prekey_id
    assert alice.c.refresh_prekey_if_due(PASSPHRASE) is None  # and only once


async def test_a_renewal_before_an_installation_rotation_is_not_taken_for_a_dropped_one(
    people: People,
) -> None:
    """The renewal remembered (to tell whether a reorg dropped it) is of the old keys: the
    new installation's first bundle replaces it, and nothing is published again."""
    alice = people.new("renews")
    alice.c.publish(PASSPHRASE)
    _r, alice.client = await rotate_installation(alice.c, PASSPHRASE)
    alice.c.sync_directory()
    assert alice.c.refresh_prekey_if_due(PASSPHRASE) is None


async def test_an_owner_rotation_killed_before_its_transaction_was_mined_keeps_the_key(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``setOwner`` was sent, the process died before it was mined (a real chain takes
    seconds). The next owner action found the chain still naming the old owner and dropped
    the new key, and then the transaction landed: the identity's owner key was lost for
    good. The key is kept while the new owner's consent can still land (its deadline)."""
    import discovery.registry as registry_mod

    alice = people.new("slow")
    w3 = alice.c.registry.w3
    old_owner = alice.c._owner(PASSPHRASE).address

    class Killed(BaseException):
        pass

    def killed(*_a: object, **_k: object) -> None:
        raise Killed  # the transaction is with the node; the process dies waiting

    assert w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        with monkeypatch.context() as m:
            m.setattr(registry_mod, "wait_receipt", killed)
            with pytest.raises(Killed):
                rotate_owner(alice.c, PASSPHRASE)
        # the next owner action, before the transaction is mined: the old owner still acts
        assert alice.c._owner(PASSPHRASE).address == old_owner
        with pytest.raises(IdentityError, match="still waiting to be mined"):
            rotate_owner(alice.c, PASSPHRASE)  # would put its key in place of the first's
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    on_chain = alice.c.registry.get_identity(alice.c.identity_id).owner
    assert on_chain != old_owner  # it landed
    rotate_prekey(alice.c, PASSPHRASE)  # and this home can act as the new owner
    assert alice.c._owner(PASSPHRASE).address == on_chain


async def test_an_owner_rotation_the_chain_refused_can_be_tried_again_at_once(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal (a revert) is final, unlike a transaction that may still be mined: the
    kept key goes at once, and a new rotation is not held up for the consent's hour."""
    alice = people.new("refused")
    old_owner = alice.c._owner(PASSPHRASE).address

    def refused(*_a: object, **_k: object) -> None:
        raise RegistryReverted("setOwner refused by the registry: NotAuthorized", "NotAuthorized")

    with monkeypatch.context() as m:
        m.setattr(alice.c.registry, "set_owner", refused)
        with pytest.raises(RegistryReverted):
            rotate_owner(alice.c, PASSPHRASE)
    assert alice.c._owner(PASSPHRASE).address == old_owner
    r = rotate_owner(alice.c, PASSPHRASE)
    assert alice.c.registry.get_identity(alice.c.identity_id).owner == r.new


async def test_two_processes_making_a_prekey_at_once_keep_each_ones_secret(
    people: People, network: NetworkConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: a new signed prekey's id was chosen before the transaction that keeps
    its secret. Two processes on one home renewing at once (an app and a 'sync', the prekey
    due for both) chose one id, and the second secret replaced the first: with the chain
    advertising the first one's bundle, nobody could start a conversation with the device
    (their first message undecryptable) until the next renewal. The id is chosen in that
    transaction: each keeps its own."""
    import threading
    from typing import Any

    from chatcore.keys import SignedPrekey

    alice = people.new("alice")
    other = Client.open(alice.home, PASSPHRASE, network)  # the other process
    real = SignedPrekey.generate
    theirs: list[Any] = []

    def generate(rng: Any, spk_id: int, not_after_ms: int) -> SignedPrekey:
        if not theirs:  # the other one makes its prekey just now
            theirs.append(None)
            t = threading.Thread(target=lambda: theirs.append(other._new_bundle(2, 3600)[0]))
            t.start()
            t.join(timeout=1.0)  # (if it waits for our transaction, it goes on after it)
            theirs.append(t)
        return real(rng, spk_id, not_after_ms)

    monkeypatch.setattr(SignedPrekey, "generate", generate)
    try:
        mine, _bundle = alice.c._new_bundle(2, 3600)
        theirs[-1].join()
        made = [s for s in theirs if isinstance(s, SignedPrekey)]
        assert len(made) == 1
        for spk in (mine, made[0]):
            kept = alice.c.store.get_secret(f"spk:{spk.id:010d}")
            assert kept is not None and SignedPrekey.from_bytes(kept).pub == spk.pub
    finally:
        other.close()
