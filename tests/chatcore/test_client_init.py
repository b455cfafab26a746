"""``Client.init`` that fails before anything reached the chain leaves no half-made home, and
never takes away what was in the directory before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatcore import client as client_mod
from chatcore.client import Client
from discovery.network import NetworkConfig


class _Chain:
    """Enough of a registry for init's checks before it creates anything."""

    def __init__(self, network: Any) -> None:
        pass

    def check_chain(self) -> None:
        pass

    def name_owner(self, name: str) -> bytes:
        return b"\x00" * 32


def _interrupted(*args: Any, **kwargs: Any) -> Any:
    raise KeyboardInterrupt  # Ctrl-C while registering


def _init(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_mod, "Registry", _Chain)
    monkeypatch.setattr(Client, "_init_in", classmethod(_interrupted))
    net = NetworkConfig(
        chain_id=31337, rpc_url="http://127.0.0.1:1", identity_registry="0x" + "11" * 20,
        name_registry="0x" + "22" * 20, deploy_block=0, nats_url="nats://127.0.0.1:1",
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        Client.init(home, "pass", net)


def test_an_interrupted_init_in_a_directory_of_the_users_keeps_the_users_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "docs"
    (home / "sub").mkdir(parents=True)
    (home / "precious.txt").write_text("mine")
    (home / "sub" / "also.txt").write_text("mine too")
    _init(home, monkeypatch)
    assert (home / "precious.txt").read_text() == "mine"
    assert (home / "sub" / "also.txt").read_text() == "mine too"
    assert sorted(p.name for p in home.iterdir()) == ["precious.txt", "sub"]  # init's are gone


def test_an_interrupted_init_in_a_new_directory_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "new-home"
    _init(home, monkeypatch)
    assert not home.exists()


def _net() -> NetworkConfig:
    return NetworkConfig(
        chain_id=31337, rpc_url="http://127.0.0.1:1", identity_registry="0x" + "11" * 20,
        name_registry="0x" + "22" * 20, deploy_block=0, nats_url="nats://127.0.0.1:1",
    )  # fmt: skip


def _files(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(home.iterdir())}


def test_init_with_a_wrong_passphrase_in_a_home_whose_init_stopped_after_sending_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said the home 'already holds an identity' (the user may then delete the home,
    whose registration may still land): a wrong passphrase, said as for other commands."""
    from chatcore.client import INIT_BUNDLE
    from chatcore.errors import WrongPassphrase
    from chatcore.home import Home

    monkeypatch.setattr(client_mod, "Registry", _Chain)
    home = Home(tmp_path / "interrupted")
    home.create()
    store = home.open_store("the right one")
    store.set_meta(INIT_BUNDLE, b"the bundle it sent")
    store.close()
    home.save_owner_key(b"\x01" * 32, "the right one")
    before = _files(home.path)
    with pytest.raises(WrongPassphrase, match="passphrase"):
        Client.init(home.path, "a wrong one", _net())
    assert _files(home.path) == before


_FIRST_INIT = """
import sys
from chatcore import client as client_mod
from chatcore.client import Client
from discovery.network import NetworkConfig

class Chain:
    def __init__(self, network): pass
    def check_chain(self): pass
    def name_owner(self, name): return bytes(32)

def waits(cls, home, passphrase, *args, **kwargs):
    home.open_store(passphrase).close()  # init's store is made, its keys not yet
    print("ready", flush=True)
    sys.stdin.readline()  # until the test has run the second init
    raise KeyboardInterrupt

client_mod.Registry = Chain
Client._init_in = classmethod(waits)
net = NetworkConfig(
    chain_id=31337, rpc_url="http://127.0.0.1:1", identity_registry="0x" + "11" * 20,
    name_registry="0x" + "22" * 20, deploy_block=0, nats_url="nats://127.0.0.1:1",
)
try:
    Client.init(sys.argv[1], "pass", net)
except KeyboardInterrupt:
    sys.exit(0)
"""


def _went_on(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the second init went on")


def test_a_second_init_on_a_home_while_one_runs_is_refused_and_takes_nothing_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two inits started at once on a fresh home: the second took it for a home an init
    died in and removed the first one's files (before the first saved its state)."""
    import subprocess
    import sys

    from chatcore.errors import StoreError

    home = tmp_path / "fresh"
    first = subprocess.Popen(
        [sys.executable, "-c", _FIRST_INIT, str(home)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        assert first.stdout is not None and first.stdin is not None
        assert first.stdout.readline() == "ready\n"
        made = _files(home)
        monkeypatch.setattr(client_mod, "Registry", _Chain)
        monkeypatch.setattr(Client, "_init_in", classmethod(_went_on))
        with pytest.raises(StoreError, match="another init is running"):
            Client.init(home, "pass", _net())
        assert _files(home) == made  # the first one's files are all there, unchanged
        first.stdin.write("go on\n")
        first.stdin.close()
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert not home.exists()  # the first one, interrupted, cleaned up after itself
