"""Steady-state ratchet throughput vs vodozemac Olm, and bytes on the wire.

    .venv/bin/python -m bench.ratchet [--json] [--n N]

One direction, in order, 200-byte plaintexts, after the session is established (the first
handshake frame and its reply are done before timing). Olm is measured in the same run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import vodozemac

from chatcore.keys import InstallationKeys, SignedPrekey
from chatcore.session import Session

from ._util import Row, best_rate, parse_args, report

MSG = os.urandom(200)


def _ours() -> tuple[Session, Session]:
    a = InstallationKeys.generate(os.urandom)
    b = InstallationKeys.generate(os.urandom)
    spk = SignedPrekey.generate(os.urandom, 1, 2**62)
    alice = Session.initiate(a, b.peer_keys(spk), b"bench", os.urandom)
    bob, _, _ = Session.respond(b, {1: spk}, {b.pq.id: b.pq}, alice.encrypt(b"hi", os.urandom))
    alice.decrypt(bob.encrypt(b"hi", os.urandom))
    return alice, bob


def _olm() -> tuple[vodozemac.Session, vodozemac.Session]:
    a, b = vodozemac.Account(), vodozemac.Account()
    b.generate_one_time_keys(1)
    otk = next(iter(b.one_time_keys.values()))
    alice = a.create_outbound_session(b.curve25519_key, otk)
    bob, _ = b.create_inbound_session(a.curve25519_key, alice.encrypt(b"hi").to_pre_key())
    alice.decrypt(bob.encrypt(b"hi"))
    return alice, bob


def main() -> None:
    args = parse_args(__doc__ or "")
    n = args.n or 20000
    alice, bob = _ours()
    oa, _ob = _olm()
    rng = os.urandom

    def ours_enc(k: int) -> None:
        enc = alice.encrypt
        for _ in range(k):
            enc(MSG, rng)

    def olm_enc(k: int) -> None:
        enc = oa.encrypt
        for _ in range(k):
            enc(MSG)

    ours_e = best_rate(ours_enc, n)
    olm_e = best_rate(olm_enc, n)

    # decrypt: a fresh pair per repetition, frames encrypted beforehand so only decryption
    # (in order) is timed.
    def timed_decrypt(
        make_pair: Callable[[], tuple[Any, Any]], enc: Callable[[Any], bytes], reps: int = 5
    ) -> float:
        best = float("inf")
        for _ in range(reps):
            snd, rcv = make_pair()
            frames = [enc(snd) for _ in range(n)]
            dec = rcv.decrypt
            t0 = time.perf_counter()
            for f in frames:
                dec(f)
            best = min(best, time.perf_counter() - t0)
        return n / best

    ours_d = timed_decrypt(_ours, lambda s: s.encrypt(MSG, rng))
    olm_d = timed_decrypt(_olm, lambda s: s.encrypt(MSG))

    alice, bob = _ours()
    oa, _ = _olm()
    frame = alice.encrypt(MSG, rng)
    bob.decrypt(frame)
    olm_msg = oa.encrypt(MSG)
    _, olm_ct = olm_msg.to_parts()
    overhead = len(frame) - len(MSG)

    enc_ratio, dec_ratio = ours_e / olm_e, ours_d / olm_d
    rows = [
        Row("encrypt (ours)", ours_e, "msg/s", f"≥ 1.0× Olm ({olm_e:,.0f}/s)", enc_ratio >= 1.0),
        Row("encrypt ratio ours/Olm", enc_ratio, "×", "≥ 1.0", enc_ratio >= 1.0),
        Row("decrypt (ours)", ours_d, "msg/s", f"≥ 0.5× Olm ({olm_d:,.0f}/s)", dec_ratio >= 0.5),
        Row("decrypt ratio ours/Olm", dec_ratio, "×", "≥ 0.5", dec_ratio >= 0.5),
        Row("Olm encrypt", olm_e, "msg/s", "reference (FIELD-NOTES 52.7k)", None),
        Row("Olm decrypt", olm_d, "msg/s", "reference (FIELD-NOTES 476k)", None),
        Row("wire overhead, 200 B msg", overhead, "B", "≤ 62 B (Olm 58 B)", overhead <= 62),
        Row("frame size, 200 B msg", len(frame), "B", f"Olm {len(olm_ct)} B", None),
    ]
    report(
        "bench.ratchet: steady state, one direction, 200-byte messages", rows, args.json, {"n": n}
    )


if __name__ == "__main__":
    main()
