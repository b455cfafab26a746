"""Web3 adapter for the IdentityRegistry and NameRegistry contracts.

The only module of discovery that talks to the chain. web3 / requests errors are mapped to
discovery's own: a refused transaction becomes RegistryReverted (with the contract's custom
error name), an unreachable node ChainUnavailable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests
from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.providers.rpc.utils import ExceptionRetryConfiguration

from contracts import load_artifact
from discovery.errors import (
    ChainUnavailable,
    DiscoveryError,
    NameTaken,
    NotSent,
    RegistryReverted,
)
from discovery.network import NetworkConfig
from discovery.recovery_binding import recovery_tag, registration_salt

ZERO32 = b"\x00" * 32
ZERO_ADDRESS = "0x" + "00" * 20
REVOKED_HASH = (1).to_bytes(32, "big")


@dataclass(frozen=True, slots=True)
class InstallationState:
    installation_id: bytes
    bundle_hash: bytes
    pq_key_hash: bytes
    revoked: bool


@dataclass(frozen=True, slots=True)
class IdentityState:
    """What the registry's storage says about one identity (one eth_call)."""

    identity_id: bytes
    owner: str
    recovery: str
    created_block: int
    installations: tuple[InstallationState, ...]

    @property
    def exists(self) -> bool:
        return self.identity_id != ZERO32


