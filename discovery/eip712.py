"""EIP-712 typed data of the IdentityRegistry: every struct it accepts a signature over.

One place for the product code (wallet consents, relayed calls) and the benchmarks. The
contract tests keep their own independent copy on purpose, as a check against the contract.
"""

from __future__ import annotations

from typing import Any

DOMAIN_NAME = "LogosChatIdentityRegistry"
DOMAIN_VERSION = "1"

EIP712_TYPES: dict[str, list[tuple[str, str]]] = {
    "Register": [
        ("owner", "address"), ("salt", "bytes32"), ("recovery", "address"),
        ("installation", "bytes32"), ("bundleHash", "bytes32"), ("nonce", "uint256"),
        ("deadline", "uint256"),
    ],
    "AddInstallation": [
        ("id", "bytes32"), ("installation", "bytes32"), ("bundleHash", "bytes32"),
        ("nonce", "uint256"), ("deadline", "uint256"),
    ],
    "RevokeInstallation": [
        ("id", "bytes32"), ("installation", "bytes32"), ("nonce", "uint256"),
        ("deadline", "uint256"),
    ],
    "PublishBundle": [
        ("id", "bytes32"), ("installation", "bytes32"), ("bundleHash", "bytes32"),
        ("previousBundleHash", "bytes32"), ("nonce", "uint256"), ("deadline", "uint256"),
    ],
    "SetOwner": [
        ("id", "bytes32"), ("currentOwner", "address"), ("newOwner", "address"),
        ("nonce", "uint256"), ("deadline", "uint256"),
    ],
    "AcceptOwnership": [
        ("id", "bytes32"), ("newOwner", "address"), ("currentOwner", "address"),
        ("nonce", "uint256"), ("deadline", "uint256"),
    ],
    "LinkWallet": [
        ("id", "bytes32"), ("wallet", "address"), ("nonce", "uint256"), ("deadline", "uint256"),
    ],
}  # fmt: skip


def typed_data(
    primary: str,
    message: dict[str, Any],
    chain_id: int,
    registry: str,
    name: str = DOMAIN_NAME,
    version: str = DOMAIN_VERSION,
) -> dict[str, Any]:
    """The full eth_signTypedData_v4 document for one registry struct (``name``/``version``
    of the domain overridable, for tests that sign under a wrong domain)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            primary: [{"name": n, "type": t} for n, t in EIP712_TYPES[primary]],
        },
        "primaryType": primary,
        "domain": {
            "name": name,
            "version": version,
            "chainId": chain_id,
            "verifyingContract": registry,
        },
        "message": message,
    }


def typed_signature(
    account: Any, primary: str, message: dict[str, Any], chain_id: int, registry: str
) -> bytes:
    """Sign it the way a wallet's eth_signTypedData_v4 does (65-byte r|s|v)."""
    from eth_account.messages import encode_typed_data

    full = typed_data(primary, message, chain_id, registry)
    return bytes(account.sign_message(encode_typed_data(full_message=full)).signature)
