"""The examples in ``examples/`` run against a real devnet, so the embedding guide cannot rot."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chatcore import Client, TransportError

from .conftest import PASSPHRASE, People

pytestmark = pytest.mark.devnet

ROOT = Path(__file__).resolve().parents[2]


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


async def test_echo_bot_answers_one_to_one_and_group(people: People, tmp_path: Path) -> None:
    bot_mod = _example("echo_bot")
    alice, carol = people.new("alice"), people.new("carol")
    net_file = tmp_path / "network.json"
    net_file.write_text(people.network.to_json())
    bot = bot_mod.open_or_init(tmp_path / "bot", PASSPHRASE, net_file, f"{alice.name}-bot")
    try:
        bot_name = f"{alice.name}-bot"
        # a message that arrives while the bot is not running is answered when it starts
        await alice.c.send_text(bot_name, "are you there?")
        gid = await carol.c.create_group("with-bot", [bot_name, alice.name])
        await carol.c.send_group_text("with-bot", "hello group")
        answered = await asyncio.wait_for(bot_mod.serve(bot, limit=2), timeout=60)
        assert answered == 2
    finally:
        await bot.aclose()

    got = {r.text for r in await alice.c.sync()}
    assert "echo: are you there?" in got
    assert "echo: hello group" in got
    await carol.c.sync()
    group_replies = [m for m in carol.c.history(gid) if carol.c.view(m).text == "echo: hello group"]
    assert len(group_replies) == 1
    assert carol.c.view(group_replies[0]).reply_to is not None

    # restarting opens the same identity (no second registration)
    again = bot_mod.open_or_init(tmp_path / "bot", PASSPHRASE, net_file, None)
    try:
        assert isinstance(again, Client) and again.identity_id == bot.identity_id
    finally:
        again.close()


async def test_echo_bot_waits_for_a_delivery_network_it_cannot_reach_yet(
    people: People, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot started while the delivery network was down (or unreachable for a moment)
    ended with a traceback: listen() raises TransportError when it cannot connect. It waits
    and listens again now."""
    bot_mod = _example("echo_bot")
    monkeypatch.setattr(bot_mod, "RETRY_S", 0.1, raising=False)
    alice = people.new("alice")
    net_file = tmp_path / "network.json"
    net_file.write_text(people.network.to_json())
    bot = bot_mod.open_or_init(tmp_path / "bot", PASSPHRASE, net_file, f"{alice.name}-bot")
    real_connect = bot.connect
    refused = 0

    async def connect(transport: Any = None) -> Any:
        nonlocal refused
        if refused < 2:  # the network is down for the bot's first two tries
            refused += 1
            raise TransportError("delivery network unreachable (injected)")
        return await real_connect(transport)

    bot.connect = connect  # type: ignore[method-assign]
    try:
        await alice.c.send_text(f"{alice.name}-bot", "are you there?")
        assert await asyncio.wait_for(bot_mod.serve(bot, limit=1), timeout=60) == 1
    finally:
        await bot.aclose()
    assert refused == 2
    assert "echo: are you there?" in {r.text for r in await alice.c.sync()}
