"""Logos Chat core: the protocol (sans-I/O) and the ``Client`` facade apps use.

    from chatcore import Client
    client = Client.open(home, passphrase, NetworkConfig.load(path))
    await client.send_text("bob", "hi")
    for message in await client.sync(): ...

``Client`` and the error classes are the stable surface; modules below are importable for
tests, the simulator and advanced integrators. Heavy dependencies (web3, nats) load only
when ``Client`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatcore.errors import (
    ChatCoreError,
    ContentError,
    DecryptionError,
    DuplicateMessage,
    GroupError,
    HandshakeError,
    MalformedMessage,
    NotInitialised,
    ProtocolError,
    StoreError,
    TooManySkipped,
    TransportError,
    UnknownContact,
    UntrustedIdentity,
    WrongPassphrase,
)

if TYPE_CHECKING:
    from chatcore.client import Client, InitResult, PublishResult

__all__ = [
    "ChatCoreError",
    "Client",
    "ContentError",
    "DecryptionError",
    "DuplicateMessage",
    "GroupError",
    "HandshakeError",
    "InitResult",
    "MalformedMessage",
    "NotInitialised",
    "ProtocolError",
    "PublishResult",
    "StoreError",
    "TooManySkipped",
    "TransportError",
    "UnknownContact",
    "UntrustedIdentity",
    "WrongPassphrase",
]


def __getattr__(name: str) -> Any:
    if name in ("Client", "InitResult", "PublishResult"):
        from chatcore import client

        return getattr(client, name)
    raise AttributeError(f"module 'chatcore' has no attribute {name!r}")
