"""A reconnecting WebSocket client on `websockets` (v17 asyncio), observable frame by frame.

Decisions live in plain objects that test without a loop: `BackoffPolicy` (backoff.py),
`Lifecycle` (lifecycle.py), `RoomTracker` (per-room sequence bookkeeping: gaps,
duplicates, out-of-order, recovery) and `Outbox` (the bounded offline queue plus the
publishes waiting for their ack). `ReconnectingClient` is the async driver doing the I/O.

Errors (one small tree):

    ClientError
    ├── ClientOptionsError (also a ValueError): bad URL, header, token mode, number...
    ├── QueueFull: the offline queue reached `queue_limit`
    ├── NotConnected: an operation needs an open connection (rpc with queueing off)
    └── RpcError: the server answered an rpc with an `error` envelope

Error event kinds (ErrorEvent.kind), stable words for views and scripts: "refused", "dns",
"tls", "timeout", "handshake_rejected" (HTTP status in the detail), "subprotocol",
"protocol", "network", "closed" (an open connection ended; code and reason in the detail),
"liveness" (nothing heard for ping_interval + ping_timeout), "server" (an `error`
envelope), "auth" (token provider failed), "gave_up" (max attempts used).

Delivery event kinds (harness mode): "ack", "gap", "duplicate", "out_of_order",
"recovered", "replayed" (queued messages sent after a reconnect), "recovery_window_exceeded"
and "reset" (`joined` with reset=true: the server's room sequence started again).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import socket
import ssl
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    NegotiationError,
)
from websockets.frames import Close, Frame
from websockets.frames import Opcode as WsOpcode
from websockets.uri import parse_uri

from wsconsole import __version__
from wsconsole.core import envelope
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.driver import ClientStats, ConnectionDriver
from wsconsole.core.events import (
    DeliveryEvent,
    Direction,
    ErrorEvent,
    FrameRecord,
    HeartbeatEvent,
    Observer,
    Opcode,
)
from wsconsole.core.lifecycle import State
from wsconsole.core.tls import client_context
from wsconsole.core.urls import url_problem

log = logging.getLogger(__name__)

TokenProvider = str | Callable[[], str | Awaitable[str]]
TokenMode = Literal["query", "header", "message"]
_TOKEN_CHARS = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 7230 tchar


class ClientError(Exception):
    """Base of the client's own errors."""


class ClientOptionsError(ClientError, ValueError):
    """An option that cannot work (bad URL scheme, malformed header, ...)."""


class QueueFull(ClientError):
    """The offline queue holds `queue_limit` messages already."""


class NotConnected(ClientError):
    """The operation needs an open connection."""


