"""``recovery restore`` and ``devices link`` make a home as ``init`` does, and take the same
per-home lock: only init took it, so two at once on one home (or an init and a restore) could
lay out a home over the other's files. Here another process holds the lock (the test holds
it: a second flock on its own open file is refused in the same process too)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chatcore import identity as identity_mod
from chatcore.errors import StoreError
from chatcore.home import Home
from chatcore.identity import IdentityError, restore, start_link
from tests.chatcore.test_client_init import _files, _net

PASSPHRASE = "home-lock-pw"


class _ChainTouched(Exception):
    pass


@pytest.mark.parametrize("holder", ["init", "recovery restore", "devices link"])
def test_devices_link_while_another_holds_the_home_is_refused_and_changes_nothing(
    tmp_path: Path, holder: str
) -> None:
    home = Home(tmp_path / "new-device")
    home.make_dir()
    with home.init_lock(holder):
        made = _files(home.path)
        with pytest.raises(StoreError, match=f"another {holder} is running") as err:
            start_link(home.path, PASSPHRASE, _net())
        assert "run devices link again" in str(err.value)
        assert _files(home.path) == made  # no home laid out under the one running
    started = start_link(home.path, PASSPHRASE, _net())  # once it is done, link works
    assert started.code and home.meta_file.exists()
    assert start_link(home.path, PASSPHRASE, _net()).code == started.code  # the same code


@pytest.mark.parametrize("holder", ["init", "recovery restore", "devices link"])
def test_recovery_restore_while_another_holds_the_home_is_refused_before_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, holder: str
) -> None:
    acct, state = SimpleNamespace(address="0x" + "33" * 20), object()
    monkeypatch.setattr(identity_mod, "identity_for_phrase", lambda network, phrase: (acct, state))
    monkeypatch.setattr("discovery.registry.Registry", lambda network: object())
    touched: list[Any] = []

    def fund(*args: Any) -> None:  # the first thing restore does on the chain
        touched.append(args)
        raise _ChainTouched

    monkeypatch.setattr(identity_mod, "_fund", fund)
    home = Home(tmp_path / "restored")
    home.make_dir()
    with home.init_lock(holder):
        made = _files(home.path)
        with pytest.raises(StoreError, match=f"another {holder} is running") as err:
            restore(home.path, PASSPHRASE, _net(), "a phrase")
        assert "run recovery restore again" in str(err.value)
        assert _files(home.path) == made and touched == []
    with pytest.raises(_ChainTouched):  # once it is done, restore goes on to the chain
        restore(home.path, PASSPHRASE, _net(), "a phrase")
    assert len(touched) == 1


@pytest.mark.parametrize("what", ["init", "recovery restore", "devices link"])
def test_a_home_whose_file_system_cannot_lock_is_a_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """Review finding: flock failing otherwise than "held" (ENOLCK: an NFS mount without its
    lock daemon) escaped as a bare OSError (the CLI's "internal error"), for restore and link
    now too: a StoreError naming the home and why."""
    import errno
    import fcntl
    import os

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    home = Home(tmp_path / "nfs-home")
    home.make_dir()
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(StoreError, match="cannot lock the home") as err:
        with home.init_lock(what):
            pytest.fail("locked")
    assert os.strerror(errno.ENOLCK) in str(err.value)


def test_devices_link_on_a_home_that_holds_an_identity_says_so_plainly(tmp_path: Path) -> None:
    """A home holding an identity (made by init or restore there, or linked) is no new
    device: 'devices link' refuses it, naming it as init names it ('already holds an
    identity'), not 'a linked identity' of a home init made, and changes nothing."""
    home = Home(tmp_path / "taken")
    start_link(home.path, PASSPHRASE, _net())
    store = home.open_store(PASSPHRASE)
    try:
        store.set_meta("identity_id", b"\x07" * 32)
        code = store.get_meta("pair_code")
    finally:
        store.close()
    with pytest.raises(IdentityError, match="already holds an identity"):
        start_link(home.path, PASSPHRASE, _net())
    store = home.open_store(PASSPHRASE)
    try:
        assert store.get_meta("pair_code") == code
    finally:
        store.close()
