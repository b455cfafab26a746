"""The installation signing key the engine lends to op-making calls (never stored in state)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chatcore.group._primitives import ed25519_from_seed, ed25519_sign

Rng = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class InstallationKey:
    """An installation's Ed25519 key. ``public`` is the installation id."""

    public: bytes
    _secret: bytes = field(repr=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> InstallationKey:
        """From the 32-byte Ed25519 private key (RFC 8032 seed, pyca ``private_bytes_raw``)."""
        public, secret = ed25519_from_seed(bytes(seed))
        return cls(public, secret)

    @classmethod
    def generate(cls, rng: Rng) -> InstallationKey:
        return cls.from_seed(rng(32))

    def sign(self, message: bytes) -> bytes:
        return ed25519_sign(self._secret, message)
