"""Group core benchmark: ``python -m bench.group [--json]``.

Figures beside targets (ok / MISS). CPU = ``time.process_time``; throughput = wall clock
of a tight loop, best of 3, side by side with vodozemac's Megolm in the same run.
Pairwise payloads (welcomes, distributions) travel inside 1:1 sessions whose overhead
the engine adds; it is *estimated* here as +62 B per payload.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

from chatcore.group import GroupState, InstallationKey, Outgoing, Publish, SendTo
from chatcore.group.consts import KIND_DISTRIBUTION, KIND_WELCOME

PAIRWISE_OVERHEAD_ESTIMATE = 62
N = 201
MSG = b"x" * 200


class _Net:
    def __init__(self, seed: int) -> None:
        r = random.Random(seed)
        self.rng: Callable[[int], bytes] = r.randbytes
        self.keys = [InstallationKey.generate(self.rng) for _ in range(N + 1)]
        self.ids = [self.rng(32) for _ in range(N + 1)]
        self.directory = {i: [k.public] for i, k in zip(self.ids, self.keys, strict=True)}
        self.by_inst = {k.public: n for n, k in enumerate(self.keys)}
        self.states: dict[int, GroupState] = {}
        self.pairwise: list[bytes] = []  # every pairwise payload delivered

    def deliver(self, src: int, out: list[Outgoing]) -> None:
        """Deliver pairwise payloads (welcome first, then distributions) and ops."""
        queue = [(src, o) for o in out]
        while queue:
            s, o = queue.pop(0)
            if isinstance(o, Publish):
                for n, st in list(self.states.items()):
                    if n != s:
                        self.states[n], more = st.apply_op(o.payload, self.directory, self.rng)
                        queue += [(n, m) for m in more]
                continue
            assert isinstance(o, SendTo)
            n = self.by_inst[o.installation]
            self.pairwise.append(o.payload)
            if o.payload[0] == KIND_WELCOME:
                st, more = GroupState.join(
                    o.payload, self.ids[n], o.installation, self.directory, self.rng
                )
                self.states[n] = st
                queue += [(n, m) for m in more]
            elif o.payload[0] == KIND_DISTRIBUTION and n in self.states:
                self.states[n] = self.states[n].receive_distribution(self.keys[s].public, o.payload)


def _bytes(out: list[Outgoing]) -> dict[str, int]:
    pair = [o for o in out if isinstance(o, SendTo)]
    dist = [o for o in pair if o.payload[0] == KIND_DISTRIBUTION]
    welc = [o for o in pair if o.payload[0] == KIND_WELCOME]
    return {
        "published_bytes": sum(len(o.payload) for o in out if isinstance(o, Publish)),
        "distributions": len(dist),
        "distribution_bytes": sum(len(o.payload) for o in dist),
        "welcomes": len(welc),
        "welcome_bytes": sum(len(o.payload) for o in welc),
        "pairwise_overhead_estimate": len(pair) * PAIRWISE_OVERHEAD_ESTIMATE,
    }


def _rate(fn: Callable[[], None], n: int) -> float:
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t))
    return best


def run() -> dict[str, object]:
    net = _Net(2026)
    ids, keys = net.ids, net.keys

    # 1. creation of a 201-member group, every member's key distributed to every other
    t = time.process_time()
    st, out = GroupState.create(
        net.rng(32), "bench", ids[0], keys[0], ids[1:N], net.directory, net.rng, 0
    )
    creator_cpu = time.process_time() - t
    net.states[0] = st
    create_bytes = _bytes(out)
    t = time.process_time()
    net.deliver(0, out)
    all_cpu = time.process_time() - t + creator_cpu
    total_dists = sum(1 for p in net.pairwise if p[0] == KIND_DISTRIBUTION)
    total_dist_bytes = sum(len(p) for p in net.pairwise if p[0] == KIND_DISTRIBUTION)
    total_welcome_bytes = sum(len(p) for p in net.pairwise if p[0] == KIND_WELCOME)
    assert total_dists == N * (N - 1)

    # 2. throughput: member 1 encrypts, member 2 (holding 200 chains) decrypts
    sender, receiver = net.states[1], net.states[2]
    k = 20_000
    frames: list[bytes] = []

    def enc() -> None:  # every round starts from the same state: same frames
        frames.clear()
        s = sender
        for _ in range(k):
            s, f = s.encrypt(MSG)
            frames.append(f)

    def dec() -> None:
        r = receiver
        for f in frames:
            r = r.decrypt(f)[0]

    enc_rate = _rate(enc, k)
    dec_rate = _rate(dec, k)  # every round decrypts from the same starting state
    overhead = len(frames[-1]) - len(MSG)

    import vodozemac

    gs = vodozemac.GroupSession()
    inbound = vodozemac.InboundGroupSession(gs.session_key)
    mframes: list[vodozemac.MegolmMessage] = []

    def menc() -> None:
        mframes.clear()
        for _ in range(k):
            mframes.append(gs.encrypt(MSG))

    def mdec() -> None:
        for f in mframes:
            inbound.decrypt(f)

    m_enc = _rate(menc, k)
    m_dec = _rate(mdec, k)
    megolm_overhead = len(mframes[-1].to_bytes()) - len(MSG)

    # 3. removal with rekey (remover's CPU), then everyone applies it
    t = time.process_time()
    st0, rm_out = net.states[0].remove_member(ids[N - 1], keys[0], net.directory, net.rng, 1)
    remove_cpu = time.process_time() - t
    net.states[0] = st0
    rm_bytes = _bytes(rm_out)
    del net.states[N - 1]
    t = time.process_time()
    net.deliver(0, rm_out)
    remove_all_cpu = time.process_time() - t + remove_cpu

    # 4. add one member
    t = time.process_time()
    st0, add_out = net.states[0].add_member(ids[N], keys[0], net.directory, net.rng, 2)
    add_cpu = time.process_time() - t
    net.states[0] = st0
    add_bytes = _bytes(add_out)
    t = time.process_time()
    net.deliver(0, add_out)
    add_all_cpu = time.process_time() - t + add_cpu
    ok_all = all(
        s.decrypt(net.states[0].encrypt(b"check")[1])[3] == b"check"
        for n, s in net.states.items()
        if n != 0
    )

    def row(value: float, target: float, higher: bool) -> dict[str, object]:
        good = value >= target if higher else value <= target
        return {"value": round(value, 4), "target": target, "ok": good}

    return {
        "create_201_creator_cpu_s": row(creator_cpu, 3.0, False),
        "create_201_all_members_cpu_s": row(all_cpu, 3.0, False),
        "create_creator_bytes": create_bytes,
        "create_all_distributions": total_dists,
        "create_all_distribution_bytes": total_dist_bytes,
        "create_all_welcome_bytes": total_welcome_bytes,
        "create_all_pairwise_overhead_estimate": (total_dists + N - 1) * PAIRWISE_OVERHEAD_ESTIMATE,
        "remove_remover_cpu_ms": row(remove_cpu * 1000, 200.0, False),
        "remove_all_members_cpu_ms": round(remove_all_cpu * 1000, 1),
        "remove_remover_bytes": rm_bytes,
        "add_adder_cpu_ms": round(add_cpu * 1000, 2),
        "add_all_members_cpu_ms": round(add_all_cpu * 1000, 1),
        "add_adder_bytes": add_bytes,
        "encrypt_per_s": round(enc_rate),
        "decrypt_per_s": round(dec_rate),
        "megolm_encrypt_per_s": round(m_enc),
        "megolm_decrypt_per_s": round(m_dec),
        "encrypt_vs_megolm": row(enc_rate / m_enc, 1.0, True),
        "decrypt_vs_megolm": row(dec_rate / m_dec, 0.7, True),
        "wire_overhead_200B": row(overhead, 100, False),
        "megolm_wire_overhead_200B": megolm_overhead,
        "all_members_read_after_add": ok_all,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, v in result.items():
        if isinstance(v, dict) and "target" in v:
            flag = "ok" if v["ok"] else "MISS"
            print(f"{name:40s} {v['value']:>12}  target {v['target']:>8}  {flag}")
        else:
            print(f"{name:40s} {v}")


if __name__ == "__main__":
    main()
