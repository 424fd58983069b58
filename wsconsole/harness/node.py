"""One harness node: a `websockets` server speaking the harness protocol (DESIGN.md).

Run as `python -m wsconsole.harness.node` or `wsconsole node` (same arguments). Rooms,
sequence numbers, history and presence live in the broker (see `adapter.py`); this module
is the per-connection protocol, the security checklist and the process interface.

Security checklist, all on by default, each configurable:
- authentication: a JWT from the query parameter `token`, an `Authorization: Bearer`
  header, or a first `{"type": "auth", "token": ...}` message within `auth_timeout`.
  A bad token at the handshake gets HTTP 401; a bad, missing or late first message
  closes with 1008 (another request first also gets `error auth_required` before it).
  Tokens carry per-room patterns: join/publish elsewhere gets `error unauthorized`.
  A token that expires while connected closes with 1008.
- Origin allow-list: no Origin (non-browser clients) and http(s) on localhost /
  127.0.0.1, plus `--origin` values (`*` allows any); anything else gets HTTP 403.
- rate limit: a token bucket per connection (`rate` msg/s, burst `rate`); a message over
  it is not processed and gets `error rate_limited` (with its id); `abuse` rejections in
  a row (default: the burst) close with 1008.
- max message size (1009, by `websockets`), invalid UTF-8 (1007, by `websockets`).
- per-user connections across the cluster (`per_user`): one more closes with 1013
  "try again later", because the limit frees itself as soon as another connection of the
  user ends (or, for a SIGKILLed node, after the presence TTL). While the broker is
  down the check is local only (availability first).
- node soft limit: connections beyond it close with 1013.
- heartbeat: ping every `ping_interval`, close when no pong within `ping_timeout`.
- a client that does not read (over `max_buffered` bytes queued) closes with 1008.

HTTP on the WebSocket port: `GET /metrics` (Prometheus text), `GET /healthz`: 200 "ok"
while accepting clients, 503 "draining" while draining, so a balancer stops routing new
clients there. A broker outage does not make the node unhealthy (every node shares the
broker, and local connections keep working); `/healthz` says `ok broker=down` then, and
the header `X-Broker` carries the state.

Drain (SIGTERM, SIGINT or the control command "drain"): new handshakes get HTTP 503, every
client is closed with 1001 "going away", the process exits when no connection is left or
after `drain_deadline` seconds. With `--control`, losing the channel (the supervisor is
gone) also drains, so no orphan node keeps running.

Messages: `node` is the node that delivered the message (the one the client is connected
to), `pub_node` the node it was published on, `ts` the wall time of the publish.

Protocol extras: after `auth` by message nothing is sent (later messages are processed in
order); a `join` beyond the history window gets `error recovery_window_exceeded` (with
`room`, `first`, `seq`) and is still joined at the current seq (a `joined` follows); when
the broker lost its state (restarted without persistence) every member gets
`joined {room, seq: 0, reset: true}` and sequences start again. rpc methods: `echo`
(result `data` = params), `time` (`time`, wall clock), `whoami` (`node`, `conn`, `user`,
`rooms`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import re
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers, MultipleValuesError
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State as WsState

from wsconsole.core.envelope import EnvelopeError, encode, parse_client
from wsconsole.faults.inject import (
    ALL,
    InjectError,
    InjectRequest,
    parse_request,
    reaction_record,
    split_target,
)
from wsconsole.harness.adapter import (
    AdapterConfig,
    PublishResult,
    RecoveryWindowExceeded,
    RedisAdapter,
)
from wsconsole.harness.auth import (
    SECRET_ENV,
    AuthError,
    Claims,
    room_allowed,
    token_from_request,
    verify_token,
)
from wsconsole.harness.brokerlink import UP, BrokerUnavailable
from wsconsole.harness.control import CONTROL_KEY_ENV, ControlClient
from wsconsole.harness.supervised import Supervised

log = logging.getLogger("wsconsole.node")

_ENVELOPE = ("type", "rid", "cmd")  # control-message fields that are not a command's own
_LOCAL_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1)(:\d{1,5})?")


WS_OPEN = WsState.OPEN
LISTEN_BACKLOG = 4096  # capped by the kernel's net.core.somaxconn


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked, uncompressed text frame (server to client), RFC 6455 5.2."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


class UsageError(ValueError):
    """A bad command-line value (exit code 2)."""


@dataclass(slots=True)
class NodeConfig:
    """Every setting of a node; `None` (or 0 on the command line) means "no limit"."""

    id: str = "n1"
    host: str = "127.0.0.1"
    port: int = 0
    redis: str = "redis://127.0.0.1:6379/0"
    control: tuple[str, int] | None = None
    control_key: str | None = None
    secret: str | None = None
    auth: bool = True
    auth_timeout: float = 5.0
    origins: tuple[str, ...] = ()
    ping_interval: float | None = 25.0
    ping_timeout: float | None = 10.0
    close_timeout: float = 3.0
    max_size: int | None = 1 << 20
    rate: float | None = 100.0
    abuse: int | None = None  # default: the burst (= rate)
    per_user: int | None = 5
    soft_limit: int | None = 10_000
    max_buffered: int | None = 16 << 20
    history: int = 10_000
    drain_deadline: float = 10.0
    compression: bool = False
    stats_interval: float = 0.25
    broker_check: float = 0.5
    presence_ttl: float = 15.0


def origin_allowed(origin: str | None, extra: Sequence[str] = ()) -> bool:
    """DESIGN.md default allow-list: no Origin, http(s)://localhost|127.0.0.1[:port], extras."""
    if origin is None or "*" in extra:
        return True
    origin = origin.lower().rstrip("/")
    return bool(_LOCAL_ORIGIN.fullmatch(origin)) or origin in {o.lower() for o in extra}


