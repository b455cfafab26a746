"""Integration fixtures: real anvil (one per session, registries per module) + a fresh
nats-server per test, and a factory of chat Clients (each a real home directory).

    network        NetworkConfig for this test (module's registries, this test's NATS)
    people         factory: people.new("alice") -> Person (home, name, open client)
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from chatcore.client import Client
from devnet.process import ManagedProcess
from discovery.network import NetworkConfig
from tests.fixtures.chain import Registries, network_for
from tests.fixtures.nats import NatsServer

PASSPHRASE = "integration-pw"
_counter = itertools.count()


@pytest.fixture
def network(
    anvil: ManagedProcess, registries: Registries, nats_server: NatsServer
) -> NetworkConfig:
    return dataclasses.replace(network_for(anvil, registries), nats_url=nats_server.url)


@dataclass
class Person:
    home: Path
    name: str
    network: NetworkConfig
    client: Client | None
    _opened: list[Client] = field(default_factory=list)

    @property
    def c(self) -> Client:
        assert self.client is not None, f"{self.name} is offline"
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def crash(self) -> None:
        """The process dies: nothing more is published or acknowledged. (The NATS connection
        is closed too, so the test leaks nothing; the outbox is what matters. The files are
        closed as a dying process leaves them: not by Client.close, which keeps what sync or
        listen did not return yet.)"""
        if self.client is not None:
            if self.client.transport is not None:
                await self.client.transport.close()
                self.client.transport = None
            self.client.index.close()
            self.client.store.close()
            self.client = None

    def open(self) -> Client:
        assert self.client is None
        self.client = Client.open(self.home, PASSPHRASE, self.network)
        self._opened.append(self.client)
        return self.client

    @property
    def id_hex(self) -> str:
        return "0x" + self.c.identity_id.hex()


class People:
    def __init__(self, root: Path, network: NetworkConfig) -> None:
        self.root = root
        self.network = network
        self.all: list[Person] = []

    def new(self, base: str) -> Person:
        # names are first-come on the module's registry: make them unique per test
        name = f"{base}-{os.getpid() % 10000}-{next(_counter)}"
        client, _ = Client.init(self.root / base, PASSPHRASE, self.network, name)
        p = Person(self.root / base, name, self.network, client, [client])
        self.all.append(p)
        return p

    async def close(self) -> None:
        for p in self.all:
            if p.client is not None:
                try:
                    await p.client.aclose()
                except Exception:  # a test may have closed the store already
                    pass
                p.client = None


@pytest_asyncio.fixture
async def people(tmp_path: Path, network: NetworkConfig) -> AsyncIterator[People]:
    ppl = People(tmp_path, network)
    try:
        yield ppl
    finally:
        await ppl.close()
