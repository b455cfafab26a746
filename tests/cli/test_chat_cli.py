"""The messaging surface of the ``logos-chat`` CLI, through the real console script:
send / sync / history / conversations with ``--json``, and the interactive ``chat`` driven
through a pseudo-terminal.

One devnet for the module (started by ``devnet up`` here, stopped by the devnet_dir fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import CLI, CliResult, RunCli, base_env

pytestmark = pytest.mark.devnet


@pytest.fixture(scope="module")
def up(run_cli: RunCli, devnet_dir: Path) -> CliResult:
    r = run_cli("devnet", "up", "--json")
    assert r.code == 0, r.err
    return r


@pytest.fixture(scope="module")
def homes(
    up: CliResult, run_cli: RunCli, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("chat-homes")
    out: dict[str, Any] = {}
    for name in ("alice", "bob", "carol"):
        home = root / name
        r = run_cli("--home", str(home), "init", "--name", name, "--json")
        assert r.code == 0, r.err
        out[name] = {"home": str(home), **r.doc}
    return out


def as_(run_cli: RunCli, homes: dict[str, Any], who: str, *args: str) -> CliResult:
    r = run_cli("--home", homes[who]["home"], *args)
    assert r.code == 0, (args, r.err)
    assert "Traceback" not in r.err
    return r


def test_send_sync_history_conversations_json(run_cli: RunCli, homes: dict[str, Any]) -> None:
    alice_id, bob_id = homes["alice"]["identity_id"], homes["bob"]["identity_id"]
    s1 = as_(run_cli, homes, "alice", "send", "bob", "hello bob", "--json").doc
    s2 = as_(run_cli, homes, "alice", "--json", "send", "bob", "second, with ünïcode ✓").doc
    assert set(s1) >= {"conversation_id", "message_id", "devices", "sent_at"}
    assert s1["conversation_id"] == s2["conversation_id"] and s1["devices"] == 1
    assert s1["message_id"] != s2["message_id"]
    assert s1["message_id"].startswith("0x") and len(s1["message_id"]) == 2 + 16
    assert len(s1["conversation_id"]) == 2 + 32
    assert s2["sent_at"] >= s1["sent_at"] > 1_600_000_000_000

    got = as_(run_cli, homes, "bob", "sync", "--json").doc
    assert isinstance(got, list) and len(got) == 2
    for m, s, text in zip(got, (s1, s2), ("hello bob", "second, with ünïcode ✓"), strict=True):
        assert m["conversation_id"] == s["conversation_id"]
        assert m["message_id"] == s["message_id"]
        assert m["sender"] == alice_id
        assert m["sender_name"] == "alice"
        assert m["text"] == text
        assert m["sent_at"] == s["sent_at"] // 1000 * 1000  # whole seconds on the wire
        assert m["outgoing"] is False
    assert as_(run_cli, homes, "bob", "sync", "--json").doc == []

    # bob has two unread before reading them
    convs = as_(run_cli, homes, "bob", "conversations", "--json").doc
    assert [c["conversation_id"] for c in convs] == [s1["conversation_id"]]
    assert convs[0]["unread"] == 2 and convs[0]["peer"] == alice_id
    assert convs[0]["title"] == "alice"
    assert convs[0]["last_message"]["text"] == "second, with ünïcode ✓"

    r = as_(run_cli, homes, "bob", "send", "alice", "reply from bob", "--json").doc
    assert r["conversation_id"] == s1["conversation_id"]
    got = as_(run_cli, homes, "alice", "sync", "--json").doc
    assert [(m["text"], m["sender"], m["sender_name"]) for m in got] == [
        ("reply from bob", bob_id, "bob")
    ]

    for who, peer in (("bob", "alice"), ("alice", "bob")):
        h = as_(run_cli, homes, who, "history", peer, "--json").doc
        assert h["conversation_id"] == s1["conversation_id"]
        assert h["title"] == peer
        msgs = h["messages"]
        assert [m["text"] for m in msgs] == [
            "hello bob",
            "second, with ünïcode ✓",
            "reply from bob",
        ]
        assert [m["outgoing"] for m in msgs] == (
            [False, False, True] if who == "bob" else [True, True, False]
        )
        mine = [m for m in msgs if m["outgoing"]]
        assert all(m["sender_name"] is None for m in mine)
        assert [m["lamport"] for m in msgs] == [1, 2, 3]
    # history by conversation id prefix, paging with --before
    h = as_(
        run_cli,
        homes,
        "bob",
        "history",
        s1["conversation_id"][:10],
        "--limit",
        "1",
        "--before",
        r["message_id"],
        "--json",
    ).doc
    assert h["conversation_id"] == s1["conversation_id"]
    assert [m["text"] for m in h["messages"]] == ["second, with ünïcode ✓"]

    # history marked bob's conversation read; a new conversation from carol comes first
    c1 = as_(run_cli, homes, "carol", "send", "bob", "carol here", "--json").doc
    as_(run_cli, homes, "bob", "sync", "--json")
    convs = as_(run_cli, homes, "bob", "conversations", "--json").doc
    assert [c["conversation_id"] for c in convs] == [
        c1["conversation_id"],
        s1["conversation_id"],
    ]
    assert [c["unread"] for c in convs] == [1, 0]
    assert [c["title"] for c in convs] == ["carol", "alice"]
    assert convs[0]["last_message"]["text"] == "carol here"
    assert convs[0]["last_message"]["sender_name"] == "carol"
    assert convs[1]["last_message"]["text"] == "reply from bob"
    assert convs[1]["last_message"]["outgoing"] is True
    assert convs[0]["last_at"] >= convs[1]["last_at"]
    # plain text output works too
    txt = as_(run_cli, homes, "bob", "conversations").out
    assert "carol" in txt and "(1 unread)" in txt


class Pty:
    """A child process on a pseudo-terminal; a thread collects everything it prints."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._buf += chunk

    @property
    def output(self) -> str:
        with self._lock:
            return self._buf.decode("utf-8", errors="replace")

    def expect(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return
            if self.proc.poll() is not None:
                time.sleep(0.2)
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen; output so far:\n{self.output}")

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # only the child we started
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        os.close(self.master)
        self._reader.join(2)


def test_interactive_chat_through_a_pty(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path, tmp_path: Path
) -> None:
    env = base_env(devnet_dir, tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    chat = Pty([str(CLI), "--home", homes["alice"]["home"], "chat", "bob"], env)
    try:
        chat.expect("chatting with bob")
        # bob, from another process, writes to alice: it shows up on alice's screen
        as_(run_cli, homes, "bob", "send", "alice", "ping from bob's shell")
        chat.expect("bob: ping from bob's shell")
        # a line typed at alice's terminal reaches bob
        chat.write(b"typed at alice's terminal\n")
        chat.expect("me: typed at alice's terminal")  # the sent line, not erased
        deadline = time.monotonic() + 20
        seen: list[str] = []
        while time.monotonic() < deadline:
            seen += [m["text"] for m in as_(run_cli, homes, "bob", "sync", "--json").doc]
            if "typed at alice's terminal" in seen:
                break
            time.sleep(0.2)
        assert "typed at alice's terminal" in seen, chat.output
        h = as_(run_cli, homes, "bob", "history", "alice", "--json").doc
        last = h["messages"][-1]
        assert last["text"] == "typed at alice's terminal" and last["sender_name"] == "alice"
        # Ctrl-D at the start of a line: EOF, a clean exit
        chat.write(b"\x04")
        code = chat.proc.wait(20)
        time.sleep(0.1)
        out = chat.output
        assert code == 0, out
        assert "bye" in out
        assert "Traceback" not in out and "error" not in out.lower(), out
    finally:
        chat.close()
    # alice's own history has all of it, in order
    h = as_(run_cli, homes, "alice", "history", "bob", "--json").doc
    texts = [m["text"] for m in h["messages"]]
    assert texts[-2:] == ["ping from bob's shell", "typed at alice's terminal"]


def test_a_peers_escape_sequences_never_reach_the_terminal(
    run_cli: RunCli, homes: dict[str, Any]
) -> None:
    """Message text is the peer's: ESC sequences (window title, clear screen, hidden text),
    a carriage return rewriting the line, a bidi override, or a newline starting a fake
    line from someone else are shown as escapes / indented, never acted on."""
    hostile = "hi\x1b]0;PWNED\x07\x1b[2J\r\x1b[Kbob: fake\nbob: also fake \u202eevil"
    as_(run_cli, homes, "carol", "send", "alice", hostile)
    for args in (("sync",), ("history", "carol"), ("conversations",), ("search", "fake")):
        out = as_(run_cli, homes, "alice", *args).out
        assert not any(c in out for c in "\x1b\x07\r\u202e"), (args, out)
        assert not any(line.startswith("bob:") for line in out.splitlines()), (args, out)
    out = as_(run_cli, homes, "alice", "history", "carol").out
    shown = "hi\\x1b]0;PWNED\\x07\\x1b[2J\\x0d\\x1b[Kbob: fake\n    bob: also fake \\u202eevil"
    assert shown in out
    # --json keeps the text as it is (JSON escapes it)
    doc = as_(run_cli, homes, "alice", "history", "carol", "--json").doc
    assert doc["messages"][-1]["text"] == hostile


def test_chat_works_with_the_chain_unreachable(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path, tmp_path: Path
) -> None:
    """As 'send' and 'sync' do, 'chat' goes on from the local index when the chain node
    does not answer (it refused to start)."""
    as_(run_cli, homes, "bob", "send", "alice", "hi before the chain went away")
    as_(run_cli, homes, "alice", "sync")  # her local index knows bob (not only by luck of order)
    net = json.loads((devnet_dir / "network.json").read_text())
    net["rpc_url"] = "http://127.0.0.1:1"  # nothing listens there
    dead = tmp_path / "dead-rpc.json"
    dead.write_text(json.dumps(net))
    env = base_env(devnet_dir, tmp_path)
    p = subprocess.run(
        [str(CLI), "--network", str(dead), "--home", homes["alice"]["home"], "chat", "bob"],
        env=env,
        input="typed while the chain is down\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    assert "hi before the chain went away" in p.stdout
    got = as_(run_cli, homes, "bob", "sync", "--json").doc
    assert "typed while the chain is down" in [m["text"] for m in got]


def test_chat_says_a_line_typed_offline_is_saved_not_lost(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path, tmp_path: Path, nats_server: Any
) -> None:
    """A line typed while the delivery network is away is saved and goes out later (the
    outbox): chat must not say 'not sent' (the user types it again: the peer gets it twice)."""
    net = json.loads((devnet_dir / "network.json").read_text())
    net["nats_url"] = nats_server.url  # a delivery network this test can stop
    own = tmp_path / "own-nats.json"
    own.write_text(json.dumps(net))
    p = subprocess.Popen(
        [str(CLI), "--network", str(own), "--home", homes["carol"]["home"], "chat", "alice"],
        env=base_env(devnet_dir, tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()

    def wait_for(text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = [ln for ln in list(lines) if text in ln]
            if hit:
                return hit[0]
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen in {lines}")

    try:
        wait_for("chatting with")
        nats_server.stop()
        assert p.stdin is not None
        p.stdin.write("typed with the network away\n")
        p.stdin.flush()
        line = wait_for("not sent")
        assert "error" not in line and "saved" in line, line
        p.stdin.close()
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        reader.join(5)
    doc = as_(run_cli, homes, "carol", "history", "alice", "--json").doc
    assert doc["messages"][-1]["text"] == "typed with the network away"
    assert doc["messages"][-1]["status"] == "sending"


def test_chat_with_someone_never_written_to_opens_and_a_wrong_conversation_is_one_line(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path, tmp_path: Path
) -> None:
    """'chat' marks the conversation read as it opens: with someone this home never wrote
    to there is none yet, and ``mark_read`` on an id the home never had is UnknownContact
    now (it was a silent 0): chat must open all the same, and write."""
    home = tmp_path / "erin"
    r = run_cli("--home", str(home), "init", "--name", "erin", "--json")
    assert r.code == 0, r.err
    p = subprocess.run(
        [str(CLI), "--home", str(home), "chat", "carol"],
        env=base_env(devnet_dir, tmp_path),
        input="hello from someone new\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "chatting with carol" in p.stdout
    got = as_(run_cli, homes, "carol", "sync", "--json").doc
    assert "hello from someone new" in [m["text"] for m in got]
    # the commands that take a conversation still say no in one line
    for args in (("conversations", "delete", "alice"), ("history", "0x07070707")):
        run_cli("--home", str(home), *args).assert_one_line_error()


def test_chat_with_yourself_is_refused_and_makes_no_conversation(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path, tmp_path: Path
) -> None:
    """'chat' makes the local 1:1 conversation as it opens; with our own name it made one
    with ourselves (titled 'me', listed from then on; the API's conversation_id refuses
    that: NotAPeer) and then refused every line typed."""
    as_(run_cli, homes, "alice", "sync")  # what earlier tests left on the way is in first
    before = as_(run_cli, homes, "alice", "conversations", "--json").doc
    p = subprocess.run(
        [str(CLI), "--home", homes["alice"]["home"], "chat", "alice"],
        env=base_env(devnet_dir, tmp_path),
        input="hello me\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "yourself" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    after = as_(run_cli, homes, "alice", "conversations", "--json").doc
    # (a message of an earlier test still on its way may add another conversation)
    assert all(c["peer"] != homes["alice"]["identity_id"] for c in after)
    assert {c["conversation_id"] for c in before} <= {c["conversation_id"] for c in after}


def test_a_line_typed_in_a_group_chat_stays_on_screen_as_sent(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path, tmp_path: Path
) -> None:
    """'chat GROUP' at a terminal: Enter erases the line being typed; the message as sent
    takes its place ("me: ..."), as in the 1:1 chat (it vanished: nothing on screen said
    what went out until a receipt came back, and nothing at all while nobody read it)."""
    as_(run_cli, homes, "alice", "group", "create", "typists", "--member", "bob")
    env = base_env(devnet_dir, tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    chat = Pty([str(CLI), "--home", homes["alice"]["home"], "chat", "typists"], env)
    try:
        chat.expect("chatting with typists")
        chat.write(b"typed into the group\n")
        chat.expect("me: typed into the group")
        chat.write(b"\x04")
        assert chat.proc.wait(20) == 0, chat.output
    finally:
        chat.close()
    as_(run_cli, homes, "bob", "sync")
    h = as_(run_cli, homes, "bob", "history", "typists", "--json").doc
    assert h["messages"][-1]["text"] == "typed into the group"


def _own_nats_network(devnet_dir: Path, tmp_path: Path, url: str) -> Path:
    """A network file of the devnet's chain with a delivery network this test can stop."""
    net = json.loads((devnet_dir / "network.json").read_text())
    net["nats_url"] = url
    path = tmp_path / "own-nats.json"
    path.write_text(json.dumps(net))
    return path


def test_chat_stays_responsive_with_the_network_away_and_sends_when_it_is_back(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path, tmp_path: Path, nats_server: Any
) -> None:
    """With the delivery network down, a line typed in 'chat' (a terminal) waited for it
    (the transport's 10 s a line, one line after the other) while nothing typed was even
    echoed, and the saved lines went out only with the next line typed. Now typing goes on
    while a line waits, each line says at once that it is saved, and once the network is
    back what was saved goes out by itself, once and in order."""
    own = _own_nats_network(devnet_dir, tmp_path, nats_server.url)
    for name in ("dora", "gus"):
        r = run_cli("--home", str(tmp_path / name), "init", "--name", name, "--json")
        assert r.code == 0, r.err
    dora = ("--network", str(own), "--home", str(tmp_path / "dora"))
    gus = ("--network", str(own), "--home", str(tmp_path / "gus"))
    env = base_env(devnet_dir, tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "250"
    chat = Pty([str(CLI), *dora, "chat", "gus"], env)
    saved = "(not sent yet: saved as"
    try:
        chat.expect("chatting with gus")
        nats_server.stop()
        chat.write(b"first offline\n")
        chat.write(b"second off")  # typed while the first line waits for the network
        chat.expect(saved)
        out = chat.output
        assert out.find("second off") < out.find(saved), out  # echoed, not held up
        chat.write(b"line\n")
        deadline = time.monotonic() + 60
        while chat.output.count(saved) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert chat.output.count(saved) == 2, chat.output
        assert "error" not in chat.output.lower(), chat.output
        nats_server.start()
        # nothing typed: what was saved goes out by itself, and the chat says so
        chat.expect("✓ sent: first offline", timeout=60)
        chat.expect("✓ sent: second offline", timeout=60)
        chat.write(b"after the network is back\n")
        chat.expect("me: after the network is back  ✓ sent")
        chat.write(b"\x04")
        assert chat.proc.wait(30) == 0, chat.output
    finally:
        chat.close()
        nats_server.start()  # (stopped by the fixture)
    got = run_cli(*gus, "sync", "--json")
    assert got.code == 0, got.err
    texts = [m["text"] for m in got.doc]
    assert texts == ["first offline", "second offline", "after the network is back"]
    h = run_cli(*dora, "history", "gus", "--json")
    assert [m["status"] for m in h.doc["messages"]] == ["sent"] * 3, h.doc


def test_chat_ends_when_another_process_rotates_the_homes_installation(
    run_cli: RunCli, homes: dict[str, Any], devnet_dir: Path, tmp_path: Path
) -> None:
    """'keys rotate --installation' in another process while 'chat' ran on the home: the
    chat kept reading the old installation's inbox (nobody writes there any more) without
    a word, and a line typed went out as a revoked device. It ends now, saying why, in one
    line (exit 1); the home goes on as the new device."""
    home = str(tmp_path / "hal")
    r = run_cli("--home", home, "init", "--name", "hal", "--json")
    assert r.code == 0, r.err
    p = subprocess.Popen(
        [str(CLI), "--home", home, "chat", "bob"],
        env=base_env(devnet_dir, tmp_path),
        stdin=subprocess.PIPE,  # kept open: the chat waits for lines all along
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(p.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("chatting with bob" in ln for ln in list(out)):
            assert time.monotonic() < deadline and p.poll() is None, (out, p.poll())
            time.sleep(0.1)
        as_(run_cli, {"hal": {"home": home}}, "hal", "keys", "rotate", "--installation")
        code = p.wait(60)  # by itself: its input is still open
        err = p.stderr.read()  # type: ignore[union-attr]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        assert p.stdin is not None
        p.stdin.close()
        reader.join(5)
    assert code == 1, (code, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: chat stopped"), err
    assert "keys rotate --installation" in lines[0] and "Traceback" not in err
    # the home itself is fine: the new device receives
    as_(run_cli, homes, "bob", "send", "hal", "to the new device")
    got = as_(run_cli, {"hal": {"home": home}}, "hal", "sync", "--json").doc
    assert [m["text"] for m in got] == ["to the new device"]
