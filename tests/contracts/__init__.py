"""Helpers for the registry contract tests: EIP-712 signing as a wallet would, revert checks."""

from __future__ import annotations

import os
from typing import Any

from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from devnet.chain import decode_error, send_tx
from discovery.eip712 import DOMAIN_NAME, DOMAIN_VERSION, typed_data

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def sign_typed(
    account: LocalAccount,
    primary: str,
    message: dict[str, Any],
    *,
    chain_id: int,
    verifying_contract: str,
    name: str = DOMAIN_NAME,
    version: str = DOMAIN_VERSION,
) -> bytes:
    """Sign EIP-712 typed data the way a wallet's eth_signTypedData_v4 does."""
    full = typed_data(primary, message, chain_id, verifying_contract, name, version)
    return bytes(account.sign_message(encode_typed_data(full_message=full)).signature)


def to_high_s(sig: bytes) -> bytes:
    """The malleable twin of a valid signature: s' = n - s, v flipped. ecrecover accepts it."""
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v if v in (27, 28) else v ^ 1])


def revert_error(fn_call: Any, sender: str) -> str | None:
    """Simulate ``fn_call`` from ``sender`` in the pending block: None if it would succeed,
    else the custom error name (or the message for a non-custom revert)."""
    try:
        fn_call.call({"from": sender}, block_identifier="pending")
    except ContractCustomError as e:
        return decode_error(None, e.data if isinstance(e.data, str) else None) or str(e.data)
    except ContractLogicError as e:
        return f"logic:{e.message}"
    return None


def assert_reverts(fn_call: Any, sender: str, error: str) -> None:
    got = revert_error(fn_call, sender)
    assert got == error, f"expected revert {error}, got {got or 'success'}"


def deadline(w3: Web3, seconds: int = 3600) -> int:
    return int(w3.eth.get_block("latest")["timestamp"]) + seconds


def rand32() -> bytes:
    return os.urandom(32)


def bundle_bytes(n: int = 290) -> bytes:
    return os.urandom(n)


def register(
    w3: Web3,
    reg: Any,
    owner: LocalAccount,
    recovery: str | None = None,
    installation: bytes | None = None,
    bundle: bytes | None = None,
    salt: bytes | None = None,
) -> tuple[bytes, bytes, bytes]:
    """Register an identity for ``owner``; returns (id, installation, bundle)."""
    installation = installation or rand32()
    bundle = bundle or bundle_bytes()
    salt = salt or rand32()
    recovery = recovery or "0x" + "00" * 20
    send_tx(w3, owner, reg.functions.register(salt, recovery, installation, bundle))
    ident = bytes(reg.functions.identityIdFor(owner.address, salt).call())
    return ident, installation, bundle


def bundle_hash(bundle: bytes) -> bytes:
    return keccak(bundle)
