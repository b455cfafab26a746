"""Relayed (EIP-712) calls: authorisation, replay across nonce / chain id / contract, deadlines,
malleability, nonce cancellation."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from web3.logs import DISCARD

from devnet.chain import (
    connect,
    deploy_registries,
    dev_account,
    mine,
    rpc_url,
    send_tx,
    set_balance,
    start_anvil,
)
from devnet.chain import (
    registries as registry_contracts,
)
from tests.contracts import (
    assert_reverts,
    bundle_bytes,
    deadline,
    rand32,
    register,
    revert_error,
    sign_typed,
    to_high_s,
)

pytestmark = pytest.mark.devnet

ZERO = "0x" + "00" * 20


def _sign(regs, acct, primary, msg, *, chain_id=None, contract=None):
    return sign_typed(
        acct,
        primary,
        msg,
        chain_id=chain_id if chain_id is not None else regs.chain_id,
        verifying_contract=contract or regs.identity_address,
    )


def _nonce(regs, acct):
    return regs.identity.functions.nonces(acct.address).call()


def _register_sig(regs, owner, salt, recovery, inst, bundle, dl, nonce=None, **kw):
    msg = {
        "owner": owner.address,
        "salt": salt,
        "recovery": recovery,
        "installation": inst,
        "bundleHash": keccak(bundle),
        "nonce": _nonce(regs, owner) if nonce is None else nonce,
        "deadline": dl,
    }
    return _sign(regs, owner, "Register", msg, **kw)


def test_domain(registries):
    reg = registries.identity
    fields, name, version, chain_id, contract, _salt, ext = reg.functions.eip712Domain().call()
    assert (name, version, chain_id, contract) == (
        "LogosChatIdentityRegistry",
        "1",
        registries.chain_id,
        registries.identity_address,
    )
    assert fields == b"\x0f" and ext == []
    assert len(reg.functions.DOMAIN_SEPARATOR().call()) == 32


def test_register_by_sig_relayed(w3, registries, funded_account):
    reg = registries.identity
    owner, relayer = funded_account(0), funded_account()  # the owner holds no ETH at all
    salt, inst, bundle, recovery = rand32(), rand32(), bundle_bytes(), funded_account(0).address
    dl = deadline(w3)
    sig = _register_sig(registries, owner, salt, recovery, inst, bundle, dl)
    call = reg.functions.registerBySig(owner.address, salt, recovery, inst, bundle, dl, sig)
    # Any parameter changed breaks the signature (recovery, bundle, installation, owner).
    bad_calls = [
        reg.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, sig),
        reg.functions.registerBySig(owner.address, salt, recovery, inst, bundle + b"!", dl, sig),
        reg.functions.registerBySig(owner.address, salt, recovery, rand32(), bundle, dl, sig),
        reg.functions.registerBySig(relayer.address, salt, recovery, inst, bundle, dl, sig),
        reg.functions.registerBySig(owner.address, rand32(), recovery, inst, bundle, dl, sig),
        reg.functions.registerBySig(owner.address, salt, recovery, inst, bundle, dl + 1, sig),
    ]
    for c in bad_calls:
        assert_reverts(c, relayer.address, "InvalidSignature")
    send_tx(w3, relayer, call)
    ident = bytes(reg.functions.identityOf(owner.address).call())
    assert ident == bytes(reg.functions.identityIdFor(owner.address, salt).call())
    assert reg.functions.ownerOf(ident).call() == owner.address
    assert _nonce(registries, owner) == 1
    # Replay of the same signature: nonce already used.
    assert_reverts(call, relayer.address, "InvalidSignature")


def test_deadlines(w3, registries, funded_account):
    reg = registries.identity
    owner, relayer = funded_account(0), funded_account()
    salt, inst, bundle = rand32(), rand32(), bundle_bytes()
    now = deadline(w3, 0)
    for dl in (0, now - 1):  # 0 never means "no expiry"; past is expired
        sig = _register_sig(registries, owner, salt, ZERO, inst, bundle, dl)
        assert_reverts(
            reg.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, sig),
            relayer.address,
            "SignatureExpired",
        )
    # A signature that was valid expires once the chain's clock passes its deadline.
    dl = now + 60
    sig = _register_sig(registries, owner, salt, ZERO, inst, bundle, dl)
    call = reg.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, sig)
    assert revert_error(call, relayer.address) is None
    w3.provider.make_request("evm_increaseTime", [120])
    mine(w3)
    assert_reverts(call, relayer.address, "SignatureExpired")
    # ... and the other relayed calls check deadlines too.
    owner2 = funded_account()
    ident, inst0, _ = register(w3, reg, owner2)
    msg = {"id": ident, "installation": inst0, "nonce": _nonce(registries, owner2), "deadline": 0}
    sig0 = _sign(registries, owner2, "RevokeInstallation", msg)
    assert_reverts(
        reg.functions.revokeInstallationBySig(ident, inst0, owner2.address, 0, sig0),
        relayer.address,
        "SignatureExpired",
    )


def test_high_s_signature_rejected(w3, registries, funded_account):
    reg = registries.identity
    owner, relayer = funded_account(0), funded_account()
    salt, inst, bundle = rand32(), rand32(), bundle_bytes()
    dl = deadline(w3)
    sig = _register_sig(registries, owner, salt, ZERO, inst, bundle, dl)
    twin = to_high_s(sig)
    assert twin != sig
    assert_reverts(
        reg.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, twin),
        relayer.address,
        "InvalidSignature",
    )
    # Truncated / compact (64-byte) forms are rejected too.
    for bad in (sig[:64], sig + b"\x00", b""):
        assert_reverts(
            reg.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, bad),
            relayer.address,
            "InvalidSignature",
        )
    send_tx(
        w3, relayer, reg.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, sig)
    )


def test_use_nonce_cancels_outstanding_signatures(w3, registries, funded_account):
    reg = registries.identity
    owner, relayer = funded_account(), funded_account()
    salt, inst, bundle = rand32(), rand32(), bundle_bytes()
    dl = deadline(w3)
    sig = _register_sig(registries, owner, salt, ZERO, inst, bundle, dl)
    call = reg.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, sig)
    assert reg.functions.useNonce().call({"from": owner.address}) == 0
    send_tx(w3, owner, reg.functions.useNonce())
    assert _nonce(registries, owner) == 1
    assert_reverts(call, relayer.address, "InvalidSignature")
    # A signature for a future nonce is useless until then, and then valid.
    ahead = _register_sig(registries, owner, salt, ZERO, inst, bundle, dl, nonce=2)
    ahead_call = reg.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, ahead)
    assert_reverts(ahead_call, relayer.address, "InvalidSignature")
    send_tx(w3, owner, reg.functions.useNonce())
    send_tx(w3, relayer, ahead_call)


def test_replay_across_contract_rejected(w3, registries, funded_account, deployer):
    other = deploy_registries(w3, deployer)
    reg2, _ = registry_contracts(w3, other)
    owner, relayer = funded_account(0), funded_account()
    salt, inst, bundle = rand32(), rand32(), bundle_bytes()
    dl = deadline(w3)
    sig = _register_sig(registries, owner, salt, ZERO, inst, bundle, dl)  # for the first contract
    assert_reverts(
        reg2.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, sig),
        relayer.address,
        "InvalidSignature",
    )
    # Same message signed for reg2 works there.
    sig2 = _register_sig(
        registries, owner, salt, ZERO, inst, bundle, dl, contract=other["identity_registry"]
    )
    send_tx(
        w3, relayer, reg2.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, sig2)
    )


def test_replay_across_chain_id_rejected(tmp_path, w3, registries, funded_account):
    owner = funded_account(0)
    salt, inst, bundle = rand32(), rand32(), bundle_bytes()
    dl = deadline(w3) + 10**6  # the second chain's clock may differ slightly
    # Computed for another chain id, submitted here.
    foreign = _register_sig(registries, owner, salt, ZERO, inst, bundle, dl, chain_id=31338)
    relayer = funded_account()
    assert_reverts(
        registries.identity.functions.registerBySig(
            owner.address, salt, ZERO, inst, bundle, dl, foreign
        ),
        relayer.address,
        "InvalidSignature",
    )
    # A real second chain (chain id 31338) with the registry at the same address (same deployer
    # and nonce): a signature made for 31337 is refused there.
    proc = start_anvil(chain_id=31338, log_path=tmp_path / "anvil2.log")
    try:
        w3b = connect(rpc_url(proc))
        dep_b = deploy_registries(w3b, dev_account(0))
        reg_b, _ = registry_contracts(w3b, dep_b)
        assert dep_b["chain_id"] == 31338
        local = _register_sig(
            registries, owner, salt, ZERO, inst, bundle, dl, contract=dep_b["identity_registry"]
        )  # chain 31337, B's address
        set_balance(w3b, relayer.address, 10**18)
        assert_reverts(
            reg_b.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, local),
            relayer.address,
            "InvalidSignature",
        )
        ok = _register_sig(
            registries,
            owner,
            salt,
            ZERO,
            inst,
            bundle,
            dl,
            chain_id=31338,
            contract=dep_b["identity_registry"],
        )
        send_tx(
            w3b,
            relayer,
            reg_b.functions.registerBySig(owner.address, salt, ZERO, inst, bundle, dl, ok),
        )
        assert bytes(reg_b.functions.identityOf(owner.address).call()) != b"\x00" * 32
    finally:
        proc.stop()


def test_installation_calls_by_sig(w3, registries, funded_account):
    reg = registries.identity
    owner, recovery, stranger, relayer = (funded_account() for _ in range(4))
    ident, inst1, bundle1 = register(w3, reg, owner, recovery=recovery.address)
    dl = deadline(w3)
    r = relayer.address

    # addInstallationBySig by the recovery key.
    inst2, b2 = rand32(), bundle_bytes()

    def add_msg(signer, inst, bundle, ident=ident):
        return {
            "id": ident,
            "installation": inst,
            "bundleHash": keccak(bundle),
            "nonce": _nonce(registries, signer),
            "deadline": dl,
        }

    sig = _sign(registries, recovery, "AddInstallation", add_msg(recovery, inst2, b2))
    # The signer must be owner or recovery; the named signer must have signed.
    assert_reverts(
        reg.functions.addInstallationBySig(ident, inst2, b2, stranger.address, dl, sig),
        r,
        "NotAuthorized",
    )
    assert_reverts(
        reg.functions.addInstallationBySig(ident, inst2, b2, owner.address, dl, sig),
        r,
        "InvalidSignature",
    )
    # Bound to the identity id: same message for another id fails.
    other_id, _, _ = register(w3, reg, funded_account(), recovery=recovery.address)
    assert_reverts(
        reg.functions.addInstallationBySig(other_id, inst2, b2, recovery.address, dl, sig),
        r,
        "InvalidSignature",
    )
    stranger_sig = _sign(registries, stranger, "AddInstallation", add_msg(stranger, inst2, b2))
    assert_reverts(
        reg.functions.addInstallationBySig(ident, inst2, b2, stranger.address, dl, stranger_sig),
        r,
        "NotAuthorized",
    )
    send_tx(
        w3, relayer, reg.functions.addInstallationBySig(ident, inst2, b2, recovery.address, dl, sig)
    )
    assert_reverts(
        reg.functions.addInstallationBySig(ident, inst2, b2, recovery.address, dl, sig),
        r,
        "InvalidSignature",
    )

    # publishBundleBySig names the hash it replaces: a stale signature cannot roll back.
    b1b, b1c = bundle_bytes(), bundle_bytes()

    def pub_msg(signer, bundle, prev):
        return {
            "id": ident,
            "installation": inst1,
            "bundleHash": keccak(bundle),
            "previousBundleHash": prev,
            "nonce": _nonce(registries, signer),
            "deadline": dl,
        }

    sig_b = _sign(registries, owner, "PublishBundle", pub_msg(owner, b1b, keccak(bundle1)))
    wrong_prev = _sign(registries, owner, "PublishBundle", pub_msg(owner, b1b, keccak(b1c)))
    assert_reverts(
        reg.functions.publishBundleBySig(ident, inst1, b1b, owner.address, dl, wrong_prev),
        r,
        "InvalidSignature",
    )
    rcpt = send_tx(
        w3, relayer, reg.functions.publishBundleBySig(ident, inst1, b1b, owner.address, dl, sig_b)
    )
    assert (
        bytes(
            reg.events.BundlePublished().process_receipt(rcpt, errors=DISCARD)[0]["args"]["bundle"]
        )
        == b1b
    )
    view = reg.functions.getIdentity(ident).call()
    assert bytes(view[4][0][1]) == keccak(b1b)

    # revokeInstallationBySig by the owner; then publishing to it by sig fails.
    rv = {"id": ident, "installation": inst2, "nonce": _nonce(registries, owner), "deadline": dl}
    sig_r = _sign(registries, owner, "RevokeInstallation", rv)
    assert_reverts(
        reg.functions.revokeInstallationBySig(ident, inst2, stranger.address, dl, sig_r),
        r,
        "NotAuthorized",
    )
    send_tx(
        w3, relayer, reg.functions.revokeInstallationBySig(ident, inst2, owner.address, dl, sig_r)
    )
    assert reg.functions.getIdentity(ident).call()[4][1][3] is True
    sig_p = _sign(
        registries,
        owner,
        "PublishBundle",
        {
            "id": ident,
            "installation": inst2,
            "bundleHash": keccak(b1c),
            "previousBundleHash": (1).to_bytes(32, "big"),
            "nonce": _nonce(registries, owner),
            "deadline": dl,
        },
    )
    assert_reverts(
        reg.functions.publishBundleBySig(ident, inst2, b1c, owner.address, dl, sig_p),
        r,
        "InstallationNotActive",
    )
    # Re-adding the revoked installation by signature fails too.
    sig_a = _sign(registries, owner, "AddInstallation", add_msg(owner, inst2, b1c))
    assert_reverts(
        reg.functions.addInstallationBySig(ident, inst2, b1c, owner.address, dl, sig_a),
        r,
        "InstallationWasRevoked",
    )


def test_set_owner_by_sig(w3, registries, funded_account):
    reg = registries.identity
    owner, recovery, new_owner, stranger, relayer = (funded_account() for _ in range(5))
    ident, _, _ = register(w3, reg, owner, recovery=recovery.address)
    dl = deadline(w3)

    def set_msg(signer, current, new):
        return {
            "id": ident,
            "currentOwner": current,
            "newOwner": new,
            "nonce": _nonce(registries, signer),
            "deadline": dl,
        }

    def accept(new, current, nonce_offset=0):
        return _sign(
            registries,
            new,
            "AcceptOwnership",
            {
                "id": ident,
                "newOwner": new.address,
                "currentOwner": current,
                "nonce": _nonce(registries, new) + nonce_offset,
                "deadline": dl,
            },
        )

    # Recovery signs (offline), new owner consents, a relayer submits.
    rec_sig = _sign(
        registries, recovery, "SetOwner", set_msg(recovery, owner.address, new_owner.address)
    )
    ok = accept(new_owner, owner.address)
    r = relayer.address
    call = reg.functions.setOwnerBySig
    # Stranger as signer / missing consent / consent from someone else.
    st_sig = _sign(
        registries, stranger, "SetOwner", set_msg(stranger, owner.address, new_owner.address)
    )
    assert_reverts(
        call(ident, new_owner.address, stranger.address, dl, st_sig, ok), r, "NotAuthorized"
    )
    assert_reverts(
        call(ident, new_owner.address, recovery.address, dl, rec_sig, b""), r, "InvalidSignature"
    )
    assert_reverts(
        call(
            ident, new_owner.address, recovery.address, dl, rec_sig, accept(stranger, owner.address)
        ),
        r,
        "InvalidSignature",
    )
    # The signed message must name the current owner (stale value) and this new owner.
    stale = _sign(
        registries, recovery, "SetOwner", set_msg(recovery, stranger.address, new_owner.address)
    )
    assert_reverts(
        call(ident, new_owner.address, recovery.address, dl, stale, ok), r, "InvalidSignature"
    )
    assert_reverts(
        call(ident, stranger.address, recovery.address, dl, rec_sig, ok), r, "InvalidSignature"
    )

    # A recovery change the (thief's) owner key proposed meanwhile goes with the takeover.
    send_tx(w3, owner, reg.functions.setRecovery(ident, stranger.address, b"\x01" * 32))
    assert reg.functions.pendingRecovery(ident).call()[0] == stranger.address
    send_tx(w3, relayer, call(ident, new_owner.address, recovery.address, dl, rec_sig, ok))
    assert reg.functions.ownerOf(ident).call() == new_owner.address
    assert reg.functions.pendingRecovery(ident).call()[1] == 0
    # Replay is dead: both nonces moved.
    assert_reverts(
        call(ident, new_owner.address, recovery.address, dl, rec_sig, ok), r, "InvalidSignature"
    )

    # The (new) owner can move it on by signature too.
    third = funded_account()
    own_sig = _sign(
        registries, new_owner, "SetOwner", set_msg(new_owner, new_owner.address, third.address)
    )
    send_tx(
        w3,
        relayer,
        call(
            ident, third.address, new_owner.address, dl, own_sig, accept(third, new_owner.address)
        ),
    )
    assert reg.functions.ownerOf(ident).call() == third.address
    # The old owner's leftover powers are gone.
    old_sig = _sign(registries, owner, "SetOwner", set_msg(owner, third.address, owner.address))
    assert_reverts(call(ident, owner.address, owner.address, dl, old_sig, b""), r, "NotAuthorized")
