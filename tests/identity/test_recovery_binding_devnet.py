"""Recovery by phrase acts on the identity the phrase really protects. Anyone may name anyone's
(public) recovery address for a decoy - the registry does not ask the recovery account - but
only the phrase's holder can bind an identity to the phrase (the register salt, or the tag a
later setRecovery logs), and restore keeps only bound identities: a decoy naming the address,
copying the victim's salt or copying the victim's tag is never chosen, a phrase replaced later
is still found, an index entry storage does not confirm is ignored, and a phrase bound to
several identities is refused rather than guessed at."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chatcore.client import Client
from chatcore.identity import (
    AmbiguousRecovery,
    RecoveryNotBound,
    WrongRecoveryPhrase,
    identity_for_phrase,
    recovery_account,
    restore,
    revoke_with_phrase,
)
from devnet.chain import advance_time, rpc_url
from devnet.process import ManagedProcess
from discovery.network import NetworkConfig
from discovery.registry import Registry
from tests.discovery.rpc_proxy import RpcProxy, make_log
from tests.discovery.test_resolver import PASSPHRASE, Ident, new_owner, register_direct

pytestmark = pytest.mark.devnet


@dataclasses.dataclass
class Victim:
    identity_id: bytes
    owner: LocalAccount
    phrase: str
    installation_id: bytes
    salt: bytes


@pytest.fixture
def proxy(anvil: ManagedProcess) -> Iterator[RpcProxy]:
    with RpcProxy(rpc_url(anvil)) as p:
        yield p


@pytest.fixture
def reg(chain_network: NetworkConfig) -> Registry:
    return Registry(chain_network)


def _init(network: NetworkConfig, home: Path) -> Victim:
    """An identity made the way `logos-chat init` makes it (its phrase binds the id)."""
    client, res = Client.init(home, PASSPHRASE, network, None)
    try:
        owner = client._owner(PASSPHRASE)
        salt = client.store.get_meta("salt")
        assert salt is not None
    finally:
        client.close()
    return Victim(res.identity_id, owner, res.recovery_phrase, res.installation_id, salt)


def _decoy_with_salt(reg: Registry, w3: Web3, salt: bytes, recovery: str) -> Ident:
    """An attacker's identity registered with someone else's (public) salt."""
    owner = new_owner(w3)
    reg.register(owner, salt, recovery, os.urandom(32), os.urandom(290))
    return Ident(owner, bytes(reg.identity.functions.identityOf(owner.address).call()), [], [])


def _tag_of(reg: Registry, identity_id: bytes) -> bytes:
    """The tag of the identity's latest RecoveryChanged (public, in the log)."""
    changes = [e for e in reg.identity_events(identity_id, 0) if e.name == "RecoveryChanged"]
    return bytes(changes[-1].args["tag"])


def _set_recovery_raw(reg: Registry, ident: Ident, recovery: str, tag: bytes) -> None:
    fn = reg.identity.functions.setRecovery(ident.identity_id, recovery, tag)
    reg.transact(ident.owner, fn, "setRecovery")
    _wait_and_confirm(reg, ident.owner, ident.identity_id)


def _replace_recovery(
    reg: Registry, owner: LocalAccount, identity_id: bytes, recovery: LocalAccount
) -> None:
    """`recovery phrase` then, after the registry's delay, `recovery confirm`."""
    reg.set_recovery(owner, identity_id, recovery)
    _wait_and_confirm(reg, owner, identity_id)


def _wait_and_confirm(reg: Registry, owner: LocalAccount, identity_id: bytes) -> None:
    if reg.pending_recovery(identity_id) is not None:
        advance_time(reg.w3, reg.recovery_delay())
        reg.confirm_recovery(owner, identity_id)
    assert reg.pending_recovery(identity_id) is None


def _installations(reg: Registry, identity_id: bytes) -> list[tuple[bytes, bool]]:
    return [(i.installation_id, i.revoked) for i in reg.get_identity(identity_id).installations]


def test_a_decoy_naming_the_victims_recovery_is_not_chosen(
    chain_network: NetworkConfig, reg: Registry, w3: Web3, tmp_path: Path
) -> None:
    victim = _init(chain_network, tmp_path / "victim")
    rec = recovery_account(victim.phrase).address
    # Decoys naming the victim's recovery address, registered after the victim: one with a
    # salt of its own, one with the victim's salt (public in the register calldata), one that
    # names it later with setRecovery (no tag, or a made-up one).
    decoys = [
        register_direct(reg, w3, recovery=rec),
        _decoy_with_salt(reg, w3, victim.salt, rec),
        register_direct(reg, w3),
        register_direct(reg, w3),
    ]
    _set_recovery_raw(reg, decoys[2], rec, b"\x00" * 32)
    _set_recovery_raw(reg, decoys[3], rec, os.urandom(32))
    for d in decoys:  # storage agrees they name it: only the binding tells them apart
        assert reg.get_identity(d.identity_id).recovery == rec

    _acct, state = identity_for_phrase(chain_network, victim.phrase)
    assert state.identity_id == victim.identity_id
    client, res = restore(tmp_path / "restored", PASSPHRASE, chain_network, victim.phrase)
    client.close()
    assert res.identity_id == victim.identity_id
    assert res.revoked == (victim.installation_id,)
    assert reg.get_identity(victim.identity_id).owner == res.owner != victim.owner.address
    for d in decoys:  # untouched
        assert reg.get_identity(d.identity_id).owner == d.owner.address


