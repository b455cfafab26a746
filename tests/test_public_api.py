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


#: the ``Client`` methods docs/api.md documents (kept in step with it: see the last test)
FACADE = (
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
    "close",
    "claim_name",
    "resolve_peer",
    "find_group",
    "find_conversation",
    "display",
    "pq_due",
    "prekey_due",
    "refresh_prekey_if_due",
    "finish_key_rotation",
    "sync_directory",
    "connect",
    "peer_from_resolved",
)
PROPERTIES = ("identity_id", "installation_id", "read_receipts")


def test_facade_methods_exist() -> None:
    c = chatcore.Client
    for method in FACADE:
        assert callable(getattr(c, method)), method
    for name in PROPERTIES:
        assert isinstance(getattr(c, name), property), name


def test_the_guide_names_the_public_surface() -> None:
    """docs/api.md names every name of ``chatcore.__all__`` and every method and property
    above: what is stable is documented."""
    import re
    from pathlib import Path

    guide = (Path(__file__).parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [
        n
        for n in (*chatcore.__all__, *FACADE, *PROPERTIES)
        if re.search(rf"(?<!\w){n}\b", guide) is None
    ]
    assert missing == []
