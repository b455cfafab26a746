"""discovery.resolver against a real anvil: every query kind, the RPC budget of a cold lookup,
and every way a record can be rejected (revoked, expired, forged, foreign, stale, tampered).

One deployment (the module-scoped ``registries`` fixture) holds a small world of identities
built once; tests only read it, except where they build their own identity.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from chatcore.client import Client
from devnet.chain import rpc_url, set_balance
from devnet.process import ManagedProcess, free_port
from discovery.errors import (
    BadSignature,
    ChainUnavailable,
    ExpiredPrekey,
    HashMismatch,
    InvalidQuery,
    MalformedRecord,
    RecordNotFound,
    RegistryReverted,
    RevokedInstallation,
    StaleRecord,
    WrongChain,
)
from discovery.network import NetworkConfig
from discovery.records import IntroBundle, PqKeyRecord
from discovery.registry import Registry, identity_id_for
from discovery.resolver import ChainSource, ResolvedIdentity, Resolver
from tests.discovery.rpc_proxy import RpcProxy
from tests.fixtures.chain import Registries, network_for

pytestmark = pytest.mark.devnet

PASSPHRASE = "correct horse"
BUNDLE_TOPIC = keccak(text="BundlePublished(bytes32,bytes32,bytes)")
PQ_TOPIC = keccak(text="PqKeyPublished(bytes32,bytes32,bytes)")


# --- helpers (also used by test_index) ----------------------------------------------------------
def cold(cfg: NetworkConfig, clock: Callable[[], float] = time.time) -> Resolver:
    return Resolver(ChainSource(Registry(cfg)), cfg.binding, cfg.name_registry, clock=clock)


@dataclass
class Device:
    seed: bytes
    pub: bytes

    @classmethod
    def new(cls) -> Device:
        seed = os.urandom(32)
        pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        return cls(seed, pub)

    def bundle(
        self,
        cfg: NetworkConfig,
        identity_id: bytes,
        seq: int = 1,
        ttl: int = 3600,
        chain_id: int | None = None,
        now: int | None = None,
    ) -> IntroBundle:
        now = int(time.time()) if now is None else now
        return IntroBundle(
            chain_id=cfg.chain_id if chain_id is None else chain_id,
            registry=cfg.binding.registry,
            identity_id=identity_id,
            installation_id=self.pub,
            ik_x25519=os.urandom(32),
            spk_id=seq,
            spk_pub=os.urandom(32),
            spk_not_after=now + ttl,
            seq=seq,
            issued_at=now,
        ).signed(self.seed)


@dataclass
class Ident:
    """An identity registered directly through Registry (no Client)."""

    owner: LocalAccount
    identity_id: bytes
    devices: list[Device]
    bundles: list[IntroBundle]

    @property
    def qid(self) -> str:
        return "0x" + self.identity_id.hex()


def new_owner(w3: Web3) -> LocalAccount:
    acct: LocalAccount = Account.create()
    set_balance(w3, acct.address, 10**19)
    return acct


def register_direct(
    reg: Registry,
    w3: Web3,
    first: IntroBundle | None = None,
    recovery: LocalAccount | str | None = None,
    **bundle_kw: object,
) -> Ident:
    """Register an identity with one device. ``first``: publish these bytes' fields instead
    (re-signed for the new identity) - use ``bundle_kw`` to shape the first bundle.
    ``recovery``: see Registry.register (default: a fresh account)."""
    owner = new_owner(w3)
    salt = os.urandom(32)
    iid = identity_id_for(owner.address, salt)
    dev = Device.new()
    b = dev.bundle(reg.config, iid, **bundle_kw)  # type: ignore[arg-type]
    reg.register(owner, salt, recovery or Account.create(), dev.pub, b.encode())
    return Ident(owner, iid, [dev], [b])


def add_device(reg: Registry, ident: Ident, **bundle_kw: object) -> Device:
    dev = Device.new()
    b = dev.bundle(reg.config, ident.identity_id, **bundle_kw)  # type: ignore[arg-type]
    reg.add_installation(ident.owner, ident.identity_id, dev.pub, b.encode())
    ident.devices.append(dev)
    ident.bundles.append(b)
    return dev


def init_client(home: Path, cfg: NetworkConfig, name: str | None, **kw: object) -> Client:
    client, _ = Client.init(home, PASSPHRASE, cfg, name, **kw)  # type: ignore[arg-type]
    return client


# --- the world -------------------------------------------------------------------------------
@dataclass
class World:
    cfg: NetworkConfig
    reg: Registry
    alice_id: bytes
    alice_owner: str
    alice_inst: bytes
    alice_text: str
    multi: Ident  # device 0 revoked, device 1 active
    all_revoked: Ident
    bad_sig: Ident
    wrong_chain: Ident
    stale: Ident
    short: Ident  # prekey valid for 60 s
    short_ttl_client: bytes  # identity id of a Client.init(prekey_ttl_s=30)


@pytest.fixture(scope="module")
def world(
    anvil: ManagedProcess,
    w3: Web3,
    registries: Registries,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    cfg = network_for(anvil, registries)
    reg = Registry(cfg)
    tmp = tmp_path_factory.mktemp("resolver")

    alice = init_client(tmp / "alice", cfg, "alice")
    alice_id, alice_inst = alice.identity_id, alice.installation_id
    alice_owner = reg.get_identity(alice_id).owner
    alice_text = cold(cfg).resolve("alice").installations[0].bundle.to_text()
    alice.close()

    carol = init_client(tmp / "carol", cfg, None, prekey_ttl_s=30)
    carol_id = carol.identity_id
    carol.close()

    multi = register_direct(reg, w3)
    add_device(reg, multi)
    reg.revoke_installation(multi.owner, multi.identity_id, multi.devices[0].pub)

    all_revoked = register_direct(reg, w3)
    reg.revoke_installation(all_revoked.owner, all_revoked.identity_id, all_revoked.devices[0].pub)

    bad_sig = register_direct(reg, w3)
    good2 = bad_sig.devices[0].bundle(cfg, bad_sig.identity_id, seq=2)
    sig = bytearray(good2.signature)
    sig[10] ^= 0x01
    forged = dataclasses.replace(good2, signature=bytes(sig))
    reg.publish_bundle(bad_sig.owner, bad_sig.identity_id, bad_sig.devices[0].pub, forged.encode())
    bad_sig.bundles.append(forged)

    wrong_chain = register_direct(reg, w3, chain_id=999)

    stale = register_direct(reg, w3)
    s2 = stale.devices[0].bundle(cfg, stale.identity_id, seq=2)
    reg.publish_bundle(stale.owner, stale.identity_id, stale.devices[0].pub, s2.encode())
    # replay the seq-1 bytes: the chain now stores the hash of an older record
    reg.publish_bundle(
        stale.owner, stale.identity_id, stale.devices[0].pub, stale.bundles[0].encode()
    )
    stale.bundles.append(s2)

    short = register_direct(reg, w3, ttl=60)

    yield World(
        cfg,
        reg,
        alice_id,
        alice_owner,
        alice_inst,
        alice_text,
        multi,
        all_revoked,
        bad_sig,
        wrong_chain,
        stale,
        short,
        carol_id,
    )


@pytest.fixture
def proxy(anvil: ManagedProcess) -> Iterator[RpcProxy]:
    with RpcProxy(rpc_url(anvil)) as p:
        yield p


def via(proxy: RpcProxy, cfg: NetworkConfig) -> NetworkConfig:
    return dataclasses.replace(cfg, rpc_url=proxy.url)


# --- resolving ---------------------------------------------------------------------------------
def test_every_query_kind_resolves_to_the_same_identity(world: World) -> None:
    r = cold(world.cfg)
    by_id = r.resolve("0x" + world.alice_id.hex())
    assert isinstance(by_id, ResolvedIdentity)
    assert by_id.identity_id == world.alice_id
    assert by_id.owner == world.alice_owner
    assert by_id.names == ("alice",)
    assert [i.installation_id for i in by_id.installations] == [world.alice_inst]
    inst = by_id.installations[0]
    assert inst.bundle.seq == 1
    assert inst.bundle.identity_id == world.alice_id
    assert inst.pq is not None and inst.pq.installation_id == world.alice_inst
    assert by_id.revoked == () and by_id.rejected == ()

    assert r.resolve("0x" + world.alice_id.hex().upper()) == by_id
    assert r.resolve(world.alice_owner) == by_id
    assert r.resolve(world.alice_owner.lower()) == by_id
    assert r.resolve("alice") == by_id
    assert r.resolve("@Alice") == by_id
    assert r.resolve(world.alice_text) == by_id
    assert r.resolve_id(world.alice_id) == by_id


def test_history_lists_key_changes(world: World) -> None:
    h = cold(world.cfg).resolve("alice").history
    events = [e.event for e in h]
    assert events[:3] == ["IdentityRegistered", "InstallationAdded", "BundlePublished"]
    assert "PqKeyPublished" in events and "NameClaimed" in events
    assert [(e.block_number, e.log_index) for e in h] == sorted(
        (e.block_number, e.log_index) for e in h
    )


def test_history_entries_are_audited_against_the_verified_state(world: World) -> None:
    r = cold(world.cfg)
    assert all(e.verified for e in r.resolve("alice").history)
    # a node (or an old, badly signed publish) adds a bundle event that does not verify:
    # the identity still resolves from the genuine record; that entry is flagged, with a reason
    src = r.source
    assert isinstance(src, ChainSource)
    state = src.by_name("alice")
    events = src.events(state)
    genuine = next(e for e in events if e.name == "BundlePublished")
    raw = bytearray(genuine.args["bundle"])
    raw[-1] ^= 1
    forged = dataclasses.replace(
        genuine,
        log_index=genuine.log_index + 100,
        args={**genuine.args, "bundle": bytes(raw)},
    )
    audited = r.verify(state, [*events, forged]).history
    flagged = [e for e in audited if not e.verified]
    assert len(flagged) == 1 and flagged[0].log_index == forged.log_index
    assert "signature" in flagged[0].note
    # an owner change that storage contradicts is flagged too
    fake_owner = dataclasses.replace(
        genuine,
        name="OwnerChanged",
        log_index=genuine.log_index + 101,
        args={"id": state.identity_id, "previousOwner": state.owner, "newOwner": "0x" + "11" * 20},
    )
    audited = r.verify(state, [*events, fake_owner]).history
    assert [e.note for e in audited if not e.verified] == ["storage names another owner"]


@pytest.mark.parametrize("kind", ["id", "account", "name"])
def test_cold_lookup_costs_at_most_two_rpc_calls(world: World, proxy: RpcProxy, kind: str) -> None:
    query = {
        "id": "0x" + world.alice_id.hex(),
        "account": world.alice_owner,
        "name": "alice",
    }[kind]
    resolver = cold(via(proxy, world.cfg))
    proxy.reset()
    r = resolver.resolve(query)
    assert r.identity_id == world.alice_id and r.names == ("alice",)
    assert proxy.count <= 2, proxy.methods
    assert sorted(proxy.methods) == ["eth_call", "eth_getLogs"]


def test_cold_lookup_of_unknown_costs_one_call(world: World, proxy: RpcProxy) -> None:
    resolver = cold(via(proxy, world.cfg))
    proxy.reset()
    with pytest.raises(RecordNotFound):
        resolver.resolve("nobody_here")
    assert proxy.methods == ["eth_call"]


@pytest.mark.parametrize(
    "query",
    [
        "0x" + "ab" * 32,
        "0x" + "cd" * 20,
        "nobody_here",
        "@zzz",
    ],
)
def test_unknown_is_record_not_found(world: World, query: str) -> None:
    with pytest.raises(RecordNotFound):
        cold(world.cfg).resolve(query)


def test_bundle_text_of_unregistered_identity_is_not_found(world: World) -> None:
    dev = Device.new()
    text = dev.bundle(world.cfg, keccak(b"never registered")).to_text()
    with pytest.raises(RecordNotFound):
        cold(world.cfg).resolve(text)


@pytest.mark.parametrize("query", ["0x1234", "a", "-abc", "x" * 33, "has space"])
def test_malformed_queries(world: World, query: str) -> None:
    with pytest.raises(InvalidQuery):  # a typo, not a failed verification
        cold(world.cfg).resolve(query)
    with pytest.raises(MalformedRecord):
        cold(world.cfg).resolve("logos_chatintro_1_!!")


# --- rejections -------------------------------------------------------------------------------
def test_revoked_installation_is_excluded(world: World) -> None:
    m = world.multi
    r = cold(world.cfg).resolve(m.qid)
    assert [i.installation_id for i in r.installations] == [m.devices[1].pub]
    assert r.revoked == (m.devices[0].pub,)
    # the active device's text still resolves; the revoked one's is refused
    assert cold(world.cfg).resolve(m.bundles[1].to_text()).identity_id == m.identity_id
    with pytest.raises(RevokedInstallation):
        cold(world.cfg).resolve(m.bundles[0].to_text())


def test_identity_with_every_installation_revoked(world: World) -> None:
    with pytest.raises(RevokedInstallation):
        cold(world.cfg).resolve(world.all_revoked.qid)
    with pytest.raises(RevokedInstallation):
        cold(world.cfg).resolve(world.all_revoked.bundles[0].to_text())
    # an audit of the key history still works: no installation, every change listed
    audit = cold(world.cfg).resolve(world.all_revoked.qid, require_active=False)
    assert audit.installations == () and len(audit.revoked) >= 1
    assert "InstallationRevoked" in [h.event for h in audit.history]


def test_expired_prekey(world: World) -> None:
    s = world.short
    now = time.time()
    assert cold(world.cfg, clock=lambda: now).resolve(s.qid).identity_id == s.identity_id
    later = cold(world.cfg, clock=lambda: now + 120)
    with pytest.raises(ExpiredPrekey):
        later.resolve(s.qid)
    with pytest.raises(ExpiredPrekey):
        later.resolve(s.bundles[0].to_text())
    # a sender check does not need a fresh prekey
    assert later.resolve_id(s.identity_id, fresh_prekeys=False).identity_id == s.identity_id


def test_expired_prekey_after_client_publish_with_short_ttl(world: World) -> None:
    qid = "0x" + world.short_ttl_client.hex()
    assert cold(world.cfg).resolve(qid).installations[0].bundle.seq == 1
    with pytest.raises(ExpiredPrekey):
        cold(world.cfg, clock=lambda: time.time() + 31).resolve(qid)


def test_the_directory_writes_to_an_expired_prekey_device_only_over_a_session(
    world: World,
) -> None:
    """A device offline past its prekey's lifetime was left out of every fan-out, though
    we hold a session with it: it silently missed messages (and retransmission took it for
    revoked). The prekey's freshness guards new sessions only."""
    from chatcore.directory import ChainDirectory
    from chatcore.errors import UnknownContact

    ident = world.short_ttl_client
    later = cold(world.cfg, clock=lambda: time.time() + 31)
    (inst,) = cold(world.cfg).resolve("0x" + ident.hex()).installations
    with_session = ChainDirectory(later, has_session=lambda i: i == inst.installation_id)
    assert [k.installation_id for k in with_session.peer(ident).installations] == [
        inst.installation_id
    ]
    assert [k.installation_id for k in with_session.own_devices(ident)] == [inst.installation_id]
    # no session: no new one on an expired prekey
    without = ChainDirectory(later, has_session=lambda i: False)
    with pytest.raises(ExpiredPrekey):
        without.peer(ident)
    assert without.own_devices(ident) == ()
    with pytest.raises((ExpiredPrekey, UnknownContact)):
        ChainDirectory(later).peer(ident)


