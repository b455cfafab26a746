"""Recovery by phrase acts on the identity the phrase really protects: nobody can name
someone else's recovery account for a decoy (the registry wants the recovery's consent), an
index entry storage does not confirm is ignored, and a phrase that is the recovery of several
identities is refused rather than guessed at."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chatcore.identity import (
    AmbiguousRecovery,
    identity_for_phrase,
    restore,
    revoke_with_phrase,
)
from devnet.chain import rpc_url
from devnet.process import ManagedProcess
from discovery.errors import ConsentMissing, RegistryReverted
from discovery.network import NetworkConfig
from discovery.registry import Registry
from tests.discovery.rpc_proxy import RpcProxy, make_log
from tests.discovery.test_resolver import PASSPHRASE, register_direct

pytestmark = pytest.mark.devnet


@pytest.fixture
def proxy(anvil: ManagedProcess) -> Iterator[RpcProxy]:
    with RpcProxy(rpc_url(anvil)) as p:
        yield p


@pytest.fixture
def reg(chain_network: NetworkConfig) -> Registry:
    return Registry(chain_network)


@pytest.fixture
def recovery() -> tuple[LocalAccount, str]:
    """A fresh recovery account and its phrase."""
    Account.enable_unaudited_hdwallet_features()
    acct, phrase = Account.create_with_mnemonic()
    return acct, phrase


def _installations(reg: Registry, identity_id: bytes) -> list[tuple[bytes, bool]]:
    return [(i.installation_id, i.revoked) for i in reg.get_identity(identity_id).installations]


def test_a_decoy_cannot_name_the_victims_recovery(
    chain_network: NetworkConfig,
    reg: Registry,
    w3: Web3,
    recovery: tuple[LocalAccount, str],
    tmp_path: Path,
) -> None:
    rec, phrase = recovery
    victim = register_direct(reg, w3, recovery=rec)
    # the recovery address is public (events, storage); its key is not. Our client will not
    # try without a consent, and the registry refuses a call that skips or forges one
    with pytest.raises(ConsentMissing):
        register_direct(reg, w3, recovery=rec.address)
    attacker = register_direct(reg, w3)
    with pytest.raises(ConsentMissing):
        reg.set_recovery(attacker.owner, attacker.identity_id, rec.address)
    dl = reg.latest_timestamp() + 600
    forged = reg.recovery_consent(Account.create(), attacker.identity_id)[1]
    for sig in (b"", forged):
        with pytest.raises(RegistryReverted, match="InvalidSignature"):
            fn = reg.identity.functions.setRecovery(attacker.identity_id, rec.address, dl, sig)
            reg.transact(attacker.owner, fn, "setRecovery")
    assert reg.get_identity(attacker.identity_id).recovery != rec.address

    _acct, state = identity_for_phrase(chain_network, phrase)
    assert state.identity_id == victim.identity_id
    client, res = restore(tmp_path / "home", PASSPHRASE, chain_network, phrase)
    client.close()
    assert res.identity_id == victim.identity_id
    assert res.revoked == (victim.devices[0].pub,)
    after = reg.get_identity(victim.identity_id)
    assert after.owner == res.owner != victim.owner.address
    assert _installations(reg, victim.identity_id) == [
        (victim.devices[0].pub, True),
        (res.installation_id, False),
    ]


def test_an_index_claim_storage_does_not_confirm_is_ignored(
    chain_network: NetworkConfig, reg: Registry, w3: Web3, recovery: tuple[LocalAccount, str],
    proxy: RpcProxy,
) -> None:  # fmt: skip
    """A node that invents a RecoveryChanged naming the phrase's account for a decoy."""
    rec, phrase = recovery
    victim = register_direct(reg, w3, recovery=rec)
    decoy = register_direct(reg, w3)
    proxy.inject_logs.append(
        make_log(
            chain_network.identity_registry,
            "RecoveryChanged(bytes32,address)",
            [decoy.identity_id],
            abi_encode(["address"], [rec.address]),
            w3.eth.block_number,
            0x63,
        )
    )
    lying = dataclasses.replace(chain_network, rpc_url=proxy.url)
    _acct, state = identity_for_phrase(lying, phrase)
    assert state.identity_id == victim.identity_id


def test_a_phrase_that_recovers_two_identities_is_refused(
    chain_network: NetworkConfig,
    reg: Registry,
    w3: Web3,
    recovery: tuple[LocalAccount, str],
    tmp_path: Path,
) -> None:
    rec, phrase = recovery
    first = register_direct(reg, w3, recovery=rec)
    second = register_direct(reg, w3, recovery=rec)  # the phrase's holder agreed twice
    before = {i.identity_id: _installations(reg, i.identity_id) for i in (first, second)}
    with pytest.raises(AmbiguousRecovery, match="2 identities have this recovery phrase"):
        identity_for_phrase(chain_network, phrase)
    with pytest.raises(AmbiguousRecovery):
        restore(tmp_path / "home", PASSPHRASE, chain_network, phrase)
    with pytest.raises(AmbiguousRecovery):
        revoke_with_phrase(chain_network, phrase, "0x" + first.devices[0].pub.hex())
    assert not (tmp_path / "home").exists()
    # nothing happened on chain
    for ident in (first, second):
        assert _installations(reg, ident.identity_id) == before[ident.identity_id]
        assert reg.get_identity(ident.identity_id).owner == ident.owner.address
