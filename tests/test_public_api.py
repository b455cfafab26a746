"""The public surface apps rely on: names in chatcore.__all__ resolve, unknown names raise."""

from __future__ import annotations

import chatcore


def test_all_names_resolve() -> None:
    for name in chatcore.__all__:
        assert getattr(chatcore, name) is not None, name
    assert chatcore.Client.__name__ == "Client"
    assert issubclass(chatcore.UntrustedIdentity, chatcore.ChatCoreError)
    # an action done here whose frames wait in the outbox is still a TransportError
    assert issubclass(chatcore.DeliveryPending, chatcore.TransportError)
    for value_type in ("Contact", "ContactState", "MessageView", "Conversation", "StoredMessage"):
        assert value_type in chatcore.__all__


def test_unknown_attribute() -> None:
    import pytest

    with pytest.raises(AttributeError):
        chatcore.NoSuchThing  # noqa: B018


def test_facade_methods_exist() -> None:
    c = chatcore.Client
    for method in (
        "init",
        "open",
        "send_text",
        "sync",
        "listen",
        "history",
        "conversations",
        "lookup",
        "publish",
        "create_group",
        "send_group_text",
        "group_change",
        "rename_group",
        "group_info",
        "group_ids",
        "message",
        "view",
        "receipts",
        "edit",
        "delete_message",
        "react",
        "reply",
        "conversation_id",
        "send_typing",
        "mark_read",
        "set_read_receipts",
        "contact",
        "contacts",
        "set_contact",
        "set_conversation_flags",
        "delete_conversation",
        "is_request",
        "search",
        "flush_outbox",
        "flush_features",
        "aclose",
    ):
        assert callable(getattr(c, method)), method