@dataclass(frozen=True, slots=True)
class PendingRecovery:
    """An owner's recovery change waiting out the registry's delay (RECOVERY_DELAY)."""

    recovery: str  # the proposed account; the zero address clears the recovery
    ready_at: int  # chain timestamp from which ``confirm_recovery`` applies it
    tag: bytes  # the new phrase's binding tag (discovery.recovery_binding), logged on confirm


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded registry event."""

    name: str
    block_number: int
    log_index: int
    tx_hash: str
    address: str
    args: dict[str, Any] = field(repr=False)
    topics: tuple[bytes, ...] = field(default=(), repr=False)
    data: bytes = field(default=b"", repr=False)

    @property
    def order(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)


def identity_id_for(owner: str, salt: bytes) -> bytes:
    """The id the registry gives an identity registered by ``owner`` with ``salt``."""
    from eth_abi.abi import encode

    return keccak(encode(["address", "bytes32"], [to_checksum_address(owner), salt]))


class _EventDecoder:
    """Decode raw logs of a set of contract ABIs by topic0, quickly and without web3 objects."""

    def __init__(self, abis: Sequence[list[dict[str, Any]]]) -> None:
        self._by_topic: dict[bytes, tuple[str, list[dict[str, Any]]]] = {}
        self._checksummed: dict[str, str] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") != "event":
                    continue
                sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                self._by_topic[keccak(text=sig)] = (item["name"], item["inputs"])

    def _checksum(self, address: Any) -> str:
        key = address if isinstance(address, str) else "0x" + bytes(address).hex()
        hit = self._checksummed.get(key)
        if hit is None:
            hit = self._checksummed[key] = to_checksum_address(key)
        return hit

    def decode(self, log: Any) -> Event | None:
        """An event of ours, or None for another contract's. Raises ValueError for a log
        no real node returns (the caller reports the node as malformed)."""
        topics = [bytes(t) for t in log["topics"]]
        if not topics or topics[0] not in self._by_topic:
            return None
        name, inputs = self._by_topic[topics[0]]
        if len(topics) != 1 + sum(1 for i in inputs if i.get("indexed")) or any(
            len(t) != 32 for t in topics
        ):
            raise ValueError(f"{name} log with malformed topics")
        block, index = int(log["blockNumber"]), int(log["logIndex"])
        if not (0 <= block < MAX_BLOCK and 0 <= index < 2**32):
            raise ValueError(f"{name} log at an impossible position")
        args: dict[str, Any] = {}
        data_inputs = [i for i in inputs if not i.get("indexed")]
        try:
            data_values = abi_decode([i["type"] for i in data_inputs], bytes(log["data"]))
        except (DecodingError, OverflowError) as exc:
            raise ValueError(f"{name} log with undecodable data: {exc}") from exc
        ti = 1
        for inp in inputs:
            if inp.get("indexed"):
                raw = topics[ti]
                ti += 1
                args[inp["name"]] = _decode_topic(inp["type"], raw)
        for inp, value in zip(data_inputs, data_values, strict=True):
            args[inp["name"]] = to_checksum_address(value) if inp["type"] == "address" else value
        tx_hash = log.get("transactionHash")
        return Event(
            name=name,
            block_number=block,
            log_index=index,
            tx_hash=bytes(tx_hash).hex() if tx_hash is not None else "",
            address=self._checksum(log["address"]),
            args=args,
            topics=tuple(topics),
            data=bytes(log["data"]),
        )


#: no chain has, or will soon have, this many blocks (136 years of one a second): a larger
#: number is a lying node
MAX_BLOCK = 2**32


def _decode_topic(typ: str, raw: bytes) -> Any:
    """A decoded indexed argument (addresses checksummed)."""
    if typ == "address":
        return to_checksum_address(raw[12:])
    if typ.startswith("uint"):
        return int.from_bytes(raw, "big")
    return raw  # bytes32, or the hash of a dynamic type


class Registry:
    """Read and write the two registry contracts of one network."""

    def __init__(self, config: NetworkConfig, w3: Web3 | None = None, timeout: float = 10.0):
        self.config = config
        if w3 is None:
            session = requests.Session()
            session.trust_env = False  # no proxy lookup in the environment on every request
            w3 = Web3(
                Web3.HTTPProvider(
                    config.rpc_url,
                    request_kwargs={"timeout": timeout},
                    session=session,
                    # web3 retries timeouts too (5 attempts): a node that takes connections
                    # and answers nothing held every call for 5 timeouts and more
                    exception_retry_configuration=ExceptionRetryConfiguration(
                        errors=(ConnectionError, requests.exceptions.HTTPError)
                    ),
                )
            )
            # web3's "validation" adds 2 eth_chainId per eth_call; check_chain() covers it
            w3.middleware_onion.remove("validation")
        self.w3 = w3
        id_art = load_artifact("IdentityRegistry")
        name_art = load_artifact("NameRegistry")
        self.identity = self.w3.eth.contract(
            address=to_checksum_address(config.identity_registry), abi=id_art["abi"]
        )
        self.names = self.w3.eth.contract(
            address=to_checksum_address(config.name_registry), abi=name_art["abi"]
        )
        self.decoder = _EventDecoder([id_art["abi"], name_art["abi"]])
        self._errors = _error_selectors([id_art["abi"], name_art["abi"]])
        self._chain_checked = False

    # --- guarding -----------------------------------------------------------------------------
    @contextmanager
    def _rpc(self, what: str) -> Iterator[None]:
        try:
            yield
        except (ContractCustomError, ContractLogicError) as exc:
            raise self._revert(what, exc) from exc
        except requests.exceptions.RequestException as exc:
            raise ChainUnavailable(
                f"chain unreachable at {self.config.rpc_url} ({what}): is the devnet running? "
                "('logos-chat devnet up')"
            ) from exc
        except (Web3RPCError, Web3Exception) as exc:
            raise ChainUnavailable(f"chain error during {what}: {exc}") from exc
        except DiscoveryError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
            # a node (or something pretending to be one) that answers nonsense
            raise ChainUnavailable(
                f"the chain node at {self.config.rpc_url} gave a malformed answer to {what}"
            ) from exc

    def _revert(self, what: str, exc: Exception) -> RegistryReverted:
        data = getattr(exc, "data", None)
        reason = None
        if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
            reason = self._errors.get(data[2:10].lower())
        if reason is None:
            reason = getattr(exc, "message", None) or str(exc)
        if reason in ("NameTaken", "NameAlreadyClaimed"):
            return NameTaken(f"{what}: name is already taken", reason)
        if reason == "UnknownIdentity":
            return RegistryReverted(
                f"{what} refused by the registry: the identity is not on this chain (was the "
                "chain started again without its state?)",
                reason,
            )
        return RegistryReverted(f"{what} refused by the registry: {reason}", reason)

    def check_chain(self) -> None:
        """Make sure the node serves the chain the network file names, with both registry
        contracts deployed (once)."""
        if self._chain_checked:
            return
        from discovery.errors import WrongChain

        with self._rpc("chain id"):
            actual = int(self.w3.eth.chain_id)
        if actual != self.config.chain_id:
            raise WrongChain(
                f"the node at {self.config.rpc_url} serves chain {actual}, "
                f"but the network file says {self.config.chain_id}"
            )
        # a call to an address without code succeeds and a transaction to it is mined:
        # a network file naming no registry (a typo, another deployment's file) would
        # "register" an identity nowhere and find nobody
        for label, contract in (("identity", self.identity), ("name", self.names)):
            with self._rpc("getCode"):
                code = self.w3.eth.get_code(contract.address)
            if not code:
                raise WrongChain(
                    f"no registry contract at {contract.address} (the network file's {label} "
                    f"registry) on chain {actual} at {self.config.rpc_url}: the network file "
                    "names another deployment"
                )
        self._chain_checked = True

    # --- reads --------------------------------------------------------------------------------
    def get_identity(self, identity_id: bytes) -> IdentityState:
        with self._rpc("getIdentity"):
            raw = self.identity.functions.getIdentity(identity_id).call()
        return _identity_state(raw)

    def get_identity_by_account(self, address: str) -> IdentityState:
        with self._rpc("getIdentityByAccount"):
            raw = self.identity.functions.getIdentityByAccount(to_checksum_address(address)).call()
        return _identity_state(raw)

    def identity_of(self, address: str) -> bytes:
        """The identity id an account owns or is linked to in storage (zero: none)."""
        with self._rpc("identityOf"):
            return bytes(self.identity.functions.identityOf(to_checksum_address(address)).call())

    def resolve_name(self, name: str) -> IdentityState:
        with self._rpc("resolveName"):
            raw = self.names.functions.resolveName(name).call()
        return _identity_state(raw)

    def identity_events(self, identity_id: bytes, from_block: int) -> list[Event]:
        """Every event of both contracts about one identity (one eth_getLogs)."""
        return self._get_logs(
            {
                "address": [self.identity.address, self.names.address],
                "topics": [None, "0x" + identity_id.hex()],
                "fromBlock": hex(from_block),
                "toBlock": "latest",
            }
        )

    def events_between(self, from_block: int, to_block: int) -> list[Event]:
        return self._get_logs(
            {
                "address": [self.identity.address, self.names.address],
                "fromBlock": hex(from_block),
                "toBlock": hex(to_block),
            }
        )

    def _get_logs(self, params: dict[str, Any]) -> list[Event]:
        """eth_getLogs straight through the provider: web3's result formatting (AttributeDict,
        HexBytes, checksums) costs ~85 µs a log, most of an index sync."""
        with self._rpc("getLogs"):
            resp = self.w3.provider.make_request("eth_getLogs", [params])  # type: ignore[arg-type]
            if "error" in resp:
                raise ChainUnavailable(f"eth_getLogs failed: {resp['error']}")
            logs = [
                {
                    "topics": [bytes.fromhex(t[2:]) for t in raw["topics"]],
                    "data": bytes.fromhex(raw["data"][2:]),
                    "blockNumber": int(raw["blockNumber"], 16),
                    "logIndex": int(raw["logIndex"], 16),
                    "address": raw["address"],
                    "transactionHash": (
                        bytes.fromhex(raw["transactionHash"][2:])
                        if raw.get("transactionHash")
                        else None
                    ),
                }
                for raw in resp["result"]
            ]
        return self._decode_all(logs)

    def _decode_all(self, logs: Any) -> list[Event]:
        with self._rpc("decoding logs"):
            out = [e for e in (self.decoder.decode(log) for log in logs) if e is not None]
        out.sort(key=lambda e: e.order)
        return out

    def block_number(self) -> int:
        with self._rpc("blockNumber"):
            n = int(self.w3.eth.block_number)
            if not 0 <= n < MAX_BLOCK:  # an index sync would walk towards it for ever
                raise ValueError(f"impossible block number {n}")
            return n

    def block_hash(self, number: int) -> bytes:
        with self._rpc("getBlock"):
            return bytes(self.w3.eth.get_block(number)["hash"])

    def nonce_of(self, address: str) -> int:
        with self._rpc("nonces"):
            return int(self.identity.functions.nonces(to_checksum_address(address)).call())

    def pending_transactions(self, address: str) -> int:
        """How many of ``address``'s transactions the node holds, not yet mined."""
        with self._rpc("getTransactionCount"):
            account = to_checksum_address(address)
            pending = int(self.w3.eth.get_transaction_count(account, "pending"))
            return max(0, pending - int(self.w3.eth.get_transaction_count(account, "latest")))

    def balance(self, address: str) -> int:
        with self._rpc("getBalance"):
            return int(self.w3.eth.get_balance(to_checksum_address(address)))

    # --- writes -------------------------------------------------------------------------------
    def transact(
        self, account: LocalAccount, fn: Any, what: str, value: int = 0, gas: int | None = None
    ) -> Any:
        """Sign locally, send, wait for the receipt; map reverts. Returns the receipt.

        ``gas`` skips estimation: needed where the call depends on the block it lands in
        (a name claim must be mined after its commitment's block).
        """
        try:
            with self._rpc(what):
                self.check_chain()
                params: dict[str, Any] = {
                    "from": account.address,
                    "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
                    "chainId": self.config.chain_id,
                    "value": value,
                }
                if gas is not None:
                    params["gas"] = gas
                tx = fn.build_transaction(params)
                signed = account.sign_transaction(tx)
        except ChainUnavailable as exc:  # nothing was handed to the node yet
            raise NotSent(str(exc)) from exc.__cause__
        with self._rpc(what):
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Web3RPCError as exc:
                if "insufficient funds" in str(exc).lower():  # refused: the node kept nothing
                    raise NotSent(f"chain error during {what}: {exc}") from exc
                raise  # another refusal may mean a copy is pooled ('already known'): unsure
            receipt = wait_receipt(self.w3, tx_hash)
        if receipt["status"] != 1:
            raise RegistryReverted(f"{what} reverted on chain")
        return receipt

    def send_value(self, account: LocalAccount, to: str, value: int) -> Any:
        with self._rpc("transfer"):
            tx: dict[str, Any] = {
                "from": account.address,
                "to": to_checksum_address(to),
                "value": value,
                "gas": 21000,
                "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
                "chainId": self.config.chain_id,
                "gasPrice": self.w3.eth.gas_price,
            }
            signed = account.sign_transaction(tx)
            return wait_receipt(self.w3, self.w3.eth.send_raw_transaction(signed.raw_transaction))

    def register(
        self,
        owner: LocalAccount,
        salt: bytes,
        recovery: LocalAccount | str | None,
        installation: bytes,
        bundle: bytes,
    ) -> Any:
        """Register ``owner``'s identity. ``recovery``: an account or its address, None for
        none. Recovery by phrase finds the identity only if ``salt`` is
        :meth:`recovery_salt` (the registry does not check it)."""
        if recovery is None:
            address = ZERO_ADDRESS
        else:
            address = to_checksum_address(
                recovery if isinstance(recovery, str) else recovery.address
            )
        fn = self.identity.functions.register(salt, address, installation, bundle)
        return self.transact(owner, fn, "register")

    def recovery_salt(self, recovery: LocalAccount, owner: str) -> bytes:
        """The salt that binds ``recovery``'s phrase to the id ``owner`` registers with it
        (discovery.recovery_binding)."""
        return registration_salt(recovery.key, self.config.chain_id, self.identity.address, owner)

    def add_installation(
        self, signer: LocalAccount, identity_id: bytes, installation: bytes, bundle: bytes
    ) -> Any:
        fn = self.identity.functions.addInstallation(identity_id, installation, bundle)
        return self.transact(signer, fn, "addInstallation")

    def revoke_installation(
        self, signer: LocalAccount, identity_id: bytes, installation: bytes
    ) -> Any:
        fn = self.identity.functions.revokeInstallation(identity_id, installation)
        return self.transact(signer, fn, "revokeInstallation")

    def publish_bundle(
        self, signer: LocalAccount, identity_id: bytes, installation: bytes, bundle: bytes
    ) -> Any:
        fn = self.identity.functions.publishBundle(identity_id, installation, bundle)
        return self.transact(signer, fn, "publishBundle")

    def publish_pq_key(
        self, signer: LocalAccount, identity_id: bytes, installation: bytes, record: bytes
    ) -> Any:
        fn = self.identity.functions.publishPqKey(identity_id, installation, record)
        return self.transact(signer, fn, "publishPqKey")

    def commit_name(self, owner: LocalAccount, commitment: bytes) -> Any:
        return self.transact(owner, self.names.functions.commit(commitment), "commit name")

    def claim_name(self, owner: LocalAccount, name: str, identity_id: bytes, secret: bytes) -> Any:
        fn = self.names.functions.claim(name, identity_id, secret)
        # Check first (clear errors such as NameTaken), at the next block's height.
        with self._rpc(f"claim name {name!r}"):
            fn.call({"from": owner.address}, block_identifier="pending")
        return self.transact(owner, fn, f"claim name {name!r}", gas=250_000)

    def commitment_block(self, commitment: bytes) -> int:
        """The block a name commitment was made in (0: none)."""
        with self._rpc("commitments"):
            return int(self.names.functions.commitments(commitment).call())

    def min_commit_blocks(self) -> int:
        with self._rpc("minCommitBlocks"):
            return int(self.names.functions.minCommitBlocks().call())

    def wait_for_commitment(
        self, commitment: bytes, stall_s: float = 60.0, poll_s: float = 0.5
    ) -> None:
        """Return once a claim in the next block would find ``commitment`` old enough.
        ChainUnavailable when the chain makes no block for ``stall_s`` seconds meanwhile."""
        made = self.commitment_block(commitment)
        if made == 0:
            raise RegistryReverted("name commitment not found on chain", "CommitmentNotFound")
        ready = made + self.min_commit_blocks()
        head, since = self.block_number(), time.monotonic()
        while head + 1 < ready:
            if time.monotonic() - since > stall_s:
                raise ChainUnavailable(
                    f"no new block for {stall_s:.0f} s while waiting for block {ready} "
                    "to claim the name"
                )
            time.sleep(poll_s)
            now = self.block_number()
            if now != head:
                head, since = now, time.monotonic()

    def release_name(self, owner: LocalAccount, name: str) -> Any:
        return self.transact(owner, self.names.functions.release(name), f"release name {name!r}")

    def name_owner(self, name: str) -> bytes:
        with self._rpc("nameOwner"):
            return bytes(self.names.functions.nameOwner(name).call())

    # --- ownership, recovery, wallets (chatcore.identity) ---------------------------------------
    def set_owner(
        self, signer: LocalAccount, identity_id: bytes, new_owner: str, deadline: int, sig: bytes
    ) -> Any:
        """Owner or recovery replaces the owner; ``sig`` is the new owner's AcceptOwnership."""
        fn = self.identity.functions.setOwner(
            identity_id, to_checksum_address(new_owner), deadline, sig
        )
        return self.transact(signer, fn, "setOwner")

    def set_recovery(
        self, owner: LocalAccount, identity_id: bytes, recovery: LocalAccount | None
    ) -> Any:
        """Owner (or the current recovery account) replaces the recovery account (None clears
        it). The change logs the tag that binds ``recovery``'s phrase to the id
        (discovery.recovery_binding), so recovery by that phrase finds this identity and not a
        decoy naming the same address.

        When the owner replaces an existing recovery account, the registry only *proposes* the
        change (see :meth:`pending_recovery`): it takes effect with :meth:`confirm_recovery`
        after the registry's delay, and the current recovery account can cancel it."""
        address, tag = ZERO_ADDRESS, ZERO32
        if recovery is not None:
            address = recovery.address
            tag = recovery_tag(
                recovery.key, self.config.chain_id, self.identity.address, identity_id
            )
        fn = self.identity.functions.setRecovery(identity_id, address, tag)
        return self.transact(owner, fn, "setRecovery")

    def pending_recovery(self, identity_id: bytes) -> PendingRecovery | None:
        """The owner's proposed recovery change, if any (one eth_call)."""
        with self._rpc("pendingRecovery"):
            recovery, ready_at, tag = self.identity.functions.pendingRecovery(identity_id).call()
        if ready_at == 0:
            return None
        return PendingRecovery(to_checksum_address(recovery), int(ready_at), bytes(tag))

    def recovery_delay(self) -> int:
        """Seconds an owner's recovery change waits before it can be confirmed."""
        with self._rpc("RECOVERY_DELAY"):
            return int(self.identity.functions.RECOVERY_DELAY().call())

    def confirm_recovery(self, account: LocalAccount, identity_id: bytes) -> Any:
        """Apply the proposed recovery change once its delay has passed (anyone may)."""
        fn = self.identity.functions.confirmRecovery(identity_id)
        return self.transact(account, fn, "confirmRecovery")

    def cancel_recovery_change(self, signer: LocalAccount, identity_id: bytes) -> Any:
        """Owner or current recovery account cancels the proposed recovery change."""
        fn = self.identity.functions.cancelRecoveryChange(identity_id)
        return self.transact(signer, fn, "cancelRecoveryChange")

    def link_wallet(
        self, owner: LocalAccount, identity_id: bytes, wallet: str, deadline: int, sig: bytes
    ) -> Any:
        fn = self.identity.functions.linkWallet(
            identity_id, to_checksum_address(wallet), deadline, sig
        )
        return self.transact(owner, fn, "linkWallet")

    def unlink_wallet(self, signer: LocalAccount, identity_id: bytes, wallet: str) -> Any:
        fn = self.identity.functions.unlinkWallet(identity_id, to_checksum_address(wallet))
        return self.transact(signer, fn, "unlinkWallet")

    def latest_timestamp(self) -> int:
        with self._rpc("getBlock"):
            return int(self.w3.eth.get_block("latest")["timestamp"])


