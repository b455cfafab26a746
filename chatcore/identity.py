"""The identity model beyond one device: linking, revoking, rotating, recovering, binding.

Pure protocol parts (no I/O; bytes, keys, ``now`` in, bytes out):

* :class:`PairingCode` - what a new device shows (text ``logos_chatpair_1_<base64url>``,
  QR-able): its installation id, X25519 key, signed prekey, a one-time X25519 key and secret,
  an expiry, and its Ed25519 signature over a *pairing bundle* (an intro bundle with a zero
  identity id, because the new device does not know yet which identity it will join).
* :func:`seal_handover` / :func:`open_handover` - what the approving device sends the new one,
  encrypted to the code's one-time key (X25519 + HKDF keyed with the code's secret, AES-GCM)
  and signed by the approving installation's Ed25519 key: identity id, the owner key, the
  recovery address, conversations, contacts, recent history and group welcomes.
* :func:`seal_backup` / :func:`open_backup` - the encrypted history backup (scrypt + AES-GCM).
* EIP-712 helpers (:func:`typed_signature`) for AcceptOwnership and LinkWallet consents.

Orchestration (chain + delivery network through a :class:`~chatcore.client.Client`):
:func:`approve`, :func:`start_link`, :func:`finish_link`, :func:`list_devices`,
:func:`revoke`, :func:`rotate_installation`, :func:`rotate_owner`, :func:`restore`,
:func:`export_backup`, :func:`import_backup`, :func:`bind_wallet`, :func:`bind_domain`.

Trust model of linking: the new device receives the owner key (re-encrypted under its own
passphrase), so every device of an identity can refresh its own prekeys, approve and revoke
devices. Anyone holding a pairing code before it is used could approve it into *their*
identity; the new device prints which identity it joined, and codes expire (10 minutes).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chatcore.content import utf8
from chatcore.crypto import ed25519_verify, hkdf_sha256
from chatcore.errors import (
    ChatCoreError,
    DeliveryPending,
    NotInitialised,
    TransportError,
    UntrustedIdentity,
)
from discovery.eip712 import EIP712_TYPES, typed_data, typed_signature  # noqa: F401 (re-exported)
from discovery.errors import RecordNotFound, RegistryReverted
from discovery.records import ChainBinding, IntroBundle

if TYPE_CHECKING:
    from chatcore.client import Client
    from chatcore.home import Home
    from discovery.network import NetworkConfig

ZERO32 = b"\x00" * 32
PAIR_PREFIX = "logos_chatpair_1_"
PAIR_VERSION = 1
PAIR_TTL_S = 600
HANDOVER_MAGIC = b"\xf0LCP"  # not a session frame kind: an engine drops it as malformed
HANDOVER_INFO = b"logos-chat/pair-handover/v1"
HANDOVER_SIG_DOMAIN = b"logos-chat/pair-handover-sig/v1"
BACKUP_MAGIC = b"LCBACKUP1"  # the first format: no length, no key check (still opened)
#: since the twelfth session: magic, the file's length (8 bytes), salt, nonce, a key check
#: (16 bytes), then the ciphertext, with all before it as associated data. The length tells
#: a truncated file, the key check a wrong passphrase from a damaged file.
BACKUP_MAGIC_2 = b"LCBACKUP2"
_BACKUP_2 = struct.Struct(">9sQ16s12s16s")
#: how much history a handover carries (it travels as one delivery-network message)
HANDOVER_MAX_MESSAGES = 2000
HANDOVER_MAX_BYTES = 512 * 1024
SIG_TTL_S = 3600

_PAIR = struct.Struct(">BQ20s32s32sI32sQQ32s16sQ64s")


log = logging.getLogger("chatcore.identity")


class IdentityError(ChatCoreError):
    """A device-linking, rotation, recovery or binding step that cannot go ahead."""


class PairingError(IdentityError):
    """A pairing code or handover that is malformed, expired, used or not for us."""


class DeviceRevoked(UntrustedIdentity):
    """This installation was revoked on chain: it may no longer send."""


class WrongBackupSecret(IdentityError):
    """A backup that the passphrase or phrase given does not open (it may be damaged too
    where its format cannot tell the two apart)."""


class WrongRecoveryPhrase(IdentityError):
    """The phrase is not valid, or no identity has its account as recovery."""


class RecoveryNotBound(WrongRecoveryPhrase):
    """Identities name the phrase's account as recovery, but none was registered or given its
    recovery with this phrase (decoys: anyone can name a public recovery address)."""


class AmbiguousRecovery(IdentityError):
    """More than one identity is bound to the phrase: we will not guess which."""


class RecoveryChangeNotReady(IdentityError):
    """A proposed recovery change is still within the registry's delay."""


