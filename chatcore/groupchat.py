"""Group chats on top of the 1:1 engine: membership and sender keys from :mod:`chatcore.group`.

Transport of group data, and why:

* **Membership ops, welcomes and sender-key distributions** travel over the pairwise 1:1
  sessions, bundled per installation in one ``GROUP_CONTROL`` payload. Ops name every member
  identity in clear (inside the op), so they must never go to the shared group topic.
  Membership changes are rare, so O(members) pairwise frames per change is affordable.
* **Group messages** are encrypted once with the sender's sender key and published once to
  the group topic ``lc.v1.group.<sha256("logos-chat/group/v1" || group id)[:16]>``,
  whatever the group size. The frame's 8-byte tag changes every epoch.

Everything a call produces is written in one store transaction (group state, ratchet states,
outbox frames, stored messages). No network I/O: frames go to the outbox and are returned.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from chatcore.content import check_str
from chatcore.engine import Engine, OutFrame, Received, SendResult, causal_history
from chatcore.errors import (
    ChatCoreError,
    GroupError,
    HandshakeError,
    MalformedMessage,
    ProtocolError,
    StoreUnavailable,
    UntrustedIdentity,
)
from chatcore.group import GroupState, InstallationKey, Publish, SendTo, group_tag
from chatcore.group.consts import (
    ID_LEN,
    KIND_DISTRIBUTION,
    KIND_GROUP_MESSAGE,
    KIND_GROUP_OP,
    KIND_WANT,
    KIND_WELCOME,
    MAX_NAME_BYTES,
    MAX_OPS,
)
from chatcore.group.ops import Op, OpKind, decode_op
from chatcore.group.roster import causal_past, counting_removals, taken_out
from chatcore.group.sender_keys import SenderKeyDistribution, parse_frame
from chatcore.group.state import vouched_by
from chatcore.keys import PeerKeys
from chatcore.payload import (
    MAX_BODY,
    RECENT_HISTORY,
    ContentType,
    Payload,
    decode_varint,
    encode_varint,
)
from chatcore.store import Store, StoredMessage
from chatcore.transport.base import group_subject

#: what an id, an id prefix or an address looks like: never taken as a name
ID_LIKE = re.compile(r"0[xX][0-9a-fA-F]*")
log = logging.getLogger("chatcore.groupchat")

GROUP_DOMAIN = b"logos-chat/group/v1"
MAX_CONTROL_ITEMS = 64
#: A part of a welcome too large for one pairwise payload (a long op log: more than about
#: 270 ops), pairwise only: ``0x18 | group id (32) | SHA-256 of the welcome (32) |
#: index (varint) | count (varint) | bytes``. The receiver keeps the parts (with other
#: pending items, bounded per sender) until it has them all, then takes the welcome.
KIND_WELCOME_PART = 0x18
#: bytes of welcome in one part, and parts in one welcome (MAX_OPS ops fit)
_PART_BYTES = 60 * 1024
MAX_WELCOME_PARTS = 64
MAX_WELCOME_BYTES = _PART_BYTES * MAX_WELCOME_PARTS
#: bytes of items in one control payload (the payload body holds MAX_BODY)
_BODY_BUDGET = MAX_BODY - 64
MAX_PENDING_ITEMS = 4096
#: group frames that could not be decrypted yet (sender key or op not here): kept per group,
#: retried after every control item for that group, dropped after this many failed retries
#: or this age (a frame from a non-member or a forgery never becomes decryptable)
MAX_HELD_FRAMES = 512
MAX_HELD_TRIES = 1024  # one retry per control frame for the group: 200+ at a big join
MAX_HELD_AGE_MS = 7 * 86_400_000
#: store secret name prefix (+ group id in hex): a welcome this installation is to join as
#: itself, kept (in the transaction that took it) until joined: a linked device's handover
#: brings one per group, an installation rotation makes them. A process killed before the
#: joins left the device out of those groups (see :meth:`GroupChat.join_kept_welcomes`).
KEPT_WELCOME = "kept_welcome:"
#: admins a member holding itself out asks (``GroupChat._ask_if_back``), senior first
_ASKED_ADMINS = 3
#: meta key prefix (+ group id + identity, hex): the size of our op log when we last
#: answered that identity, out of the group, with the ops that took it out
_ANSWERED_REMOVED = "gans:"
#: bytes of ops at most in such an answer
MAX_REMOVED_ANSWER = 64 * 1024
#: GroupError texts that mean "not yet" (the frame may decrypt once control items arrive;
#: the sender of the third, out of our view by an add that turned void with no op taking it
#: out, is back in it if an op that comes later makes what voided the add count for nothing)
_NOT_YET = (
    "unknown sender key",
    "stale or unknown group epoch",
    "someone whose add to the group turned void",
)


class NotYet(Exception):
    """A group frame that needs control items still to be read (``receive(hold=False)``).

    Not a ChatCoreError: nothing is wrong with the frame, and it is not consumed."""


#: identity -> its active installations' public keys (verified, from the chain)
Devices = Callable[[bytes], Sequence[PeerKeys]]


def keep_welcome(store: Store, welcome: bytes) -> None:
    """Keep a welcome to join as this installation (in the caller's transaction)."""
    store.put_secret(KEPT_WELCOME + item_group_id(welcome).hex(), welcome)


_READING_TODO = "group_reading_todo"  # set by store schema 13 in a home that had groups


def _reading_until(state: GroupState) -> int | None:
    """Until when (our clock, ms) a group's topic is read: for good (``None``) while we
    are in the group or hold ourselves out of it (it may prove that we are in); out of it,
    while we keep chains of it retired (what was sent before we went out still reads, and
    the op that took us out may yet be found void); then no longer (0)."""
    if state.is_member or state.held_out:
        return None
    return max((r.until_ms for r in state.retired), default=0)


def group_topic(group_id: bytes) -> str:
    return group_subject(hashlib.sha256(GROUP_DOMAIN + group_id).digest()[:16])


@lru_cache(maxsize=16)
def _epoch_tags(group_id: bytes) -> frozenset[bytes]:
    """The routing tags of every epoch a group's messages can have (a message epoch counts
    ops, at most MAX_OPS): ~4,000 hashes, once per group while cached."""
    return frozenset(group_tag(group_id, e) for e in range(MAX_OPS + 1))


def _own_echo(state: GroupState, frame: bytes) -> bool:
    """Is this group frame one of ours (our current sender key), echoed back by the topic?"""
    if state.own is None:
        return False
    try:
        return parse_frame(frame).key_id == state.own.key_id
    except ChatCoreError:
        return False


def encode_control(items: Sequence[bytes]) -> bytes:
    return encode_varint(len(items)) + b"".join(encode_varint(len(i)) + i for i in items)


def pack_control(items: Sequence[bytes]) -> list[bytes]:
    """Control payload bodies for ``items``, in order: at most MAX_CONTROL_ITEMS items and
    _BODY_BUDGET bytes each; a welcome larger than that goes as parts (KIND_WELCOME_PART).
    Any other item that could never fit is dropped (no such item is ever accepted)."""
    bodies: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for item in items:
        if len(item) + 8 > _BODY_BUDGET:
            if item[0] != KIND_WELCOME or len(item) > MAX_WELCOME_BYTES:
                log.warning("a group control item of %d bytes never fits a payload", len(item))
                continue
            parts = welcome_parts(item)
        else:
            parts = [item]
        for part in parts:
            if batch and (size + len(part) + 8 > _BODY_BUDGET or len(batch) == MAX_CONTROL_ITEMS):
                bodies.append(encode_control(batch))
                batch, size = [], 0
            batch.append(part)
            size += len(part) + 8
    if batch:
        bodies.append(encode_control(batch))
    return bodies


def welcome_parts(welcome: bytes) -> list[bytes]:
    """A welcome cut into KIND_WELCOME_PART items. ValueError if it needs too many."""
    gid = welcome[1 : 1 + ID_LEN]
    digest = hashlib.sha256(welcome).digest()
    chunks = [welcome[i : i + _PART_BYTES] for i in range(0, len(welcome), _PART_BYTES)]
    if len(chunks) > MAX_WELCOME_PARTS:
        raise ValueError(f"a welcome of {len(welcome)} bytes is too large to send")
    head = bytes((KIND_WELCOME_PART,)) + gid + digest
    n = encode_varint(len(chunks))
    return [head + encode_varint(i) + n + c for i, c in enumerate(chunks)]


def _parse_part(item: bytes) -> tuple[bytes, int, int, bytes]:
    """(welcome digest, index, count, bytes) of a welcome part; MalformedMessage if bad."""
    if len(item) < 1 + 2 * ID_LEN + 2 or item[0] != KIND_WELCOME_PART:
        raise MalformedMessage("not a welcome part")
    digest = item[1 + ID_LEN : 1 + 2 * ID_LEN]
    index, pos = decode_varint(item, 1 + 2 * ID_LEN)
    count, pos = decode_varint(item, pos)
    if not 2 <= count <= MAX_WELCOME_PARTS or index >= count or pos >= len(item):
        raise MalformedMessage("bad welcome part numbering")
    return digest, index, count, item[pos:]


def decode_control(body: bytes) -> list[bytes]:
    n, pos = decode_varint(body, 0)
    if n > MAX_CONTROL_ITEMS:
        raise MalformedMessage("too many items in a group control message")
    items = []
    for _ in range(n):
        ln, pos = decode_varint(body, pos)
        if pos + ln > len(body):
            raise MalformedMessage("truncated group control message")
        items.append(body[pos : pos + ln])
        pos += ln
    if pos != len(body):
        raise MalformedMessage("trailing bytes in a group control message")
    return items


def item_group_id(item: bytes) -> bytes:
    """The group id inside an op (kind, op kind, group id, ...), distribution or welcome."""
    if not item:
        raise MalformedMessage("empty group control item")
    start = {
        KIND_GROUP_OP: 2, KIND_DISTRIBUTION: 1, KIND_WELCOME: 1, KIND_WANT: 1,
        KIND_WELCOME_PART: 1,
    }.get(item[0])  # fmt: skip
    if start is None or len(item) < start + ID_LEN:
        raise MalformedMessage("unknown group control item")
    return item[start : start + ID_LEN]


def encode_want(group_id: bytes, op_ids: Sequence[bytes]) -> bytes:
    """Ask for ops by id (see ``KIND_WANT``)."""
    if not 1 <= len(op_ids) <= MAX_CONTROL_ITEMS:
        raise ValueError("a want names 1 to 64 ops")
    return bytes((KIND_WANT,)) + group_id + b"".join(op_ids)


def decode_want(item: bytes) -> list[bytes]:
    body = item[1 + ID_LEN :]
    n, rest = divmod(len(body), ID_LEN)
    if item[0] != KIND_WANT or rest or not 1 <= n <= MAX_CONTROL_ITEMS:
        raise MalformedMessage("bad op request")
    return [body[i * ID_LEN : (i + 1) * ID_LEN] for i in range(n)]


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group_id: bytes
    name: str
    epoch: int
    members: frozenset[bytes]
    admins: frozenset[bytes]
    is_member: bool
    subject: str = field(repr=False)
    #: we hold ourselves out of a group whose log has us in (``GroupState.held_out``): we
    #: are among ``members`` but not ``is_member``, until the admins' answer or a member's
    #: change says which
    held_out: bool = False


#: characters a group name we give may not hold besides control characters (category Cc):
#: line and paragraph separators, and the bidi embeddings, overrides and isolates that
#: reorder what is shown around them (a name is shown on one line, among other text)
_NAME_UNSAFE = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


#: meta key prefixes (+ group id + installation / member identity, hex): a device, and a
#: member, heard in the group (``GroupChat._new_device_notice``)
_DEVICE_SEEN = "gdev:"
_MEMBER_SEEN = "gmem:"


def check_group_name(name: str) -> str:
    """``name`` if a group may be given it (created or renamed): text, not blank, at most
    MAX_NAME_BYTES of UTF-8, no control characters, not like an id or address. ValueError
    (TypeError for a non-string) otherwise."""
    check_str("a group name", name)  # (a lone surrogate: not valid text)
    if not name.strip():
        raise ValueError("a group needs a name")
    if ID_LIKE.fullmatch(name.strip()):
        raise ValueError("a group name cannot look like an id or address (0x and hex digits)")
    for ch in name:
        if ch in _NAME_UNSAFE or unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValueError(f"a group name cannot hold control characters (U+{ord(ch):04X})")
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ValueError(f"group name too long: {size} bytes, at most {MAX_NAME_BYTES}")
    return name


def _not_a_member(state: GroupState) -> GroupError:
    """Why we cannot send or change the group: not a member — or held out, though the
    member list shows us (``GroupState.held_out``), which a bare 'not a member' belied."""
    if state.held_out:
        return GroupError(
            "you are held out of this group for now: an admin removed you and only that "
            "admin's own leave undoes it; you are back once a member builds on that leave "
            "(the other admins are asked); you can leave the group"
        )
    return GroupError("you are not a member of this group")


def _check_change(state: GroupState, me: bytes, how: str, target: bytes | None) -> None:
    """Refusals the op rules do not give in our words (the rest come from
    ``chatcore.group.roster.refusal`` when the op is made)."""
    if not state.is_member and not (how == "leave" and state.held_out):
        # (held out, we may leave: see GroupState.leave)
        raise _not_a_member(state)
    if how == "remove" and target == me and me in state.admins():
        raise GroupError("to remove yourself, leave the group")


class GroupChat:
    """Group operations of one installation; shares the engine's store, keys and sessions."""

    def __init__(
        self,
        engine: Engine,
        devices: Devices,
        anti_entropy: bool = True,
        past_devices: Callable[[bytes], Sequence[bytes]] | None = None,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.devices = devices
        #: every installation an identity ever had (revoked too): the signers of the op log
        #: in a welcome (a device lost since may have made them). None: active ones only.
        self.past_devices = past_devices
        #: re-offer our op log to every member when we (an admin) learn ops from someone else
        self.anti_entropy = anti_entropy
        #: groups that control items were about since the reader last cleared it (a reader
        #: of the inbox then reads those groups' topics on: keys and ops arrived for them)
        self.touched: set[bytes] = set()
        #: ask the sender of an op for the dependencies we lack (KIND_WANT)
        self.pull = True
        self._key = InstallationKey.from_seed(engine.own.keys.signing_key.private_bytes_raw())
        self._parsed: dict[bytes, tuple[bytes, GroupState]] = {}
        #: how a notice names a member ("you" for us; Client uses verified names)
        self.display: Callable[[bytes], str] = lambda i: (
            "you" if i == engine.identity_id else "0x" + i.hex()[:8] + "…"
        )
        #: identities whose invitations we ignore (set by chatcore.features: blocked or
        #: declined); an invitation from anyone else to a group they are in is accepted
        self.refuse_invites_from: Callable[[bytes], bool] = lambda identity: False
        #: why an invitation by these identities (who put us in the group) is not taken,
        #: or None (set by chatcore.features: unanswered invitations by strangers are bounded)
        self.invitation_refusal: Callable[[set[bytes]], str | None] = lambda inviters: None
        #: called with a group's id when members left it (set by chatcore.features: the
        #: status of our messages that waited on them moves on)
        self.members_left: Callable[[bytes], None] = lambda group_id: None

    # --- helpers ------------------------------------------------------------------------------
    def _ids(self, identity: bytes) -> list[bytes]:
        if identity == self.engine.identity_id:
            own = [k.installation_id for k in self.devices(identity)]
            if self.engine.installation_id not in own:
                own.append(self.engine.installation_id)
            return own
        return [k.installation_id for k in self.devices(identity)]

    def _past_ids(self, identity: bytes) -> list[bytes]:
        assert self.past_devices is not None
        return [*self._ids(identity), *self.past_devices(identity)]

    def _signers(self) -> Callable[[bytes], Sequence[bytes]] | None:
        """Who may have signed ops of the past (revoked devices too), if we know."""
        return None if self.past_devices is None else self._past_ids

    def _owner_of(self, inst: bytes, distribution: bytes) -> bytes | None:
        """The identity a kept distribution names, if the directory confirms ``inst`` is one
        of its installations (a kept item remembers only the sending installation)."""
        try:
            ident = SenderKeyDistribution.from_bytes(distribution).identity
        except ChatCoreError:
            return None
        return ident if inst in self._ids(ident) else None

    def load(self, group_id: bytes) -> GroupState | None:
        """The group's state as stored. Parsing a large state is costly, so the last parsed
        value is reused while the stored bytes are the same (states are immutable; a rolled
        back transaction simply shows other bytes)."""
        raw = self.store.group_state(group_id)
        if raw is None:
            return None
        hit = self._parsed.get(group_id)
        if hit is not None and hit[0] == raw:
            return hit[1]
        state = GroupState.from_bytes(raw)
        self._parsed[group_id] = (raw, state)
        return state

    def _save(self, state: GroupState) -> None:
        now = self.engine.clock_ms()
        before = self._parsed.get(state.group_id)
        raw = state.to_bytes()
        self.store.save_group(state.group_id, group_topic(state.group_id), raw, now)
        # (saving the state cleared its reading row: store schema 14) a group we are in,
        # the one saved after every message, writes nothing more
        until = _reading_until(state)
        if until is not None:
            self.store.set_group_reading(state.group_id, until)
        self._parsed[state.group_id] = (raw, state)
        self.store.ensure_conversation(state.group_id, "group", None, state.name, now)
        self.store.set_conversation_title(state.group_id, state.name)
        if not state.is_member:  # left or removed: no longer an invitation waiting on us
            self.store.forget_invitations(state.group_id)
        elif before is not None and before[1].members() - state.members():
            self.members_left(state.group_id)
        self._forget_devices_gone(None if before is None else before[1], state)

    def _forget_devices_gone(self, before: GroupState | None, state: GroupState) -> None:
        """Drop what ``_new_device_notice`` remembers of devices and members that are gone
        from the group: every one when we are out of it (left or removed), else the
        installations no longer in it (revoked, or their member left or was removed) and the
        members no longer in it. (Kept, the meta rows grew with every device rotated or
        revoked and every member gone, for good.) Someone back in the group later is judged
        by the history here instead: no notice for a device they wrote from before."""
        gid = state.group_id
        if not state.is_member:
            if before is None or before.is_member:
                for prefix in (_DEVICE_SEEN, _MEMBER_SEEN):
                    self.store.delete_meta_with_prefix(prefix + gid.hex())
            return
        if before is None or before.devices is state.devices or before.devices == state.devices:
            return
        gone = frozenset().union(*before.devices.values()) - frozenset().union(
            *state.devices.values()
        )
        for inst in gone:
            self.store.delete_meta(_DEVICE_SEEN + (gid + inst).hex())
        for member in before.members() - state.members():
            self.store.delete_meta(_MEMBER_SEEN + (gid + member).hex())

    def info(self, group_id: bytes) -> GroupInfo:
        st = self.load(group_id)
        if st is None:
            raise GroupError("unknown group")
        return GroupInfo(
            st.group_id,
            st.name,
            st.epoch,
            st.members(),
            st.admins(),
            st.is_member,
            group_topic(st.group_id),
            st.held_out,
        )

    def subjects(self) -> list[str]:
        """The group topics to read: those of the groups we are in, hold ourselves out of,
        or went out of less than ``RETIRED_CHAIN_MS`` ago (``_reading_until``). The topic of a
        group we are out of holds nothing we can read: a removed or left member downloaded
        it for good. Its cursor stays where we stopped, so if we are taken back (that comes
        pairwise), what was posted meanwhile is read from there."""
        if self.store.get_meta(_READING_TODO) is not None:
            with self.store.transaction():  # a home from before store schema 13: sort once
                for gid in self.store.group_ids():
                    state = self.load(gid)
                    if state is not None:
                        self.store.set_group_reading(gid, _reading_until(state))
                self.store.delete_meta(_READING_TODO)
        return self.store.group_subjects(self.engine.clock_ms())

    def _keys_for(self, identity: bytes, installation: bytes) -> PeerKeys | None:
        for k in self.devices(identity):
            if k.installation_id == installation:
                return k
        return None

    def _dispatch(self, state: GroupState, before: GroupState | None, out: list) -> list[OutFrame]:  # type: ignore[type-arg]
        """Turn the group core's outgoing list into pairwise frames, bundled per installation."""
        owner: dict[bytes, bytes] = {}
        for st in (before, state):
            if st is None:
                continue
            for ident, insts in st.devices.items():
                for i in insts:
                    owner.setdefault(i, ident)
        if before is not None and before.held_out:
            # our devices, held out too, are in no state's list (a held-out leave: theirs too)
            me = self.engine.identity_id
            for i in self._ids(me):
                owner.setdefault(i, me)
        everyone = [i for i in owner if i != self.engine.installation_id]
        queue: dict[bytes, list[bytes]] = {}
        for inst in self._welcome_new_devices(state, before):
            queue.setdefault(inst, []).append(state.welcome())
        for o in out:
            if isinstance(o, Publish):
                # ops name members: never on the shared topic; pairwise to every member device
                for i in everyone:
                    queue.setdefault(i, []).append(o.payload)
            elif isinstance(o, SendTo):
                if o.installation != self.engine.installation_id:
                    queue.setdefault(o.installation, []).append(o.payload)
        frames: list[OutFrame] = []
        for inst, items in sorted(queue.items()):  # deterministic order (the simulator replays)
            who = owner.get(inst)
            if who is None:
                log.warning("no identity for installation %s", inst.hex()[:12])
                continue
            keys = self._keys_for(who, inst)
            if keys is None:
                log.warning("installation %s not resolvable; skipped", inst.hex()[:12])
                continue
            for body in pack_control(items):
                frames += self._control(who, keys, body)
        return frames

    def _control(self, who: bytes, keys: PeerKeys, body: bytes) -> list[OutFrame]:
        """A control payload for one member installation; none if its published keys are
        unusable (logged): one member's bad device must not stop a group change, nor the
        device refresh every member's sync runs, for everyone else."""
        try:
            return [self.engine.send_control(who, keys, body)]
        except HandshakeError as exc:
            log.warning("device %s of a member skipped: %s", keys.installation_id.hex()[:12], exc)
            return []

    def _welcome_new_devices(self, state: GroupState, before: GroupState | None) -> list[bytes]:
        """New installations of members who were already members: they need the group's
        state (a welcome), not only our sender key. A linked device gets it from its own
        first device, but a device registered after recovery has no other device left. So
        the admins send it, or every member if the member with the new device is the only
        admin. The welcome merges into any state the device already has."""
        if before is None or not state.is_member or not before.is_member:
            return []
        me = self.engine.identity_id
        admins = state.admins()
        out: list[bytes] = []
        for ident in sorted(before.roster.members & state.roster.members):
            if ident == me:
                continue
            if me not in (admins - {ident} or state.roster.members - {ident}):
                continue
            known = set(before.devices.get(ident, ()))
            out += [i for i in state.devices.get(ident, ()) if i not in known]
        return sorted(out)

    def _notice(
        self,
        group_id: bytes,
        text: str,
        author: bytes,
        author_inst: bytes,
        at: int | None = None,
        op_id: bytes | None = None,
    ) -> Received | None:
        """Record a membership event in the group's history (``at``: when its author made
        it, by the author's clock; now if unknown). The notice of an op (``op_id``) has an id
        made of the op and the text, the same on each of our devices, so that the copy our
        approving device forwards to a new one (stored after the handover's cut) is not
        shown twice: None if it is here already."""
        now = self.engine.clock_ms()
        when = now if at is None or not 0 <= at <= now else at
        if op_id is None:
            mid = hashlib.sha256(group_id + text.encode() + now.to_bytes(8, "big")).digest()[:8]
        else:
            mid = hashlib.sha256(b"op notice" + group_id + op_id + text.encode()).digest()[:8]
            if self.store.message(group_id, mid) is not None:
                return None
        conv = self.store.conversation(group_id)
        lamport = (conv.lamport if conv else 0) + 1
        body = text.encode()
        self.store.add_message(
            StoredMessage(
                group_id, mid, author, author_inst, lamport, when, now,
                int(ContentType.GROUP_CONTROL), body, author == self.engine.identity_id,
                "system", self.store.next_seq(),
            )
        )  # fmt: skip
        return Received(
            group_id, mid, author, author_inst, ContentType.GROUP_CONTROL, body, lamport,
            when, now, author == self.engine.identity_id,
        )  # fmt: skip

    def _joined_notice(self, gid: bytes, state: GroupState) -> Received | None:
        """How we came into a group, said by whoever did it, when they did it: the latest op
        that added us (or made the group with us in it). Our own identity's op (a group we
        made, or were added to, from another device) says that this device joined."""
        me = self.engine.identity_id
        how = max(
            (
                o for o in state.ops.values()
                if (o.kind is OpKind.ADD and o.target == me)
                or (o.kind is OpKind.CREATE and me in o.members)
            ),
            key=lambda o: o.sort_key,
            default=None,
        )  # fmt: skip
        if how is None or how.author == me:
            inst = self.engine.installation_id if how is None else how.installation
            return self._notice(gid, f"joined “{state.name}” on this device", me, inst)
        return self._notice(
            gid, f"you were added to “{state.name}”", how.author, how.installation,
            how.created_ms, how.op_id,
        )  # fmt: skip

    # --- membership changes we make -----------------------------------------------------------
    def create(self, name: str, members: Sequence[bytes]) -> tuple[bytes, list[OutFrame]]:
        check_group_name(name)
        if self.engine.identity_id in members:
            raise ValueError("you are in the group you create: list the others only")
        with self.store.transaction():
            state, out = GroupState.create(
                self.engine.rng(ID_LEN), name, self.engine.identity_id, self._key, members,
                self._ids, self.engine.rng, self.engine.clock_ms(),
            )  # fmt: skip
            gid = state.group_id
            self._save(state)
            frames = self._dispatch(state, None, out)
            self._notice(gid, f"created the group “{name}”", self.engine.identity_id,
                         self.engine.installation_id)  # fmt: skip
        return gid, frames

    def _change(
        self, group_id: bytes, how: str, target: bytes | None = None, name: str = ""
    ) -> list[OutFrame]:
        with self.store.transaction():
            state = self.load(group_id)
            if state is None:
                raise GroupError("unknown group")
            _check_change(state, self.engine.identity_id, how, target)
            now = self.engine.clock_ms()
            rng = self.engine.rng
            if how == "leave":
                new, out = state.leave(self._key, self._ids, rng, now)
            elif how == "rename":
                new, out = state.rename(name, self._key, self._ids, rng, now)
            else:
                assert target is not None
                fn = {
                    "add": state.add_member,
                    "remove": state.remove_member,
                    "promote": state.promote,
                }[how]
                new, out = fn(target, self._key, self._ids, rng, now)
            self._save(new)
            # our own change in our own history too ("added bob"), which also moves our
            # clock past it: what we write next sorts after the change everywhere
            for op in (new.ops[i] for i in new.ops.keys() - state.ops.keys()):
                text = _describe(
                    op, self.engine.identity_id, state.members(), state.admins(), new,
                    self.display,
                )  # fmt: skip
                if text:
                    self._notice(
                        group_id, text, op.author, op.installation, op.created_ms, op.op_id
                    )
            return self._dispatch(new, state, out)

    def add(self, group_id: bytes, identity: bytes) -> list[OutFrame]:
        state = self.load(group_id)
        if state is not None and len(state.welcome()) > MAX_WELCOME_BYTES:
            raise GroupError(
                f"this group's log is too large to welcome anyone ({len(state.ops)} ops): "
                "create a new group"
            )
        return self._change(group_id, "add", identity)

    def remove(self, group_id: bytes, identity: bytes) -> list[OutFrame]:
        return self._change(group_id, "remove", identity)

    def promote(self, group_id: bytes, identity: bytes) -> list[OutFrame]:
        return self._change(group_id, "promote", identity)

    def leave(self, group_id: bytes) -> list[OutFrame]:
        return self._change(group_id, "leave")

    def rename(self, group_id: bytes, name: str) -> list[OutFrame]:
        """Give the group a new name (admins only, as the op rules say)."""
        return self._change(group_id, "rename", name=check_group_name(name))

    def join_kept_welcomes(self) -> list[OutFrame]:
        """Join the groups of the kept welcomes (:func:`keep_welcome`) as this installation;
        returns the frames (our sender key, in the outbox). Each group in one transaction
        with forgetting its welcome, so a process killed midway joins each group once: a
        state of ours there already (a member's welcome came first) takes the welcome's ops
        as a merge; one of another installation of ours (a rotation) is replaced by a join
        of the welcome's ops and its own (what it learnt after the welcome was kept, our
        removal say, is not undone). A welcome that does not verify (or no longer makes us a
        member) is dropped; one that fails otherwise is kept for the next sync, and the
        others are joined (both logged)."""
        frames: list[OutFrame] = []
        me, inst, rng = self.engine.identity_id, self.engine.installation_id, self.engine.rng
        for name, welcome in self.store.secrets_with_prefix(KEPT_WELCOME):
            try:
                with self.store.transaction():
                    gid = item_group_id(welcome)
                    state = self.load(gid)
                    if state is not None and state.installation == inst:
                        new, out, _rej = state.apply_ops(
                            _welcome_ops(welcome), self._ids, rng, self.engine.clock_ms(),
                            self._signers(),
                        )  # fmt: skip
                        before: GroupState | None = state
                    else:  # our old installation may have signed the ops
                        if state is not None:
                            welcome = _with_ops(welcome, state)
                        new, out = GroupState.join(
                            welcome, me, inst, self._ids, rng, signers=self._signers()
                        )
                        before = None
                    self._save(new)
                    frames += self._dispatch(new, before, out)
                    frames += self._replay_pending(gid)[1]
                    self.store.delete_secret(name)
            except StoreUnavailable:
                raise
            except (ProtocolError, MalformedMessage) as exc:  # the welcome itself
                log.warning("group not joined: %s", exc)
                with self.store.transaction():
                    self.store.delete_secret(name)
            except Exception as exc:  # e.g. the chain: kept for the next sync
                log.warning("group not joined yet: %s", exc)
        return frames

    def tell_linked_device(
        self, device: PeerKeys, gids: Iterable[bytes]
    ) -> tuple[set[bytes], list[OutFrame]]:
        """A device of ours that joined ``gids`` from a handover's welcomes (see
        ``chatcore.identity.forward_linked_history``): for each group our identity is out
        of here (removed, left, its add voided), send it our op log of the group, so that
        it applies the signed ops and is out too (members did not send it the change: they
        did not count it yet). Returns the groups done with (told, or gone here: their state
        deleted) and the frames (in the outbox). A group we are still in is not done: the
        members count the device now, so a later change reaches it from them."""
        me = self.engine.identity_id
        done: set[bytes] = set()
        frames: list[OutFrame] = []
        for gid in gids:
            state = self.load(gid)
            if state is not None and me in state.members():
                continue
            if state is not None:
                for body in pack_control(state.op_log()):
                    frames += self._control(me, device, body)
            done.add(gid)
        return done, frames

    def refresh_devices(self, group_id: bytes) -> list[OutFrame]:
        """Re-read member devices from the chain (revoked device -> key rotation)."""
        with self.store.transaction():
            state = self.load(group_id)
            if state is None or not state.is_member:
                return []
            new, out = state.sync_devices(self._ids, self.engine.rng)
            if not out and new.to_bytes() == state.to_bytes():
                return []
            self._save(new)
            return self._dispatch(new, state, out)

    # --- messages -----------------------------------------------------------------------------
    def send(
        self,
        group_id: bytes,
        content_type: ContentType,
        body: bytes,
        acks: Sequence[bytes] = (),
        read: bool = False,
    ) -> SendResult:
        """One message to the group topic (``acks``/``read`` as in :meth:`Engine.send`)."""
        now = self.engine.clock_ms()
        with self.store.transaction():
            state = self.load(group_id)
            if state is None:
                raise GroupError("unknown group")
            if not state.is_member:
                raise _not_a_member(state)
            lamport = self.store.next_lamport(group_id, now)
            history = causal_history(self.store.recent_short_ids(group_id, RECENT_HISTORY), acks)
            payload = Payload(content_type, lamport, now, body, history, read=read)
            mid = payload.message_id(self.engine.installation_id, group_id)
            new, frame = state.encrypt(payload.encode())
            self._save(new)
            subject = group_topic(group_id)
            from chatcore.engine import frame_msg_id

            msg_id = frame_msg_id(frame)
            oid = self.store.add_outbox(subject, frame, msg_id, now, group_id, mid)
            self.store.add_message(
                StoredMessage(
                    group_id, mid, self.engine.identity_id, self.engine.installation_id,
                    lamport, now, now, int(content_type), body, True, "sending",
                    self.store.next_seq(),
                )
            )  # fmt: skip
        return SendResult(group_id, mid, lamport, now, (OutFrame(oid, subject, frame, msg_id),))

    def receive(
        self, subject: str, frame: bytes, cursor: tuple[str, int] | None, hold: bool = True
    ) -> Received | None:
        """Decrypt and store one frame from a group topic.

        ``hold=False``: a frame that needs control items not here yet (a sender key, the op
        of a newer epoch) raises :class:`NotYet` and is left unread (no cursor move, not
        held), so that a reader can first take its inbox and then read on from there."""
        try:
            return self._receive(subject, frame, cursor, hold)
        except (StoreUnavailable, NotYet):
            raise  # nothing wrong with the frame: it is read again, not skipped
        except GroupError as exc:
            if not hold and any(t in str(exc) for t in _NOT_YET):
                raise NotYet(str(exc)) from None
            self._consumed(subject, frame, cursor, exc)
            raise
        except Exception as exc:
            self._consumed(subject, frame, cursor, exc)
            raise

    def _consumed(
        self, subject: str, frame: bytes, cursor: tuple[str, int] | None, exc: Exception
    ) -> None:
        """A frame that failed is read (cursor moved on), and held if it may decrypt later."""
        with self.store.transaction():
            if cursor is not None:
                self.store.set_cursor(*cursor)
            if isinstance(exc, GroupError):
                self._hold(subject, frame, exc)

    def _hold(self, subject: str, frame: bytes, exc: GroupError) -> None:
        """Keep a frame that may decrypt once control items for its group arrive."""
        if not any(t in str(exc) for t in _NOT_YET):
            return
        gid = self.store.group_by_subject(subject)
        state = self.load(gid) if gid is not None else None
        if gid is None or state is None:
            return
        # a member; one out for a while (its exit may be found void); one holding itself out
        # (the keys sent to it meanwhile are kept, and read once it is back: with or without
        # the chains it went out with, which are gone after RETIRED_CHAIN_MS, or never were
        # for a device that joined held out)
        if not (state.is_member or state.out_for_a_while or state.held_out):
            return
        if _own_echo(state, frame):
            return  # our own message echoed by the topic
        self.store.add_group_held(gid, frame, self.engine.clock_ms(), MAX_HELD_FRAMES)

    def retry_held(self, group_id: bytes) -> list[Received]:
        """Retry the held frames of a group (after control items for it were applied).

        Returns the messages that decrypted now. A frame that fails for good (duplicate,
        forged, damaged) or too often or too long is forgotten."""
        held = self.store.group_held(group_id)
        if not held:
            return []
        subject = group_topic(group_id)
        now = self.engine.clock_ms()
        out: list[Received] = []
        with self.store.transaction():
            for hid, frame, created, attempts in held:
                try:
                    r = self._receive(subject, frame, None)
                except GroupError as exc:
                    if (
                        any(t in str(exc) for t in _NOT_YET)
                        and attempts + 1 < MAX_HELD_TRIES
                        and now - created < MAX_HELD_AGE_MS
                    ):
                        self.store.group_held_tried(hid)
                        continue
                    self.store.delete_group_held(hid)
                    continue
                except ChatCoreError:  # duplicate, forged, damaged: never
                    self.store.delete_group_held(hid)
                    continue
                self.store.delete_group_held(hid)
                if r is not None:
                    out.append(r)
        return out

    def _receive(
        self, subject: str, frame: bytes, cursor: tuple[str, int] | None, hold: bool = True
    ) -> Received | None:
        # read, decrypt and write the state in one transaction (no I/O in it): another
        # process on this home that sends meanwhile must not have its sender chain put back
        with self.store.transaction():
            return self._receive_locked(subject, frame, cursor, hold)

    def _receive_locked(
        self, subject: str, frame: bytes, cursor: tuple[str, int] | None, hold: bool
    ) -> Received | None:
        if not frame or frame[0] != KIND_GROUP_MESSAGE:
            raise MalformedMessage("not a group message")
        gid = self.store.group_by_subject(subject)
        if gid is None:
            raise GroupError("message for a group we are not in")
        state = self.load(gid)
        assert state is not None
        tag = parse_frame(frame).tag
        if tag not in state.tags and tag not in _epoch_tags(gid):
            # no epoch of this group has that tag: not a member's frame (making the tag needs
            # the group id), so never one to hold or to stop reading at (anyone who can
            # publish to the topic filled the held frames with random bytes)
            raise GroupError("not a frame of this group")
        if not hold and state.tags.get(tag, 0) > state.epoch:
            # tagged with an epoch we are behind: its op is on the way (or in our inbox),
            # and the message was written after that change
            raise NotYet("a message of a later epoch")
        try:
            new, sender, sender_inst, plaintext = state.decrypt(frame, self.engine.clock_ms())
        except GroupError:
            if not _own_echo(state, frame):
                raise
            # our own message echoed by the topic (every subscriber gets every frame): it is
            # stored already; nothing to decrypt (we hold no receiving chain for our own key)
            if cursor is not None:
                self.store.set_cursor(*cursor)
            return None
        if sender_inst not in self._ids(sender):
            raise UntrustedIdentity("group message from a revoked or unknown installation")
        payload = Payload.decode(plaintext)
        if payload.sync_peer is not None or payload.content_type == ContentType.GROUP_CONTROL:
            raise GroupError("control content on the group topic")
        now = self.engine.clock_ms()
        own = sender == self.engine.identity_id
        mid = payload.message_id(sender_inst, gid)
        with self.store.transaction():
            self._save(new)
            if cursor is not None:
                self.store.set_cursor(*cursor)
            if not own:
                self._new_device_notice(new, sender, sender_inst, payload, now)
            hook = self.engine.content_handler
            if hook is not None and (handled := hook(sender, sender_inst, payload, gid)):
                return handled.event  # type: ignore[no-any-return]
            if self.store.has_message(gid, mid):
                return None
            self.store.add_message(
                StoredMessage(
                    gid, mid, sender, sender_inst, payload.lamport,
                    payload.sent_at_ms, now, int(payload.content_type), payload.body, own,
                    "sent" if own else "received", self.store.next_seq(),
                )
            )  # fmt: skip
            if own and self.engine.sent_handler is not None:
                # our other device's, on the network: "sent" here as it is there (one to
                # nobody else is then "delivered", as on the device that wrote it)
                self.engine.sent_handler(gid, mid)
        return Received(
            gid, mid, sender, sender_inst, payload.content_type, payload.body,
            payload.lamport, payload.sent_at_ms, now, own,
        )  # fmt: skip

    def _new_device_notice(
        self, state: GroupState, sender: bytes, inst: bytes, payload: Payload, now: int
    ) -> None:
        """A member writing from an installation new to this group (linked, rotated, or
        after a recovery — which could be someone holding a stolen phrase) gets the same
        notice as in a 1:1 conversation, just before its first message here. Remembered in
        two meta keys while the member is in the group (not ``Store.new_device_of``, which
        asks the messages table twice: one meta read is less, once per group message; the
        table is asked only when a device is heard here for the first time)."""
        gid = state.group_id
        dev_key = _DEVICE_SEEN + (gid + inst).hex()
        if self.store.get_meta(dev_key) is not None:
            return
        mem_key = _MEMBER_SEEN + (gid + sender).hex()
        # not heard here from this device (or forgotten, see _forget_devices_gone: then the
        # history tells whether the member wrote from it, or from others only, before)
        heard = self.store.get_meta(mem_key) is not None or self.store.wrote_here(gid, sender)
        new = heard and not self.store.wrote_here(gid, sender, inst)
        if state.is_member and sender in state.members():  # (forgotten when they are gone)
            self.store.set_meta(dev_key, b"1")
            self.store.set_meta(mem_key, b"1")
        if new:
            self.engine.new_device_notice(
                gid, sender, inst, payload.lamport, payload.sent_at_ms, now
            )

    # --- control items that arrived over a pairwise session ----------------------------------
    def handle_control(
        self, sender: bytes, sender_inst: bytes, body: bytes
    ) -> tuple[list[Received], list[OutFrame]]:
        """Apply ops / welcomes / distributions. Runs inside the engine's receive transaction."""
        events: list[Received] = []
        frames: list[OutFrame] = []
        before: dict[bytes, int | None] = {}  # group -> op count before these items
        members_before: dict[bytes, frozenset[bytes]] = {}
        held_before: dict[bytes, bool] = {}  # group -> we held ourselves out already
        answered: set[bytes] = set()  # ops sent in answer to wants of this message
        lacking: dict[bytes, list[bytes]] = {}  # group -> ops whose dependencies we lack
        for item in decode_control(body):
            gid = item_group_id(item)
            self.touched.add(gid)
            if gid not in before:
                st = self.load(gid)
                before[gid] = None if st is None else len(st.ops)
                members_before[gid] = frozenset() if st is None else st.members()
                held_before[gid] = st is not None and st.held_out
            try:
                ev, fr = self._apply_item(gid, sender, sender_inst, item, answered)
            except (GroupError, MalformedMessage) as exc:
                text = str(exc).lower()
                if item[0] in (KIND_GROUP_OP, KIND_DISTRIBUTION) and "depend" in text:
                    self.store.add_group_pending(gid, sender_inst, item, self.engine.clock_ms())
                    if item[0] == KIND_GROUP_OP and self.pull:
                        lacking.setdefault(gid, []).append(item)
                    continue
                if item[0] == KIND_DISTRIBUTION and "not a member" in text:
                    # our view is behind (the op that re-adds us is still on its way): keep it
                    self.store.add_group_pending(gid, sender_inst, item, self.engine.clock_ms())
                    continue
                log.warning("group item rejected: %s", exc)
                continue
            events += ev
            frames += fr
        for gid in sorted(lacking):  # one want per group (and sender) for the whole message
            frames += self._want(gid, sender, sender_inst, lacking[gid])
        for gid in sorted(before):
            if self.anti_entropy:
                frames += self._reoffer(gid, before[gid])
            frames += self._tell_voided(gid, members_before[gid])
            if not held_before[gid]:
                frames += self._ask_if_back(gid)
            events += self.retry_held(gid)
        return events, frames

    def _reoffer(self, gid: bytes, ops_before: int | None) -> list[OutFrame]:
        """Anti-entropy for membership ops: an admin that learned ops from someone else
        re-sends its op log, op by op, to every member installation it knows. An op goes
        only to the members in its author's view, so a member added concurrently with
        another admin's change would never get that change otherwise. Bounded (only when
        our op set grew, O(members x ops) items) and idempotent (replays are ignored)."""
        state = self.load(gid)
        if state is None or ops_before is None or len(state.ops) == ops_before:
            return []  # nothing new, or we just joined (the welcome held it all)
        if not state.is_member or self.engine.identity_id not in state.admins():
            return []
        items = state.op_log()
        frames: list[OutFrame] = []
        for ident in sorted(state.members()):
            for k in sorted(self.devices(ident), key=lambda k: k.installation_id):
                if k.installation_id == self.engine.installation_id:
                    continue
                for body in pack_control(items):
                    frames += self._control(ident, k, body)
        return frames

    def _tell_voided(self, gid: bytes, members_before: frozenset[bytes]) -> list[OutFrame]:
        """Members that left our view with no removal or leave of them in the log: the add
        that brought them in turned void (its author, an admin, was removed concurrently).
        The other members may never have known them, so we send them the removals that
        voided it, with their causal past (``_voiding_ops``; not the whole log: what the group
        did after is not theirs to learn): they see that they are not in the group (before,
        they took themselves for members for good, writing to nobody and reading nothing).
        Someone removed once, then added back by such a void add, is not told (the old
        removal hides it)."""
        state = self.load(gid)
        if state is None:
            return []
        me = self.engine.identity_id
        gone = members_before - state.members() - {me}
        taken_out = {
            o.target if o.kind == OpKind.REMOVE else o.author
            for o in state.ops.values()
            if o.kind in (OpKind.REMOVE, OpKind.LEAVE)
        }
        voided = sorted(i for i in gone if i not in taken_out)
        if not voided:
            return []
        frames: list[OutFrame] = []
        for ident in voided:
            items = _voiding_ops(state, ident)
            if not items:
                continue
            for k in sorted(self.devices(ident), key=lambda k: k.installation_id):
                for body in pack_control(items):
                    frames += self._control(ident, k, body)
        return frames

    def _ask_if_back(self, gid: bytes) -> list[OutFrame]:
        """We hold ourselves out of the group on leaves no one vouches for (see
        ``GroupState.held_out``: an admin who removed us may have left, or be removed, and
        have dated its leave back to void its removal of us): ask the first
        ``_ASKED_ADMINS`` admins of our view (not those who removed us) with a want naming
        the ops that took us out and our heads. One that has us out answers with the ops
        that make them count (``_answer_removed``); then we are out in our view too."""
        state = self.load(gid)
        if state is None or not state.held_out:
            return []
        me = self.engine.identity_id
        ours = sorted(
            (o for o in state.ops.values() if o.kind is OpKind.REMOVE and o.target == me),
            key=lambda o: o.sort_key,
            reverse=True,
        )
        removers = {o.author for o in ours}
        asked = [a for a in state.roster.seniority if a not in removers and a != me]
        ids = list(dict.fromkeys([*(o.op_id for o in ours), *state.heads]))
        if not ours or not asked:
            return []
        body = encode_control([encode_want(gid, ids[:MAX_CONTROL_ITEMS])])
        frames: list[OutFrame] = []
        for admin in asked[:_ASKED_ADMINS]:
            for k in sorted(self.devices(admin), key=lambda k: k.installation_id):
                frames += self._control(admin, k, body)
        return frames

    def _answer_removed(
        self, state: GroupState, sender: bytes, keys: PeerKeys, ids: list[bytes]
    ) -> list[OutFrame]:
        """A want from someone out of the group in our view, naming an op that took it out
        (``_ask_if_back``): if an op taking it out counts here and its author is out of the
        group too (a removed admin's leave dated back could void it in the asker's log, see
        ``roster.back_on_leaves_only``), send the ops that take it out and those that take
        their authors out, with their causal past but for what is below the ops the want
        names (the asker holds those). Bounded: once per asker while our log does not
        change (whether it got ops or not: working out the answer costs a fold),
        ``MAX_REMOVED_ANSWER`` bytes at most (a larger answer is not sent: the asker stays
        out in its own view), and nothing for a want naming no op that took its sender out
        (junk, or a removed member's plain want for dependencies)."""
        ops = state.ops
        if not any(i in ops and taken_out(ops[i]) == sender for i in ids):
            return []
        mark = _ANSWERED_REMOVED + (state.group_id + sender).hex()
        size = len(ops).to_bytes(4, "big")
        if self.store.get_meta(mark) == size:
            return []
        self.store.set_meta(mark, size)  # (set first: what follows costs a fold)
        counting = counting_removals(ops.values())
        outs = [o for o in ops.values() if taken_out(o) == sender and o.op_id in counting]
        authors = {o.author for o in outs if o.author not in state.members()}
        if not authors:
            return []
        support = [o for o in ops.values() if taken_out(o) in authors and o.op_id in counting]
        known = causal_past(ops, ids)
        send = causal_past(ops, (o.op_id for o in (*outs, *support))) - known
        items = [o.raw for o in sorted((ops[i] for i in send), key=lambda o: o.sort_key)]
        if not items or sum(len(r) for r in items) > MAX_REMOVED_ANSWER:
            return []
        return [f for b in pack_control(items) for f in self._control(sender, keys, b)]

    def _want(
        self, gid: bytes, sender: bytes, sender_inst: bytes, ops: Sequence[bytes]
    ) -> list[OutFrame]:
        """Ask the member that sent us ``ops`` (in one control message) for the dependencies
        we still lack, in one want (pull: pushing alone may never bring them, e.g. an op we
        had set aside and then forgot). One want per op made a control message of 64 ops
        naming made-up dependencies (checked before the signature) bring 64 frames back."""
        state = self.load(gid)
        keys = self._keys_for(sender, sender_inst)
        if state is None or keys is None:
            return []
        have = {*state.ops, *(c.op_id for c in state.candidates)}
        missing = list(dict.fromkeys(d for op in ops for d in decode_op(op).deps if d not in have))
        if not missing:
            return []
        body = encode_control([encode_want(gid, missing[:MAX_CONTROL_ITEMS])])
        return self._control(sender, keys, body)

    def _answer_want(
        self, state: GroupState | None, sender: bytes, sender_inst: bytes, item: bytes,
        answered: set[bytes] | None = None,
    ) -> list[OutFrame]:  # fmt: skip
        """Send a member the ops it asked for that we hold (accepted or set aside), each
        once per control message (``answered``: the ids sent for its earlier wants; one
        message of 64 wants each naming the create op, 32 bytes a member, brought back 64
        copies of it: megabytes for a few kilobytes in a big group)."""
        ids = decode_want(item)
        answered = set() if answered is None else answered
        keys = self._keys_for(sender, sender_inst)
        if state is None or not state.is_member or keys is None:
            return []
        if sender not in state.members():
            return self._answer_removed(state, sender, keys, ids)
        # never a candidate signed by a device revoked since: such a candidate is in no
        # honest log (a thief's op, dated back, that a member passed us), and an admin
        # passing it on lends it weight it must not have (see GroupState._admit)
        aside = {c.op_id: c for c in state.candidates if c.installation in self._ids(c.author)}
        held = {**aside, **state.ops}
        found = []
        for i in dict.fromkeys(ids):  # each id once
            op = held.get(i)
            if op is not None and i not in answered:
                answered.add(i)
                found.append(op.raw)
        # split so that no answer passes the payload cap
        return [f for b in pack_control(found) for f in self._control(sender, keys, b)]

    def _apply_item(
        self, gid: bytes, sender: bytes, sender_inst: bytes, item: bytes,
        answered: set[bytes] | None = None,
    ) -> tuple[list[Received], list[OutFrame]]:  # fmt: skip
        state = self.load(gid)
        kind = item[0]
        rng = self.engine.rng
        if kind == KIND_WANT:
            return [], self._answer_want(state, sender, sender_inst, item, answered)
        if kind == KIND_WELCOME_PART:
            welcome = self._collect_part(gid, state, sender, sender_inst, item)
            if welcome is None:
                return [], []
            return self._apply_item(gid, sender, sender_inst, welcome)
        if kind == KIND_WELCOME:
            if (state is None or not state.is_member) and self.refuse_invites_from(sender):
                log.info("ignored an invitation to a group from a blocked/declined identity")
                return [], []
            if state is None or not state.is_member:
                # the inviters the welcome claims, before checking it (which costs): a lie
                # (naming a contact) fails the welcome's cheap signature checks first
                claimed = _inviters(map(decode_op, _welcome_ops(item)), self.engine.identity_id)
                refused = self._invitation_refused(claimed)
                if refused is not None:
                    log.info("ignored an invitation to a group before checking it: %s", refused)
                    return [], []
            if state is not None:
                # merge, never replace: a welcome must not make us forget our own removal
                new, out, _rej = state.apply_ops(
                    _welcome_ops(item), self._ids, rng, self.engine.clock_ms(), self._signers()
                )
            else:
                me, inst = self.engine.identity_id, self.engine.installation_id
                try:
                    new, out = GroupState.join(item, me, inst, self._ids, rng)
                except GroupError:
                    if self.past_devices is None:
                        raise
                    # ops signed by a device since revoked (lost, or replaced): accepted
                    # only from a member of the group they describe, who vouches for them
                    new, out = GroupState.join(item, me, inst, self._ids, rng, self._past_ids)
                    if not vouched_by(new.ops, self._ids, (sender, me)):
                        # a member holding a revoked device must not forge a newcomer's log
                        raise GroupError(
                            "a welcome with ops of revoked devices that neither their "
                            "authors nor an admin vouch for"
                        ) from None
                    if sender not in new.members():
                        raise GroupError(
                            "a welcome signed by revoked devices, not from a member"
                        ) from None
            invited = state is None or not state.is_member
            inviters = _inviters(new.ops.values(), self.engine.identity_id) if invited else set()
            refused = self._invitation_refused(inviters)
            if refused is not None:
                log.info("ignored an invitation to a group: %s", refused)
                return [], []
            self._save(new)
            if new.is_member:
                for a in inviters:
                    self.store.record_invitation(gid, a, self.engine.clock_ms())
            frames = self._dispatch(new, state, out)
            events = []
            if (state is None or not state.is_member) and not new.held_out:
                joined = self._joined_notice(gid, new)
                if joined is not None:
                    events.append(joined)
            ev2, fr2 = self._replay_pending(gid)
            return events + ev2, frames + fr2
        if state is None:
            # a key or op that raced ahead of our welcome: keep it for when it arrives
            self.store.add_group_pending(gid, sender_inst, item, self.engine.clock_ms())
            return [], []
        if kind == KIND_DISTRIBUTION:
            self._save(
                state.receive_distribution(
                    sender_inst, item, from_identity=sender, now_ms=self.engine.clock_ms()
                )
            )
            return [], []
        op = decode_op(item)
        if op.op_id in state.ops:
            return [], []  # a replay (anti-entropy re-offers the whole log): nothing to do
        before_members, before_admins = state.members(), state.admins()
        # the author's own active device relaying its op (anti-entropy from its log) vouches
        # for it though the device that signed it was revoked since (a lost phone's last
        # change); nobody vouches for another identity's ops (the engine admits only
        # active senders)
        vouched = (
            sender == op.author
            and sender_inst in self._ids(sender)
            and op.kind not in (OpKind.REMOVE, OpKind.LEAVE)
        )
        new, out = state.apply_op(
            item, self._ids, rng, self.engine.clock_ms(), self._signers(), vouched
        )
        if self._refused_back(state, new):
            return [], []
        self._save(new)
        frames = self._dispatch(new, state, out)
        events = []
        text = (
            ""
            if op.op_id not in new.ops
            else _describe(  # a candidate: nothing happened
                op, self.engine.identity_id, before_members, before_admins, new, self.display
            )
        )
        notice = (  # said by the op's author (an admin may relay someone else's op)
            self._notice(gid, text, op.author, op.installation, op.created_ms, op.op_id)
            if text
            else None
        )
        if notice is not None:
            events.append(notice)
        ev2, fr2 = self._replay_pending(gid)
        return events + ev2, frames + fr2

    def _invitation_refused(self, inviters: set[bytes]) -> str | None:
        """Why an invitation by ``inviters`` (who put us in a group) is not taken, or None."""
        if not inviters:
            return None
        if any(self.refuse_invites_from(a) for a in inviters):
            return "an inviter is blocked or declined"
        return self.invitation_refusal(inviters)

    def _refused_back(self, state: GroupState, new: GroupState) -> bool:
        """An op that adds us back to a group we had left is an invitation too (by the
        authors of the adds of us it brings): True if refused (blocked, or over the bound
        of unanswered invitations); else recorded. An op that makes us a member again
        without adding us is none: it finds void what took us out (its author, an admin,
        was removed concurrently) or vouches for the leave that voided it (``held_out``);
        we were a member in the group's view all along. Refused, it was dropped, and we
        stayed out in our own view for good, lacking an op of the log, whoever wrote it."""
        if state.is_member or not new.is_member:
            return False
        me = self.engine.identity_id
        adders = {
            o.author
            for i, o in new.ops.items()
            if i not in state.ops and o.kind is OpKind.ADD and o.target == me
        }
        if not adders:
            return False
        refused = self._invitation_refused(adders)
        if refused is not None:
            log.info("ignored being added back to a group: %s", refused)
            return True
        for author in sorted(adders):
            self.store.record_invitation(new.group_id, author, self.engine.clock_ms())
        return False

    def _collect_part(
        self, gid: bytes, state: GroupState | None, sender: bytes, sender_inst: bytes,
        item: bytes,
    ) -> bytes | None:  # fmt: skip
        """Keep a welcome part; the whole welcome once every part from this sender is here
        (its parts are then forgotten). Of one sending installation, only the parts of its
        latest two welcomes are kept. MalformedMessage for a bad part or a bad whole;
        GroupError for parts of a group we are in from someone who is not a member."""
        digest, index, count, _chunk = _parse_part(item)
        if state is not None and state.is_member and sender not in state.members():
            raise GroupError("welcome parts for our group from a non-member")
        for _pid, group, head in self.store.group_parts_from(sender_inst):
            try:
                if group == gid and _parse_part(head)[:3] == (digest, index, count):
                    return None  # this part is kept already (sent again): once is enough
            except MalformedMessage:
                continue
        self.store.add_group_pending(gid, sender_inst, item, self.engine.clock_ms())
        # this sender's kept parts, by welcome: row ids (duplicates too), and index -> row
        rows: dict[tuple[bytes, bytes, int], list[int]] = {}
        first: dict[tuple[bytes, bytes, int], dict[int, int]] = {}
        for pid, group, head in self.store.group_parts_from(sender_inst):
            try:
                d, i, n, _ = _parse_part(head)
            except MalformedMessage:
                self.store.delete_group_pending(pid)
                continue
            rows.setdefault((group, d, n), []).append(pid)
            first.setdefault((group, d, n), {}).setdefault(i, pid)
        for key in sorted(rows, key=lambda k: rows[k][-1])[:-2]:  # older welcomes: dropped
            for pid in rows.pop(key):
                self.store.delete_group_pending(pid)
        key = (gid, digest, count)
        got = first.get(key, {}) if key in rows else {}
        if len(got) < count:
            return None
        items = self.store.group_pending_items([got[i] for i in range(count)])
        for pid in rows[key]:
            self.store.delete_group_pending(pid)
        if len(items) < count:
            return None
        welcome = b"".join(_parse_part(items[got[i]])[3] for i in range(count))
        if hashlib.sha256(welcome).digest() != digest or welcome[:1] != bytes((KIND_WELCOME,)):
            raise MalformedMessage("the parts of a welcome do not make it up")
        if welcome[1 : 1 + ID_LEN] != gid:
            raise MalformedMessage("a welcome's parts name another group")
        return welcome

    def _replay_pending(self, gid: bytes) -> tuple[list[Received], list[OutFrame]]:
        events: list[Received] = []
        frames: list[OutFrame] = []
        progress = True
        while progress:
            progress = False
            for pid, inst, item in self.store.group_pending(gid):
                state = self.load(gid)
                if state is None:
                    return events, frames
                try:
                    if item[0] == KIND_DISTRIBUTION:
                        self._save(
                            state.receive_distribution(
                                inst,
                                item,
                                from_identity=self._owner_of(inst, item),
                                now_ms=self.engine.clock_ms(),
                            )
                        )
                    else:
                        new, out = state.apply_op(
                            item, self._ids, self.engine.rng, self.engine.clock_ms(),
                            self._signers(),
                        )  # fmt: skip
                        if self._refused_back(state, new):
                            self.store.delete_group_pending(pid)
                            continue
                        self._save(new)
                        frames += self._dispatch(new, state, out)
                except ChatCoreError:
                    continue
                self.store.delete_group_pending(pid)
                progress = True
        return events, frames


def _voiding_ops(state: GroupState, ident: bytes) -> list[bytes]:
    """The removals (and leaves) of the admins who added ``ident``, and of those who made
    them admins (an add by an admin whose promotion turned void, its promoter removed
    concurrently, is void too), with their causal past, in fold order: what a member whose
    add turned void needs to see it is not in the group."""
    adders = {o.author for o in state.ops.values() if o.kind is OpKind.ADD and o.target == ident}
    more = adders
    while more:  # and whoever made them admins, and so on
        more = {
            o.author for o in state.ops.values() if o.kind is OpKind.PROMOTE and o.target in more
        } - adders
        adders |= more
    todo = [
        o
        for o in state.ops.values()
        if (o.kind is OpKind.REMOVE and o.target in adders)
        or (o.kind is OpKind.LEAVE and o.author in adders)
    ]
    past: dict[bytes, Op] = {}
    while todo:
        o = todo.pop()
        if o.op_id not in past:
            past[o.op_id] = o
            todo += [state.ops[d] for d in o.deps if d in state.ops]
    return [o.raw for o in sorted(past.values(), key=lambda o: o.sort_key)]


def _describe(
    op: Op,
    me: bytes,
    members: frozenset[bytes],
    admins: frozenset[bytes],
    new: GroupState,
    name: Callable[[bytes], str],
) -> str:
    """The notice for an applied op, from its author's point of view ("" if nothing a user
    would notice changed). Concurrent ops may change more than the op names: that shows
    as a count."""
    came, gone = new.members() - members, members - new.members()
    if me in gone and op.author != me:
        removed = op.kind is OpKind.REMOVE and op.target == me  # not when our add turned void
        return "removed you" if removed else "you are no longer a member"
    if op.kind is OpKind.ADD and came == {op.target}:
        return f"added {name(op.target)}"
    if op.kind is OpKind.REMOVE and gone == {op.target}:
        return f"removed {name(op.target)}"
    if op.kind is OpKind.LEAVE and gone == {op.author}:
        return "left the group"
    if op.kind is OpKind.PROMOTE and not came and not gone and op.target in new.admins():
        return "" if op.target in admins else f"made {name(op.target)} an admin"
    if op.kind is OpKind.RENAME and not came and not gone:
        if new.name == op.name:
            return f"renamed the group to “{op.name}”"
        # another admin's rename at the same time comes later in the op order: it stands
        return (
            f"renamed the group to “{op.name}” at the same time as another admin: "
            f"it stays “{new.name}”"
        )
    if came or gone:
        counts = [f"+{len(came)} member(s)"] * bool(came) + [f"-{len(gone)} member(s)"] * bool(gone)
        return "membership changed: " + ", ".join(counts)
    return ""


def _inviters(ops: Iterable[Op], me: bytes) -> set[bytes]:
    """Who put us in the group: the creator (if we were a first member) and the authors of
    the ops that added us."""
    return {
        op.author
        for op in ops
        if (op.kind is OpKind.CREATE and me in op.members)
        or (op.kind is OpKind.ADD and op.target == me)
    }


def _with_ops(welcome: bytes, state: GroupState) -> bytes:
    """``welcome`` with the ops of ``state`` (of the same group) added: one log of both."""
    from chatcore.group.state import decode_welcome, encode_welcome

    gid, raws = decode_welcome(welcome)
    ops = {op.op_id: op for op in map(decode_op, raws)}
    return encode_welcome(gid, {**ops, **state.ops}.values())


def _welcome_ops(welcome: bytes) -> list[bytes]:
    from chatcore.group.state import decode_welcome

    return decode_welcome(welcome)[1]