def name_commitment(name: str, identity_id: bytes, owner: str, secret: bytes) -> bytes:
    from eth_abi.abi import encode

    return keccak(
        encode(
            ["string", "bytes32", "address", "bytes32"],
            [name, identity_id, to_checksum_address(owner), secret],
        )
    )


def wait_receipt(w3: Web3, tx_hash: Any, timeout: float = 30.0, poll: float = 0.005) -> Any:
    """Wait for a receipt; anvil mines asynchronously (FIELD-NOTES)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            if time.monotonic() > deadline:
                raise TimeExhausted(f"no receipt for {tx_hash!r}") from None
            time.sleep(poll)
            poll = min(poll * 2, 0.05)


def _error_selectors(abis: Sequence[list[dict[str, Any]]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for abi in abis:
        for item in abi:
            if item.get("type") == "error":
                sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                out[keccak(text=sig)[:4].hex()] = item["name"]
    return out


def _identity_state(raw: Any) -> IdentityState:
    ident_id, owner, recovery, created, insts = raw
    return IdentityState(
        identity_id=bytes(ident_id),
        owner=to_checksum_address(owner),
        recovery=to_checksum_address(recovery),
        created_block=int(created),
        installations=tuple(
            InstallationState(bytes(i[0]), bytes(i[1]), bytes(i[2]), bool(i[3])) for i in insts
        ),
    )
