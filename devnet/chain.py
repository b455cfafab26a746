"""The anvil side of the devnet: start anvil, connect web3, deploy the registries, send txs.

Transactions are always signed locally (eth_account LocalAccount) and sent raw; anvil mines
asynchronously, so receipts are polled with a short latency (FIELD-NOTES, Chain).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted

from devnet.errors import DevnetError
from devnet.process import ManagedProcess, find_binary, free_port, spawn

DEFAULT_CHAIN_ID = 31337
DEV_MNEMONIC = "test test test test test test test test test test test junk"
# NameRegistry commit window used on the devnet (blocks): claim no sooner than 1 block after the
# commit (so the commit and the claim are never in the same block) and no later than ~1 day.
DEVNET_MIN_COMMIT_BLOCKS = 1
DEVNET_MAX_COMMIT_BLOCKS = 7200

RECEIPT_POLL_S = 0.005


class ContractReverted(DevnetError):
    """A transaction (or its gas estimate) reverted. ``error`` is the decoded custom error name
    when the ABI knows it (e.g. "NotAuthorized"), ``data`` the raw revert data (hex)."""

    def __init__(
        self, message: str, error: str | None = None, data: str | None = None, receipt: Any = None
    ) -> None:
        super().__init__(message)
        self.error = error
        self.data = data
        self.receipt = receipt


# ----------------------------------------------------------------------------- accounts


@cache
def dev_account(index: int = 0) -> LocalAccount:
    """Anvil's default dev account ``index`` (from the well-known test mnemonic), 10,000 ETH."""
    Account.enable_unaudited_hdwallet_features()
    acct: LocalAccount = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return acct


def dev_accounts(n: int = 10) -> list[LocalAccount]:
    return [dev_account(i) for i in range(n)]


def set_balance(w3: Web3, address: str, wei: int) -> None:
    """anvil_setBalance: fund an account instantly (devnet only)."""
    resp = w3.provider.make_request("anvil_setBalance", [address, hex(wei)])  # type: ignore[arg-type]
    if "error" in resp:
        raise DevnetError(f"anvil_setBalance failed: {resp['error']}")


def mine(w3: Web3, blocks: int = 1) -> None:
    """anvil_mine: mine ``blocks`` empty blocks at once (devnet only)."""
    resp = w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]
    if "error" in resp:
        raise DevnetError(f"anvil_mine failed: {resp['error']}")


def advance_time(w3: Web3, seconds: int) -> None:
    """evm_increaseTime then mine one block: the chain's clock moves on (devnet only)."""
    resp = w3.provider.make_request("evm_increaseTime", [int(seconds)])  # type: ignore[arg-type]
    if "error" in resp:
        raise DevnetError(f"evm_increaseTime failed: {resp['error']}")
    mine(w3)


# ----------------------------------------------------------------------------- anvil


def start_anvil(
    port: int | None = None,
    state_file: str | Path | None = None,
    log_path: str | Path | None = None,
    detach: bool = False,
    *,
    chain_id: int = DEFAULT_CHAIN_ID,
    host: str = "127.0.0.1",
    extra_args: tuple[str, ...] | list[str] = (),
) -> ManagedProcess:
    """Start anvil on loopback. With ``state_file`` the chain is loaded from it at start and
    written back when anvil is stopped with SIGTERM (``ManagedProcess.stop()``), so state
    survives a restart. Output goes to ``log_path`` (or nowhere)."""
    port = port or free_port(host)
    argv = [
        find_binary("anvil"),
        "--host",
        host,
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
    ]
    if state_file is not None:
        state_file = Path(state_file)
        state_file.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--state", str(state_file)]
    if log_path is None:
        argv.append("--silent")
    else:
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
    argv += list(extra_args)
    return spawn("anvil", argv, host, port, log_path=log_path, detach=detach)


def rpc_url(proc: ManagedProcess) -> str:
    return f"http://{proc.host}:{proc.port}"


def connect(url: str, timeout: float = 10.0) -> Web3:
    """A Web3 over HTTP with a kept-alive session (web3's provider reuses one per endpoint)."""
    provider = Web3.HTTPProvider(
        url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
    )
    w3 = Web3(provider)
    if not w3.is_connected():
        raise DevnetError(f"no JSON-RPC node answers at {url}")
    return w3


# ----------------------------------------------------------------------------- transactions


@cache
def _error_selectors(abi_json: str) -> dict[str, str]:
    import json

    out: dict[str, str] = {}
    for item in json.loads(abi_json):
        if item.get("type") == "error":
            sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            out["0x" + keccak(text=sig)[:4].hex()] = item["name"]
    return out


def decode_error(abi: list[dict[str, Any]] | None, data: str | bytes | None) -> str | None:
    """Custom error name for revert ``data`` (``abi`` first, then the registry ABIs)."""
    import json

    if data is None:
        return None
    if isinstance(data, bytes):
        data = "0x" + data.hex()
    sel = data[:10].lower()
    abis = [abi] if abi else []
    from contracts import load_artifact

    abis += [load_artifact("IdentityRegistry")["abi"], load_artifact("NameRegistry")["abi"]]
    for a in abis:
        name = _error_selectors(json.dumps(a, sort_keys=True)).get(sel)
        if name:
            return name
    return None


def _revert_error(exc: Exception, abi: list[dict[str, Any]] | None) -> ContractReverted:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):  # some providers wrap it
        data = data.get("data")
    name = decode_error(abi, data) if isinstance(data, (str, bytes)) else None
    msg = f"reverted: {name}" if name else f"reverted: {exc}"
    return ContractReverted(msg, error=name, data=data if isinstance(data, str) else None)


