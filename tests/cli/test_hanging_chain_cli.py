"""A chain node that takes connections and answers nothing: each CLI command is a new
process with no earlier failure to remember, and waited a whole RPC timeout (10 s) for each
thing it asked the node. It waits for one now; every request is counted here, each fails
as a timeout would."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from web3 import HTTPProvider

from tests.cli.conftest import RunCli

pytestmark = pytest.mark.devnet


@pytest.fixture(scope="module")
def homes(run_cli: RunCli, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    assert run_cli("devnet", "up", "--json", inproc=True).code == 0
    root = tmp_path_factory.mktemp("hang-homes")
    out = {}
    for who in ("hanga", "hangb"):
        out[who] = ["--home", str(root / who)]
        assert run_cli(*out[who], "init", "--name", who).code == 0
    assert run_cli(*out["hanga"], "send", "hangb", "while the chain answers").code == 0
    assert run_cli(*out["hangb"], "sync").code == 0
    return out


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    methods: list[str] = []

    def hangs(self: object, method: str, params: object) -> object:
        methods.append(method)
        raise requests.exceptions.ReadTimeout("no answer (injected)")

    monkeypatch.setattr(HTTPProvider, "make_request", hangs)
    return methods


def test_sync_asks_a_hanging_chain_once(
    homes: dict[str, list[str]], run_cli: RunCli, asked: list[str]
) -> None:
    r = run_cli(*homes["hanga"], "sync", inproc=True)
    assert r.code == 0, r.err
    assert len(asked) == 1, asked


def test_send_asks_a_hanging_chain_once(
    homes: dict[str, list[str]], run_cli: RunCli, asked: list[str], tmp_path: Path
) -> None:
    r = run_cli(*homes["hanga"], "send", "hangb", "the chain hangs", inproc=True)
    assert r.code == 0, r.err
    assert len(asked) == 1, asked