class RpcError(ClientError):
    """The server answered an rpc with an error envelope."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def parse_header(line: str) -> tuple[str, str]:
    """Split "Name: value" into a validated pair (raises ClientOptionsError)."""
    name, sep, value = line.partition(":")
    if not sep:
        raise ClientOptionsError(f"header {line!r} is not of the form 'Name: value'")
    return _check_header(name.strip(), value.strip())


def _check_header(name: str, value: str) -> tuple[str, str]:
    if not name or not _TOKEN_CHARS.match(name):
        raise ClientOptionsError(f"invalid header name {name!r}")
    if any(c in value for c in "\r\n\0"):
        raise ClientOptionsError(f"header {name} has a line break or NUL in its value")
    return name, value


@dataclass
class ClientOptions:
    """Everything needed to (re)connect; validated on creation (ClientOptionsError)."""

    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    subprotocols: list[str] = field(default_factory=list)
    origin: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    connect_timeout: float = 10.0
    max_size: int | None = 2**20
    token: TokenProvider | None = None
    token_mode: TokenMode = "query"
    harness: bool = False
    rooms: list[str] = field(default_factory=list)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    ping_interval: float | None = 25.0
    ping_timeout: float = 10.0
    close_timeout: float = 2.0
    queue_limit: int | None = 10_000
    local_addr: tuple[str, int] | None = None
    compression: bool = True
    rpc_timeout: float = 10.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ClientOptionsError naming the first option that cannot work."""
        problem = url_problem(self.url)
        if problem is not None:
            raise ClientOptionsError(problem)
        try:
            parse_uri(self.url)
        except InvalidURI as exc:
            raise ClientOptionsError(f"malformed URL {self.url!r}: {exc}") from None
        self.headers = [_check_header(str(k), str(v)) for k, v in self.headers]
        for proto in self.subprotocols:
            if not proto or not _TOKEN_CHARS.match(proto):
                raise ClientOptionsError(f"invalid subprotocol {proto!r}")
        if self.origin is not None:
            parts = urllib.parse.urlsplit(self.origin)
            if not parts.scheme or not parts.netloc:
                raise ClientOptionsError(f"origin {self.origin!r} is not like https://host")
        if self.ca_file is not None:
            try:
                with open(self.ca_file, "rb"):
                    pass
            except OSError as exc:
                raise ClientOptionsError(f"cannot read CA file {self.ca_file}: {exc}") from None
        if self.token_mode not in ("query", "header", "message"):
            raise ClientOptionsError(
                f"token mode must be query, header or message, got {self.token_mode!r}"
            )
        if self.token is not None and not (isinstance(self.token, str) or callable(self.token)):
            raise ClientOptionsError("token must be a string or a callable")
        for name in ("connect_timeout", "ping_timeout", "close_timeout", "rpc_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ClientOptionsError(f"{name.replace('_', ' ')} must be > 0, got {value}")
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise ClientOptionsError(f"ping interval must be > 0, got {self.ping_interval}")
        if self.max_size is not None and self.max_size < 1:
            raise ClientOptionsError(f"max size must be >= 1 or None, got {self.max_size}")
        if self.queue_limit is not None and self.queue_limit < 0:
            raise ClientOptionsError(f"queue limit must be >= 0 or None, got {self.queue_limit}")
        if not isinstance(self.backoff, BackoffPolicy):
            raise ClientOptionsError("backoff must be a BackoffPolicy")
        for room in self.rooms:
            if not isinstance(room, str) or not room or len(room) > envelope.MAX_NAME:
                raise ClientOptionsError(f"invalid room name {room!r}")

    @property
    def secure(self) -> bool:
        """True for wss:// URLs."""
        return self.url.lower().startswith("wss:")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for wss:// (custom CA file or insecure), None for ws://."""
        return client_context(self.ca_file, self.insecure) if self.secure else None


# ---------------------------------------------------------------- plain bookkeeping


@dataclass
class _Room:
    last: int | None = None  # highest seq seen (or baseline)
    missing: set[int] = field(default_factory=set)
    target: int | None = None  # head seq at rejoin; recovery complete when last reaches it
    recovered: int = 0


class RoomTracker:
    """Per-room sequence bookkeeping: returns (kind, detail) decisions for each delivery.

    Kinds: "in_order", "gap", "duplicate", "out_of_order", "recovered" (after a rejoin with
    `since`, the room caught up with the head seq the node reported in `joined`).
    """

    def __init__(self, max_missing: int = 10_000) -> None:
        self.rooms: dict[str, _Room] = {}
        self.max_missing = max_missing
        self.missing_total = 0  # messages reported missing by gaps, all rooms

    def since(self, room: str) -> int | None:
        """The `since` to send when (re)joining `room`: the last seq seen, if any."""
        state = self.rooms.get(room)
        return None if state is None else state.last

    def joined(self, room: str, seq: int, since: int | None) -> list[tuple[str, str]]:
        """A `joined` reply: a fresh join starts at `seq`; a rejoin waits to reach it."""
        state = self.rooms.setdefault(room, _Room())
        if since is None or state.last is None:
            state.last = seq
            state.target = None
            return []
        state.target = seq
        state.recovered = 0
        if state.last >= seq:
            state.target = None
            return [("recovered", "0 missed")]
        return []

    def window_exceeded(self, room: str) -> None:
        """The node cannot replay from `since`: accept whatever comes next as the baseline."""
        state = self.rooms.setdefault(room, _Room())
        state.last = None
        state.target = None
        state.missing.clear()

    def message(self, room: str, seq: int) -> list[tuple[str, str]]:
        """Classify one delivered message by its room sequence number."""
        state = self.rooms.setdefault(room, _Room())
        out: list[tuple[str, str]] = []
        if state.last is None:
            state.last = seq
            out.append(("in_order", ""))
        elif seq == state.last + 1:
            state.last = seq
            out.append(("in_order", ""))
        elif seq > state.last + 1:
            first, last = state.last + 1, seq - 1
            out.append(("gap", f"missing {first}..{last} ({last - first + 1})"))
            self.missing_total += last - first + 1
            if len(state.missing) + (last - first + 1) <= self.max_missing:
                state.missing.update(range(first, last + 1))
            state.last = seq
        elif seq in state.missing:
            state.missing.discard(seq)
            out.append(("out_of_order", f"{seq} arrived after {state.last}"))
        else:
            out.append(("duplicate", f"{seq} already seen (last {state.last})"))
            return out
        if state.target is not None:
            state.recovered += 1
            if state.last >= state.target:
                out.append(("recovered", f"{state.recovered} missed"))
                state.target = None
        return out

    def forget(self, room: str) -> None:
        """Stop tracking a room that was left."""
        self.rooms.pop(room, None)


@dataclass
class OutboxEntry:
    """One outgoing message: a plain send (dropped once written) or a publish (until ack)."""

    key: str
    data: str | bytes
    publish_id: str | None = None
    sent: bool = False


class Outbox:
    """Ordered, bounded queue of messages not yet written plus publishes not yet acked."""

    def __init__(self, limit: int | None = 10_000) -> None:
        self.limit = limit
        self.entries: OrderedDict[str, OutboxEntry] = OrderedDict()
        self._counter = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, data: str | bytes, publish_id: str | None = None) -> OutboxEntry:
        """Queue a message at the end; QueueFull beyond `limit`."""
        if self.limit is not None and len(self.entries) >= self.limit:
            raise QueueFull(f"offline queue is full ({self.limit} messages)")
        if publish_id is not None and f"p:{publish_id}" in self.entries:
            return self.entries[f"p:{publish_id}"]  # same id: one entry (idempotent)
        self._counter += 1
        key = f"p:{publish_id}" if publish_id is not None else f"s:{self._counter}"
        entry = OutboxEntry(key=key, data=data, publish_id=publish_id)
        self.entries[key] = entry
        return entry

    def next_unsent(self) -> OutboxEntry | None:
        """The oldest entry not yet written on the current connection."""
        for entry in self.entries.values():
            if not entry.sent:
                return entry
        return None

    def written(self, entry: OutboxEntry) -> None:
        """The entry went out: a plain send is done, a publish waits for its ack."""
        if entry.publish_id is None:
            self.entries.pop(entry.key, None)
        else:
            entry.sent = True

    def ack(self, publish_id: str) -> bool:
        """Drop the acked publish; False if it was not pending."""
        return self.entries.pop(f"p:{publish_id}", None) is not None

    def connection_lost(self) -> int:
        """Mark every unacked publish for re-sending; returns how many."""
        count = 0
        for entry in self.entries.values():
            if entry.sent:
                entry.sent = False
                count += 1
        return count

    @property
    def unacked(self) -> list[str]:
        """Ids of publishes waiting for their ack, oldest first."""
        return [e.publish_id for e in self.entries.values() if e.publish_id is not None]


