"""Chain helpers for the benchmarks: raw JSON-RPC (single and batch) over one kept-alive HTTP
session, a requests session that counts (and times) JSON-RPC calls, and local key handling.

Nothing here talks to anything but the loopback anvil a benchmark started itself.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import coincurve
import requests
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak


class RpcError(RuntimeError):
    pass


class Rpc:
    """Minimal JSON-RPC client: ``call`` for one request, ``batch`` posts a JSON array."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url = url
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Content-Type"] = "application/json"
        self._id = 0

    def close(self) -> None:
        self.session.close()

    def call(self, method: str, *params: Any) -> Any:
        self._id += 1
        body = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)}
        resp = self.session.post(self.url, data=json.dumps(body), timeout=self.timeout)
        resp.raise_for_status()
        doc = resp.json()
        if "error" in doc:
            raise RpcError(f"{method}: {doc['error']}")
        return doc["result"]

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]], *, check: bool = True) -> list[Any]:
        """One HTTP POST with a JSON array of requests; results in request order. With
        ``check`` an error in any item raises; otherwise error items come back as
        ``{"error": ...}`` dicts."""
        if not calls:
            return []
        base = self._id + 1
        body = [
            {"jsonrpc": "2.0", "id": base + i, "method": m, "params": list(p)}
            for i, (m, p) in enumerate(calls)
        ]
        self._id += len(calls)
        resp = self.session.post(self.url, data=json.dumps(body), timeout=self.timeout)
        resp.raise_for_status()
        docs = resp.json()
        if not isinstance(docs, list):
            raise RpcError(f"batch answered with a non-list: {str(docs)[:300]}")
        out: list[Any] = [None] * len(calls)
        for d in docs:
            i = int(d["id"]) - base
            if "error" in d:
                if check:
                    raise RpcError(f"{calls[i][0]} (item {i}): {d['error']}")
                out[i] = {"error": d["error"]}
            else:
                out[i] = d["result"]
        return out


class CountingSession(requests.Session):
    """A requests session for web3's HTTPProvider(session=...) that counts JSON-RPC calls
    per method (a batch counts each of its items) and sums the HTTP round-trip time."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def reset(self) -> None:
        self.calls.clear()
        self.seconds.clear()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def post(self, url: Any, data: Any = None, json: Any = None, **kw: Any) -> Any:
        import json as _json

        body = json if json is not None else data
        methods: list[str] = []
        try:
            doc = _json.loads(body) if isinstance(body, (bytes, str)) else body
            items = doc if isinstance(doc, list) else [doc]
            methods = [str(it.get("method")) for it in items if isinstance(it, dict)]
        except (ValueError, TypeError):
            methods = ["?"]
        t0 = time.perf_counter()
        try:
            return super().post(url, data=data, json=json, **kw)
        finally:
            dt = time.perf_counter() - t0
            for m in methods:
                self.calls[m] += 1
                self.seconds[m] += dt / max(1, len(methods))


def address_of(private_key: bytes) -> str:
    """Checksum Ethereum address of a secp256k1 private key (coincurve + keccak)."""
    pub = coincurve.PublicKey.from_secret(private_key).format(compressed=False)[1:]
    return to_checksum_address(keccak(pub)[12:])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[k])