def _chain_id(w3: Web3) -> int:
    cached = getattr(w3, "_logos_chain_id", None)
    if cached is None:
        cached = int(w3.eth.chain_id)
        w3._logos_chain_id = cached  # type: ignore[attr-defined]
    return int(cached)


def build_tx(
    w3: Web3,
    account: LocalAccount,
    fn_call: Any = None,
    *,
    to: str | None = None,
    data: bytes | str | None = None,
    value: int = 0,
    gas: int | None = None,
    nonce: int | None = None,
) -> dict[str, Any]:
    """An EIP-1559 tx dict from a contract function call (or raw to/data), gas estimated."""
    gas_price = int(w3.eth.gas_price)
    tx: dict[str, Any] = {
        "from": account.address,
        "chainId": _chain_id(w3),
        "value": value,
        "nonce": nonce
        if nonce is not None
        else w3.eth.get_transaction_count(account.address, "pending"),
        "maxFeePerGas": 2 * gas_price + 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    if gas is not None:
        tx["gas"] = gas
    abi = getattr(fn_call, "contract_abi", None)
    if fn_call is not None:
        tx = fn_call.build_transaction({**tx, "gas": gas or 0})  # no estimate here: see below
    else:
        if to is not None:
            tx["to"] = to
        if data is not None:
            tx["data"] = data
    if gas is None:
        # Estimate in the *pending* block, where the tx will actually run: against "latest",
        # block.number is one lower (e.g. a name claim right after its commit looks too new).
        tx.pop("gas", None)
        try:
            est = int(w3.eth.estimate_gas(tx, block_identifier="pending"))  # type: ignore[arg-type]
        except (ContractCustomError, ContractLogicError) as e:
            raise _revert_error(e, abi) from e
        tx["gas"] = est + est // 5 + 5_000
    return tx


def send_tx(
    w3: Web3,
    account: LocalAccount,
    fn_call: Any = None,
    *,
    to: str | None = None,
    data: bytes | str | None = None,
    value: int = 0,
    gas: int | None = None,
    nonce: int | None = None,
    timeout: float = 30.0,
    wait: bool = True,
    check: bool = True,
) -> Any:
    """Build, sign locally with ``account``, send, and (by default) wait for the receipt.

    ``fn_call`` is a bound contract function (``contract.functions.f(args)``); for a deployment
    or raw call pass ``data`` (and ``to``). A revert in gas estimation or a mined tx with status 0
    raises ContractReverted (when ``check``). Returns the receipt, or the tx hash if not ``wait``.
    """
    tx = build_tx(w3, account, fn_call, to=to, data=data, value=value, gas=gas, nonce=nonce)
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    if not wait:
        return tx_hash
    try:
        receipt = w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=timeout, poll_latency=RECEIPT_POLL_S
        )
    except TimeExhausted as e:
        raise DevnetError(f"tx {tx_hash.hex()} not mined within {timeout:.0f}s") from e
    if check and receipt["status"] != 1:
        raise ContractReverted(
            f"tx {tx_hash.hex()} reverted (gas used {receipt['gasUsed']})", receipt=receipt
        )
    return receipt


# ----------------------------------------------------------------------------- deployment


def contract(w3: Web3, name: str, address: str | None = None) -> Any:
    """A web3 contract object for artifact ``name`` (at ``address`` if given)."""
    from contracts import load_artifact

    art = load_artifact(name)
    if address is None:
        return w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=art["abi"])


def deploy(w3: Web3, account: LocalAccount, name: str, *args: Any) -> tuple[str, Any]:
    """Deploy artifact ``name``; returns (address, receipt)."""
    factory = contract(w3, name)
    data = factory.constructor(*args).data_in_transaction
    receipt = send_tx(w3, account, data=data)
    address = receipt["contractAddress"]
    if not address:
        raise DevnetError(f"deploying {name}: no contract address in receipt")
    return Web3.to_checksum_address(address), receipt


def deploy_registries(
    w3: Web3,
    deployer_account: LocalAccount,
    min_commit_blocks: int = DEVNET_MIN_COMMIT_BLOCKS,
    max_commit_blocks: int = DEVNET_MAX_COMMIT_BLOCKS,
) -> dict[str, Any]:
    """Deploy IdentityRegistry then NameRegistry(identityRegistry, min, max).

    Returns {"identity_registry", "name_registry" (checksum addresses), "deploy_block" (block of
    the first deployment: scan logs from here), "chain_id", "min_commit_blocks",
    "max_commit_blocks"}.
    """
    ident, r1 = deploy(w3, deployer_account, "IdentityRegistry")
    names, _ = deploy(
        w3, deployer_account, "NameRegistry", ident, min_commit_blocks, max_commit_blocks
    )
    return {
        "identity_registry": ident,
        "name_registry": names,
        "deploy_block": int(r1["blockNumber"]),
        "chain_id": _chain_id(w3),
        "min_commit_blocks": min_commit_blocks,
        "max_commit_blocks": max_commit_blocks,
    }


def registries(w3: Web3, deployment: dict[str, Any]) -> tuple[Any, Any]:
    """(IdentityRegistry, NameRegistry) contract objects for a deploy_registries() result."""
    return (
        contract(w3, "IdentityRegistry", deployment["identity_registry"]),
        contract(w3, "NameRegistry", deployment["name_registry"]),
    )


__all__ = [
    "DEFAULT_CHAIN_ID",
    "DEV_MNEMONIC",
    "ContractReverted",
    "build_tx",
    "connect",
    "contract",
    "decode_error",
    "deploy",
    "deploy_registries",
    "dev_account",
    "dev_accounts",
    "mine",
    "registries",
    "rpc_url",
    "send_tx",
    "set_balance",
    "start_anvil",
]
