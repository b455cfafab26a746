"""Claiming a name survives a watcher who copies the pending commitment into an earlier block
(NameRegistry.commit then reverts CommitmentExists for us), and waits out a longer commit
window instead of claiming too early."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from devnet.chain import deploy, dev_account, mine
from discovery.errors import ChainUnavailable
from discovery.network import NetworkConfig
from discovery.registry import Registry, name_commitment
from tests.discovery.test_resolver import (
    PASSPHRASE,
    init_client,
    new_owner,
    register_direct,
)

pytestmark = pytest.mark.devnet


def test_a_copied_commitment_does_not_stop_the_claim(
    chain_network: NetworkConfig, w3: Web3, tmp_path: Path
) -> None:
    client = init_client(tmp_path / "alice", chain_network, None)
    try:
        watcher = new_owner(w3)
        real_commit = client.registry.commit_name
        copied: list[bytes] = []

        def front_run(owner: LocalAccount, commitment: bytes) -> object:
            real_commit(watcher, commitment)  # the copy lands first
            copied.append(commitment)
            return real_commit(owner, commitment)

        client.registry.commit_name = front_run  # type: ignore[method-assign]
        client.claim_name(PASSPHRASE, "copied-commit")
        assert copied
        assert client.registry.name_owner("copied-commit") == client.identity_id
        assert client.registry.commitment_block(copied[0]) == 0  # used by our claim
    finally:
        client.close()


@pytest.fixture
def slow_cfg(chain_network: NetworkConfig, w3: Web3) -> NetworkConfig:
    """The same identities, names with a 3..20 block commit window."""
    addr, _ = deploy(w3, dev_account(0), "NameRegistry", chain_network.identity_registry, 3, 20)
    return dataclasses.replace(chain_network, name_registry=addr)


@pytest.fixture
def miner(w3: Web3) -> Iterator[threading.Event]:
    """Mines a block every 50 ms until the test ends."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.05):
            mine(w3)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield stop
    finally:
        stop.set()
        t.join(timeout=5)


def _committed(reg: Registry, w3: Web3, name: str) -> tuple[LocalAccount, bytes, bytes, bytes]:
    ident = register_direct(reg, w3)
    secret = b"\x07" * 32
    c = name_commitment(name, ident.identity_id, ident.owner.address, secret)
    reg.commit_name(ident.owner, c)
    return ident.owner, ident.identity_id, secret, c


def test_the_claim_waits_for_the_commit_window(
    slow_cfg: NetworkConfig, w3: Web3, miner: threading.Event
) -> None:
    reg = Registry(slow_cfg)
    owner, ident, secret, c = _committed(reg, w3, "slow-name")
    made = reg.commitment_block(c)
    reg.wait_for_commitment(c, poll_s=0.02)
    assert reg.block_number() + 1 >= made + 3
    reg.claim_name(owner, "slow-name", ident, secret)
    assert reg.name_owner("slow-name") == ident


def test_a_chain_that_makes_no_blocks_is_reported(slow_cfg: NetworkConfig, w3: Web3) -> None:
    reg = Registry(slow_cfg)
    _owner, _ident, _secret, c = _committed(reg, w3, "stuck-name")
    with pytest.raises(ChainUnavailable, match="no new block"):
        reg.wait_for_commitment(c, stall_s=0.3, poll_s=0.05)
