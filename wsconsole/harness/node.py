"""One harness node: a `websockets` server speaking the harness protocol (DESIGN.md).

Run as `python -m wsconsole.harness.node` or `wsconsole node` (options: `nodeconfig.py`).
Rooms, sequence numbers, history and presence live in the broker (see `adapter.py`); this
module is the per-connection protocol and the process interface, over pieces that each do
one job: `admission.py` (who may connect: handshake checks, Origin, tokens, the node's and
each user's connection limits), `limits.py` (the per-connection message rate),
`rooms.py` (room membership and fan-out decisions, a pure state object), `fanout.py`
(the writes), `nodeinject.py` (the "inject" command), `nodemetrics.py` (`/metrics`).

Security checklist, all on by default, each configurable:
- authentication: a JWT from the query parameter `token`, an `Authorization: Bearer`
  header, or a first `{"type": "auth", "token": ...}` message within `auth_timeout`.
  A bad token at the handshake gets HTTP 401; a bad, missing or late first message
  closes with 1008 (another request first also gets `error auth_required` before it).
  Tokens carry per-room patterns: join/publish elsewhere gets `error unauthorized`.
  A token that expires while connected closes with 1008.
- a handshake stricter than the library: no Host gets 400, a Sec-WebSocket-Version other
  than 13 gets 426 naming 13; Origin allow-list: no Origin (non-browser clients) and
  http(s) on localhost / 127.0.0.1, plus `--origin` values (`*` allows any); anything
  else gets HTTP 403 (see `admission.py`).
- rate limit: a token bucket per connection (`rate` msg/s, burst `rate`); a message over
  it is not processed and gets `error rate_limited` (with its id); `abuse` rejections in
  a row (default: the burst) close with 1008.
- max message size (1009, by `websockets`), invalid UTF-8 (1007): in a fragmented text
  message at the first fragment that cannot be UTF-8 (core/framecheck.py; `websockets`
  alone waits for the last fragment).
- per-user connections across the cluster (`per_user`): one more closes with 1013
  "try again later", because the limit frees itself as soon as another connection of the
  user ends (or, for a SIGKILLed node, after the presence TTL). While the broker is
  down the check is local only (availability first).
- node soft limit: connections beyond it close with 1013.
- heartbeat: ping every `ping_interval`, close (1011) when no pong within `ping_timeout`
  (one sweep for the whole node, `heartbeat.py`, not a task per connection).
- backpressure: a connection's send buffer holds at most `max_buffered` bytes of fan-out;
  a client that does not read fast enough is told which messages it missed (`lagging`,
  per room: epoch, first and last seq) and closed with 1013, so it rejoins with `since`
  and gets them from history; publishes get `error broker_busy` (not acknowledged,
  with `retry_after`) instead of waiting in an ever longer queue while the node's own
  deliveries run over `max_delay` behind their publish (`overload.py`), and beyond the
  broker backlog (`max_backlog`).

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
`room`, `epoch`, `first`, `seq`) and is still joined at the current seq (a `joined`
follows); when a room's sequence space changes (the broker lost its state: a new epoch)
every member present gets `joined {room, epoch, seq, reset: true}` followed by the new
epoch's messages from seq 1, and a member that was away gets the same when it joins with
the old epoch (docs/protocol.md). rpc methods: `echo`
(result `data` = params), `time` (`time`, wall clock), `whoami` (`node`, `conn`, `user`,
`rooms`).

Echo endpoint: a WebSocket on the path `/echo` (same admission, token and limits) sends
every message back as it came, text or binary, and speaks no harness protocol: standard
conformance suites (Autobahn, docs/conformance.md) run against a node or the harness there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from wsconsole.core.envelope import encode
from wsconsole.harness.adapter import (
    RecoveryWindowExceeded,
    RedisAdapter,
)
from wsconsole.harness.admission import Admission, Refusal
from wsconsole.harness.brokerlink import UP
from wsconsole.harness.fanout import WS_OPEN, Fanout, Mark, cap_kernel_buffers
from wsconsole.harness.heartbeat import Heartbeat
from wsconsole.harness.limits import MessageRate
from wsconsole.harness.nodeconfig import NodeConfig, UsageError, add_arguments, config_from_args
from wsconsole.harness.nodeinject import inject
from wsconsole.harness.nodemetrics import CONTENT_TYPE_LATEST, exposition
from wsconsole.harness.overload import DeliveryDelay
from wsconsole.harness.rooms import RoomTable
from wsconsole.harness.serverconn import StrictConnection, release_handshake
from wsconsole.harness.session import ECHO_PATH, Session
from wsconsole.harness.stats import NodeSnapshot
from wsconsole.harness.supervised import CommandHandler, Supervised

log = logging.getLogger("wsconsole.node")

LISTEN_BACKLOG = 4096  # capped by the kernel's net.core.somaxconn
_TEXT = "text/plain; charset=utf-8"


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


class Node(Supervised):
    """A harness node: call `run()`; it returns the exit code after a drain."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__()
        self.config = config
        self.stats = NodeStats()
        self.conns: dict[str, Session] = {}
        self.rooms: RoomTable[Session] = RoomTable()
        self.draining = False
        self.port = 0
        self.server: Server | None = None
        self.admission = Admission.of(config)
        self.fanout: Fanout[Session] = Fanout(
            self.stats,
            compression=config.compression,
            max_buffered=config.max_buffered,
            on_slow=self._slow,
        )
        self.delay = DeliveryDelay(config.max_delay)
        self.heartbeat = (
            None
            if config.ping_interval is None
            else Heartbeat(config.ping_interval, config.ping_timeout, self._tasks)
        )
        self._recipients: list[Session] = []  # the latest fan-out's (for the delay probe)
        self.id_json = orjson.dumps(config.id)
        # Frames are stored in the broker without their end; each delivering node adds it.
        self.tail = b',"node":' + self.id_json + b"}"
        self._empty = asyncio.Event()
        self._empty.set()
        self.adapter = RedisAdapter(
            config.redis,
            config.id,
            config.adapter_config(),
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
            "inject": lambda message: inject(self, message, self._event),
        }
        self.rpc_methods: dict[str, Callable[[Session, Any], dict[str, Any]]] = {
            "echo": lambda conn, params: {"data": params},
            "time": lambda conn, params: {"time": time.time()},
            "whoami": lambda conn, params: {
                "node": self.config.id,
                "conn": conn.id,
                "user": conn.user,
                "rooms": self.rooms.rooms_of(conn),
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
            ping_interval=None,  # one node-wide sweep, not a task per connection: heartbeat.py
            close_timeout=self.config.close_timeout,
            max_size=self.config.max_size,
            server_header=None,
            create_connection=StrictConnection,
            ssl=self.config.ssl_context(),
            # asyncio's default accept queue (100) overflows in a reconnect storm or a burst
            # of handshakes, and the kernel then resets connections (benchmarks/capacity.py)
            backlog=LISTEN_BACKLOG,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        cap_kernel_buffers(self.server.sockets, self.config.max_buffered)
        self._spawn(self.delay.probe(lambda: [conn.ws for conn in self._recipients]),
                    "delivery-probe")  # fmt: skip
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
        self._announce(broker=self.adapter.state)
        await self._connect_control()
        await self._stop.wait()
        await self._shutdown()
        return 0

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
                    "rooms": self.rooms.rooms_of(conn),
                    "remote": f"{remote[0]}:{remote[1]}" if remote else None,
                }
            )
        return {"connections": conns, "total": len(self.conns)}

    def snapshot(self) -> dict[str, Any]:
        """The stats message pushed to the supervisor (also the "stats" command's reply)."""
        s = self.stats
        return NodeSnapshot(
            node=self.config.id,
            t=time.time(),
            connections=len(self.conns),
            msgs_in=s.msgs_in,
            msgs_out=s.msgs_out,
            bytes_in=s.bytes_in,
            bytes_out=s.bytes_out,
            errors=dict(s.errors),
            rate_limited=s.rate_limited,
            auth_failures=s.auth_failures,
            broker=self.adapter.state,
            draining=self.draining,
            rooms=len(self.rooms),
        ).message()

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
        if self.heartbeat is not None:
            self.heartbeat.close()
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
    def _http(
        self,
        status: int,
        body: bytes,
        content_type: str = _TEXT,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        headers = Headers(
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
                ("X-Broker", self.adapter.state),
                *extra,
            ]
        )
        return Response(status, HTTPStatus(status).phrase, headers, body)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """`/metrics` and `/healthz`, else the admission checks of a handshake."""
        path = request.path.partition("?")[0]
        if path == "/metrics":
            return self._http(200, self._metrics(), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            if self.draining:
                return self._http(503, b"draining\n")
            return self._http(200, b"ok\n" if self.adapter.state == UP else b"ok broker=down\n")
        verdict = self.admission.handshake(request.path, request.headers, draining=self.draining)
        if isinstance(verdict, Refusal):
            self._count(verdict)
            return self._http(verdict.code, f"{verdict.reason}\n".encode(), extra=verdict.headers)
        if verdict is not None:
            connection.wsc_claims = verdict  # type: ignore[attr-defined]
        return None

    def _metrics(self) -> bytes:
        """The Prometheus text of this node's counters."""
        s = self.stats
        gauges = [
            ("wsconsole_rooms", "Rooms with a local member", len(self.rooms)),
            ("wsconsole_broker_up", "1 if the broker is reachable", self.adapter.state == UP),
            ("wsconsole_send_buffer_peak_bytes", "Largest send buffer after a fan-out write",
             self.fanout.peak_buffered),
            ("wsconsole_delivery_delay_seconds",
             "How far behind deliveries run (overload.py; over --max-delay: broker_busy)",
             self.delay.delay),
        ]
        counters = [
            ("wsconsole_bytes_in", "Bytes received from clients", s.bytes_in),
            ("wsconsole_bytes_out", "Bytes sent to clients", s.bytes_out),
            ("wsconsole_rate_limited", "Messages refused by the rate limit", s.rate_limited),
            ("wsconsole_injected", "Connections sent a malformed frame on purpose", s.injected),
        ]
        return exposition(
            self.config.id,
            s,
            connections=len(self.conns),
            draining=self.draining,
            gauges=gauges,
            counters=counters,
            errors=s.errors,
        )

    def _count(self, refusal: Refusal) -> None:
        """Count a refused client under its kind (a refused token is an auth failure too)."""
        if refusal.counts_as is not None:
            self.stats.errors[refusal.counts_as] += 1
        if refusal.auth:
            self.stats.auth_failures += 1

    # -- connections ------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        cfg = self.config
        rate = MessageRate(cfg.rate, time.monotonic(), cfg.abuse) if cfg.rate else None
        conn = Session(self, ws, rate)
        echo = ws.request is not None and ws.request.path.partition("?")[0] == ECHO_PATH
        release_handshake(ws)
        if self.draining:
            await ws.close(1001, "going away")
            return
        refusal = self.admission.over_capacity(len(self.conns))
        if refusal is not None:
            self._count(refusal)
            await ws.close(refusal.code, refusal.reason)
            return
        self.conns[conn.id] = conn
        if self.heartbeat is not None:
            self.heartbeat.watch(ws)
        self._empty.clear()
        self.stats.accepted += 1
        claimed = False
        try:
            if cfg.auth:
                conn.claims = getattr(ws, "wsc_claims", None)
                if conn.claims is None:
                    conn.claims = await conn.authenticate()
                    if conn.claims is None:
                        return
                conn.user = conn.claims.user
                if cfg.per_user:
                    ok, _ = await self.adapter.presence.claim(conn.user, conn.id, cfg.per_user)
                    if not ok:
                        refusal = self.admission.user_limit_reached()
                        self._count(refusal)
                        await ws.close(refusal.code, refusal.reason)
                        return
                    claimed = True
            if echo:
                await conn.echo()
            else:
                await conn.serve()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("connection %s failed", conn.id)
            self.stats.errors["internal"] += 1
            with contextlib.suppress(Exception):
                await ws.close(1011, "internal error")
        finally:
            await self._cleanup(conn, claimed)

    async def _cleanup(self, conn: Session, claimed: bool) -> None:
        code = None if conn.injected else conn.ws.close_code  # a reaction we asked for
        kind = {1002: "protocol_error", 1007: "invalid_payload", 1009: "too_big"}.get(code or 0)
        if kind is not None:
            self.stats.errors[kind] += 1
        self.conns.pop(conn.id, None)
        if self.heartbeat is not None:
            self.heartbeat.forget(conn.ws)
        for room in self.rooms.rooms_of(conn):
            await conn.leave(room)
        if claimed:
            await self.adapter.presence.release(conn.user, conn.id)
        if not self.conns:
            self._empty.set()

    # -- broker callbacks ---------------------------------------------------------------
    def _on_broker_message(self, room: str, epoch: str, seq: int, frame: bytes) -> None:
        self.delay.observe(frame)
        frame += self.tail
        targets = self.rooms.deliver(room, epoch, seq, frame)
        if targets:
            self._recipients = targets
            self.fanout.queue(targets, frame, Mark(room, epoch, seq))

    def _slow(self, conn: Session, missed: list[Mark]) -> None:
        """A slow consumer (its send buffer is full): a `lagging` notice per room with the
        messages it will not get on this connection, then close 1013 at once, so nothing
        more is queued for it; it recovers them from history when it rejoins."""
        ws = conn.ws
        if ws.protocol.state is not WS_OPEN:
            return  # already told
        self.stats.errors["lagging"] += 1
        ranges: dict[str, list[Any]] = {}
        for mark in missed:
            span = ranges.get(mark.room)
            if span is None:
                ranges[mark.room] = [mark.epoch, mark.seq, mark.seq]
            elif span[0] == mark.epoch:
                span[1], span[2] = min(span[1], mark.seq), max(span[2], mark.seq)
        for room, (epoch, first, last) in ranges.items():
            conn.send(encode("lagging", room=room, epoch=epoch, first=first, seq=last))
        reason = f"lagging: over {self.config.max_buffered} bytes queued"
        ws.protocol.send_close(1013, reason)  # now, not at the task's turn: CLOSING from here
        ws.send_data()
        self._spawn(ws.close(), f"close-slow-{conn.id}")  # waits close_timeout, then aborts

    def _on_broker_state(self, state: str) -> None:
        self._event("broker_up" if state == UP else "broker_down")

    def _on_broker_reset(self, room: str, epoch: str, seq: int) -> None:
        """The room's sequence space changed (the broker lost its state): say so, loudly."""
        self._event("broker_reset", room=room, epoch=epoch)
        for conn in self.rooms.reset(room, epoch):
            conn.send(encode("joined", room=room, epoch=epoch, seq=seq, reset=True))

    def _on_gap(self, room: str, exc: RecoveryWindowExceeded) -> None:
        if exc.reset:
            self._event("broker_reset", room=room, epoch=exc.epoch)
        for conn, reset in self.rooms.skip_to(room, exc.epoch, exc.seq):
            conn.window_exceeded(exc)
            joined = encode("joined", room=room, epoch=exc.epoch, seq=exc.seq, reset=reset or None)
            conn.send(joined)

    def recheck(self, room: str) -> None:
        """A join read `room` in another epoch than the node follows: catch the room up from
        the broker (a reset comes if the epoch moved on), then bring any member still in an
        old epoch in step by joining it again from its position (it is told of the reset)."""
        self._spawn(self._recheck(room), f"recheck-{room}")

    async def _recheck(self, room: str) -> None:
        await self.adapter.refresh(room)
        for conn, epoch, seq in self.rooms.strays(room):
            await conn.join(room, seq, epoch)


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
