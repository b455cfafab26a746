"""Delivery-network latency and throughput over loopback JetStream.

    .venv/bin/python -m bench.transport_latency [--json] [--messages N] [--size BYTES]

Starts its own nats-server (free loopback port, temporary store), then:

* latency: N messages of SIZE bytes sent one at a time through ``NatsTransport.publish``
  (awaiting the PubAck) and received by a second client's subscription; publish->receive time
  per message (p50/p99/max);
* publish throughput: sequential publishes awaiting each ack, and ``concurrency`` in flight;
* replay: a fresh subscription reading every stored message from cursor 0.

Stops the server (by pid) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chatcore.transport import inbox_subject
from chatcore.transport.nats import NatsTransport
from devnet.nats import nats_url, start_nats

# the full chat path (encrypt + transport + decrypt + store) must keep p99 <= 20 ms; the
# transport's share should be well under it
TARGET_CHAT_P99_MS = 20.0
TARGET_TRANSPORT_P99_MS = 5.0


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


async def _run(n: int, size: int, concurrency: int) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="lc-bench-nats-")
    proc = start_nats(store_dir=Path(tmp.name) / "store", log_path=Path(tmp.name) / "log")
    try:
        url = nats_url(proc.port)
        sender = await NatsTransport.connect(url)
        receiver = await NatsTransport.connect(url)
        subj = inbox_subject(b"\x42" * 16)
        payload = bytes(size)
        try:
            sub = await receiver.subscribe([subj])
            # warm-up
            for _ in range(50):
                await sender.publish(subj, payload)
                await sub.__anext__()

            lat_ms: list[float] = []
            ack_ms: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                await sender.publish(subj, payload)
                t1 = time.perf_counter()
                await asyncio.wait_for(sub.__anext__(), 5)
                t2 = time.perf_counter()
                ack_ms.append((t1 - t0) * 1000)
                lat_ms.append((t2 - t0) * 1000)

            # sequential publish throughput (each awaits its PubAck)
            m = max(n, 2000)
            t0 = time.perf_counter()
            for _ in range(m):
                await sender.publish(subj, payload)
            seq_rate = m / (time.perf_counter() - t0)

            # concurrent publishers (each still awaits its own PubAck)
            sem = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with sem:
                    await sender.publish(subj, payload)

            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(m)))
            conc_rate = m / (time.perf_counter() - t0)

            # drain the live subscription, then replay everything from cursor 0
            await sub.close()
            total = await sender.last_seq()
            rsub = await receiver.subscribe([subj], after=0)
            t0 = time.perf_counter()
            for _ in range(total):
                await asyncio.wait_for(rsub.__anext__(), 10)
            replay_s = time.perf_counter() - t0
            await rsub.close()
        finally:
            await sender.close()
            await receiver.close()
    finally:
        proc.stop()
        tmp.cleanup()

    return {
        "messages": n,
        "size_bytes": size,
        "latency_ms": {
            "p50": round(statistics.median(lat_ms), 3),
            "p99": round(_pct(lat_ms, 99), 3),
            "max": round(max(lat_ms), 3),
            "mean": round(statistics.fmean(lat_ms), 3),
        },
        "publish_ack_ms": {
            "p50": round(statistics.median(ack_ms), 3),
            "p99": round(_pct(ack_ms, 99), 3),
        },
        "publish_msgs_per_s": {
            "sequential": round(seq_rate),
            f"concurrent_{concurrency}": round(conc_rate),
        },
        "replay": {
            "messages": total,
            "seconds": round(replay_s, 3),
            "msgs_per_s": round(total / replay_s),
        },
        "target": {
            "transport_p99_ms": TARGET_TRANSPORT_P99_MS,
            "chat_path_p99_ms": TARGET_CHAT_P99_MS,
        },
        "pass": _pct(lat_ms, 99) <= TARGET_TRANSPORT_P99_MS,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args(argv)
    r = asyncio.run(_run(args.messages, args.size, args.concurrency))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        lat = r["latency_ms"]
        print(f"transport latency, {r['messages']} x {r['size_bytes']} B over loopback JetStream")
        print(f"  publish->receive p50 {lat['p50']:8.3f} ms")
        print(
            f"  publish->receive p99 {lat['p99']:8.3f} ms   target <= "
            f"{TARGET_TRANSPORT_P99_MS} ms (full chat path <= {TARGET_CHAT_P99_MS} ms)"
            f"   {'PASS' if r['pass'] else 'FAIL'}"
        )
        print(f"  publish->receive max {lat['max']:8.3f} ms")
        print(
            f"  publish ack p50/p99  {r['publish_ack_ms']['p50']:.3f} / "
            f"{r['publish_ack_ms']['p99']:.3f} ms"
        )
        for k, v in r["publish_msgs_per_s"].items():
            print(f"  publish throughput ({k}) {v:,} msg/s")
        rp = r["replay"]
        print(f"  replay {rp['messages']:,} msgs in {rp['seconds']} s ({rp['msgs_per_s']:,} msg/s)")
    return 0 if r["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
