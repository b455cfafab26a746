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
