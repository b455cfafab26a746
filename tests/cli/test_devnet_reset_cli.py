"""A devnet brought up again without its chain state is a new chain without the identities
published on the old one: a home made on the old chain is told so in one line, not shown an
empty device list or a zero recovery account as if all were well."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devnet.process import pid_alive, stop_pid
from tests.cli.conftest import RunCli

pytestmark = pytest.mark.devnet


def test_an_identity_gone_from_the_chain_is_an_error_not_an_empty_answer(
    run_cli: RunCli, devnet_dir: Path, tmp_path: Path
) -> None:
    assert run_cli("devnet", "up", "--json", inproc=True).code == 0
    home = ["--home", str(tmp_path / "ann")]
    r = run_cli(*home, "init", "--name", "ann", "--json", inproc=True)
    assert r.code == 0, r.err
    assert run_cli(*home, "devices", "list", "--json", inproc=True).doc[0]["status"] == "active"
    assert run_cli(*home, "recovery", "status", "--json", inproc=True).code == 0

    assert run_cli("devnet", "down", inproc=True).code == 0
    (devnet_dir / "anvil-state.json").unlink()  # the chain's state is lost
    assert run_cli("devnet", "up", "--json", inproc=True).code == 0  # a new, empty chain

    for cmd in (["devices", "list"], ["recovery", "status"], ["whoami"]):
        r = run_cli(*home, *cmd, inproc=True)
        r.assert_one_line_error(contains="not on this chain")


def test_a_home_on_a_chain_that_lost_its_identity_sends_and_changes_nothing(
    run_cli: RunCli, devnet_dir: Path, tmp_path: Path
) -> None:
    """Sends, group changes and sync on a chain that does not know us were taken as done
    (exit 0, "sent") or blamed the peer ("no identity found for 'bob'"): a leave or rename
    changed the group here alone, and a message marked sent reached no one. Now each one
    says our identity is not on this chain and nothing changes; what the home holds stays
    readable (with that warning)."""
    assert run_cli("devnet", "up", "--json", inproc=True).code == 0
    ann, bob = ["--home", str(tmp_path / "ann")], ["--home", str(tmp_path / "bob")]
    for home, name in ((ann, "ann"), (bob, "bob")):
        assert run_cli(*home, "init", "--name", name, "--json", inproc=True).code == 0
    r = run_cli(*ann, "group", "create", "crew", "--member", "bob", "--json", inproc=True)
    assert r.code == 0, r.err
    gid = r.doc["conversation_id"]
    r = run_cli(*ann, "send", "bob", "before the reset", "--json", inproc=True)
    assert r.code == 0, r.err
    conv = r.doc["conversation_id"]

    assert run_cli("devnet", "down", inproc=True).code == 0
    (devnet_dir / "anvil-state.json").unlink()  # the chain's state is lost
    assert run_cli("devnet", "up", "--json", inproc=True).code == 0  # a new, empty chain

    for cmd in (
        ["send", "bob", "lost"],
        ["send", conv[:10], "lost"],
        ["group", "send", gid, "lost"],
        ["group", "rename", gid, "other"],
        ["group", "leave", gid],
        ["sync"],
    ):
        r = run_cli(*ann, *cmd, inproc=True)
        r.assert_one_line_error(contains="not on this chain")

    r = run_cli(*ann, "history", conv[:10], "--json", inproc=True)
    assert r.code == 0, r.err
    assert [m["text"] for m in r.doc["messages"]] == ["before the reset"], r.doc
    assert "not on this chain" in r.err and "Traceback" not in r.err, r.err
    r = run_cli(*ann, "group", "list", gid, "--json", inproc=True)
    assert r.code == 0, r.err
    doc = r.doc[0] if isinstance(r.doc, list) else r.doc
    assert doc["name"] == "crew" and doc["is_member"] is True, doc
    assert doc["epoch"] == 1, doc


def test_status_of_a_devnet_with_one_server_gone_says_which(
    run_cli: RunCli, devnet_dir: Path
) -> None:
    assert run_cli("devnet", "up", "--json", inproc=True).code == 0
    pids = json.loads((devnet_dir / "devnet.json").read_text())
    stop_pid(pids["nats"]["pid"])  # the nats-server this test's devnet started dies
    r = run_cli("devnet", "status")
    assert r.code == 0, r.err  # (exit 0 either way, as documented)
    assert "nats-server" in r.out and "stopped" in r.out, r.out
    assert str(pids["anvil"]["pid"]) in r.out, r.out  # the chain still runs
    doc = run_cli("devnet", "status", "--json").doc
    assert doc["running"] is False and doc["anvil_pid"] == pids["anvil"]["pid"], doc
    assert doc["nats_pid"] is None, doc
    assert run_cli("devnet", "down").code == 0  # stops the chain left running
    assert not pid_alive(pids["anvil"]["pid"])


@pytest.mark.parametrize("how", ["--dir", "env"])
def test_a_devnet_directory_that_cannot_be_made_is_a_one_line_error(
    run_cli: RunCli, tmp_path: Path, how: str
) -> None:
    """'devnet up' with a directory through a file (or on a read-only file system) ended in
    "internal error: NotADirectoryError" (exit 70)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    where = a_file / "devnet"
    if how == "--dir":
        r = run_cli("devnet", "up", "--dir", str(where))
    else:
        r = run_cli("devnet", "up", env={"LOGOS_CHAT_DEVNET_DIR": str(where)})
    r.assert_one_line_error(code=1, contains=str(where))
    assert a_file.read_text() == "not a directory"
