"""NATS JetStream adapter of the delivery network.

One stream (default ``LOGOS``) holds every subject under ``lc.v1.>`` on file storage, with a
retention window (``max_age``) and a duplicate window for ``Nats-Msg-Id`` dedup.

* ``publish`` is a JetStream publish that awaits the PubAck. Every publish carries a
  ``Nats-Msg-Id`` (the caller's ``msg_id``, else a random one), so the adapter's own retries
  while the server is restarting can never store a message twice. Bounded: after
  ``op_timeout`` seconds it raises TransportError.
* A subscription is one ephemeral push consumer (AckPolicy.NONE, so the 1,000-unacked stall of
  explicit-ack pull consumers does not apply; flow control for back-pressure; idle heartbeats)
  with one filter subject per subscribed subject, started at ``min(cursor)+1``. The adapter
  keeps per-subject cursors and drops anything at or below them, checks the consumer sequence
  for gaps, and recreates the consumer from its cursors after a gap, a missed heartbeat, a
  reconnect (e.g. a nats-server restart) or ``add_subjects``. That is the "ordered consumer"
  pattern, done here so that several filter subjects and per-subject cursors fit in it.
* ``fetch`` uses a short-lived ephemeral pull consumer (AckPolicy.NONE) on one subject.
* A stream that is gone (the server lost its store, or someone deleted the stream) is made
  again by the next operation that misses it. A stream made again numbers its messages from 1
  again: ``stream_id`` (name and creation time) tells it apart, so that a client drops cursors
  of the old one, and a subscription whose consumer is recreated on a new stream reads it
  from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from chatcore.errors import FrameRefused, TransportError
from chatcore.transport.base import (
    SUBJECT_PREFIX,
    Cursor,
    Delivery,
    resolve_cursors,
    validate_subject,
)

__all__ = ["NatsSubscription", "NatsTransport"]

T = TypeVar("T")

_STATUS = "Status"
_STREAM_NOT_FOUND = 10059  # JetStream API err_code
_MSG_ID = "Nats-Msg-Id"
_RETRYABLE = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.UnexpectedEOF,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    ConnectionError,
    OSError,
)


def _parse_ack_reply(reply: str) -> tuple[int, int, int]:
    """(stream seq, consumer seq, timestamp ms) from a ``$JS.ACK...`` reply subject."""
    t = reply.split(".")
    if len(t) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        o = 0
    elif len(t) >= 11:  # $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>...
        o = 2
    else:
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    return int(t[5 + o]), int(t[6 + o]), int(t[7 + o]) // 1_000_000


def _status(msg: Msg) -> str | None:
    h = msg.headers
    if not h:
        return None
    return h.get(_STATUS)


def _servers(url: str) -> list[str]:
    """The servers of a URL (comma-separated), each scheme in lower case (nats-py knows
    ``tls://`` only so: ``TLS://host`` was taken as a plain server named "tls").
    TransportError for a URL that mixes ``tls://`` servers with others: nats-py would go on
    to a plain one whenever a TLS one does not answer (anyone able to block it downgrades
    the connection), and take the servers a plain one names as plain ones too."""
    servers = []
    for u in (u.strip() for u in url.split(",")):
        if u:
            scheme, sep, rest = u.partition("://")
            servers.append(scheme.lower() + sep + rest if sep else u)
    tls = [u.startswith("tls://") for u in servers]
    if any(tls) and not all(tls):
        raise TransportError(
            f"the delivery network URL {url!r} mixes tls:// servers with plain ones: "
            "make every one tls://"
        )
    return servers


class _StrictTlsClient(NatsClient):
    """nats-py upgrades a ``tls://`` connection to TLS only when the server's INFO asks for it,
    so a server (or anyone in between) that does not ask would get it in plain text. This one
    refuses before CONNECT is sent, on the first connection and on every reconnect (as the Go
    client's ``ErrSecureConnWanted``)."""

    tls_refused: str | None = None

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        await super()._process_info(info, initial_connection)
        server = self._current_server
        if initial_connection and server is not None and server.uri.scheme == "tls":
            if not info.get("tls_required"):
                self.tls_refused = f"the server at tls://{server.uri.netloc} did not ask for TLS"
                raise nats.errors.Error(f"nats: {self.tls_refused}")


def _why(e: BaseException | None) -> str:
    """A failure in words for an error line (a repr such as "TimeoutError()" is for logs)."""
    if e is None:
        return "no answer"
    if isinstance(e, TimeoutError | asyncio.TimeoutError):  # (nats-py's are ones too)
        return "timed out"
    return str(e).strip() or type(e).__name__


async def _probe(url: str, timeout: float) -> bool:
    """True if at least one of the servers accepts a TCP connection within ``timeout``."""
    for u in _servers(url):
        parts = urlsplit(u if "://" in u else f"nats://{u}")
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (TimeoutError, OSError):
            continue
        w.close()
        with contextlib.suppress(Exception):
            await w.wait_closed()
        return True
    return False


def _cancels() -> int:
    """How many cancellations of the current task are pending (``Task.cancelling``)."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def _still_cancelled(before: int) -> None:
    """Raise CancelledError if the current task was cancelled since ``before`` (``_cancels``)
    although the awaited call returned: Python 3.11's ``asyncio.wait_for`` (inside nats-py's
    requests) returns the result when a cancellation arrives as that result does, and the
    cancellation is lost. Then a ``listen()`` cancelled at that moment read on for ever (the
    app's ``task.cancel(); await task`` hung) and a ``sync()`` finished its whole read."""
    if _cancels() > before:
        raise asyncio.CancelledError


class _FlowControl:
    __slots__ = ("reply",)

    def __init__(self, reply: str) -> None:
        self.reply = reply


_CLOSED = object()


class NatsSubscription:
    """Replaying subscription backed by one ephemeral push consumer (see module doc)."""

    def __init__(self, transport: NatsTransport) -> None:
        self._t = transport
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._filt: dict[str, int] = {}  # per subject: highest seq accepted (dedup floor)
        self._cursors: dict[str, int] = {}  # per subject: highest seq handed out
        self._closed = False
        self._gen = 0
        self._nsub: Any = None
        self._consumer: str | None = None
        self._consumer_filters: frozenset[str] = frozenset()
        self._cseq = 0
        self._pos = 0
        self._fc_pending: set[str] = set()
        self._last_activity = time.monotonic()
        self._need_reset = asyncio.Event()
        self._lock = asyncio.Lock()
        self._maint: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self._stream_created: str | None = None  # of the stream the cursors are of
        self.last_reset_reason = ""
        self.resets = 0  # consumers created (1 + recreations); for tests and diagnostics

    # ---- public -------------------------------------------------------------------------
    @property
    def subjects(self) -> frozenset[str]:
        return frozenset(self._filt)

    @property
    def cursors(self) -> dict[str, int]:
        return dict(self._cursors)

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> NatsSubscription:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)
                raise StopAsyncIteration
            if isinstance(item, _FlowControl):
                self._fc_pending.discard(item.reply)
                if not self._closed:
                    with contextlib.suppress(Exception):
                        await self._t._nc.publish(item.reply, b"")
                continue
            assert isinstance(item, Delivery)
            if item.seq > self._cursors.get(item.subject, 0):
                self._cursors[item.subject] = item.seq
            return item

    async def add_subjects(self, subjects: Sequence[str], after: Cursor = None) -> None:
        if self._closed:
            raise TransportError("subscription is closed")
        subjects = list(subjects) if not isinstance(subjects, str) else subjects
        last = await self._t.last_seq() if after is None else 0
        cursors = resolve_cursors(subjects, after, last)
        new = {s: c for s, c in cursors.items() if s not in self._filt}
        if not new:
            return
        for s, c in new.items():
            self._filt[s] = c
            self._cursors[s] = c
        await self._t._retry(self._reset, "add subjects to a subscription")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._gen += 1
        self._t._subs.discard(self)
        if self._maint is not None:
            self._maint.cancel()
            try:
                await self._maint
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            except Exception:
                pass
        await self._drop_consumer()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)

    # ---- internals ----------------------------------------------------------------------
    async def _start(self, cursors: dict[str, int]) -> None:
        self._filt.update(cursors)
        self._cursors.update(cursors)
        await self._t._retry(self._reset, "subscribe")
        self._maint = asyncio.get_running_loop().create_task(
            self._maintain(), name="lc-nats-subscription"
        )

    async def _drop_consumer(self) -> None:
        nsub, name = self._nsub, self._consumer
        self._nsub = self._consumer = None
        if nsub is not None:
            with contextlib.suppress(Exception):
                await nsub.unsubscribe()
        if name is not None and self._t._nc.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._t._jsm.delete_consumer(self._t.stream, name), 1.0)

    def _invalidate(self, reason: str) -> None:
        """Stop accepting from the current consumer; schedule its replacement."""
        self.last_reset_reason = reason
        self._gen += 1
        self._need_reset.set()

    async def _reset(self) -> None:
        """(Re)create the consumer from the per-subject cursors."""
        async with self._lock:
            if self._closed:
                return
            self._gen += 1
            gen = self._gen
            # everything on the old consumer's filters up to its position was accepted in order
            for s in self._consumer_filters:
                if s in self._filt and self._filt[s] < self._pos:
                    self._filt[s] = self._pos
            self._consumer_filters = frozenset()
            await self._drop_consumer()
            if not self._filt:
                return
            created = await self._t._stream_created()
            if self._stream_created is not None and created != self._stream_created:
                # a new stream under the old name: its sequence numbers started over, so
                # everything on it is new to us
                self._filt = dict.fromkeys(self._filt, 0)
                self._cursors = dict.fromkeys(self._cursors, 0)
                self.last_reset_reason = "the stream was made again"
            self._stream_created = created
            start = min(self._filt.values()) + 1
            filters = sorted(self._filt)
            nc = self._t._nc
            inbox = nc.new_inbox()

            async def cb(msg: Msg) -> None:
                self._on_msg(msg, gen)

            # state for the new consumer must be in place before it is created: its first
            # messages can reach ``cb`` before the create request returns
            self._cseq = 0
            self._pos = start - 1
            self._consumer_filters = frozenset(filters)
            self._fc_pending.clear()
            self._last_activity = time.monotonic()
            self._need_reset.clear()
            nsub = await nc.subscribe(inbox, cb=cb)
            name = "lcs_" + secrets.token_hex(8)
            hb = self._t.heartbeat_s
            cfg = api.ConsumerConfig(
                name=name,
                deliver_subject=inbox,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=api.AckPolicy.NONE,
                replay_policy=api.ReplayPolicy.INSTANT,
                flow_control=True,
                idle_heartbeat=hb,
                inactive_threshold=max(10.0, 5 * hb),
                mem_storage=True,
                num_replicas=1,
            )
            if len(filters) == 1:
                cfg.filter_subject = filters[0]
            else:
                cfg.filter_subjects = filters
            try:
                await self._t._jsm.add_consumer(
                    self._t.stream, cfg, timeout=self._t.request_timeout
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await nsub.unsubscribe()
                raise
            # (if it was invalidated meanwhile, _need_reset is set and the maintainer redoes it)
            self._nsub, self._consumer = nsub, name
            self.resets += 1
            if self._closed:  # closed while the consumer was being created
                await self._drop_consumer()

    def _on_msg(self, msg: Msg, gen: int) -> None:
        if gen != self._gen or self._closed:
            return
        self._last_activity = time.monotonic()
        status = _status(msg)
        if status is not None:
            if status == "100":
                if msg.reply:  # flow control request: answer once the app consumed up to here
                    self._fc_pending.add(msg.reply)
                    self._queue.put_nowait(_FlowControl(msg.reply))
                    return
                h = msg.headers or {}
                last_c = h.get("Nats-Last-Consumer")
                if last_c is not None and int(last_c) != self._cseq:
                    self._invalidate("heartbeat: missed messages")
                    return
                stalled = h.get("Nats-Consumer-Stalled")
                if stalled and stalled not in self._fc_pending:
                    task = asyncio.get_running_loop().create_task(self._safe_publish(stalled))
                    self._bg.add(task)
                    task.add_done_callback(self._bg.discard)
                return
            self._invalidate(f"status {status}")  # 409 consumer deleted, leader change, ...
            return
        try:
            sseq, cseq, ts_ms = _parse_ack_reply(msg.reply)
        except ValueError:
            return
        if cseq != self._cseq + 1:
            self._invalidate("consumer sequence gap")
            return
        self._cseq = cseq
        self._pos = sseq
        floor = self._filt.get(msg.subject)
        if floor is None or sseq <= floor:
            return
        self._filt[msg.subject] = sseq
        self._queue.put_nowait(Delivery(msg.subject, msg.data, sseq, ts_ms))

    async def _safe_publish(self, subject: str) -> None:
        with contextlib.suppress(Exception):
            await self._t._nc.publish(subject, b"")

    async def _maintain(self) -> None:
        hb = self._t.heartbeat_s
        backoff = 0.05
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._need_reset.wait(), timeout=hb)
            if self._closed:
                return
            stale = time.monotonic() - self._last_activity > 3 * hb
            if not (self._need_reset.is_set() or stale or self._consumer is None):
                continue
            if not self._t._nc.is_connected:
                continue  # reconnected_cb will wake us
            try:
                await self._reset()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                self._need_reset.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)


