"""Session setup from a resolved bundle, both sides, vs vodozemac Olm.

    .venv/bin/python -m bench.session_setup [--json] [--n N]

Ours: ``Session.initiate`` (3 X25519 + ML-KEM-768 encapsulation) + first ``encrypt`` +
``Session.respond`` (3 X25519 + decapsulation + first decrypt). Key material (installation keys,
prekeys) exists beforehand, as it would from the resolver and the local store. Olm: outbound
session + first encrypt + inbound session (one-time key generation excluded).
"""

from __future__ import annotations

import os
import time

import vodozemac

from chatcore.keys import InstallationKeys, SignedPrekey
from chatcore.session import Session

from ._util import Row, parse_args, report

MSG = os.urandom(200)


def main() -> None:
    args = parse_args(__doc__ or "")
    n = args.n or 300
    rng = os.urandom
    a = InstallationKeys.generate(rng)
    b = InstallationKeys.generate(rng)
    spk = SignedPrekey.generate(rng, 1, 2**62)
    prekeys = {1: spk}
    pqs = {b.pq.id: b.pq}

    def ours(pq: bool) -> float:
        peer = b.peer_keys(spk, with_pq=pq)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                s = Session.initiate(a, peer, b"sender-info", rng)
                Session.respond(b, prekeys, pqs, s.encrypt(MSG, rng))
            best = min(best, time.perf_counter() - t0)
        return best / n * 1e6

    def olm() -> float:
        acc_a, acc_b = vodozemac.Account(), vodozemac.Account()
        best = float("inf")
        for _ in range(5):
            acc_b.generate_one_time_keys(n)
            otks = list(acc_b.one_time_keys.values())
            acc_b.mark_keys_as_published()
            t0 = time.perf_counter()
            for otk in otks:
                s = acc_a.create_outbound_session(acc_b.curve25519_key, otk)
                acc_b.create_inbound_session(acc_a.curve25519_key, s.encrypt(MSG).to_pre_key())
            best = min(best, time.perf_counter() - t0)
        return best / n * 1e6

    hybrid = ours(True)
    classical = ours(False)
    olm_us = olm()
    s = Session.initiate(a, b.peer_keys(spk), b"x" * 64, rng)
    first = s.encrypt(MSG, rng)
    rows = [
        Row(
            "setup both sides, hybrid PQ",
            hybrid,
            "µs",
            f"≤ 500 µs (Olm {olm_us:,.0f} µs)",
            hybrid <= 500,
        ),
        Row("setup both sides, classical", classical, "µs", "informational", None),
        Row("Olm setup both sides", olm_us, "µs", "reference (FIELD-NOTES 436 µs)", None),
        Row(
            "first frame overhead",
            len(first) - len(MSG),
            "B",
            "informational (64 B sender_info)",
            None,
        ),
    ]
    report(
        "bench.session_setup: initiate + first message + respond, 200-byte message",
        rows,
        args.json,
        {"n": n},
    )


if __name__ == "__main__":
    main()
