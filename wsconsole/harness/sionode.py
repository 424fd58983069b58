"""The Socket.IO node flavour: python-socketio's AsyncServer fanned out through the broker.

Run as `wsconsole sionode` (same options as `wsconsole node`; the supervisor starts it for
`wsconsole harness --flavour socketio`). It is the harness node's process interface on a
Socket.IO server: one `listening` JSON line on stdout, `GET /healthz` (200 "ok", 503
"draining") and `GET /metrics` on the same port as `/socket.io/`, the control channel
(commands "stats", "drain", "connections", "inject"; stats in the ws node's shape), drain on
SIGTERM/SIGINT or when the control channel is lost.

It keeps the ws node's promises (docs/targets.md, "The Socket.IO harness flavour"): the
same broker adapter (`adapter.py`: epochs, dense sequence numbers, the bounded history,
idempotent publish ids) and the same room bookkeeping (`rooms.RoomTable`), so a client
that was away, its node SIGKILLed included, rejoins with `since` and its `epoch` and gets
exactly what it missed, or a reset / window notice, never a silent gap. python-socketio's
own connection-state recovery dies with its node (measured, DESIGN.md); this one lives in
the broker. Also the ws node's limits: the per-connection message rate (an event over it
is refused, persistent abuse disconnects), the per-user connection limit across the
cluster (refused at connect), the node soft limit, the Origin allow-list, auth; and the
"inject" command (a catalogue case written raw to websocket-transport sessions).

Events, client to node (each may carry an ack callback):
- "join" ROOM [{since, epoch}] -> ack ["joined", ROOM] or ["error", {code, detail, room}];
  then the node emits "joined" {room, epoch, seq, reset?}, the missed "message"s, live ones;
  a window error is emitted as "error" {code: recovery_window_exceeded, room, epoch, first,
  seq} before that "joined";
- "leave" ROOM -> ack ["left", ROOM];
- "publish" ROOM DATA [ID] -> ack ["ok", {id, epoch, seq}] once the broker took it, else
  ["error", {code, detail, id}] (broker_unavailable, rate_limited, unauthorized): re-send
  with the same ID (without one the node makes one up, and a re-send is a new message);
- "echo" ...args (ack the same args), "whoami" (ack {node, sid, user, rooms}).
Node to client: "joined", "message" {room, epoch, seq, id, node, pub_node, ts, data},
"error" as above; a room whose sequence space changed gets "joined" with reset: true.

Auth (unless --no-auth): a JWT in the auth payload {"token": ...}, the `token` query
parameter or `Authorization: Bearer`; refused connections get a CONNECT_ERROR
{"message": reason}. Drain: new connections are refused ("draining"), every client is
disconnected (the client sees "io server disconnect" and reconnects through the balancer).
Polling needs stickiness: with the balancer in "ip" or "cookie" mode every request of a
session reaches this node; "sid" hashes the Engine.IO sid, which the node chose, so polling
sessions break there (websocket-only sessions work in every mode) — see docs/targets.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from websockets.protocol import State

from wsconsole.harness.adapter import (
    UP,
    PublishResult,
    RecoveryWindowExceeded,
    RedisAdapter,
)
from wsconsole.harness.admission import DRAINING, Admission
from wsconsole.harness.auth import AuthError, Claims, room_allowed
from wsconsole.harness.brokerlink import BrokerUnavailable
from wsconsole.harness.joins import join_room
from wsconsole.harness.limits import MessageRate, Verdict
from wsconsole.harness.nodeconfig import NodeConfig, UsageError, add_arguments, config_from_args
from wsconsole.harness.nodeinject import inject
from wsconsole.harness.nodemetrics import CONTENT_TYPE_LATEST, exposition
from wsconsole.harness.rooms import RoomTable
from wsconsole.harness.stats import NodeSnapshot
from wsconsole.harness.supervised import Supervised

if TYPE_CHECKING:
    from aiohttp import web

# python-socketio and aiohttp are imported where used: every `wsconsole` command line
# loads this module for its HELP, and only a running node needs them.

log = logging.getLogger(__name__)

HELP = "Run one Socket.IO harness node (python-socketio fanned out through the broker)."
MAX_ROOM = 128  # the ws protocol's limit on names


@dataclass
class SioStats:
    """Counters reported on /metrics and to the supervisor."""

    accepted: int = 0
    msgs_in: int = 0
    msgs_out: int = 0
    bytes_out: int = 0
    auth_failures: int = 0
    rate_limited: int = 0
    injected: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class RawSocket:
    """A session's websocket as `nodeinject` sees it: the raw transport under it, its state,
    and its end. The close code the client sent stays inside the Socket.IO stack: a
    reaction is seen as closed or not, without a code."""

    def __init__(self, transport: asyncio.Transport | None) -> None:
        self.transport = transport
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._closed = asyncio.Event()

    @property
    def state(self) -> State:
        """OPEN until the session ended."""
        return State.CLOSED if self._closed.is_set() else State.OPEN

    def ended(self) -> None:
        """The session is over (disconnected)."""
        self._closed.set()

    async def wait_closed(self) -> None:
        """Until the session is over."""
        await self._closed.wait()


@dataclass(eq=False)
class SioConn:
    """One Socket.IO session: who it is, its rate limit, and its raw socket (for inject)."""

    id: str  # the Socket.IO sid
    user: str
    claims: Claims | None
    rate: MessageRate | None
    ws: RawSocket
    claimed: bool = False
    injected: str | None = None

    def allowed(self, room: str) -> bool:
        """Whether the token lets this session into `room`."""
        return self.claims is None or room_allowed(self.claims, room)


class SioNode(Supervised):
    """A Socket.IO node: call `run()`; it returns the exit code after a drain."""

    def __init__(self, config: NodeConfig) -> None:
        import socketio
        from aiohttp import web

        super().__init__()
        self.config = config
        self.stats = SioStats()
        self.conns: dict[str, SioConn] = {}  # by sid
        self.rooms: RoomTable[SioConn] = RoomTable()
        self.draining = False
        self.port = 0
        self.admission = Admission.of(config)
        self.tail = b',"node":' + orjson.dumps(config.id) + b"}"
        self.adapter = RedisAdapter(
            config.redis,
            config.id,
            config.adapter_config(),
            on_message=self._on_broker_message,
            on_state=lambda state: self._event("broker_up" if state == UP else "broker_down"),
            on_reset=self._on_broker_reset,
            on_gap=self._on_gap,
        )
        # emits in order, one after another: a join's "joined" before its replay, before
        # the live messages that follow it
        self._out: deque[tuple[str, str, Any]] = deque()
        self._wake = asyncio.Event()
        origins: Any = "*" if "*" in config.origins else self._origin_ok
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            ping_interval=config.ping_interval or 25,
            ping_timeout=config.ping_timeout or 20,
            max_http_buffer_size=config.max_size or 10**8,
            cors_allowed_origins=origins,
        )
        self.app = web.Application(middlewares=[web.middleware(self._see_upgrades_of())])
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)
        self.sio.attach(self.app)
        self._runner: web.AppRunner | None = None
        self._wire()
        self.commands = {
            "stats": self._cmd_stats,
            "drain": self._cmd_drain,
            "connections": self._cmd_connections,
            "inject": lambda message: inject(self, message, self._event),  # type: ignore[arg-type]
        }

    def _origin_ok(self, origin: str | None, environ: Any = None) -> bool:
        """The ws node's allow-list: no Origin, localhost http(s), plus --origin values."""
        return self.admission.origin_allowed(origin)

    # -- Socket.IO events ---------------------------------------------------------------

    def _wire(self) -> None:
        sio = self.sio
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        sio.on("join", self._on_join)
        sio.on("leave", self._on_leave)
        sio.on("publish", self._on_publish)
        sio.on("echo", self._on_echo)
        sio.on("whoami", self._on_whoami)

    def _admit(self, environ: dict[str, Any], auth: Any) -> Claims | None:
        """The ws node's admission: draining, the soft limit, then the token (the auth
        payload's, else the query's or the Authorization header's); None without auth.

        A refusal raises ConnectionRefusedError: the client gets a CONNECT_ERROR with it.
        """
        from socketio.exceptions import ConnectionRefusedError

        refusal = DRAINING if self.draining else self.admission.over_capacity(len(self.conns))
        if refusal is not None:
            if refusal.counts_as is not None:
                self.stats.errors[refusal.counts_as] += 1
            raise ConnectionRefusedError(refusal.reason)
        if not self.config.auth:
            return None
        token = auth.get("token") if isinstance(auth, dict) else None
        if not token:
            headers = {"Authorization": environ.get("HTTP_AUTHORIZATION", "")}
            token = self.admission.token_of(environ.get("QUERY_STRING", ""), headers)
        try:
            return self.admission.verify(token or "")
        except AuthError as exc:
            self.stats.auth_failures += 1
            raise ConnectionRefusedError(exc.reason) from None

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        from socketio.exceptions import ConnectionRefusedError

        claims = self._admit(environ, auth)
        cfg = self.config
        rate = MessageRate(cfg.rate, time.monotonic(), cfg.abuse) if cfg.rate else None
        conn = SioConn(sid, claims.user if claims else "anonymous", claims, rate,
                       RawSocket(self._transport_of(sid, environ)))  # fmt: skip
        if claims is not None and cfg.per_user:
            ok, _ = await self.adapter.presence.claim(conn.user, sid, cfg.per_user)
            if not ok:
                refusal = self.admission.user_limit_reached()
                self.stats.errors[refusal.counts_as or "per_user_limit"] += 1
                raise ConnectionRefusedError(refusal.reason)
            conn.claimed = True
        self.conns[sid] = conn
        self.stats.accepted += 1

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self.conns.pop(sid, None)
        if conn is not None:
            conn.ws.ended()
            for room in self.rooms.rooms_of(conn):
                await self._leave(conn, room)
            if conn.claimed:
                await self.adapter.presence.release(conn.user, sid)
        if self.draining and not self.conns:
            self._stop.set()

    def _check(self, sid: str, room: Any) -> tuple[SioConn | None, dict[str, Any] | None]:
        """The session of `sid` and, when the event must be refused, the error to answer."""
        self.stats.msgs_in += 1
        conn = self.conns.get(sid)
        if conn is None:
            return None, {"code": "gone", "detail": "the session is over"}
        if conn.rate is not None:
            verdict = conn.rate.check(time.monotonic())
            if verdict is not Verdict.OK:
                self.stats.rate_limited += 1
                if verdict is Verdict.ABUSE:
                    self.stats.errors["rate_abuse"] += 1
                    self._spawn(self.sio.disconnect(sid), f"abuse-{sid}")
                return conn, self._error("rate_limited", f"over {self.config.rate:g} messages/s")
        if room is not None:
            if not isinstance(room, str) or not room or len(room) > MAX_ROOM:
                return conn, self._error("bad_envelope", "a room is a name of 1-128 characters")
            if not conn.allowed(room):
                return conn, self._error("unauthorized", f"not allowed in {room!r}")
        return conn, None

    def _error(self, code: str, detail: str, **extra: Any) -> dict[str, Any]:
        self.stats.errors[code] += 1
        return {"code": code, "detail": detail, **extra}

    async def _on_join(self, sid: str, room: Any = None, options: Any = None) -> Any:
        conn, refused = self._check(sid, room)
        if refused is not None or conn is None:
            return "error", {**(refused or {}), "room": room}
        position = options if isinstance(options, dict) else {}
        since, epoch = position.get("since"), position.get("epoch")
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            since = None
        error = await self.join(conn, room, since, None if epoch is None else str(epoch))
        return ("error", error) if error is not None else ("joined", room)

    async def join(
        self, conn: SioConn, room: str, since: int | None, epoch: str | None
    ) -> dict[str, Any] | None:
        """The ws node's join (session.Session.join) over Socket.IO events; the error that
        refused it, if any."""
        try:
            read = await join_room(self.adapter, self.rooms, conn, room, since, epoch)
        except BrokerUnavailable as exc:
            await self._leave(conn, room)
            return self._error("broker_unavailable", str(exc), room=room)
        if read is None:
            return None  # left meanwhile
        snap, gap = read.snapshot, read.gap
        if gap is not None:  # up to the position `joined` gives (see session.Session.join)
            self._window_exceeded(conn, gap, snap.seq)
        reset = snap.reset or (gap is not None and gap.reset)
        joined = {"room": room, "epoch": snap.epoch, "seq": snap.seq}
        self._emit(conn, "joined", {**joined, "reset": True} if reset else joined)
        for frame in snap.frames:
            self._emit(conn, "message", self._message(frame + self.tail))
        for frame in read.buffered:
            self._emit(conn, "message", self._message(frame))
        if not read.in_step or self.rooms.epoch(room) != snap.epoch:
            self._spawn(self._recheck(room), f"recheck-{room}")
        return None

    async def _recheck(self, room: str) -> None:
        """A join read `room` in another epoch than this node follows (see node.Node)."""
        await self.adapter.refresh(room)
        for conn, epoch, seq in self.rooms.strays(room):
            await self.join(conn, room, seq, epoch)

    def _window_exceeded(
        self, conn: SioConn, gap: RecoveryWindowExceeded, seq: int | None = None
    ) -> None:
        error = self._error("recovery_window_exceeded", str(gap), room=gap.room, epoch=gap.epoch,
                            first=gap.first, seq=gap.seq if seq is None else seq)  # fmt: skip
        self._emit(conn, "error", error)

    async def _on_leave(self, sid: str, room: Any = None) -> Any:
        conn, refused = self._check(sid, None)
        if refused is not None or conn is None:
            return "error", {**(refused or {}), "room": room}
        if isinstance(room, str):
            await self._leave(conn, room)
        return "left", room

    async def _leave(self, conn: SioConn, room: str) -> None:
        if self.rooms.leave(conn, room):
            await self.adapter.unsubscribe(room)

    async def _on_publish(
        self, sid: str, room: Any = None, data: Any = None, ident: Any = None
    ) -> Any:
        conn, refused = self._check(sid, room)
        if not isinstance(ident, str) or not ident or len(ident) > MAX_ROOM:
            ident = uuid.uuid4().hex
        if refused is not None or conn is None:
            return "error", {**(refused or {}), "id": ident}
        prefix = b'{"type":"message","room":' + orjson.dumps(room) + b',"epoch":"'
        suffix = b"".join(
            (
                b',"id":', orjson.dumps(ident),
                b',"pub_node":', orjson.dumps(self.config.id),
                b',"ts":', orjson.dumps(time.time()),
                b',"data":', orjson.dumps(data),
            )
        )  # fmt: skip
        future = self.adapter.publish_nowait(room, ident, prefix, b'","seq":', suffix)
        try:
            result: PublishResult = await future
        except BrokerUnavailable as exc:
            detail = f"{exc}; not acknowledged: re-send with the same id"
            return "error", self._error("broker_unavailable", detail, id=ident)
        return "ok", {"id": ident, "epoch": result.epoch, "seq": result.seq}

    async def _on_echo(self, sid: str, *args: Any) -> Any:
        _, refused = self._check(sid, None)
        return ("error", refused) if refused is not None else args

    async def _on_whoami(self, sid: str, *args: Any) -> Any:
        conn, refused = self._check(sid, None)
        if refused is not None:
            return "error", refused
        return {
            "node": self.config.id,
            "sid": sid,
            "user": conn.user if conn else None,
            "rooms": self.rooms.rooms_of(conn) if conn else [],
        }

    # -- fan-out ------------------------------------------------------------------------

    def _message(self, frame: bytes) -> dict[str, Any]:
        """A stored frame (the ws node's `message` envelope) as a "message" event's data."""
        message = orjson.loads(frame)
        message.pop("type", None)
        return message  # type: ignore[no-any-return]

    def _emit(self, conn: SioConn, event: str, data: Any) -> None:
        """Queue one event for one session; the writer sends them in order."""
        if not self._out:
            self._wake.set()
        self._out.append((conn.id, event, data))

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._out:
                sid, event, data = self._out.popleft()
                if sid in self.conns:
                    with contextlib.suppress(Exception):  # a session ending meanwhile
                        await self.sio.emit(event, data, to=sid)
                        self.stats.msgs_out += 1

    def _on_broker_message(self, room: str, epoch: str, seq: int, frame: bytes) -> None:
        frame += self.tail
        targets = self.rooms.deliver(room, epoch, seq, frame)
        if targets:
            message = self._message(frame)
            for conn in targets:
                self._emit(conn, "message", message)

    def _on_broker_reset(self, room: str, epoch: str, seq: int) -> None:
        self._event("broker_reset", room=room, epoch=epoch)
        for conn in self.rooms.reset(room, epoch):
            self._emit(conn, "joined", {"room": room, "epoch": epoch, "seq": seq, "reset": True})

    def _on_gap(self, room: str, exc: RecoveryWindowExceeded) -> None:
        if exc.reset:
            self._event("broker_reset", room=room, epoch=exc.epoch)
        for conn, reset in self.rooms.skip_to(room, exc.epoch, exc.seq):
            self._window_exceeded(conn, exc)
            joined = {"room": room, "epoch": exc.epoch, "seq": exc.seq}
            self._emit(conn, "joined", {**joined, "reset": True} if reset else joined)

    # -- raw sockets (inject) -------------------------------------------------------------

    def _transport_of(self, sid: str, environ: dict[str, Any]) -> asyncio.Transport | None:
        """The TCP transport under a session's websocket, when it connected over one (a
        polling session's comes with its upgrade: `_see_upgrades`)."""
        request = environ.get("aiohttp.request")
        if request is not None and "transport=websocket" in environ.get("QUERY_STRING", ""):
            return request.transport  # type: ignore[no-any-return]
        return None

    def _see_upgrades_of(self) -> Any:
        """An aiohttp middleware: a polling session upgrading to a websocket (its Engine.IO
        sid in the query) gets that request's transport as its raw socket."""

        async def see_upgrades(request: web.Request, handler: Any) -> web.StreamResponse:
            eio_sid = request.query.get("sid")
            if eio_sid and request.query.get("transport") == "websocket":
                manager = self.sio.manager
                for conn in self.conns.values():
                    if manager.eio_sid_from_sid(conn.id, "/") == eio_sid:
                        conn.ws.transport = request.transport  # type: ignore[assignment]
            return await handler(request)  # type: ignore[no-any-return]

        return see_upgrades

    # -- HTTP -----------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if self.draining:
            return web.Response(status=503, text="draining")
        text = "ok" if self.adapter.state == UP else "ok broker=down"
        return web.Response(text=text, headers={"X-Broker": self.adapter.state})

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        s = self.stats
        body = exposition(
            self.config.id, s, connections=len(self.conns), draining=self.draining,
            gauges=[("wsconsole_broker_up", "1 if the broker is reachable",
                     self.adapter.state == UP)],
            counters=[("wsconsole_rate_limited", "Events refused by the rate limit",
                       s.rate_limited),
                      ("wsconsole_injected", "Sessions sent a malformed frame on purpose",
                       s.injected)],
            errors=s.errors,
        )  # fmt: skip
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- control --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The stats message pushed to the supervisor (the ws node's shape)."""
        s = self.stats
        return NodeSnapshot(
            node=self.config.id, t=time.time(), connections=len(self.conns),
            msgs_in=s.msgs_in, msgs_out=s.msgs_out, errors=dict(s.errors),
            rate_limited=s.rate_limited, auth_failures=s.auth_failures,
            broker=self.adapter.state, draining=self.draining, rooms=len(self.rooms),
            flavour="socketio",
        ).message()  # fmt: skip

    async def _cmd_drain(self, message: dict[str, Any]) -> dict[str, Any]:
        self.drain_soon()
        return {"draining": True, "connections": len(self.conns)}

    async def _cmd_connections(self, message: dict[str, Any]) -> dict[str, Any]:
        """Connections (Socket.IO sids) with user and rooms, the ws node's reply shape."""
        limit = message.get("limit", 2000)
        limit = limit if isinstance(limit, int) and limit >= 0 else 2000
        conns = [
            {"id": sid, "user": conn.user, "rooms": self.rooms.rooms_of(conn), "remote": None}
            for sid, conn in list(self.conns.items())[:limit]
        ]
        return {"connections": conns, "total": len(self.conns)}

    # -- lifecycle ------------------------------------------------------------------------

    def drain_soon(self) -> None:
        """Start draining (idempotent); safe from a signal handler."""
        if not self.draining:
            self.draining = True
            self._spawn(self._drain(), "sionode-drain")

    async def _drain(self) -> None:
        self._event("draining", connections=len(self.conns))
        for sid in list(self.conns):
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid)
        if not self.conns:
            self._stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.config.drain_deadline)
        self._stop.set()

    async def run(self) -> int:
        """Listen, print the `listening` line, serve until drained; the exit code."""
        from aiohttp import web

        await self.adapter.start()
        await self.adapter.wait_up(timeout=2.0)
        self._spawn(self._writer(), "sionode-writer")
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port,
                           ssl_context=self.config.ssl_context())
        try:
            await site.start()
        except OSError as exc:
            sys.stderr.write(
                f"wsconsole sionode: cannot listen on {self.config.host}:"
                f"{self.config.port}: {exc.strerror or exc}\n"
            )
            await self._runner.cleanup()
            await self.adapter.close()
            return 2
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._announce(broker=self.adapter.state, flavour="socketio")
        await self._connect_control()
        await self._stop.wait()
        self._event("stopped")
        await asyncio.sleep(0)
        await self._runner.cleanup()
        await self.adapter.close()
        if self.control is not None:
            with contextlib.suppress(Exception):
                await self.control.close()
        return 0


# -- command line (`wsconsole sionode`, listed in cli.COMMANDS) ---------------------------


def run(args: argparse.Namespace) -> int:
    """Run a Socket.IO node until drained; exit code 2 on bad usage."""
    try:
        config = config_from_args(args)
    except UsageError as exc:
        sys.stderr.write(f"wsconsole sionode: error: {exc}\n")
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    return asyncio.run(SioNode(config).run())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m wsconsole.harness.sionode ...`."""
    parser = argparse.ArgumentParser(prog="wsconsole sionode", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
