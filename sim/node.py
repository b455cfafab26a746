"""A simulated installation (device): the real :class:`chatcore.engine.Engine` over its own
:class:`chatcore.store.Store`, plus the client behaviour the engine leaves to its caller.

Client behaviour modelled here (what ``chatcore.client`` does or should do):

* publish every outbox frame; a frame leaves the outbox only when the store's ack comes back;
  unacked frames are re-published with exponential backoff (``OUTBOX_BACKOFF_MS``);
* consume the inbox like an ordered JetStream consumer: a pushed frame is taken only if it is
  the next one after the persisted cursor; a gap (or a reconnect, restart, store restart, a
  slow safety timer) triggers a fetch from the cursor;
* 1:1 messages go through the real :class:`chatcore.features.Features`, as in the client:
  receipts (batched, piggybacked on messages), end-to-end retransmission (re-encrypted) until
  every recipient installation acknowledged, our other devices included; the client's timer
  is ``Features.flush(due_only=True)`` at ``Features.next_due()``;
* group control frames (ops, welcomes, sender keys) get end-to-end retransmission *modelled*
  here (``Features`` does not track them): the receiver acks with a simulator message and the
  sender re-publishes the same frame under a fresh ``msg_id`` until acked.

Crash = the Engine and all in-memory state are dropped (in-flight callbacks are ignored by a
generation counter); restart = a new Engine on the same Store, reliability state reloaded from
the store's ``meta`` table. Nothing here survives a crash except what is in the Store.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from chatcore.engine import (
    Engine,
    OutFrame,
    OwnIdentity,
    Received,
    direct_conversation_id,
    frame_msg_id,
)
from chatcore.errors import ChatCoreError, DecryptionError, DuplicateMessage, GroupError
from chatcore.features import Features, Handled
from chatcore.group.state import removal_message_epoch
from chatcore.groupchat import GroupChat
from chatcore.keys import InstallationKeys, PeerKeys, SignedPrekey
from chatcore.payload import RECENT_HISTORY, ContentType, Payload
from chatcore.reliability import Reliability
from chatcore.store import Store
from sim.network import StoredFrame

if TYPE_CHECKING:
    from sim.runner import World

__all__ = ["CONTROL_CONV", "Device", "receipt_size"]

#: the reliability log that tracks pairwise group-control frames (ops, welcomes, sender keys):
#: they have no message id, so the simulator names each by the first 8 bytes of SHA-256(frame)
CONTROL_CONV = b"\x00" * 16
#: a group frame that could not be decrypted yet (sender key or op not here yet, or a copy
#: damaged on the delivery path) is held; it is retried from the local copy whenever a control
#: item for that group arrives, and re-fetched from the store after these delays
HELD_REFETCH_MS = (2_000, 5_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000)
#: a frame that failed with GroupError (key or epoch unknown) is mostly waiting for a control
#: item, not damaged: re-fetch it only this often (a flipped bit in its tag or key id)
HELD_REFETCH_GROUP_ERROR = 2
HELD_MAX_AGE_MS = 86_400_000
HELD_MAX = 2_000


class _LogCounter(logging.Handler):
    """Counts chatcore.groupchat warnings (rejected control items) into the running world."""

    world: World | None = None

    def emit(self, record: logging.LogRecord) -> None:
        w = _LogCounter.world
        if w is not None:
            msg = record.getMessage()[:70]
            w.stats["groupchat: " + msg] += 1


_gc_log = logging.getLogger("chatcore.groupchat")
_gc_log.addHandler(_LogCounter())
_gc_log.propagate = False
_gc_log.setLevel(logging.INFO)

OUTBOX_BACKOFF_MS = (500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000)
#: safety fetch while online (the JetStream redelivery / AckWait analogue): every POLL_MS,
#: doubling while fetches come back empty, up to POLL_MAX_MS; reset by any traffic
POLL_MS = 30_000
FEATURES_TIMER_MS = 1_000  # the client's receipt/retransmission timer granularity
SPK_NOT_AFTER = 2**62  # signed prekeys in the simulator never expire
POLL_MAX_MS = 3_600_000
FETCH_TIMEOUT_MS = 5_000
ACK_BATCH_MS = 200
PUBACK_BYTES = 32
FETCH_REQ_BYTES = 64
#: a 1:1 session frame around a receipt payload: hdr 1 + tag 8 + dh 32 + pn/n varints 2
#: + GCM tag 16, and the payload header 2 + id 8 + lamport/sent-at varints 8 + history 1+12
_RECEIPT_FIXED = 1 + 8 + 32 + 2 + 16 + 2 + 8 + 8 + 13


def receipt_size(n_ids: int) -> int:
    """Modelled size of one batched receipt frame acknowledging ``n_ids`` message ids."""
    return _RECEIPT_FIXED + 1 + 8 * n_ids


def _flip(data: bytes, rng_pos: int) -> bytes:
    i = rng_pos % len(data)
    return data[:i] + bytes((data[i] ^ 0x01,)) + data[i + 1 :]


class Device:
    """One installation of one user."""

    def __init__(
        self,
        world: World,
        user: str,
        name: str,
        identity_id: bytes,
        keys: InstallationKeys,
        spk: SignedPrekey,
    ) -> None:
        self.world = world
        self.user = user
        self.name = name
        self.identity_id = identity_id
        self.keys = keys
        self.spk = spk
        self.peer_keys: PeerKeys = keys.peer_keys(spk)
        self.store = Store.memory()
        self.store.put_secret(f"spk:{spk.id:010d}", spk.to_bytes())
        self.inbox = ""
        self.alive = True
        self.online = True
        self.revoked = False  # revoked on chain: gone for good
        self.retiring = False  # being replaced: the user no longer sends from it
        self.gen = 0
        self.engine: Engine | None = None
        self.groups: GroupChat | None = None
        self.features: Features | None = None
        self.subjects: set[str] = set()
        self.rel = Reliability(world.cfg.retry_policy)
        self._wake_at: int | None = None
        self._fetching: dict[str, int] = {}  # subject -> generation of the fetch in flight
        self._acks: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._poll_every = POLL_MS
        self._next_poll = 0
        self._ctl_from: bytes | None = None
        self._dropped: set[bytes] = set()  # installations revoked while we were down
        #: (subject, seq) -> [frame, refetches done, next refetch at, first failed at]
        self._held: dict[tuple[str, int], list] = {}  # type: ignore[type-arg]
        self._boot()

    # --- lifecycle ----------------------------------------------------------------------------
    def _boot(self) -> None:
        w = self.world
        self.engine = Engine(
            self.store,
            OwnIdentity(self.identity_id, self.keys),
            w.directory,
            w.key_rng,
            w.clock.now_ms,
        )
        self.groups = GroupChat(
            self.engine, w.directory.devices, anti_entropy=bool(w.cfg.group_reoffer)
        )
        self.groups.pull = w.cfg.group_pull
        self.engine.control_handler = self._on_control
        self.features = Features(self.engine, self.groups, w.cfg.retry_policy)
        self.engine.content_handler = self._on_content
        self.inbox = self.engine.inbox
        self.subjects = {self.inbox}
        raw = self.store.get_meta("sim.rel")
        self.rel = (
            Reliability.from_bytes(raw, w.cfg.retry_policy)
            if raw
            else Reliability(w.cfg.retry_policy)
        )
        held = self.store.get_meta("sim.held")
        self._held = {}
        if held:
            for subj, seq, data, tries, nxt, first in json.loads(held):
                self._held[(subj, seq)] = [bytes.fromhex(data), tries, nxt, first]
        self._acks = {}
        self._fetching = {}
        self._wake_at = None
        self._subscribe_groups()
        self._busy()

    def _busy(self) -> None:
        """Traffic seen: poll at the base rate again."""
        self._poll_every = POLL_MS
        self._next_poll = self.world.clock.now + POLL_MS

    @property
    def up(self) -> bool:
        return self.alive and self.online

    def crash(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self.gen += 1
        self.engine = None
        self.groups = None
        self.features = None
        self.world.event(f"crash {self.name}")

    def revoke(self) -> None:
        """Revoked on chain: the device stops for good; peers drop it at their next index
        sync (here: at once), so nobody waits for its acks any more."""
        if self.revoked:
            return
        w = self.world
        self.crash()
        self.revoked = True
        w.directory.revoke(self.identity_id, self.keys.installation_id)
        w.event(f"revoked {self.name}")
        w.stats["revoked"] += 1
        inst = self.keys.installation_id
        for d in w.devices:
            if d is self or d.revoked:
                continue
            if d.rel.drop_recipient(inst):
                d.store.set_meta("sim.rel", d.rel.to_bytes())
            if d.features is not None:
                d.features.drop_recipient(inst)
            else:  # crashed: what it finds in its store at restart (the client's index sync)
                d._dropped.add(inst)
        w.oracle.excuse_device(self)

    def rotate_prekey(self) -> None:
        """A new signed prekey (bundle seq + 1); the old secret stays for handshakes in flight."""
        if self.revoked:
            return
        w = self.world
        self.spk = SignedPrekey.generate(w.key_rng, self.spk.id + 1, SPK_NOT_AFTER)
        self.store.put_secret(f"spk:{self.spk.id:010d}", self.spk.to_bytes())
        self.peer_keys = self.keys.peer_keys(self.spk)
        w.directory.update(self.identity_id, self.peer_keys)
        w.event(f"prekey {self.name} {self.spk.id}")
        w.stats["prekeys_rotated"] += 1

    def restart(self) -> None:
        if self.alive or self.revoked:
            return
        self.alive = True
        self.gen += 1
        self._boot()
        self.world.event(f"restart {self.name}")
        self.reconnected()

    def go_offline(self) -> None:
        self.online = False
        self.gen += 1
        self.world.net.partitioned.add(self.name)
        self.world.event(f"offline {self.name}")

    def go_online(self) -> None:
        if self.revoked:
            return
        self.online = True
        self.gen += 1
        self.world.net.partitioned.discard(self.name)
        self._fetching = {}
        self._wake_at = None
        self.world.event(f"online {self.name}")
        self.reconnected()

    def reconnected(self) -> None:
        """(Re)connected to the network: catch up from the cursors, flush, rearm timers."""
        if not self.up:
            return
        self.fetch()
        self.tick()

    def _guard(self, fn: Callable[[], None]) -> Callable[..., None]:
        gen = self.gen

        def run(_tampered: bool = False) -> None:
            if self.gen == gen and self.up:
                fn()

        return run

    def _subscribe_groups(self) -> list[str]:
        """Consume the topic of every group we read (``GroupChat.subjects``), as a client's
        subscription: one taken when it starts, and topics added as groups come to be read.
        As a running ``listen()``, it goes on reading a group's topic once it is out."""
        assert self.groups is not None
        new = [s for s in self.groups.subjects() if s not in self.subjects]
        for s in new:
            self.subjects.add(s)
            self.world.subscribe(s, self)
        return new

    # --- timers -------------------------------------------------------------------------------
    def arm(self, t: int) -> None:
        if (
            self._wake_at is not None
            and self._wake_at <= t
            and self._wake_at >= self.world.clock.now
        ):
            return
        self._wake_at = t
        gen = self.gen

        def wake() -> None:
            if self.gen != gen or self._wake_at != t:
                return
            self._wake_at = None
            self.tick()

        self.world.sched.at(t, wake)

    def tick(self) -> None:
        """Flush the due outbox, retransmit what recipients did not ack, rearm."""
        if not self.up:
            return
        w = self.world
        now = w.clock.now
        f = self.features
        assert f is not None
        if self._dropped:
            for inst in sorted(self._dropped):
                f.drop_recipient(inst)
            self._dropped.clear()
        # the client's timer fires then (a client that never retransmits has only receipts
        # to wait for: a retransmission overdue for good would wake it every second)
        timer = f.next_due if w.cfg.e2e_retry else f.next_receipt_due
        due_at = timer()
        if due_at is not None and due_at <= now:
            if w.cfg.send_receipts:
                f.flush_receipts(due_only=True)  # the frames are in the outbox
            if w.cfg.e2e_retry:
                w.stats["retransmits"] += len(f.retransmit())
            due_at = timer()
        self.flush_outbox()
        if now >= self._next_poll:
            self.fetch()
            self._next_poll = now + self._poll_every
            self._poll_every = min(POLL_MAX_MS, self._poll_every * 2)
        if w.cfg.e2e_retry and (due := self.rel.due(now)):  # group control frames
            for rt in due:
                for inst in rt.recipients:
                    raw = self.store.get_meta(f"sim.f:{rt.message_id.hex()}{inst.hex()}")
                    if not raw:
                        continue
                    msg_id, frame = raw[:32].decode(), raw[32:]
                    w.stats["control_retransmits"] += 1
                    self._publish(
                        _inbox_of(w, inst), frame, f"{msg_id}.r{rt.attempt}", lambda _s: None
                    )
            self._save_rel()
        nxt = [self._next_poll]
        held_due = self._held_tick(now)
        if held_due is not None:
            nxt.append(held_due)
        if w.cfg.retry_outbox and self.store.outbox_size():
            nxt.append(now + OUTBOX_BACKOFF_MS[0])
        d = self.rel.next_due() if w.cfg.e2e_retry else None
        if d is not None:
            nxt.append(max(d, now + 1))
        if due_at is not None:
            nxt.append(max(due_at, now + FEATURES_TIMER_MS))
        self.arm(min(nxt))

    # --- sending ------------------------------------------------------------------------------
    def send_text(self, peer_user: str, body: bytes) -> bytes | None:
        """The user types a message to ``peer_user``. Returns the message id (None if the app
        is not running)."""
        if not self.alive or self.features is None:
            return None
        w = self.world
        peer = w.directory.peer(w.users[peer_user].identity_id)
        own = w.directory.peer(self.identity_id).installations
        conv = direct_conversation_id(self.identity_id, peer.identity_id)
        # the oracle's causal check uses the recent part (piggybacked acks may follow it)
        history = tuple(self.store.recent_short_ids(conv, RECENT_HISTORY))
        res = self.features.send_message(peer, ContentType.TEXT, body, own)
        recipients = [i.installation_id for i in peer.installations] + [
            i.installation_id for i in own if i.installation_id != self.keys.installation_id
        ]
        w.oracle.sent(self, res, history, recipients)
        self._busy()
        with self.store.transaction():
            self.rel.log(conv).sent(res.message_id, [], w.clock.now)  # known here: never a gap
            self._save_rel()
        if self.online:
            self.tick()
        return res.message_id

    def flush_outbox(self) -> None:
        w = self.world
        now = w.clock.now
        # (subject, id) order: GroupChat._dispatch queues control frames in an order that
        # depends on frozenset iteration (PYTHONHASHSEED); per subject, id order is creation order
        for item in sorted(self.store.pending_outbox(now), key=lambda i: (i.subject, i.id)):
            if not w.cfg.retry_outbox and item.attempts > 0:
                continue  # the deliberately broken client: publish once, never again
            step = OUTBOX_BACKOFF_MS[min(item.attempts, len(OUTBOX_BACKOFF_MS) - 1)]
            self.store.outbox_retry_later(item.id, now + step)
            if item.attempts:
                w.stats["outbox_retries"] += 1

            def stored(_seq: int, oid: int = item.id) -> None:
                if self.engine is not None:
                    self.engine.acknowledged(oid)

            self._publish(item.subject, item.frame, item.msg_id, stored)

    def _publish(
        self, subject: str, frame: bytes, msg_id: str, on_stored: Callable[[int], None]
    ) -> None:
        w = self.world
        gen = self.gen

        def at_store(_t: bool) -> None:
            if not w.store.up:
                w.stats["publish_refused"] += 1
                return  # in flight while the store restarts: no ack, the client retries
            seq = w.store.append(subject, frame, msg_id, w.clock.now)

            def acked(_t: bool) -> None:
                if self.gen == gen and self.up:
                    on_stored(seq)

            w.net.transmit(self.name, PUBACK_BYTES, acked, may_duplicate=False)

        w.net.transmit(self.name, len(frame), at_store)

    # --- groups: what the user does -------------------------------------------------------------
    def group_create(self, label: str, members: Sequence[bytes]) -> None:
        if not self.alive or self.groups is None:
            self.world.event(f"G skip create {label} {self.name}: not running")
            return
        w = self.world
        gid, frames = self.groups.create(label, list(members))
        w.group_ids[label] = gid
        self._after_own_op(gid, frames, f"create {label}")

    def group_change(self, label: str, how: str, target: bytes | None, name: str = "") -> None:
        w = self.world
        gid = w.group_ids.get(label)
        if not self.alive or self.groups is None or gid is None:
            w.event(f"G skip {how} {label} {self.name}: not running / no group")
            return
        try:
            if how == "leave":
                frames = self.groups.leave(gid)
            elif how == "rename":
                frames = self.groups.rename(gid, name)
            else:
                assert target is not None
                frames = getattr(self.groups, how)(gid, target)
        except GroupError as exc:  # not (yet) an admin in our view, not a member, ...
            w.stats[f"group_{how}_refused"] += 1
            w.event(f"G refused {how} {label} {self.name}: {exc}")
            return
        tname = w.user_of(target).name if target else ""
        self._after_own_op(gid, frames, f"{how} {label} {tname}")

    def _after_own_op(self, gid: bytes, frames: Sequence[OutFrame], what: str) -> None:
        w = self.world
        assert self.groups is not None
        st = self.groups.load(gid)
        assert st is not None
        w.oracle.group_ops(gid, st.op_log())
        w.event(f"G {self.name} {what} -> epoch {st.epoch} ({len(st.members())} members)")
        self._track_control(frames)
        for s in self._subscribe_groups():
            self.fetch(s)
        self._busy()
        if self.online:
            self.tick()

    def group_send(self, label: str, body: bytes) -> None:
        w = self.world
        gid = w.group_ids.get(label)
        if not self.alive or self.groups is None or gid is None:
            return
        st = self.groups.load(gid)
        if st is None or not st.is_member:
            w.stats["group_send_skipped"] += 1  # not (yet / any more) a member in our view
            return
        res = self.groups.send(gid, ContentType.TEXT, body)
        w.oracle.group_sent(self, gid, res, st.members(), st.epoch)
        self._busy()
        if self.online:
            self.tick()

    def _track_control(self, frames: Sequence[OutFrame]) -> None:
        """Pairwise control frames get the same end-to-end retransmission as 1:1 messages."""
        if not frames:
            return
        w = self.world
        with self.store.transaction():
            for f in sorted(frames, key=lambda f: (f.subject, f.outbox_id)):
                inst = w.inbox_owner[f.subject].keys.installation_id
                cid = hashlib.sha256(f.frame).digest()[:8]
                self.store.set_meta(f"sim.f:{cid.hex()}{inst.hex()}", f.msg_id.encode() + f.frame)
                self.rel.log(CONTROL_CONV).sent(cid, [inst], w.clock.now)
                w.stats["control_frames"] += 1
                w.stats["control_bytes"] += len(f.frame)
            self._save_rel()

    def _on_content(
        self, sender: bytes, inst: bytes, payload: Payload, gid: bytes | None
    ) -> Handled | None:
        """The engine's content handler: Features for 1:1 traffic, as in the client. Group
        messages take GroupChat's own path here (their receipts are not simulated)."""
        if gid is not None or self.features is None:
            return None
        if payload.content_type == ContentType.RECEIPT:
            self.world.stats["receipts_received"] += 1
        return self.features.handle(sender, inst, payload, gid)

    def _on_control(
        self, sender: bytes, sender_inst: bytes, body: bytes
    ) -> tuple[list, list[OutFrame]]:  # type: ignore[type-arg]
        """The engine's control handler: GroupChat.handle_control (which applies the items,
        re-offers the op log and retries held group frames), noting the sender."""
        assert self.groups is not None
        self._ctl_from = sender_inst
        return self.groups.handle_control(sender, sender_inst, body)

    def _after_control(self) -> None:
        """Side effects of control items: publish what they produced (ops, keys, the op-log
        re-offer), follow new topics, account held group frames the core decrypted now."""
        assert self.engine is not None and self.groups is not None
        events, frames = self.engine.drain()
        self._track_control(frames)
        for s in self._subscribe_groups():
            self.fetch(s)
        for r in events:
            if r.content_type != ContentType.GROUP_CONTROL:
                self.world.stats["group_unheld_core"] += 1
                self._delivered_group(r)

    # --- receiving ----------------------------------------------------------------------------
    def pushed(self, f: StoredFrame) -> None:
        """The store pushes a new frame on a subject we consume (if we are connected)."""
        if not self.up or f.subject not in self.subjects:
            return
        self.world.net.transmit(self.name, len(f.data), self._guard_frame(f), may_tamper=True)

    def _guard_frame(self, f: StoredFrame) -> Callable[[bool], None]:
        gen = self.gen

        def run(tampered: bool) -> None:
            if self.gen == gen and self.up:
                self._take(f, tampered, pushed=True)

        return run

    def fetch(self, subject: str | None = None) -> None:
        """Ask the store for everything after our cursor (one request, one batch back)."""
        if not self.up:
            return
        for s in [subject] if subject is not None else sorted(self.subjects):
            self._fetch_one(s)

    def _fetch_one(self, subject: str) -> None:
        if self._fetching.get(subject):
            return
        w = self.world
        self._fetching[subject] = self.gen
        gen = self.gen

        def timeout() -> None:
            if self._fetching.get(subject) == gen:
                self._fetching[subject] = 0

        w.sched.after(FETCH_TIMEOUT_MS, timeout)

        def at_store(_t: bool) -> None:
            if not w.store.up:
                return
            batch = w.store.fetch(subject, self.store.cursor(subject), w.clock.now)
            size = sum(len(x.data) for x in batch) + 16

            def back(tampered: bool) -> None:
                if self.gen != gen or not self.up:
                    return
                self._fetching[subject] = 0
                bad = w.rng.randrange(len(batch)) if tampered and batch else -1
                for i, x in enumerate(batch):
                    if self.gen != gen or not self.up:
                        return
                    self._take(x, i == bad, pushed=False)
                if len(batch) >= 500:
                    self.fetch(subject)

            w.net.transmit(self.name, size, back, may_tamper=True)

        w.net.transmit(self.name, FETCH_REQ_BYTES, at_store, may_duplicate=False)

    def _take(self, f: StoredFrame, tampered: bool, pushed: bool) -> None:
        self._busy()
        cur = self.store.cursor(f.subject)
        if f.seq <= cur:
            return  # already processed (a duplicate delivery)
        if f.prev_seq > cur:
            self.world.stats["push_gaps"] += 1
            self.fetch(f.subject)  # something before it is missing: ordered-consumer reset
            return
        self._process(f, tampered)

    def _process(self, f: StoredFrame, tampered: bool) -> None:
        w = self.world
        data = _flip(f.data, w.rng.randrange(1 << 30)) if tampered else f.data
        if f.subject != self.inbox:
            self._process_group(f.subject, f.seq, data, True, f, tampered)
            return
        assert self.engine is not None
        self._ctl_from = None
        try:
            r = self.engine.receive(data, cursor=(self.inbox, f.seq))
        except DuplicateMessage:
            w.stats["ratchet_duplicates"] += 1
            self._reack(data)
            return
        except ChatCoreError as exc:
            w.stats["rejected:" + type(exc).__name__] += 1
            w.oracle.rejected(self, f, tampered, exc)
            return
        except Exception as exc:  # the engine must only raise typed errors
            w.oracle.violation(
                f"untyped exception from Engine.receive at {self.name}: "
                f"{type(exc).__name__}: {exc} (tampered={tampered})"
            )
            return
        finally:
            ctl, self._ctl_from = self._ctl_from, None
        if r is None:
            if ctl is not None:  # a group control frame (ops, welcome, sender keys)
                cid = hashlib.sha256(data).digest()[:8]
                self.store.set_meta("sim.acc:" + frame_msg_id(data), ctl + CONTROL_CONV + cid)
                self._ack(ctl, CONTROL_CONV, cid)
                self._after_control()
                if self.online:
                    self.tick()
                return
            w.stats["payload_duplicates_or_signals"] += 1  # Features acked a duplicate again
            return
        if r.content_type != ContentType.TEXT:
            return  # a receipt that changed a message's status (an event for the app)
        w.oracle.delivered(self, r)
        # modelled: Received does not expose the history. Only messages addressed to this
        # installation can be missing here (one linked mid-run never had the older ones).
        hist = w.oracle.history_for(r.message_id, self.name)
        arr = self.rel.log(r.conversation_id).received(r.message_id, hist, w.clock.now)
        w.stats["gaps_detected"] += len(arr.missing)
        with self.store.transaction():
            self._save_rel()
        if self.online:
            self.tick()  # the client's timer: a receipt may be due

    def _process_group(
        self,
        subject: str,
        seq: int,
        data: bytes,
        live: bool,
        f: StoredFrame | None = None,
        tampered: bool = False,
    ) -> bool:
        """One frame from a group topic (``live``: in cursor order; else a held retry)."""
        w = self.world
        assert self.groups is not None
        if w.oracle.group_frame_sender(f.data if f is not None else data) == self.name:
            # our own frame echoed by the topic: a client knows its own msg ids; skip it
            if live:
                self.store.set_cursor(subject, seq)
            return True
        try:
            r = self.groups.receive(subject, data, (subject, seq) if live else None)
        except DuplicateMessage:
            w.stats["group_duplicates"] += 1
            self._unhold(subject, seq)
            return True
        except ChatCoreError as exc:
            if live:
                w.stats["group_rejected:" + type(exc).__name__] += 1
                w.oracle.group_rejected(self, subject, seq, data, tampered, exc)
            else:
                w.oracle.group_rejected(self, subject, seq, data, tampered, exc, quiet=True)
            self._hold(subject, seq, data, exc)
            return False
        except Exception as exc:  # the engine must only raise typed errors
            w.oracle.violation(
                f"untyped exception from GroupChat.receive at {self.name}: "
                f"{type(exc).__name__}: {exc} (tampered={tampered})"
            )
            return False
        self._unhold(subject, seq)
        if r is None:
            w.stats["group_payload_duplicates"] += 1
            return True
        self._delivered_group(r)
        return True

    def _delivered_group(self, r: Received) -> None:
        w = self.world
        assert self.groups is not None
        w.oracle.delivered(self, r)
        if w.cfg.group_member_check:
            st = self.groups.load(r.conversation_id)
            s = w.oracle.msgs.get(r.message_id)
            if (
                st is not None
                and r.sender_identity not in st.members()
                # a leaver's message sent before it left (no later than the op that took it
                # out, in the receiver's view) may still arrive: the core retires its chains
                and not (
                    s is not None
                    and s.epoch <= removal_message_epoch(st.ops, r.sender_identity, -1)
                )
            ):
                w.oracle.violation(
                    f"{self.name} accepted a group message from "
                    f"{w.user_of(r.sender_identity).name}, not a member in its view"
                )

    # --- held group frames (simulator mechanism; see HELD_REFETCH_MS) --------------------------
    def _hold(self, subject: str, seq: int, data: bytes, exc: ChatCoreError) -> None:
        if (subject, seq) in self._held:
            return
        assert self.groups is not None
        if isinstance(exc, DecryptionError) and "no key for this message" in str(exc):
            return  # definitive: sent before our copy of that chain starts (before we joined)
        gid = self.store.group_by_subject(subject)
        st = self.groups.load(gid) if gid is not None else None
        held = st is not None and (st.is_member or st.out_for_a_while or st.held_out)
        if not held or len(self._held) >= HELD_MAX:  # (as GroupChat._hold)
            return
        now = self.world.clock.now
        # refetches left: the last field counts down (see HELD_REFETCH_GROUP_ERROR)
        tries = len(HELD_REFETCH_MS) - (
            HELD_REFETCH_GROUP_ERROR if isinstance(exc, GroupError) else len(HELD_REFETCH_MS)
        )
        self._held[(subject, seq)] = [data, tries, now + HELD_REFETCH_MS[tries], now]
        self.world.stats["group_held"] += 1
        self._save_held()
        if self.up:
            self.arm(now + HELD_REFETCH_MS[tries])

    def _unhold(self, subject: str, seq: int) -> None:
        if self._held.pop((subject, seq), None) is not None:
            self.world.stats["group_unheld"] += 1
            self._save_held()

    def _held_tick(self, now: int) -> int | None:
        """Re-fetch due held frames from the store; drop expired ones. Next due time."""
        nxt: int | None = None
        changed = False
        for key in sorted(self._held):
            e = self._held[key]
            if now - e[3] > HELD_MAX_AGE_MS:
                del self._held[key]
                changed = True
                continue
            if e[1] >= len(HELD_REFETCH_MS):
                continue
            if e[2] <= now:
                e[1] += 1
                e[2] = now + (HELD_REFETCH_MS[e[1]] if e[1] < len(HELD_REFETCH_MS) else 0)
                changed = True
                self._refetch(*key)
            if e[1] < len(HELD_REFETCH_MS):
                nxt = e[2] if nxt is None else min(nxt, e[2])
        if changed:
            self._save_held()
        return nxt

    def _refetch(self, subject: str, seq: int) -> None:
        w = self.world
        w.stats["group_refetch"] += 1
        gen = self.gen
        answered = [False]

        def timeout() -> None:
            # a request or reply lost on the way is retried, not counted as an attempt (a
            # fetch with a timeout, as the cursor fetch); bounded by HELD_MAX_AGE_MS
            e = self._held.get((subject, seq))
            if answered[0] or e is None or self.gen != gen or not self.up:
                return
            w.stats["group_refetch_lost"] += 1
            e[1] = max(0, e[1] - 1)
            e[2] = w.clock.now
            self.arm(w.clock.now)

        w.sched.after(FETCH_TIMEOUT_MS, timeout)

        def at_store(_t: bool) -> None:
            if not w.store.up:
                return
            got = [x for x in w.store.fetch(subject, seq - 1, w.clock.now, limit=1) if x.seq == seq]
            if not got:
                answered[0] = True  # gone from the store (retention): an empty answer
                return
            x = got[0]

            def back(tampered: bool) -> None:
                answered[0] = True
                if self.gen != gen or not self.up or (subject, seq) not in self._held:
                    return
                data = _flip(x.data, w.rng.randrange(1 << 30)) if tampered else x.data
                self._process_group(subject, seq, data, False, x, tampered)

            w.net.transmit(self.name, len(x.data) + 16, back, may_tamper=True)

        w.net.transmit(self.name, FETCH_REQ_BYTES, at_store, may_duplicate=False)

    def _save_held(self) -> None:
        doc = [[k[0], k[1], e[0].hex(), e[1], e[2], e[3]] for k, e in sorted(self._held.items())]
        self.store.set_meta("sim.held", json.dumps(doc).encode())

    def _reack(self, data: bytes) -> None:
        raw = self.store.get_meta("sim.acc:" + frame_msg_id(data))
        if raw is not None:
            self._ack(raw[:32], raw[32:48], raw[48:56])

    # --- receipts (modelled) ------------------------------------------------------------------
    def _ack(self, to_inst: bytes, conv: bytes, mid: bytes) -> None:
        w = self.world
        if not w.cfg.send_receipts:
            return
        first = not self._acks
        self._acks.setdefault(to_inst, []).append((conv, mid))
        if first:
            w.sched.after(ACK_BATCH_MS, self._guard(self._flush_acks))

    def _flush_acks(self) -> None:
        w = self.world
        acks, self._acks = self._acks, {}
        me = self.keys.installation_id
        for inst in sorted(acks):
            items = acks[inst]
            dest = w.by_installation.get(inst)
            if dest is None:
                continue
            size = receipt_size(len(items))

            def at_store(
                _t: bool,
                dest: Device = dest,
                items: list[tuple[bytes, bytes]] = items,
                size: int = size,
            ) -> None:
                if not w.store.up:
                    return
                if dest.up:
                    w.net.transmit(dest.name, size, dest._guard(lambda: dest.receipts(me, items)))

            w.net.transmit(self.name, size, at_store)

    def receipts(self, from_inst: bytes, items: list[tuple[bytes, bytes]]) -> None:
        """Receipts from ``from_inst``: those messages need no more retransmission to it."""
        with self.store.transaction():
            for conv, mid in items:
                self.rel.acked(conv, mid, from_inst)
                key = f"sim.f:{mid.hex()}{from_inst.hex()}"
                if self.store.get_meta(key):
                    self.store.set_meta(key, b"")  # the kept frame is no longer needed
            self._save_rel()

    def _save_rel(self) -> None:
        self.store.set_meta("sim.rel", self.rel.to_bytes())


def _inbox_of(w: World, inst: bytes) -> str:
    return w.by_installation[inst].inbox
