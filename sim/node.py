"""A simulated installation (device): the real :class:`chatcore.engine.Engine` over its own
:class:`chatcore.store.Store`, plus the client behaviour the engine leaves to its caller.

Client behaviour modelled here (what ``chatcore.client`` does or should do):

* publish every outbox frame; a frame leaves the outbox only when the store's ack comes back;
  unacked frames are re-published with exponential backoff (``OUTBOX_BACKOFF_MS``);
* consume the inbox like an ordered JetStream consumer: a pushed frame is taken only if it is
  the next one after the persisted cursor; a gap (or a reconnect, restart, store restart, a
  slow safety timer) triggers a fetch from the cursor;
* end-to-end reliability from :mod:`chatcore.reliability`: recipients acknowledge (receipts,
  *modelled* as a simulator message, see docs/reliability.md), the sender re-publishes the same
  frame under a fresh ``msg_id`` until every recipient installation acked it.

Crash = the Engine and all in-memory state are dropped (in-flight callbacks are ignored by a
generation counter); restart = a new Engine on the same Store, reliability state reloaded from
the store's ``meta`` table. Nothing here survives a crash except what is in the Store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chatcore.engine import Engine, OwnIdentity, direct_conversation_id, frame_msg_id
from chatcore.errors import ChatCoreError, DuplicateMessage
from chatcore.keys import InstallationKeys, PeerKeys, SignedPrekey
from chatcore.payload import MAX_HISTORY, ContentType
from chatcore.reliability import Reliability
from chatcore.store import Store
from sim.network import StoredFrame

if TYPE_CHECKING:
    from sim.runner import World

__all__ = ["Device", "receipt_size"]

OUTBOX_BACKOFF_MS = (500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000)
#: safety fetch while online (the JetStream redelivery / AckWait analogue): every POLL_MS,
#: doubling while fetches come back empty, up to POLL_MAX_MS; reset by any traffic
POLL_MS = 30_000
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
        self.gen = 0
        self.engine: Engine | None = None
        self.rel = Reliability(world.cfg.retry_policy)
        self._wake_at: int | None = None
        self._fetching = 0  # generation of the fetch in flight (0: none)
        self._acks: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._poll_every = POLL_MS
        self._next_poll = 0
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
        self.inbox = self.engine.inbox
        raw = self.store.get_meta("sim.rel")
        self.rel = (
            Reliability.from_bytes(raw, w.cfg.retry_policy)
            if raw
            else Reliability(w.cfg.retry_policy)
        )
        self._acks = {}
        self._fetching = 0
        self._wake_at = None
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
        self.world.event(f"crash {self.name}")

    def restart(self) -> None:
        if self.alive:
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
        self.online = True
        self.gen += 1
        self.world.net.partitioned.discard(self.name)
        self._fetching = 0
        self._wake_at = None
        self.world.event(f"online {self.name}")
        self.reconnected()

    def reconnected(self) -> None:
        """(Re)connected to the network: catch up from the cursor, flush, rearm timers."""
        if not self.up:
            return
        self.fetch()
        self.tick()

    def _guard(self, fn: Callable[[], None]) -> Callable[[bool], None]:
        gen = self.gen

        def run(_tampered: bool = False) -> None:
            if self.gen == gen and self.up:
                fn()

        return run

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
        self.flush_outbox()
        if now >= self._next_poll:
            self.fetch()
            self._next_poll = now + self._poll_every
            self._poll_every = min(POLL_MAX_MS, self._poll_every * 2)
        if w.cfg.e2e_retry:
            for rt in self.rel.due(now):
                for inst in rt.recipients:
                    raw = self.store.get_meta(f"sim.f:{rt.message_id.hex()}{inst.hex()}")
                    if not raw:
                        continue
                    msg_id, frame = raw[:32].decode(), raw[32:]
                    w.stats["retransmits"] += 1
                    self._publish(
                        _inbox_of(w, inst), frame, f"{msg_id}.r{rt.attempt}", lambda _s: None
                    )
            self._save_rel()
        nxt = [self._next_poll]
        if w.cfg.retry_outbox and self.store.outbox_size():
            nxt.append(now + OUTBOX_BACKOFF_MS[0])
        d = self.rel.next_due() if w.cfg.e2e_retry else None
        if d is not None:
            nxt.append(max(d, now + 1))
        self.arm(min(nxt))

    # --- sending ------------------------------------------------------------------------------
    def send_text(self, peer_user: str, body: bytes) -> bytes | None:
        """The user types a message to ``peer_user``. Returns the message id (None if the app
        is not running)."""
        if not self.alive or self.engine is None:
            return None
        w = self.world
        peer = w.directory.peer(w.users[peer_user].identity_id)
        own = w.directory.peer(self.identity_id).installations
        conv = direct_conversation_id(self.identity_id, peer.identity_id)
        history = tuple(self.store.recent_short_ids(conv, MAX_HISTORY - 1))
        res = self.engine.send(peer, ContentType.TEXT, body, own)
        recipients = [i.installation_id for i in peer.installations] + [
            i.installation_id for i in own if i.installation_id != self.keys.installation_id
        ]
        w.oracle.sent(self, res, history, recipients)
        self._busy()
        with self.store.transaction():
            for f, inst in zip(res.frames, recipients, strict=True):
                self.store.set_meta(
                    f"sim.f:{res.message_id.hex()}{inst.hex()}", f.msg_id.encode() + f.frame
                )
            self.rel.log(conv).sent(res.message_id, recipients, w.clock.now)
            self._save_rel()
        if self.online:
            self.tick()
        return res.message_id

    def flush_outbox(self) -> None:
        w = self.world
        now = w.clock.now
        for item in self.store.pending_outbox(now):
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

    # --- receiving ----------------------------------------------------------------------------
    def pushed(self, f: StoredFrame) -> None:
        """The store pushes a new frame on our inbox (if we are connected)."""
        if not self.up:
            return
        self.world.net.transmit(self.name, len(f.data), self._guard_frame(f), may_tamper=True)

    def _guard_frame(self, f: StoredFrame) -> Callable[[bool], None]:
        gen = self.gen

        def run(tampered: bool) -> None:
            if self.gen == gen and self.up:
                self._take(f, tampered, pushed=True)

        return run

    def fetch(self) -> None:
        """Ask the store for everything after our cursor (one request, one batch back)."""
        if not self.up or self._fetching:
            return
        w = self.world
        self._fetching = self.gen
        gen = self.gen

        def timeout() -> None:
            if self._fetching == gen:
                self._fetching = 0

        w.sched.after(FETCH_TIMEOUT_MS, timeout)

        def at_store(_t: bool) -> None:
            if not w.store.up:
                return
            batch = w.store.fetch(self.inbox, self.store.cursor(self.inbox), w.clock.now)
            size = sum(len(x.data) for x in batch) + 16

            def back(tampered: bool) -> None:
                if self.gen != gen or not self.up:
                    return
                self._fetching = 0
                bad = w.rng.randrange(len(batch)) if tampered and batch else -1
                for i, x in enumerate(batch):
                    self._take(x, i == bad, pushed=False)
                if len(batch) >= 500:
                    self.fetch()

            w.net.transmit(self.name, size, back, may_tamper=True)

        w.net.transmit(self.name, FETCH_REQ_BYTES, at_store, may_duplicate=False)

    def _take(self, f: StoredFrame, tampered: bool, pushed: bool) -> None:
        self._busy()
        cur = self.store.cursor(self.inbox)
        if f.seq <= cur:
            return  # already processed (a duplicate delivery)
        if f.prev_seq > cur:
            self.world.stats["push_gaps"] += 1
            self.fetch()  # something before it is missing: ordered-consumer reset
            return
        self._process(f, tampered)

    def _process(self, f: StoredFrame, tampered: bool) -> None:
        w = self.world
        assert self.engine is not None
        data = _flip(f.data, w.rng.randrange(1 << 30)) if tampered else f.data
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
        if r is None:
            w.stats["payload_duplicates"] += 1
            self._reack(data)
            return
        w.oracle.delivered(self, r)
        hist = w.oracle.history_of(r.message_id)  # modelled: Received does not expose it
        arr = self.rel.log(r.conversation_id).received(r.message_id, hist, w.clock.now)
        w.stats["gaps_detected"] += len(arr.missing)
        with self.store.transaction():
            self.store.set_meta(
                "sim.acc:" + frame_msg_id(data),
                r.sender_installation + r.conversation_id + r.message_id,
            )
            self._save_rel()
        self._ack(r.sender_installation, r.conversation_id, r.message_id)

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
                _t: bool, dest: Device = dest, items: list = items, size: int = size
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
