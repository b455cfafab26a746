"""A local SQLite index of the registries, synced incrementally from their events.

It keeps every raw event (so the resolver re-verifies bundles from them exactly as on the
cold path) plus the derived lookup tables (account -> id, name -> id, installation status and
latest hashes). It survives restarts, and can be dropped and rebuilt from the chain at any
time (``rebuild``). Each chunk of a sync is saved with the hash of the head the sync reads
towards (read before its first log), so a sync broken off goes on from there. If that block
is no longer on the chain (a reorg, or a devnet that was reset) it rebuilds by itself; so it
does when the head changes hash while its logs are being read (a reorg in the middle of a
sync), up to three times. A rebuild is one transaction: if it fails, the index stays as it
was (and is rebuilt by a later sync).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from discovery.errors import ChainUnavailable
from discovery.registry import (
    REVOKED_HASH,
    ZERO32,
    Event,
    IdentityState,
    InstallationState,
    Registry,
)

SCHEMA_VERSION = 1
SYNC_MAX_CHUNK_BLOCKS = 1 << 22
SYNC_CHUNK_BLOCKS = 5000
#: syncs from scratch after the chain was replaced under one, before giving up
SYNC_ATTEMPTS = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, identity_id BLOB NOT NULL,
    address TEXT NOT NULL, topics BLOB NOT NULL, data BLOB NOT NULL, tx_hash TEXT NOT NULL,
    PRIMARY KEY (block, log_index));
CREATE INDEX IF NOT EXISTS events_by_identity ON events (identity_id, block, log_index);
CREATE TABLE IF NOT EXISTS identities (
    id BLOB PRIMARY KEY, owner TEXT NOT NULL, recovery TEXT NOT NULL,
    created_block INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (address TEXT PRIMARY KEY, id BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS installations (
    id BLOB NOT NULL, installation BLOB NOT NULL, position INTEGER NOT NULL,
    bundle_hash BLOB NOT NULL, pq_hash BLOB NOT NULL, revoked INTEGER NOT NULL,
    PRIMARY KEY (id, installation));
CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, id BLOB NOT NULL);
"""


