"""Binding a recovery phrase to the identity it protects, off-chain.

The registry lets anyone name any address as the recovery of their own identity (no consent:
that cost 28.6k gas per register). So a recovery address, which is public, can be named by
decoys, and recovery by phrase must tell the phrase's own identity from them. Only the
phrase's holder can, with a key derived from the phrase's account key (:func:`tag_key`,
HKDF-SHA256):

* at registration the client takes ``salt = HMAC-SHA256(tag key, SALT_DOMAIN || chain id ||
  registry || owner)``, so the id ``keccak256(abi.encode(owner, salt))`` is bound to the phrase
  (:func:`registration_salt`);
* a later ``setRecovery`` (a new phrase, which did not make the salt) logs
  ``tag = HMAC-SHA256(tag key of the new phrase, TAG_DOMAIN || chain id || registry || id)``
  in RecoveryChanged (:func:`recovery_tag`).

:func:`bound_to_phrase` checks an identity's events for either. Nobody without the phrase can
make an id or a tag that passes; a tag copied from another identity's event names another id.
Chain id (32 bytes, big-endian), registry (20 bytes) and owner (20) / id (32) have fixed
lengths after a fixed domain string, so the MAC inputs are unambiguous.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_utils.address import to_canonical_address, to_checksum_address

if TYPE_CHECKING:
    from discovery.registry import Event

TAG_KEY_INFO = b"logos-chat/recovery-tag-key/v1"
SALT_DOMAIN = b"logos-chat/recovery-salt/v1"
TAG_DOMAIN = b"logos-chat/recovery-tag/v1"


def tag_key(recovery_key: bytes) -> bytes:
    """The MAC key of a recovery phrase, from its account's 32-byte private key."""
    if len(recovery_key) != 32:
        raise ValueError("a recovery account key is 32 bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=TAG_KEY_INFO)
    return hkdf.derive(bytes(recovery_key))


def _mac(recovery_key: bytes, domain: bytes, chain_id: int, registry: str, subject: bytes) -> bytes:
    if not 0 <= chain_id < 2**256:
        raise ValueError(f"chain id out of range: {chain_id}")
    msg = domain + chain_id.to_bytes(32, "big") + to_canonical_address(registry) + subject
    return hmac.digest(tag_key(recovery_key), msg, "sha256")


def registration_salt(recovery_key: bytes, chain_id: int, registry: str, owner: str) -> bytes:
    """The register salt that binds the phrase (its account key) to ``owner``'s new id."""
    return _mac(recovery_key, SALT_DOMAIN, chain_id, registry, to_canonical_address(owner))


def recovery_tag(recovery_key: bytes, chain_id: int, registry: str, identity_id: bytes) -> bytes:
    """The setRecovery tag that binds the phrase (its account key) to ``identity_id``."""
    if len(identity_id) != 32:
        raise ValueError("an identity id is 32 bytes")
    return _mac(recovery_key, TAG_DOMAIN, chain_id, registry, identity_id)


def bound_to_phrase(
    recovery_key: bytes,
    recovery: str,
    chain_id: int,
    registry: str,
    identity_id: bytes,
    events: Iterable[Event],
) -> bool:
    """Whether the phrase (account ``recovery``, key ``recovery_key``) made ``identity_id``
    its own: a RecoveryChanged naming ``recovery`` with the phrase's tag for this id, or an
    IdentityRegistered naming it whose owner and the phrase's salt give this id. Events from
    another contract or about another id do not count. Any such event will do: none can be
    forged without the phrase, so one a node invents or holds back cannot make a decoy pass
    (only hide an identity, which a node can always do)."""
    from discovery.registry import identity_id_for

    want = to_checksum_address(recovery)
    contract = to_checksum_address(registry)
    tag = recovery_tag(recovery_key, chain_id, registry, identity_id)
    for ev in events:
        a = ev.args
        if ev.address != contract or a.get("id") != identity_id or a.get("recovery") != want:
            continue
        if ev.name == "RecoveryChanged" and hmac.compare_digest(bytes(a["tag"]), tag):
            return True
        if ev.name == "IdentityRegistered":
            owner = a["owner"]
            salt = registration_salt(recovery_key, chain_id, registry, owner)
            if identity_id_for(owner, salt) == identity_id:
                return True
    return False
