"""Admin-signed membership ops: encoding, signing, verification.

Wire (kind 0x14)::

    0x14 | op kind (1) | group id (32) | epoch (u32) | n deps (1) | deps (32 each, sorted)
         | author identity (32) | author installation (32) | created_ms (u64) | payload
         | signature (64)

payload: CREATE = name (varint len + UTF-8) + n members (u16) + identities (32 each)
+ salt (32); ADD / REMOVE / PROMOTE = target identity (32); LEAVE = empty; RENAME = name.
A group's id is bound to its creator: ``SHA-256(GROUP_ID_DOMAIN || author || salt)`` of its
create op, so nobody else can make a create op (a welcome) for a group id they learnt.
The signature is Ed25519 by the author installation over ``OP_DOMAIN || body``;
the op id is SHA-256 of the body (everything before the signature).
``epoch`` is the number of ops the author had seen (its causal past, = the deps and
all their ancestors); ``deps`` are the author's heads, which makes the op log a DAG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from chatcore.codec import Reader, blob
from chatcore.errors import GroupError, MalformedMessage
from chatcore.group._primitives import ed25519_verify, sha256
from chatcore.group.consts import (
    ID_LEN,
    KIND_GROUP_OP,
    MAX_DEPS,
    MAX_MEMBERS,
    MAX_NAME_BYTES,
    SIG_LEN,
)
from chatcore.group.keys import InstallationKey

OP_DOMAIN = b"logos-chat/group-op/v1\x00"
GROUP_ID_DOMAIN = b"logos-chat/group-id/v1\x00"


def group_id_for(author: bytes, salt: bytes) -> bytes:
    """The id of the group ``author`` creates with ``salt`` (32 random bytes)."""
    if len(author) != ID_LEN or len(salt) != ID_LEN:
        raise ValueError("author and salt must be 32 bytes")
    return sha256(GROUP_ID_DOMAIN + author + salt)


class OpKind(IntEnum):
    CREATE = 1
    ADD = 2
    REMOVE = 3
    PROMOTE = 4
    LEAVE = 5
    RENAME = 6


_TARGETED = (OpKind.ADD, OpKind.REMOVE, OpKind.PROMOTE)


@dataclass(frozen=True, slots=True)
class Op:
    """One decoded, signature-checked-on-demand membership op."""

    group_id: bytes
    kind: OpKind
    epoch: int
    deps: tuple[bytes, ...]
    author: bytes
    installation: bytes
    created_ms: int
    target: bytes = b""
    name: str = ""
    members: tuple[bytes, ...] = ()
    salt: bytes = b""  # CREATE only: the group id is group_id_for(author, salt)
    signature: bytes = field(default=b"", repr=False)
    op_id: bytes = field(default=b"", repr=False)
    raw: bytes = field(default=b"", repr=False)

    @property
    def sort_key(self) -> tuple[int, int, bytes]:
        """The total order every member folds in: (epoch, removals first, op id)."""
        rank = 0 if self.kind in (OpKind.REMOVE, OpKind.LEAVE) else 1
        return (self.epoch, rank, self.op_id)

    def signature_valid(self) -> bool:
        """Checked once per op: an op is checked when it arrives, again when a welcome or
        a catch-up holds it, and a welcome checks all its signatures first. Remembered
        by (op id, installation, signature): the id hashes the signed body, and keys stay
        small whatever the op's size (bounded count)."""
        key = self.op_id + self.installation + self.signature
        known = _VERIFIED.get(key)
        if known is None:
            known = ed25519_verify(
                self.installation, self.signature, OP_DOMAIN + self.raw[:-SIG_LEN]
            )
            if len(_VERIFIED) >= _VERIFIED_MAX:
                del _VERIFIED[next(iter(_VERIFIED))]
            _VERIFIED[key] = known
        return known


_VERIFIED: dict[bytes, bool] = {}
_VERIFIED_MAX = 1 << 14


def _body(
    kind: OpKind,
    group_id: bytes,
    epoch: int,
    deps: tuple[bytes, ...],
    author: bytes,
    installation: bytes,
    created_ms: int,
    target: bytes,
    name: str,
    members: tuple[bytes, ...],
    salt: bytes,
) -> bytes:
    parts = [
        bytes((KIND_GROUP_OP, kind)),
        group_id,
        epoch.to_bytes(4, "big"),
        bytes((len(deps),)),
        *deps,
        author,
        installation,
        created_ms.to_bytes(8, "big"),
    ]
    if kind in (OpKind.CREATE, OpKind.RENAME):
        parts.append(blob(name.encode()))
    if kind is OpKind.CREATE:
        parts.append(len(members).to_bytes(2, "big"))
        parts.extend(members)
        parts.append(salt)
    elif kind in _TARGETED:
        parts.append(target)
    return b"".join(parts)