# ----------------------------------------------------------------------------------------------
# pairing code (pure)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PairingCode:
    chain_id: int
    registry: bytes
    installation_id: bytes
    ik_x25519: bytes
    spk_id: int
    spk_pub: bytes
    spk_not_after: int
    issued_at: int
    pairing_pub: bytes
    secret: bytes = field(repr=False)
    expires: int
    bundle_sig: bytes = field(repr=False)

    def pairing_bundle(self) -> IntroBundle:
        """The intro bundle the approver registers on chain (identity id still zero)."""
        return IntroBundle(
            chain_id=self.chain_id,
            registry=self.registry,
            identity_id=ZERO32,
            installation_id=self.installation_id,
            ik_x25519=self.ik_x25519,
            spk_id=self.spk_id,
            spk_pub=self.spk_pub,
            spk_not_after=self.spk_not_after,
            seq=1,
            issued_at=self.issued_at,
            signature=self.bundle_sig,
        )

    def encode(self) -> bytes:
        return _PAIR.pack(
            PAIR_VERSION, self.chain_id, self.registry, self.installation_id, self.ik_x25519,
            self.spk_id, self.spk_pub, self.spk_not_after, self.issued_at, self.pairing_pub,
            self.secret, self.expires, self.bundle_sig,
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> PairingCode:
        if len(data) != _PAIR.size or data[0] != PAIR_VERSION:
            raise PairingError("not a pairing code of a known version")
        f = _PAIR.unpack(data)
        return cls(*f[1:])

    def to_text(self) -> str:
        return PAIR_PREFIX + base64.urlsafe_b64encode(self.encode()).decode().rstrip("=")

    @classmethod
    def from_text(cls, text: str) -> PairingCode:
        t = "".join(text.split())
        if not t.startswith(PAIR_PREFIX):
            raise PairingError(f"a pairing code starts with {PAIR_PREFIX}")
        body = t[len(PAIR_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError) as exc:
            raise PairingError("the pairing code is not valid base64url") from exc
        return cls.decode(raw)

    def check(self, binding: ChainBinding, now_s: int) -> None:
        """Everything an approver can check offline."""
        if self.chain_id != binding.chain_id or self.registry != binding.registry:
            raise PairingError("the pairing code is for another network")
        if now_s > self.expires:
            raise PairingError(
                "the pairing code has expired: run 'devices link' on the new device again"
            )
        if not self.pairing_bundle().signature_ok():
            raise PairingError("the pairing code's signature does not verify")


def make_pairing_code(
    keys: Any, spk: Any, binding: ChainBinding, now_s: int, rng: Callable[[int], bytes],
    ttl_s: int = PAIR_TTL_S,
) -> tuple[PairingCode, X25519PrivateKey]:  # fmt: skip
    """A new device's pairing code and the one-time private key that opens its handover."""
    pairing_key = X25519PrivateKey.from_private_bytes(rng(32))
    spk_not_after = spk.not_after_ms // 1000
    unsigned = IntroBundle(
        chain_id=binding.chain_id, registry=binding.registry, identity_id=ZERO32,
        installation_id=keys.installation_id, ik_x25519=keys.ik_x25519, spk_id=spk.id,
        spk_pub=spk.pub, spk_not_after=spk_not_after, seq=1, issued_at=now_s,
    ).signed(keys.sign)  # fmt: skip
    code = PairingCode(
        binding.chain_id, binding.registry, keys.installation_id, keys.ik_x25519, spk.id,
        spk.pub, spk_not_after, now_s, pairing_key.public_key().public_bytes_raw(), rng(16),
        now_s + ttl_s, unsigned.signature,
    )  # fmt: skip
    return code, pairing_key


# ----------------------------------------------------------------------------------------------
# handover (pure)
# ----------------------------------------------------------------------------------------------
def _handover_key(shared: bytes, code: PairingCode, eph_pub: bytes) -> bytes:
    return hkdf_sha256(shared, code.secret, HANDOVER_INFO + code.installation_id + eph_pub, 32)


def seal_handover(
    code: PairingCode, content: dict[str, Any], approver_keys: Any, rng: Callable[[int], bytes]
) -> bytes:
    """Encrypt ``content`` to the code's one-time key, signed by the approving installation."""
    body = json.dumps(content, separators=(",", ":"), sort_keys=True).encode()
    sig = approver_keys.sign(HANDOVER_SIG_DOMAIN + code.installation_id + code.secret + body)
    plain = approver_keys.installation_id + sig + zlib.compress(body, 6)
    eph = X25519PrivateKey.from_private_bytes(rng(32))
    eph_pub = eph.public_key().public_bytes_raw()
    key = _handover_key(
        eph.exchange(X25519PublicKey.from_public_bytes(code.pairing_pub)), code, eph_pub
    )
    nonce = rng(12)
    return HANDOVER_MAGIC + eph_pub + nonce + AESGCM(key).encrypt(nonce, plain, HANDOVER_MAGIC)


def open_handover(
    frame: bytes, code: PairingCode, pairing_key: X25519PrivateKey
) -> tuple[bytes, dict[str, Any]]:
    """(approving installation id, content). Raises PairingError for anything else."""
    if not frame.startswith(HANDOVER_MAGIC) or len(frame) < 4 + 32 + 12 + 16 + 96:
        raise PairingError("not a pairing handover")
    eph_pub, nonce, ct = frame[4:36], frame[36:48], frame[48:]
    try:
        shared = pairing_key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError as exc:  # a low-order point: no shared secret
        raise PairingError("malformed handover") from exc
    key = _handover_key(shared, code, eph_pub)
    try:
        plain = AESGCM(key).decrypt(nonce, ct, HANDOVER_MAGIC)
    except InvalidTag as exc:
        raise PairingError("handover does not decrypt with this pairing code") from exc
    approver, sig = plain[:32], plain[32:96]
    try:
        body = zlib.decompress(plain[96:])
    except zlib.error as exc:
        raise PairingError("malformed handover") from exc
    if not ed25519_verify(
        approver, sig, HANDOVER_SIG_DOMAIN + code.installation_id + code.secret + body
    ):
        raise PairingError("handover signature does not verify")
    try:
        content = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise PairingError("malformed handover") from exc
    if not isinstance(content, dict) or content.get("v") != 1:
        raise PairingError("unknown handover version")
    approved_at = content.get("approved_at", 0)
    if type(approved_at) is not int:
        raise PairingError("malformed handover")
    if approved_at > code.expires:
        raise PairingError("the pairing code had expired when it was approved")
    return approver, content


# ----------------------------------------------------------------------------------------------
# backup (pure)
# ----------------------------------------------------------------------------------------------
def _backup_key(secret: str, salt: bytes) -> bytes:
    return hashlib_scrypt(utf8("the backup passphrase", secret), salt)


def hashlib_scrypt(secret: bytes, salt: bytes) -> bytes:
    import hashlib

    return hashlib.scrypt(secret, salt=salt, n=2**15, r=8, p=1, maxmem=128 * 2**20, dklen=32)


def _backup_key_check(key: bytes) -> bytes:
    """A value that tells whether a passphrase derived ``key`` (and nothing of the key)."""
    return hkdf_sha256(key, b"", b"logos-chat/backup-key-check/v2", 16)


def seal_backup(content: dict[str, Any], secret: str, rng: Callable[[int], bytes]) -> bytes:
    salt, nonce = rng(16), rng(12)
    body = zlib.compress(json.dumps(content, separators=(",", ":")).encode(), 6)
    key = _backup_key(secret, salt)
    size = _BACKUP_2.size + len(body) + 16  # AES-GCM adds a 16-byte tag
    header = _BACKUP_2.pack(BACKUP_MAGIC_2, size, salt, nonce, _backup_key_check(key))
    return header + AESGCM(key).encrypt(nonce, body, header)


def open_backup(data: bytes, secret: str) -> dict[str, Any]:
    """The content of a backup file; IdentityError saying what is wrong: not a backup, a
    truncated or damaged one, or a wrong passphrase / phrase."""
    if data.startswith(BACKUP_MAGIC_2) or (data and BACKUP_MAGIC_2.startswith(data)):
        body = _open_backup_2(data, secret)
    elif data.startswith(BACKUP_MAGIC):
        if len(data) < len(BACKUP_MAGIC) + 28 + 16:
            raise IdentityError(
                "the backup file is truncated: copy it again from where it was made"
            )
        p = len(BACKUP_MAGIC)
        salt, nonce, ct = data[p : p + 16], data[p + 16 : p + 28], data[p + 28 :]
        try:
            body = AESGCM(_backup_key(secret, salt)).decrypt(nonce, ct, BACKUP_MAGIC)
        except InvalidTag as exc:  # this format cannot tell the two apart
            raise WrongBackupSecret(
                "cannot decrypt the backup: wrong passphrase or phrase, or the file is "
                "damaged or truncated"
            ) from exc
    else:
        raise IdentityError("not a Logos Chat backup file")
    try:
        out = json.loads(zlib.decompress(body))
    except (zlib.error, ValueError, RecursionError) as exc:
        raise IdentityError("the backup is damaged") from exc
    if not isinstance(out, dict) or out.get("v") != 1:
        raise IdentityError("unknown backup version")
    return out


def _open_backup_2(data: bytes, secret: str) -> bytes:
    if len(data) < _BACKUP_2.size:
        raise IdentityError(
            f"the backup file is truncated ({len(data)} bytes, not even its header): "
            "copy it again from where it was made"
        )
    _magic, size, salt, nonce, check = _BACKUP_2.unpack_from(data)
    if len(data) != size:
        what = "truncated" if len(data) < size else "damaged (longer than it was written)"
        raise IdentityError(
            f"the backup file is {what}: {len(data)} bytes of {size}; "
            "copy it again from where it was made"
        )
    key = _backup_key(secret, salt)
    if not hmac.compare_digest(_backup_key_check(key), check):
        raise WrongBackupSecret("cannot decrypt the backup: wrong passphrase or phrase")
    header = data[: _BACKUP_2.size]
    try:
        return AESGCM(key).decrypt(nonce, data[_BACKUP_2.size :], header)
    except InvalidTag as exc:
        raise IdentityError(
            "the backup file is damaged: its content does not authenticate"
        ) from exc


# ----------------------------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------------------------
def check_not_revoked(client: Client) -> None:
    """Raise DeviceRevoked if the synced index says this installation was revoked."""
    state = client.index.by_id(client.identity_id)
    for inst in state.installations:
        if inst.installation_id == client.installation_id and inst.revoked:
            client._synced = False
            if client.store.get_meta("revoked") is None:
                with client.store.transaction():
                    client.store.set_meta("revoked", b"1")
            raise DeviceRevoked(
                f"this device (0x{client.installation_id.hex()[:16]}…) was revoked on chain: "
                "it can no longer send or receive; link it again with 'devices link' in a new "
                "home — or, if you did not revoke it, take your identity back with "
                "'recovery restore' and your recovery phrase"
            )


def _fund(network: NetworkConfig, registry: Any, address: str) -> None:
    """Devnet only: top up an account from the faucet so it can pay gas."""
    from eth_account import Account

    from chatcore.client import DEV_FUNDING_WEI, MIN_BALANCE_WEI

    if network.faucet_key and registry.balance(address) < MIN_BALANCE_WEI:
        registry.send_value(Account.from_key(network.faucet_key), address, DEV_FUNDING_WEI)


def _gas(receipt: Any) -> int:
    return int(receipt["gasUsed"])


def _now_s(client: Client) -> int:
    return client.clock_ms() // 1000


def _conversation_rows(store: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id.hex(), "kind": c.kind,
            "peer": c.peer_identity.hex() if c.peer_identity else None, "title": c.title,
            "created_at": c.created_at, "last_at": c.last_at, "unread": c.unread,
            "muted": c.muted, "archived": c.archived,
        }
        for c in store.conversations()
    ]  # fmt: skip


def _peer_rows(store: Any, conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in conversations:
        if c["peer"]:
            d = store.peer_display(bytes.fromhex(c["peer"]))
            out.append({"identity": c["peer"], "display": d})
    return out


def _message_rows(store: Any, conv_id: bytes, limit: int) -> list[dict[str, Any]]:
    return _rows(store, conv_id, store.history(conv_id, limit))


def _rows(store: Any, conv_id: bytes, messages: list[Any]) -> list[dict[str, Any]]:
    """Snapshot rows of some messages of one conversation."""
    # what edits, deletes and reactions made of each message comes along: without it a
    # new device or a restored backup showed the original text of an edited (redacted)
    # message, and no reactions
    changes = {
        bytes(r[0]): (r[1], int(r[2]), int(r[3]))
        for r in store._x(
            "SELECT message_id, edited_body, edit_lamport, deleted FROM messages "
            "WHERE conversation_id=? AND (edited_body IS NOT NULL OR deleted=1)",
            (conv_id,),
        ).fetchall()
    }
    reactions: dict[bytes, list[list[Any]]] = {}
    for mid, who, emoji, lamport in store._x(
        "SELECT message_id, reactor, emoji, lamport FROM reactions WHERE conversation_id=?",
        (conv_id,),
    ).fetchall():
        reactions.setdefault(bytes(mid), []).append([bytes(who).hex(), emoji, int(lamport)])
    rows = []
    for m in messages:
        row = {
            "c": m.conversation_id.hex(), "m": m.message_id.hex(), "si": m.sender_identity.hex(),
            "sn": m.sender_installation.hex(), "l": m.lamport, "s": m.sent_at, "r": m.received_at,
            "t": m.content_type, "b": base64.b64encode(m.body).decode(), "o": m.outgoing,
            "st": m.status,
        }  # fmt: skip
        changed = changes.get(m.message_id)
        if changed is not None:
            edited, row["el"], row["d"] = changed
            if edited is not None:
                row["e"] = base64.b64encode(bytes(edited)).decode()
        if m.message_id in reactions:
            row["rx"] = reactions[m.message_id]
        rows.append(row)
    return rows


def snapshot(store: Any, max_messages: int, max_bytes: int | None = None) -> dict[str, Any]:
    """Conversations, contacts and history (newest first within the budget)."""
    convs = _conversation_rows(store)
    msgs: list[dict[str, Any]] = []
    per = max(1, max_messages // max(1, len(convs))) if convs else 0
    for c in convs:
        msgs += _message_rows(store, bytes.fromhex(c["id"]), per)
    if max_bytes is not None:
        while msgs and len(json.dumps(msgs)) > max_bytes:
            msgs = msgs[len(msgs) // 4 :]
    return {
        "conversations": convs,
        "peers": _peer_rows(store, convs),
        "contacts": _contact_rows(store),
        "messages": msgs,
    }


def _restore_changes(store: Any, m: dict[str, Any]) -> None:
    """A message's edit, delete and reactions from a snapshot row, by the rules of live ops
    (``chatcore.features``): a delete is final, the later edit or reaction wins and a tie
    goes to the larger text; the search index follows."""
    from chatcore.features import apply_edit, apply_reaction, mark_deleted

    key = (bytes.fromhex(m["c"]), bytes.fromhex(m["m"]))
    if m.get("d"):
        mark_deleted(store, *key)
        return
    row = store._x(
        "SELECT deleted FROM messages WHERE conversation_id=? AND message_id=?", key
    ).fetchone()
    if row is None or row[0]:
        return  # deleted here: nothing comes back onto it
    if "e" in m:
        apply_edit(store, *key, int(m["el"]), base64.b64decode(m["e"]))
    for who, emoji, lamport in m.get("rx", ()):
        apply_reaction(store, *key, bytes.fromhex(who), str(emoji), int(lamport))


def _contact_rows(store: Any) -> list[dict[str, Any]]:
    """Contacts, blocks and declined requests (a new device must keep blocking too)."""
    rows = store._x("SELECT identity_id, alias, state, updated_at, stamp FROM contacts").fetchall()
    return [
        {
            "identity": bytes(r[0]).hex(), "alias": r[1], "state": int(r[2]), "at": int(r[3]),
            "stamp": None if r[4] is None else bytes(r[4]).hex(),
        }
        for r in rows
    ]  # fmt: skip


def restore_snapshot(
    store: Any,
    snap: dict[str, Any],
    *,
    news: bool = False,
    added_to: list[Any] | None = None,
    shut: list[bytes] | None = None,
    accepted: list[bytes] | None = None,
) -> int:
    """Merge conversations, contacts and messages into a store; returns messages added
    (``added_to``: gets them, StoredMessage as added; ``shut``: gets the identities the
    snapshot blocked or declined here, whose receipts are no longer waited for:
    ``Features.stop_waiting_for``; ``accepted``: the identities whose request here the
    snapshot made a contact, owed read receipts for what was read meanwhile).

    ``news``: the messages are new to the user here (a history forwarded after linking,
    :func:`forward_linked_history`): counted as unread as they come, instead of taking the
    unread counts of the snapshot."""
    from chatcore.content import ContactState
    from chatcore.store import DELETED_CLOCK_META, StoredMessage

    added = 0
    with store.transaction():
        # a forward (news) does not bring back what the user deleted here: a conversation
        # deleted here takes only messages newer than its deletion (as from the peer)
        gone: dict[str, int] = {}
        if news:
            for c in snap.get("conversations", []):
                clock = store.get_meta(DELETED_CLOCK_META + c["id"])
                if clock is not None and store.conversation(bytes.fromhex(c["id"])) is None:
                    gone[c["id"]] = int(clock)
            snap = {
                **snap,
                "conversations": [c for c in snap.get("conversations", [])
                                  if c["id"] not in gone or any(
                                      m["c"] == c["id"] and int(m["l"]) > gone[c["id"]]
                                      for m in snap.get("messages", []))],
                "messages": [m for m in snap.get("messages", [])
                             if m["c"] not in gone or int(m["l"]) > gone[m["c"]]],
            }  # fmt: skip
        for c in snap.get("conversations", []):
            store.ensure_conversation(
                bytes.fromhex(c["id"]), c["kind"],
                bytes.fromhex(c["peer"]) if c["peer"] else None, c["title"], int(c["created_at"]),
            )  # fmt: skip
        for p in snap.get("peers", []):
            if p.get("display") and store.peer_display(bytes.fromhex(p["identity"])) is None:
                store.set_peer_display(bytes.fromhex(p["identity"]), p["display"], 0)
        for k in snap.get("contacts", []):
            # the newer word wins: a device may have changed a contact since the snapshot;
            # but a request this device made by itself (a first message to a home that knew
            # no contacts, such as a restored one) yields to a contact, block or decline
            # of the snapshot, unless the user changed the contact here since
            stamp = bytes.fromhex(k["stamp"]) if k.get("stamp") else None
            ident = bytes.fromhex(k["identity"])
            row = store._x("SELECT state FROM contacts WHERE identity_id=?", (ident,)).fetchone()
            was = None if row is None else int(row[0])
            store._x(
                "INSERT INTO contacts (identity_id, alias, state, updated_at, stamp) "
                "VALUES (?,?,?,?,?) ON CONFLICT(identity_id) DO UPDATE SET "
                "alias=excluded.alias, state=excluded.state, updated_at=excluded.updated_at, "
                "stamp=excluded.stamp "
                "WHERE excluded.updated_at > contacts.updated_at OR ("
                f"contacts.state={int(ContactState.REQUEST)} AND excluded.state IN "
                f"({int(ContactState.CONTACT)},{int(ContactState.BLOCKED)},"
                f"{int(ContactState.DECLINED)}) AND (contacts.stamp IS NULL OR "
                "(excluded.stamp IS NOT NULL AND excluded.stamp >= contacts.stamp)))",
                (
                    bytes.fromhex(k["identity"]),
                    k.get("alias"),
                    int(k["state"]),
                    int(k["at"]),
                    stamp,
                ),
            )
            # a block (or decline) that begins or ends here: as Features._set_contact keeps it
            (now,) = store._x("SELECT state FROM contacts WHERE identity_id=?", (ident,)).fetchone()
            if store.contact_state_changed(ident, was, int(now), int(k["at"])) and shut is not None:
                shut.append(ident)
            if accepted is not None and was == ContactState.REQUEST and now == ContactState.CONTACT:
                accepted.append(ident)
        for m in snap.get("messages", []):
            message = StoredMessage(
                bytes.fromhex(m["c"]), bytes.fromhex(m["m"]), bytes.fromhex(m["si"]),
                bytes.fromhex(m["sn"]), int(m["l"]), int(m["s"]), int(m["r"]), int(m["t"]),
                base64.b64decode(m["b"]), bool(m["o"]),
                "sent" if m["st"] == "sending" else m["st"], store.next_seq(),
            )  # fmt: skip
            # our own history, checked when it first arrived
            ok = store.add_message(message, check_clock=False)
            added += int(ok)
            if ok and added_to is not None:
                added_to.append(message)
            _restore_changes(store, m)
        # imported history is not news: what was read there comes read (each message keeps
        # its status), and a message here keeps its own, so the unread count is counted
        # again from the messages (the snapshot's count knows nothing of what was read or
        # came here since); the flags the user set (muted, archived) come along
        for c in snap.get("conversations", []):
            store._x(
                "UPDATE conversations SET muted=MAX(muted, ?), archived=MAX(archived, ?) "
                "WHERE id=?",
                (int(bool(c.get("muted"))), int(bool(c.get("archived"))), bytes.fromhex(c["id"])),
            )
            if not news:
                store.recount_unread(bytes.fromhex(c["id"]))
    return added


# --- linking ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LinkStarted:
    code: str
    installation_id: bytes
    expires: int


def start_link(
    home_dir: Path | str, passphrase: str, network: NetworkConfig,
    rng: Callable[[int], bytes] = os.urandom, ttl_s: int = PAIR_TTL_S,
) -> LinkStarted:  # fmt: skip
    """Create a home with fresh installation keys, waiting to be approved. No network I/O.
    StoreError if an init, restore or link runs on the home."""
    from chatcore.home import Home

    home = Home(Path(home_dir))
    if not home.meta_file.exists():
        Home.check_new_passphrase(passphrase)  # before anything is made
    home.make_dir()
    with home.init_lock("devices link"):  # as init: a second one would take its files
        return _start_link(home, passphrase, network, rng, ttl_s)


def _start_link(
    home: Home, passphrase: str, network: NetworkConfig, rng: Callable[[int], bytes], ttl_s: int
) -> LinkStarted:
    from chatcore.client import PREKEY_TTL_S, _scope
    from chatcore.home import Home
    from chatcore.keys import InstallationKeys, SignedPrekey

    if home.meta_file.exists():
        store = home.open_store(passphrase)
        try:
            if store.get_meta("identity_id") is not None:
                # made by init or restore there, or linked: a device of it already
                raise IdentityError(
                    f"{home.path} already holds an identity: it is a device of it already "
                    "(a new device needs a home of its own)"
                )
            raw = store.get_meta("pair_code")
            if raw is not None:
                code = PairingCode.decode(raw)
                if code.expires >= int(time.time()):
                    return LinkStarted(code.to_text(), code.installation_id, code.expires)
        finally:
            store.close()
        keys_store = home.open_store(passphrase)
    else:
        Home.check_new_passphrase(passphrase)
        home.create()
        keys_store = home.open_store(passphrase)
    store = keys_store
    try:
        now = int(time.time())
        raw_keys = store.get_secret("installation")
        keys = InstallationKeys.from_bytes(raw_keys) if raw_keys else InstallationKeys.generate(rng)
        spk = SignedPrekey.generate(rng, 1, (now + PREKEY_TTL_S) * 1000)
        code, pairing_key = make_pairing_code(keys, spk, network.binding, now, rng, ttl_s)
        with store.transaction():
            # read again under the lock: another process on this home ('sync', or a 'devices
            # link --wait' from before) may have finished the link since we looked (an
            # approval made before the code expired still counts); the new code, key and
            # prekey written over it left the link with a pending code and a current prekey
            # its published bundle does not name
            if store.get_meta("identity_id") is not None:
                raise IdentityError(
                    f"{home.path} already holds an identity: another command on it finished "
                    "linking this device just now"
                )
            store.put_secret("installation", keys.to_bytes())
            store.put_secret(f"spk:{spk.id:010d}", spk.to_bytes())
            store.set_meta("spk_current", str(spk.id).encode())
            store.put_secret("pair:key", pairing_key.private_bytes_raw())
            store.set_meta("pair_code", code.encode())
            store.set_meta("network", _scope(network).encode())
    finally:
        store.close()
    return LinkStarted(code.to_text(), code.installation_id, code.expires)


def link_pending(home_dir: Path | str, passphrase: str) -> bool:
    from chatcore.home import Home

    home = Home(Path(home_dir))
    if not home.exists():
        return False
    store = home.open_store(passphrase)
    try:
        return store.get_meta("identity_id") is None and store.get_meta("pair_code") is not None
    finally:
        store.close()


def linked_identity(home_dir: Path | str, passphrase: str) -> bytes | None:
    """The identity a home made by :func:`start_link` has taken, None while it waits to be
    approved: by this process or another one on the home (``finish_link`` returns None
    once the identity is taken, also when another process took it)."""
    from chatcore.home import Home

    home = Home(Path(home_dir))
    if not home.exists():
        return None
    store = home.open_store(passphrase)
    try:
        return store.get_meta("identity_id")
    finally:
        store.close()


@dataclass(frozen=True, slots=True)
class Approved:
    installation_id: bytes
    gas_used: int
    handover_bytes: int


def _left_lately(client: Client) -> list[bytes]:
    """Groups our identity left, or was removed from, in the last LINK_FORWARD_TTL_MS: a
    member that has not applied that yet may welcome the new device into such a group as it
    knows it (a member's new device is welcomed by the admins), and nobody else would tell
    the device that we are out (the change's author did not know it). Named in the cut, the
    approving device sends it their op logs (``GroupChat.tell_linked_device``); a device
    that holds no state of the group keeps them until such a welcome comes."""
    from chatcore.group import OpKind

    me, now = client.identity_id, client.clock_ms()
    out: list[bytes] = []
    for gid in client.store.group_ids():
        st = client.groups.load(gid)
        if st is None or st.is_member:
            continue
        gone = [
            o.created_ms
            for o in st.ops.values()
            if (o.kind is OpKind.LEAVE and o.author == me)
            or (o.kind is OpKind.REMOVE and o.target == me)
        ]
        if gone and now - max(gone) <= LINK_FORWARD_TTL_MS:
            out.append(gid)
    return out


async def approve(client: Client, passphrase: str, code_text: str) -> Approved:
    """Register a new device's installation on chain and send it the handover."""
    from chatcore.engine import frame_msg_id, inbox_subject

    code = PairingCode.from_text(code_text)
    code.check(client.network.binding, _now_s(client))
    owner = client._owner(passphrase)
    client.sync_directory()
    # an approval of this code begun here and killed after the chain took the device (or
    # while its transaction was on the way), before its handover was stored: finished now
    begun = APPROVING + code.installation_id.hex()
    resumed = client.store.get_meta(begun) is not None
    gas = 0
    if not (resumed and _registered_here(client, code.installation_id)):
        state = client.index.by_id(client.identity_id)
        if any(i.installation_id == code.installation_id for i in state.installations):
            raise PairingError("this pairing code was already used (the device is registered)")
        if client.index.identities_of_installation(code.installation_id):
            raise PairingError("this pairing code was already approved by another identity")
        with client.store.transaction():
            client.store.set_meta(begun, b"1")
        try:
            receipt = client.registry.add_installation(
                owner, client.identity_id, code.installation_id, code.pairing_bundle().encode()
            )
            gas = _gas(receipt)
        except RegistryReverted as exc:
            if not (exc.args and "Installation" in str(exc)):
                raise
            # the transaction of a killed run landed meanwhile
            client.sync_directory()
            if not (resumed and _registered_here(client, code.installation_id)):
                raise PairingError(f"this pairing code was already used ({exc})") from exc
    groups = [s for g in client.store.group_ids() if (s := client.groups.load(g)) and s.is_member]
    cut = link_cut(
        client.store, client.clock_ms(), [s.group_id for s in groups] + _left_lately(client)
    )
    snap = snapshot(client.store, HANDOVER_MAX_MESSAGES, HANDOVER_MAX_BYTES)
    content = {
        "v": 1,
        "identity_id": client.identity_id.hex(),
        "approved_at": _now_s(client),
        "owner_key": bytes(owner.key).hex(),
        "recovery": (client.store.get_meta("recovery") or b"").decode(),
        "welcomes": [s.welcome().hex() for s in groups],
        **snap,
    }
    frame = seal_handover(code, content, client.engine.own.keys, client.rng)
    with client.store.transaction():
        client.store.add_outbox(
            inbox_subject(code.installation_id), frame, frame_msg_id(frame), client.clock_ms()
        )
        # what peers send us until the new device publishes its own bundle reaches only us:
        # forwarded to it once it has (forward_linked_history, at our syncs)
        client.store.set_meta(LINK_FORWARD + code.installation_id.hex(), cut)
        client.store.delete_meta(begun)
    approved = Approved(code.installation_id, gas, len(frame))
    try:
        await client.flush_outbox()
    except TransportError as exc:  # registered on chain: the handover waits in the outbox
        raise DeliveryPending(str(exc.__cause__ or exc), approved) from exc
    return approved


def _registered_here(client: Client, installation: bytes) -> bool:
    """Is ``installation`` a device of our identity on chain (as synced), not revoked?"""
    state = client.index.by_id(client.identity_id)
    return any(i.installation_id == installation and not i.revoked for i in state.installations)


@dataclass(frozen=True, slots=True)
class Linked:
    identity_id: bytes
    installation_id: bytes
    names: tuple[str, ...]
    messages_imported: int
    gas_used: int


async def finish_link(
    home_dir: Path | str, passphrase: str, network: NetworkConfig, transport: Any = None
) -> Linked | None:
    """On a device waiting to be linked: fetch the handover, verify it against the chain,
    take over the identity, publish this device's real bundle and post-quantum key.
    Returns None if nothing has arrived yet, or the identity was taken already (by another
    process on the home too: :func:`linked_identity`)."""
    from chatcore.client import Client
    from chatcore.engine import inbox_subject
    from chatcore.groupchat import keep_welcome
    from chatcore.home import Home
    from chatcore.keys import InstallationKeys
    from discovery.index import Index
    from discovery.registry import Registry
    from discovery.resolver import Resolver

    home = Home(Path(home_dir))
    store = home.open_store(passphrase)
    try:
        raw = store.get_meta("pair_code")
        pk = store.get_secret("pair:key")
        if raw is None or pk is None or store.get_meta("identity_id") is not None:
            return None
        code = PairingCode.decode(raw)
        pairing_key = X25519PrivateKey.from_private_bytes(pk)
        keys = InstallationKeys.from_bytes(store.get_secret("installation") or b"")
        subject = inbox_subject(code.installation_id)
        own_transport = transport is None
        if transport is None:
            from chatcore.transport.nats import NatsTransport

            transport = await NatsTransport.connect(network.nats_url)
        try:
            batch = await transport.fetch(subject, after=store.cursor(subject), limit=500)
        finally:
            if own_transport:
                await transport.close()
                transport = None
        from discovery.errors import DiscoveryError

        registry = Registry(network)
        index = Index(home.index_file, registry)
        try:
            index.sync()
            resolver = Resolver(index, network.binding, network.name_registry)
            found: tuple[int, bytes, dict[str, Any], bytes] | None = None
            rejected: Exception | None = None
            last_seq = 0
            for d in batch:
                last_seq = d.seq
                try:
                    approver, content = open_handover(d.data, code, pairing_key)
                    ident = bytes.fromhex(content["identity_id"])
                    _verify_handover(index, resolver, ident, approver, code)
                except (PairingError, ChatCoreError, DiscoveryError, KeyError, ValueError) as exc:
                    import logging

                    logging.getLogger("chatcore.identity").warning("handover rejected: %s", exc)
                    rejected = exc
                    continue
                found = (d.seq, ident, content, approver)
                break
            if found is None:
                if last_seq:
                    with store.transaction():
                        store.set_cursor(subject, last_seq)
                if isinstance(rejected, DiscoveryError) or "active device" in str(rejected):
                    raise PairingError(
                        f"the approval cannot be taken ({rejected}); if the device that "
                        "approved this one was revoked or rotated since, run 'devices link' "
                        "again in a new home"
                    )
                if int(time.time()) > code.expires:
                    raise PairingError(
                        "the pairing code expired before it was approved: run 'devices link' again"
                    )
                return None
            seq, ident, content, approver = found
            from eth_account import Account

            owner = Account.from_key(bytes.fromhex(content["owner_key"]))
            state = index.by_id(ident)
            if state.owner != owner.address:
                raise PairingError("the handover's owner key is not the identity's owner on chain")
            home.save_owner_key(owner.key, passphrase)
            # one transaction with the history it brings: a process killed between the two
            # had taken the identity (so no later 'devices link' read the handover again)
            # and lost the history, contacts and conversation settings for good
            with store.transaction():
                # read again under the lock: another process on this home ('devices link
                # --wait' and a 'sync' at once) may have taken the handover since we looked,
                # and finishes the link: taken again, it was stored twice and a second
                # bundle published over the other's (linked_identity names the identity)
                if store.get_meta("identity_id") is not None:
                    return None
                store.set_meta("identity_id", ident)
                store.set_meta("owner", owner.address.encode())
                store.set_meta("recovery", str(content.get("recovery", "")).encode())
                store.set_meta("registered", b"1")
                store.set_meta("bundle_seq", b"1")
                store.set_meta("linked_from", approver)
                # the forwarded history (import_forwarded) is taken from ``approver`` only,
                # and for LINK_FORWARD_TTL_MS from now
                store.set_meta(LINKED_AT, str(int(time.time() * 1000)).encode())
                store.set_cursor(subject, seq)
                store.delete_secret("pair:key")
                store.set_meta("pair_code", b"")
                added = restore_snapshot(store, content)
                # and the groups to join: a process killed before the joins below left
                # the device out of them (the next sync joins what is kept)
                for w in content.get("welcomes") or ():
                    try:
                        keep_welcome(store, bytes.fromhex(w))
                    except (ChatCoreError, ValueError, TypeError) as exc:
                        logging.getLogger("chatcore.identity").warning("group not joined: %s", exc)
        finally:
            index.close()
    finally:
        store.close()
    client = Client.open(home.path, passphrase, network)
    try:
        res = client.publish(passphrase)  # and the post-quantum key record (none yet)
        client.sync_directory()
        frames = client.groups.join_kept_welcomes()
        if frames:
            if transport is not None:
                await client.connect(transport)
            await client._publish_later(frames)  # else in the outbox: sent by the next sync
        names = client.resolver.resolve_id(ident, fresh_prekeys=False).names
    finally:
        await client.aclose() if transport is None else client.close()
    return Linked(ident, keys.installation_id, names, added, res.gas_used)


def _verify_handover(
    index: Any, resolver: Any, ident: bytes, approver: bytes, code: PairingCode
) -> None:
    state = index.by_id(ident)
    if not state.exists:
        raise PairingError("the handover names an identity that does not exist")
    mine = [i for i in state.installations if i.installation_id == code.installation_id]
    if not mine or mine[0].revoked:
        raise PairingError("this device is not registered for the identity in the handover")
    resolved = resolver.resolve_id(ident, fresh_prekeys=False)
    if resolved.installation(approver) is None:
        raise PairingError("the handover was not sent by an active device of that identity")


# --- forwarding what a new device missed ---------------------------------------------------------
#: meta key prefix (+ the approved installation's id in hex): what the handover to a device
#: approved here covered (JSON: the last message ``seq`` and ``since``, the time in ms from
#: which content ops were not in it; ``approved`` at; ``active``: when we first saw the
#: device's own bundle, or null; ``contact``: the last contact write it covered
#: (``Store.last_contact_change``: each change goes once, whatever its date; a cut made
#: before store schema 12 has none, and ``contacts`` instead: the contacts forwarded that
#: are dated ``since`` or later, identity -> [``contact_version``, at]), until the
#: messages stored since have been forwarded
LINK_FORWARD = "link_forward:"
#: meta key prefix (+ the installation's id in hex): an approval of that device begun here
#: (set before its chain transaction, gone with the transaction that stores its handover):
#: approving the code again after a process killed in between sends the handover
APPROVING = "approving:"
#: after this long since its approval a device gets nothing forwarded any more (it never
#: linked, or what peers sent before they knew of it has arrived here long since)
LINK_FORWARD_TTL_MS = 7 * 86_400_000
#: once the new device was seen active, what arrives later is forwarded if it was sent (by
#: its author's clock) at most this long after (senders' clocks differ from ours)
LINK_FORWARD_SLACK_MS = 60_000
#: a forwarded part's JSON (before compression) stays below this: each part travels as one
#: device-sync payload (``chatcore.payload.MAX_BODY``, 64 KiB)
FORWARD_PART_BYTES = 56 * 1024
#: meta of a linked device: when it took the handover (ms); with ``linked_from`` (the
#: approving installation) what bounds who may forward it history, and until when
LINKED_AT = "linked_at"


def forward_allowed(store: Any, installation: bytes, now_ms: int) -> bool:
    """May ``installation`` (a device of our identity) forward us history now? Only the
    device that approved this one, and for as long as it forwards (the handover's trust,
    not more): any other device of ours — one compromised, or holding a revoked device's
    keys until the index says so — could otherwise put messages under a peer's name into
    every device of ours at any time."""
    linked_at = store.get_meta(LINKED_AT)
    if store.get_meta("linked_from") != installation or linked_at is None:
        return False
    return now_ms <= int(linked_at) + LINK_FORWARD_TTL_MS + LINK_FORWARD_SLACK_MS


def link_cut(store: Any, now_ms: int, groups: Sequence[bytes] = ()) -> bytes:
    """What a handover about to be made of ``store`` covers (taken before the snapshot:
    whatever is stored meanwhile counts as after it, and the new device drops doubles), and
    the groups whose welcomes it holds (``groups``: see ``forward_linked_history``)."""
    cut = {
        "seq": store.next_seq() - 1, "since": now_ms, "approved": now_ms, "active": None,
        "groups": [g.hex() for g in groups], "contact": store.last_contact_change(),
    }  # fmt: skip
    return json.dumps(cut).encode()


def contact_version(row: dict[str, Any]) -> str:
    """A contact row of :func:`_contact_rows` as it is now (what a forward remembers of
    the contacts it sent)."""
    fields = [row["alias"], row["state"], row["at"], row["stamp"]]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]


def forward_parts(
    store: Any, after_seq: int, since_ms: int, sent_by: int | None = None,
    max_messages: int = HANDOVER_MAX_MESSAGES, forwarded: dict[str, Any] | None = None,
    contacts_after: int | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """What a device approved from ``store`` missed, in the handover's format and split into
    parts of at most :data:`FORWARD_PART_BYTES`: the messages stored after ``after_seq``, and
    those that edits, deletes and reactions received since ``since_ms`` changed (with the
    reactions taken back then); ``sent_by``: only what was sent (by its author's clock) no
    later. Their conversations come along, and the contacts written here after the write
    numbered ``contacts_after`` (``Store.last_contact_change``: by when they reached this
    device, whatever their date: a change made on a device of ours whose clock is behind is
    dated before the cut it arrives after). Without ``contacts_after``, or with
    ``forwarded`` (a cut made before store schema 12, whose writes are numbered from the
    upgrade on: 0 for those of before), also those dated ``since_ms`` or later, except
    those ``forwarded`` names as they are now (identity in hex -> ``[version, at]``,
    :func:`contact_version`: sent by an earlier forward)."""
    from chatcore.content import MID
    from chatcore.payload import ContentType

    sent, sent_args = ("", ()) if sent_by is None else (" AND sent_at <= ?", (sent_by,))
    want = {
        (bytes(c), bytes(m))
        for c, m in store._x(
            f"SELECT conversation_id, message_id FROM messages WHERE seq > ?{sent}",
            (after_seq, *sent_args),
        ).fetchall()
    }
    taken_back: dict[tuple[bytes, bytes], list[list[Any]]] = {}
    for conv, who, lamport, ct, body in store._x(
        "SELECT conversation_id, sender_identity, lamport, content_type, body FROM content_ops "
        f"WHERE received_at >= ?{sent}",
        (since_ms, *sent_args),
    ).fetchall():
        key = (bytes(conv), bytes(body)[:MID])
        want.add(key)
        if int(ct) == ContentType.REACTION and len(body) == MID:  # a reaction taken back
            taken_back.setdefault(key, []).append([bytes(who).hex(), "", int(lamport)])
    found = [m for k in want if (m := store.message(*k)) is not None]
    found.sort(key=lambda m: m.seq)
    if len(found) > max_messages:
        log.warning("forwarding the newest %d of %d messages", max_messages, len(found))
        found = found[-max_messages:]
    by_conv: dict[bytes, list[Any]] = {}
    for m in found:
        by_conv.setdefault(m.conversation_id, []).append(m)
    rows: list[dict[str, Any]] = []
    for conv, msgs in by_conv.items():
        for row in _rows(store, conv, msgs):
            have = {r[0] for r in row.get("rx", ())}
            back = taken_back.get((conv, bytes.fromhex(row["m"])), [])
            back = [r for r in back if r[0] not in have]
            if back:
                row["rx"] = [*row.get("rx", ()), *back]
            rows.append(row)
    convs = {c["id"]: c for c in _conversation_rows(store) if bytes.fromhex(c["id"]) in by_conv}
    peers = {p["identity"]: p for p in _peer_rows(store, list(convs.values()))}
    written = set()
    if contacts_after is not None:
        written = {
            bytes(i).hex()
            for (i,) in store._x(
                "SELECT identity_id FROM contacts WHERE changed > ?", (contacts_after,)
            ).fetchall()
        }
    dated = contacts_after is None or forwarded is not None
    went = forwarded or {}
    contacts = [
        k
        for k in _contact_rows(store)
        if k["identity"] in written
        or (
            dated
            and k["at"] >= since_ms
            and (went.get(k["identity"]) or [None])[0] != contact_version(k)
        )
    ]
    return _pack(contacts, rows, convs, peers)


def _pack(
    contacts: list[dict[str, Any]], rows: list[dict[str, Any]], convs: dict[str, Any],
    peers: dict[str, Any],
) -> list[dict[str, Any]]:  # fmt: skip
    """Parts of at most FORWARD_PART_BYTES of JSON, each with the conversations (and their
    peers' names) of its messages, so that each can be taken alone."""
    parts: list[dict[str, Any]] = []
    part: dict[str, Any] = {}
    size = 0

    def items(kind: str, item: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out = [(kind, item)]
        if kind == "messages" and all(c["id"] != item["c"] for c in part.get("conversations", ())):
            conv = convs[item["c"]]
            out.append(("conversations", conv))
            if conv["peer"] in peers:
                out.append(("peers", peers[conv["peer"]]))
        return out

    def cost(add: list[tuple[str, dict[str, Any]]]) -> int:
        return sum(len(json.dumps(x, separators=(",", ":"))) + 1 for _k, x in add)

    for kind, item in [*(("contacts", k) for k in contacts), *(("messages", r) for r in rows)]:
        add = items(kind, item)
        if part and size + cost(add) > FORWARD_PART_BYTES - 64:
            parts.append(part)
            part, size = {}, 0
            add = items(kind, item)
        if cost(add) > FORWARD_PART_BYTES - 64 and "rx" in item:
            item = {k: v for k, v in item.items() if k != "rx"}  # a flood of reactions
            add = items(kind, item)
        if cost(add) > FORWARD_PART_BYTES - 64:
            log.warning("a message too large to forward was left out")
            continue
        for k, x in add:
            part.setdefault(k, []).append(x)
        size += cost(add)
    if part:
        parts.append(part)
    return [{"v": 1, **p} for p in parts]


def import_forwarded(
    store: Any, content: dict[str, Any], shut: list[bytes] | None = None
) -> list[Any]:
    """Take a part of :func:`forward_parts` from one of our devices, as a handover's history
    (a message already here is not doubled); returns the messages added (StoredMessage).
    ``shut``: gets the identities whose block (or decline) the part begins here (as
    :func:`restore_snapshot`'s). Raises MalformedMessage if it is not such a part (text
    with a lone surrogate too)."""
    from chatcore.errors import MalformedMessage

    if content.get("v") != 1:
        raise MalformedMessage("unknown history sync version")
    try:
        _check_forwarded(content)
    except (KeyError, ValueError, TypeError, AttributeError, binascii.Error) as exc:
        raise MalformedMessage(f"malformed history sync: {exc}") from exc
    added: list[Any] = []
    restore_snapshot(store, content, news=True, added_to=added, shut=shut)
    return added


def _check_forwarded(content: dict[str, Any]) -> None:
    """Every field of a forwarded part has the type and range ``restore_snapshot`` stores
    (raises ValueError, TypeError or KeyError otherwise): a number past SQLite's 64 bits
    raised OverflowError, a status or title of another type was stored as it came."""
    from chatcore.content import GROUP_ID, MID, STATUS_RANK, ContactState
    from chatcore.payload import MAX_LAMPORT, MAX_SENT_AT_MS

    def hexid(v: Any, *sizes: int) -> None:
        if not isinstance(v, str) or len(bytes.fromhex(v)) not in sizes:
            raise ValueError("bad id")

    def num(v: Any, top: int = MAX_SENT_AT_MS) -> None:
        if type(v) is not int or not 0 <= v <= top:
            raise ValueError("bad number")

    def opt(v: Any, kind: type) -> None:
        if v is not None and not isinstance(v, kind):
            raise TypeError("bad field")
        if isinstance(v, str):
            v.encode("utf-8")  # JSON's "\ud800" is a str no database takes: ValueError

    def rows(key: str) -> list[dict[str, Any]]:
        got = content.get(key, [])
        if not isinstance(got, list) or not all(isinstance(r, dict) for r in got):
            raise TypeError(f"bad {key}")
        return got

    convs = set()
    for c in rows("conversations"):
        hexid(c["id"], 16, GROUP_ID)
        if c["kind"] not in ("direct", "group"):
            raise ValueError("bad conversation kind")
        if c["peer"] is not None:
            hexid(c["peer"], 32)
        opt(c["title"], str)
        num(c["created_at"])
        num(c.get("unread", 0))
        for flag in ("muted", "archived"):
            opt(c.get(flag), int)  # (bool is an int)
        convs.add(c["id"])
    for p in rows("peers"):
        hexid(p["identity"], 32)
        opt(p.get("display"), str)
    for k in rows("contacts"):
        hexid(k["identity"], 32)
        opt(k.get("alias"), str)
        ContactState(k["state"])
        num(k["at"])
        if k.get("stamp"):
            hexid(k["stamp"], *range(1, 65))
    for m in rows("messages"):
        if m["c"] not in convs:
            raise ValueError("a message without its conversation")
        hexid(m["m"], MID)
        hexid(m["si"], 32)
        hexid(m["sn"], 32)
        num(m["l"], MAX_LAMPORT)
        num(m["s"])
        num(m["r"])
        num(m["t"], 255)
        if not isinstance(m["b"], str) or not isinstance(m["o"], bool):
            raise TypeError("bad message")
        base64.b64decode(m["b"], validate=True)
        if m["st"] not in ({*STATUS_RANK, "failed", "received", "system"}):
            raise ValueError("bad status")
        if "e" in m:
            base64.b64decode(m["e"], validate=True)
            num(m["el"], MAX_LAMPORT)
        opt(m.get("d"), int)
        rx = m.get("rx", [])
        if not isinstance(rx, list):
            raise TypeError("bad reactions")
        for who, emoji, lamport in rx:
            hexid(who, 32)
            opt(emoji, str)
            if emoji is None:
                raise TypeError("bad reaction")
            num(lamport, MAX_LAMPORT)


def forward_linked_history(client: Client) -> list[Any]:
    """For each device approved here that has since published its own bundle: send it
    (over our pairwise session, end-to-end encrypted, as device-sync payloads in the outbox)
    what this device stored after the handover's cut — messages peers sent us before they
    counted the new device as ours, so they reached us only. Until LINK_FORWARD_TTL_MS after
    the approval, later syncs forward what arrives late but was sent before we saw the new
    device active (a sender's retransmission, or one that was offline). A cut is dropped
    once the device is revoked, or past LINK_FORWARD_TTL_MS. Returns the frames (already
    in the outbox: a process killed before sending them sends them later; the new device
    drops doubles).

    Groups too: a group of the handover that our identity was taken out of (or left) before
    the new device was active sent it no removal (members did not count it yet), so it
    joined from the handover's welcome taking itself for a member. Once our identity is out
    of such a group here, the new device gets our op log of it, once
    (``GroupChat.tell_linked_device``)."""
    pending = client.store.meta_with_prefix(LINK_FORWARD)
    if not pending:
        return []
    now = client.clock_ms()
    revoked = {
        i.installation_id
        for i in client.index.by_id(client.identity_id).installations
        if i.revoked
    }  # fmt: skip
    own = {k.installation_id: k for k in client.directory.own_devices(client.identity_id)}
    frames: list[Any] = []
    for key, raw in pending:
        try:
            inst = bytes.fromhex(key[len(LINK_FORWARD) :])
            cut = json.loads(raw)
            seq, since, approved = int(cut["seq"]), int(cut["since"]), int(cut["approved"])
            active = None if cut.get("active") is None else int(cut["active"])
            groups = [bytes.fromhex(g) for g in cut.get("groups") or ()]  # (none: older cuts)
            # a cut of before store schema 12 has no contact write number: what was written
            # since the upgrade (numbered) goes, and by date what was written before it
            contact = None if cut.get("contact") is None else int(cut["contact"])
            went: dict[str, list[Any]] | None = None
            if contact is None:
                went = {
                    str(i): [str(v), int(t)] for i, (v, t) in (cut.get("contacts") or {}).items()
                }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("dropped an unreadable link cut: %s", exc)
            with client.store.transaction():
                client.store.delete_meta(key)
            continue
        if inst in revoked or now - approved > LINK_FORWARD_TTL_MS:
            with client.store.transaction():
                client.store.delete_meta(key)
            continue
        device = own.get(inst)
        if device is None or inst == client.installation_id:
            continue  # not linked yet
        # one transaction: the parts in the outbox and the cut moved past them
        with client.store.transaction():
            # read again under the lock: another process on this home (an app and a CLI
            # sync) may have forwarded from this cut since we read it, and moved it past
            # what it sent (or dropped it): the next sync goes on from where it is now
            if client.store.get_meta(key) != raw:
                continue
            sent_by = None if active is None else active + LINK_FORWARD_SLACK_MS
            parts = forward_parts(
                client.store, seq, since, sent_by, forwarded=went,
                contacts_after=0 if contact is None else contact,
            )  # fmt: skip
            for part in parts:
                frames += client.features.forward_history(device, part)
            told, out = client.groups.tell_linked_device(device, groups) if groups else (set(), [])
            frames += out
            if parts or told or active is None:
                # the contacts go by the number of their write here: one dated "later" than
                # now (by the clock of our device that changed it, if ahead of ours) went at
                # every sync until our clock passed it, one dated before the cut (that clock
                # behind) arriving after a forward never went
                cut = {
                    "seq": client.store.next_seq() - 1, "since": now, "approved": approved,
                    "active": now if active is None else active,
                    "groups": [g.hex() for g in groups if g not in told],
                    "contact": client.store.last_contact_change(),
                }  # fmt: skip
                client.store.set_meta(key, json.dumps(cut).encode())
        if parts:
            log.info("forwarded %d part(s) of history to device %s", len(parts), inst.hex()[:12])
    return frames


# --- listing and revoking -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeviceInfo:
    installation_id: bytes
    status: str  # active | pending | revoked
    this_device: bool
    added_block: int | None
    revoked_block: int | None
    bundle_seq: int | None


def not_on_chain(identity_id: bytes) -> RecordNotFound:
    """The error for a home whose identity the chain does not know (a devnet started again
    without its state, or a home pointed at another chain)."""
    return RecordNotFound(
        f"your identity 0x{identity_id.hex()} is not on this chain (was the chain started "
        "again without its state?); a home works only on the chain it was made on: "
        "'logos-chat init' with a new --home makes an identity here"
    )


def list_devices(client: Client) -> list[DeviceInfo]:
    """Every installation of our identity, from the chain (offline: as last synced)."""
    from discovery.errors import ChainUnavailable

    online = True
    try:
        client.sync_directory()
    except ChainUnavailable as exc:
        if not client.index.by_id(client.identity_id).installations:
            raise  # nothing synced yet: nothing to show
        log.info("chain unreachable, devices as last synced: %s", exc)
        online = False
    state = client.index.by_id(client.identity_id)
    try:
        resolved = client.resolver.resolve_id(client.identity_id, fresh_prekeys=False)
        verified = {i.installation_id: i for i in resolved.installations}
        history = resolved.history
    except ChatCoreError:
        raise
    except RecordNotFound:
        if online:
            raise not_on_chain(client.identity_id) from None
        verified, history = {}, ()
    except Exception:
        verified, history = {}, ()
    added: dict[bytes, int] = {}
    revoked: dict[bytes, int] = {}
    for h in history:
        inst = h.detail.get("installation")
        if inst is None:
            continue
        key = bytes.fromhex(inst[2:])
        if h.event == "InstallationAdded":
            added[key] = h.block_number
        elif h.event == "InstallationRevoked":
            revoked[key] = h.block_number
    out = []
    for i in state.installations:
        iid = i.installation_id
        status = "revoked" if i.revoked else ("active" if iid in verified else "pending")
        v = verified.get(iid)
        out.append(
            DeviceInfo(
                iid, status, iid == client.installation_id, added.get(iid), revoked.get(iid),
                v.bundle.seq if v else None,
            )
        )  # fmt: skip
    return out


def find_installation(installations: list[bytes], query: str) -> bytes:
    from chatcore.content import check_str

    check_str("an installation id", query)
    q = query.strip().lower().removeprefix("0x")
    if len(q) < 4 or any(c not in "0123456789abcdef" for c in q):
        raise ValueError(f"{query!r} is not an installation id (0x + hex, at least 4 digits)")
    hits = [i for i in installations if i.hex().startswith(q)]
    if len(hits) != 1:
        from chatcore.errors import UnknownContact

        raise UnknownContact(
            f"no single installation matches {query!r} ({len(hits)} found; see 'devices list')"
        )
    return hits[0]


def revoke(
    client: Client,
    passphrase: str,
    query: str,
    *,
    allow_this_device: bool = False,
    force: bool = False,
) -> tuple[bytes, int]:
    """Revoke one of our installations with the owner key (from any remaining device).

    Revoking the device in use ends its ability to chat; it needs ``allow_this_device``,
    and raises AwaitingReceipts (nothing changed) while messages it sent wait for receipts
    (as ``rotate_installation``), unless ``force``."""
    client.sync_directory()
    state = client.index.by_id(client.identity_id)
    target = find_installation([i.installation_id for i in state.installations], query)
    if any(i.installation_id == target and i.revoked for i in state.installations):
        raise IdentityError("that installation is already revoked")
    if target == client.installation_id and not allow_this_device:
        raise IdentityError(
            "that is this device: revoking it locks it out of your identity for good "
            "(pass --this-device to do it anyway)"
        )
    if target == client.installation_id:
        client.home.load_owner_key(passphrase)  # a wrong passphrase says so first
        _no_link_in_progress(client)
        if not force:
            _check_no_receipts_awaited(client, "force it ('devices revoke --this-device --force')")
    owner = client._owner(passphrase)
    receipt = client.registry.revoke_installation(owner, client.identity_id, target)
    client.sync_directory() if target != client.installation_id else None
    return target, _gas(receipt)


def _check_no_receipts_awaited(client: Client, how_to_force: str) -> None:
    """Raise AwaitingReceipts while messages sent from this device wait for receipts: once
    its keys are revoked, a recipient that has not fetched one yet drops it, and it cannot
    be resent under other keys."""
    from chatcore.errors import AwaitingReceipts

    waiting = client.features.pending_by_conversation()
    if not waiting:
        return
    where = []
    for conv, n in waiting.items():
        c = client.store.conversation(conv)
        title = (
            "a deleted conversation" if c is None
            else client.display(c.peer_identity) if c.peer_identity is not None
            else c.title or "0x" + conv.hex()[:10]
        )  # fmt: skip
        where.append(f"{n} to {title}")
    raise AwaitingReceipts(
        f"{sum(waiting.values())} message(s) sent from this device still wait for "
        f"receipts ({', '.join(where)}); recipients that have not fetched them would "
        "drop them once these keys are revoked: sync again once they have been online "
        f"(their receipts come in), or {how_to_force} and let those messages go"
    )


def _no_link_in_progress(client: Client) -> None:
    """Raise IdentityError if a device is approved but has not finished linking: it takes
    its keys from the approving device's handover, which it accepts only while that device
    is active, so revoking or rotating this one now would strand it for good."""
    pending = [d for d in list_devices(client) if d.status == "pending" and not d.this_device]
    if pending:
        raise IdentityError(
            f"device 0x{pending[0].installation_id.hex()[:12]}… is approved but has not "
            "finished linking (its first 'sync'); it needs this device active to do so: let "
            "it sync first, or revoke it"
        )


def recovery_account(phrase: str) -> Any:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    words = _phrase_words(phrase)
    try:
        return Account.from_mnemonic(" ".join(words))
    except Exception as exc:  # eth_account raises ValidationError / ValueError
        # (the library's own words, e.g. "Language not detected", say nothing to a user)
        if len(words) == 12:
            from eth_account.hdaccount.mnemonic import Mnemonic

            known = set(Mnemonic().wordlist)
            bad = next((i for i, w in enumerate(words) if w not in known), None)
            if bad is not None:
                # its position only: the word itself is part of a secret (it would go to
                # stderr, logs and --json output), and a misspelt word is close to the real one
                raise WrongRecoveryPhrase(
                    f"not a valid recovery phrase: word {bad + 1} is not one of the words a "
                    "phrase is made of (check its spelling)"
                ) from None
            raise WrongRecoveryPhrase(
                "not a valid recovery phrase: the words do not fit together (one is wrong "
                "or they are not in order)"
            ) from exc
        raise WrongRecoveryPhrase(
            f"not a valid recovery phrase ({len(words)} words; expected the 12 English words "
            "shown when it was made, in order)"
        ) from exc


def identity_for_phrase(
    network: NetworkConfig, phrase: str, index_dir: Path | None = None
) -> tuple[Any, Any]:
    """(recovery account, identity state) for a phrase.

    The index (from events) proposes the identities naming the phrase's account; storage has
    the last word on each, and only those bound to this phrase remain: registered with a salt
    or given the recovery with a tag that only the phrase's holder can make
    (discovery.recovery_binding). Anyone can name the phrase's (public) address for a decoy;
    no decoy is bound. Raises WrongRecoveryPhrase when no identity names the account,
    RecoveryNotBound when none of those is bound, AmbiguousRecovery when several are (the
    phrase's holder registered twice with it: restoring either could be the wrong one)."""
    import tempfile

    from discovery.index import Index
    from discovery.recovery_binding import bound_to_phrase
    from discovery.registry import Registry

    acct = recovery_account(phrase)
    registry = Registry(network)
    registry.check_chain()
    with tempfile.TemporaryDirectory() as tmp:
        index = Index((index_dir or Path(tmp)) / "recovery-index.db", registry)
        try:
            index.sync()
            candidates = {
                s.identity_id: index.events(s) for s in index.by_recovery(acct.address) if s.exists
            }
        finally:
            index.close()
    named = [
        st for st in (registry.get_identity(i) for i in candidates)
        if st.exists and st.recovery.lower() == acct.address.lower()
    ]  # fmt: skip
    if not named:
        raise WrongRecoveryPhrase("no identity has this recovery phrase")
    states = [
        st for st in named
        if bound_to_phrase(
            acct.key, acct.address, network.chain_id, registry.identity.address,
            st.identity_id, candidates[st.identity_id],
        )
    ]  # fmt: skip
    if not states:
        raise RecoveryNotBound(
            f"{len(named)} identit{'y names' if len(named) == 1 else 'ies name'} this recovery "
            "phrase's account, but none was registered or set with this phrase: not restoring"
        )
    if len(states) > 1:
        ids = ", ".join("0x" + st.identity_id.hex()[:16] + "…" for st in states)
        raise AmbiguousRecovery(
            f"{len(states)} identities have this recovery phrase ({ids}): not restoring any"
        )
    return acct, states[0]


# --- changing the recovery account ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RecoveryChange:
    """A recovery account change: applied at once, or proposed and waiting out the delay."""

    recovery: str  # the new recovery account (the zero address when cleared)
    pending: bool  # True: proposed; the current recovery stays in force until confirmed
    ready_at: int | None  # chain timestamp from which it can be confirmed (when pending)
    gas_used: int


def change_recovery(client: Client, passphrase: str, new: Any | None) -> RecoveryChange:
    """The owner replaces the recovery account with ``new`` (None clears it).

    While a recovery account exists the registry only proposes the change: every device
    holds the owner key, so a thief could otherwise lock the user's recovery out. The
    current phrase stays in force, and can cancel it, until :func:`confirm_recovery_change`
    after the registry's delay (``Registry.recovery_delay``)."""
    from discovery.registry import ZERO_ADDRESS

    owner = client._owner(passphrase)
    receipt = client.registry.set_recovery(owner, client.identity_id, new)
    address = new.address if new is not None else ZERO_ADDRESS
    pending = client.registry.pending_recovery(client.identity_id)
    if pending is not None and pending.recovery.lower() == address.lower():
        with client.store.transaction():
            client.store.set_meta("recovery_pending", _proposal_key(pending))
        return RecoveryChange(address, True, pending.ready_at, _gas(receipt))
    with client.store.transaction():
        client.store.set_meta("recovery", address.encode())
        client.store.delete_meta("recovery_pending")
    return RecoveryChange(address, False, None, _gas(receipt))


def confirm_recovery_change(client: Client, passphrase: str) -> RecoveryChange:
    """Apply the proposed recovery change once its delay has passed. Raises IdentityError
    when there is none, RecoveryChangeNotReady (with the time) before the delay has passed."""
    reg = client.registry
    pending = reg.pending_recovery(client.identity_id)
    if pending is None:
        raise IdentityError("no recovery change is waiting to be confirmed")
    now = reg.latest_timestamp()
    if now < pending.ready_at:
        raise RecoveryChangeNotReady(
            f"the recovery change can be confirmed from {_utc(pending.ready_at)} "
            f"(in {_span(pending.ready_at - now)})"
        )
    receipt = reg.confirm_recovery(client._owner(passphrase), client.identity_id)
    with client.store.transaction():
        client.store.set_meta("recovery", pending.recovery.encode())
        client.store.delete_meta("recovery_pending")
    return RecoveryChange(pending.recovery, False, None, _gas(receipt))


def cancel_recovery_change(
    network: NetworkConfig,
    *,
    client: Client | None = None,
    passphrase: str | None = None,
    phrase: str | None = None,
) -> tuple[bytes, str, int]:
    """Cancel the proposed recovery change, as the owner (``client`` + ``passphrase``) or as
    the current recovery account (``phrase``: no device needed, as when a thief proposed it).
    Returns (identity id, the cancelled proposal's account, gas)."""
    from discovery.registry import Registry

    if phrase is not None:
        signer, state = identity_for_phrase(network, phrase)
        identity_id, registry = state.identity_id, Registry(network)
    elif client is not None and passphrase is not None:
        signer, identity_id = client._owner(passphrase), client.identity_id
        registry = client.registry
    else:
        raise ValueError("cancel as the owner (client, passphrase) or with the recovery phrase")
    pending = registry.pending_recovery(identity_id)
    if pending is None:
        raise IdentityError("no recovery change is waiting: nothing to cancel")
    if phrase is not None:
        _fund(network, registry, signer.address)
    receipt = registry.cancel_recovery_change(signer, identity_id)
    if client is not None:
        with client.store.transaction():
            client.store.delete_meta("recovery_pending")
    return identity_id, pending.recovery, _gas(receipt)


def recovery_status(client: Client) -> dict[str, Any]:
    """The recovery account on chain, and a proposed change: when it can be confirmed, and
    whether this home proposed it (if not, someone else holding the owner key did)."""
    reg = client.registry
    state = reg.get_identity(client.identity_id)
    if not state.exists:
        raise not_on_chain(client.identity_id)
    pending, here = _pending_recovery(client)
    out: dict[str, Any] = {"recovery": state.recovery, "pending": None}
    if pending is not None:
        out["pending"] = {
            "recovery": pending.recovery,
            "ready_at": pending.ready_at,
            "ready": reg.latest_timestamp() >= pending.ready_at,
            "proposed_here": here,
        }
    return out


def _pending_recovery(client: Client) -> tuple[Any | None, bool]:
    """(the proposed recovery change or None, whether this home proposed it); what this
    home remembers of its own proposal is forgotten once nothing is pending (confirmed or
    cancelled, here or elsewhere)."""
    from discovery.errors import ChainUnavailable

    try:
        pending = client.registry.pending_recovery(client.identity_id)
    except ChainUnavailable:
        # the sync this check comes before does not wait for the node a second time
        client._chain_failed_at = client.clock_ms()
        raise
    mine = client.store.get_meta("recovery_pending")
    if pending is None:
        if mine is not None:
            with client.store.transaction():
                client.store.delete_meta("recovery_pending")
        return None, False
    return pending, mine == _proposal_key(pending)


def _proposal_key(pending: Any) -> bytes:
    """What this home remembers of a proposal it made: the account and when it is ready
    (a proposal is never told apart by its account alone: a thief may propose the same)."""
    return f"{pending.recovery.lower()}:{pending.ready_at}".encode()


def foreign_recovery_change(client: Client) -> Any | None:
    """A proposed recovery change this home did not make (``PendingRecovery``), or None.

    Someone holding the owner key made it — another of the user's devices, or a thief
    holding one: the user should see it within the registry's delay (one eth_call)."""
    pending, here = _pending_recovery(client)
    return None if here else pending


def _utc(ts: int) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: int) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{max(seconds, 1) // 60 or 1} min"


def revoke_with_phrase(network: NetworkConfig, phrase: str, query: str) -> tuple[bytes, bytes, int]:
    from discovery.registry import Registry

    acct, state = identity_for_phrase(network, phrase)
    registry = Registry(network)
    target = find_installation(
        [i.installation_id for i in state.installations if not i.revoked], query
    )
    _fund(network, registry, acct.address)
    receipt = registry.revoke_installation(acct, state.identity_id, target)
    return state.identity_id, target, _gas(receipt)


# --- rotation -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rotated:
    what: str
    old: str
    new: str
    gas_used: int


def rotate_prekey(client: Client, passphrase: str) -> Rotated:
    before = (client.store.get_meta("spk_current") or b"0").decode()
    res = client.publish(passphrase)
    return Rotated("prekey", before, str(res.prekey_id), res.gas_used)


async def rotate_installation(
    client: Client, passphrase: str, force: bool = False
) -> tuple[Rotated, Client]:
    """New installation keys in this home: register them, switch, revoke the old ones.

    Sessions are dropped (peers start new ones with the new installation); groups are
    re-joined from their op logs as the new installation. Returns the reopened client.
    Raises AwaitingReceipts (nothing changed) while messages sent from the old keys wait
    for receipts, unless ``force``: once the old keys are revoked, a recipient that has
    not fetched such a message yet drops it, and it cannot be resent under the new keys.
    """
    from chatcore.client import (
        INSTALLATION_NEXT,
        INSTALLATION_OLD,
        PREKEY_TTL_S,
        REVOKING,
        ROTATION_AT,
        Client,
    )
    from chatcore.groupchat import keep_welcome
    from chatcore.keys import InstallationKeys

    client.home.load_owner_key(passphrase)  # a wrong passphrase says so before anything else
    await client.sync()  # read what is waiting in the old inbox first
    _no_link_in_progress(client)
    if not force:
        _check_no_receipts_awaited(
            client, "force the rotation ('keys rotate --installation --force')"
        )
    owner = client._owner(passphrase)
    old = client.installation_id
    welcomes = [
        st.welcome() for g in client.store.group_ids()
        if (st := client.groups.load(g)) is not None and st.is_member
    ]  # fmt: skip
    new_keys = InstallationKeys.generate(client.rng)
    # kept before the chain is asked, and the old keys marked "revoking" until the chain
    # revoked them: a process killed midway left an active installation on chain that
    # nobody holds the keys of (peers wrote to it for ever), or the old keys active (after a
    # rotation meant to retire them); ``Client.finish_key_rotation`` revokes what is left
    with client.store.transaction():
        # keys a killed run staged may be active on chain: revoked later as old ones
        if (staged := client.store.get_secret(INSTALLATION_NEXT)) is not None:
            staged_id = InstallationKeys.from_bytes(staged).installation_id
            client.store.put_secret(f"{INSTALLATION_OLD}{staged_id.hex()}", REVOKING)
        client.store.put_secret(INSTALLATION_NEXT, new_keys.to_bytes())
        client.store.set_meta(ROTATION_AT, str(client.clock_ms()).encode())
    # the new installation's first bundle, signed by its own key
    own = client.engine.own
    client.engine.own = type(own)(client.identity_id, new_keys)
    try:
        _spk, bundle = client._new_bundle(seq=1, ttl_s=PREKEY_TTL_S)
        gas = _gas(
            client.registry.add_installation(
                owner, client.identity_id, new_keys.installation_id, bundle.encode()
            )
        )
    except BaseException:
        # the chain refused or was unreachable: this client goes on with the keys it has
        # (it read a new inbox no peer writes to, and answered with unregistered keys)
        client.engine.own = own
        raise
    with client.store.transaction():
        client.store.put_secret("installation", new_keys.to_bytes())
        client.store.put_secret(f"{INSTALLATION_OLD}{old.hex()}", REVOKING)
        client.store.delete_secret(INSTALLATION_NEXT)
        client.store.set_meta(ROTATION_AT, str(client.clock_ms()).encode())
        client._prekey_published(bundle)
        client.store.set_meta("bundle_seq", b"1")
        client.store.delete_sessions()
        for w in welcomes:  # joined as the new keys below, or by the next sync if killed
            keep_welcome(client.store, w)
    client._publish_pq(owner)
    gas += _gas(client.registry.revoke_installation(owner, client.identity_id, old))
    with client.store.transaction():
        client.store.put_secret(f"{INSTALLATION_OLD}{old.hex()}", b"revoked")
    home, network, transport = client.home, client.network, client.transport
    client.transport = None
    client.close()
    new_client = Client.open(home.path, passphrase, network)
    if transport is not None:
        await new_client.connect(transport)
    new_client.sync_directory()
    # what the old keys sent that no receipt came for is not awaited any more: "failed"
    new_client.features.pending_by_conversation()
    await new_client._publish_later(new_client.groups.join_kept_welcomes())
    return Rotated(
        "installation", "0x" + old.hex(), "0x" + new_keys.installation_id.hex(), gas
    ), new_client


def rotate_owner(client: Client, passphrase: str) -> Rotated:
    """A new owner account (setOwner with its EIP-712 consent); the keystore is replaced."""
    from eth_account import Account

    from chatcore.client import OWNER_ROTATING

    owner = client._owner(passphrase)
    if client.store.get_secret(OWNER_ROTATING) is not None:
        # a rotation sent before, not mined yet: a second one would put its key in place of
        # the first's, which the chain may still take
        raise IdentityError(
            "an earlier owner rotation is still waiting to be mined: try again in a while "
            "(it is finished, or given up once its consent expires, within an hour)"
        )
    new = Account.from_key(client.rng(32))
    reg = client.registry
    deadline = reg.latest_timestamp() + SIG_TTL_S
    msg = {
        "id": client.identity_id, "newOwner": new.address, "currentOwner": owner.address,
        "nonce": reg.nonce_of(new.address), "deadline": deadline,
    }  # fmt: skip
    sig = typed_signature(
        new, "AcceptOwnership", msg, client.network.chain_id, reg.identity.address
    )
    # kept before the chain is asked: a process killed once the chain took the new owner
    # but before the keystore held it lost the identity's owner key for good (every later
    # publish, device change or rotation refused); ``Client._owner`` finishes such a run
    # (with the consent's deadline: until then the transaction may still be mined)
    with client.store.transaction():
        client.store.put_secret(OWNER_ROTATING, bytes(new.key) + deadline.to_bytes(8, "big"))
    try:
        receipt = reg.set_owner(owner, client.identity_id, new.address, deadline, sig)
    except RegistryReverted:  # refused for good (not a timeout): nothing can land
        with client.store.transaction():
            client.store.delete_secret(OWNER_ROTATING)
        raise
    client.home.save_owner_key(new.key, passphrase)
    with client.store.transaction():
        client.store.set_meta("owner", new.address.encode())
    _fund(client.network, reg, new.address)
    # our other devices need the new owner key too (they refresh their own prekeys); it goes
    # E2E-encrypted to each of them through the outbox, sent by the next publish of frames
    from chatcore.content import SyncOwnerKey

    client.sync_directory()
    with client.store.transaction():
        client.features._sync_own(SyncOwnerKey(bytes(new.key)))
        client.store.delete_secret(OWNER_ROTATING)
    return Rotated("owner", owner.address, new.address, _gas(receipt))


# --- recovery -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Restored:
    identity_id: bytes
    installation_id: bytes
    owner: str
    revoked: tuple[bytes, ...]
    names: tuple[str, ...]
    gas_used: int


def restore(
    home_dir: Path | str, passphrase: str, network: NetworkConfig, phrase: str,
    rng: Callable[[int], bytes] = os.urandom,
) -> tuple[Client, Restored]:  # fmt: skip
    """With every device lost: take the identity back with the recovery phrase.

    The recovery account first takes the ownership itself (``setOwner`` to its own address
    needs no consent, so it does not depend on who owns the identity when it lands: a thief
    holding the owner key can neither front-run it with a copied consent nor dodge it by
    moving the owner, and it cancels a recovery change the thief proposed). Then it revokes
    every active installation and hands the ownership to a fresh owner (with that owner's
    consent); the new owner registers this home's installation. StoreError if an init,
    restore or link runs on the home (before the chain is changed)."""
    from chatcore.home import Home
    from discovery.registry import Registry

    Home.check_new_passphrase(passphrase)  # before the chain is asked to do anything
    acct, state = identity_for_phrase(network, phrase)
    registry = Registry(network)
    home = Home(Path(home_dir))
    if home.meta_file.exists():
        raise IdentityError(f"{home.path} already holds an identity: restore into a new home")
    home.make_dir()  # before the chain is changed: a home that cannot be made stops it here
    # as init: a second restore (or an init, a link) at once would lay out a home over ours
    with home.init_lock("recovery restore"):
        return _restore(home, passphrase, network, acct, state, registry, rng)


def _restore(
    home: Home, passphrase: str, network: NetworkConfig, acct: Any, state: Any, registry: Any,
    rng: Callable[[int], bytes],
) -> tuple[Client, Restored]:  # fmt: skip
    from eth_account import Account

    from chatcore.client import PREKEY_TTL_S, Client, _scope
    from chatcore.keys import InstallationKeys
    from chatcore.store import RESTORED_AT_META

    if home.meta_file.exists():  # made by one that held the lock before us
        raise IdentityError(f"{home.path} already holds an identity: restore into a new home")
    _fund(network, registry, acct.address)
    gas = 0
    if state.owner.lower() != acct.address.lower():  # (already so after an interrupted run)
        gas += _gas(registry.set_owner(acct, state.identity_id, acct.address, 0, b""))
    revoked = []
    for inst in registry.get_identity(state.identity_id).installations:
        if not inst.revoked:
            gas += _gas(registry.revoke_installation(acct, state.identity_id, inst.installation_id))
            revoked.append(inst.installation_id)
    new_owner = Account.from_key(rng(32))
    deadline = registry.latest_timestamp() + SIG_TTL_S
    msg = {
        "id": state.identity_id, "newOwner": new_owner.address, "currentOwner": acct.address,
        "nonce": registry.nonce_of(new_owner.address), "deadline": deadline,
    }  # fmt: skip
    sig = typed_signature(
        new_owner, "AcceptOwnership", msg, network.chain_id, registry.identity.address
    )
    gas += _gas(registry.set_owner(acct, state.identity_id, new_owner.address, deadline, sig))
    _fund(network, registry, new_owner.address)
    home.create()
    store = home.open_store(passphrase)
    keys = InstallationKeys.generate(rng)
    with store.transaction():
        store.put_secret("installation", keys.to_bytes())
        store.set_meta("identity_id", state.identity_id)
        store.set_meta("owner", new_owner.address.encode())
        store.set_meta("recovery", acct.address.encode())
        store.set_meta("network", _scope(network).encode())
    home.save_owner_key(new_owner.key, passphrase)
    client = Client(home, store, network, keys, state.identity_id, rng=rng, registry=registry)
    _spk, bundle = client._new_bundle(seq=1, ttl_s=PREKEY_TTL_S)
    gas += _gas(
        registry.add_installation(
            new_owner, state.identity_id, keys.installation_id, bundle.encode()
        )
    )
    with store.transaction():
        client._prekey_published(bundle)
        store.set_meta("registered", b"1")
        store.set_meta("bundle_seq", b"1")
        # peers hold conversations and groups this home does not know: it takes every group
        # for a while (chatcore.features) and starts conversations from the wall clock
        store.set_meta(RESTORED_AT_META, str(client.clock_ms()).encode())
    client._publish_pq(new_owner)
    client.sync_directory()
    names = client.resolver.resolve_id(state.identity_id, fresh_prekeys=False).names
    return client, Restored(
        state.identity_id, keys.installation_id, new_owner.address, tuple(revoked), names, gas
    )


# --- backup ---------------------------------------------------------------------------------------
def check_recovery_phrase(client: Client, phrase: str) -> None:
    """Raise WrongRecoveryPhrase unless ``phrase`` is this identity's recovery phrase (so a
    backup sealed with it can be opened by the phrase the user actually has)."""
    address = recovery_account(phrase).address.lower()
    if address == (client.store.get_meta("recovery") or b"").decode().lower():
        return
    client.sync_directory()  # another device may have set a new phrase since
    state = client.index.by_id(client.identity_id)
    if state is None or address != str(state.recovery).lower():
        raise WrongRecoveryPhrase("that is not the recovery phrase of this identity")


def _phrase_words(phrase: str) -> list[str]:
    """A recovery phrase's words as it is read: the English list's are all lower case, so
    one written down in capitals is the same phrase (no valid phrase has another case, so
    no account changes), whatever the spacing."""
    return phrase.lower().split()


def backup_phrase_secret(phrase: str) -> str:
    """What a backup under the recovery phrase is sealed with: the words as the phrase
    takes them (:func:`recovery_account`: any case, any spacing), so that the phrase opens
    the backup however it is typed, as it restores the identity however it is typed."""
    return " ".join(_phrase_words(phrase))


def export_backup(client: Client, path: Path, secret: str, *, phrase: bool = False) -> int:
    """Write an encrypted backup; ``phrase``: ``secret`` is the recovery phrase (checked)."""
    if phrase:
        check_recovery_phrase(client, secret)
        secret = backup_phrase_secret(secret)
    snap = snapshot(client.store, 10**9)
    content = {
        "v": 1,
        "identity_id": client.identity_id.hex(),
        "exported_at": _now_s(client),
        **snap,
    }
    from chatcore.home import _fsync_dir

    data = seal_backup(content, secret, client.rng)
    tmp = Path(str(path) + ".tmp")
    if not tmp.parent.is_dir():
        raise IdentityError(f"no such folder: {tmp.parent}")
    try:
        # durable before it takes the name: a power cut must not leave an empty or cut file
        # where the previous backup was
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        tmp.replace(path)
        _fsync_dir(tmp.parent)
    except OSError as exc:  # a folder in the way, no permission, disk full
        with contextlib.suppress(OSError):
            if tmp.is_file():
                tmp.unlink()
        raise IdentityError(f"cannot write the backup: {exc.strerror or exc}") from exc
    return len(snap["messages"])


def import_backup(client: Client, path: Path, secret: str, *, phrase: bool = False) -> int:
    """Merge a backup into this home; ``phrase``: ``secret`` is the recovery phrase. One
    transaction; a block or decline it brings drops what that person wrote here after the
    block began, edits and reactions too (``Features.drop_written_while_shut``; not what
    the backup holds) and stops
    the wait for their receipts; a request it makes a contact queues read receipts for
    what was read, as accepting it does. Returns how many messages were added."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read the backup: {exc.strerror or exc}") from exc
    try:
        if phrase and backup_phrase_secret(secret) != secret:
            try:
                content = open_backup(data, backup_phrase_secret(secret))
            except WrongBackupSecret:  # sealed before the phrase was normalised: as typed
                content = open_backup(data, secret)
        else:
            content = open_backup(data, secret)
    except WrongBackupSecret as exc:
        # the file does not say which of the two sealed it: say where the other one goes
        hint = (
            "if it was exported without --phrase, import it without --phrase (with the "
            "passphrase it was exported with)" if phrase
            else "if it was exported with --phrase, import it with --phrase"
        )  # fmt: skip
        raise WrongBackupSecret(f"{exc}; {hint}") from None
    if content.get("identity_id") != client.identity_id.hex():
        raise IdentityError("this backup belongs to another identity")
    shut: list[bytes] = []
    accepted: list[bytes] = []
    # one transaction: an import cut short after the merge (an error, a kill) left the
    # block or contact it brought here, so that running it again saw nothing begin, and
    # what follows from it below was never done
    # what the backup holds came before the block where it was made (whatever its sent-at)
    # (its rows: the edits and reactions shown there, before the block)
    held = {(bytes.fromhex(m["c"]), bytes.fromhex(m["m"])): m for m in content.get("messages", [])}
    with client.store.transaction():
        added = restore_snapshot(client.store, content, shut=shut, accepted=accepted)
        for identity in shut:  # its receipts are dropped from now on: not waited for
            client.features.stop_waiting_for(identity)
            # and what it wrote during the block that came here meanwhile goes
            client.features.drop_written_while_shut(identity, keep=held)
        for identity in accepted:  # as when the user accepts a request here
            client.features._queue_read_of_earlier(identity)
    return added


# --- bindings -------------------------------------------------------------------------------------
def wallet_link_signature(
    wallet: Any, identity_id: bytes, network: NetworkConfig, registry: Any, deadline: int
) -> bytes:
    msg = {
        "id": identity_id, "wallet": wallet.address,
        "nonce": registry.nonce_of(wallet.address), "deadline": deadline,
    }  # fmt: skip
    return typed_signature(wallet, "LinkWallet", msg, network.chain_id, registry.identity.address)


def bind_wallet(
    client: Client, passphrase: str, wallet_address: str, signature: bytes, deadline: int
) -> int:
    owner = client._owner(passphrase)
    return _gas(
        client.registry.link_wallet(owner, client.identity_id, wallet_address, deadline, signature)
    )


def unbind_wallet(client: Client, passphrase: str, wallet_address: str) -> int:
    owner = client._owner(passphrase)
    return _gas(client.registry.unlink_wallet(owner, client.identity_id, wallet_address))


DOMAIN_PROOF_PREFIX = "logos-chat domain binding v1"


def domain_statement(domain: str, identity_id: bytes, chain_id: int) -> str:
    return (
        f"{DOMAIN_PROOF_PREFIX}\ndomain: {domain.lower()}\n"
        f"identity: 0x{identity_id.hex()}\nchain: {chain_id}"
    )


def domain_document(client: Client, passphrase: str, domain: str) -> dict[str, Any]:
    """The JSON to serve at https://DOMAIN/.well-known/logos-chat.json (owner-signed)."""
    from eth_account.messages import encode_defunct

    owner = client._owner(passphrase)
    stmt = domain_statement(domain, client.identity_id, client.network.chain_id)
    sig = owner.sign_message(encode_defunct(text=stmt)).signature
    return {
        "identity_id": "0x" + client.identity_id.hex(),
        "chain_id": client.network.chain_id,
        "domain": domain.lower(),
        "signer": owner.address,
        "signature": "0x" + bytes(sig).hex(),
    }


def verify_domain_document(doc: Any, domain: str, state: Any, chain_id: int) -> None:
    """The document names this identity and is signed by its owner or a linked wallet."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    if not isinstance(doc, dict):
        raise IdentityError("the domain document is not a JSON object")
    try:
        ident = bytes.fromhex(str(doc["identity_id"]).removeprefix("0x"))
        sig = bytes.fromhex(str(doc["signature"]).removeprefix("0x"))
    except (KeyError, ValueError) as exc:
        raise IdentityError(f"the domain document is malformed: {exc}") from exc
    if ident != state.identity_id:
        raise IdentityError(f"{domain} names another identity (0x{ident.hex()[:16]}…)")
    stmt = domain_statement(domain, ident, chain_id)
    try:
        signer = Account.recover_message(encode_defunct(text=stmt), signature=sig)
    except Exception as exc:
        raise IdentityError("the domain document's signature is invalid") from exc
    if signer != state.owner:
        raise IdentityError("the domain document is not signed by the identity's current owner")


def fetch_domain_document(domain: str, *, timeout: float = 10.0) -> Any:
    """GET https://DOMAIN/.well-known/logos-chat.json (httpx; system CAs or SSL_CERT_FILE)."""
    import httpx

    if not _DOMAIN_RE.fullmatch(domain):
        raise IdentityError(f"{domain!r} is not a domain name (such as example.org)")
    url = f"https://{domain}/.well-known/logos-chat.json"
    try:
        r = httpx.get(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise IdentityError(f"cannot fetch {url}: {exc}") from exc
    if r.status_code != 200:
        raise IdentityError(f"{url} answered HTTP {r.status_code}")
    if len(r.content) > MAX_DOMAIN_DOCUMENT:
        raise IdentityError(f"{url} is larger than {MAX_DOMAIN_DOCUMENT} bytes")
    try:
        return r.json()
    except (ValueError, RecursionError) as exc:
        raise IdentityError(f"{url} is not JSON") from exc


MAX_DOMAIN_DOCUMENT = 16 * 1024
#: a host name (letters, digits, hyphens; dot-separated labels) with an optional port
_DOMAIN_RE = re.compile(
    r"(?=.{1,253}(:|$))([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    r"(:[0-9]{1,5})?",
    re.IGNORECASE,
)


def bind_domain(client: Client, domain: str) -> dict[str, Any]:
    doc = fetch_domain_document(domain)
    client.sync_directory()
    state = client.index.by_id(client.identity_id)
    verify_domain_document(doc, domain, state, client.network.chain_id)
    with client.store.transaction():
        client.store.set_meta(f"domain:{domain.lower()}", json.dumps(doc).encode())
    return dict(doc)


def require_identity(client: Client) -> None:
    if client.store.get_meta("identity_id") is None:
        raise NotInitialised("this home has no identity yet")