def classify_error(exc: BaseException) -> tuple[str, str]:
    """Map a connect/handshake exception to a stable (kind, detail) pair."""
    if isinstance(exc, InvalidStatus):
        response = exc.response
        body = bytes(response.body or b"").decode("utf-8", "replace").strip()
        if "subprotocol" in body.lower():
            return "subprotocol", f"HTTP {response.status_code}: {body[:200]}"
        return "handshake_rejected", f"HTTP {response.status_code} {response.reason_phrase}"
    if isinstance(exc, NegotiationError) and "subprotocol" in str(exc).lower():
        return "subprotocol", str(exc)
    if isinstance(exc, InvalidMessage):
        cause = exc.__cause__
        return "protocol", f"{exc}" + (f" ({cause})" if cause else "")
    if isinstance(exc, InvalidHandshake):
        if "subprotocol" in str(exc).lower():
            return "subprotocol", str(exc)
        return "protocol", str(exc)
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls", str(exc)
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve host: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "connection refused"
    if isinstance(exc, TimeoutError):
        return "timeout", "timed out opening the connection"
    if isinstance(exc, ConnectionClosed):
        return "closed", _close_text(exc)
    if isinstance(exc, OSError):
        # multiple addresses each refused give a generic OSError with this text
        if "refused" in str(exc).lower():
            return "refused", "connection refused"
        return "network", exc.strerror or str(exc)
    return "protocol", f"{type(exc).__name__}: {exc}"


