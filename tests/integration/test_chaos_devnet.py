"""Chaos on the real parts: anvil restarted (state kept) during lookups, a client process
SIGKILLed between "sent" and "acknowledged", nats-server killed mid-conversation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatcore.client import Client, cold_resolver
from devnet.manager import Devnet
from devnet.process import pid_alive
from discovery.errors import ChainUnavailable
from discovery.network import NetworkConfig

pytestmark = pytest.mark.devnet

PW = "chaos-pw"


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[Devnet]:
    d = Devnet(tmp_path / "devnet")
    d.up()
    try:
        yield d
    finally:
        d.down()


def _server_pid(d: Devnet, which: str) -> int:
    return int(json.loads(d.state_file.read_text())[which]["pid"])


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    os.kill(pid, sig)
    for _ in range(500):
        if not pid_alive(pid):
            return
        import time

        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not die")


def test_anvil_restart_during_lookups_keeps_state(devnet: Devnet, tmp_path: Path) -> None:
    cfg = NetworkConfig.load(devnet.network_file)
    client, res = Client.init(tmp_path / "alice", PW, cfg, "alice")
    client.close()
    before = cold_resolver(cfg).resolve("alice")
    assert before.identity_id == res.identity_id

    # anvil goes away (SIGTERM: it writes its --state file): lookups fail with a typed error
    _kill(_server_pid(devnet, "anvil"), signal.SIGTERM)
    with pytest.raises(ChainUnavailable):
        cold_resolver(cfg).resolve("alice")

    # back up on the same port from its state: the same verified answer, by name and by id
    cfg2, already = devnet.up()
    assert not already and cfg2.rpc_url == cfg.rpc_url
    assert cfg2.identity_registry == cfg.identity_registry
    after = cold_resolver(cfg2).resolve("alice")
    assert after.identity_id == before.identity_id
    assert [i.bundle for i in after.installations] == [i.bundle for i in before.installations]
    assert cold_resolver(cfg2).resolve("0x" + res.identity_id.hex()).names == ("alice",)


_SEND_THEN_DIE = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from chatcore.client import Client
    from chatcore.payload import ContentType
    from discovery.network import NetworkConfig

    home, pw, net, to, text, when = sys.argv[1:7]
    client = Client.open(home, pw, NetworkConfig.load(net))

    async def main():
        client.sync_directory()
        peer = client.resolve_peer(to)
        result = client.engine.send(peer, ContentType.TEXT, text.encode())  # in the outbox
        if when == "after-publish":
            transport = await client.connect()
            for f in result.frames:  # the store has it; our 'acknowledged' never happens
                await transport.publish(f.subject, f.frame, msg_id=f.msg_id)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("when", ["before-publish", "after-publish"])
def test_client_killed_between_sent_and_acknowledged(
    devnet: Devnet, tmp_path: Path, when: str
) -> None:
    import asyncio

    cfg = NetworkConfig.load(devnet.network_file)
    a, _ = Client.init(tmp_path / "a", PW, cfg, f"alice-{when}")
    b, _ = Client.init(tmp_path / "b", PW, cfg, f"bob-{when}")
    a.close()
    proc = subprocess.run(
        [sys.executable, "-c", _SEND_THEN_DIE, str(tmp_path / "a"), PW,
         str(devnet.network_file), f"bob-{when}", "exactly once, please", when],
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-500:]

    async def recover() -> tuple[list[str], list[str], int]:
        a2 = Client.open(tmp_path / "a", PW, cfg)
        try:
            assert a2.store.outbox_size() == 1  # the killed process left it there
            await a2.sync()  # flushes the outbox (a retransmission with the same msg id)
            left = a2.store.outbox_size()
            first = [m.text for m in await b.sync()]
            second = [m.text for m in await b.sync()]
            return first, second, left
        finally:
            await a2.aclose()
            await b.aclose()

    first, second, left = asyncio.run(recover())
    assert left == 0
    assert first == ["exactly once, please"]
    assert second == []


def test_nats_killed_mid_conversation_loses_nothing(devnet: Devnet, tmp_path: Path) -> None:
    import asyncio

    cfg = NetworkConfig.load(devnet.network_file)
    a, _ = Client.init(tmp_path / "a", PW, cfg, "alice-nk")
    b, _ = Client.init(tmp_path / "b", PW, cfg, "bob-nk")

    async def run() -> list[str]:
        try:
            return await conversation()
        finally:
            await a.aclose()
            await b.aclose()

    async def conversation() -> list[str]:
        got: list[str] = []
        await a.send_text("bob-nk", "one")
        got += [m.text for m in await b.sync()]
        _kill(_server_pid(devnet, "nats"))  # SIGKILL: no clean shutdown
        from chatcore.errors import TransportError

        with pytest.raises(TransportError):
            await a.send_text("bob-nk", "two")  # stored + queued in the outbox
        assert a.store.outbox_size() == 1
        devnet.up()  # nats back (same port and store dir)
        await a.sync()  # flush
        await a.send_text("bob-nk", "three")
        got += [m.text for m in await b.sync()]
        got += [m.text for m in await b.sync()]
        return got

    got = asyncio.run(run())
    assert got == ["one", "two", "three"]
