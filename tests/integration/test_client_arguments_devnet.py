"""Bad arguments to the ``chatcore.Client`` facade (docs/api.md, "Errors": bad arguments
raise ValueError/TypeError): a value of the wrong type or shape is refused with one of
those, never an AttributeError, IndexError or OSError from inside, and changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatcore import Client, ContactState, ContentType
from chatcore.client import PREKEY_TTL_MAX_S
from chatcore.identity import IdentityError, export_backup
from discovery.network import NetworkConfig

from .conftest import PASSPHRASE, People

pytestmark = pytest.mark.devnet


async def test_arguments_of_the_wrong_type_are_type_errors(people: People) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    sent = await alice.c.send_text(bob.name, "hello")
    conv = sent.conversation_id
    before = alice.c.history(conv)
    for bad in (42, None):
        with pytest.raises(TypeError):
            alice.c.lookup(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await alice.c.send_text(bad, "hi")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await alice.c.send_text(bob.name, bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            alice.c.message(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            alice.c.group_info(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await alice.c.edit(sent.message_id, bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await alice.c.react(sent.message_id, bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            alice.c.search(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # (alias=None keeps the alias)
        await alice.c.set_contact(bob.name, ContactState.CONTACT, alias=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="signals"):  # "no" would have meant yes
        # (a bound on the wait: a listen that took it would wait for a message for ever)
        await asyncio.wait_for(alice.c.listen(signals="no").__anext__(), 60)  # type: ignore[arg-type]
    # a single name where a list of members is expected (it would be read letter by letter)
    with pytest.raises(TypeError, match="list"):
        await alice.c.create_group("team", bob.name)  # type: ignore[arg-type]
    assert alice.c.group_ids() == []
    assert alice.c.history(conv) == before


async def test_an_id_that_is_no_bytes_is_a_type_error_not_an_empty_answer(
    people: People,
) -> None:
    """A name or hex string where an id (bytes) goes: history("bob") read as a conversation
    we do not have ([]), search and message found nothing, display raised AttributeError,
    and a person given as bytes failed with Python's own words."""
    alice, bob = people.new("alice"), people.new("bob")
    sent = await alice.c.send_text(bob.name, "hello there")
    conv = sent.conversation_id
    for bad in (bob.name, "0x" + conv.hex(), 42):
        with pytest.raises(TypeError, match="conversation id"):
            alice.c.history(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="conversation id"):
            alice.c.search("hello", bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="conversation id"):
            alice.c.message(sent.message_id, bad)  # type: ignore[arg-type]
    for bad_id in (bob.name, "0x" + bob.c.identity_id.hex(), None):
        with pytest.raises(TypeError, match="identity id"):
            alice.c.display(bad_id)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="person"):
        await alice.c.send_text(bob.name.encode(), "hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="person"):
        alice.c.resolve_peer(bob.name.encode())  # type: ignore[arg-type]
    # the ids themselves still work
    assert [m.message_id for m in alice.c.history(conv)] == [sent.message_id]
    assert [m.message_id for m in alice.c.search("hello", conv)] == [sent.message_id]
    assert alice.c.message(sent.message_id, conv).message_id == sent.message_id
    assert alice.c.display(bob.c.identity_id) == bob.name


async def test_history_and_search_refuse_a_bad_page(people: People) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    conv = (await alice.c.send_text(bob.name, "hello there")).conversation_id
    for limit in (-1, -50):
        with pytest.raises(ValueError, match="limit"):
            alice.c.history(conv, limit)
        with pytest.raises(ValueError, match="limit"):
            alice.c.search("hello", limit=limit)
    for limit in ("5", 2.5, None):
        with pytest.raises(TypeError, match="limit"):
            alice.c.history(conv, limit)  # type: ignore[arg-type]
    for before in ((1,), (1, 2, 3), 5, ("a", 1), [1]):
        with pytest.raises((TypeError, ValueError), match="before"):
            alice.c.history(conv, 50, before)  # type: ignore[arg-type]
    [m] = alice.c.history(conv)
    assert alice.c.history(conv, 50, (m.lamport, m.seq)) == []
    assert alice.c.history(conv, 50, [m.lamport, m.seq + 1]) == [m]  # type: ignore[arg-type]


async def test_export_backup_to_a_path_it_cannot_write_is_an_identity_error(
    people: People, tmp_path: Path
) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    await alice.c.send_text(bob.name, "hello")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(IdentityError, match="cannot write the backup"):
        export_backup(alice.c, folder, "secret")  # the path is a folder
    assert folder.is_dir() and not Path(str(folder) + ".tmp").exists()
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "backup.lcb.tmp").mkdir()  # the temporary file cannot be made
    with pytest.raises(IdentityError, match="cannot write the backup"):
        export_backup(alice.c, locked / "backup.lcb", "secret")
    assert export_backup(alice.c, tmp_path / "ok.lcb", "secret") == 1


