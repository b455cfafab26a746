"""Resolve an identity id, an account address, a name or a bundle text to verified bundles.

A cold lookup costs two RPC calls: one ``eth_call`` (the identity's storage: owner, recovery,
installations with their status and the hashes of their latest bundle and post-quantum key)
and one ``eth_getLogs`` (every event about that identity from both contracts, since its
creation block: bundles, post-quantum keys, names, wallets and the audit history). The RPC
node is not trusted with the bundles: each must hash to what storage holds, be signed by its
installation key, be bound to this chain id and registry, be the newest of its installation
and carry an unexpired prekey. Nothing half-verified is returned.

With a synced :class:`discovery.index.Index` the same verification runs on locally stored
events, with no RPC call at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from eth_utils.crypto import keccak

from discovery.errors import (
    DiscoveryError,
    HashMismatch,
    IdentityMismatch,
    InvalidQuery,
    InvalidRecord,
    RecordNotFound,
    RevokedInstallation,
    StaleRecord,
    WrongChain,
)
from discovery.records import ChainBinding, IntroBundle, PqKeyRecord, looks_like_text
from discovery.registry import ZERO32, Event, IdentityState

NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9_-]{2,31}$")
_ID_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDR_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True, slots=True)
class VerifiedInstallation:
    """One installation whose bundle (and post-quantum key, if any) passed every check."""

    bundle: IntroBundle
    pq: PqKeyRecord | None
    bundle_block: int

    @property
    def installation_id(self) -> bytes:
        return self.bundle.installation_id


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One key or binding change of an identity, as recorded on chain."""

    block_number: int
    log_index: int
    event: str
    detail: dict[str, str]
    tx_hash: str
    #: checked against the identity's verified current state (see Resolver._audit)
    verified: bool = True
    note: str = ""


@dataclass(frozen=True, slots=True)
class ResolvedIdentity:
    identity_id: bytes
    owner: str
    recovery: str
    names: tuple[str, ...]
    wallets: tuple[str, ...]
    installations: tuple[VerifiedInstallation, ...]
    revoked: tuple[bytes, ...]
    rejected: tuple[tuple[bytes, str], ...] = ()
    history: tuple[HistoryEntry, ...] = field(default=(), repr=False)

    def installation(self, installation_id: bytes) -> VerifiedInstallation | None:
        for inst in self.installations:
            if inst.installation_id == installation_id:
                return inst
        return None


class IdentitySource(Protocol):
    """Where the raw state and events of an identity come from (chain or local index)."""

    def by_id(self, identity_id: bytes) -> IdentityState: ...
    def by_account(self, address: str) -> IdentityState: ...
    def by_name(self, name: str) -> IdentityState: ...
    def events(self, state: IdentityState) -> list[Event]: ...


class ChainSource:
    """The cold path: one eth_call + one eth_getLogs per identity."""

    def __init__(self, registry: object) -> None:
        from discovery.registry import Registry

        assert isinstance(registry, Registry)
        self.registry = registry

    def by_id(self, identity_id: bytes) -> IdentityState:
        return self.registry.get_identity(identity_id)

    def by_account(self, address: str) -> IdentityState:
        return self.registry.get_identity_by_account(address)

    def by_name(self, name: str) -> IdentityState:
        return self.registry.resolve_name(name)

    def events(self, state: IdentityState) -> list[Event]:
        return self.registry.identity_events(state.identity_id, state.created_block)


def parse_query(query: str) -> tuple[str, str]:
    """Classify a lookup query: ('id'|'account'|'name'|'text', normalised). TypeError for a
    query that is no string."""
    if not isinstance(query, str):
        raise TypeError(f"a lookup query must be a string, not {type(query).__name__}")
    q = query.strip()
    if looks_like_text(q):
        return "text", q
    if q[:2] == "0X":  # as typed or pasted: the prefix is not case-sensitive
        q = "0x" + q[2:]
    if _ID_RE.match(q):
        return "id", q.lower()
    if _ADDR_RE.match(q):
        return "account", q
    if q.startswith("0x"):
        raise InvalidQuery(
            f"{query!r} is neither an identity id (0x + 64 hex) nor an address (0x + 40 hex)"
        )
    name = q.lower().removeprefix("@")
    if not NAME_RE.match(name):
        raise InvalidQuery(
            f"{query!r} is not a valid name (3-32 of a-z 0-9 - _, not starting with -)"
        )
    return "name", name


