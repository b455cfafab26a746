"""Logos Chat core: the protocol (sans-I/O) and the ``Client`` facade apps use.

    from chatcore import Client
    client = Client.open(home, passphrase, NetworkConfig.load(path))
    await client.send_text("bob", "hi")
    for message in await client.sync(): ...

``Client``, the error classes and the value types it returns (``__all__``) are the stable
surface (guide: ``docs/api.md``); modules below are importable for tests, the simulator and
advanced integrators, without a stability promise. Heavy dependencies (web3, nats) load only
when ``Client`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discovery  # noqa: F401  (keeps the recursion limit the C stack survives)
from chatcore.errors import (
    AmbiguousName,
    ChatCoreError,
    ContentError,
    DecryptionError,
    DeliveryPending,
    DuplicateMessage,
    GroupError,
    HandshakeError,
    InitIncomplete,
    InitInterrupted,
    MalformedMessage,
    NotAMessageId,
    NotAPeer,
    NotInitialised,
    ProtocolError,
    StoreError,
    StoreUnavailable,
    TooManySkipped,
    TransportError,
    UnknownContact,
    UnknownMessage,
    UntrustedIdentity,
    WrongPassphrase,
)

if TYPE_CHECKING:
    from chatcore.client import Client, InitResult, PublishResult
    from chatcore.content import ContactState
    from chatcore.engine import Received, SendResult
    from chatcore.features import Contact, MessageView
    from chatcore.groupchat import GroupInfo
    from chatcore.payload import ContentType
    from chatcore.store import Conversation, StoredMessage

__all__ = [
    "AmbiguousName",
    "ChatCoreError",
    "Client",
    "Contact",
    "ContactState",
    "ContentError",
    "ContentType",
    "Conversation",
    "DecryptionError",
    "DeliveryPending",
    "DuplicateMessage",
    "GroupError",
    "GroupInfo",
    "HandshakeError",
    "InitIncomplete",
    "InitInterrupted",
    "InitResult",
    "MalformedMessage",
    "MessageView",
    "NotAMessageId",
    "NotAPeer",
    "NotInitialised",
    "ProtocolError",
    "PublishResult",
    "Received",
    "SendResult",
    "StoreError",
    "StoreUnavailable",
    "StoredMessage",
    "TooManySkipped",
    "TransportError",
    "UnknownContact",
    "UnknownMessage",
    "UntrustedIdentity",
    "WrongPassphrase",
]


_LAZY = {
    "Client": "chatcore.client",
    "InitResult": "chatcore.client",
    "PublishResult": "chatcore.client",
    "ContactState": "chatcore.content",
    "ContentType": "chatcore.payload",
    "Received": "chatcore.engine",
    "SendResult": "chatcore.engine",
    "Contact": "chatcore.features",
    "MessageView": "chatcore.features",
    "GroupInfo": "chatcore.groupchat",
    "Conversation": "chatcore.store",
    "StoredMessage": "chatcore.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chatcore' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