def test_bad_signature(world: World) -> None:
    b = world.bad_sig
    with pytest.raises(BadSignature):
        cold(world.cfg).resolve(b.qid)
    with pytest.raises(BadSignature):
        cold(world.cfg).resolve(b.bundles[1].to_text())
    # the older, well-signed seq-1 text is not accepted either: the chain's record is bad
    with pytest.raises(BadSignature):
        cold(world.cfg).resolve(b.bundles[0].to_text())


def test_bundle_bound_to_another_chain(world: World) -> None:
    w = world.wrong_chain
    with pytest.raises(WrongChain):
        cold(world.cfg).resolve(w.qid)
    with pytest.raises(WrongChain):
        cold(world.cfg).resolve(w.bundles[0].to_text())


def test_stale_republished_bundle(world: World) -> None:
    s = world.stale
    with pytest.raises(StaleRecord):
        cold(world.cfg).resolve(s.qid)


def test_stale_republished_pq_key(world: World, w3: Web3) -> None:
    ident = register_direct(world.reg, w3)
    dev = ident.devices[0]

    def pq(key_id: int) -> PqKeyRecord:
        now = int(time.time())
        return PqKeyRecord(
            world.cfg.chain_id, world.cfg.binding.registry, ident.identity_id, dev.pub, key_id,
            now + 86400, now, MLKEM768PrivateKey.generate().public_key().public_bytes_raw(),
        ).signed(dev.seed)  # fmt: skip

    def publish(rec: PqKeyRecord) -> None:
        world.reg.publish_pq_key(ident.owner, ident.identity_id, dev.pub, rec.encode())

    k1, k2 = pq(1), pq(2)
    publish(k1)
    publish(k2)
    assert cold(world.cfg).resolve(ident.qid).installations[0].pq == k2
    publish(k1)  # the old, validly signed record again: storage now names it
    with pytest.raises(StaleRecord, match="post-quantum key 1"):
        cold(world.cfg).resolve(ident.qid)
    publish(k2)
    assert cold(world.cfg).resolve(ident.qid).installations[0].pq == k2


