"""A user's home directory: the owner keystore and the encrypted local store.

    HOME/home.json       public parameters only: format version, scrypt salt and cost
    HOME/keystore.json   the owner's Ethereum key, V3 keystore (scrypt), passphrase-encrypted
    HOME/state.db        SQLCipher database: installation keys, prekeys, sessions, messages
    HOME/index.db        the on-chain directory index (public data, rebuildable)
    HOME/init.lock       while ``init`` runs in the home (an exclusive flock): one at a time
    HOME/listen.lock     while a ``Client.listen()`` runs on the home (a shared flock each)

The database key is scrypt(passphrase, salt); the passphrase itself is never stored.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from eth_account.signers.local import LocalAccount

from chatcore.content import check_str, utf8
from chatcore.errors import NotInitialised, StoreError, WrongPassphrase
from chatcore.store import Store

HOME_VERSION = 1
# scrypt cost: ~50 ms here; interactive use opens the store once per command.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
# eth-keyfile's scrypt for the owner keystore (only needed to sign chain transactions)
KEYSTORE_SCRYPT_N = 2**15
KEYSTORE_TMP_PREFIX = "keystore.json."


@dataclass(frozen=True, slots=True)
class Home:
    path: Path

    @property
    def meta_file(self) -> Path:
        return self.path / "home.json"

    @property
    def keystore_file(self) -> Path:
        return self.path / "keystore.json"

    @property
    def db_file(self) -> Path:
        return self.path / "state.db"

    @property
    def index_file(self) -> Path:
        return self.path / "index.db"

    @property
    def init_lock_file(self) -> Path:
        return self.path / "init.lock"

    @property
    def listen_lock_file(self) -> Path:
        return self.path / "listen.lock"

    def listening(self) -> int | None:
        """Say that a ``listen()`` runs on the home (a shared flock on ``listen.lock``, held
        until the returned descriptor is closed; None if the file cannot be made or locked:
        then nobody is told)."""
        try:
            fd = os.open(self.listen_lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # (a checker holds it exclusively for a moment)
        except OSError:
            os.close(fd)
            return None
        return fd

    def someone_listens(self) -> bool:
        """Does a ``listen()`` run on the home, in another process or Client (``listening``)?"""
        try:
            fd = os.open(self.listen_lock_file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # (releases the lock it took)
        return False

    @contextmanager
    def init_lock(self, what: str = "init") -> Iterator[None]:
        """Hold the home's init lock (an exclusive flock on ``init.lock``, made in the home,
        which must exist) while ``what`` (init, recovery restore, devices link: each makes a
        home) runs: a second one in the home at the same time would take the first one's
        files away (or lay out a home over it). StoreError if another process holds it
        (naming what it runs), or it cannot be made. The file is removed when released."""
        while True:
            try:
                fd = os.open(self.init_lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreError(
                    f"cannot lock the home {self.path}: {exc.strerror or exc}"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # the file it locked may have been removed by the init that held it: then
                # lock the one in its place
                current = os.stat(self.init_lock_file).st_ino
            except BlockingIOError:
                holder = _lock_holder(fd)
                os.close(fd)
                raise StoreError(
                    f"another {holder} is running on the home {self.path}: let it finish (then "
                    f"run {what} again if it did not)"
                ) from None
            except FileNotFoundError:
                current = None
            except OSError as exc:  # no locks on this file system (ENOLCK: NFS, no lockd)
                os.close(fd)
                raise StoreError(
                    f"cannot lock the home {self.path}: {exc.strerror or exc}"
                ) from exc
            except BaseException:
                os.close(fd)
                raise
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)
        try:
            with contextlib.suppress(OSError):  # what runs, for the error another one gets
                os.ftruncate(fd, 0)
                os.pwrite(fd, what.encode(), 0)
            try:
                yield
            finally:
                self.init_lock_file.unlink(missing_ok=True)  # still held: no one uses it
        finally:
            os.close(fd)

    def exists(self) -> bool:
        return self.meta_file.exists() and self.db_file.exists()

    def _params(self) -> dict[str, Any]:
        try:
            d = json.loads(self.meta_file.read_text())
        except FileNotFoundError as exc:
            raise NotInitialised(
                f"no identity in {self.path}: run 'logos-chat --home {self.path} init'"
            ) from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"cannot read {self.meta_file}: {exc}") from exc
        if not isinstance(d, dict) or d.get("version") != HOME_VERSION:
            raise StoreError(f"{self.meta_file} has an unknown format")
        return d

    def db_key(self, passphrase: str) -> bytes:
        p = self._params()
        return hashlib.scrypt(
            utf8("the passphrase", passphrase),
            salt=bytes.fromhex(p["salt"]),
            n=int(p["n"]),
            r=int(p["r"]),
            p=int(p["p"]),
            maxmem=128 * 1024 * 1024,
            dklen=32,
        )

    @staticmethod
    def check_new_passphrase(passphrase: str) -> None:
        """A passphrase for a new home: a string, not blank (it encrypts the home's keys
        and history; the CLI refuses a blank one too). TypeError / ValueError."""
        check_str("the passphrase", passphrase)  # a string with UTF-8 (no lone surrogate)
        if not passphrase.strip():
            raise ValueError("the passphrase may not be empty: it encrypts the home's keys")

    def make_dir(self) -> None:
        """The home's directory, made if missing (StoreError if it cannot be: a path
        through a file, no permission, a read-only file system)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"cannot make the home {self.path}: {exc.strerror or exc}") from exc

    def create(self) -> None:
        """Lay out a new home (fails if one exists)."""
        if self.meta_file.exists():
            raise StoreError(f"{self.path} already holds an identity")
        self.make_dir()
        params = {
            "version": HOME_VERSION,
            "kdf": "scrypt",
            "salt": os.urandom(16).hex(),
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
        }
        try:
            self.meta_file.write_text(json.dumps(params, indent=2) + "\n")
        except OSError as exc:
            raise StoreError(f"cannot write {self.meta_file}: {exc.strerror or exc}") from exc

    def open_store(self, passphrase: str) -> Store:
        key = self.db_key(passphrase)
        try:
            return Store.open(self.db_file, key)
        except WrongPassphrase:
            # a damaged store looks like a wrong key: the owner keystore (its own MAC) says
            # whether the passphrase is right, so the user is not sent to retry it
            if not self.keystore_file.exists():
                raise
            try:
                self.load_owner_key(passphrase)
            except (WrongPassphrase, NotInitialised, OSError, ValueError):
                raise WrongPassphrase("wrong passphrase (cannot decrypt the local store)") from None
            raise StoreError(
                f"the local store {self.db_file} is damaged (the passphrase is right: it "
                "opens the owner keystore)"
            ) from None

    # --- owner keystore ---------------------------------------------------------------------------
    def save_owner_key(self, private_key: bytes, passphrase: str) -> None:
        from eth_account import Account

        ks = Account.encrypt(private_key, passphrase, kdf="scrypt", iterations=KEYSTORE_SCRYPT_N)
        # a temporary file of its own (0600, in the home): two processes saving the key at
        # once each replace the keystore whole, the last one wins, neither fails
        fd, name = tempfile.mkstemp(dir=self.path, prefix=KEYSTORE_TMP_PREFIX, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(ks, indent=2) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(name, self.keystore_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise
        # the rename on disk too: callers go on to forget the key elsewhere (a rotation
        # deletes the copy it kept in the store); after a power cut the directory could
        # still name the old keystore (or none, after a first save)
        _fsync_dir(self.path)

    def keystore_leftovers(self) -> list[Path]:
        """Temporary keystore files a save cut short left in the home."""
        legacy = self.keystore_file.with_suffix(".tmp")  # the one name saves used before
        return [*self.path.glob(KEYSTORE_TMP_PREFIX + "*.tmp"), legacy]

    def load_owner_key(self, passphrase: str) -> LocalAccount:
        """The owner LocalAccount (raises WrongPassphrase / NotInitialised)."""
        from eth_account import Account

        try:
            ks = json.loads(self.keystore_file.read_text())
        except FileNotFoundError as exc:
            raise NotInitialised(f"no owner keystore in {self.path}") from exc
        try:
            return cast(LocalAccount, Account.from_key(Account.decrypt(ks, passphrase)))
        except ValueError as exc:
            raise WrongPassphrase("wrong passphrase (cannot decrypt the owner keystore)") from exc


def _fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable (a rename into it, say); a file
    system that cannot fsync a directory (EINVAL) is left as it is."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _lock_holder(fd: int) -> str:
    """What the process holding a home's init lock runs, as it wrote in the lock file
    (empty if it has not written it yet)."""
    try:
        text = os.pread(fd, 64, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    if text in ("init", "recovery restore", "devices link"):
        return text
    return "init, recovery restore or devices link"