def test_a_phrase_only_decoys_name_restores_nothing(
    chain_network: NetworkConfig, reg: Registry, w3: Web3, tmp_path: Path
) -> None:
    Account.enable_unaudited_hdwallet_features()
    rec, phrase = Account.create_with_mnemonic()
    with pytest.raises(WrongRecoveryPhrase, match="no identity has this recovery phrase"):
        identity_for_phrase(chain_network, phrase)
    decoy = register_direct(reg, w3, recovery=rec.address)
    before = _installations(reg, decoy.identity_id)
    with pytest.raises(RecoveryNotBound, match="none was registered or set with this phrase"):
        identity_for_phrase(chain_network, phrase)
    with pytest.raises(RecoveryNotBound):
        restore(tmp_path / "home", PASSPHRASE, chain_network, phrase)
    with pytest.raises(RecoveryNotBound):
        revoke_with_phrase(chain_network, phrase, "0x" + decoy.devices[0].pub.hex())
    assert not (tmp_path / "home").exists()
    assert _installations(reg, decoy.identity_id) == before
    assert reg.get_identity(decoy.identity_id).owner == decoy.owner.address


def test_a_replaced_phrase_is_found_and_a_copied_tag_is_not(
    chain_network: NetworkConfig, reg: Registry, w3: Web3, tmp_path: Path
) -> None:
    victim = _init(chain_network, tmp_path / "victim")
    # `recovery phrase`: a new phrase, which did not make the salt; the change logs its tag
    Account.enable_unaudited_hdwallet_features()
    new_rec, new_phrase = Account.create_with_mnemonic()
    _replace_recovery(reg, victim.owner, victim.identity_id, new_rec)
    tag = _tag_of(reg, victim.identity_id)
    # an attacker copies the address and the tag onto a decoy
    decoy = register_direct(reg, w3)
    _set_recovery_raw(reg, decoy, new_rec.address, tag)
    assert _tag_of(reg, decoy.identity_id) == tag

    _acct, state = identity_for_phrase(chain_network, new_phrase)
    assert state.identity_id == victim.identity_id
    # the old phrase recovers nothing any more
    with pytest.raises(WrongRecoveryPhrase):
        identity_for_phrase(chain_network, victim.phrase)
    _ident, target, _gas = revoke_with_phrase(
        chain_network, new_phrase, "0x" + victim.installation_id.hex()
    )
    assert target == victim.installation_id
    assert _installations(reg, victim.identity_id) == [(victim.installation_id, True)]
    assert _installations(reg, decoy.identity_id) == [(decoy.devices[0].pub, False)]


def test_an_index_claim_storage_does_not_confirm_is_ignored(
    chain_network: NetworkConfig, reg: Registry, w3: Web3, proxy: RpcProxy, tmp_path: Path
) -> None:
    """A node that invents a RecoveryChanged naming the phrase's account for a decoy (with the
    victim's tag copied, for good measure)."""
    victim = _init(chain_network, tmp_path / "victim")
    Account.enable_unaudited_hdwallet_features()
    new_rec, new_phrase = Account.create_with_mnemonic()
    _replace_recovery(reg, victim.owner, victim.identity_id, new_rec)
    decoy = register_direct(reg, w3)
    proxy.inject_logs.append(
        make_log(
            chain_network.identity_registry,
            "RecoveryChanged(bytes32,address,bytes32)",
            [decoy.identity_id],
            abi_encode(["address", "bytes32"], [new_rec.address, _tag_of(reg, victim.identity_id)]),
            w3.eth.block_number,
            0x63,
        )
    )
    lying = dataclasses.replace(chain_network, rpc_url=proxy.url)
    _acct, state = identity_for_phrase(lying, new_phrase)
    assert state.identity_id == victim.identity_id