def _size(payload: str | bytes) -> int:
    """Payload bytes on the wire (UTF-8 for text; str.isascii is O(1) in CPython)."""
    if isinstance(payload, str) and not payload.isascii():
        return len(payload.encode("utf-8", "surrogatepass"))
    return len(payload)


class TokenBucket:
    """Rate limit as a token bucket: `rate` tokens/s, at most `burst`; pure, time is given."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one (refilled for the time since the last call)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class NodeStats:
    """Counters a node reports on /metrics and to the supervisor."""

    msgs_in: int = 0
    msgs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    auth_failures: int = 0
    accepted: int = 0
    injected: int = 0  # connections written a malformed frame on purpose ("inject")


class Conn:
    """One client connection's protocol state."""

    __slots__ = (
        "bucket", "claims", "id", "injected", "pending", "rooms", "strikes", "user", "ws",
    )  # fmt: skip

    def __init__(self, ws: ServerConnection, bucket: TokenBucket | None) -> None:
        self.ws = ws
        self.id = uuid.uuid4().hex[:12]
        self.claims: Claims | None = None
        self.user = "anonymous"
        # room -> last seq delivered; None while the join is being set up (frames buffered)
        self.rooms: dict[str, int | None] = {}
        self.pending: dict[str, list[tuple[int, bytes]]] = {}
        self.bucket = bucket
        self.strikes = 0
        self.injected: str | None = None  # the case id last injected into this connection


CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class Node(Supervised):
    """A harness node: call `run()`; it returns the exit code after a drain."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__()
        self.config = config
        self.stats = NodeStats()
        self.conns: dict[str, Conn] = {}
        self.rooms: dict[str, set[Conn]] = {}
        self.draining = False
        self.port = 0
        self.server: Server | None = None
        self._node_json = orjson.dumps(config.id)
        # Frames are stored in the broker without their end; each delivering node adds it.
        self._tail = b',"node":' + self._node_json + b"}"
        # Fan-out frames pre-encoded once, written per connection at the end of the loop
        # iteration (see _flush); with permessage-deflate each connection encodes its own.
        self._direct = not config.compression
        self._outbox: list[tuple[list[ServerConnection], bytes]] = []
        self._empty = asyncio.Event()
        self._empty.set()
        self.adapter = RedisAdapter(
            config.redis,
            config.id,
            AdapterConfig(
                history=config.history,
                check_interval=config.broker_check,
                presence_ttl=config.presence_ttl,
                presence_refresh=max(0.05, config.presence_ttl / 3),
            ),
            on_message=self._on_broker_message,
            on_state=self._on_broker_state,
            on_reset=self._on_broker_reset,
            on_gap=self._on_gap,
        )
        # Control commands by name.
        self.commands: dict[str, CommandHandler] = {
            "stats": self._cmd_stats,
            "drain": self._cmd_drain,
            "connections": self._cmd_connections,
            "inject": self._cmd_inject,
        }
        self.rpc_methods: dict[str, Callable[[Conn, Any], dict[str, Any]]] = {
            "echo": lambda conn, params: {"data": params},
            "time": lambda conn, params: {"time": time.time()},
            "whoami": lambda conn, params: {
                "node": self.config.id,
                "conn": conn.id,
                "user": conn.user,
                "rooms": sorted(conn.rooms),
            },
        }

    # -- process ----------------------------------------------------------------------
    async def start(self) -> int:
        """Connect to the broker (briefly waiting for it), listen, and return the port."""
        await self.adapter.start()
        await self.adapter.wait_up(timeout=2.0)
        self.server = await serve(
            self._handler,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            compression="deflate" if self.config.compression else None,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            close_timeout=self.config.close_timeout,
            max_size=self.config.max_size,
            server_header=None,
            # asyncio's default accept queue (100) overflows in a reconnect storm or a burst
            # of handshakes, and the kernel then resets connections (benchmarks/capacity.py)
            backlog=LISTEN_BACKLOG,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def run(self) -> int:
        """Serve until drained; the exit code is 0."""
        try:
            await self.start()
        except OSError as exc:
            sys.stderr.write(
                f"wsconsole node: cannot listen on {self.config.host}:{self.config.port}: "
                f"{exc.strerror or exc}\n"
            )
            await self.adapter.close()
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.drain_soon)
        line = {
            "event": "listening",
            "id": self.config.id,
            "port": self.port,
            "pid": os.getpid(),
            "broker": self.adapter.state,
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()
        if self.config.control is not None:
            await self._connect_control()
        await self._stop.wait()
        await self._shutdown()
        return 0

    async def _connect_control(self) -> None:
        assert self.config.control is not None
        host, port = self.config.control
        self.control = ControlClient(self.config.id, self.config.control_key or "", self._command)
        try:
            await self.control.connect(host, port)
        except OSError as exc:
            log.error("control channel %s:%d unreachable: %s; draining", host, port, exc)
            self.drain_soon()
            return
        self._spawn(self._stats_loop(), "node-stats")

    async def _command(self, message: dict[str, Any]) -> dict[str, Any] | None:
        handler = self.commands.get(str(message.get("cmd")))
        if handler is None:
            raise ValueError(f"unknown command {message.get('cmd')!r}")
        return await handler(message)

    async def _cmd_stats(self, message: dict[str, Any]) -> dict[str, Any]:
        reply = self.snapshot()
        del reply["type"]  # the reply's own "type" must stay "reply"
        return reply

    async def _cmd_drain(self, message: dict[str, Any]) -> dict[str, Any]:
        self.drain_soon()
        return {"draining": True}

    async def _cmd_connections(self, message: dict[str, Any]) -> dict[str, Any]:
        """Connections with user and rooms; at most `limit` (default 2000) to bound the line."""
        limit = message.get("limit", 2000)
        limit = limit if isinstance(limit, int) and limit >= 0 else 2000
        conns = []
        for conn in itertools.islice(self.conns.values(), limit):
            remote = conn.ws.remote_address
            conns.append(
                {
                    "id": conn.id,
                    "user": conn.user,
                    "rooms": sorted(conn.rooms),
                    "remote": f"{remote[0]}:{remote[1]}" if remote else None,
                }
            )
        return {"connections": conns, "total": len(self.conns)}

    # -- inject (server to client) -----------------------------------------------------
    def _inject_targets(self, request: InjectRequest) -> tuple[str, list[Conn]]:
        """The connections a target names: ('all'|'conn'|'room', conns); InjectError if none."""
        if request.target == ALL:
            kind, found = "all", list(self.conns.values())
            if not found:
                raise InjectError(f"node {self.config.id} has no connection to inject into")
        else:
            explicit, name = split_target(request.target)
            conn = self.conns.get(name) if explicit != "room" else None
            members = self.rooms.get(name) if explicit != "conn" else None
            if conn is not None:
                kind, found = "conn", [conn]
            elif members:
                kind, found = "room", sorted(members, key=lambda c: c.id)
            else:
                rooms = ", ".join(sorted(self.rooms)[:10]) or "none"
                what = {"conn": "connection", "room": "room"}.get(explicit or "", "conn or room")
                raise InjectError(
                    f"no {what} {name!r} on node {self.config.id} ({len(self.conns)} "
                    f"connections; rooms: {rooms}; ids: the 'connections' command)"
                )
        if request.count is not None:
            found = found[: request.count]
        return kind, found

    async def _cmd_inject(self, message: dict[str, Any]) -> dict[str, Any]:
        """Write a catalogue case raw to connections, then report each client's reaction.

        The bytes go straight to the transport, bypassing websockets' framing (at a frame
        boundary: websockets writes whole frames). A client that fails the connection is
        forgotten like any other that leaves; its close is not counted as a node error.
        """
        request = parse_request({k: v for k, v in message.items() if k not in _ENVELOPE})
        kind, targets = self._inject_targets(request)
        data = request.data()
        case = request.case
        written: list[Conn] = []
        skipped = 0
        for conn in targets:
            transport = conn.ws.transport
            if conn.ws.state.name != "OPEN" or transport is None or transport.is_closing():
                skipped += 1
                continue
            conn.injected = case.id
            transport.write(data)
            written.append(conn)
        self.stats.injected += len(written)
        self.stats.bytes_out += len(data) * len(written)
        self._event("injected", case=case.id, target=request.target, sent=len(written))
        started = time.monotonic()
        if written and request.wait > 0:
            waiters = [asyncio.ensure_future(conn.ws.wait_closed()) for conn in written]
            _, pending = await asyncio.wait(waiters, timeout=request.wait)
            for waiter in pending:
                waiter.cancel()
        waited = time.monotonic() - started
        reactions = []
        verdicts: Counter[str] = Counter()
        for conn in written:
            closed = conn.ws.state.name == "CLOSED"
            code, reason = conn.ws.close_code, conn.ws.close_reason or ""
            record = reaction_record(conn.id, case.expected, closed, code, reason, waited)
            verdicts[record["verdict"]] += 1
            if len(reactions) < 100:
                reactions.append(record)
        return {
            "case": case.id,
            "rfc": case.section,
            "title": case.title,
            "expected": case.expected.describe(),
            "target": request.target,
            "kind": kind,
            "sent": len(written),
            "skipped": skipped,
            "bytes": len(data),
            "connections": [conn.id for conn in written[:100]],
            "reactions": reactions,
            "verdicts": dict(verdicts),
            "waited": round(waited, 3),
        }

    def snapshot(self) -> dict[str, Any]:
        """The stats message pushed to the supervisor (also the "stats" command's reply)."""
        s = self.stats
        return {
            "type": "stats",
            "node": self.config.id,
            "t": time.time(),
            "connections": len(self.conns),
            "msgs_in": s.msgs_in,
            "msgs_out": s.msgs_out,
            "bytes_in": s.bytes_in,
            "bytes_out": s.bytes_out,
            "errors": dict(s.errors),
            "rate_limited": s.rate_limited,
            "auth_failures": s.auth_failures,
            "broker": self.adapter.state,
            "draining": self.draining,
            "rooms": len(self.rooms),
        }

    # -- drain ------------------------------------------------------------------------
    def drain_soon(self) -> None:
        """Start draining (idempotent); safe from a signal handler."""
        if not self.draining:
            self._spawn(self.drain(), "node-drain")

    async def drain(self) -> None:
        """Refuse new clients, close every client with 1001, stop when empty or at the deadline."""
        if self.draining:
            return
        self.draining = True
        self._event("draining", connections=len(self.conns))
        for conn in list(self.conns.values()):
            self._spawn(conn.ws.close(1001, "going away"), f"close-{conn.id}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), self.config.drain_deadline)
        self._stop.set()

    async def _shutdown(self) -> None:
        if self.server is not None:
            self.server.close(close_connections=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), self.config.close_timeout + 1)
        self._event("stopped")
        await self.adapter.close()
        if self.control is not None:
            await asyncio.sleep(0)  # let the last event go out
            await self.control.close()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    # -- HTTP -------------------------------------------------------------------------
    def _http(self, status: int, reason: str, body: bytes, content_type: str) -> Response:
        headers = Headers(
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
                ("X-Broker", self.adapter.state),
            ]
        )
        return Response(status, reason, headers, body)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        text = "text/plain; charset=utf-8"
        if path == "/metrics":
            body = generate_latest(self._registry())
            return self._http(200, "OK", body, CONTENT_TYPE_LATEST)
        if path == "/healthz":
            if self.draining:
                return self._http(503, "Service Unavailable", b"draining\n", text)
            body = b"ok\n" if self.adapter.state == UP else b"ok broker=down\n"
            return self._http(200, "OK", body, text)
        if self.draining:
            return self._http(503, "Service Unavailable", b"draining\n", text)
        try:
            origin = request.headers.get("Origin")
        except MultipleValuesError:
            self.stats.errors["origin"] += 1
            return self._http(400, "Bad Request", b"more than one Origin header\n", text)
        if not origin_allowed(origin, self.config.origins):
            self.stats.errors["origin"] += 1
            return self._http(403, "Forbidden", b"origin not allowed\n", text)
        if self.config.auth:
            try:
                token = token_from_request(request.path, request.headers)
            except MultipleValuesError:
                token = ""
            if token is not None:
                try:
                    claims = verify_token(self.config.secret or "", token)
                except AuthError as exc:
                    self.stats.auth_failures += 1
                    self.stats.errors["auth"] += 1
                    body = f"unauthorized: {exc.reason}\n".encode()
                    return self._http(401, "Unauthorized", body, text)
                connection.wsc_claims = claims  # type: ignore[attr-defined]
        return None

    def _registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_NodeCollector(self))  # type: ignore[arg-type]
        return registry

    # -- connections ------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        cfg = self.config
        bucket = None
        if cfg.rate:
            bucket = TokenBucket(cfg.rate, max(1.0, cfg.rate), time.monotonic())
        conn = Conn(ws, bucket)
        if self.draining:
            await ws.close(1001, "going away")
            return
        if cfg.soft_limit is not None and len(self.conns) >= cfg.soft_limit:
            self.stats.errors["soft_limit"] += 1
            await ws.close(1013, f"node at capacity ({cfg.soft_limit} connections)")
            return
        self.conns[conn.id] = conn
        self._empty.clear()
        self.stats.accepted += 1
        claimed = False
        try:
            if cfg.auth:
                conn.claims = getattr(ws, "wsc_claims", None)
                if conn.claims is None:
                    conn.claims = await self._auth_by_message(conn)
                    if conn.claims is None:
                        return
                conn.user = conn.claims.user
                if cfg.per_user:
                    ok, _ = await self.adapter.presence.claim(conn.user, conn.id, cfg.per_user)
                    if not ok:
                        self.stats.errors["per_user_limit"] += 1
                        reason = f"too many connections for this user ({cfg.per_user})"
                        await ws.close(1013, reason)
                        return
                    claimed = True
            await self._serve(conn)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("connection %s failed", conn.id)
            self.stats.errors["internal"] += 1
            with contextlib.suppress(Exception):
                await ws.close(1011, "internal error")
        finally:
            await self._cleanup(conn, claimed)

    async def _cleanup(self, conn: Conn, claimed: bool) -> None:
        code = None if conn.injected else conn.ws.close_code  # a reaction we asked for
        kind = {1002: "protocol_error", 1007: "invalid_payload", 1009: "too_big"}.get(code or 0)
        if kind is not None:
            self.stats.errors[kind] += 1
        self.conns.pop(conn.id, None)
        for room in list(conn.rooms):
            await self._leave_room(conn, room)
        if claimed:
            await self.adapter.presence.release(conn.user, conn.id)
        if not self.conns:
            self._empty.set()

    async def _auth_by_message(self, conn: Conn) -> Claims | None:
        """Wait for a first `auth` message; close 1008 (and return None) if it is not good."""
        reason = "authentication required"
        try:
            async with asyncio.timeout(self.config.auth_timeout):
                raw = await conn.ws.recv()
        except TimeoutError:
            raw = None
            reason = "authentication timeout"
        if raw is not None:
            self.stats.msgs_in += 1
            self.stats.bytes_in += _size(raw)
            try:
                envelope = parse_client(raw)
                if envelope["type"] == "auth":
                    return verify_token(self.config.secret or "", envelope["token"])
                self._error(conn, "auth_required", "send an auth message first", envelope.get("id"))
            except EnvelopeError as exc:
                reason = f"authentication required ({exc.code})"
            except AuthError as exc:
                reason = f"unauthorized: {exc.reason}"
        self.stats.auth_failures += 1
        self.stats.errors["auth"] += 1
        await conn.ws.close(1008, reason[:120])
        return None

    def _send(self, conn: Conn, frame: str | bytes) -> None:
        """Queue one text frame for a client without waiting (fan-out and replies)."""
        if self._outbox:
            self._flush()  # keep the order: fan-out queued earlier goes out first
        broadcast([conn.ws], frame, text=True)
        self.stats.msgs_out += 1
        self.stats.bytes_out += _size(frame)

    def _error(
        self, conn: Conn, code: str, detail: str, id: str | None = None, **extra: Any
    ) -> None:
        self.stats.errors[code] += 1
        self._send(conn, encode("error", code=code, detail=detail, id=id, **extra))

    async def _serve(self, conn: Conn) -> None:
        ws = conn.ws
        cfg = self.config
        abuse = cfg.abuse or (max(10, int(cfg.rate)) if cfg.rate else 0)
        async for raw in ws:
            self.stats.msgs_in += 1
            self.stats.bytes_in += _size(raw)
            if conn.bucket is not None and not conn.bucket.take(time.monotonic()):
                self.stats.rate_limited += 1
                conn.strikes += 1
                if abuse and conn.strikes >= abuse:
                    self.stats.errors["rate_abuse"] += 1
                    await ws.close(1008, "rate limit exceeded")
                    return
                ident = None
                with contextlib.suppress(EnvelopeError):
                    ident = parse_client(raw).get("id") if isinstance(raw, str) else None
                self._error(conn, "rate_limited", f"over {cfg.rate:g} messages/s", ident)
                continue
            conn.strikes = 0
            if not isinstance(raw, str):
                self._error(conn, "bad_envelope", "binary frames are not part of the protocol")
                continue
            try:
                envelope = parse_client(raw)
            except EnvelopeError as exc:
                self._error(conn, exc.code, exc.detail, exc.id)
                continue
            if conn.claims is not None and conn.claims.expired():
                self.stats.auth_failures += 1
                await ws.close(1008, "token expired")
                return
            kind = envelope["type"]
            if kind == "publish":
                self._publish(conn, envelope)
            elif kind == "join":
                await self._join(conn, envelope["room"], envelope["since"])
            elif kind == "leave":
                await self._leave_room(conn, envelope["room"])
                self._send(conn, encode("left", room=envelope["room"]))
            elif kind == "rpc":
                self._rpc(conn, envelope)
            elif kind == "auth":
                self._reauth(conn, envelope["token"])

    def _allowed(self, conn: Conn, room: str) -> bool:
        return conn.claims is None or room_allowed(conn.claims, room)

    def _reauth(self, conn: Conn, token: str) -> None:
        """A later `auth` refreshes the token (same user only); a bad one is an error reply."""
        if not self.config.auth:
            return
        try:
            claims = verify_token(self.config.secret or "", token)
        except AuthError as exc:
            self.stats.auth_failures += 1
            self._error(conn, "unauthorized", exc.reason)
            return
        if claims.user != conn.user:
            self._error(conn, "unauthorized", "a connection cannot change its user")
            return
        conn.claims = claims

    def _rpc(self, conn: Conn, envelope: dict[str, Any]) -> None:
        method = self.rpc_methods.get(envelope["method"])
        if method is None:
            self._error(
                conn, "unknown_method", f"no rpc method {envelope['method']!r}", envelope["id"]
            )
            return
        self._send(conn, encode("result", id=envelope["id"], **method(conn, envelope["params"])))

    # -- publish ----------------------------------------------------------------------
    def _publish(self, conn: Conn, envelope: dict[str, Any]) -> None:
        room, ident = envelope["room"], envelope["id"]
        if not self._allowed(conn, room):
            self._error(conn, "unauthorized", f"not allowed to publish to {room!r}", ident)
            return
        prefix = b'{"type":"message","room":' + orjson.dumps(room) + b',"seq":'
        suffix = b"".join(
            (
                b',"id":', orjson.dumps(ident),
                b',"pub_node":', self._node_json,
                b',"ts":', orjson.dumps(time.time()),
                b',"data":', orjson.dumps(envelope["data"]),
            )
        )  # fmt: skip
        future = self.adapter.publish_nowait(room, ident, prefix, suffix)
        future.add_done_callback(partial(self._published, conn, ident))

    def _published(self, conn: Conn, ident: str, future: asyncio.Future[PublishResult]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            detail = f"{exc}; not acknowledged: re-send with the same id"
            self._error(conn, "broker_unavailable", detail, ident)
            return
        self._send(conn, encode("ack", id=ident, seq=future.result().seq))

    # -- rooms ------------------------------------------------------------------------
    async def _join(self, conn: Conn, room: str, since: int | None) -> None:
        if not self._allowed(conn, room):
            self._error(conn, "unauthorized", f"not allowed to join {room!r}", room=room)
            return
        conn.rooms[room] = None
        conn.pending[room] = []
        self.rooms.setdefault(room, set()).add(conn)
        gap: RecoveryWindowExceeded | None = None
        try:
            await self.adapter.subscribe(room)
            try:
                snap = await self.adapter.snapshot(room, since)
            except RecoveryWindowExceeded as exc:
                gap = exc
                snap = await self.adapter.snapshot(room)
        except BrokerUnavailable as exc:
            await self._leave_room(conn, room)
            self._error(conn, "broker_unavailable", str(exc), room=room)
            return
        if conn.rooms.get(room, 0) is not None:
            return  # left (or re-joined) meanwhile
        self.adapter.note_seq(room, snap.seq)
        if gap is not None:
            self._error(
                conn, "recovery_window_exceeded", str(gap), room=room, first=gap.first, seq=gap.seq
            )
        self._send(conn, encode("joined", room=room, seq=snap.seq))
        for frame in snap.frames:
            self._send(conn, frame + self._tail)
        last = snap.seq
        for seq, frame in conn.pending.pop(room, []):
            if seq > last:
                self._send(conn, frame)
                last = seq
        conn.rooms[room] = last

    async def _leave_room(self, conn: Conn, room: str) -> None:
        conn.rooms.pop(room, None)
        conn.pending.pop(room, None)
        members = self.rooms.get(room)
        if members is None:
            return
        members.discard(conn)
        if not members:
            del self.rooms[room]
            await self.adapter.unsubscribe(room)

    # -- broker callbacks ---------------------------------------------------------------
    def _on_broker_message(self, room: str, seq: int, frame: bytes) -> None:
        members = self.rooms.get(room)
        if not members:
            return
        frame += self._tail
        targets = []
        limit = self.config.max_buffered
        for conn in members:
            last = conn.rooms.get(room)
            if last is None:
                buffer = conn.pending.get(room)
                if buffer is not None:
                    buffer.append((seq, frame))
            elif seq > last:
                conn.rooms[room] = seq
                transport = conn.ws.transport
                if limit is not None and transport.get_write_buffer_size() > limit:
                    self._slow(conn)
                    continue
                targets.append(conn.ws)
        if targets:
            if self._direct:
                if not self._outbox:
                    asyncio.get_running_loop().call_soon(self._flush)
                self._outbox.append((targets, text_frame(frame)))
            else:
                broadcast(targets, frame, text=True)
            self.stats.msgs_out += len(targets)
            self.stats.bytes_out += len(frame) * len(targets)

    def _flush(self) -> None:
        """Write the fan-out queued in this loop iteration: one write per connection.

        The frame is encoded once for every member (websockets' broadcast builds it once per
        connection), and frames for one connection are joined so a burst costs one syscall.
        Same checks as `websockets.broadcast`: open connections only, none mid-fragment.
        """
        batch, self._outbox = self._outbox, []
        if len(batch) == 1:
            targets, wire = batch[0]
            for ws in targets:
                if ws.protocol.state is WS_OPEN and ws.send_in_progress is None:
                    ws.transport.write(wire)
            return
        per: dict[ServerConnection, list[bytes]] = {}
        for targets, wire in batch:
            for ws in targets:
                queued = per.get(ws)
                if queued is None:
                    per[ws] = [wire]
                else:
                    queued.append(wire)
        for ws, wires in per.items():
            if ws.protocol.state is WS_OPEN and ws.send_in_progress is None:
                ws.transport.write(b"".join(wires))

    def _slow(self, conn: Conn) -> None:
        if conn.ws.state.name == "OPEN":
            self.stats.errors["slow_consumer"] += 1
            self._spawn(conn.ws.close(1008, "slow consumer"), f"close-slow-{conn.id}")

    def _on_broker_state(self, state: str) -> None:
        self._event("broker_up" if state == UP else "broker_down")

    def _on_broker_reset(self, rooms: list[str]) -> None:
        self._event("broker_reset", rooms=len(rooms))
        for room in rooms:
            for conn in self.rooms.get(room, ()):
                if conn.rooms.get(room) is not None:
                    conn.rooms[room] = 0
                    self._send(conn, encode("joined", room=room, seq=0, reset=True))

    def _on_gap(self, room: str, exc: RecoveryWindowExceeded) -> None:
        for conn in self.rooms.get(room, ()):
            if conn.rooms.get(room) is not None:
                conn.rooms[room] = exc.seq
                self._error(
                    conn,
                    "recovery_window_exceeded",
                    str(exc),
                    room=room,
                    first=exc.first,
                    seq=exc.seq,
                )
                self._send(conn, encode("joined", room=room, seq=exc.seq))


class _NodeCollector:
    """Prometheus collector reading a node's counters at scrape time (no hot-path cost)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self):  # type: ignore[no-untyped-def]
        """Yield the node's metric families."""
        node, s, labels = self.node, self.node.stats, ["node"]
        ident = [node.config.id]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(ident, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric(ident, value)
            return family

        yield gauge("wsconsole_connections", "Open WebSocket connections", len(node.conns))
        yield gauge("wsconsole_rooms", "Rooms with a local member", len(node.rooms))
        yield gauge("wsconsole_broker_up", "1 if the broker is reachable", node.adapter.state == UP)
        yield gauge("wsconsole_draining", "1 while the node drains", node.draining)
        yield counter("wsconsole_connections_accepted", "Connections accepted", s.accepted)
        yield counter("wsconsole_messages_in", "Messages received from clients", s.msgs_in)
        yield counter("wsconsole_messages_out", "Messages sent to clients", s.msgs_out)
        yield counter("wsconsole_bytes_in", "Bytes received from clients", s.bytes_in)
        yield counter("wsconsole_bytes_out", "Bytes sent to clients", s.bytes_out)
        yield counter(
            "wsconsole_rate_limited", "Messages refused by the rate limit", s.rate_limited
        )
        yield counter("wsconsole_auth_failures", "Refused authentications", s.auth_failures)
        yield counter(
            "wsconsole_injected", "Connections sent a malformed frame on purpose", s.injected
        )
        errors = CounterMetricFamily("wsconsole_errors", "Errors by kind", labels=["node", "kind"])
        for kind, count in sorted(s.errors.items()):
            errors.add_metric([node.config.id, kind], count)
        yield errors


# -- command line -------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The node's options (shared by `python -m wsconsole.harness.node` and `wsconsole node`)."""
    d = NodeConfig()
    add = parser.add_argument
    add("--id", default=d.id, help="node id, shown on every message (default %(default)s)")
    add("--host", default=d.host, help="listen address (default %(default)s)")
    add("--port", type=int, default=d.port, help="listen port, 0 = a free one (default 0)")
    add("--redis", required=True, metavar="URL", help="the broker, e.g. redis://127.0.0.1:6379/0")
    add(
        "--control",
        metavar="HOST:PORT",
        help=f"supervisor control channel (key: ${CONTROL_KEY_ENV})",
    )
    add("--ping-interval", type=float, default=d.ping_interval, help="seconds, 0 = no pings")
    add("--ping-timeout", type=float, default=d.ping_timeout, help="seconds to wait for a pong")
    add("--max-size", type=int, default=d.max_size, help="max message bytes (larger: close 1009)")
    add("--rate", type=float, default=d.rate, help="messages/s per connection, 0 = no limit")
    add("--per-user", type=int, default=d.per_user, help="connections per user, 0 = no limit")
    add("--soft-limit", type=int, default=d.soft_limit, help="connections per node (then 1013)")
    add("--history", type=int, default=d.history, help="messages kept per room for recovery")
    add("--auth-timeout", type=float, default=d.auth_timeout, help="seconds for a first auth msg")
    add("--drain-deadline", type=float, default=d.drain_deadline, help="seconds a drain may take")
    add("--presence-ttl", type=float, default=d.presence_ttl, help=argparse.SUPPRESS)
    add("--broker-check", type=float, default=d.broker_check, help=argparse.SUPPRESS)
    add(
        "--no-auth",
        action="store_true",
        help=f"accept clients without a token (else ${SECRET_ENV})",
    )
    add("--origin", action="append", default=[], metavar="ORIGIN",
        help="also allow this Origin (repeatable; '*' = any)")  # fmt: skip
    add("--compression", action="store_true", help="enable permessage-deflate (off by default)")
    add("--verbose", "-v", action="store_true", help="log at INFO level on stderr")
    add("--json", action="store_true", help="accepted for symmetry: stdout is always JSON lines")


def config_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> NodeConfig:
    """Validate the parsed arguments and environment into a NodeConfig (UsageError if bad)."""
    env = dict(os.environ) if env is None else env
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args.id):
        raise UsageError(f"--id {args.id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a TCP port")
    if not re.match(r"^(redis|rediss|unix)://", args.redis):
        raise UsageError(f"--redis {args.redis!r}: expected a URL like redis://127.0.0.1:6379/0")
    try:
        RedisAdapter.check_url(args.redis)
    except ValueError as exc:
        raise UsageError(f"--redis {args.redis!r}: {exc}") from None
    numeric = (
        "ping_interval", "ping_timeout", "max_size", "rate", "per_user", "soft_limit",
        "history", "auth_timeout", "drain_deadline", "presence_ttl", "broker_check",
    )  # fmt: skip
    for name in numeric:
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    if args.history < 1:
        raise UsageError("--history must be at least 1")
    control = None
    control_key = None
    if args.control:
        host, sep, port = args.control.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--control {args.control!r}: expected HOST:PORT")
        control = (host, int(port))
        control_key = env.get(CONTROL_KEY_ENV)
        if not control_key:
            raise UsageError(f"--control needs the key in ${CONTROL_KEY_ENV}")
    secret = env.get(SECRET_ENV)
    if not args.no_auth and not secret:
        raise UsageError(f"set ${SECRET_ENV} to the cluster's JWT secret, or pass --no-auth")
    return NodeConfig(
        id=args.id,
        host=args.host,
        port=args.port,
        redis=args.redis,
        control=control,
        control_key=control_key,
        secret=secret,
        auth=not args.no_auth,
        auth_timeout=args.auth_timeout or 5.0,
        origins=tuple(args.origin),
        ping_interval=args.ping_interval or None,
        ping_timeout=args.ping_timeout or None,
        max_size=args.max_size or None,
        rate=args.rate or None,
        per_user=args.per_user or None,
        soft_limit=args.soft_limit or None,
        history=args.history,
        drain_deadline=args.drain_deadline,
        compression=args.compression,
        presence_ttl=args.presence_ttl or 15.0,
        broker_check=args.broker_check or 0.5,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run a node from parsed arguments; returns the exit code (2 for bad usage)."""
    try:
        config = config_from_args(args)
    except UsageError as exc:
        sys.stderr.write(f"wsconsole node: error: {exc}\n")
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s {config.id} %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("websockets").setLevel(logging.ERROR)

    async def main() -> int:
        return await Node(config).run()

    try:
        # uvloop where installed: about 20 % more for a node (DESIGN.md); nodes only.
        import uvloop
    except ImportError:
        uvloop = None
    try:
        if uvloop is not None:
            return uvloop.run(main())
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m wsconsole.harness.node ...`."""
    parser = argparse.ArgumentParser(prog="wsconsole node", description=HELP)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


HELP = "Run one harness node (a WebSocket server fanned out through the broker)."

if __name__ == "__main__":
    sys.exit(main())
