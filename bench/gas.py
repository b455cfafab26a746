"""Gas per registry operation on a private anvil, against the DESIGN §4 targets.

    .venv/bin/python -m bench.gas [--json] [--samples N]

Starts its own anvil on a free loopback port, deploys both registries, runs each operation
``--samples`` times with fresh random data (bundle 290 bytes, PQ record 1,250 bytes), prints the
median and max receipt gasUsed beside the target, and stops anvil. Exit status 0 even when a
target is missed (this is a measurement, not a test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from eth_account import Account
from eth_utils.crypto import keccak

from devnet.chain import (
    advance_time,
    connect,
    deploy_registries,
    dev_account,
    registries,
    rpc_url,
    send_tx,
    set_balance,
    start_anvil,
)
from discovery.eip712 import typed_signature
from discovery.recovery_binding import recovery_tag, registration_salt

BUNDLE_BYTES = 290
PQ_RECORD_BYTES = 1250
ZERO = "0x" + "00" * 20

TARGETS: dict[str, int | None] = {
    "register": 150_000,
    "publishBundle": 40_000,
    "addInstallation": 60_000,
    "revokeInstallation": 35_000,
    "publishPqKey": None,
    "setOwner": None,
    "setRecovery": None,
    "confirmRecovery": None,
    "cancelRecoveryChange": None,
    "linkWallet": None,
    "commit": None,
    "claim": None,
    "registerBySig": None,
    "publishBundleBySig": None,
}

NOTES = {
    "register": "identity + recovery (phrase-bound salt) + first installation + 290 B bundle",
    "publishBundle": "refresh an active installation's bundle (290 B)",
    "addInstallation": "new installation + its 290 B bundle",
    "revokeInstallation": "",
    "publishPqKey": "1,250 B record",
    "setOwner": "with the new owner's EIP-712 consent",
    "setRecovery": "owner proposes a new recovery (new phrase's tag kept for the log)",
    "confirmRecovery": "after the 3-day delay: the change and its tag logged",
    "cancelRecoveryChange": "by the current recovery account, during the delay",
    "linkWallet": "with the wallet's EIP-712 consent",
    "commit": "name commitment",
    "claim": "reveal + claim a 10-char name",
    "registerBySig": "relayed register (290 B bundle)",
    "publishBundleBySig": "relayed refresh (290 B bundle)",
}


def measure(samples: int) -> dict[str, Any]:
    proc = start_anvil()
    try:
        w3 = connect(rpc_url(proc))
        deployer = dev_account(0)
        dep = deploy_registries(w3, deployer)
        reg, names = registries(w3, dep)
        chain_id, addr = dep["chain_id"], dep["identity_registry"]
        gas: dict[str, list[int]] = {k: [] for k in TARGETS}

        def new_acct(fund: bool = True) -> Any:
            a = Account.create()
            if fund:
                set_balance(w3, a.address, 10**19)
            return a

        def far() -> int:
            return int(w3.eth.get_block("latest")["timestamp"]) + 3600

        for i in range(samples):
            owner, recovery = new_acct(), new_acct(False)
            # the salt a client uses: it binds the recovery phrase to the id
            salt = registration_salt(recovery.key, chain_id, addr, owner.address)
            inst = os.urandom(32)
            bundle = os.urandom(BUNDLE_BYTES)
            r = send_tx(w3, owner, reg.functions.register(salt, recovery.address, inst, bundle))
            gas["register"].append(r["gasUsed"])
            ident = bytes(reg.functions.identityIdFor(owner.address, salt).call())

            r = send_tx(
                w3, owner, reg.functions.publishBundle(ident, inst, os.urandom(BUNDLE_BYTES))
            )
            gas["publishBundle"].append(r["gasUsed"])

            inst2 = os.urandom(32)
            r = send_tx(
                w3, owner, reg.functions.addInstallation(ident, inst2, os.urandom(BUNDLE_BYTES))
            )
            gas["addInstallation"].append(r["gasUsed"])

            r = send_tx(w3, owner, reg.functions.revokeInstallation(ident, inst2))
            gas["revokeInstallation"].append(r["gasUsed"])

            r = send_tx(
                w3, owner, reg.functions.publishPqKey(ident, inst, os.urandom(PQ_RECORD_BYTES))
            )
            gas["publishPqKey"].append(r["gasUsed"])

            rec = new_acct(False)
            tag = recovery_tag(rec.key, chain_id, addr, ident)
            r = send_tx(w3, owner, reg.functions.setRecovery(ident, rec.address, tag))
            gas["setRecovery"].append(r["gasUsed"])
            set_balance(w3, recovery.address, 10**19)
            r = send_tx(w3, recovery, reg.functions.cancelRecoveryChange(ident))
            gas["cancelRecoveryChange"].append(r["gasUsed"])
            send_tx(w3, owner, reg.functions.setRecovery(ident, rec.address, tag))
            advance_time(w3, reg.functions.RECOVERY_DELAY().call())
            r = send_tx(w3, owner, reg.functions.confirmRecovery(ident))
            gas["confirmRecovery"].append(r["gasUsed"])

            wallet = new_acct(False)
            dl = far()
            sig = typed_signature(
                wallet,
                "LinkWallet",
                {"id": ident, "wallet": wallet.address, "nonce": 0, "deadline": dl},
                chain_id,
                addr,
            )
            r = send_tx(w3, owner, reg.functions.linkWallet(ident, wallet.address, dl, sig))
            gas["linkWallet"].append(r["gasUsed"])

            # Names (before the owner moves away).
            name = f"user-{i:05d}"
            secret = os.urandom(32)
            commitment = names.functions.makeCommitment(name, ident, owner.address, secret).call()
            r = send_tx(w3, owner, names.functions.commit(commitment))
            gas["commit"].append(r["gasUsed"])
            r = send_tx(w3, owner, names.functions.claim(name, ident, secret))
            gas["claim"].append(r["gasUsed"])

            # Relayed publish (owner signs, a relayer pays).
            nb = os.urandom(BUNDLE_BYTES)
            prev = bytes(reg.functions.getIdentity(ident).call()[4][0][1])
            nonce = reg.functions.nonces(owner.address).call()
            sig = typed_signature(
                owner,
                "PublishBundle",
                {
                    "id": ident,
                    "installation": inst,
                    "bundleHash": keccak(nb),
                    "previousBundleHash": prev,
                    "nonce": nonce,
                    "deadline": dl,
                },
                chain_id,
                addr,
            )
            r = send_tx(
                w3,
                deployer,
                reg.functions.publishBundleBySig(ident, inst, nb, owner.address, dl, sig),
            )
            gas["publishBundleBySig"].append(r["gasUsed"])

            new_owner = new_acct(False)
            sig = typed_signature(
                new_owner,
                "AcceptOwnership",
                {
                    "id": ident,
                    "newOwner": new_owner.address,
                    "currentOwner": owner.address,
                    "nonce": 0,
                    "deadline": dl,
                },
                chain_id,
                addr,
            )
            r = send_tx(w3, owner, reg.functions.setOwner(ident, new_owner.address, dl, sig))
            gas["setOwner"].append(r["gasUsed"])

            # Relayed register.
            o2 = new_acct(False)
            salt2, inst3, b3 = os.urandom(32), os.urandom(32), os.urandom(BUNDLE_BYTES)
            rec2 = new_acct(False).address
            sig = typed_signature(
                o2,
                "Register",
                {
                    "owner": o2.address,
                    "salt": salt2,
                    "recovery": rec2,
                    "installation": inst3,
                    "bundleHash": keccak(b3),
                    "nonce": 0,
                    "deadline": dl,
                },
                chain_id,
                addr,
            )
            r = send_tx(
                w3,
                deployer,
                reg.functions.registerBySig(o2.address, salt2, rec2, inst3, b3, dl, sig),
            )
            gas["registerBySig"].append(r["gasUsed"])

        deploy_gas: dict[str, int] = {}
        for k, cname in enumerate(("IdentityRegistry", "NameRegistry")):
            block: Any = w3.eth.get_block(dep["deploy_block"] + k)
            deploy_gas[cname] = int(
                w3.eth.get_transaction_receipt(block["transactions"][0])["gasUsed"]
            )
    finally:
        proc.stop()

    rows = []
    for op, vals in gas.items():
        target = TARGETS[op]
        med, mx = int(statistics.median(vals)), max(vals)
        rows.append(
            {
                "op": op,
                "median": med,
                "max": mx,
                "target": target,
                "ok": None if target is None else mx <= target,
                "note": NOTES[op],
            }
        )
    return {
        "samples": samples,
        "bundle_bytes": BUNDLE_BYTES,
        "pq_record_bytes": PQ_RECORD_BYTES,
        "deploy_gas": deploy_gas,
        "operations": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gas", description=__doc__)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--samples", type=int, default=5)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    result = measure(max(1, args.samples))
    result["seconds"] = round(time.monotonic() - t0, 2)
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    print(f"Registry gas on anvil ({result['samples']} samples each; receipt gasUsed)")
    print(f"{'operation':<20} {'median':>9} {'max':>9} {'target':>9}  {'':<6} note")
    for row in result["operations"]:
        target = f"{row['target']:,}" if row["target"] else "-"
        status = "" if row["ok"] is None else ("ok" if row["ok"] else "MISSED")
        print(
            f"{row['op']:<20} {row['median']:>9,} {row['max']:>9,} {target:>9}  {status:<6} "
            f"{row['note']}"
        )
    for name, g in result["deploy_gas"].items():
        print(f"deploy {name}: {g:,} gas")
    print(f"({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
