"""The engine's view of discovery: verified peers and sender checks, from the on-chain index."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from chatcore.engine import Peer
from chatcore.errors import UnknownContact, UntrustedIdentity
from chatcore.keys import PeerKeys
from discovery.errors import DiscoveryError, RecordNotFound, RevokedInstallation
from discovery.resolver import ResolvedIdentity, Resolver, VerifiedInstallation


def peer_keys(inst: VerifiedInstallation) -> PeerKeys:
    b = inst.bundle
    return PeerKeys(
        installation_id=b.installation_id,
        ik_x25519=b.ik_x25519,
        spk_id=b.spk_id,
        spk_pub=b.spk_pub,
        pq_key_id=inst.pq.pq_key_id if inst.pq else 0,
        pq_pub=inst.pq.pq_pub if inst.pq else None,
    )


def to_peer(resolved: ResolvedIdentity) -> Peer:
    return Peer(
        identity_id=resolved.identity_id,
        display=resolved.names[0] if resolved.names else None,
        installations=tuple(peer_keys(i) for i in resolved.installations),
    )


class ChainDirectory:
    """Directory over a :class:`Resolver` (normally backed by the synced local index).

    Results are cached until :meth:`refresh` (called after every index sync), so one batch
    of incoming frames costs no chain access at all.
    """

    def __init__(
        self, resolver: Resolver, has_session: Callable[[bytes], bool] | None = None
    ) -> None:
        self.resolver = resolver
        #: do we hold a session with this installation? A device whose signed prekey has
        #: expired (offline past its lifetime) is still written to over a session we have:
        #: the prekey's freshness guards new sessions only
        self.has_session = has_session
        self._cache: dict[tuple[bytes, bool], ResolvedIdentity] = {}

    def refresh(self) -> None:
        self._cache.clear()

    def _resolved(self, identity_id: bytes, fresh: bool) -> ResolvedIdentity:
        key = (identity_id, fresh)
        hit = self._cache.get(key)
        if hit is None:
            hit = self.resolver.resolve_id(identity_id, fresh_prekeys=fresh)
            self._cache[key] = hit
        return hit

    def lookup(self, query: str) -> Peer:
        try:
            return to_peer(self.resolver.resolve(query))
        except RecordNotFound as exc:
            raise UnknownContact(str(exc)) from exc

    def peer(self, identity_id: bytes) -> Peer:
        """The installations to write to: those with a fresh signed prekey, and those we
        hold a session with (their prekey may have expired meanwhile)."""
        try:
            return self._reachable(identity_id)
        except RecordNotFound as exc:
            raise UnknownContact(str(exc)) from exc

    def _reachable(self, identity_id: bytes) -> Peer:
        try:
            fresh: ResolvedIdentity | None = self._resolved(identity_id, True)
            failure: DiscoveryError | None = None
        except DiscoveryError as exc:
            fresh, failure = None, exc
        if self.has_session is not None:
            try:
                every = self._resolved(identity_id, False)
            except DiscoveryError:
                every = None
            if every is not None:
                keep = {i.installation_id for i in fresh.installations} if fresh else set()
                insts = [
                    i
                    for i in every.installations
                    if i.installation_id in keep or self.has_session(i.installation_id)
                ]
                if insts:
                    return to_peer(replace(every, installations=tuple(insts)))
        if fresh is None:
            assert failure is not None
            raise failure
        return to_peer(fresh)

    def own_devices(self, identity_id: bytes) -> tuple[PeerKeys, ...]:
        """Our identity's installations (including this one; callers skip it)."""
        try:
            return self._reachable(identity_id).installations
        except DiscoveryError:
            return ()

    def devices(self, identity_id: bytes) -> tuple[PeerKeys, ...]:
        """Active, verified installations of an identity; () if it cannot be resolved."""
        for fresh in (True, False):
            try:
                return to_peer(self._resolved(identity_id, fresh)).installations
            except DiscoveryError:
                continue
        return ()

    def check_installation(
        self, identity_id: bytes, installation_id: bytes, ik_x25519: bytes
    ) -> None:
        short = installation_id.hex()[:12]
        try:
            resolved = self._resolved(identity_id, False)
        except RevokedInstallation as exc:
            raise UntrustedIdentity(f"installation {short}… is revoked") from exc
        except DiscoveryError as exc:
            raise UntrustedIdentity(f"sender not verifiable on chain: {exc}") from exc
        if installation_id in resolved.revoked:
            raise UntrustedIdentity(f"installation {short}… was revoked on chain")
        inst = resolved.installation(installation_id)
        if inst is None:
            raise UntrustedIdentity(f"installation {short}… is not registered for its identity")
        if inst.bundle.ik_x25519 != ik_x25519:
            raise UntrustedIdentity(f"installation {short}… used a key it never published")
