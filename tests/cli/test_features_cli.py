"""Chat features through the real ``logos-chat`` console script on a devnet: contacts, requests,
blocking, receipts (sent → delivered → read, switchable), edit / delete / react, search,
conversation flags, and the interactive ``chat`` showing a typing indicator and receipt marks
(driven through a pseudo-terminal)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import CLI, CliResult, RunCli, base_env
from tests.cli.test_chat_cli import Pty

pytestmark = pytest.mark.devnet


@pytest.fixture(scope="module")
def homes(run_cli: RunCli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    r = run_cli("devnet", "up", "--json")
    assert r.code == 0, r.err
    root = tmp_path_factory.mktemp("feature-homes")
    out: dict[str, Any] = {}
    for name in ("alice", "bob", "carol", "dave"):
        home = root / name
        r = run_cli("--home", str(home), "init", "--name", name, "--json")
        assert r.code == 0, r.err
        out[name] = {"home": str(home), **r.doc}
    return out


def ok(run_cli: RunCli, homes: dict[str, Any], who: str, *args: str) -> CliResult:
    r = run_cli("--home", homes[who]["home"], *args)
    assert r.code == 0, (who, args, r.err)
    assert "Traceback" not in r.err
    return r


def js(run_cli: RunCli, homes: dict[str, Any], who: str, *args: str) -> Any:
    return ok(run_cli, homes, who, *args, "--json").doc


def bad(run_cli: RunCli, homes: dict[str, Any], who: str, *args: str) -> CliResult:
    r = run_cli("--home", homes[who]["home"], *args)
    r.assert_one_line_error()
    return r


def last(h: dict[str, Any], text: str) -> dict[str, Any]:
    return next(m for m in reversed(h["messages"]) if m.get("type") == "text" and m["text"] == text)


def test_contacts_requests_receipts_edits_search_conversations(
    run_cli: RunCli, homes: dict[str, Any]
) -> None:
    run = run_cli
    bob_id = homes["bob"]["identity_id"]
    c = js(run, homes, "alice", "contacts", "add", "bob", "--alias", "Bobby")
    assert c["state"] == "contact" and c["alias"] == "Bobby" and c["names"] == ["bob"]
    # adding again keeps the alias, and says so (it printed "bob: contact")
    again = ok(run, homes, "alice", "contacts", "add", "bob").out
    assert again.strip() == "bob: contact (alias Bobby)", again
    s1 = js(run, homes, "alice", "send", "bob", "hello bob")
    # first contact: a request for bob; sync --json still lists it, marked
    got = js(run, homes, "bob", "sync")
    assert [(m["text"], m["request"], m["status"]) for m in got] == [
        ("hello bob", True, "received")
    ]
    reqs = js(run, homes, "bob", "requests", "list")
    assert [r["name"] for r in reqs] == ["alice"]
    assert [m["text"] for m in reqs[0]["messages"]] == ["hello bob"]
    js(run, homes, "bob", "requests", "accept", "alice")
    assert js(run, homes, "bob", "requests", "list") == []
    lst = js(run, homes, "alice", "contacts", "list")
    assert [(x["name"], x["identity_id"], x["names"]) for x in lst] == [("Bobby", bob_id, ["bob"])]
    # delivered (bob's sync sent the receipt), then read (bob looked at the history)
    js(run, homes, "alice", "sync")
    m = last(js(run, homes, "alice", "history", "bob"), "hello bob")
    assert m["status"] == "delivered"
    assert m["receipts"] == [{"member": bob_id, "name": "Bobby", "status": "delivered"}]
    ok(run, homes, "bob", "history", "alice")
    js(run, homes, "alice", "sync")
    m = last(js(run, homes, "alice", "history", "bob"), "hello bob")
    assert m["status"] == "read" and m["receipts"][0]["status"] == "read"
    # read receipts off: delivered only
    assert js(run, homes, "bob", "receipts", "off") == {"read_receipts": False}
    s2 = js(run, homes, "alice", "send", "bob", "second one")
    js(run, homes, "bob", "sync")
    ok(run, homes, "bob", "history", "alice")
    js(run, homes, "alice", "sync")
    assert last(js(run, homes, "alice", "history", "bob"), "second one")["status"] == "delivered"
    js(run, homes, "bob", "receipts", "on")
    # edit, react, delete for everyone, shown on both sides
    js(run, homes, "alice", "edit", s1["message_id"], "hello bob!")
    js(run, homes, "bob", "sync")
    r = js(run, homes, "bob", "react", s1["message_id"][:12], "👍")
    assert r["type"] == "reaction" and r["published"] is True
    js(run, homes, "alice", "delete", s2["message_id"])
    js(run, homes, "bob", "sync")
    js(run, homes, "alice", "sync")
    for who, peer in (("alice", "bob"), ("bob", "alice")):
        h = js(run, homes, who, "history", peer)
        first = next(x for x in h["messages"] if x["message_id"] == s1["message_id"])
        assert first["text"] == "hello bob!" and first["edited"] is True
        assert list(first["reactions"]) == ["👍"]
        gone = next(x for x in h["messages"] if x["message_id"] == s2["message_id"])
        assert gone["deleted"] is True and gone["text"] == ""
    assert "(edited)" in ok(run, homes, "bob", "history", "alice").out
    # abuse through the CLI: a typed one-line error, nothing changes
    bad(run, homes, "bob", "react", s2["message_id"], "😀")  # deleted
    bad(run, homes, "bob", "edit", s1["message_id"], "not yours")
    bad(run, homes, "bob", "edit", "0xdeadbeef", "x")
    # search
    hits = js(run, homes, "bob", "search", "hello")
    assert [x["message_id"] for x in hits] == [s1["message_id"]]
    assert js(run, homes, "bob", "search", "second") == []  # deleted
    assert "no matches" in ok(run, homes, "bob", "search", "nothing-like-this").out
    # paging still works with --before / --limit
    h = js(run, homes, "bob", "history", "alice", "--limit", "1", "--before", s2["message_id"])
    assert [x["message_id"] for x in h["messages"]] == [s1["message_id"]]
    # conversations: mute, archive (hidden), delete (local only)
    convs = js(run, homes, "bob", "conversations")
    assert len(convs) == 1 and convs[0]["muted"] is False and convs[0]["request"] is False
    assert convs[0]["last_message"]["text"] == ""
    cid = convs[0]["conversation_id"]
    assert js(run, homes, "bob", "conversations", "mute", cid[:12])["muted"] is True
    js(run, homes, "bob", "conversations", "archive", "alice")
    assert js(run, homes, "bob", "conversations") == []
    assert [x["archived"] for x in js(run, homes, "bob", "conversations", "--all")] == [True]
    js(run, homes, "bob", "conversations", "delete", cid)
    assert js(run, homes, "bob", "conversations", "--all") == []
    assert len(js(run, homes, "alice", "conversations")) == 1
    # blocking: carol's messages after the block never show up
    js(run, homes, "carol", "send", "bob", "hi from carol")
    got = js(run, homes, "bob", "sync")
    assert [(x["text"], x["request"]) for x in got] == [("hi from carol", True)]
    js(run, homes, "bob", "contacts", "block", "carol")
    js(run, homes, "carol", "send", "bob", "you should not see this")
    assert js(run, homes, "bob", "sync") == []
    assert [x["text"] for x in js(run, homes, "bob", "history", "carol")["messages"]] == [
        "hi from carol"
    ]
    states = {x["name"]: x["state"] for x in js(run, homes, "bob", "contacts", "list")}
    assert states == {"alice": "contact", "carol": "blocked"}
    # declining: dave's later messages are not shown
    js(run, homes, "dave", "send", "bob", "dave 1")
    js(run, homes, "bob", "sync")
    js(run, homes, "bob", "requests", "decline", "dave")
    js(run, homes, "dave", "send", "bob", "dave 2")
    assert js(run, homes, "bob", "sync") == []
    # accepting it afterwards says what took it and how to take dave back
    r = bad(run, homes, "bob", "requests", "accept", "dave")
    assert r.code == 3 and "you declined it" in r.err and "'contacts add'" in r.err
    js(run, homes, "bob", "contacts", "unblock", "carol")
    js(run, homes, "carol", "send", "bob", "after unblock")
    assert [x["text"] for x in js(run, homes, "bob", "sync")] == ["after unblock"]


def test_groups_by_name_everywhere_and_requests_need_a_request(
    run_cli: RunCli, homes: dict[str, Any]
) -> None:
    run = run_cli
    r = bad(run, homes, "alice", "requests", "accept", "dave")
    assert r.code == 3 and "no contact request from dave" in r.err
    gid = js(run, homes, "carol", "group", "create", "crew", "--member", "dave")["conversation_id"]
    ok(run, homes, "dave", "sync")
    # a group name works wherever a conversation is asked for
    sent = js(run, homes, "carol", "send", "crew", "to the crew")
    assert sent["conversation_id"] == gid
    assert js(run, homes, "dave", "conversations", "mute", "crew")["muted"] is True
    assert js(run, homes, "dave", "conversations", "archive", gid)["archived"] is True
    out = ok(run, homes, "dave", "sync").out
    assert "[crew]" in out and "to the crew" in out
    # refusals say why in plain words and change nothing
    r = bad(run, homes, "dave", "group", "add", "crew", "alice")
    assert "only an admin can add" in r.err
    r = bad(run, homes, "carol", "group", "add", "crew", "dave")
    assert "already a member" in r.err
    # a deleted group history: the group goes on, its history starts again
    js(run, homes, "dave", "conversations", "delete", "crew")
    assert js(run, homes, "dave", "history", "crew")["messages"] == []
    r = bad(run, homes, "carol", "send", "0x1234", "to nobody")
    assert "no group, conversation or identity matches" in r.err
    # our own groups get names that name nobody else here (a new-user review: a group named
    # after a contact made 'send bob' fail); said in one line, bad input (exit 1)
    for taken in ("crew", "bob", "carol"):
        r = bad(run, homes, "carol", "group", "create", taken, "--member", "alice")
        assert r.code == 1 and taken in r.err and "choose another group name" in r.err
    r = bad(run, homes, "carol", "group", "rename", gid[:12], "bob")
    assert r.code == 1 and "choose another group name" in r.err
    # two groups with one name (another's group): the name is ambiguous (bad input, exit 1,
    # not "not found"), ids still work
    js(run, homes, "alice", "group", "create", "crew", "--member", "carol")
    ok(run, homes, "carol", "sync")
    r = bad(run, homes, "carol", "send", "crew", "which one?")
    assert r.code == 1 and "2 groups are named 'crew'" in r.err
    # another's group named as we call a person (alice's alias for bob): both ids said, and
    # the person's works as given
    bobby = js(run, homes, "carol", "group", "create", "Bobby", "--member", "alice")
    ok(run, homes, "alice", "sync")
    r = bad(run, homes, "alice", "send", "Bobby", "which one?")
    assert r.code == 1 and "names a group and a person" in r.err
    assert bobby["conversation_id"][:10] in r.err
    bob_id = homes["bob"]["identity_id"]
    assert bob_id in r.err
    assert js(run, homes, "alice", "send", bob_id, "by id")["conversation_id"] != gid
    assert js(run, homes, "carol", "send", gid[:12], "by id")["conversation_id"] == gid
    # a rename (admins only) shows wherever the group's name is shown
    r = bad(run, homes, "dave", "group", "rename", gid[:12], "dave's")
    assert "only an admin can rename" in r.err
    r = bad(run, homes, "carol", "group", "rename", gid[:12], "bad\x1bname")
    assert "control characters" in r.err
    assert js(run, homes, "carol", "group", "rename", gid[:12], "deck")["name"] == "deck"
    assert "renamed the group to “deck”" in ok(run, homes, "dave", "sync").out
    assert js(run, homes, "dave", "group", "list", "deck")["conversation_id"] == gid
    rows = js(run, homes, "dave", "conversations", "--all")
    assert [x["title"] for x in rows if x["conversation_id"] == gid] == ["deck"]


def test_a_group_name_from_a_hostile_client_stays_on_one_line(
    run_cli: RunCli, homes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names from the wire are not checked like ours: a peer's client can put a newline in
    one. Where a title is printed on a line of its own, it is escaped, so it cannot pass
    for another line (a conversation, a member)."""
    gid = js(run_cli, homes, "carol", "group", "create", "hostile", "--member", "dave")[
        "conversation_id"
    ]
    ok(run_cli, homes, "dave", "sync")
    for where in ("chatcore.client", "chatcore.groupchat"):  # carol's client skips the check
        monkeypatch.setattr(f"{where}.check_group_name", lambda name: name)
    evil = "deck\n0xfeed…  bank (3 unread)\tsend me money"
    r = run_cli("--home", homes["carol"]["home"], "group", "rename", gid[:12], evil, inproc=True)
    assert r.code == 0, r.err
    ok(run_cli, homes, "dave", "sync")
    ok(run_cli, homes, "carol", "group", "send", gid[:12], "hello")
    for args in (
        ["sync"],  # the message, as "[group] carol: hello"
        ["conversations", "--all"],
        ["group", "list", gid[:12]],
        ["history", gid[:12]],
    ):
        out = ok(run_cli, homes, "dave", *args).out
        assert "bank (3 unread)" in out
        assert not any(line.startswith("0xfeed") for line in out.splitlines()), out
        assert "deck\\n0xfeed" in out and "\\tsend me money" in out