async def test_a_backup_is_durable_before_it_takes_the_name(
    people: People, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backup's temporary file was renamed over the previous backup without an fsync:
    safe under a kill, not a power cut (an empty or cut file where the backup was). The file
    is synced before the rename, the folder after it."""
    import os
    import stat

    alice, bob = people.new("alice"), people.new("bob")
    await alice.c.send_text(bob.name, "hello")
    target = tmp_path / "durable.lcb"
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append("dir" if stat.S_ISDIR(mode) else ("file" if target.exists() else "tmp"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert export_backup(alice.c, target, "secret") == 1
    assert synced == ["tmp", "dir"]


async def test_a_prekey_lifetime_under_a_second_is_refused_before_the_chain(
    people: People, tmp_path: Path
) -> None:
    """``publish(passphrase, 0)`` (or a negative lifetime) put an already expired bundle on
    chain: nobody could start a conversation with the device until the next publish."""
    alice = people.new("alice")
    seq = alice.c.lookup(alice.name).installations[0].bundle.seq
    # and one past a year: a signed prekey that long-lived spoils forward secrecy (one of
    # 2**50 s put an expiry in the year 58 million on chain; 2**64 an internal u64 error)
    for ttl in (0, -5, PREKEY_TTL_MAX_S + 1, 2**50, 2**64 - 1):
        with pytest.raises(ValueError, match="lifetime"):
            alice.c.publish(PASSPHRASE, ttl)
        with pytest.raises(ValueError, match="lifetime"):
            Client.init(tmp_path / "never", PASSPHRASE, people.network, prekey_ttl_s=ttl)
    with pytest.raises(TypeError, match="lifetime"):
        alice.c.publish(PASSPHRASE, "60")  # type: ignore[arg-type]
    assert not (tmp_path / "never").exists()
    assert alice.c.lookup(alice.name).installations[0].bundle.seq == seq
    assert not alice.c.prekey_due()
    assert alice.c.publish(PASSPHRASE, 60).seq == seq + 1


async def test_a_bad_group_name_is_refused_before_the_chain_is_asked(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = people.new("alice"), people.new("bob")
    asked: list[object] = []
    monkeypatch.setattr(alice.c, "sync_directory", lambda *a: asked.append(a))
    for bad in ("", "two\nlines", "0x1234abcd"):
        with pytest.raises(ValueError, match="name"):
            await alice.c.create_group(bad, [bob.name])
        with pytest.raises(ValueError, match="name"):
            await alice.c.rename_group("team", bad)
    assert asked == [] and alice.c.group_ids() == []


async def test_a_search_holding_a_nul_is_a_value_error_not_a_store_failure(
    people: People,
) -> None:
    """A NUL in the search text made SQLite's full-text query fail, reported as
    StoreUnavailable ("retry later") though nothing was wrong with the store."""
    alice, bob = people.new("alice"), people.new("bob")
    await alice.c.send_text(bob.name, "hello there")
    with pytest.raises(ValueError, match="NUL"):
        alice.c.search("hello\x00there")
    assert [m.body for m in alice.c.search("hello")] == [b"hello there"]


async def test_a_new_home_needs_a_passphrase(network: NetworkConfig, tmp_path: Path) -> None:
    """The passphrase encrypts a home's keys and history: the CLI refuses a blank one for a
    new home, and so does the API (before anything is created or sent to the chain)."""
    from chatcore.identity import restore, start_link

    root = tmp_path / "homes"  # (tmp_path holds the test's nats-server too)

    for blank in ("", "   "):
        with pytest.raises(ValueError, match="passphrase"):
            Client.init(root / "a", blank, network)
        with pytest.raises(ValueError, match="passphrase"):
            start_link(root / "b", blank, network)
        with pytest.raises(ValueError, match="passphrase"):
            restore(root / "c", blank, network, "no phrase needed to refuse this")
    with pytest.raises(TypeError, match="passphrase"):
        Client.init(root / "a", None, network)  # type: ignore[arg-type]
    assert not root.exists()


async def test_text_with_a_lone_surrogate_is_a_value_error_naming_the_argument(
    people: People, tmp_path: Path
) -> None:
    """A lone surrogate (what Python makes of a byte that is not UTF-8 in a command-line
    argument or an environment variable) has no UTF-8: sends, edits, replies, reactions,
    search, group names, aliases, names and passphrases raised Python's UnicodeEncodeError
    from wherever the text was first encoded (a name's claim got as far as the owner key).
    Now a ValueError at the call, naming the argument, and nothing changes."""
    alice, bob = people.new("alice"), people.new("bob")
    sent = await alice.c.send_text(bob.name, "hello")
    gid = await alice.c.create_group("team", [bob.name])
    conv = sent.conversation_id
    bad = "a\ud800b"
    calls = {
        "message's text": lambda: alice.c.send_text(bob.name, bad),
        "message's text ": lambda: alice.c.send_group_text(gid, bad),
        "message's text  ": lambda: alice.c.edit(sent.message_id, bad),
        "message's text   ": lambda: alice.c.reply(sent.message_id, bad),
        "emoji": lambda: alice.c.react(sent.message_id, bad),
        "search": lambda: alice.c.search(bad),
        "group name": lambda: alice.c.create_group(bad, [bob.name]),
        "group name ": lambda: alice.c.rename_group(gid, bad),
        "alias": lambda: alice.c.set_contact(bob.name, ContactState.CONTACT, alias=bad),
        "a name": lambda: alice.c.claim_name(PASSPHRASE, bad),
        "passphrase": lambda: Client.init(tmp_path / "never", bad, people.network),
        "passphrase ": lambda: Client.open(alice.home, bad, people.network),
        "backup passphrase": lambda: export_backup(alice.c, tmp_path / "b.lcb", bad),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=what.strip()) as got:
            result = call()
            if asyncio.iscoroutine(result):
                await result
        assert not isinstance(got.value, UnicodeError), (what, repr(got.value))
        assert "U+D800" in str(got.value), what
    assert [m.body for m in alice.c.history(conv)] == [b"hello"]
    assert not [m for m in alice.c.history(gid) if m.content_type == ContentType.TEXT]
    assert alice.c.group_info(gid).name == "team" and alice.c.group_ids() == [gid]
    contact = alice.c.contact(bob.c.identity_id)
    assert contact is None or contact.alias is None
    assert not (tmp_path / "never").exists() and not (tmp_path / "b.lcb").exists()


async def test_claim_name_refuses_a_bad_name_before_the_owner_key_and_the_chain(
    people: People, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``claim_name`` checks its name as ``init`` does, before anything else: unlocking the
    owner key syncs the directory from the chain (and may finish an owner rotation), so a
    name that can never be claimed must be refused before it."""
    alice = people.new("alice")
    unlocked: list[str] = []
    monkeypatch.setattr(alice.c, "_owner", lambda passphrase: unlocked.append(passphrase))
    for bad in ("a\ud800b", "0x" + "ab" * 20, "no", "not a name!", None):
        with pytest.raises((ValueError, TypeError)):
            alice.c.claim_name(PASSPHRASE, bad)  # type: ignore[arg-type]
    assert unlocked == []