def test_bundle_text_newer_than_chain_is_rejected(world: World) -> None:
    # a well-signed bundle text that was never published (seq 5 > the chain's seq 1)
    m = world.multi
    newer = m.devices[1].bundle(world.cfg, m.identity_id, seq=5)
    with pytest.raises(HashMismatch):
        cold(world.cfg).resolve(newer.to_text())


@pytest.mark.parametrize("topic", [BUNDLE_TOPIC, PQ_TOPIC], ids=["bundle", "pq-key"])
def test_tampering_rpc_node_is_hash_mismatch(world: World, proxy: RpcProxy, topic: bytes) -> None:
    resolver = cold(via(proxy, world.cfg))
    assert resolver.resolve("alice").identity_id == world.alice_id  # honest proxy: fine
    proxy.tamper_logs(topic)
    for q in ("alice", "0x" + world.alice_id.hex(), world.alice_owner):
        with pytest.raises(HashMismatch):
            resolver.resolve(q)
    assert proxy.tampered >= 3
    proxy.tamper_logs(None)
    assert resolver.resolve("alice").identity_id == world.alice_id


def test_events_about_other_identities_are_ignored(world: World, proxy: RpcProxy) -> None:
    """A node that answers eth_getLogs with everyone's events must not lend alice's name (or
    anyone's devices or history) to another identity."""
    honest = cold(world.cfg).resolve(world.multi.qid)
    proxy.widen_logs = True
    r = cold(via(proxy, world.cfg)).resolve(world.multi.qid)
    assert r.names == () and honest.names == ()
    assert r == honest
    assert cold(via(proxy, world.cfg)).resolve("alice").names == ("alice",)