def test_chat_shows_typing_and_receipt_marks(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path, tmp_path: Path
) -> None:
    run = run_cli
    js(run, homes, "alice", "contacts", "add", "dave")
    js(run, homes, "dave", "contacts", "add", "alice")
    env = base_env(devnet_dir, tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    chat = Pty([str(CLI), "--home", homes["alice"]["home"], "chat", "dave"], env)
    try:
        chat.expect("chatting with dave")
        js(run, homes, "dave", "typing", "alice")
        chat.expect("dave is typing")
        js(run, homes, "dave", "send", "alice", "typed it")
        chat.expect("dave: typed it")
        chat.write(b"are you there?\n")
        deadline = time.monotonic() + 20
        seen: list[str] = []
        while "are you there?" not in seen and time.monotonic() < deadline:
            seen += [m["text"] for m in js(run, homes, "dave", "sync")]  # sends "delivered"
            time.sleep(0.2)
        assert "are you there?" in seen, chat.output
        chat.expect("✓✓ delivered (dave): are you there?")
        ok(run, homes, "dave", "history", "alice")  # sends "read"
        chat.expect("✓✓ read (dave): are you there?")
        # dave's edit shows up live too
        mid = js(run, homes, "dave", "history", "alice")["messages"][-2]["message_id"]
        js(run, homes, "dave", "edit", mid, "typed it, edited")
        chat.expect("(edited a message) typed it, edited")
        chat.write(b"\x04")
        assert chat.proc.wait(20) == 0, chat.output
        time.sleep(0.1)
        assert "bye" in chat.output and "Traceback" not in chat.output
    finally:
        chat.close()
    h = js(run, homes, "alice", "history", "dave")
    mine = last(h, "are you there?")
    assert mine["status"] == "read"
    assert any(m["text"] == "typed it, edited" and m["edited"] for m in h["messages"])
    # typing indicators are never stored
    assert all(m["type"] in ("text", "reply") for m in h["messages"])


def test_hex_letter_names_aliases_and_history_after_a_revocation(
    run_cli: RunCli, homes: dict[str, Any], tmp_path: Path
) -> None:
    """Review findings: a registered name of hex letters only ("beefcafe") could be looked
    up but not written to (taken for an id prefix); an alias worked for 'send' but not for
    'history'; our own history with someone whose devices are all revoked could not be
    opened by their name."""
    home = str(tmp_path / "beef")
    r = run_cli("--home", home, "init", "--name", "beefcafe", "--json")
    assert r.code == 0, r.err
    ok(run_cli, homes, "alice", "send", "beefcafe", "to a hex-letter name")
    got = run_cli("--home", home, "sync", "--json")
    assert [m["text"] for m in got.doc] == ["to a hex-letter name"], got.err
    # a name that is a group's and a person's here (another's group named as we call alice)
    assert run_cli("--home", home, "contacts", "add", "alice", "--alias", "Ally").code == 0
    ok(run_cli, homes, "carol", "group", "create", "Ally", "--member", "beefcafe")
    assert run_cli("--home", home, "sync").code == 0
    ok(run_cli, homes, "alice", "contacts", "add", "beefcafe", "--alias", "Cow")
    h = js(run_cli, homes, "alice", "history", "Cow")
    assert [m["text"] for m in h["messages"]] == ["to a hex-letter name"]
    me = run_cli("--home", home, "devices", "list", "--json").doc
    gone = run_cli(
        "--home", home, "devices", "revoke", me[0]["installation_id"], "--this-device", "--json"
    )
    assert gone.code == 0, gone.err
    # a revoked device says so first, not what it would have said of the name (a review)
    for args in (["send", "Ally", "hi"], ["group", "send", "Ally", "hi"]):
        run_cli("--home", home, *args).assert_one_line_error(code=4, contains="was revoked")
    # actions that first read the chain's names said "showing what it holds" (a warning
    # for reads) on a line before their error (found by a walk through the CLI on devnet)
    ally = run_cli("--home", home, "group", "list", "--json").doc[0]["conversation_id"]
    for args in (
        ["group", "create", "zz", "--member", "alice"],
        ["group", "rename", ally, "Ally2"],
        ["requests", "accept", "alice"],
    ):
        run_cli("--home", home, *args).assert_one_line_error(code=4, contains="was revoked")
    h = js(run_cli, homes, "alice", "history", "beefcafe")
    assert [m["text"] for m in h["messages"]] == ["to a hex-letter name"]


def test_chat_shows_a_person_typing_once_whichever_of_their_devices_types() -> None:
    """'… bob is typing' appears when bob starts typing on any device, not again while
    another of his devices still types, and again once none does (stopped, wrote, or
    silent past the indicator's life)."""
    import cli.main  # noqa: F401  (first: it imports cli.features to register its commands)
    from cli.features import TypingShown

    t = TypingShown(ttl=5.0)
    bob, phone, laptop, carol = b"b" * 32, b"p" * 32, b"l" * 32, b"c" * 32
    assert t.signal(bob, phone, True, 0.0)  # shown
    assert not t.signal(bob, phone, True, 1.0)  # renewed: not again
    assert not t.signal(bob, laptop, True, 2.0)  # his other device: still bob typing
    assert not t.signal(bob, phone, False, 3.0)  # the phone stops; the laptop still types
    assert not t.signal(bob, laptop, True, 4.0)  # so this is no new "typing"
    assert t.signal(carol, carol, True, 4.0)  # someone else is their own line
    t.wrote(bob, laptop)  # the laptop sent its message: nobody of bob's types now
    assert t.signal(bob, phone, True, 5.0)
    assert not t.signal(bob, phone, False, 6.0)  # a stop shows nothing
    assert t.signal(bob, laptop, True, 6.5)  # shown again: none of his devices was typing
    assert t.signal(bob, phone, True, 20.0)  # the laptop's indicator ran out long since


def test_an_argument_that_is_not_utf8_is_one_line_naming_it(
    run_cli: RunCli, homes: dict[str, Any]
) -> None:
    """A byte that is not UTF-8 in an argument reaches Python as a lone surrogate: each
    command says in one line which argument is not valid text (not Python's codec message
    from deep inside), and nothing is sent or changed."""
    not_utf8 = "caf\udce9"  # "café" typed in a Latin-1 terminal: argv byte 0xe9
    ok(run_cli, homes, "carol", "send", "dave", "first")
    sent = js(run_cli, homes, "carol", "send", "dave", "second")
    ok(run_cli, homes, "carol", "group", "create", "utf8-team", "--member", "dave")
    for args, what in (
        (("send", "dave", not_utf8), "message's text"),
        (("edit", sent["message_id"], not_utf8), "message's text"),
        (("reply", sent["message_id"], not_utf8), "message's text"),
        (("react", sent["message_id"], not_utf8), "emoji"),
        (("search", not_utf8), "search"),
        (("group", "send", "utf8-team", not_utf8), "message's text"),
        (("group", "create", not_utf8, "--member", "dave"), "group name"),
        (("group", "rename", "utf8-team", not_utf8), "group name"),
        (("contacts", "add", "dave", "--alias", not_utf8), "alias"),
    ):
        r = bad(run_cli, homes, "carol", *args)
        assert what in r.err and "U+DCE9" in r.err and "codec" not in r.err, (args, r.err)
    h = js(run_cli, homes, "carol", "history", "dave")
    texts = [m["text"] for m in h["messages"] if m.get("type") == "text"]
    assert texts[-2:] == ["first", "second"]
    assert "utf8-team" in ok(run_cli, homes, "carol", "group", "list", "utf8-team").out


def test_a_group_change_says_whom_an_id_named(run_cli: RunCli, homes: dict[str, Any]) -> None:
    """'group add|remove|promote GROUP WHO' by identity id: the line says whom the id named,
    as resolved and verified on chain (it echoed the 66 characters as typed), and --json
    has that person as "member" (the group's own fields unchanged)."""
    dave_id = homes["dave"]["identity_id"]
    js(run_cli, homes, "bob", "group", "create", "roster")
    for how in ("add", "promote", "remove"):
        line = ok(run_cli, homes, "bob", "group", how, "roster", dave_id).out.strip()
        assert line.startswith(f"{how} dave ({dave_id[:10]}…): “roster” is now at epoch"), line
    doc = js(run_cli, homes, "bob", "group", "add", "roster", dave_id)
    assert doc["member"] == {"identity_id": dave_id, "name": "dave", "me": False}
    assert dave_id in [m["identity_id"] for m in doc["members"]] and doc["name"] == "roster"
    assert "member" not in js(run_cli, homes, "bob", "group", "leave", "roster")
