"""alice -> bob latency of a 1:1 text message with real Clients over a loopback devnet.

    .venv/bin/python -m bench.chat_latency [--json] [--n N]

Starts a devnet (``logos-chat devnet up --dir TMP``: anvil + nats-server, registries deployed),
creates
alice and bob (two homes, two Clients, one process), has them exchange a few messages so the
session is established, then sends N (default 500) messages one at a time: the clock starts just
before ``alice.send_text`` and stops when bob's ``listen()`` yields the message (decrypted, stored,
committed). Target p99 <= 20 ms. The devnet is stopped (``devnet down``) at the end.

Also reported, to locate the time: how long ``send_text`` takes until it returns, and the median
of each step inside it (index sync = RPC round trips to anvil, peer resolution, encryption +
commit, publish awaiting the JetStream ack, the ack's commit) and of bob's ``Engine.receive``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chatcore.client import Client
from chatcore.engine import Received
from discovery.network import NetworkConfig

from ._util import Row, report

TARGET_P99_MS = 20.0
PASSPHRASE = "bench"


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


CLI = Path(sys.executable).parent / "logos-chat"


def _devnet(cmd: str, d: Path) -> None:
    # through the CLI, so the servers are not children of this process (no zombies to wait for)
    subprocess.run([str(CLI), "devnet", cmd, "--dir", str(d)], check=True, capture_output=True)


class _Steps:
    """Wall time of named calls (wrapping methods of live objects)."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {}
        self.on = False

    def wrap(self, obj: Any, attr: str, label: str) -> None:
        f = getattr(obj, attr)
        rec = self.ms.setdefault(label, [])
        if asyncio.iscoroutinefunction(f):

            @functools.wraps(f)
            async def aw(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await f(*a, **k)
                finally:
                    if self.on:
                        rec.append((time.perf_counter() - t0) * 1000)

            setattr(obj, attr, aw)
        else:

            @functools.wraps(f)
            def w(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return f(*a, **k)
                finally:
                    if self.on:
                        rec.append((time.perf_counter() - t0) * 1000)

            setattr(obj, attr, w)

    def medians(self) -> dict[str, float]:
        return {k: round(statistics.median(v), 3) for k, v in self.ms.items() if v}


def _throttle(client: Client, every_ms: float) -> None:
    """What-if: sync the index at most once per ``every_ms`` (the client syncs on every send)."""
    real = client.sync_directory
    last = [0.0]

    def sync_directory() -> int:
        now = time.monotonic()
        if (now - last[0]) * 1000 < every_ms:
            return 0
        last[0] = now
        return real()

    client.sync_directory = sync_directory  # type: ignore[method-assign]


async def _run(n: int, root: Path, index_every_ms: float = 0.0) -> dict[str, Any]:
    _devnet("up", root / "devnet")
    cfg = NetworkConfig.load(root / "devnet" / "network.json")
    alice = bob = None
    steps = _Steps()
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
            assert alice.transport is not None
            if index_every_ms:
                _throttle(alice, index_every_ms)
            for obj, attr, label in [
                (alice, "sync_directory", "alice: index sync (RPC to anvil)"),
                (alice, "resolve_peer", "alice: resolve peer"),
                (alice.directory, "own_devices", "alice: own devices"),
                (alice.engine, "send", "alice: Engine.send (encrypt + commit)"),
                (alice.transport, "publish", "alice: publish, await JetStream ack"),
                (alice.engine, "acknowledged", "alice: Engine.acknowledged (commit)"),
                (bob.engine, "receive", "bob: Engine.receive (decrypt + commit)"),
            ]:
                steps.wrap(obj, attr, label)
            steps.on = True

            text = "x" * 100
            lat: list[float] = []
            send_ret: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                res = await alice.send_text("bob", text)
                t1 = time.perf_counter()
                t2, r = await asyncio.wait_for(q.get(), 10)
                assert r.message_id == res.message_id, (r.lamport, res.lamport, r.text[:20])
                send_ret.append((t1 - t0) * 1000)
                lat.append((t2 - t0) * 1000)
            steps.on = False
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        idx: list[float] = []
        for _ in range(100):
            t0 = time.perf_counter()
            await asyncio.to_thread(Client.sync_directory, alice)  # the real one, unthrottled
            idx.append((time.perf_counter() - t0) * 1000)
    finally:
        for c in (alice, bob):
            if c is not None:
                await c.aclose()
        _devnet("down", root / "devnet")
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
        "steps_p50_ms": steps.medians(),
        "index_sync_every_ms": index_every_ms or "every send",
        "target_p99_ms": TARGET_P99_MS,
        "ok": _pct(lat, 99) <= TARGET_P99_MS,
    }


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--n", type=int, default=500, help="messages")
    p.add_argument(
        "--index-sync-every-ms",
        type=float,
        default=0.0,
        help="what-if: let alice sync the on-chain index at most this often (0: as the client "
        "does today, on every send)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lc-bench-chat-") as tmp:
        os.environ.pop("LOGOS_CHAT_HOME", None)
        m = asyncio.run(_run(args.n, Path(tmp), args.index_sync_every_ms))
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
        f"1:1 chat latency, {m['messages']} messages, real Clients over loopback devnet"
        + (
            f" (what-if: index sync every {args.index_sync_every_ms:g} ms)"
            if args.index_sync_every_ms
            else ""
        ),
        rows,
        args.json,
        extra=m if args.json else None,
    )
    if not args.json:
        print("  median per step (alice's send_text; bob's receive runs concurrently):")
        for k, v in m["steps_p50_ms"].items():
            print(f"    {k:<42} {v:7.3f} ms")


if __name__ == "__main__":
    main()
