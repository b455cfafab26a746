"""The owner keystore is replaced whole: two processes saving it at once both succeed
(each through a temporary file of its own) and leave no temporary file behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatcore.home import Home


def test_two_saves_of_the_owner_key_at_once_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "h")
    home.create()
    first, second = b"\x01" * 32, b"\x02" * 32
    real_replace = os.replace
    interleaved = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        # the other process saves its key, all of it, between this one's write and rename
        if not interleaved:
            interleaved.append(True)
            home.save_owner_key(second, "pw")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    home.save_owner_key(first, "pw")
    monkeypatch.undo()

    assert interleaved
    assert home.load_owner_key("pw").key in (first, second)  # one of them, whole
    assert sorted(p.name for p in home.path.iterdir() if "keystore" in p.name) == ["keystore.json"]
    assert oct(home.keystore_file.stat().st_mode & 0o777) == oct(0o600)


def test_a_saved_owner_key_is_on_disk_rename_and_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename that puts the new keystore in place is made durable (the home directory
    is fsynced after it): callers go on to forget the key elsewhere (a rotation deletes the
    copy it kept in the store), so a power cut must not bring the old keystore back, or
    none at all after a first save."""
    import stat

    home = Home(tmp_path / "h")
    home.create()
    real_fsync, real_replace = os.fsync, os.replace
    events: list[str] = []

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        events.append("replace")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    home.save_owner_key(b"\x01" * 32, "pw")
    monkeypatch.undo()

    assert events.index("fsync file") < events.index("replace")
    assert "fsync dir" in events[events.index("replace") :]
    assert home.load_owner_key("pw").key == b"\x01" * 32
