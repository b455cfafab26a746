"""discovery.index: the local SQLite index gives the same verified answers as the cold path,
syncs incrementally, survives reopening, rebuilds, follows a chain reset, and costs no RPC."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3

from chatcore.client import Client
from devnet.chain import mine, rpc_url
from devnet.process import ManagedProcess
from discovery.errors import ChainUnavailable, RecordNotFound, RevokedInstallation
from discovery.index import Index
from discovery.network import NetworkConfig
from discovery.registry import Event, Registry
from discovery.resolver import Resolver, parse_query
from tests.discovery.rpc_proxy import RpcProxy
from tests.discovery.test_resolver import (
    PASSPHRASE,
    Ident,
    add_device,
    cold,
    init_client,
    network_for,
    register_direct,
    via,
)
from tests.fixtures.chain import Registries

pytestmark = pytest.mark.devnet


@dataclass
class World:
    cfg: NetworkConfig
    reg: Registry
    w3: Web3
    alice: Client
    bob: Ident

    def queries(self) -> list[str]:
        a = "0x" + self.alice.identity_id.hex()
        return [
            a,
            self.reg.get_identity(self.alice.identity_id).owner,
            "alice",
            self.bob.qid,
            self.bob.owner.address,
            self.bob.bundles[-1].to_text(),
        ]


@pytest.fixture(scope="module")
def world(
    anvil: ManagedProcess,
    w3: Web3,
    registries: Registries,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    cfg = network_for(anvil, registries)
    reg = Registry(cfg)
    alice = init_client(tmp_path_factory.mktemp("index") / "alice", cfg, "alice")
    bob = register_direct(reg, w3)
    add_device(reg, bob)
    try:
        yield World(cfg, reg, w3, alice, bob)
    finally:
        alice.close()


@pytest.fixture
def proxy(anvil: ManagedProcess) -> Iterator[RpcProxy]:
    with RpcProxy(rpc_url(anvil)) as p:
        yield p


def warm(index: Index, cfg: NetworkConfig, *, checked: bool = False) -> Resolver:
    """A resolver over the index; ``checked``: as sending and receiving use it."""
    return Resolver(index.checked() if checked else index, cfg.binding, cfg.name_registry)


def assert_same_as_cold(index: Index, world: World) -> None:
    r_cold, r_idx = cold(world.cfg), warm(index, world.cfg)
    for q in world.queries():
        assert r_idx.resolve(q) == r_cold.resolve(q), q


def all_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    db = sqlite3.connect(path)
    try:
        return {
            t: sorted(db.execute(f"SELECT * FROM {t}").fetchall())
            for t in ("events", "identities", "accounts", "installations", "names")
        }
    finally:
        db.close()


def test_sync_from_scratch_equals_cold(world: World, tmp_path: Path) -> None:
    idx = Index(tmp_path / "index.sqlite", Registry(world.cfg))
    try:
        assert idx.synced_block == -1
        applied = idx.sync()
        assert applied >= 10  # alice: 6+ events, bob: 5
        assert idx.synced_block == world.reg.block_number()
        assert idx.count_identities() == 2
        assert_same_as_cold(idx, world)
        r = warm(idx, world.cfg)
        for q in ("nobody_here", "0x" + "ab" * 32, "0x" + "cd" * 20):
            with pytest.raises(RecordNotFound):
                r.resolve(q)
    finally:
        idx.close()


def test_lookups_after_sync_ask_storage_once_per_identity(
    world: World, proxy: RpcProxy, tmp_path: Path
) -> None:
    """Plain index lookups (what ``lookup`` shows) make no call at all; the checked view
    that sending and receiving use asks storage once per name and identity per sync."""
    idx = Index(tmp_path / "index.sqlite", Registry(via(proxy, world.cfg)))
    try:
        idx.sync()
        names = [q for q in [*world.queries(), "nobody_here"] if parse_query(q)[0] == "name"]
        assert len(names) == 2
        accounts = [q for q in world.queries() if parse_query(q)[0] == "account"]
        assert len(accounts) == 2
        for checked in (False, True):
            r = warm(idx, world.cfg, checked=checked)
            for round_ in (1, 2):
                proxy.reset()
                for q in world.queries():
                    assert r.resolve(q).installations
                with pytest.raises(RecordNotFound):
                    r.resolve("nobody_here")
                # after a sync, each name's holder is asked of storage once (nameOwner; the
                # names alice's logs give her are checked with it too), each address's
                # identity once (identityOf), and the first lookup of each of the two
                # identities reads its storage
                calls = len(names) + len(accounts) + 2 if checked and round_ == 1 else 0
                assert proxy.methods == ["eth_call"] * calls
    finally:
        idx.close()


def test_incremental_sync_picks_up_publishes_and_revocations(
    world: World, proxy: RpcProxy, tmp_path: Path
) -> None:
    idx = Index(tmp_path / "index.sqlite", Registry(via(proxy, world.cfg)))
    try:
        idx.sync()
        before = idx.synced_block
        alice_seq = warm(idx, world.cfg).resolve("alice").installations[0].bundle.seq

        world.alice.publish(PASSPHRASE)  # BundlePublished
        bob = world.bob
        new_dev = add_device(world.reg, bob)  # InstallationAdded + BundlePublished
        gone = bob.devices[0]
        world.reg.revoke_installation(bob.owner, bob.identity_id, gone.pub)  # InstallationRevoked

        # not synced yet: the old events, but storage's word on which devices are revoked
        early = warm(idx, world.cfg, checked=True).resolve(bob.qid)
        assert gone.pub in early.revoked
        assert new_dev.pub not in [i.installation_id for i in early.installations]

        proxy.reset()
        assert idx.sync() == 4
        assert idx.synced_block > before
        # incremental: one eth_getLogs for the new range only
        assert proxy.methods.count("eth_getLogs") == 1

        r = warm(idx, world.cfg)
        assert r.resolve("alice").installations[0].bundle.seq == alice_seq + 1
        rb = r.resolve(bob.qid)
        assert gone.pub in rb.revoked
        assert gone.pub not in [i.installation_id for i in rb.installations]
        assert new_dev.pub in [i.installation_id for i in rb.installations]
        with pytest.raises(RevokedInstallation):
            r.resolve(bob.bundles[0].to_text())
        assert_same_as_cold(idx, world)
        assert idx.sync() == 0
    finally:
        idx.close()


def test_survives_reopening(world: World, proxy: RpcProxy, tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    idx = Index(path, Registry(world.cfg))
    idx.sync()
    synced = idx.synced_block
    idx.close()

    idx = Index(path, Registry(via(proxy, world.cfg)))
    try:
        assert idx.synced_block == synced
        proxy.reset()
        assert_same_as_cold(idx, world)
        assert proxy.methods == []  # answered from the file alone
        assert idx.sync() == 0
    finally:
        idx.close()


def test_rebuild_gives_the_same_index(world: World, tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    idx = Index(path, Registry(world.cfg))
    try:
        n = idx.sync()
        rows = all_rows(path)
        assert idx.rebuild() == n
        assert all_rows(path) == rows
        assert_same_as_cold(idx, world)
    finally:
        idx.close()


def test_other_network_scope_clears_the_file(world: World, tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    idx = Index(path, Registry(world.cfg))
    idx.sync()
    assert idx.count_identities() == 2
    idx.close()

    other = dataclasses.replace(world.cfg, identity_registry="0x" + "12" * 20)
    idx = Index(path, Registry(other))
    assert idx.count_identities() == 0
    assert idx.synced_block == -1
    assert all(not v for v in all_rows(path).values())
    idx.close()

    other_chain = dataclasses.replace(world.cfg, chain_id=5)
    idx = Index(path, Registry(world.cfg))  # back to ours: empty, syncs again
    try:
        assert idx.count_identities() == 0
        idx.sync()
        assert_same_as_cold(idx, world)
    finally:
        idx.close()
    idx = Index(path, Registry(other_chain))
    try:
        assert idx.count_identities() == 0
    finally:
        idx.close()


def test_chain_reset_below_synced_block_triggers_rebuild(world: World, tmp_path: Path) -> None:
    """A devnet reset (or reorg) replaces blocks the index synced: it must not keep ghosts."""
    idx = Index(tmp_path / "index.sqlite", Registry(world.cfg))
    snap = world.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    reverted = False
    try:
        idx.sync()
        ghost = register_direct(world.reg, world.w3)
        idx.sync()
        assert warm(idx, world.cfg).resolve(ghost.qid).identity_id == ghost.identity_id
        assert world.w3.provider.make_request("evm_revert", [snap])["result"]  # type: ignore[arg-type]
        reverted = True
        mine(world.w3, 5)  # a new, different chain above the old synced height
        idx.sync()
        with pytest.raises(RecordNotFound):
            warm(idx, world.cfg).resolve(ghost.qid)
        assert_same_as_cold(idx, world)
    finally:
        if not reverted:
            world.w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
        idx.close()


def test_reorg_between_reading_logs_and_finishing_the_sync_is_caught(
    world: World, tmp_path: Path
) -> None:
    """The chain is replaced after eth_getLogs answered: the logs are of the old fork. The
    index must not keep them under the new fork's head (later syncs start above it, so a
    revocation in the new fork would never be seen)."""
    w3, reg = world.w3, Registry(world.cfg)
    bob = register_direct(world.reg, w3)
    add_device(world.reg, bob)
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    mine(w3)  # the old fork: block N is empty
    head = w3.eth.block_number
    real = reg.events_between
    reorged: list[int] = []

    def events_between(a: int, b: int) -> list[Event]:
        events = real(a, b)
        if not reorged:
            reorged.append(1)
            assert w3.provider.make_request("evm_revert", [snap])["result"]  # type: ignore[arg-type]
            # the new fork: block N holds a revocation
            world.reg.revoke_installation(bob.owner, bob.identity_id, bob.devices[0].pub)
            assert w3.eth.block_number == head
        return events

    reg.events_between = events_between  # type: ignore[method-assign]
    idx = Index(tmp_path / "index.sqlite", reg)
    try:
        idx.sync(to_block=head)
        assert reorged
        resolved = warm(idx, world.cfg).resolve(bob.qid)
        assert bob.devices[0].pub in resolved.revoked
        assert resolved == cold(world.cfg).resolve(bob.qid)
        mine(w3)
        assert idx.sync() == 0
    finally:
        idx.close()


def test_a_chain_that_never_holds_still_is_chain_unavailable(world: World, tmp_path: Path) -> None:
    reg = Registry(world.cfg)
    hashes = iter(range(10**6))
    reg.block_hash = lambda n: next(hashes).to_bytes(32, "big")  # type: ignore[method-assign]
    idx = Index(tmp_path / "index.sqlite", reg)
    try:
        with pytest.raises(ChainUnavailable, match="reorganised during every one"):
            idx.sync()
    finally:
        idx.close()


def _flaky(reg: Registry, fail: Callable[[int, int, int], bool]) -> list[tuple[int, int]]:
    """Make ``reg.events_between`` raise ChainUnavailable (a node timing out) when
    ``fail(call number from 1, from block, to block)``; returns the ranges asked for."""
    calls: list[tuple[int, int]] = []

    def events_between(a: int, b: int) -> list[Event]:
        calls.append((a, b))
        if fail(len(calls), a, b):
            raise ChainUnavailable("simulated timeout")
        return Registry.events_between(reg, a, b)

    reg.events_between = events_between  # type: ignore[method-assign]
    return calls


def test_a_sync_broken_off_midway_goes_on_where_it_stopped(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: a sync saved its block per chunk but the block's hash only at the
    end, so after a sync broken off midway the next one saw a hash mismatch, took it for a
    reorg and rebuilt from the deploy block, committing the wiped tables first: if that
    failed too, the index was left empty (every contact gone). Now each chunk saves the
    hash the next sync checks with it, and a sync broken off goes on from there."""
    monkeypatch.setattr("discovery.index.SYNC_CHUNK_BLOCKS", 4)
    reg = Registry(world.cfg)
    idx = Index(tmp_path / "index.sqlite", reg)
    try:
        idx.sync()
        known = idx.count_identities()
        mine(world.w3, 6)
        carol = register_direct(world.reg, world.w3)
        mine(world.w3, 6)
        _flaky(reg, lambda n, a, b: n == 2)
        with pytest.raises(ChainUnavailable):
            idx.sync()
        stopped = idx.synced_block
        calls = _flaky(reg, lambda n, a, b: n == 1)  # the node fails again at once
        with pytest.raises(ChainUnavailable):
            idx.sync()
        assert calls[0][0] == stopped + 1  # no rebuild from the deploy block
        assert idx.count_identities() >= known
        assert warm(idx, world.cfg).resolve("alice").identity_id == world.alice.identity_id
        calls = _flaky(reg, lambda n, a, b: False)
        idx.sync()
        assert calls[0][0] == stopped + 1
        assert warm(idx, world.cfg).resolve(carol.qid).identity_id == carol.identity_id
        assert_same_as_cold(idx, world)
    finally:
        idx.close()


