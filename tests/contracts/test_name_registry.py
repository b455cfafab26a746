"""NameRegistry on a real anvil: commit–reveal, front-running, validity, release, resolve."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak
from web3.logs import DISCARD

from devnet.chain import ContractReverted, contract, deploy, mine, send_tx
from tests.contracts import assert_reverts, rand32, register, revert_error

pytestmark = pytest.mark.devnet


def _commitment(name, ident, owner, secret):
    return keccak(encode(["string", "bytes32", "address", "bytes32"], [name, ident, owner, secret]))


def _claim(w3, names, owner, name, ident):
    secret = rand32()
    send_tx(w3, owner, names.functions.commit(_commitment(name, ident, owner.address, secret)))
    return send_tx(w3, owner, names.functions.claim(name, ident, secret)), secret


@pytest.fixture(scope="module")
def slow_names(w3, registries, deployer):
    """A NameRegistry with a 3..5 block commit window, to test the age limits."""
    addr, _ = deploy(w3, deployer, "NameRegistry", registries.identity_address, 3, 5)
    return contract(w3, "NameRegistry", addr)


def test_claim_resolve_release(w3, registries, funded_account):
    reg, names = registries.identity, registries.names
    owner = funded_account()
    ident, inst, bundle = register(w3, reg, owner)
    name = "alice-01_x"
    secret = rand32()
    c = _commitment(name, ident, owner.address, secret)
    assert bytes(names.functions.makeCommitment(name, ident, owner.address, secret).call()) == c
    send_tx(w3, owner, names.functions.commit(c))
    assert names.functions.commitments(c).call() > 0
    r = send_tx(w3, owner, names.functions.claim(name, ident, secret))
    ev = names.events.NameClaimed().process_receipt(r, errors=DISCARD)[0]["args"]
    assert (bytes(ev["id"]), bytes(ev["nameHash"]), ev["name"]) == (ident, keccak(text=name), name)
    assert names.functions.commitments(c).call() == 0  # consumed
    assert bytes(names.functions.nameOwner(name).call()) == ident
    view = names.functions.resolveName(name).call()
    assert view == reg.functions.getIdentity(ident).call()
    assert bytes(view[4][0][0]) == inst and bytes(view[4][0][1]) == keccak(bundle)

    # Taken: someone else with a valid commitment still cannot have it.
    other = funded_account()
    other_id, _, _ = register(w3, reg, other)
    s2 = rand32()
    send_tx(w3, other, names.functions.commit(_commitment(name, other_id, other.address, s2)))
    assert_reverts(names.functions.claim(name, other_id, s2), other.address, "NameTaken")

    # Only the identity's owner releases.
    assert_reverts(names.functions.release(name), other.address, "NotAuthorized")
    assert_reverts(names.functions.release("nobody-here"), owner.address, "NameNotClaimed")
    r = send_tx(w3, owner, names.functions.release(name))
    ev = names.events.NameReleased().process_receipt(r, errors=DISCARD)[0]["args"]
    assert (bytes(ev["id"]), ev["name"]) == (ident, name)
    assert bytes(names.functions.nameOwner(name).call()) == b"\x00" * 32
    empty = names.functions.resolveName(name).call()
    assert bytes(empty[0]) == b"\x00" * 32 and empty[4] == []
    # Released names are free again.
    send_tx(w3, other, names.functions.claim(name, other_id, s2))
    assert bytes(names.functions.nameOwner(name).call()) == other_id


def test_front_running_a_reveal_fails(w3, registries, funded_account):
    reg, names = registries.identity, registries.names
    victim, attacker = funded_account(), funded_account()
    vid, _, _ = register(w3, reg, victim)
    aid, _, _ = register(w3, reg, attacker)
    name, secret = "victim", rand32()
    send_tx(w3, victim, names.functions.commit(_commitment(name, vid, victim.address, secret)))
    # The attacker sees the reveal (name, id, secret) in the mempool and copies it...
    assert_reverts(names.functions.claim(name, vid, secret), attacker.address, "NotAuthorized")
    # ... or swaps in its own id: no commitment matches.
    assert_reverts(names.functions.claim(name, aid, secret), attacker.address, "CommitmentNotFound")
    # Even committing the copied values now only starts a fresh (too new) commitment of its own,
    # bound to the attacker's address, so it never matches the victim's reveal.
    send_tx(w3, victim, names.functions.claim(name, vid, secret))
    assert bytes(names.functions.nameOwner(name).call()) == vid


def test_claim_requires_current_owner(w3, registries, funded_account):
    reg, names = registries.identity, registries.names
    owner, recovery, stranger = funded_account(), funded_account(), funded_account()
    ident, _, _ = register(w3, reg, owner, recovery=recovery.address)
    secret = rand32()
    # A commitment made by the recovery (not the owner) for the owner's identity is useless.
    send_tx(
        w3,
        recovery,
        names.functions.commit(_commitment("recname", ident, recovery.address, secret)),
    )
    assert_reverts(
        names.functions.claim("recname", ident, secret), recovery.address, "NotAuthorized"
    )
    # Unknown identity.
    assert_reverts(
        names.functions.claim("ghost", rand32(), secret), stranger.address, "NotAuthorized"
    )
    # Wrong secret.
    send_tx(
        w3, owner, names.functions.commit(_commitment("rightname", ident, owner.address, secret))
    )
    assert_reverts(
        names.functions.claim("rightname", ident, rand32()), owner.address, "CommitmentNotFound"
    )


def test_recommit_while_live_reverts(w3, registries, funded_account):
    names = registries.names
    acct = funded_account()
    c = rand32()
    send_tx(w3, acct, names.functions.commit(c))
    assert_reverts(names.functions.commit(c), acct.address, "CommitmentExists")
    assert_reverts(names.functions.commit(c), funded_account().address, "CommitmentExists")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("abc", True),
        ("a" * 32, True),
        ("a-b_c-0123456789", True),
        ("_leading-underscore", True),
        ("0digits", True),
        ("ab", False),
        ("a" * 33, False),
        ("-abc", False),
        ("Abc", False),
        ("ab.c", False),
        ("ab c", False),
        ("abc\x00", False),
        ("émile", False),
        ("", False),
    ],
)
def test_name_validity(registries, name, ok):
    assert registries.names.functions.isValidName(name).call() is ok


def test_invalid_name_cannot_be_claimed(w3, registries, funded_account):
    reg, names = registries.identity, registries.names
    owner = funded_account()
    ident, _, _ = register(w3, reg, owner)
    for bad in ("ab", "-dash", "UPPER", "a" * 33):
        secret = rand32()
        send_tx(w3, owner, names.functions.commit(_commitment(bad, ident, owner.address, secret)))
        assert_reverts(names.functions.claim(bad, ident, secret), owner.address, "InvalidName")


def test_commit_age_window(w3, registries, slow_names, funded_account):
    reg, names = registries.identity, slow_names
    assert (names.functions.minCommitBlocks().call(), names.functions.maxCommitBlocks().call()) == (
        3,
        5,
    )
    owner = funded_account()
    ident, _, _ = register(w3, reg, owner)
    secret = rand32()
    c = _commitment("patient", ident, owner.address, secret)
    made = send_tx(w3, owner, names.functions.commit(c))["blockNumber"]
    claim = names.functions.claim("patient", ident, secret)
    # Claim in block made+1 (age 1): too new, as a simulation and as a mined tx.
    assert_reverts(claim, owner.address, "CommitmentTooNew")
    with pytest.raises(ContractReverted):
        send_tx(w3, owner, claim, gas=200_000)  # mined in made+1, reverts
    assert w3.eth.block_number == made + 1
    mine(w3)  # pending block is made+3 now: age 3 == min, ok
    assert revert_error(claim, owner.address) is None
    mine(w3, 2)  # pending made+5: age 5 == max, still ok
    assert revert_error(claim, owner.address) is None
    mine(w3)  # pending made+6: too old
    assert_reverts(claim, owner.address, "CommitmentTooOld")
    # An expired commitment may be made again (it is no longer live), restarting the clock.
    send_tx(w3, owner, names.functions.commit(c))
    mine(w3, 2)
    send_tx(w3, owner, claim)
    assert bytes(names.functions.nameOwner("patient").call()) == ident


def test_min_commit_window_one_block(w3, registries, funded_account):
    """Devnet window (min 1): commit and claim can never share a block, but the next block works."""
    assert registries.names.functions.minCommitBlocks().call() == 1
    assert registries.names.functions.maxCommitBlocks().call() == 7200
    owner = funded_account()
    ident, _, _ = register(w3, registries.identity, owner)
    _claim(w3, registries.names, owner, "quick", ident)
    assert bytes(registries.names.functions.nameOwner("quick").call()) == ident


def test_name_survives_owner_change_and_follows_new_owner(w3, registries, funded_account):
    from tests.contracts import deadline, sign_typed

    reg, names = registries.identity, registries.names
    owner, new_owner = funded_account(), funded_account()
    ident, _, _ = register(w3, reg, owner)
    _claim(w3, names, owner, "keeper", ident)
    dl = deadline(w3)
    sig = sign_typed(
        new_owner,
        "AcceptOwnership",
        {
            "id": ident,
            "newOwner": new_owner.address,
            "currentOwner": owner.address,
            "nonce": 0,
            "deadline": dl,
        },
        chain_id=registries.chain_id,
        verifying_contract=registries.identity_address,
    )
    send_tx(w3, owner, reg.functions.setOwner(ident, new_owner.address, dl, sig))
    assert bytes(names.functions.nameOwner("keeper").call()) == ident
    assert_reverts(names.functions.release("keeper"), owner.address, "NotAuthorized")
    send_tx(w3, new_owner, names.functions.release("keeper"))
