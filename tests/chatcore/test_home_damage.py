"""A damaged local store is reported as damaged, not as a wrong passphrase (which sent the
user off retrying passphrases); a damaged index (a copy of the chain) is built again."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from chatcore.errors import StoreError, WrongPassphrase
from chatcore.home import Home
from discovery.index import Index
from discovery.network import NetworkConfig


def _home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "h")
    home.create()
    home.save_owner_key(os.urandom(32), "right")
    store = home.open_store("right")
    store.set_meta("x", b"y")
    store.close()
    return home


def test_a_damaged_store_is_not_a_wrong_passphrase(tmp_path: Path) -> None:
    home = _home(tmp_path)
    with pytest.raises(WrongPassphrase):
        home.open_store("wrong")
    with open(home.db_file, "r+b") as f:  # one page-1 byte hit
        f.seek(300)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    with pytest.raises(StoreError, match="damaged") as err:
        home.open_store("right")
    assert not isinstance(err.value, WrongPassphrase)
    with pytest.raises(WrongPassphrase):  # a wrong one is still a wrong one
        home.open_store("wrong")


def test_a_truncated_store_is_damaged(tmp_path: Path) -> None:
    home = _home(tmp_path)
    os.truncate(home.db_file, 100)
    with pytest.raises(StoreError, match="damaged"):
        home.open_store("right")


def test_a_damaged_index_is_built_again(tmp_path: Path) -> None:
    net = NetworkConfig(
        chain_id=31337, rpc_url="http://127.0.0.1:1", identity_registry="0x" + "11" * 20,
        name_registry="0x" + "22" * 20, deploy_block=0, nats_url="nats://127.0.0.1:1",
    )  # fmt: skip
    path = tmp_path / "index.db"
    path.write_bytes(b"not a database at all" * 300)
    index = Index(path, SimpleNamespace(config=net))  # type: ignore[arg-type]
    assert index.synced_block == -1
    index.close()
    assert (tmp_path / "index.db.damaged").read_bytes().startswith(b"not a database")


def test_a_locked_index_is_not_taken_for_a_damaged_one(tmp_path: Path) -> None:
    """Review finding: 'database is locked' (another process) also set the live index aside."""
    import sqlite3

    registry = SimpleNamespace(
        config=SimpleNamespace(chain_id=1, identity_registry="0xA", name_registry="0xB")
    )
    path = tmp_path / "index.db"
    index = Index(path, registry)  # type: ignore[arg-type]
    index.db.execute("INSERT INTO names VALUES ('alice', x'01')")
    index.close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError):
            Index(path, registry)  # type: ignore[arg-type]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not list(tmp_path.glob("*.damaged*"))
    again = Index(path, registry)  # type: ignore[arg-type]
    assert again.db.execute("SELECT name FROM names").fetchall() == [("alice",)]
