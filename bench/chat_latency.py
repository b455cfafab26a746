"""alice -> bob latency of a 1:1 text message with real Clients over a loopback devnet.

    .venv/bin/python -m bench.chat_latency [--json] [--n N]

Starts a devnet (anvil + nats-server, registries deployed) in a temporary directory, creates
alice and bob (two homes, two Clients, one process), has them exchange a few messages so the
session is established, then sends N (default 500) messages one at a time: the clock starts just
before ``alice.send_text`` and stops when bob's ``listen()`` yields the message (decrypted, stored,
committed). Target p99 <= 20 ms. The devnet is stopped (by pid) at the end.

Also reported, to locate the time: how long ``send_text`` takes until it returns (it syncs the
on-chain index, encrypts, commits, publishes and awaits the store's ack), and one index sync on
its own (an RPC round trip to anvil).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from chatcore.client import Client
from chatcore.engine import Received
from devnet.manager import Devnet

from ._util import Row, parse_args, report

TARGET_P99_MS = 20.0
PASSPHRASE = "bench"


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


async def _run(n: int, root: Path) -> dict[str, Any]:
    dn = Devnet(root / "devnet")
    cfg, _ = dn.up()
    alice = bob = None
    try:
        alice, _ = Client.init(root / "alice", PASSPHRASE, cfg, "alice")
        bob, _ = Client.init(root / "bob", PASSPHRASE, cfg, "bob")
        q: asyncio.Queue[tuple[float, Received]] = asyncio.Queue()

        async def listen() -> None:
            assert bob is not None
            async for r in bob.listen():
                q.put_nowait((time.perf_counter(), r))

        task = asyncio.create_task(listen())
        try:
            # establish the session both ways, warm up every path
            await alice.send_text("bob", "hello")
            await asyncio.wait_for(q.get(), 10)
            await bob.send_text("alice", "hi")
            await alice.sync()
            for i in range(20):
                await alice.send_text("bob", f"warm-up {i}")
                await asyncio.wait_for(q.get(), 10)

            text = "x" * 100
            lat: list[float] = []
            send_ret: list[float] = []
            for i in range(n):
                t0 = time.perf_counter()
                res = await alice.send_text("bob", text)
                t1 = time.perf_counter()
                t2, r = await asyncio.wait_for(q.get(), 10)
                assert r.message_id == res.message_id
                send_ret.append((t1 - t0) * 1000)
                lat.append((t2 - t0) * 1000)
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        idx: list[float] = []
        for _ in range(100):
            t0 = time.perf_counter()
            await asyncio.to_thread(alice.sync_directory)
            idx.append((time.perf_counter() - t0) * 1000)
    finally:
        for c in (alice, bob):
            if c is not None:
                await c.aclose()
        dn.down()
    return {
        "messages": n,
        "latency_ms": {
            "p50": round(statistics.median(lat), 3),
            "p99": round(_pct(lat, 99), 3),
            "max": round(max(lat), 3),
            "mean": round(statistics.fmean(lat), 3),
        },
        "send_text_return_ms": {
            "p50": round(statistics.median(send_ret), 3),
            "p99": round(_pct(send_ret, 99), 3),
        },
        "index_sync_ms": {
            "p50": round(statistics.median(idx), 3),
            "p99": round(_pct(idx, 99), 3),
        },
        "target_p99_ms": TARGET_P99_MS,
        "ok": _pct(lat, 99) <= TARGET_P99_MS,
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    with tempfile.TemporaryDirectory(prefix="lc-bench-chat-") as tmp:
        os.environ.pop("LOGOS_CHAT_HOME", None)
        m = asyncio.run(_run(args.n or 500, Path(tmp)))
    lat, sr, ix = m["latency_ms"], m["send_text_return_ms"], m["index_sync_ms"]
    rows = [
        Row("alice -> bob p50", lat["p50"], "ms", "informational", None),
        Row("alice -> bob p99", lat["p99"], "ms", f"<= {TARGET_P99_MS:g} ms", m["ok"]),
        Row("alice -> bob max", lat["max"], "ms", "informational", None),
        Row("send_text returns, p50", sr["p50"], "ms", "informational", None),
        Row("send_text returns, p99", sr["p99"], "ms", "informational", None),
        Row("index sync alone, p50", ix["p50"], "ms", "informational", None),
    ]
    report(
        f"1:1 chat latency, {m['messages']} messages, real Clients over loopback devnet",
        rows,
        args.json,
        extra=m if args.json else None,
    )


if __name__ == "__main__":
    main()
