"""An echo bot: the smallest complete app on the ``chatcore.Client`` facade (docs/api.md).

It answers every text, 1:1 or in a group it was added to, with a reply quoting it, and
marks what it answered as read. It does not answer replies (a reply to its answer, or
another bot's answer: two such bots would answer each other for ever).

Run it against a devnet (``logos-chat devnet up``):

    export LOGOS_CHAT_PASSPHRASE=...
    .venv/bin/python examples/echo_bot.py --home ~/echo-bot --name echo-bot

then, from any other home: ``logos-chat send echo-bot "hello"`` and ``logos-chat sync``.
Ctrl-C stops it; what it had not answered yet is answered at the next start. With the
delivery network unreachable it waits and listens again every few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path

from chatcore import (
    ChatCoreError,
    Client,
    ContentType,
    DeliveryPending,
    NotInitialised,
    Received,
    StoreUnavailable,
    TransportError,
)
from discovery.errors import DiscoveryError
from discovery.network import NetworkConfig, default_network_file

#: how often the receipts / retransmission timer runs (a long-running app's duty)
TIMER_S = 1.0
#: how long to wait before listening again when the delivery network is unreachable
RETRY_S = 5.0


async def answer(client: Client, r: Received) -> None:
    """Reply to one incoming text (and say it was read)."""
    try:
        await client.reply(r.message_id, f"echo: {r.text}")
    except DeliveryPending:
        pass  # stored and queued: the outbox sends it when the network is back
    await client.mark_read(r.conversation_id, now=False)  # the reply carried the receipt


async def timer(client: Client) -> None:
    """Receipts not carried by a message, retransmissions, and a queued outbox, when due."""
    while True:
        await asyncio.sleep(TIMER_S)
        with contextlib.suppress(ChatCoreError):  # offline: everything waits in the store
            await client.flush_outbox(only_due=True)
            await client.flush_features(due_only=True)


async def serve(client: Client, limit: int | None = None) -> int:
    """Answer texts as they arrive (after those that came while away); ``limit`` stops after
    that many answers (for tests). Returns how many were answered."""
    answered = 0
    ticking = asyncio.create_task(timer(client))
    try:
        while True:
            try:
                async for r in client.listen():
                    if r.outgoing or r.content_type != ContentType.TEXT:
                        continue  # our own devices' messages, edits, reactions, ...
                    try:
                        await answer(client, r)
                    except ChatCoreError as exc:  # e.g. the sender was revoked meanwhile
                        print(f"not answered: {exc}", file=sys.stderr)
                        continue
                    answered += 1
                    if limit is not None and answered >= limit:
                        break
                break  # the limit, or listen() ended (the client was closed)
            except (TransportError, StoreUnavailable) as exc:
                # the delivery network is not reachable (yet), or the store is busy: nothing
                # is lost (what was not read is read when listen() starts again)
                print(f"waiting ({exc}); trying again in {RETRY_S:g} s", file=sys.stderr)
                await asyncio.sleep(RETRY_S)
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
    return answered


def open_or_init(home: Path, passphrase: str, network_file: Path, name: str | None) -> Client:
    network = NetworkConfig.load(network_file)
    try:
        return Client.open(home, passphrase, network)
    except NotInitialised:
        pass
    client, created = Client.init(home, passphrase, network, name)
    print(f"registered {created.name or created.identity_id.hex()}; recovery phrase (keep it):")
    print(created.recovery_phrase)
    return client


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--name", default=None, help="name to claim on first start")
    p.add_argument("--network", type=Path, default=None, help="network.json of the devnet")
    args = p.parse_args()
    passphrase = os.environ.get("LOGOS_CHAT_PASSPHRASE")
    if not passphrase:
        print("set LOGOS_CHAT_PASSPHRASE", file=sys.stderr)
        return 2
    network_file = args.network or default_network_file()
    try:
        client = open_or_init(args.home, passphrase, network_file, args.name)
    except (ChatCoreError, DiscoveryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    async def run() -> None:
        try:
            await serve(client)
        finally:
            await client.aclose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