class NatsTransport:
    """The Transport interface over NATS JetStream. Create with :meth:`connect`."""

    def __init__(
        self,
        nc: NatsClient,
        url: str,
        stream: str,
        *,
        request_timeout: float,
        op_timeout: float,
        heartbeat_s: float,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=request_timeout)
        self._jsm = nc.jsm(timeout=request_timeout)
        self.url = url
        self.stream = stream
        self.request_timeout = request_timeout
        self.op_timeout = op_timeout
        self.heartbeat_s = heartbeat_s
        self._subs: set[NatsSubscription] = set()
        self._closed = False
        self.reconnects = 0
        # how to make the stream again if it is gone: (max_age_s, duplicate window, replicas)
        self._stream_cfg: tuple[float, float, int] | None = None

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        url: str,
        stream: str = "LOGOS",
        max_age_s: float = 30 * 86400,
        *,
        duplicate_window_s: float = 600.0,
        replicas: int = 1,
        create_stream: bool = True,
        connect_timeout: float = 2.0,
        request_timeout: float = 2.0,
        op_timeout: float = 10.0,
        heartbeat_s: float = 1.0,
        name: str | None = None,
    ) -> NatsTransport:
        """Connect (raises TransportError within ~``connect_timeout`` if unreachable) and make
        sure the stream exists (created with the given retention if missing; an existing
        stream is used as configured)."""
        cancels = _cancels()
        if not await _probe(url, connect_timeout):
            raise TransportError(f"delivery network unreachable at {url}")
        holder: list[NatsTransport] = []

        async def on_reconnect() -> None:
            if holder:
                holder[0]._on_reconnected()

        async def on_error(e: Exception) -> None:
            if nc.tls_refused and not holder:  # first connection: give up at once
                raise e

        async def on_disconnect() -> None:
            return None

        nc = _StrictTlsClient()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=_servers(url),
                    name=name or "logos-chat",
                    connect_timeout=connect_timeout,  # type: ignore[arg-type]
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.2,  # type: ignore[arg-type]
                    ping_interval=10,
                    max_outstanding_pings=3,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                ),
                timeout=connect_timeout + 0.5,
            )
        except (TimeoutError, Exception) as e:
            with contextlib.suppress(Exception):
                await nc.close()
            if nc.tls_refused:
                raise TransportError(f"refused the delivery network: {nc.tls_refused}") from e
            raise TransportError(f"delivery network unreachable at {url}: {_why(e)}") from e
        t = cls(
            nc,
            url,
            stream,
            request_timeout=request_timeout,
            op_timeout=op_timeout,
            heartbeat_s=heartbeat_s,
        )
        holder.append(t)
        try:
            await t._ensure_stream(max_age_s, duplicate_window_s, replicas, create_stream)
            _still_cancelled(cancels)
        except BaseException:
            await t.close()
            raise
        return t

    async def _ensure_stream(
        self, max_age_s: float, dup_s: float, replicas: int, create: bool
    ) -> None:
        if create:
            self._stream_cfg = (max_age_s, dup_s, replicas)
        await self._retry(self._stream_info, f"set up stream {self.stream}")

    async def _stream_info(self) -> api.StreamInfo:
        """The stream's info; a stream that is gone is made again (if this transport may)."""
        try:
            return await self._jsm.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            if self._stream_cfg is None:
                raise TransportError(f"stream {self.stream} does not exist at {self.url}") from None
        max_age_s, dup_s, replicas = self._stream_cfg
        cfg = api.StreamConfig(
            name=self.stream,
            subjects=[SUBJECT_PREFIX + ">"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_age=max_age_s,
            duplicate_window=min(dup_s, max_age_s),
            num_replicas=replicas,
        )
        try:
            return await self._jsm.add_stream(cfg)
        except nats.js.errors.BadRequestError:
            return await self._jsm.stream_info(self.stream)  # created concurrently by someone else

    async def _stream_created(self) -> str:
        info = await self._stream_info()
        return info.created.isoformat() if info.created is not None else ""

    async def stream_id(self) -> str:
        """The stream's name and creation time: it changes when the stream is made again (its
        sequence numbers, so every cursor, start over then)."""
        self._check()
        return f"{self.stream}@{await self._retry(self._stream_created, 'read stream')}"

    # ---- helpers --------------------------------------------------------------------------
    def _check(self) -> None:
        if self._closed:
            raise TransportError("transport is closed")

    def _on_reconnected(self) -> None:
        self.reconnects += 1
        for s in list(self._subs):
            s._need_reset.set()

    async def _retry(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """Run an idempotent ``op`` until it succeeds, retrying transient failures with
        backoff; TransportError after ``op_timeout`` seconds."""
        deadline = time.monotonic() + self.op_timeout
        backoff = 0.05
        last: BaseException | None = None
        cancels = _cancels()
        while True:
            if self._nc.is_closed:
                raise TransportError(f"{what}: connection to {self.url} is closed")
            try:
                result = await op()
                _still_cancelled(cancels)
                return result
            except TransportError:
                raise
            except nats.js.errors.APIError as e:
                if getattr(e, "err_code", None) == _STREAM_NOT_FOUND:
                    last = e
                    await self._remake_stream()
                elif getattr(e, "code", None) not in (503, 408, 500, None):
                    raise FrameRefused(f"{what} refused by {self.url}: {e}") from e
                else:
                    last = e
            except nats.js.errors.NoStreamResponseError as e:  # no stream takes the subject
                last = e
                await self._remake_stream()
            except _RETRYABLE as e:
                last = e
            except nats.errors.Error as e:
                last = e
            _still_cancelled(cancels)
            if time.monotonic() + backoff > deadline:
                raise TransportError(
                    f"{what}: delivery network unreachable at {self.url} "
                    f"(gave up after {self.op_timeout:.0f}s: {_why(last)})"
                ) from last
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    async def _remake_stream(self) -> None:
        """After an operation missed the stream: make it again if it is gone (the retry then
        finds it); a failure here is the operation's to report. A transport that may not make
        it (``create_stream=False``) says at once that it does not exist (TransportError)."""
        with contextlib.suppress(nats.errors.Error, *_RETRYABLE):
            await self._stream_info()

    # ---- Transport ------------------------------------------------------------------------
    async def publish(self, subject: str, data: bytes, msg_id: str | None = None) -> int:
        self._check()
        validate_subject(subject)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("data must be bytes")
        payload = bytes(data)
        mid = msg_id if msg_id is not None else secrets.token_hex(12)
        if not mid or any(c.isspace() for c in mid):
            raise ValueError("msg_id must be a non-empty string without whitespace")

        async def op() -> int:
            ack = await self._js.publish(
                subject,
                payload,
                timeout=self.request_timeout,
                stream=self.stream,
                headers={_MSG_ID: mid},
            )
            return int(ack.seq)

        return await self._retry(op, f"publish to {subject}")

    async def subscribe(self, subjects: Sequence[str], after: Cursor = None) -> NatsSubscription:
        self._check()
        if isinstance(subjects, str):
            raise TypeError("subjects must be a sequence of subjects, not one str")
        for s in subjects:
            validate_subject(s)
        last = await self.last_seq() if after is None else 0
        cursors = resolve_cursors(list(subjects), after, last)
        sub = NatsSubscription(self)
        self._subs.add(sub)
        try:
            await sub._start(cursors)
        except BaseException:
            await sub.close()
            raise
        return sub

    async def last_seq(self) -> int:
        self._check()

        async def op() -> int:
            info = await self._jsm.stream_info(self.stream)
            return int(info.state.last_seq or 0)

        return await self._retry(op, "read stream state")

    async def stream_summary(self) -> dict[str, object]:
        """Stream name, config and state, for ``devnet status``."""
        self._check()
        info = await self._retry(lambda: self._jsm.stream_info(self.stream), "read stream")
        return {
            "stream": self.stream,
            "subjects": list(info.config.subjects or []),
            "max_age_s": info.config.max_age,
            "duplicate_window_s": info.config.duplicate_window,
            "messages": info.state.messages,
            "bytes": info.state.bytes,
            "first_seq": info.state.first_seq,
            "last_seq": info.state.last_seq,
        }

    async def fetch(self, subject: str, after: int = 0, limit: int = 1000) -> list[Delivery]:
        self._check()
        validate_subject(subject)
        if after < 0 or limit < 0:
            raise ValueError("after and limit must be >= 0")
        if limit == 0:
            return []
        return await self._retry(lambda: self._fetch_once(subject, after, limit), "fetch")

    async def _fetch_once(self, subject: str, after: int, limit: int) -> list[Delivery]:
        name = "lcf_" + secrets.token_hex(8)
        cfg = api.ConsumerConfig(
            name=name,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=subject,
            inactive_threshold=10.0,
            mem_storage=True,
            num_replicas=1,
        )
        info = await self._jsm.add_consumer(self.stream, cfg, timeout=self.request_timeout)
        out: list[Delivery] = []
        try:
            want = min(limit, int(info.num_pending or 0))
            if want == 0:
                return out
            inbox = self._nc.new_inbox()
            nsub = await self._nc.subscribe(inbox)
            try:
                next_subj = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{name}"
                while len(out) < want:
                    batch = min(want - len(out), 1000)
                    req = {"batch": batch, "expires": int(self.request_timeout * 1e9)}
                    await self._nc.publish(next_subj, json.dumps(req).encode(), reply=inbox)
                    got = 0
                    while got < batch:
                        msg = await nsub.next_msg(timeout=self.request_timeout + 0.5)
                        st = _status(msg)
                        if st is not None:
                            if st == "100":
                                continue
                            break  # 404 no messages / 408 expired / 409 ...
                        sseq, _, ts_ms = _parse_ack_reply(msg.reply)
                        out.append(Delivery(msg.subject, msg.data, sseq, ts_ms))
                        got += 1
                    if got == 0:
                        break  # messages expired meanwhile
            finally:
                with contextlib.suppress(Exception):
                    await nsub.unsubscribe()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._jsm.delete_consumer(self.stream, name), 1.0)
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in list(self._subs):
            await s.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._nc.close(), 5.0)