def make_op(
    key: InstallationKey,
    kind: OpKind,
    *,
    group_id: bytes,
    epoch: int,
    deps: tuple[bytes, ...],
    author: bytes,
    created_ms: int,
    target: bytes = b"",
    name: str = "",
    members: tuple[bytes, ...] = (),
    salt: bytes = b"",
) -> Op:
    """Build and sign an op. Bad arguments raise ValueError (a CREATE needs the ``salt``
    its ``group_id`` is made from: ``group_id_for(author, salt)``)."""
    _check_fields(
        kind, group_id, epoch, deps, author, key.public, created_ms, target, name, members
    )
    if kind is OpKind.CREATE and (len(salt) != ID_LEN or group_id != group_id_for(author, salt)):
        raise ValueError("a create op's group id is group_id_for(author, salt)")
    deps = tuple(sorted(deps))
    body = _body(
        kind, group_id, epoch, deps, author, key.public, created_ms, target, name, members, salt
    )
    sig = key.sign(OP_DOMAIN + body)
    return Op(
        group_id, kind, epoch, deps, author, key.public, created_ms, target, name, members,
        salt if kind is OpKind.CREATE else b"", sig, sha256(body), body + sig,
    )  # fmt: skip


def _check_fields(
    kind: OpKind,
    group_id: bytes,
    epoch: int,
    deps: tuple[bytes, ...],
    author: bytes,
    installation: bytes,
    created_ms: int,
    target: bytes,
    name: str,
    members: tuple[bytes, ...],
) -> None:
    if len(group_id) != ID_LEN or len(author) != ID_LEN or len(installation) != ID_LEN:
        raise ValueError("ids must be 32 bytes")
    if not 0 <= epoch < 2**32 or not 0 <= created_ms < 2**64:
        raise ValueError("epoch / created_ms out of range")
    if len(deps) > MAX_DEPS or any(len(d) != ID_LEN for d in deps):
        raise ValueError("bad deps")
    if kind in _TARGETED and len(target) != ID_LEN:
        raise ValueError("target identity must be 32 bytes")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError("name too long")
    if kind is OpKind.CREATE:
        if len(members) > MAX_MEMBERS or any(len(m) != ID_LEN for m in members):
            raise ValueError("bad member list")
        if len(set(members)) != len(members):
            raise ValueError("duplicate members")


def decode_op(data: bytes) -> Op:
    """Parse op bytes (no signature check). Raises MalformedMessage."""
    r = Reader(data)
    if r.u8() != KIND_GROUP_OP:
        raise MalformedMessage("not a group op")
    try:
        kind = OpKind(r.u8())
    except ValueError:
        raise MalformedMessage("unknown op kind") from None
    group_id = r.take(ID_LEN)
    epoch = r.u32()
    deps = tuple(r.take(ID_LEN) for _ in range(r.u8()))
    if list(deps) != sorted(set(deps)):
        raise MalformedMessage("deps not sorted / unique")
    author = r.take(ID_LEN)
    installation = r.take(ID_LEN)
    created_ms = r.u64()
    target, name, salt = b"", "", b""
    members: tuple[bytes, ...] = ()
    if kind in (OpKind.CREATE, OpKind.RENAME):
        raw_name = r.blob()
        if len(raw_name) > MAX_NAME_BYTES:
            raise MalformedMessage("name too long")
        try:
            name = raw_name.decode()
        except UnicodeDecodeError:
            raise MalformedMessage("name is not UTF-8") from None
    if kind is OpKind.CREATE:
        count = r.u16()
        if count > MAX_MEMBERS:
            raise MalformedMessage(f"a group is created with at most {MAX_MEMBERS} members")
        members = tuple(r.take(ID_LEN) for _ in range(count))
        if len(set(members)) != len(members):
            raise MalformedMessage("duplicate members")
        salt = r.take(ID_LEN)
    elif kind in _TARGETED:
        target = r.take(ID_LEN)
    body_end = r.pos
    signature = r.take(SIG_LEN)
    r.end()
    body = r.data[:body_end]
    return Op(
        group_id, kind, epoch, deps, author, installation, created_ms, target, name, members,
        salt, signature, sha256(body), r.data,
    )  # fmt: skip


def require_signed(op: Op) -> None:
    if not op.signature_valid():
        raise GroupError("op signature does not verify")