def test_a_rebuild_that_fails_keeps_the_index(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: a rebuild wiped the tables and committed before syncing again, so a
    rebuild the node broke off left the index empty. It is one transaction now."""
    monkeypatch.setattr("discovery.index.SYNC_CHUNK_BLOCKS", 4)
    path = tmp_path / "index.sqlite"
    reg = Registry(world.cfg)
    idx = Index(path, reg)
    try:
        idx.sync()
        before = all_rows(path)
        block = idx.synced_block
        _flaky(reg, lambda n, a, b: n == 2)
        with pytest.raises(ChainUnavailable):
            idx.rebuild()
        assert all_rows(path) == before and idx.synced_block == block
        assert_same_as_cold(idx, world)
        _flaky(reg, lambda n, a, b: False)
        idx.rebuild()
        assert all_rows(path) == before
    finally:
        idx.close()


def test_a_chain_reset_after_a_first_sync_broken_off_is_noticed(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: a first sync broken off saved no block hash at all, so no later sync
    checked for a replaced chain: after a devnet reset the index kept the old chain's
    identities and missed the new one's for good. Each chunk saves a hash now."""
    monkeypatch.setattr("discovery.index.SYNC_CHUNK_BLOCKS", 4)
    w3 = world.w3
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    top = w3.eth.block_number  # the blocks up to here stay
    reverted = False
    reg = Registry(world.cfg)
    idx = Index(tmp_path / "index.sqlite", reg)
    try:
        ghost = register_direct(world.reg, w3)
        mine(w3, 8)
        # broken off after the chunk that holds the first block above ``top``
        _flaky(reg, lambda n, a, b: a > top + 1)
        with pytest.raises(ChainUnavailable):
            idx.sync()
        assert idx.synced_block > top
        assert w3.provider.make_request("evm_revert", [snap])["result"]  # type: ignore[arg-type]
        reverted = True
        carol = register_direct(world.reg, w3)  # the new chain, from block top + 1
        mine(w3, 12)
        _flaky(reg, lambda n, a, b: False)
        idx.sync()
        with pytest.raises(RecordNotFound):
            warm(idx, world.cfg).resolve(ghost.qid)
        assert warm(idx, world.cfg).resolve(carol.qid).identity_id == carol.identity_id
        assert_same_as_cold(idx, world)
    finally:
        if not reverted:
            w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
        idx.close()


def test_a_chain_replaced_below_a_chunk_already_saved_is_noticed(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain is replaced from a block an earlier chunk of the same sync saved (the
    later chunks' logs are of the new chain): the head's hash, read before the first log
    and saved with every chunk, no longer matches after the last one, so the sync rebuilds
    (a guard for the per-chunk saving: the hash of a later chunk's end would agree)."""
    monkeypatch.setattr("discovery.index.SYNC_CHUNK_BLOCKS", 4)
    w3 = world.w3
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    top = w3.eth.block_number
    reverted: list[Ident] = []
    reg = Registry(world.cfg)
    idx = Index(tmp_path / "index.sqlite", reg)
    try:
        ghost = register_direct(world.reg, w3)
        mine(w3, 40)
        head = w3.eth.block_number

        def replace_chain(n: int, a: int, b: int) -> bool:
            # in a chunk after the one that saved the ghost's first block, not the last one
            if top + 1 < a and b < head and not reverted:
                assert w3.provider.make_request("evm_revert", [snap])["result"]  # type: ignore[arg-type]
                reverted.append(register_direct(world.reg, w3))
                mine(w3, 60)
            return False

        _flaky(reg, replace_chain)
        idx.sync()
        assert reverted
        with pytest.raises(RecordNotFound):
            warm(idx, world.cfg).resolve(ghost.qid)
        carol = reverted[0]
        idx.sync()
        assert warm(idx, world.cfg).resolve(carol.qid).identity_id == carol.identity_id
        assert_same_as_cold(idx, world)
    finally:
        if not reverted:
            w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
        idx.close()