class Resolver:
    """Turns queries into :class:`ResolvedIdentity` values, verifying everything."""

    def __init__(
        self,
        source: IdentitySource,
        binding: ChainBinding,
        name_registry: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.binding = binding
        self.name_registry = name_registry.lower()
        self.clock = clock

    def resolve(self, query: str, *, require_active: bool = True) -> ResolvedIdentity:
        """The verified identity. ``require_active=False`` (an audit of the key history):
        an identity whose installations are all revoked is returned, with none."""
        kind, q = parse_query(query)
        if kind == "text":
            return self.resolve_text(q)
        if kind == "id":
            return self.resolve_id(bytes.fromhex(q[2:]), require_active=require_active)
        if kind == "account":
            state = self.source.by_account(q)
        else:
            state = self.source.by_name(q)
        if not state.exists:
            raise RecordNotFound(f"no identity found for {query!r}")
        return self.verify(state, self.source.events(state), require_active=require_active)

    def resolve_id(
        self, identity_id: bytes, *, fresh_prekeys: bool = True, require_active: bool = True
    ) -> ResolvedIdentity:
        """Resolve by id. ``fresh_prekeys=False`` accepts expired prekeys: for checking that a
        *sender* is registered, where only the installation keys matter."""
        state = self.source.by_id(identity_id)
        if not state.exists:
            raise RecordNotFound(f"no identity 0x{identity_id.hex()}")
        if state.identity_id != identity_id:
            raise IdentityMismatch(
                f"asked for identity 0x{identity_id.hex()[:16]}…, the chain answered about "
                f"0x{state.identity_id.hex()[:16]}…"
            )
        return self.verify(
            state,
            self.source.events(state),
            fresh_prekeys=fresh_prekeys,
            require_active=require_active,
        )

    def resolve_text(self, text: str) -> ResolvedIdentity:
        """Verify an out-of-band bundle text against the chain."""
        bundle = IntroBundle.from_text(text)
        if bundle.chain_id != self.binding.chain_id or bundle.registry != self.binding.registry:
            raise WrongChain(
                f"bundle is for chain {bundle.chain_id} / 0x{bundle.registry.hex()}, this "
                f"network is chain {self.binding.chain_id} / 0x{self.binding.registry.hex()}"
            )
        if not bundle.signature_ok():
            from discovery.errors import BadSignature

            raise BadSignature("intro bundle signature does not verify")
        resolved = self.resolve_id(bundle.identity_id)
        if bundle.installation_id in resolved.revoked:
            raise RevokedInstallation(
                f"installation 0x{bundle.installation_id.hex()[:16]}… was revoked on chain"
            )
        inst = resolved.installation(bundle.installation_id)
        if inst is None:
            raise RecordNotFound("the bundle's installation is not registered for its identity")
        if inst.bundle.seq < bundle.seq:
            raise HashMismatch("the bundle text is newer than anything on chain")
        return resolved

    # --- verification ---------------------------------------------------------------------
    def verify(
        self,
        state: IdentityState,
        events: Sequence[Event],
        *,
        fresh_prekeys: bool = True,
        require_active: bool = True,
    ) -> ResolvedIdentity:
        now = int(self.clock()) if fresh_prekeys else 0
        bundles: dict[bytes, list[Event]] = {}
        pqs: dict[bytes, list[Event]] = {}
        names: dict[str, None] = {}
        wallets: dict[str, None] = {}
        history: list[HistoryEntry] = []
        for ev in events:
            a = ev.args
            if a.get("id") != state.identity_id:
                continue  # the node returned an event about someone else: ignore it
            if ev.name == "BundlePublished":
                bundles.setdefault(a["installation"], []).append(ev)
            elif ev.name == "PqKeyPublished":
                pqs.setdefault(a["installation"], []).append(ev)
            elif ev.name == "NameClaimed" and ev.address.lower() == self.name_registry:
                names[a["name"]] = None
            elif ev.name == "NameReleased" and ev.address.lower() == self.name_registry:
                names.pop(a["name"], None)
            elif ev.name == "WalletLinked":
                wallets[a["wallet"]] = None
            elif ev.name == "WalletUnlinked":
                wallets.pop(a["wallet"], None)
            history.append(_history_entry(ev))

        # a source with storage's word on names (the index's checked view) keeps only the
        # names storage says this identity holds: a node can invent a NameClaimed log
        holder = getattr(self.source, "name_holder", None)
        if holder is not None:
            names = {n: None for n in names if holder(n) == state.identity_id}
        verified: list[VerifiedInstallation] = []
        revoked: list[bytes] = []
        rejected: list[tuple[bytes, InvalidRecord]] = []
        for inst in state.installations:
            if inst.revoked:
                revoked.append(inst.installation_id)
                continue
            try:
                verified.append(
                    self._verify_installation(state.identity_id, inst, bundles, pqs, now)
                )
            except InvalidRecord as exc:
                rejected.append((inst.installation_id, exc))
        if not verified and require_active:
            if rejected:
                raise rejected[0][1]
            if revoked:
                raise RevokedInstallation(
                    f"every installation of identity 0x{state.identity_id.hex()[:16]}… is revoked"
                )
            raise RecordNotFound(f"identity 0x{state.identity_id.hex()} has no installations")
        return ResolvedIdentity(
            identity_id=state.identity_id,
            owner=state.owner,
            recovery=state.recovery,
            names=tuple(names),
            wallets=tuple(wallets),
            installations=tuple(verified),
            revoked=tuple(revoked),
            rejected=tuple((i, str(e)) for i, e in rejected),
            history=self._audit(state, events, history),
        )

    def _audit(
        self, state: IdentityState, events: Sequence[Event], entries: list[HistoryEntry]
    ) -> tuple[HistoryEntry, ...]:
        """Check each key change against the verified state: records must carry valid
        signatures bound to this chain, identity and installation; the owner and recovery
        chains must end where storage is; added / revoked installations must be what storage
        lists; events must come from this network's registry contracts."""
        from dataclasses import replace

        mine = [ev for ev in events if ev.args.get("id") == state.identity_id]
        by_inst = {i.installation_id: i for i in state.installations}
        owner: str | None = None
        last_owner_change: int | None = None
        last_recovery: int | None = None
        out: list[HistoryEntry] = []
        for n, (ev, entry) in enumerate(zip(mine, entries, strict=True)):
            ok, note = True, ""
            a = ev.args
            expected = self.name_registry if ev.name.startswith("Name") else self.binding_address
            if ev.address.lower() != expected:
                ok, note = False, "emitted by another contract"
            elif ev.name == "IdentityRegistered":
                owner = a["owner"]
                ok = ev.block_number == state.created_block
                note = "" if ok else "not at the identity's creation block"
            elif ev.name == "OwnerChanged":
                ok = owner is None or a["previousOwner"] == owner
                note = "" if ok else "previous owner does not match the owner before it"
                owner = a["newOwner"]
                last_owner_change = n
            elif ev.name == "RecoveryChanged":
                last_recovery = n
            elif ev.name == "InstallationAdded":
                ok = a["installation"] in by_inst
                note = "" if ok else "installation not listed in storage"
            elif ev.name == "InstallationRevoked":
                st = by_inst.get(a["installation"])
                ok = st is not None and st.revoked
                note = "" if ok else "storage does not list it as revoked"
            elif ev.name in ("BundlePublished", "PqKeyPublished"):
                ok, note = self._record_ok(ev, state.identity_id)
            out.append(entry if ok and not note else replace(entry, verified=ok, note=note))
        if last_owner_change is not None and owner != state.owner:
            out[last_owner_change] = replace(
                out[last_owner_change], verified=False, note="storage names another owner"
            )
        if last_recovery is not None:
            rec = mine[last_recovery].args["recovery"]
            if rec.lower() != state.recovery.lower():
                out[last_recovery] = replace(
                    out[last_recovery], verified=False, note="storage names another recovery"
                )
        return tuple(out)

    @property
    def binding_address(self) -> str:
        return "0x" + self.binding.registry.hex()

    def _record_ok(self, ev: Event, identity_id: bytes) -> tuple[bool, str]:
        raw = bytes(ev.args["bundle" if ev.name == "BundlePublished" else "record"])
        try:
            rec: IntroBundle | PqKeyRecord = (
                IntroBundle.decode(raw) if ev.name == "BundlePublished" else PqKeyRecord.decode(raw)
            )
            # a pairing bundle (addInstallation, by the owner) was made by a new device
            # that did not know its identity yet: it names none
            pairing = isinstance(rec, IntroBundle) and rec.identity_id == ZERO32
            # a historical record: its prekey may have expired since, that is fine
            rec.verify(
                self.binding,
                0,
                identity_id=None if pairing else identity_id,
                installation_id=ev.args["installation"],
            )
        except InvalidRecord as exc:
            return False, str(exc)
        return True, "pairing bundle of a new device" if pairing else ""

    def _verify_installation(
        self,
        identity_id: bytes,
        inst: object,
        bundles: dict[bytes, list[Event]],
        pqs: dict[bytes, list[Event]],
        now: int,
    ) -> VerifiedInstallation:
        from discovery.registry import InstallationState

        assert isinstance(inst, InstallationState)
        iid = inst.installation_id
        match: tuple[IntroBundle, Event] | None = None
        max_seq = -1
        for ev in bundles.get(iid, []):
            raw = bytes(ev.args["bundle"])
            try:
                b = IntroBundle.decode(raw)
            except DiscoveryError:
                continue
            if b.signature_ok() and b.installation_id == iid:
                max_seq = max(max_seq, b.seq)
            if keccak(raw) == inst.bundle_hash:
                match = (b, ev)
        if match is None:
            raise HashMismatch(
                f"no bundle of installation 0x{iid.hex()[:16]}… matches the hash stored on chain"
            )
        bundle, ev = match
        bundle.verify(
            self.binding,
            now,
            expected_hash=inst.bundle_hash,
            identity_id=identity_id,
            installation_id=iid,
        )
        if bundle.seq < max_seq:
            raise StaleRecord(
                f"installation 0x{iid.hex()[:16]}…: on-chain bundle seq {bundle.seq} is older "
                f"than seq {max_seq} it published before"
            )
        pq: PqKeyRecord | None = None
        if inst.pq_key_hash != ZERO32:
            newest = (-1, -1)  # (key id, issued at) of every record this installation signed
            for pev in pqs.get(iid, []):
                raw = bytes(pev.args["record"])
                stored = keccak(raw) == inst.pq_key_hash
                try:
                    rec = PqKeyRecord.decode(raw)
                except DiscoveryError:
                    if stored:
                        raise  # the installation is rejected
                    continue
                if stored:
                    pq = rec
                if rec.installation_id == iid and rec.signature_ok():
                    newest = max(newest, (rec.pq_key_id, rec.issued_at))
            if pq is None:
                raise HashMismatch(
                    f"no post-quantum key of installation 0x{iid.hex()[:16]}… matches the chain"
                )
            pq.verify(
                self.binding,
                now,
                expected_hash=inst.pq_key_hash,
                identity_id=identity_id,
                installation_id=iid,
            )
            if (pq.pq_key_id, pq.issued_at) < newest:
                raise StaleRecord(
                    f"installation 0x{iid.hex()[:16]}…: on-chain post-quantum key "
                    f"{pq.pq_key_id} (issued {pq.issued_at}) is older than key {newest[0]} "
                    f"(issued {newest[1]}) it published before"
                )
        return VerifiedInstallation(bundle=bundle, pq=pq, bundle_block=ev.block_number)


def _history_entry(ev: Event) -> HistoryEntry:
    detail: dict[str, str] = {}
    for k, v in ev.args.items():
        if k == "id":
            continue
        if k == "bundle":
            try:
                b = IntroBundle.decode(bytes(v))
                detail["seq"] = str(b.seq)
                detail["prekey_id"] = str(b.spk_id)
                detail["prekey_expires"] = str(b.spk_not_after)
            except DiscoveryError:
                detail["bundle"] = "malformed"
            continue
        if k == "record":
            try:
                detail["pq_key_id"] = str(PqKeyRecord.decode(bytes(v)).pq_key_id)
            except DiscoveryError:
                detail["record"] = "malformed"
            continue
        detail[k] = "0x" + v.hex() if isinstance(v, bytes) else str(v)
    return HistoryEntry(ev.block_number, ev.log_index, ev.name, detail, ev.tx_hash)
