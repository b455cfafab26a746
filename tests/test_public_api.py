"""The public surface apps rely on: names in chatcore.__all__ resolve, and nothing else leaks."""

from __future__ import annotations

import chatcore


def test_all_names_resolve() -> None:
    for name in chatcore.__all__:
        assert getattr(chatcore, name) is not None, name
    assert chatcore.Client.__name__ == "Client"
    assert issubclass(chatcore.UntrustedIdentity, chatcore.ChatCoreError)


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
        "aclose",
    ):
        assert callable(getattr(c, method)), method
