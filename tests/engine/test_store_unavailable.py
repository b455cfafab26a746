"""A store that cannot be written just now (locked past the busy timeout, read-only, full)
is not the frame's fault: receive raises StoreUnavailable and the frame is not skipped (the
cursor stays), so it is read again; before, a lock timeout skipped the message for good,
and a read-only store made ``sync`` fetch the same batch for ever."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcore.engine import Engine, OwnIdentity
from chatcore.errors import StoreError, StoreUnavailable
from chatcore.store import Store

from . import World, texts


def _on_disk(w: World, identity: bytes, path: Path) -> Store:
    dev = w.dev(identity)
    key = b"k" * 32
    store = Store.open(path, key)
    for name in ("spk:0000000001",):
        secret = dev.store.get_secret(name)
        assert secret is not None
        store.put_secret(name, secret)
    dev.store = store
    dev.engine = Engine(store, OwnIdentity(identity, dev.keys), w.directory, w.rng, w.clock)
    return store


def test_a_locked_store_leaves_the_frame_to_be_read_again(tmp_path: Path) -> None:
    w = World(7)
    a, b = w.person(), w.person()
    store = _on_disk(w, a, tmp_path / "a.db")
    store._db.execute("PRAGMA busy_timeout = 20")
    other = Store.open(tmp_path / "a.db", b"k" * 32)  # another process on the same home
    res = w.send(b, a, "while locked")
    frame = w.frame_for(res, w.dev(a))
    inbox = w.dev(a).engine.inbox
    other._db.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailable, match="locked"):
        w.dev(a).engine.receive(frame, cursor=(inbox, 1))
    other._db.execute("ROLLBACK")
    assert store.cursor(inbox) == 0  # not skipped
    got = w.dev(a).engine.receive(frame, cursor=(inbox, 1))
    assert got is not None and texts(store, res.conversation_id) == ["while locked"]
    assert store.cursor(inbox) == 1


def test_a_read_only_store_raises_and_skips_nothing(tmp_path: Path) -> None:
    w = World(8)
    a, b = w.person(), w.person()
    store = _on_disk(w, a, tmp_path / "a.db")
    store._db.execute("PRAGMA query_only = ON")  # as a read-only file, even for root
    res = w.send(b, a, "to a read-only home")
    inbox = w.dev(a).engine.inbox
    with pytest.raises(StoreUnavailable, match="readonly"):
        w.dev(a).engine.receive(w.frame_for(res, w.dev(a)), cursor=(inbox, 1))
    store._db.execute("PRAGMA query_only = OFF")
    assert store.cursor(inbox) == 0


def test_store_errors_are_typed() -> None:
    store = Store.memory()
    with pytest.raises(StoreError):
        store._x("SELECT * FROM no_such_table")
    assert issubclass(StoreUnavailable, StoreError)
