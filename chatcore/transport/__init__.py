"""Delivery-network adapters: NATS JetStream (real) and in-memory (tests, simulator).

``from chatcore.transport import NatsTransport`` imports nats-py lazily, so protocol code and the
simulator can use the memory adapter without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatcore.transport.base import (
    SUBJECT_PREFIX,
    Cursor,
    Delivery,
    Subscription,
    Transport,
    TransportError,
    group_subject,
    inbox_subject,
    validate_subject,
)
from chatcore.transport.memory import ManualClock, MemoryNetwork, MemoryTransport

if TYPE_CHECKING:
    from chatcore.transport.nats import NatsTransport

__all__ = [
    "SUBJECT_PREFIX",
    "Cursor",
    "Delivery",
    "ManualClock",
    "MemoryNetwork",
    "MemoryTransport",
    "NatsTransport",
    "Subscription",
    "Transport",
    "TransportError",
    "group_subject",
    "inbox_subject",
    "validate_subject",
]


def __getattr__(name: str) -> Any:
    if name == "NatsTransport":
        from chatcore.transport.nats import NatsTransport

        return NatsTransport
    raise AttributeError(name)
