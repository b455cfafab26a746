"""A node that answers nonsense (malformed logs, impossible numbers) gets a typed
ChainUnavailable, never a raw decoding error, an overflow or an endless index sync; and the
index keeps nothing of what it refused."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from web3 import Web3
from web3.providers.base import BaseProvider

from discovery.errors import ChainUnavailable, RecordNotFound
from discovery.index import Index
from discovery.network import NetworkConfig
from discovery.records import ChainBinding
from discovery.registry import Registry
from discovery.resolver import Resolver

REGISTRY = "0x" + "22" * 20
IDENT = "0x" + "01" * 32


class _Node(BaseProvider):
    def __init__(self, logs: list[dict[str, Any]], head: str) -> None:
        super().__init__()
        self.logs, self.head = logs, head
        self.calls = 0

    def make_request(self, method: Any, params: Any) -> Any:
        self.calls += 1
        if method == "eth_getLogs":
            return {"jsonrpc": "2.0", "id": 1, "result": self.logs}
        if method == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": 1, "result": self.head}
        if method == "eth_getBlockByNumber":
            return {"jsonrpc": "2.0", "id": 1, "result": {"hash": "0x" + "ab" * 32}}
        raise NotImplementedError(method)


def _registry(logs: list[dict[str, Any]], head: str = "0x10") -> Registry:
    cfg = NetworkConfig(31337, "http://lying-node", REGISTRY, "0x" + "33" * 20, 0, "nats://x")
    return Registry(cfg, w3=Web3(_Node(logs, head)))


def _log(signature: str, topics: list[str], data: str = "0x", **over: str) -> dict[str, Any]:
    return {
        "address": REGISTRY,
        "topics": ["0x" + keccak(text=signature).hex(), *topics],
        "data": data,
        "blockNumber": "0x1",
        "logIndex": "0x0",
        "transactionHash": "0x" + "aa" * 32,
        **over,
    }


BUNDLE = "BundlePublished(bytes32,bytes32,bytes)"
ADDED = "InstallationAdded(bytes32,bytes32)"


@pytest.mark.parametrize(
    "log",
    [
        _log(BUNDLE, [IDENT, "0x" + "02" * 32], data="0x"),  # no data at all
        _log(BUNDLE, [IDENT, "0x" + "02" * 32], data="0x" + "ff" * 32),  # a wild offset
        _log(ADDED, [IDENT, "0x"]),  # an empty topic
        _log(ADDED, [IDENT, "0x" + "02" * 31]),  # a short topic
        _log(ADDED, [IDENT]),  # a topic missing
        _log(ADDED, [IDENT, "0x" + "02" * 32], blockNumber=hex(2**63)),
        _log(ADDED, [IDENT, "0x" + "02" * 32], logIndex=hex(2**64)),
    ],
)
def test_malformed_logs_are_chain_unavailable(log: dict[str, Any]) -> None:
    reg = _registry([log])
    with pytest.raises(ChainUnavailable, match="malformed answer"):
        reg.events_between(0, 1)
    index = Index(":memory:", reg)
    with pytest.raises(ChainUnavailable):
        index.sync(to_block=1)
    resolver = Resolver(index, ChainBinding(31337, bytes.fromhex(REGISTRY[2:])), "0x" + "33" * 20)
    with pytest.raises(RecordNotFound):  # nothing of the refused batch was kept
        resolver.resolve(IDENT)


def test_an_impossible_head_block_ends_the_sync_at_once() -> None:
    index = Index(":memory:", _registry([], head="0x" + "f" * 17))
    with pytest.raises(ChainUnavailable, match="malformed answer to blockNumber"):
        index.sync()
    assert index.synced_block == -1


def test_a_well_formed_log_still_decodes() -> None:
    owner, recovery = "0x" + "44" * 20, "0x" + "55" * 20
    reg_log = _log(
        "IdentityRegistered(bytes32,address,address)",
        [IDENT, "0x" + "00" * 12 + owner[2:]],
        data="0x" + abi_encode(["address"], [recovery]).hex(),
    )
    [event] = _registry([reg_log]).events_between(0, 1)
    assert event.name == "IdentityRegistered" and event.block_number == 1


def test_a_huge_but_possible_head_is_crossed_in_few_calls() -> None:
    """Empty stretches are crossed in growing steps: a node claiming the largest head we
    accept costs about a thousand calls, not 860,000."""
    reg = _registry([], head=hex(2**32 - 1))
    node = reg.w3.provider
    index = Index(":memory:", reg)
    index.sync()
    assert index.synced_block == 2**32 - 1
    assert node.calls < 1_200  # type: ignore[attr-defined]


def test_a_node_that_never_answers_costs_one_timeout_not_five() -> None:
    """A node that takes the connection and answers nothing: each call gives up after the
    registry's timeout. web3 retried timeouts 5 times by default, so every call (and every
    send or chat line, which ask the chain first) hung for 5 timeouts and more."""
    import socket
    import time

    with socket.socket() as mute:  # the kernel accepts connections; nobody answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        url = f"http://127.0.0.1:{mute.getsockname()[1]}"
        cfg = NetworkConfig(31337, url, REGISTRY, "0x" + "33" * 20, 0, "nats://x")
        reg = Registry(cfg, timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(ChainUnavailable):
            reg.block_number()
        assert time.monotonic() - t0 < 1.5
