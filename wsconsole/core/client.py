"""A reconnecting WebSocket client on `websockets` (v17 asyncio), observable frame by frame.

The client is the WebSocket target of the one connection driver (`driver.py`: lifecycle,
reconnect loop, stop). Its decisions live in plain objects that test without a loop:
`BackoffPolicy` (backoff.py), `Lifecycle` (lifecycle.py), `RoomTracker` and `Outbox`
(recovery.py: per-room epoch and sequence bookkeeping, the offline queue and the publishes
waiting for their ack), `classify_error` (reconnect.py). `ReconnectingClient` does the I/O.
This module is the client's public face: options, errors and bookkeeping are importable
from here as well as from their own modules.

Error event kinds (ErrorEvent.kind), stable words for views and scripts: "refused", "dns",
"tls", "timeout", "handshake_rejected" (HTTP status in the detail), "subprotocol",
"protocol", "network", "closed" (an open connection ended; code and reason in the detail),
"liveness" (nothing heard for ping_interval + ping_timeout; the client closes with 1011),
"server" (an `error` envelope), "auth" (the token provider failed), "gave_up" (max
attempts used), "stopped" (a refusal retrying cannot change: credentials refused without
a fresh token, a 4xx other than 408/429; see reconnect.py).

Delivery event kinds (harness mode): "ack", "gap", "duplicate", "out_of_order",
"recovered", "replayed" (queued messages sent after a reconnect), "recovery_window_exceeded",
"reset" (the room's sequence space restarted: a `joined` with reset=true or a new epoch;
the position starts again in the new epoch) and "stale" (a message from an old epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConcurrencyError, ConnectionClosed, NegotiationError
from websockets.frames import CloseCode

from wsconsole import __version__
from wsconsole.core import envelope
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.driver import ClientStats, ConnectionDriver
from wsconsole.core.errors import (
    ClientError,
    ClientOptionsError,
    NotConnected,
    QueueFull,
    RpcError,
    TokenError,
)
from wsconsole.core.events import (
    DeliveryEvent,
    ErrorEvent,
    HeartbeatEvent,
    Observer,
    describe_close,
)
from wsconsole.core.heartbeat import MAX_CONTROL_PAYLOAD, PongPolicy, ServerHeartbeat
from wsconsole.core.options import ClientOptions, parse_header
from wsconsole.core.reconnect import Failure, classify_error
from wsconsole.core.recovery import Outbox, RoomTracker
from wsconsole.core.tasks import spawn
from wsconsole.core.tokens import can_refresh, fetch_token, place_token
from wsconsole.core.wsconn import FrameTap, TappedConnection

log = logging.getLogger(__name__)


MessageHandler = Callable[[str | bytes], Awaitable[None]]
"""Called with each complete message received (text as str, binary as bytes), in order;
the next message is read once it returns (so it can answer, e.g. an echo)."""


# `error` codes with a publish's id that mean "not taken, send it again later" (protocol.md)
RESEND_CODES = frozenset({"broker_busy", "broker_unavailable", "rate_limited"})
RESEND_BACKOFF = BackoffPolicy(initial=0.25, cap=10.0, jitter=0.25)


def encode_publish(room: str, data: Any, ident: str) -> str:
    """A publish frame; unlike envelope.encode it keeps `data` even when it is None (null)."""
    return orjson.dumps({"type": "publish", "room": room, "data": data, "id": ident}).decode()


class ReconnectingClient(ConnectionDriver):
    """A WebSocket client that reconnects per its backoff policy and reports every event."""

    label = "client"

    def __init__(
        self,
        options: ClientOptions,
        name: str = "client",
        observers: Iterable[Observer] = (),
        on_message: MessageHandler | None = None,
    ) -> None:
        super().__init__(name, options.backoff, observers, grace=options.close_timeout + 1,
                         stable_after=options.stable_after,
                         refreshable=can_refresh(options.token))
        self.options = options
        self.rooms_tracker = RoomTracker()
        self.outbox = Outbox(options.queue_limit)
        self.rooms: list[str] = list(dict.fromkeys(options.rooms))
        self.subprotocol: str | None = None
        self._conn: TappedConnection | None = None
        self._ready = False  # open, rejoined and the queue flushed: send directly
        self._rpc: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._join_since: dict[str, int | None] = {}
        self._flush_lock = asyncio.Lock()
        self._silent: float | None = None  # how long the server was silent, once declared dead
        self.pongs: PongPolicy = options.pongs  # the heartbeat lab: see set_pongs()
        self.server_heartbeat = ServerHeartbeat()
        self.on_message = on_message  # every complete message, awaited before the next

    @property
    def handshake_headers(self) -> dict[str, str]:
        """The response headers of the open connection's handshake, names in lower case ({}
        while not open): what the server (or a balancer in front of it) said on accepting."""
        conn = self._conn
        response = getattr(conn, "response", None) if conn is not None else None
        if response is None:
            return {}
        return {name.lower(): value for name, value in response.headers.raw_items()}

    # -- the driver's hooks

    async def _goodbye(self, code: int, reason: str) -> bool:
        conn = self._conn
        if conn is None:
            return False
        with contextlib.suppress(Exception):
            await conn.close(code, reason)
        return True

    async def _release(self) -> None:
        self._ready = False
        self._conn = None
        self._fail_rpcs(NotConnected("client stopped"))

    async def _classify(self, exc: BaseException) -> Failure:
        if isinstance(exc, TokenError):
            return Failure("auth", str(exc))
        return classify_error(exc)

    async def _attempt(self) -> Failure:
        conn = await self._open()
        return await self._session(conn)

    # -- one connection

    async def _open(self) -> TappedConnection:
        opts = self.options
        async with asyncio.timeout(opts.connect_timeout):
            token = await fetch_token(self.options.token)
            url, headers = place_token(opts.url, list(opts.headers), token, opts.token_mode)
            tap = FrameTap(self)
            # messages are read frame by frame unless each must be awaited (on_message)
            consume = self._messages_in if self.on_message is None else None
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
                ping_timeout=None,  # liveness is the watchdog's: any frame heard counts
                close_timeout=opts.close_timeout,
                max_size=opts.max_size,
                create_connection=lambda protocol, **kw: TappedConnection(
                    protocol, tap=tap, consume=consume, **kw
                ),
                **kwargs,
            )
            assert isinstance(conn, TappedConnection)
            if opts.read_size is not None and hasattr(conn.transport, "max_size"):
                conn.transport.max_size = opts.read_size  # asyncio's selector transports
            if opts.subprotocols and conn.subprotocol is None:
                await conn.close(1002, "no subprotocol")
                raise NegotiationError(
                    f"server accepted none of the subprotocols {', '.join(opts.subprotocols)}"
                )
            if token is not None and opts.token_mode == "message":
                await conn.send(envelope.encode("auth", token=token))
            return conn

    async def _session(self, conn: TappedConnection) -> Failure:
        """Run one open connection until it ends; returns how it ended."""
        self._conn = conn
        self.subprotocol = conn.subprotocol
        conn.tap.last_inbound = time.monotonic()
        self._silent = None
        self._opened()
        self.server_heartbeat.opened(time.monotonic(), self.pongs.answers)
        reader = spawn(self._reader(conn), f"wsconsole-client-{self.name}-recv")
        watchdog = None
        if self.options.ping_interval is not None:
            watchdog = spawn(self._watchdog(conn), f"wsconsole-client-{self.name}-liveness")
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
        self._heartbeat_ended(conn)
        return _ended(conn, self._silent)

    def _heartbeat_ended(self, conn: ClientConnection) -> None:
        """Tell the server heartbeat how the connection ended; a server close of a client
        that stopped answering pings is a `server_dropped` heartbeat event."""
        protocol = conn.protocol
        rcvd = protocol.close_rcvd
        by_server = rcvd is not None and (protocol.close_sent is None
                                          or bool(protocol.close_rcvd_then_sent))
        drop = self.server_heartbeat.closed(time.monotonic(), by_server,
                                            rcvd.code if rcvd is not None else None)
        if drop is not None:
            self._emit(HeartbeatEvent(self.name, "server_dropped", delay=drop.after))

    async def _watchdog(self, conn: TappedConnection) -> None:
        """After nothing arrived for interval + timeout: note how long the server was
        silent and close with 1011, as `websockets` does on a keepalive timeout."""
        assert self.options.ping_interval is not None
        limit = self.options.ping_interval + self.options.ping_timeout
        while True:
            # sleep exactly until the deadline the last inbound frame set, then re-check:
            # one wake-up per quiet period instead of polling (cheap for a swarm of clients)
            remaining = conn.tap.last_inbound + limit - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            self._silent = time.monotonic() - conn.tap.last_inbound
            self._emit(HeartbeatEvent(conn=self.name, kind="liveness_lost"))
            await _close_dead(conn, self.options.close_timeout)
            return

    async def _resume(self, conn: ClientConnection) -> None:
        """After open: re-join rooms asking for what was missed, then flush the outbox."""
        if self.options.harness:
            for room in self.rooms:
                await self._send_join(conn, room)
        replayed = await self._flush(conn)
        if replayed:
            self._emit(DeliveryEvent(self.name, "replayed", detail=f"{replayed} messages"))

    async def _send_join(self, conn: ClientConnection, room: str) -> None:
        position = self.rooms_tracker.join_fields(room)
        self._join_since[room] = position["since"]
        await conn.send(envelope.encode("join", room=room, **position))

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

    async def _reader(self, conn: TappedConnection) -> None:
        if conn.consume is not None:  # messages arrive through _messages_in
            await conn.wait_closed()
            return
        with contextlib.suppress(ConnectionClosed):
            async for message in conn:
                self._messages_in([message], [None])
                if self.on_message is not None:
                    await self.on_message(message)

    def _messages_in(self, payloads: list[bytes] | list[str | bytes],
                     values: list[dict[str, Any] | None]) -> None:
        """Complete messages, in order: counted, and read as envelopes in harness mode.
        Read at the frame level (wsconn.py) they come after the observers saw their frames,
        each with its JSON object where the connection parsed it (once for the observers
        and this client), which is then read instead of the payload."""
        self.stats.received += len(payloads)
        if not self.options.harness:
            return
        for payload, value in zip(payloads, values, strict=True):
            try:
                self._handle_envelope(payload if value is None else value)
            except Exception as exc:  # one odd envelope must not end the client
                log.exception("%s: envelope handling failed", self.name)
                self._emit(ErrorEvent(self.name, "protocol",
                                      f"could not handle envelope: {exc!r}"))

    # -- the harness protocol, inbound

    def _handle_envelope(self, message: str | bytes | dict[str, Any]) -> None:
        try:
            if isinstance(message, dict):
                env = envelope.check_server(message)
            else:
                env = envelope.parse_server(message)
        except envelope.EnvelopeError as exc:
            self._emit(ErrorEvent(self.name, "protocol", f"bad envelope from server: {exc}"))
            return
        handler = {"message": self._on_message, "joined": self._on_joined, "ack": self._on_ack,
                   "result": self._on_result, "error": self._on_error,
                   "lagging": self._on_lagging}.get(env["type"])  # fmt: skip
        if handler is not None:
            handler(env)

    def _on_message(self, env: dict[str, Any]) -> None:
        room, seq, epoch = env["room"], env["seq"], env.get("epoch")
        for decision, detail in self.rooms_tracker.message(room, seq, epoch):
            if decision == "in_order":
                continue
            if decision == "gap":
                self.stats.gaps += 1
                self.stats.missing = self.rooms_tracker.missing_total
            elif decision == "duplicate":
                self.stats.duplicates += 1
            elif decision == "out_of_order":
                self.stats.out_of_order += 1
            self._emit(DeliveryEvent(self.name, decision, room=room, seq=seq, id=env.get("id"),
                                     detail=detail, epoch=epoch))

    def _on_joined(self, env: dict[str, Any]) -> None:
        room, seq, epoch = env["room"], env["seq"], env.get("epoch")
        since = self._join_since.pop(room, None)
        for decision, detail in self.rooms_tracker.joined(room, seq, since, epoch,
                                                          bool(env.get("reset"))):
            self._emit(DeliveryEvent(self.name, decision, room=room, seq=seq, detail=detail,
                                     epoch=epoch))

    def _on_ack(self, env: dict[str, Any]) -> None:
        if self.outbox.ack(env["id"]):
            self.stats.acked += 1
            self.stats.queued = len(self.outbox)
        self._emit(DeliveryEvent(self.name, "ack", seq=env["seq"], id=env["id"],
                                 epoch=env.get("epoch")))

    def _on_lagging(self, env: dict[str, Any]) -> None:
        """The node's send buffer for us overflowed: messages first..seq (and later ones)
        will not come on this connection, which it closes (1013); the rejoin after the
        reconnect asks for them from history (`since`), so this is a notice, not a loss."""
        self._emit(DeliveryEvent(self.name, "lagging", room=env["room"], seq=env["seq"],
                                 detail=f"messages from {env['first']} not sent: reading too "
                                        "slowly; recovered from history on the rejoin",
                                 epoch=env.get("epoch")))  # fmt: skip

    def _on_result(self, env: dict[str, Any]) -> None:
        future = self._rpc.pop(str(env.get("id")), None)
        if future is not None and not future.done():
            future.set_result(env)

    def _on_error(self, env: dict[str, Any]) -> None:
        code, detail = env["code"], str(env.get("detail", ""))
        ident = env.get("id")
        future = self._rpc.pop(str(ident), None) if ident is not None else None
        if future is not None and not future.done():
            future.set_exception(RpcError(code, detail))
        if ident is not None and code in RESEND_CODES:
            self._resend_later(str(ident), env.get("retry_after"))
        if code != "recovery_window_exceeded":
            self._emit(ErrorEvent(self.name, "server", f"{code}: {detail}"))
            return
        room = env.get("room")
        rooms = [room] if isinstance(room, str) else [
            r for r, s in self._join_since.items() if s is not None
        ] or list(self.rooms)
        for r in rooms:
            self.rooms_tracker.window_exceeded(r)
            self._emit(DeliveryEvent(self.name, "recovery_window_exceeded", room=r,
                                     detail=detail))

    def _resend_later(self, ident: str, retry_after: Any) -> None:
        """A publish the node refused without taking it is sent again, same id, after a
        pause that doubles with each refusal (with jitter, so refused publishers do not all
        come back at once) and is at least the node's `retry_after`."""
        refusals = self.outbox.refused(ident)
        if refusals is None:
            return
        delay = RESEND_BACKOFF.delay(refusals)
        if isinstance(retry_after, int | float) and retry_after > delay:
            delay = float(retry_after)
        spawn(self._resend(delay), f"wsconsole-client-{self.name}-resend")

    async def _resend(self, delay: float) -> None:
        await asyncio.sleep(delay)
        conn = self._conn
        if self._ready and conn is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._flush(conn)

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

    # -- the heartbeat lab

    def set_pongs(self, policy: PongPolicy) -> None:
        """Answer the server's pings per `policy` from now on (and after reconnects)."""
        self.pongs = policy
        if self._conn is not None:
            self.server_heartbeat.policy_changed(time.monotonic(), policy.answers)

    async def send_ping(self, payload: bytes | None = None, count: int = 1) -> list[float | None]:
        """Send `count` pings at once (a burst), with `payload` (numbered "#1", "#2"...
        in a burst) or random payloads; wait up to ping_timeout for their pongs and return
        each round trip (None: no pong in time). NotConnected when offline; ClientError for
        a payload over 125 bytes or one still waiting for its pong."""
        conn = self._conn
        if conn is None:
            raise NotConnected("not connected")
        if not 1 <= count <= 1000:
            raise ClientOptionsError(f"a ping burst is 1 to 1000 pings, got {count}")
        payloads: list[bytes | None] = [None] * count
        if payload is not None:
            payloads = [payload if count == 1 else payload + f"#{i + 1}".encode()
                        for i in range(count)]
        if any(p is not None and len(p) > MAX_CONTROL_PAYLOAD for p in payloads):
            raise ClientError(f"a ping payload holds at most {MAX_CONTROL_PAYLOAD} bytes")
        waiters = []
        for data in payloads:
            try:
                waiters.append(await conn.ping(data))
            except ConcurrencyError:
                raise ClientError(f"a ping with payload {data!r} still waits for its pong"
                                  ) from None
            except ConnectionClosed:
                raise NotConnected("the connection closed during the burst") from None
        done, _ = await asyncio.wait(waiters, timeout=self.options.ping_timeout)
        return [w.result() if w in done and not w.cancelled() and w.exception() is None
                else None for w in waiters]

    async def send_pong(self, payload: bytes = b"") -> None:
        """Send an unsolicited pong (never shaped by the pong policy)."""
        conn = self._conn
        if conn is None:
            raise NotConnected("not connected")
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ClientError(f"a pong payload holds at most {MAX_CONTROL_PAYLOAD} bytes")
        try:
            await conn.pong(payload)
        except ConnectionClosed:
            raise NotConnected("the connection closed") from None
        self._emit(HeartbeatEvent(conn=self.name, kind="pong_unsolicited"))  # on the Timeline


async def _close_dead(conn: ClientConnection, close_timeout: float) -> None:
    """Close a connection whose peer went silent: a close frame 1011 goes out when the
    transport can still write, then the TCP connection ends (after `close_timeout` at
    most: a silent peer will not answer the closing handshake)."""
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(close_timeout):
            async with conn.send_context():
                conn.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive timeout")
    conn.transport.abort()


def _ended(conn: ClientConnection, silent: float | None) -> Failure:
    """How an open connection ended: liveness lost, a close frame received, or lost."""
    if silent is not None:
        return Failure("liveness", f"nothing heard from the server for {silent:.2f} s")
    rcvd = conn.protocol.close_rcvd
    if rcvd is not None:
        return Failure("closed", describe_close(rcvd.code, rcvd.reason), code=rcvd.code,
                       reason=rcvd.reason)
    sent = conn.protocol.close_sent
    return Failure("closed", "connection lost" + (
        f" (we sent {describe_close(sent.code, sent.reason)})" if sent is not None else ""))


__all__ = [
    "ClientError",
    "ClientOptions",
    "ClientOptionsError",
    "ClientStats",
    "MessageHandler",
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