def test_bundle_text_bound_to_another_chain_for_a_valid_identity(world: World) -> None:
    m = world.multi
    foreign = m.devices[1].bundle(world.cfg, m.identity_id, seq=1, chain_id=999)
    assert cold(world.cfg).resolve(m.qid).installations  # the identity itself is fine
    with pytest.raises(WrongChain):
        cold(world.cfg).resolve(foreign.to_text())


def test_chain_unreachable_is_chain_unavailable_quickly(world: World) -> None:
    dead = dataclasses.replace(world.cfg, rpc_url=f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    with pytest.raises(ChainUnavailable):
        cold(dead).resolve("alice")
    with pytest.raises(ChainUnavailable):
        Registry(dead).check_chain()
    with pytest.raises(ChainUnavailable):
        Registry(dead).block_number()
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("reply", [b"hello", b"[]"], ids=["not-json", "json-array"])
def test_node_answering_nonsense_is_chain_unavailable(
    world: World, proxy: RpcProxy, reply: bytes
) -> None:
    proxy.reply_override = reply
    with pytest.raises(ChainUnavailable):
        cold(via(proxy, world.cfg)).resolve("0x" + world.alice_id.hex())


def test_network_file_with_another_chain_id(world: World) -> None:
    Registry(world.cfg).check_chain()
    wrong = dataclasses.replace(world.cfg, chain_id=999)
    with pytest.raises(WrongChain):
        Registry(wrong).check_chain()
    # and a resolver bound to chain 999 rejects this chain's bundles
    with pytest.raises(WrongChain):
        cold(wrong).resolve("alice")


def test_registry_maps_reverts(world: World) -> None:
    m = world.multi
    revoked = m.devices[0]
    with pytest.raises(RegistryReverted) as ei:
        world.reg.publish_bundle(
            m.owner,
            m.identity_id,
            revoked.pub,
            revoked.bundle(world.cfg, m.identity_id, seq=9).encode(),
        )
    assert ei.value.reason == "InstallationNotActive"
    stranger = new_owner(Web3(Web3.HTTPProvider(world.cfg.rpc_url)))
    with pytest.raises(RegistryReverted) as ei:
        world.reg.revoke_installation(stranger, m.identity_id, m.devices[1].pub)
    assert ei.value.reason == "NotAuthorized"


def test_a_prekey_near_its_end_is_refreshed(world: World, tmp_path: Path) -> None:
    """Review finding: only a manual 'publish' replaced the signed prekey, so two weeks on
    nobody could start a conversation with a device. ``refresh_prekey_if_due`` (the CLI's
    'sync' and 'chat' call it) publishes a fresh one once a quarter of its life is left."""
    client = init_client(tmp_path / "fresh", world.cfg, None, prekey_ttl_s=400)
    try:
        assert not client.prekey_due()
        assert client.refresh_prekey_if_due(PASSPHRASE) is None
        real = client.clock_ms
        client.clock_ms = lambda: real() + 320_000  # type: ignore[method-assign]
        assert client.prekey_due()
        res = client.refresh_prekey_if_due(PASSPHRASE)
        assert res is not None and res.seq == 2
        assert not client.prekey_due()
        (inst,) = cold(world.cfg).resolve("0x" + client.identity_id.hex()).installations
        assert inst.bundle.seq == 2 and inst.bundle.spk_id == res.prekey_id
        # the renewed prekey lives as long as the one before (400 s), not the default
        assert 398 <= res.prekey_expires - client.clock_ms() // 1000 <= 400
        # a renewal that does not reach the chain is tried again at the next call
        client.clock_ms = lambda: real() + 640_000  # type: ignore[method-assign]
        assert client.prekey_due()
        publish = client.registry.publish_bundle

        def no_funds(*args: object, **kwargs: object) -> object:
            raise ValueError("insufficient funds for gas")

        client.registry.publish_bundle = no_funds  # type: ignore[method-assign]
        with pytest.raises(ValueError, match="insufficient funds"):
            client.refresh_prekey_if_due(PASSPHRASE)
        assert client.prekey_due()  # still: the chain has the old one
        client.registry.publish_bundle = publish  # type: ignore[method-assign]
        again = client.refresh_prekey_if_due(PASSPHRASE)
        assert again is not None and again.seq == 3 and not client.prekey_due()
    finally:
        client.close()


_REFRESH_KILLED = """
import os, signal, sys, time
from pathlib import Path
from chatcore.client import Client
from discovery.network import NetworkConfig

client = Client.open(sys.argv[1], sys.argv[2], NetworkConfig.load(Path(sys.argv[3])))
client.clock_ms = lambda: int(time.time() * 1000) + int(sys.argv[4])
client.pq_due = lambda: False  # the signed prekey's refresh alone
assert client.prekey_due()


def killed(*args, **kwargs):  # the process dies before the bundle reaches the chain
    os.kill(os.getpid(), signal.SIGKILL)


client.registry.publish_bundle = killed
client.refresh_prekey_if_due(sys.argv[2])
"""


def test_a_refresh_killed_before_the_chain_took_it_is_tried_again(
    world: World, tmp_path: Path
) -> None:
    """Review finding: a process killed during a prekey refresh (``sync`` does one), after
    the new prekey was stored and before its bundle reached the chain, left that prekey as
    the current one: ``prekey_due`` went by its end (two weeks on), the advertised prekey
    expired days before, and meanwhile nobody could start a conversation with the device."""
    import subprocess
    import sys

    ttl_s = 400
    client = init_client(tmp_path / "killed", world.cfg, None, prekey_ttl_s=ttl_s)
    (advertised,) = cold(world.cfg).resolve("0x" + client.identity_id.hex()).installations
    client.close()
    net = tmp_path / "network.json"
    world.cfg.save(net)
    proc = subprocess.run(
        [sys.executable, "-c", _REFRESH_KILLED, str(tmp_path / "killed"), PASSPHRASE,
         str(net), str(320_000)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    client = Client.open(tmp_path / "killed", PASSPHRASE, world.cfg)
    try:
        # the chain still advertises the first prekey, a while before it ends: still due
        real = client.clock_ms
        client.clock_ms = lambda: real() + 320_000  # type: ignore[method-assign]
        (inst,) = cold(world.cfg).resolve("0x" + client.identity_id.hex()).installations
        assert inst.bundle.spk_id == advertised.bundle.spk_id
        assert client.prekey_due()
        res = client.refresh_prekey_if_due(PASSPHRASE)
        assert res is not None and res.prekey_id != advertised.bundle.spk_id
        (inst,) = cold(world.cfg).resolve("0x" + client.identity_id.hex()).installations
        assert inst.bundle.spk_id == res.prekey_id and not client.prekey_due()
    finally:
        client.close()


def test_the_post_quantum_key_record_is_renewed(world: World, tmp_path: Path) -> None:
    """Review finding: the post-quantum key record (90 days) was published at setup only;
    ``publish`` and ``refresh_prekey_if_due`` renewed the bundle alone, so 90 days on the
    resolver rejected the whole installation (ExpiredPrekey) and nobody new could reach
    it. Now both renew it once less than a quarter of its lifetime is left (``pq_due``):
    the same ML-KEM key under the same id, issued later, so the newest-record check passes
    and peers holding the old record still reach the same secret."""
    from chatcore.client import PQ_KEY_TTL_S

    client = init_client(tmp_path / "pq", world.cfg, None)
    try:
        t0 = client.clock_ms()
        day = 86400 * 1000
        ident = "0x" + client.identity_id.hex()
        (first,) = cold(world.cfg).resolve(ident).installations
        assert first.pq is not None and not client.pq_due()
        # the device refreshes now and then, as the CLI does on every 'sync' and 'chat'
        renewed = 0
        for d in range(0, 94, 3):
            client.clock_ms = lambda d=d: t0 + d * day  # type: ignore[method-assign]
            res = client.refresh_prekey_if_due(PASSPHRASE)
            renewed += bool(res is not None and res.pq_renewed)
        assert renewed == 1 and not client.pq_due()
        for d in (89, 91, 93, 100):
            at = t0 / 1000 + d * 86400
            (inst,) = cold(world.cfg, clock=lambda at=at: at).resolve(ident).installations
            assert inst.pq is not None
            assert inst.pq.pq_key_id == first.pq.pq_key_id and inst.pq.pq_pub == first.pq.pq_pub
            assert inst.pq.issued_at > first.pq.issued_at
            assert inst.pq.not_after > at
        # a manual 'publish' renews it too once it is due, and not before
        assert not client.publish(PASSPHRASE).pq_renewed
        client.clock_ms = lambda: t0 + 93 * day + (PQ_KEY_TTL_S - 20 * 86400) * 1000  # type: ignore[method-assign]
        assert client.pq_due()
        assert client.publish(PASSPHRASE).pq_renewed and not client.pq_due()
        # a home from before the record was remembered reads its end from the local index
        client.store.delete_meta("pq_record")
        client.sync_directory()
        assert not client.pq_due()
    finally:
        client.close()


def test_a_publish_that_landed_though_it_failed_keeps_its_prekey(
    world: World, tmp_path: Path
) -> None:
    """Review finding: a publish whose transaction landed but failed here (a receipt
    timeout) put the previous prekey back as current, and the next publish made a new
    prekey under the same id, overwriting the secret the chain advertised: peers that
    resolved the bundle in between could not start a conversation. Ids are never reused."""
    client = init_client(tmp_path / "landed", world.cfg, None)
    try:
        ident = "0x" + client.identity_id.hex()
        publish = client.registry.publish_bundle

        def landed_then_timeout(*args: object, **kwargs: object) -> object:
            publish(*args, **kwargs)  # type: ignore[arg-type]
            raise ChainUnavailable("no receipt within 120 s")

        client.registry.publish_bundle = landed_then_timeout  # type: ignore[method-assign]
        with pytest.raises(ChainUnavailable):
            client.publish(PASSPHRASE)
        client.registry.publish_bundle = publish  # type: ignore[method-assign]
        (advertised,) = cold(world.cfg).resolve(ident).installations
        # a peer resolved that bundle; meanwhile this device publishes again
        res = client.publish(PASSPHRASE)
        assert res.prekey_id != advertised.bundle.spk_id
        kept = client.engine._prekey(advertised.bundle.spk_id)
        assert kept is not None and kept.pub == advertised.bundle.spk_pub
        (now,) = cold(world.cfg).resolve(ident).installations
        current = client.engine._prekey(now.bundle.spk_id)
        assert current is not None and current.pub == now.bundle.spk_pub
    finally:
        client.close()


def test_bundle_text_bound_to_another_registry_for_a_valid_identity(world: World) -> None:
    """Same chain id, another registry deployment (identity ids do not depend on the
    registry, so the same owner's id can exist in both): the text is refused."""
    m = world.multi
    dev = m.devices[1]
    other = dataclasses.replace(
        dev.bundle(world.cfg, m.identity_id, seq=1), registry=b"\x11" * 20
    ).signed(dev.seed)
    assert other.signature_ok()
    with pytest.raises(WrongChain):
        cold(world.cfg).resolve(other.to_text())


def test_a_forged_bundle_with_a_high_seq_does_not_make_later_ones_stale(
    world: World, w3: Web3
) -> None:
    """Only bundles the installation signed count toward the newest seq: a badly signed
    record (published by whoever holds the owner or recovery account, without the device's
    key) with a huge seq must not make the device's next real bundle 'stale' for ever."""
    ident = register_direct(world.reg, w3)
    dev = ident.devices[0]
    good = dev.bundle(world.cfg, ident.identity_id, seq=99)
    sig = bytearray(good.signature)
    sig[3] ^= 0x01
    forged = dataclasses.replace(good, signature=bytes(sig))
    world.reg.publish_bundle(ident.owner, ident.identity_id, dev.pub, forged.encode())
    with pytest.raises(BadSignature):
        cold(world.cfg).resolve(ident.qid)
    b2 = dev.bundle(world.cfg, ident.identity_id, seq=2)
    world.reg.publish_bundle(ident.owner, ident.identity_id, dev.pub, b2.encode())
    assert cold(world.cfg).resolve(ident.qid).installations[0].bundle == b2
