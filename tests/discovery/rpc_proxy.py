"""A tiny JSON-RPC proxy for tests: counts the calls it forwards and can tamper with answers.

    with RpcProxy(upstream_url) as proxy:          # 127.0.0.1, a free port, its own thread
        cfg = dataclasses.replace(cfg, rpc_url=proxy.url)
        ...
        proxy.methods                              # every JSON-RPC method forwarded, in order
        proxy.tamper_logs(topic0)                  # from now on flip one byte of the bundle
                                                   # bytes inside matching eth_getLogs results
        proxy.drop_topic0.add(topic0)              # eth_getLogs answers omit these events
        proxy.inject_logs.append(log)              # ... and include this one where the
                                                   # request's filter would match it

It is an untrusted RPC node in miniature: the resolver must notice what it does.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# ABI encoding of a single ``bytes`` event argument: offset word, length word, then the bytes.
_ABI_BYTES_HEAD = 64


def flip_hex_byte(data_hex: str, offset: int) -> str:
    """Flip (xor 0xff) byte ``offset`` of a 0x-hex string."""
    raw = bytearray(bytes.fromhex(data_hex.removeprefix("0x")))
    raw[offset] ^= 0xFF
    return "0x" + raw.hex()


def make_log(
    address: str, signature: str, topics: list[bytes], data: bytes, block: int, log_index: int
) -> dict[str, Any]:
    """A raw log as eth_getLogs returns it, for ``inject_logs`` (topic0 from ``signature``)."""
    from eth_utils.crypto import keccak

    return {
        "address": address.lower(),
        "topics": ["0x" + t.hex() for t in (keccak(text=signature), *topics)],
        "data": "0x" + data.hex(),
        "blockNumber": hex(block),
        "logIndex": hex(log_index),
        "transactionHash": "0x" + "ab" * 32,
        "blockHash": "0x" + "00" * 32,
        "transactionIndex": "0x0",
        "removed": False,
    }


def _filter_matches(flt: dict[str, Any], log: dict[str, Any]) -> bool:
    """Would an eth_getLogs filter (addresses, block range, topics) return this log?"""
    addresses = flt.get("address")
    if isinstance(addresses, str):
        addresses = [addresses]
    if addresses and log["address"].lower() not in {a.lower() for a in addresses}:
        return False
    block = int(log["blockNumber"], 16)
    lo = int(flt.get("fromBlock", "0x0"), 16)
    hi = flt.get("toBlock", "latest")
    if block < lo or (hi != "latest" and block > int(hi, 16)):
        return False
    for want, got in zip(flt.get("topics") or [], log["topics"], strict=False):
        if want is not None and want.lower() != got.lower():
            return False
    return True


class RpcProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.methods: list[str] = []
        self.tampered: int = 0
        self._lock = threading.Lock()
        # (topic0 hex lowercase, offset inside the event's bytes argument) or None
        self._tamper: tuple[str, int] | None = None
        # answer every request with these bytes instead of forwarding (a broken node)
        self.reply_override: bytes | None = None
        # drop the topic filter of eth_getLogs: answer with every identity's events
        self.widen_logs = False
        # eth_getLogs answers omit every log whose topic0 (bytes) is in here ...
        self.drop_topic0: set[bytes] = set()
        # ... and gain these raw logs (JSON-RPC form) where the request's filter matches them
        self.inject_logs: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RpcProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RpcProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control ------------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.methods.clear()
            self.tampered = 0

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.methods)

    def tamper_logs(self, topic0: bytes | None, offset: int = 50) -> None:
        """Flip byte ``offset`` of the ``bytes`` argument of every log with this topic0
        (None: stop tampering)."""
        with self._lock:
            self._tamper = None if topic0 is None else ("0x" + topic0.hex(), offset)

    # --- server -------------------------------------------------------------------------------
    def _rewrite(self, request: Any, response: Any) -> Any:
        if not isinstance(request, dict) or request.get("method") != "eth_getLogs":
            return response
        if isinstance(response, dict) and isinstance(response.get("result"), list):
            drop = {"0x" + t.hex() for t in self.drop_topic0}
            kept = [log for log in response["result"] if log["topics"][0].lower() not in drop]
            flt = (request.get("params") or [{}])[0]
            response["result"] = kept + [
                dict(log) for log in self.inject_logs if _filter_matches(flt, log)
            ]
        with self._lock:
            tamper = self._tamper
        if tamper is None or not isinstance(response, dict):
            return response
        topic0, offset = tamper
        for log in response.get("result") or []:
            topics = log.get("topics") or []
            if topics and topics[0].lower() == topic0:
                log["data"] = flip_hex_byte(log["data"], _ABI_BYTES_HEAD + offset)
                with self._lock:
                    self.tampered += 1
        return response

    def _forward(self, body: bytes) -> bytes:
        req = urllib.request.Request(
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return bytes(resp.read())

    def _handler(self) -> Callable[..., BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                try:
                    request = json.loads(body)
                except ValueError:
                    request = None
                batch = request if isinstance(request, list) else [request]
                with proxy._lock:
                    for r in batch:
                        if isinstance(r, dict):
                            proxy.methods.append(str(r.get("method")))
                if proxy.reply_override is not None:
                    raw = proxy.reply_override
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return
                if proxy.widen_logs and isinstance(request, dict):
                    if request.get("method") == "eth_getLogs":
                        for flt in request.get("params") or []:
                            if isinstance(flt, dict):
                                flt.pop("topics", None)
                        body = json.dumps(request).encode()
                try:
                    raw = proxy._forward(body)
                except OSError:
                    self.send_error(502)
                    return
                try:
                    response = json.loads(raw)
                    if isinstance(request, list) and isinstance(response, list):
                        response = [
                            proxy._rewrite(q, a) for q, a in zip(request, response, strict=False)
                        ]
                    else:
                        response = proxy._rewrite(request, response)
                    raw = json.dumps(response).encode()
                except ValueError:
                    pass
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                return None

        return Handler
