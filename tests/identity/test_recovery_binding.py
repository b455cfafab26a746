"""discovery.recovery_binding without a chain: what binds a phrase to an identity id, and
what does not (events are built by hand, as a node could)."""

from __future__ import annotations

import os

import pytest
from eth_account import Account

from discovery.recovery_binding import (
    bound_to_phrase,
    recovery_tag,
    registration_salt,
    tag_key,
)
from discovery.registry import Event, identity_id_for

CHAIN = 31337
REGISTRY = Account.create().address
OTHER_CONTRACT = Account.create().address


def _event(name: str, address: str = REGISTRY, **args: object) -> Event:
    return Event(name=name, block_number=1, log_index=0, tx_hash="", address=address, args=args)


def test_salt_and_tag_depend_on_every_input() -> None:
    key, other_key = os.urandom(32), os.urandom(32)
    owner, ident = Account.create().address, os.urandom(32)
    salt = registration_salt(key, CHAIN, REGISTRY, owner)
    assert salt == registration_salt(key, CHAIN, REGISTRY, owner.lower())  # deterministic
    assert len(salt) == 32 and tag_key(key) != key
    for changed in (
        registration_salt(other_key, CHAIN, REGISTRY, owner),
        registration_salt(key, CHAIN + 1, REGISTRY, owner),
        registration_salt(key, CHAIN, OTHER_CONTRACT, owner),
        registration_salt(key, CHAIN, REGISTRY, Account.create().address),
    ):
        assert changed != salt
    tag = recovery_tag(key, CHAIN, REGISTRY, ident)
    assert tag != recovery_tag(key, CHAIN, REGISTRY, os.urandom(32))
    assert tag != recovery_tag(other_key, CHAIN, REGISTRY, ident)


@pytest.mark.parametrize(
    "call",
    [
        lambda: tag_key(b"short"),
        lambda: recovery_tag(os.urandom(32), CHAIN, REGISTRY, b"\x01" * 31),
        lambda: registration_salt(os.urandom(32), -1, REGISTRY, REGISTRY),
        lambda: registration_salt(os.urandom(32), CHAIN, "0x1234", REGISTRY),
    ],
)
def test_bad_input_is_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_only_the_phrases_own_registrations_and_tags_bind() -> None:
    rec = Account.create()
    key, addr = rec.key, rec.address
    owner = Account.create().address
    ident = identity_id_for(owner, registration_salt(key, CHAIN, REGISTRY, owner))

    def bound(ident_: bytes, *events: Event) -> bool:
        return bound_to_phrase(key, addr, CHAIN, REGISTRY, ident_, events)

    registered = _event("IdentityRegistered", id=ident, owner=owner, recovery=addr)
    assert bound(ident, registered)
    assert not bound(ident)
    # the same registration from another contract, naming another recovery, or claiming
    # another owner (a node's invention) does not bind
    assert not bound(ident, _event("IdentityRegistered", OTHER_CONTRACT, **registered.args))
    other_rec = Account.create().address
    assert not bound(ident, _event("IdentityRegistered", id=ident, owner=owner, recovery=other_rec))
    assert not bound(ident, _event("IdentityRegistered", id=ident, owner=REGISTRY, recovery=addr))
    # a decoy: someone else's owner with a salt of their own, or with the victim's salt
    for salt in (os.urandom(32), registration_salt(key, CHAIN, REGISTRY, owner)):
        attacker = Account.create().address
        decoy = identity_id_for(attacker, salt)
        assert not bound(
            decoy, _event("IdentityRegistered", id=decoy, owner=attacker, recovery=addr)
        )

    # a later phrase: the tag of this id binds it, a copy of it on another id does not
    later = os.urandom(32)
    tag = recovery_tag(key, CHAIN, REGISTRY, later)
    assert bound(later, _event("RecoveryChanged", id=later, recovery=addr, tag=tag))
    decoy = os.urandom(32)
    assert not bound(decoy, _event("RecoveryChanged", id=decoy, recovery=addr, tag=tag))
    assert not bound(later, _event("RecoveryChanged", id=later, recovery=addr, tag=bytes(32)))
    assert not bound(later, _event("RecoveryChanged", id=later, recovery=other_rec, tag=tag))
    # a noise event before or after the genuine one changes nothing
    noise = _event("RecoveryChanged", id=later, recovery=addr, tag=os.urandom(32))
    assert bound(later, noise, _event("RecoveryChanged", id=later, recovery=addr, tag=tag), noise)


def test_a_recovery_phrase_is_taken_in_any_case_and_a_bad_one_says_what_is_wrong() -> None:
    """Found by a walk through the identity model on devnet: the phrase written down in
    capitals was refused with "not a valid recovery phrase (12 words; expected the 12
    English words ...)", which says nothing of what is wrong."""
    from chatcore.identity import WrongRecoveryPhrase, recovery_account

    Account.enable_unaudited_hdwallet_features()
    account, phrase = Account.create_with_mnemonic()
    words = phrase.split()
    assert recovery_account(f"  {phrase.upper()}\n").address == account.address
    assert recovery_account(phrase.title()).address == account.address
    unknown = " ".join([*words[:3], "qzxv", *words[4:]])
    with pytest.raises(WrongRecoveryPhrase, match=r"word 4 is not one") as err:
        recovery_account(unknown)
    # the error names the position, not the word: part of a secret, for stderr and logs
    assert "qzxv" not in str(err.value) and err.value.__cause__ is None
    swapped = [*words]
    i = next(i for i in range(11) if words[i] != words[i + 1])
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    try:
        recovery_account(" ".join(swapped))
    except WrongRecoveryPhrase as exc:  # the checksum usually catches a swap
        assert "in order" in str(exc) and "12 words;" not in str(exc)
