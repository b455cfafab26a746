"""Logs can be invented or held back by a node, storage cannot: names and wallets a lookup
shows, the identity a name resolves to, and (through the index) which devices are revoked
follow storage. An answer about another identity than the one asked for is refused."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.crypto import keccak
from web3 import Web3

from chatcore.directory import ChainDirectory
from chatcore.errors import UntrustedIdentity
from devnet.chain import rpc_url
from devnet.process import ManagedProcess
from discovery.eip712 import typed_signature
from discovery.errors import IdentityMismatch, RecordNotFound
from discovery.index import Index
from discovery.network import NetworkConfig
from discovery.records import ChainBinding
from discovery.registry import Event, IdentityState, Registry, name_commitment
from discovery.resolver import Resolver
from tests.discovery.rpc_proxy import RpcProxy, make_log
from tests.discovery.test_resolver import (
    Device,
    Ident,
    add_device,
    cold,
    network_for,
    register_direct,
    via,
)
from tests.fixtures.chain import Registries

NAME = "storage-says"


@dataclass
class Scene:
    cfg: NetworkConfig
    lying: NetworkConfig  # the same chain through a node that invents logs for mallory
    alice: Ident
    mallory: Ident
    wallet: str  # linked to alice


@pytest.fixture(scope="module")
def scene(anvil: ManagedProcess, w3: Web3, registries: Registries) -> Iterator[Scene]:
    cfg = network_for(anvil, registries)
    reg = Registry(cfg)
    alice, mallory = register_direct(reg, w3), register_direct(reg, w3)
    secret = os.urandom(32)
    reg.commit_name(
        alice.owner, name_commitment(NAME, alice.identity_id, alice.owner.address, secret)
    )
    reg.claim_name(alice.owner, NAME, alice.identity_id, secret)
    wallet = Account.create()
    dl = reg.latest_timestamp() + 600
    msg = {"id": alice.identity_id, "wallet": wallet.address, "nonce": 0, "deadline": dl}
    sig = typed_signature(wallet, "LinkWallet", msg, cfg.chain_id, cfg.identity_registry)
    reg.link_wallet(alice.owner, alice.identity_id, wallet.address, dl, sig)
    head = w3.eth.block_number
    with RpcProxy(rpc_url(anvil)) as proxy:
        proxy.inject_logs += [
            make_log(
                cfg.name_registry, "NameClaimed(bytes32,bytes32,string)",
                [mallory.identity_id, keccak(text=NAME)], abi_encode(["string"], [NAME]), head, 90,
            ),
            make_log(
                cfg.identity_registry, "WalletLinked(bytes32,address)",
                [mallory.identity_id, bytes(12) + bytes.fromhex(wallet.address[2:])], b"",
                head, 91,
            ),
            make_log(  # alice's owner account, too
                cfg.identity_registry, "WalletLinked(bytes32,address)",
                [mallory.identity_id, bytes(12) + bytes.fromhex(alice.owner.address[2:])], b"",
                head, 92,
            ),
        ]  # fmt: skip
        lying = dataclasses.replace(cfg, rpc_url=proxy.url)
        yield Scene(cfg, lying, alice, mallory, wallet.address)


@pytest.mark.devnet
def test_a_name_resolves_to_its_holder_in_storage_whatever_the_logs_say(
    scene: Scene, tmp_path: Path
) -> None:
    """The node invents a log giving alice's name to mallory: a cold lookup by name and
    the index that sending uses (``Index.checked``) both follow storage (``nameOwner``).
    (A cold lookup *by id* shows names as the logs say: it stays within its two calls.)"""
    assert cold(scene.lying).resolve(NAME).identity_id == scene.alice.identity_id
    idx = Index(tmp_path / "index.sqlite", Registry(scene.lying))
    try:
        idx.sync()
        r = Resolver(idx.checked(), scene.cfg.binding, scene.cfg.name_registry)
        assert r.resolve(NAME).identity_id == scene.alice.identity_id
        with pytest.raises(RecordNotFound):
            r.resolve("nobody-holds-this")
    finally:
        idx.close()


@pytest.mark.devnet
def test_an_address_resolves_to_its_identity_in_storage_whatever_the_logs_say(
    scene: Scene, tmp_path: Path
) -> None:
    """Review finding: the checked index (what ``send_text("0x<address>")`` uses) took
    address -> identity from WalletLinked logs alone, so a node inventing one made alice's
    wallet or owner address resolve to mallory. It asks storage (``identityOf``), once per
    address and sync."""
    idx = Index(tmp_path / "index.sqlite", Registry(scene.lying))
    try:
        idx.sync()
        # the index did take the node's word
        assert idx.by_account(scene.wallet).identity_id == scene.mallory.identity_id
        assert idx.by_account(scene.alice.owner.address).identity_id == scene.mallory.identity_id
        r = Resolver(idx.checked(), scene.cfg.binding, scene.cfg.name_registry)
        for addr in (scene.wallet, scene.alice.owner.address, scene.wallet.lower()):
            assert r.resolve(addr).identity_id == scene.alice.identity_id
        assert r.resolve(scene.mallory.owner.address).identity_id == scene.mallory.identity_id
        with pytest.raises(RecordNotFound):
            r.resolve(Account.create().address)
    finally:
        idx.close()


@pytest.mark.devnet
def test_a_name_shows_only_for_its_holder_in_storage(scene: Scene, tmp_path: Path) -> None:
    """Review finding: the name shown for a peer (and remembered) came from NameClaimed
    logs, so a node inventing one made mallory show as alice's name; and the re-check of
    remembered names asked the logs who holds a name. Both follow ``nameOwner`` now."""
    idx = Index(tmp_path / "index.sqlite", Registry(scene.lying))
    try:
        idx.sync()
        assert idx.indexed_holder(NAME) == scene.mallory.identity_id  # the logs say so
        directory = ChainDirectory(
            Resolver(idx.checked(), scene.cfg.binding, scene.cfg.name_registry)
        )
        assert directory.peer(scene.alice.identity_id).display == NAME
        assert directory.peer(scene.mallory.identity_id).display is None
        assert directory.lookup(NAME).identity_id == scene.alice.identity_id
    finally:
        idx.close()
    # a client that remembered mallory under that name (shown before) drops it on sync
    from chatcore.client import Client
    from tests.discovery.test_resolver import PASSPHRASE

    home = tmp_path / "observer"
    Client.init(home, PASSPHRASE, scene.cfg)[0].close()
    client = Client.open(home, PASSPHRASE, scene.lying)
    try:
        client.store.set_peer_display(scene.mallory.identity_id, NAME, client.clock_ms())
        client.store.set_peer_display(scene.alice.identity_id, NAME, client.clock_ms())
        client.sync_directory()
        assert client.store.peer_display(scene.mallory.identity_id) is None
        assert client.store.peer_display(scene.alice.identity_id) == NAME
        assert client.display(scene.mallory.identity_id) != NAME
    finally:
        client.close()


@pytest.mark.devnet
def test_a_revocation_the_node_holds_back_still_counts(
    anvil: ManagedProcess, w3: Web3, chain_network: NetworkConfig, tmp_path: Path
) -> None:
    reg = Registry(chain_network)
    victim = register_direct(reg, w3)
    kept = add_device(reg, victim)
    stolen = victim.devices[0]
    reg.revoke_installation(victim.owner, victim.identity_id, stolen.pub)
    with RpcProxy(rpc_url(anvil)) as proxy:
        proxy.drop_topic0.add(keccak(text="InstallationRevoked(bytes32,bytes32)"))
        proxy.inject_logs.append(  # and an identity storage never heard of
            make_log(
                chain_network.identity_registry, "IdentityRegistered(bytes32,address,address)",
                [GHOST, bytes(12) + b"\x44" * 20], abi_encode(["address"], ["0x" + "00" * 20]),
                w3.eth.block_number, 77,
            )
        )  # fmt: skip
        idx = Index(tmp_path / "index.sqlite", Registry(via(proxy, chain_network)))
        try:
            idx.sync()
            assert idx.count_identities() >= 2  # the index did take the node's word
            r = Resolver(idx.checked(), chain_network.binding, chain_network.name_registry)
            got = r.resolve(victim.qid)
            assert got.revoked == (stolen.pub,)
            assert [i.installation_id for i in got.installations] == [kept.pub]
            directory = ChainDirectory(r)
            with pytest.raises(UntrustedIdentity, match="revoked"):
                directory.check_installation(victim.identity_id, stolen.pub, b"\x00" * 32)
            with pytest.raises(RecordNotFound):
                r.resolve("0x" + GHOST.hex())
        finally:
            idx.close()


GHOST = b"\x0f" * 32


class _OtherIdentity:
    """A source whose node answers every id query about one fixed identity."""

    def __init__(self, state: IdentityState) -> None:
        self.state = state

    def by_id(self, identity_id: bytes) -> IdentityState:
        return self.state

    def by_account(self, address: str) -> IdentityState:
        return self.state

    def by_name(self, name: str) -> IdentityState:
        return self.state

    def events(self, state: IdentityState) -> list[Event]:
        return []


def test_an_answer_about_another_identity_is_refused() -> None:
    other = IdentityState(b"\x02" * 32, "0x" + "11" * 20, "0x" + "00" * 20, 1, ())
    r = Resolver(_OtherIdentity(other), ChainBinding(31337, b"\x22" * 20), "0x" + "33" * 20)
    asked = b"\x01" * 32
    with pytest.raises(IdentityMismatch, match="answered about"):
        r.resolve_id(asked)
    with pytest.raises(IdentityMismatch):
        r.resolve("0x" + asked.hex())


@pytest.mark.devnet
def test_a_device_the_node_invents_is_not_used(
    anvil: ManagedProcess, w3: Web3, chain_network: NetworkConfig, tmp_path: Path
) -> None:
    """A node that invents InstallationAdded and BundlePublished logs for someone's identity
    (a device of its own, its bundle well signed and bound to this chain): storage does not
    list the device, so the checked index leaves it out and nothing is sent to it."""
    reg = Registry(chain_network)
    victim = register_direct(reg, w3)
    fake = Device.new()
    bundle = fake.bundle(chain_network, victim.identity_id)
    head = w3.eth.block_number
    with RpcProxy(rpc_url(anvil)) as proxy:
        proxy.inject_logs += [
            make_log(
                chain_network.identity_registry, "InstallationAdded(bytes32,bytes32)",
                [victim.identity_id, fake.pub], b"", head, 80,
            ),
            make_log(
                chain_network.identity_registry, "BundlePublished(bytes32,bytes32,bytes)",
                [victim.identity_id, fake.pub], abi_encode(["bytes"], [bundle.encode()]),
                head, 81,
            ),
        ]  # fmt: skip
        idx = Index(tmp_path / "index.sqlite", Registry(via(proxy, chain_network)))
        try:
            idx.sync()
            listed = [i.installation_id for i in idx.by_id(victim.identity_id).installations]
            assert fake.pub in listed  # the index did take the node's word
            r = Resolver(idx.checked(), chain_network.binding, chain_network.name_registry)
            got = r.resolve(victim.qid)
            assert [i.installation_id for i in got.installations] == [victim.devices[0].pub]
            with pytest.raises(UntrustedIdentity):
                ChainDirectory(r).check_installation(victim.identity_id, fake.pub, bundle.ik_x25519)
        finally:
            idx.close()
