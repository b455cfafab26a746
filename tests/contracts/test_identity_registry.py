"""IdentityRegistry direct calls on a real anvil: lifecycle, access control, views, events."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak
from web3.logs import DISCARD

from devnet.chain import ContractReverted, advance_time, send_tx
from tests.contracts import (
    assert_reverts,
    bundle_bytes,
    deadline,
    rand32,
    register,
    sign_typed,
)

pytestmark = pytest.mark.devnet

ZERO = "0x" + "00" * 20
ZERO32 = b"\x00" * 32


def _accept_sig(w3, regs, new_owner, ident, current_owner, dl):
    return sign_typed(
        new_owner,
        "AcceptOwnership",
        {
            "id": ident,
            "newOwner": new_owner.address,
            "currentOwner": current_owner,
            "nonce": regs.identity.functions.nonces(new_owner.address).call(),
            "deadline": dl,
        },
        chain_id=regs.chain_id,
        verifying_contract=regs.identity_address,
    )


def _link_sig(w3, regs, wallet, ident, dl):
    return sign_typed(
        wallet,
        "LinkWallet",
        {
            "id": ident,
            "wallet": wallet.address,
            "nonce": regs.identity.functions.nonces(wallet.address).call(),
            "deadline": dl,
        },
        chain_id=regs.chain_id,
        verifying_contract=regs.identity_address,
    )


def test_register_views_and_events(w3, registries, funded_account):
    reg = registries.identity
    owner, recovery = funded_account(), funded_account(0)
    salt, inst, bundle = rand32(), rand32(), bundle_bytes()
    receipt = send_tx(w3, owner, reg.functions.register(salt, recovery.address, inst, bundle))
    ident = keccak(encode(["address", "bytes32"], [owner.address, salt]))
    assert bytes(reg.functions.identityIdFor(owner.address, salt).call()) == ident
    assert bytes(reg.functions.identityOf(owner.address).call()) == ident
    assert reg.functions.ownerOf(ident).call() == owner.address

    view = reg.functions.getIdentity(ident).call()
    assert bytes(view[0]) == ident
    assert view[1] == owner.address
    assert view[2] == recovery.address
    assert view[3] == receipt["blockNumber"]
    assert [(bytes(i[0]), bytes(i[1]), bytes(i[2]), i[3]) for i in view[4]] == [
        (inst, keccak(bundle), ZERO32, False)
    ]
    assert reg.functions.getIdentityByAccount(owner.address).call() == view

    # Every event carries the identity id as its first indexed topic.
    ev = reg.events
    assert [
        e["args"]["id"] for e in ev.IdentityRegistered().process_receipt(receipt, errors=DISCARD)
    ] == [ident]
    reg_ev = ev.IdentityRegistered().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (reg_ev["owner"], reg_ev["recovery"]) == (owner.address, recovery.address)
    added = ev.InstallationAdded().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (bytes(added["id"]), bytes(added["installation"])) == (ident, inst)
    pub = ev.BundlePublished().process_receipt(receipt, errors=DISCARD)[0]["args"]
    assert (bytes(pub["id"]), bytes(pub["installation"]), bytes(pub["bundle"])) == (
        ident,
        inst,
        bundle,
    )
    for log in receipt["logs"]:
        assert bytes(log["topics"][1]) == ident
    # One eth_getLogs by the id topic finds them all.
    logs = w3.eth.get_logs(
        {
            "address": registries.identity_address,
            "fromBlock": registries.deploy_block,
            "topics": [None, "0x" + ident.hex()],
        }
    )
    assert len(logs) == 3


def test_unknown_identity_views_are_empty(registries, funded_account):
    reg = registries.identity
    empty = reg.functions.getIdentity(rand32()).call()
    assert bytes(empty[0]) == ZERO32 and empty[1] == ZERO and empty[4] == []
    assert reg.functions.getIdentityByAccount(funded_account(0).address).call() == empty
    assert bytes(reg.functions.identityOf(funded_account(0).address).call()) == ZERO32


def test_one_identity_per_owner_and_no_id_reuse(w3, registries, funded_account):
    reg = registries.identity
    owner = funded_account()
    salt = rand32()
    ident, _, _ = register(w3, reg, owner, salt=salt)
    assert_reverts(
        reg.functions.register(rand32(), ZERO, rand32(), b"x"), owner.address, "AlreadyRegistered"
    )
    assert_reverts(
        reg.functions.register(rand32(), ZERO, ZERO32, b"x"),
        funded_account().address,
        "InvalidInstallation",
    )
    # Move the identity away; the old owner may register again, but never the same id.
    new_owner = funded_account()
    dl = deadline(w3)
    sig = _accept_sig(w3, registries, new_owner, ident, owner.address, dl)
    send_tx(w3, owner, reg.functions.setOwner(ident, new_owner.address, dl, sig))
    assert_reverts(
        reg.functions.register(salt, ZERO, rand32(), b"x"), owner.address, "AlreadyRegistered"
    )
    register(w3, reg, owner)  # another salt works


def test_installation_lifecycle_and_access(w3, registries, funded_account):
    reg = registries.identity
    owner, recovery, stranger = funded_account(), funded_account(), funded_account()
    ident, inst1, _ = register(w3, reg, owner, recovery=recovery.address)
    inst2, inst3 = rand32(), rand32()
    b2 = bundle_bytes()

    # Strangers can do nothing.
    s = stranger.address
    assert_reverts(reg.functions.addInstallation(ident, inst2, b2), s, "NotAuthorized")
    assert_reverts(reg.functions.publishBundle(ident, inst1, b2), s, "NotAuthorized")
    assert_reverts(reg.functions.publishPqKey(ident, inst1, b2), s, "NotAuthorized")
    assert_reverts(reg.functions.revokeInstallation(ident, inst1), s, "NotAuthorized")
    # Unknown identities are reported as such.
    other = rand32()
    assert_reverts(reg.functions.addInstallation(other, inst2, b2), s, "UnknownIdentity")
    assert_reverts(reg.functions.publishBundle(other, inst1, b2), s, "UnknownIdentity")

    # Owner adds, recovery adds; duplicates and unknown installations refused.
    send_tx(w3, owner, reg.functions.addInstallation(ident, inst2, b2))
    assert_reverts(
        reg.functions.addInstallation(ident, inst2, b2), owner.address, "InstallationExists"
    )
    send_tx(w3, recovery, reg.functions.addInstallation(ident, inst3, bundle_bytes()))
    assert_reverts(
        reg.functions.publishBundle(ident, rand32(), b2), owner.address, "InstallationNotActive"
    )

    # Owner and recovery can both publish (bundle and PQ key).
    b2b = bundle_bytes()
    r = send_tx(w3, recovery, reg.functions.publishBundle(ident, inst2, b2b))
    ev = reg.events.BundlePublished().process_receipt(r, errors=DISCARD)[0]["args"]
    assert bytes(ev["bundle"]) == b2b
    pq = bundle_bytes(1250)
    r = send_tx(w3, owner, reg.functions.publishPqKey(ident, inst2, pq))
    ev = reg.events.PqKeyPublished().process_receipt(r, errors=DISCARD)[0]["args"]
    assert (bytes(ev["id"]), bytes(ev["installation"]), bytes(ev["record"])) == (ident, inst2, pq)

    # Recovery revokes; a revoked installation can neither publish nor come back.
    r = send_tx(w3, recovery, reg.functions.revokeInstallation(ident, inst2))
    assert (
        reg.events.InstallationRevoked().process_receipt(r, errors=DISCARD)[0]["args"][
            "installation"
        ]
        == inst2
    )
    o = owner.address
    assert_reverts(reg.functions.publishBundle(ident, inst2, b2), o, "InstallationNotActive")
    assert_reverts(reg.functions.publishPqKey(ident, inst2, b2), o, "InstallationNotActive")
    assert_reverts(reg.functions.revokeInstallation(ident, inst2), o, "InstallationNotActive")
    assert_reverts(reg.functions.addInstallation(ident, inst2, b2), o, "InstallationWasRevoked")
    with pytest.raises(ContractReverted) as exc:
        send_tx(w3, owner, reg.functions.addInstallation(ident, inst2, b2))
    assert exc.value.error == "InstallationWasRevoked"

    view = reg.functions.getIdentity(ident).call()
    got = [(bytes(i[0]), bytes(i[1]), bytes(i[2]), i[3]) for i in view[4]]
    assert [g[0] for g in got] == [inst1, inst2, inst3]
    assert got[1] == (inst2, ZERO32, keccak(pq), True)  # revoked: hash cleared in the view
    assert got[0][3] is False and got[2][3] is False
    # Installation ids are per identity: another identity may use the same device key.
    register(w3, reg, funded_account(), installation=inst2)


def _events(reg, name, receipt):
    return [e["args"] for e in getattr(reg.events, name)().process_receipt(receipt, errors=DISCARD)]


def test_recovery_management(w3, registries, funded_account):
    reg = registries.identity
    owner, recovery, rec2 = funded_account(), funded_account(), funded_account()
    ident, _, _ = register(w3, reg, owner, recovery=recovery.address)
    delay = reg.functions.RECOVERY_DELAY().call()
    assert delay == 3 * 24 * 3600
    tag = rand32()
    set2 = reg.functions.setRecovery(ident, rec2.address, tag)
    assert_reverts(set2, funded_account().address, "NotAuthorized")  # not a stranger
    # The owner's change of an existing recovery is only proposed: the recovery stays.
    r = send_tx(w3, owner, set2)
    assert _events(reg, "RecoveryChanged", r) == []
    (ev,) = _events(reg, "RecoveryChangeProposed", r)
    now = w3.eth.get_block("latest")["timestamp"]
    assert (ev["recovery"], bytes(ev["tag"]), ev["readyAt"]) == (rec2.address, tag, now + delay)
    assert reg.functions.getIdentity(ident).call()[2] == recovery.address
    got = reg.functions.pendingRecovery(ident).call()
    assert (got[0], got[1], bytes(got[2])) == (rec2.address, now + delay, tag)
    # The old recovery keeps its powers meanwhile, and it cannot be confirmed early.
    confirm = reg.functions.confirmRecovery(ident)
    assert_reverts(confirm, owner.address, "RecoveryChangeNotReady")
    advance_time(w3, delay - 60)
    assert_reverts(confirm, owner.address, "RecoveryChangeNotReady")
    advance_time(w3, 60)
    # Anyone may confirm once the delay has passed; the tag is logged with the change.
    r = send_tx(w3, funded_account(), confirm)
    (ev,) = _events(reg, "RecoveryChanged", r)
    assert (bytes(ev["id"]), ev["recovery"], bytes(ev["tag"])) == (ident, rec2.address, tag)
    assert reg.functions.nonces(rec2.address).call() == 0  # the new recovery signed nothing
    assert reg.functions.getIdentity(ident).call()[2] == rec2.address
    assert reg.functions.pendingRecovery(ident).call()[1] == 0
    assert_reverts(confirm, owner.address, "NoPendingRecovery")
    # The old recovery lost its powers.
    assert_reverts(
        reg.functions.revokeInstallation(ident, rand32()), recovery.address, "NotAuthorized"
    )
    # The recovery account itself changes (or clears) the recovery at once.
    r = send_tx(w3, rec2, reg.functions.setRecovery(ident, recovery.address, ZERO32))
    assert _events(reg, "RecoveryChanged", r)[0]["recovery"] == recovery.address
    assert reg.functions.getIdentity(ident).call()[2] == recovery.address
    # Clearing by the owner waits too; then, with no recovery, the owner sets one at once.
    send_tx(w3, owner, reg.functions.setRecovery(ident, ZERO, ZERO32))
    assert reg.functions.getIdentity(ident).call()[2] == recovery.address
    advance_time(w3, delay)
    send_tx(w3, owner, confirm)
    assert reg.functions.getIdentity(ident).call()[2] == ZERO
    r = send_tx(w3, owner, reg.functions.setRecovery(ident, rec2.address, tag))
    assert _events(reg, "RecoveryChanged", r)[0]["recovery"] == rec2.address
    assert reg.functions.getIdentity(ident).call()[2] == rec2.address


def test_a_thief_with_the_owner_key_cannot_lock_recovery_out(w3, registries, funded_account):
    """Every device holds the owner key. A thief's recovery change waits; the user's recovery
    account cancels it, or takes the identity back, which cancels it too."""
    reg = registries.identity
    owner, recovery, thief = funded_account(), funded_account(), funded_account()
    ident, _, _ = register(w3, reg, owner, recovery=recovery.address)
    delay = reg.functions.RECOVERY_DELAY().call()
    # 1. the recovery account cancels the thief's proposal
    send_tx(w3, owner, reg.functions.setRecovery(ident, thief.address, rand32()))
    cancel = reg.functions.cancelRecoveryChange(ident)
    assert_reverts(cancel, thief.address, "NotAuthorized")
    r = send_tx(w3, recovery, cancel)
    (ev,) = _events(reg, "RecoveryChangeCancelled", r)
    assert (bytes(ev["id"]), ev["recovery"]) == (ident, thief.address)
    advance_time(w3, delay)
    assert_reverts(reg.functions.confirmRecovery(ident), thief.address, "NoPendingRecovery")
    assert_reverts(cancel, recovery.address, "NoPendingRecovery")
    assert reg.functions.getIdentity(ident).call()[2] == recovery.address
    # 2. the recovery account takes the identity back: the proposal goes with the old owner
    send_tx(w3, owner, reg.functions.setRecovery(ident, thief.address, rand32()))
    new_owner = funded_account()
    sig = _accept_sig(w3, registries, new_owner, ident, owner.address, deadline(w3))
    r = send_tx(w3, recovery, reg.functions.setOwner(ident, new_owner.address, deadline(w3), sig))
    assert _events(reg, "RecoveryChangeCancelled", r)[0]["recovery"] == thief.address
    advance_time(w3, delay)
    assert_reverts(reg.functions.confirmRecovery(ident), thief.address, "NoPendingRecovery")
    assert reg.functions.getIdentity(ident).call()[2] == recovery.address
    # 3. an owner's own transfer keeps its proposal (only the recovery's takeover cancels)
    send_tx(w3, new_owner, reg.functions.setRecovery(ident, thief.address, rand32()))
    newer = funded_account()
    sig = _accept_sig(w3, registries, newer, ident, new_owner.address, deadline(w3))
    r = send_tx(w3, new_owner, reg.functions.setOwner(ident, newer.address, deadline(w3), sig))
    assert _events(reg, "RecoveryChangeCancelled", r) == []
    assert reg.functions.pendingRecovery(ident).call()[0] == thief.address


def test_register_with_a_recovery_meets_the_gas_target(w3, registries, funded_account):
    """Issue 2: register identity + first installation + 290 B bundle <= 150k gas, with a
    recovery account named (no on-chain consent: the binding is the salt, client-side)."""
    reg = registries.identity
    owner = funded_account()
    call = reg.functions.register(rand32(), funded_account(0).address, rand32(), bundle_bytes())
    assert send_tx(w3, owner, call)["gasUsed"] <= 150_000


def test_owner_transfer_needs_new_owner_consent(w3, registries, funded_account):
    reg = registries.identity
    owner, recovery, new_owner, stranger = (funded_account() for _ in range(4))
    ident, inst, _ = register(w3, reg, owner, recovery=recovery.address)
    dl = deadline(w3)
    good = _accept_sig(w3, registries, new_owner, ident, owner.address, dl)

    # A stranger cannot move it even with the new owner's consent.
    assert_reverts(
        reg.functions.setOwner(ident, new_owner.address, dl, good),
        stranger.address,
        "NotAuthorized",
    )
    # Without consent (empty / wrong signer / wrong current owner in the message) it fails.
    o = owner.address
    assert_reverts(reg.functions.setOwner(ident, new_owner.address, dl, b""), o, "InvalidSignature")
    forged = _accept_sig(w3, registries, stranger, ident, owner.address, dl)
    assert_reverts(
        reg.functions.setOwner(ident, new_owner.address, dl, forged), o, "InvalidSignature"
    )
    stale = _accept_sig(w3, registries, new_owner, ident, recovery.address, dl)
    assert_reverts(
        reg.functions.setOwner(ident, new_owner.address, dl, stale), o, "InvalidSignature"
    )
    assert_reverts(reg.functions.setOwner(ident, ZERO, dl, good), o, "ZeroAddress")
    # An account that already has an identity cannot receive another.
    busy = funded_account()
    register(w3, reg, busy)
    busy_sig = _accept_sig(w3, registries, busy, ident, owner.address, dl)
    assert_reverts(
        reg.functions.setOwner(ident, busy.address, dl, busy_sig), o, "AlreadyRegistered"
    )

    r = send_tx(w3, owner, reg.functions.setOwner(ident, new_owner.address, dl, good))
    ev = reg.events.OwnerChanged().process_receipt(r, errors=DISCARD)[0]["args"]
    assert (bytes(ev["id"]), ev["previousOwner"], ev["newOwner"]) == (ident, o, new_owner.address)
    assert reg.functions.ownerOf(ident).call() == new_owner.address
    assert bytes(reg.functions.identityOf(new_owner.address).call()) == ident
    assert bytes(reg.functions.identityOf(owner.address).call()) == ZERO32
    # What survives a transfer: installations and recovery.
    view = reg.functions.getIdentity(ident).call()
    assert view[2] == recovery.address and bytes(view[4][0][0]) == inst
    # The consent is single-use (nonce consumed).
    assert reg.functions.nonces(new_owner.address).call() == 1
    # The old owner has no more rights.
    assert_reverts(reg.functions.publishBundle(ident, inst, b"x"), o, "NotAuthorized")
    assert_reverts(reg.functions.setRecovery(ident, o, ZERO32), o, "NotAuthorized")


def test_recovery_replaces_owner_and_revokes(w3, registries, funded_account):
    reg = registries.identity
    owner, recovery, new_owner = funded_account(), funded_account(), funded_account()
    ident, inst, _ = register(w3, reg, owner, recovery=recovery.address)
    dl = deadline(w3)
    sig = _accept_sig(w3, registries, new_owner, ident, owner.address, dl)
    send_tx(w3, recovery, reg.functions.setOwner(ident, new_owner.address, dl, sig))
    assert reg.functions.ownerOf(ident).call() == new_owner.address
    # Lost every device: recovery revokes the old one and adds a new one.
    send_tx(w3, recovery, reg.functions.revokeInstallation(ident, inst))
    fresh = rand32()
    send_tx(w3, recovery, reg.functions.addInstallation(ident, fresh, bundle_bytes()))
    view = reg.functions.getIdentity(ident).call()
    assert [(bytes(i[0]), i[3]) for i in view[4]] == [(inst, True), (fresh, False)]
    # Recovery may make itself the owner without a separate consent signature.
    send_tx(w3, recovery, reg.functions.setOwner(ident, recovery.address, 0, b""))
    assert reg.functions.ownerOf(ident).call() == recovery.address


def test_wallet_links(w3, registries, funded_account):
    reg = registries.identity
    owner, recovery, wallet, stranger = (funded_account() for _ in range(4))
    ident, _, _ = register(w3, reg, owner, recovery=recovery.address)
    dl = deadline(w3)
    sig = _link_sig(w3, registries, wallet, ident, dl)
    # Only the owner links (recovery and strangers cannot), and only with the wallet's consent.
    for who in (recovery, stranger, wallet):
        assert_reverts(
            reg.functions.linkWallet(ident, wallet.address, dl, sig), who.address, "NotAuthorized"
        )
    forged = _link_sig(w3, registries, stranger, ident, dl)
    assert_reverts(
        reg.functions.linkWallet(ident, wallet.address, dl, forged),
        owner.address,
        "InvalidSignature",
    )
    r = send_tx(w3, owner, reg.functions.linkWallet(ident, wallet.address, dl, sig))
    assert (
        reg.events.WalletLinked().process_receipt(r, errors=DISCARD)[0]["args"]["wallet"]
        == wallet.address
    )
    assert bytes(reg.functions.identityOf(wallet.address).call()) == ident
    assert bytes(reg.functions.getIdentityByAccount(wallet.address).call()[0]) == ident
    # Consent is single-use.
    assert_reverts(
        reg.functions.linkWallet(ident, wallet.address, dl, sig), owner.address, "InvalidSignature"
    )
    # A linked wallet cannot register its own identity, nor be linked twice.
    assert_reverts(
        reg.functions.register(rand32(), ZERO, rand32(), b"x"), wallet.address, "AlreadyRegistered"
    )
    sig2 = _link_sig(w3, registries, wallet, ident, dl)
    assert_reverts(
        reg.functions.linkWallet(ident, wallet.address, dl, sig2),
        owner.address,
        "AlreadyRegistered",
    )
    # Strangers cannot unlink; the owner cannot be "unlinked".
    assert_reverts(
        reg.functions.unlinkWallet(ident, wallet.address), stranger.address, "NotAuthorized"
    )
    assert_reverts(
        reg.functions.unlinkWallet(ident, owner.address), owner.address, "WalletNotLinked"
    )
    r = send_tx(w3, owner, reg.functions.unlinkWallet(ident, wallet.address))
    assert (
        reg.events.WalletUnlinked().process_receipt(r, errors=DISCARD)[0]["args"]["wallet"]
        == wallet.address
    )
    assert bytes(reg.functions.identityOf(wallet.address).call()) == ZERO32
    assert_reverts(
        reg.functions.unlinkWallet(ident, wallet.address), owner.address, "WalletNotLinked"
    )
    # The wallet itself may leave.
    send_tx(w3, owner, reg.functions.linkWallet(ident, wallet.address, dl, sig2))
    send_tx(w3, wallet, reg.functions.unlinkWallet(ident, wallet.address))
    assert bytes(reg.functions.identityOf(wallet.address).call()) == ZERO32


def test_the_recovery_account_may_unlink_a_wallet(w3, registries, funded_account):
    """unlinkWallet: 'Owner, recovery or the wallet itself removes a wallet link'."""
    reg = registries.identity
    owner, recovery, wallet = (funded_account() for _ in range(3))
    ident, _, _ = register(w3, reg, owner, recovery=recovery.address)
    dl = deadline(w3)
    sig = _link_sig(w3, registries, wallet, ident, dl)
    send_tx(w3, owner, reg.functions.linkWallet(ident, wallet.address, dl, sig))
    assert bytes(reg.functions.identityOf(wallet.address).call()) == ident
    send_tx(w3, recovery, reg.functions.unlinkWallet(ident, wallet.address))
    assert bytes(reg.functions.identityOf(wallet.address).call()) == ZERO32
