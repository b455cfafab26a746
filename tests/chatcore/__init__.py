"""Tests of the 1:1 core. Shared helpers live here (deterministic rng, a ready session pair)."""

from __future__ import annotations

import random
from collections.abc import Callable

from chatcore.keys import InstallationKeys, SignedPrekey
from chatcore.session import PeerInfo, Session

SENDER_INFO = b"identity:0123456789abcdef|installation:fedcba9876543210"


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    """A deterministic ``rng`` for tests (never for real keys)."""
    r = random.Random(seed)
    return r.randbytes


def make_parties(
    seed: int = 1,
) -> tuple[InstallationKeys, InstallationKeys, SignedPrekey, Callable[[int], bytes]]:
    rng = seeded_rng(seed)
    a = InstallationKeys.generate(rng)
    b = InstallationKeys.generate(rng)
    spk = SignedPrekey.generate(rng, 7, 2**50)
    return a, b, spk, rng


def make_pair(
    seed: int = 1, *, pq: bool = True, reply: bool = True
) -> tuple[Session, Session, PeerInfo]:
    """Alice -> Bob session pair; with ``reply`` Bob has answered once (steady state)."""
    a, b, spk, rng = make_parties(seed)
    alice = Session.initiate(a, b.peer_keys(spk, with_pq=pq), SENDER_INFO, rng)
    bob, info, pt = Session.respond(b, {spk.id: spk}, {b.pq.id: b.pq}, alice.encrypt(b"first", rng))
    assert pt == b"first"
    if reply:
        assert alice.decrypt(bob.encrypt(b"reply", rng)) == b"reply"
    return alice, bob, info
