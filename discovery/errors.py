"""Errors raised by discovery.

DiscoveryError
├── RecordNotFound            no identity / name / installation matches the query
├── InvalidRecord             a record failed verification; nothing of it is used
│   ├── MalformedRecord       bytes or text that do not decode
│   ├── HashMismatch          record bytes do not hash to what the chain stores
│   ├── BadSignature          signature does not verify under the installation key
│   ├── WrongChain            record bound to another chain id or registry
│   ├── ExpiredPrekey         the signed prekey is past its not-after time
│   ├── UnusableKey           a published public key no session can use (low-order, malformed)
│   ├── RevokedInstallation   the installation was revoked on chain
│   └── StaleRecord           an older sequence number than one already seen
├── RegistryReverted          the contract refused a transaction (carries the reason)
│   └── NameTaken
└── ChainUnavailable          the RPC node cannot be reached or answered nonsense
    └── NotSent               ... before a transaction was sent: nothing of it can land
"""

from __future__ import annotations


class DiscoveryError(Exception):
    """Root of every error discovery raises on purpose."""


class RecordNotFound(DiscoveryError):
    """Nothing on chain matches the query."""


class InvalidQuery(DiscoveryError, ValueError):
    """A lookup query that is no name, identity id, address or bundle text (a typo, not a
    failed verification)."""


class InvalidRecord(DiscoveryError):
    """A record failed verification and was rejected whole."""


class MalformedRecord(InvalidRecord):
    """Bytes or text that do not decode as a record of a known version."""


class HashMismatch(InvalidRecord):
    """The record's bytes do not hash to the value stored on chain."""


class BadSignature(InvalidRecord):
    """The record's signature does not verify."""


class WrongChain(InvalidRecord):
    """The record (or the node) belongs to another chain id or registry."""


class IdentityMismatch(InvalidRecord):
    """The node answered about another identity than the one asked for."""


class ExpiredPrekey(InvalidRecord):
    """The record's signed prekey has expired."""


class UnusableKey(InvalidRecord):
    """A signed record publishes a public key no session can be made with: a low-order
    X25519 point (its Diffie-Hellman output is all zero) or an ML-KEM-768 key that does not
    load. Anyone can sign such a record with their own installation key."""


class RevokedInstallation(InvalidRecord):
    """The installation was revoked on chain."""


class StaleRecord(InvalidRecord):
    """A record older than one already seen for the same installation."""


class RegistryReverted(DiscoveryError):
    """The registry contract reverted a transaction or call."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class NameTaken(RegistryReverted):
    """The name is already claimed by another identity."""


class ChainUnavailable(DiscoveryError):
    """The chain's RPC endpoint cannot be reached."""


class NotSent(ChainUnavailable):
    """The chain failed (unreachable, or refused to estimate it: e.g. no money for gas)
    before a transaction was handed to the node: nothing of it can land."""
