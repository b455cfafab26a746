"""Identity model, end to end on a private devnet (anvil + nats-server): gas of adding a
device (approve + the new device's bundle and PQ key), revoking, rotating the owner, binding
a wallet, rotating an installation; and how long a peer takes to converge to a rotated
installation (resolve -> new session -> message stored on the new device).

    .venv/bin/python -m bench.identity [--json] [--n ROUNDS]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench._util import Row, parse_args, report
from chatcore.client import Client
from chatcore.identity import (
    approve,
    bind_wallet,
    finish_link,
    revoke,
    rotate_installation,
    rotate_owner,
    start_link,
    wallet_link_signature,
)
from devnet.manager import Devnet

PW = "bench"


async def run(rounds: int) -> tuple[list[Row], dict[str, object]]:
    from eth_account import Account

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dn = Devnet(root / "devnet")
        net, _ = dn.up()
        try:
            alice, _ = Client.init(root / "alice", PW, net, "alice")
            bob, _ = Client.init(root / "bob", PW, net, "bob")
            await bob.send_text("alice", "hi")
            await alice.sync()
            add, add_new, rev, owner, wallet, rot, conv = [], [], [], [], [], [], []
            link_ms: list[float] = []
            for i in range(rounds):
                home = root / f"alice-{i}"
                code = start_link(home, PW, net).code
                t0 = time.perf_counter()
                a = await approve(alice, PW, code)
                linked = await finish_link(home, PW, net)
                assert linked is not None
                add.append(a.gas_used)
                add_new.append(linked.gas_used)
                link_ms.append((time.perf_counter() - t0) * 1000)
                _, g = revoke(alice, PW, "0x" + a.installation_id.hex())
                rev.append(g)
                owner.append(rotate_owner(alice, PW).gas_used)
                w = Account.create()
                dl = alice.registry.latest_timestamp() + 600
                sig = wallet_link_signature(w, alice.identity_id, net, alice.registry, dl)
                wallet.append(bind_wallet(alice, PW, w.address, sig, dl))
                r, alice = await rotate_installation(alice, PW)
                rot.append(r.gas_used)
                t0 = time.perf_counter()
                bob.sync_directory()  # the peer's next resolve
                await bob.send_text("alice", f"after rotation {i}")
                got = await alice.sync()
                conv.append((time.perf_counter() - t0) * 1000)
                assert [m.text for m in got] == [f"after rotation {i}"]
            await alice.aclose()
            await bob.aclose()
        finally:
            dn.down()
    med = statistics.median
    pq = "the new device's own bundle (publishBundle)"
    rows = [
        Row(
            "add device: addInstallation (approver)",
            med(add),
            "gas",
            "<= 60k (DESIGN)",
            med(add) <= 60_000,
        ),
        Row(f"add device: {pq}", med(add_new), "gas", "-", None),
        Row("add device total", med(add) + med(add_new), "gas", "-", None),
        Row("add device: approve + finish link, wall", med(link_ms), "ms", "-", None),
        Row("revoke device", med(rev), "gas", "<= 35k", med(rev) <= 35_000),
        Row("rotate owner (setOwner + consent)", med(owner), "gas", "-", None),
        Row("bind wallet (linkWallet + consent)", med(wallet), "gas", "-", None),
        Row("rotate installation (addInstallation + revoke)", med(rot), "gas", "-", None),
        Row("peer converges to rotated installation", med(conv), "ms", "-", None),
    ]
    return rows, {"rounds": rounds, "convergence_ms": conv}


def main() -> None:
    args = parse_args(__doc__ or "")
    rows, extra = asyncio.run(run(args.n or 3))
    report("Identity (issue 5)", rows, args.json, extra)


if __name__ == "__main__":
    main()