def test_a_phrase_bound_to_two_identities_is_refused(
    chain_network: NetworkConfig, reg: Registry, tmp_path: Path
) -> None:
    first = _init(chain_network, tmp_path / "first")
    second = _init(chain_network, tmp_path / "second")
    # the phrase's holder binds the first's phrase to the second too (setRecovery's tag)
    _replace_recovery(reg, second.owner, second.identity_id, recovery_account(first.phrase))
    before = {v.identity_id: _installations(reg, v.identity_id) for v in (first, second)}
    with pytest.raises(AmbiguousRecovery, match="2 identities have this recovery phrase"):
        identity_for_phrase(chain_network, first.phrase)
    with pytest.raises(AmbiguousRecovery):
        restore(tmp_path / "home", PASSPHRASE, chain_network, first.phrase)
    with pytest.raises(AmbiguousRecovery):
        revoke_with_phrase(chain_network, first.phrase, "0x" + first.installation_id.hex())
    assert not (tmp_path / "home").exists()
    # nothing happened on chain
    for v in (first, second):
        assert _installations(reg, v.identity_id) == before[v.identity_id]
        assert reg.get_identity(v.identity_id).owner == v.owner.address


def test_restore_wins_against_a_thief_holding_the_owner_key(
    chain_network: NetworkConfig, reg: Registry, w3: Web3, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A thief holding a device (so the owner key) proposes a recovery of its own, and when
    it sees the user's restore coming it moves the owner to another key of its own. The
    restore must still take the identity back and cancel the thief's recovery change."""
    import chatcore.identity as ci
    from chatcore.identity import SIG_TTL_S, typed_signature
    from tests.discovery.test_resolver import new_owner

    victim = _init(chain_network, tmp_path / "victim")
    reg.set_recovery(victim.owner, victim.identity_id, Account.create())
    assert reg.pending_recovery(victim.identity_id) is not None
    real = ci.identity_for_phrase

    def racing(network: NetworkConfig, phrase: str, *args: object) -> tuple[object, object]:
        found = real(network, phrase, *args)  # the restore has read the identity ...
        thief2 = new_owner(w3)  # ... and the thief moves the owner before it acts
        deadline = reg.latest_timestamp() + SIG_TTL_S
        msg = {"id": victim.identity_id, "newOwner": thief2.address,
               "currentOwner": victim.owner.address, "nonce": 0, "deadline": deadline}  # fmt: skip
        sig = typed_signature(
            thief2, "AcceptOwnership", msg, chain_network.chain_id, reg.identity.address
        )
        reg.set_owner(victim.owner, victim.identity_id, thief2.address, deadline, sig)
        return found

    monkeypatch.setattr(ci, "identity_for_phrase", racing)
    client, res = ci.restore(tmp_path / "new", PASSPHRASE, chain_network, victim.phrase)
    from chatcore.features import INVITES_UNBOUNDED_AFTER_RESTORE_MS
    from chatcore.store import RESTORED_AT_META

    restored = client.store.get_meta(RESTORED_AT_META)  # its groups come back unbounded
    until = None if restored is None else int(restored) + INVITES_UNBOUNDED_AFTER_RESTORE_MS
    assert until is not None and int(until) > client.clock_ms() + 6 * 86_400_000
    client.close()
    state = reg.get_identity(victim.identity_id)
    assert state.owner == res.owner and state.recovery == recovery_account(victim.phrase).address
    assert reg.pending_recovery(victim.identity_id) is None
    assert [i.installation_id for i in state.installations if not i.revoked] == [
        res.installation_id
    ]


def test_a_thiefs_proposal_is_told_from_one_made_here_earlier(
    chain_network: NetworkConfig, reg: Registry, w3: Web3, tmp_path: Path
) -> None:
    """The user proposed clearing the recovery, then cancelled it with the phrase (no
    device): the home still remembers its proposal. A thief's later proposal of the same
    (clearing) must still be reported as not made here; and once nothing is pending the
    home forgets its own."""
    from chatcore.identity import (
        cancel_recovery_change,
        change_recovery,
        foreign_recovery_change,
        recovery_status,
    )

    client, res = Client.init(tmp_path / "user", PASSPHRASE, chain_network, None)
    try:
        mine = change_recovery(client, PASSPHRASE, None)
        assert mine.pending and foreign_recovery_change(client) is None
        assert recovery_status(client)["pending"]["proposed_here"]
        cancel_recovery_change(chain_network, phrase=res.recovery_phrase)
        advance_time(w3, 60)
        owner = client._owner(PASSPHRASE)
        reg.set_recovery(owner, client.identity_id, None)  # the thief, with the owner key
        theirs = foreign_recovery_change(client)
        assert theirs is not None and theirs.ready_at != mine.ready_at
        assert not recovery_status(client)["pending"]["proposed_here"]
        cancel_recovery_change(chain_network, phrase=res.recovery_phrase)
        assert foreign_recovery_change(client) is None
        assert client.store.get_meta("recovery_pending") is None
    finally:
        client.close()