class Index:
    """Local index of one network's registries (one SQLite file)."""

    def __init__(self, path: Path | str, registry: Registry) -> None:
        self.path = str(path)
        self.registry = registry
        try:
            self.db = self._connect()
        except sqlite3.OperationalError:
            raise  # locked, read-only, I/O: not damage (and maybe another process's file)
        except sqlite3.DatabaseError:
            # a damaged file: the index only copies the chain, so it is set aside and built
            # again by the next sync
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path + suffix, self.path + ".damaged" + suffix)
            self.db = self._connect()
        cfg = registry.config
        scope = f"{cfg.chain_id}:{cfg.identity_registry.lower()}:{cfg.name_registry.lower()}"
        if self._meta("scope") not in (None, scope):
            self._clear()  # the file belonged to another network: start over
        self._set_meta("scope", scope)
        self._set_meta("schema", str(SCHEMA_VERSION))
        # identity id -> its state with storage's word on it, since the last sync. None until
        # a sync succeeds in this process: a home that is offline answers from the file alone.
        self._checked: dict[bytes, IdentityState] | None = None
        # name -> its holder as storage said since the last sync
        self._holders: dict[str, bytes] = {}
        # account address (checksummed) -> its identity as storage said since the last sync
        self._accounts: dict[str, bytes] = {}
        # the chain failed to answer since the last sync: the file alone answers until the
        # next one (a node that hangs cost a timeout per identity, name and address asked)
        self._unreachable = False

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()

    # --- meta -------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def synced_block(self) -> int:
        v = self._meta("synced_block")
        return -1 if v is None else int(v)

    def _clear(self) -> None:
        for table in ("events", "identities", "accounts", "installations", "names", "meta"):
            self.db.execute(f"DELETE FROM {table}")

    # --- sync -------------------------------------------------------------------------------
    def rebuild(self) -> int:
        """Sync again from the deploy block; the index as it was stays if that fails."""
        applied = self._sync(None, rebuild=True)
        self._synced()
        return applied

    def sync(self, to_block: int | None = None) -> int:
        """Fetch and apply every event since the last sync. Returns the events applied."""
        applied = self._sync(to_block)
        self._synced()
        return applied

    def _synced(self) -> None:
        """A sync succeeded: storage is asked again, and what it said before is forgotten."""
        self._checked, self._holders, self._accounts = {}, {}, {}
        self._unreachable = False

    def _sync(self, to_block: int | None, rebuild: bool = False) -> int:
        """Sync on; if the chain under the index was replaced, rebuild it from the deploy
        block, and again (up to SYNC_ATTEMPTS in all) while it is replaced during that."""
        attempts = SYNC_ATTEMPTS
        while True:
            try:
                return self._rebuild_once(to_block) if rebuild else self._sync_once(to_block)
            except _ChainReplaced as exc:
                if exc.during:
                    attempts -= 1
                    if attempts <= 0:
                        raise ChainUnavailable(
                            f"the chain at {self.registry.config.rpc_url} was reorganised during "
                            f"every one of {SYNC_ATTEMPTS} index syncs: try again later"
                        ) from None
                rebuild = True

    def _rebuild_once(self, to_block: int | None) -> int:
        """Drop everything and sync from the deploy block, in one transaction: if that
        fails (the node breaks off, the chain changes again), the index as it was stays."""
        with self._savepoint("rebuild"):
            scope = self._meta("scope")
            self._clear()
            if scope:
                self._set_meta("scope", scope)
            return self._sync_once(to_block)

    @contextlib.contextmanager
    def _savepoint(self, name: str) -> Iterator[None]:
        """A transaction (nested in one already open: a savepoint of it)."""
        self.db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.db.execute(f"ROLLBACK TO {name}")
            self.db.execute(f"RELEASE {name}")
            raise
        self.db.execute(f"RELEASE {name}")

    def _sync_once(self, to_block: int | None) -> int:
        """Read the logs from the last synced block on, chunk by chunk, towards the head.

        The head's hash is read before any log, and saved (with the head's number) with
        every chunk. A block's hash stands for every block below it, so while the saved
        block keeps its hash, every chunk saved is of the chain: a sync checks it first,
        and again after its last chunk (a chain replaced while its logs were read). A sync
        broken off therefore goes on where it stopped, and a chain replaced meanwhile is
        still noticed by the next sync. Raises _ChainReplaced."""
        reg = self.registry
        head = reg.block_number() if to_block is None else to_block
        last = self.synced_block
        known = self._meta("synced_hash")
        at = int(self._meta("synced_hash_block") or last)  # the block ``known`` is of
        if last >= 0 and (known is None or at > head):
            # the hash of a synced block was never saved (a first sync broken off before
            # this version), or the chain is shorter than what we synced (a reset): nothing
            # says these logs are still the chain's
            raise _ChainReplaced(during=False)
        head_hash = reg.block_hash(head).hex() if head >= 0 else None
        if last >= 0:
            # after reading the head's hash: a chain replaced in between fails this check,
            # or the one after the last chunk
            now = head_hash if at == head else reg.block_hash(at).hex()
            if now != known:
                raise _ChainReplaced(during=False)
        start = max(last + 1, reg.config.deploy_block)
        if start > head:
            return 0
        assert head_hash is not None
        applied = 0
        chunk = SYNC_CHUNK_BLOCKS
        while start <= head:
            end = min(head, start + chunk - 1)
            events = reg.events_between(start, end)
            # empty stretches (most of a quiet chain, or a node claiming an absurd head)
            # are crossed in ever larger steps: O(log) calls, not O(blocks / chunk)
            chunk = SYNC_CHUNK_BLOCKS if events else min(chunk * 2, SYNC_MAX_CHUNK_BLOCKS)
            with self._savepoint("chunk"):
                self._apply(events)
                self._set_meta("synced_block", str(end))
                self._set_meta("synced_hash", head_hash)
                self._set_meta("synced_hash_block", str(head))
            applied += len(events)
            start = end + 1
        if reg.block_hash(head).hex() != head_hash:
            # replaced while its logs were read: they may be of the old fork
            raise _ChainReplaced(during=True)
        return applied

    def _apply(self, events: Iterable[Event]) -> None:
        db = self.db
        for ev in events:
            a = ev.args
            ident = a.get("id")
            if not isinstance(ident, bytes):
                continue
            db.execute(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?)",
                (
                    ev.block_number,
                    ev.log_index,
                    ident,
                    ev.address,
                    b"".join(ev.topics),
                    ev.data,
                    ev.tx_hash,
                ),
            )
            name = ev.name
            if name == "IdentityRegistered":
                db.execute(
                    "INSERT OR REPLACE INTO identities VALUES (?,?,?,?)",
                    (ident, a["owner"], a["recovery"], ev.block_number),
                )
                db.execute("INSERT OR REPLACE INTO accounts VALUES (?,?)", (a["owner"], ident))
            elif name == "OwnerChanged":
                db.execute("UPDATE identities SET owner=? WHERE id=?", (a["newOwner"], ident))
                db.execute(
                    "DELETE FROM accounts WHERE address=? AND id=?", (a["previousOwner"], ident)
                )
                db.execute("INSERT OR REPLACE INTO accounts VALUES (?,?)", (a["newOwner"], ident))
            elif name == "RecoveryChanged":
                db.execute("UPDATE identities SET recovery=? WHERE id=?", (a["recovery"], ident))
            elif name == "InstallationAdded":
                (pos,) = db.execute(
                    "SELECT COUNT(*) FROM installations WHERE id=?", (ident,)
                ).fetchone()
                db.execute(
                    "INSERT OR IGNORE INTO installations VALUES (?,?,?,?,?,0)",
                    (ident, a["installation"], pos, ZERO32, ZERO32),
                )
            elif name == "InstallationRevoked":
                db.execute(
                    "UPDATE installations SET revoked=1, bundle_hash=? "
                    "WHERE id=? AND installation=?",
                    (REVOKED_HASH, ident, a["installation"]),
                )
            elif name == "BundlePublished":
                db.execute(
                    "UPDATE installations SET bundle_hash=? "
                    "WHERE id=? AND installation=? AND revoked=0",
                    (keccak(bytes(a["bundle"])), ident, a["installation"]),
                )
            elif name == "PqKeyPublished":
                db.execute(
                    "UPDATE installations SET pq_hash=? WHERE id=? AND installation=?",
                    (keccak(bytes(a["record"])), ident, a["installation"]),
                )
            elif name == "WalletLinked":
                db.execute("INSERT OR REPLACE INTO accounts VALUES (?,?)", (a["wallet"], ident))
            elif name == "WalletUnlinked":
                db.execute("DELETE FROM accounts WHERE address=? AND id=?", (a["wallet"], ident))
            elif name == "NameClaimed":
                db.execute("INSERT OR REPLACE INTO names VALUES (?,?)", (a["name"], ident))
            elif name == "NameReleased":
                db.execute("DELETE FROM names WHERE name=? AND id=?", (a["name"], ident))

    # --- IdentitySource -----------------------------------------------------------------------
    def identities_of_installation(self, installation_id: bytes) -> list[bytes]:
        """Every identity that registered this installation id (normally at most one)."""
        rows = self.db.execute(
            "SELECT id FROM installations WHERE installation=? ORDER BY id", (installation_id,)
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def by_id(self, identity_id: bytes) -> IdentityState:
        """The identity as its events built it (no RPC). For sending and receiving, use
        :meth:`checked`, which has storage's word on it."""
        return self._indexed(identity_id)

    def checked(self) -> StorageChecked:
        """This index with storage's word on each identity, once per sync (see
        :class:`StorageChecked`)."""
        return StorageChecked(self)

    def _ask_storage(self) -> bool:
        """Ask storage about identities, names and addresses? Only once a sync succeeded
        in this process (offline, the file alone answers), and not after the chain failed
        to answer since."""
        return self._checked is not None and not self._unreachable

    def _confirmed(self, state: IdentityState) -> IdentityState:
        if self._checked is None or not state.exists or not self._ask_storage():
            return state
        hit = self._checked.get(state.identity_id)
        if hit is None:
            hit = self._checked[state.identity_id] = self._storage_says(state)
        return hit

    def _storage_says(self, state: IdentityState) -> IdentityState:
        try:
            chain = self.registry.get_identity(state.identity_id)
        except ChainUnavailable:
            self._unreachable = True
            return state  # unreachable since the sync: the index as synced
        if chain.identity_id != state.identity_id:
            return _empty()  # storage has no such identity: its logs were invented
        listed = {i.installation_id: i for i in chain.installations}
        insts = tuple(
            replace(i, bundle_hash=REVOKED_HASH, revoked=True)
            if listed[i.installation_id].revoked
            else i
            for i in state.installations
            if i.installation_id in listed
        )
        return replace(
            state,
            owner=chain.owner,
            recovery=chain.recovery,
            created_block=chain.created_block,
            installations=insts,
        )

    def _indexed(self, identity_id: bytes) -> IdentityState:
        row = self.db.execute(
            "SELECT owner, recovery, created_block FROM identities WHERE id=?", (identity_id,)
        ).fetchone()
        if row is None:
            return _empty()
        insts = tuple(
            InstallationState(bytes(r[0]), bytes(r[1]), bytes(r[2]), bool(r[3]))
            for r in self.db.execute(
                "SELECT installation, bundle_hash, pq_hash, revoked FROM installations "
                "WHERE id=? ORDER BY position",
                (identity_id,),
            )
        )
        return IdentityState(identity_id, row[0], row[1], int(row[2]), insts)

    def by_account(self, address: str) -> IdentityState:
        row = self.db.execute(
            "SELECT id FROM accounts WHERE address=?", (to_checksum_address(address),)
        ).fetchone()
        return _empty() if row is None else self.by_id(bytes(row[0]))

    def by_name(self, name: str) -> IdentityState:
        """The identity the index's events say holds ``name`` (no RPC)."""
        holder = self._indexed_holder(name)
        return _empty() if holder == ZERO32 else self.by_id(holder)

    def indexed_holder(self, name: str) -> bytes | None:
        """Who the index's events say holds ``name`` now (no RPC); None: nobody."""
        holder = self._indexed_holder(name)
        return None if holder == ZERO32 else holder

    def _indexed_holder(self, name: str) -> bytes:
        row = self.db.execute("SELECT id FROM names WHERE name=?", (name,)).fetchone()
        return ZERO32 if row is None else bytes(row[0])

    def _holder(self, name: str) -> bytes | None:
        """Who storage says holds ``name`` (one ``nameOwner`` call per name and sync); with
        the chain unreachable, the index's answer as last synced. None: nobody."""
        holder = self._holders.get(name)
        if holder is None:
            holder = self._indexed_holder(name)
            if self._ask_storage():
                try:
                    holder = self._holders[name] = self.registry.name_owner(name)
                except ChainUnavailable:
                    self._unreachable = True
        return None if holder == ZERO32 else holder

    def _account_holder(self, address: str) -> bytes | None:
        """The identity storage says ``address`` owns or is linked to (one ``identityOf``
        call per address and sync); with the chain unreachable, the index's answer as last
        synced. None: none."""
        address = to_checksum_address(address)
        holder = self._accounts.get(address)
        if holder is None:
            row = self.db.execute("SELECT id FROM accounts WHERE address=?", (address,)).fetchone()
            holder = ZERO32 if row is None else bytes(row[0])
            if self._ask_storage():
                try:
                    holder = self._accounts[address] = self.registry.identity_of(address)
                except ChainUnavailable:
                    self._unreachable = True
        return None if holder == ZERO32 else holder

    def by_recovery(self, address: str) -> list[IdentityState]:
        """Identities whose recovery account is ``address`` (for recovery by phrase)."""
        rows = self.db.execute(
            "SELECT id FROM identities WHERE recovery=?", (to_checksum_address(address),)
        ).fetchall()
        return [self.by_id(bytes(r[0])) for r in rows]

    def events(self, state: IdentityState) -> list[Event]:
        out: list[Event] = []
        decoder = self.registry.decoder
        for block, log_index, address, topics, data, tx_hash in self.db.execute(
            "SELECT block, log_index, address, topics, data, tx_hash FROM events "
            "WHERE identity_id=? ORDER BY block, log_index",
            (state.identity_id,),
        ):
            log: dict[str, Any] = {
                "topics": [topics[i : i + 32] for i in range(0, len(topics), 32)],
                "data": data,
                "blockNumber": block,
                "logIndex": log_index,
                "address": address,
                "transactionHash": bytes.fromhex(tx_hash) if tx_hash else None,
            }
            ev = decoder.decode(log)
            if ev is not None:
                out.append(ev)
        return out

    def count_identities(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM identities").fetchone()[0])


class _ChainReplaced(Exception):
    """Blocks the index synced are no longer the chain's: rebuild. ``during``: it happened
    while this sync read logs (counted against SYNC_ATTEMPTS)."""

    def __init__(self, during: bool) -> None:
        super().__init__("the chain was replaced")
        self.during = during


def _empty() -> IdentityState:
    return IdentityState(ZERO32, "0x" + "00" * 20, "0x" + "00" * 20, 0, ())


class StorageChecked:
    """The index, with storage's word on what sending and receiving rely on: once per
    identity and sync (after one in this process), one ``getIdentity`` checks its
    installations' status, owner and recovery, and storage wins (a node can hold back or
    invent logs — a revocation held back would keep a stolen device active —, not
    storage); a name is looked up with ``nameOwner``, an address with ``identityOf``, and
    a name an identity's logs give it is shown only if ``nameOwner`` agrees
    (:meth:`name_holder`, which the resolver asks). Installations storage does not list
    are dropped; ones the index does not know yet wait for the next sync (their bundles are
    not here). Plain :class:`Index` lookups (what ``lookup`` shows) stay local: no RPC."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def by_id(self, identity_id: bytes) -> IdentityState:
        return self.index._confirmed(self.index.by_id(identity_id))

    def by_account(self, address: str) -> IdentityState:
        holder = self.index._account_holder(address)
        return _empty() if holder is None else self.by_id(holder)

    def by_name(self, name: str) -> IdentityState:
        holder = self.name_holder(name)
        return _empty() if holder is None else self.by_id(holder)

    def name_holder(self, name: str) -> bytes | None:
        """Who storage says holds ``name`` (once per name and sync); None: nobody."""
        return self.index._holder(name)

    def events(self, state: IdentityState) -> list[Event]:
        return self.index.events(state)