def encode_publish(room: str, data: Any, ident: str) -> str:
    """A publish frame; unlike envelope.encode it keeps `data` even when it is None (null)."""
    return orjson.dumps({"type": "publish", "room": room, "data": data, "id": ident}).decode()


def _close_text(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "connection lost without a close frame"
    return f"{rcvd.code} {rcvd.reason}".strip()


def _ws_opcode(frame: Frame) -> Opcode:
    return Opcode(int(frame.opcode.value))


# ---------------------------------------------------------------- websockets hooks


class _Tap:
    """Receives frames from the observed connection and turns them into events."""

    def __init__(self, client: ReconnectingClient) -> None:
        self.client = client

    def frame(self, direction: Direction, frame: Frame, pending_pings: dict[Any, Any]) -> None:
        client = self.client
        now = time.monotonic()
        payload = bytes(frame.data)
        opcode = _ws_opcode(frame)
        code = reason = None
        if frame.opcode is WsOpcode.CLOSE:
            try:
                close = Close.parse(payload)
                code, reason = int(close.code), close.reason
            except Exception:  # a malformed close frame is still shown
                code = None
        if direction is Direction.IN:
            client._last_inbound = now
            client.stats.bytes_in += len(payload)
        else:
            client.stats.bytes_out += len(payload)
        client._emit(
            FrameRecord(
                conn=client.name,
                direction=direction,
                opcode=opcode,
                payload=payload,
                fin=frame.fin,
                close_code=code,
                close_reason=reason,
                at=now,
            )
        )
        if frame.opcode is WsOpcode.PING:
            kind = "ping_received" if direction is Direction.IN else "ping_sent"
            client._emit(HeartbeatEvent(conn=client.name, kind=kind, at=now))
        elif frame.opcode is WsOpcode.PONG and direction is Direction.IN:
            waiting = pending_pings.get(payload)
            rtt = None
            if waiting is not None:
                rtt = asyncio.get_running_loop().time() - waiting[1]
                client.latency = rtt
            client._emit(HeartbeatEvent(conn=client.name, kind="pong_received", rtt=rtt, at=now))


class _TappedConnection(ClientConnection):
    """ClientConnection reporting every frame in and out, in wire order.

    Outgoing frames all pass through the sans-I/O protocol's `send_frame`; incoming frames
    are tapped at the protocol's `recv_frame` (called for each parsed frame, control frames
    and fragments included) rather than `process_event`, because the protocol answers a
    ping or a close inside `recv_frame`: tapping there logs the frame before the reply.
    """

    def __init__(self, protocol: Any, *, tap: _Tap, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self._tap = tap
        send_original = protocol.send_frame
        recv_original = protocol.recv_frame

        def send_frame(frame: Frame) -> None:
            send_original(frame)
            try:
                self._tap.frame(Direction.OUT, frame, self.pending_pings)
            except Exception:  # an observer must never break the connection
                log.exception("frame tap failed")

        def recv_frame(frame: Frame) -> None:
            try:
                self._tap.frame(Direction.IN, frame, self.pending_pings)
            except Exception:
                log.exception("frame tap failed")
            recv_original(frame)

        protocol.send_frame = send_frame
        protocol.recv_frame = recv_frame


# ---------------------------------------------------------------- the driver


class ReconnectingClient(ConnectionDriver):
    """A WebSocket client that reconnects per its backoff policy and reports every event."""

    def __init__(
        self, options: ClientOptions, name: str = "client", observers: Iterable[Observer] = ()
    ) -> None:
        super().__init__(name, options.backoff, observers)
        self.options = options
        self.rooms_tracker = RoomTracker()
        self.outbox = Outbox(options.queue_limit)
        self.rooms: list[str] = list(dict.fromkeys(options.rooms))
        self.subprotocol: str | None = None
        self._conn: ClientConnection | None = None
        self._ready = False  # open, rejoined and the queue flushed: send directly
        self._stop_args: tuple[int, str] = (1000, "")
        self._rpc: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._join_since: dict[str, int | None] = {}
        self._last_inbound = 0.0
        self._flush_lock = asyncio.Lock()

    # -- start / stop

    async def start(self) -> None:
        """Start connecting in a named background task (returns at once)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self.final_error = None
        self.policy.reset()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"wsconsole-client-{self.name}"
        )

    async def stop(self, code: int = 1000, reason: str = "") -> None:
        """Close with `code` if open, stop reconnecting, and wait until CLOSED."""
        self._stopping = True
        self._stop_args = (code, reason)
        self._wake.set()
        task = self._task
        if task is None or task.done():
            return
        conn = self._conn
        if conn is not None and self.state is State.OPEN:
            self._move(State.CLOSING, code=code, reason=reason)
            with contextlib.suppress(Exception):
                await conn.close(code, reason)
        else:
            task.cancel()
        await self._end_task(task, self.options.close_timeout + 1)

    # -- the loop

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug here must still end in CLOSED, visibly
            log.exception("client %s failed", self.name)
            self._emit(ErrorEvent(self.name, "protocol", f"internal error: {exc!r}"))
        finally:
            self._ready = False
            self._conn = None
            self._fail_rpcs(NotConnected("client stopped"))
            if self.state is not State.CLOSED:
                code, reason = self._stop_args
                self._move(State.CLOSED, code=code if self._stopping else None,
                           reason=reason if self._stopping else None, error=self.final_error)

    async def _loop(self) -> None:
        attempt = 0
        while not self._stopping:
            self._move(State.CONNECTING, attempt=attempt)
            try:
                conn = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                kind, detail = classify_error(exc)
                self._emit(ErrorEvent(self.name, kind, detail))
                attempt = await self._retry(attempt, error=f"{kind}: {detail}")
                if attempt < 0:
                    return
                continue
            attempt = 0
            self.policy.reset()
            code, reason, error = await self._session(conn)
            if self._stopping:
                return
            self.stats.reconnects += 1
            attempt = await self._retry(0, code=code, reason=reason, error=error)
            if attempt < 0:
                return

    async def _retry(
        self, attempt: int, *, code: int | None = None, reason: str | None = None,
        error: str | None = None,
    ) -> int:
        """Wait out the next backoff delay; returns the next attempt number or -1 to stop."""
        delay = self.policy.next_delay()
        if delay is None:
            self.final_error = f"gave up after {self.policy.attempt} retries" + (
                f" ({error})" if error else ""
            )
            self._emit(ErrorEvent(self.name, "gave_up", self.final_error))
            return -1
        attempt = self.policy.attempt
        self._move(State.RECONNECTING, attempt=attempt, delay=delay, code=code, reason=reason,
                   error=error)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        return -1 if self._stopping else attempt

    async def _token(self) -> str | None:
        provider = self.options.token
        if provider is None:
            return None
        value = provider() if callable(provider) else provider
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str) or not value:
            raise ClientError("the token provider returned no token")
        return value

    async def _open(self) -> ClientConnection:
        opts = self.options
        async with asyncio.timeout(opts.connect_timeout):
            try:
                token = await self._token()
            except Exception as exc:
                self._emit(ErrorEvent(self.name, "auth", f"token provider failed: {exc}"))
                raise
            url = opts.url
            headers = list(opts.headers)
            if token is not None and opts.token_mode == "query":
                parts = urllib.parse.urlsplit(url)
                query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "token"]
                query.append(("token", token))
                url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
            elif token is not None and opts.token_mode == "header":
                headers.append(("Authorization", f"Bearer {token}"))
            tap = _Tap(self)
            kwargs: dict[str, Any] = {}
            if opts.local_addr is not None:
                kwargs["local_addr"] = opts.local_addr
            context = opts.ssl_context()
            if context is not None:
                kwargs["ssl"] = context
            conn = await connect(
                url,
                origin=opts.origin,  # type: ignore[arg-type]
                subprotocols=opts.subprotocols or None,  # type: ignore[arg-type]
                additional_headers=headers or None,
                user_agent_header=f"wsconsole/{__version__}",
                compression="deflate" if opts.compression else None,
                proxy=None,
                open_timeout=None,
                ping_interval=opts.ping_interval,
                ping_timeout=opts.ping_timeout,
                close_timeout=opts.close_timeout,
                max_size=opts.max_size,
                create_connection=lambda protocol, **kw: _TappedConnection(
                    protocol, tap=tap, **kw
                ),
                **kwargs,
            )
            if opts.subprotocols and conn.subprotocol is None:
                await conn.close(1002, "no subprotocol")
                raise NegotiationError(
                    f"server accepted none of the subprotocols {', '.join(opts.subprotocols)}"
                )
            if token is not None and opts.token_mode == "message":
                await conn.send(envelope.encode("auth", token=token))
            return conn

    async def _session(self, conn: ClientConnection) -> tuple[int | None, str | None, str | None]:
        """Run one open connection until it ends; returns (code, reason, error)."""
        self._conn = conn
        self.subprotocol = conn.subprotocol
        self._last_inbound = time.monotonic()
        self._move(State.OPEN)
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._reader(conn), name=f"wsconsole-client-{self.name}-recv")
        watchdog = None
        if self.options.ping_interval is not None:
            watchdog = loop.create_task(
                self._watchdog(conn), name=f"wsconsole-client-{self.name}-liveness"
            )
        error: str | None = None
        try:
            await self._resume(conn)
            await reader
        except ConnectionClosed:
            await asyncio.wait([reader])
        except asyncio.CancelledError:
            conn.transport.abort()
            raise
        finally:
            self._ready = False
            self._conn = None
            if watchdog is not None:
                watchdog.cancel()
            if not reader.done():
                reader.cancel()
            requeued = self.outbox.connection_lost()
            self.stats.queued = len(self.outbox)
            if requeued:
                log.debug("%s: %d unacked publishes will be re-sent", self.name, requeued)
        self._fail_rpcs(NotConnected("connection lost before the reply"))
        if self._stopping:
            return None, None, None
        liveness = watchdog is not None and watchdog.done() and not watchdog.cancelled() and (
            watchdog.result()
        )
        rcvd = conn.protocol.close_rcvd
        code = rcvd.code if rcvd is not None else None
        reason = rcvd.reason if rcvd is not None else None
        if liveness:
            error = "liveness: nothing heard from the server"
        elif rcvd is None:
            sent = conn.protocol.close_sent
            error = "connection lost" + (f" ({sent.code} {sent.reason})".rstrip(")") + ")"
                                         if sent is not None else "")
        if rcvd is not None:
            self._emit(ErrorEvent(self.name, "closed", f"{rcvd.code} {rcvd.reason}".strip()))
        elif not liveness:
            self._emit(ErrorEvent(self.name, "closed", error or "connection lost"))
        return code, reason, error

    async def _watchdog(self, conn: ClientConnection) -> bool:
        """True (and the transport aborted) once nothing arrived for interval + timeout."""
        assert self.options.ping_interval is not None
        limit = self.options.ping_interval + self.options.ping_timeout
        while True:
            # sleep exactly until the deadline the last inbound frame set, then re-check:
            # one wake-up per quiet period instead of polling (cheap for a swarm of clients)
            remaining = self._last_inbound + limit - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            silent = time.monotonic() - self._last_inbound
            self._emit(HeartbeatEvent(conn=self.name, kind="liveness_lost"))
            self._emit(ErrorEvent(self.name, "liveness",
                                  f"nothing heard from the server for {silent:.2f} s"))
            conn.transport.abort()
            return True

    async def _resume(self, conn: ClientConnection) -> None:
        """After open: re-join rooms asking for what was missed, then flush the outbox."""
        if self.options.harness:
            for room in self.rooms:
                await self._send_join(conn, room)
        replayed = await self._flush(conn)
        if replayed:
            self._emit(DeliveryEvent(self.name, "replayed", detail=f"{replayed} messages"))

    async def _send_join(self, conn: ClientConnection, room: str) -> None:
        since = self.rooms_tracker.since(room)
        self._join_since[room] = since
        await conn.send(envelope.encode("join", room=room, since=since))

    async def _flush(self, conn: ClientConnection) -> int:
        count = 0
        async with self._flush_lock:
            while True:
                entry = self.outbox.next_unsent()
                if entry is None:
                    break
                await conn.send(entry.data)
                self.outbox.written(entry)
                self.stats.sent += 1
                count += 1
            self.stats.queued = len(self.outbox)
            self._ready = True
        return count

    async def _reader(self, conn: ClientConnection) -> None:
        async for message in conn:
            self.stats.received += 1
            if self.options.harness:
                try:
                    self._handle_envelope(message)
                except Exception as exc:  # one odd envelope must not end the client
                    log.exception("%s: envelope handling failed", self.name)
                    self._emit(ErrorEvent(self.name, "protocol",
                                          f"could not handle envelope: {exc!r}"))

    def _handle_envelope(self, message: str | bytes) -> None:
        try:
            env = envelope.parse_server(message)
        except envelope.EnvelopeError as exc:
            self._emit(ErrorEvent(self.name, "protocol", f"bad envelope from server: {exc}"))
            return
        kind = env["type"]
        if kind == "message":
            room, seq = env["room"], env["seq"]
            for decision, detail in self.rooms_tracker.message(room, seq):
                if decision == "in_order":
                    continue
                if decision == "gap":
                    self.stats.gaps += 1
                    self.stats.missing = self.rooms_tracker.missing_total
                elif decision == "duplicate":
                    self.stats.duplicates += 1
                elif decision == "out_of_order":
                    self.stats.out_of_order += 1
                self._emit(DeliveryEvent(self.name, decision, room=room, seq=seq,
                                         id=env.get("id"), detail=detail))
        elif kind == "joined":
            room, seq = env["room"], env["seq"]
            since = self._join_since.pop(room, None)
            if env.get("reset"):  # the broker lost its state: sequences start again
                self.rooms_tracker.window_exceeded(room)
                self._emit(DeliveryEvent(self.name, "reset", room=room, seq=seq,
                                         detail="room sequence restarted by the server"))
            for decision, detail in self.rooms_tracker.joined(room, seq, since):
                self._emit(DeliveryEvent(self.name, decision, room=room, seq=seq, detail=detail))
        elif kind == "ack":
            if self.outbox.ack(env["id"]):
                self.stats.acked += 1
                self.stats.queued = len(self.outbox)
            self._emit(DeliveryEvent(self.name, "ack", seq=env["seq"], id=env["id"]))
        elif kind == "result":
            future = self._rpc.pop(str(env.get("id")), None)
            if future is not None and not future.done():
                future.set_result(env)
        elif kind == "error":
            code, detail = env["code"], str(env.get("detail", ""))
            ident = env.get("id")
            future = self._rpc.pop(str(ident), None) if ident is not None else None
            if future is not None and not future.done():
                future.set_exception(RpcError(code, detail))
            if code == "recovery_window_exceeded":
                room = env.get("room")
                rooms = [room] if isinstance(room, str) else [
                    r for r, s in self._join_since.items() if s is not None
                ] or list(self.rooms)
                for r in rooms:
                    self.rooms_tracker.window_exceeded(r)
                    self._emit(DeliveryEvent(self.name, "recovery_window_exceeded", room=r,
                                             detail=detail))
            else:
                self._emit(ErrorEvent(self.name, "server", f"{code}: {detail}"))

    def _fail_rpcs(self, exc: Exception) -> None:
        for future in self._rpc.values():
            if not future.done():
                future.set_exception(exc)
        self._rpc.clear()

    # -- sending

    async def send(self, data: str | bytes) -> None:
        """Send a message now if open, else queue it (QueueFull when the queue is full)."""
        conn = self._conn
        if self._ready and conn is not None:
            try:
                await conn.send(data)
                self.stats.sent += 1
                return
            except ConnectionClosed:
                pass
        self.outbox.add(data)
        self.stats.queued = len(self.outbox)

    def _need_harness(self, what: str) -> None:
        if not self.options.harness:
            raise ClientError(f"{what} needs the harness protocol (raw mode is on)")

    async def join(self, room: str) -> None:
        """Join a room now (if open) and after every reconnect."""
        self._need_harness("join")
        if not room or len(room) > envelope.MAX_NAME:
            raise ClientOptionsError(f"invalid room name {room!r}")
        if room not in self.rooms:
            self.rooms.append(room)
        conn = self._conn
        if self._ready and conn is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._send_join(conn, room)

    async def leave(self, room: str) -> None:
        """Leave a room and stop re-joining it."""
        self._need_harness("leave")
        if room in self.rooms:
            self.rooms.remove(room)
        self.rooms_tracker.forget(room)
        conn = self._conn
        if self._ready and conn is not None:
            with contextlib.suppress(ConnectionClosed):
                await conn.send(envelope.encode("leave", room=room))

    async def publish(self, room: str, data: Any, id: str | None = None) -> str:
        """Publish to a room; kept until acked, re-sent with the same id after a reconnect."""
        self._need_harness("publish")
        ident = id or uuid.uuid4().hex
        entry = self.outbox.add(encode_publish(room, data, ident), publish_id=ident)
        self.stats.queued = len(self.outbox)
        conn = self._conn
        if self._ready and conn is not None and not entry.sent:
            try:
                await conn.send(entry.data)
                self.outbox.written(entry)
                self.stats.sent += 1
            except ConnectionClosed:
                pass
        return ident

    async def rpc(
        self, method: str, params: Any = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Call `method` on the server and wait for its `result` (TimeoutError, RpcError)."""
        self._need_harness("rpc")
        ident = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._rpc[ident] = future
        try:
            await self.send(envelope.encode("rpc", id=ident, method=method, params=params))
            async with asyncio.timeout(timeout if timeout is not None
                                       else self.options.rpc_timeout):
                return await future
        finally:
            self._rpc.pop(ident, None)

    async def ping(self) -> float:
        """Send a ping now and return the round-trip time (NotConnected when offline)."""
        conn = self._conn
        if conn is None:
            raise NotConnected("not connected")
        waiter = await conn.ping()
        async with asyncio.timeout(self.options.ping_timeout):
            return await waiter


__all__ = [
    "ClientError",
    "ClientOptions",
    "ClientOptionsError",
    "ClientStats",
    "NotConnected",
    "Outbox",
    "QueueFull",
    "ReconnectingClient",
    "RoomTracker",
    "RpcError",
    "classify_error",
    "encode_publish",
    "parse_header",
]
