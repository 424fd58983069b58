"""The Socket.IO node flavour: python-socketio's AsyncServer fanned out through the broker.

Run as `wsconsole sionode` (same options as `wsconsole node`; the supervisor starts it for
`wsconsole harness --flavour socketio`). It is the harness node's process interface on a
Socket.IO server: one `listening` JSON line on stdout, `GET /healthz` (200 "ok", 503
"draining") and `GET /metrics` on the same port as `/socket.io/`, the control channel
(commands "stats", "drain", "connections"; stats snapshots in the ws node's shape), drain on
SIGTERM/SIGINT or when the control channel is lost.

Fan-out: `socketio.AsyncRedisManager` over the cluster's broker, so an emit to a room on one
node reaches that room's members on every node. Unlike the ws node there is no broker-side
history or sequence recovery: python-socketio's connection-state recovery dies with its
node (measured, DESIGN.md), which is exactly what QA comes here to watch.

Events (client to node): "join" ROOM and "leave" ROOM (ack ["joined"|"left", ROOM]),
"publish" ROOM DATA (ack ["ok"]; every member of ROOM gets "message" {room, data, node,
pub_node, ts}), "echo" ...args (ack the same args), "whoami" (ack {node, sid, user, rooms}).
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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wsconsole.harness.admission import DRAINING, Admission
from wsconsole.harness.auth import AuthError, Claims, room_allowed
from wsconsole.harness.nodeconfig import NodeConfig, UsageError, add_arguments, config_from_args
from wsconsole.harness.nodemetrics import CONTENT_TYPE_LATEST, exposition
from wsconsole.harness.stats import NodeSnapshot
from wsconsole.harness.supervised import Supervised

if TYPE_CHECKING:
    from aiohttp import web

# python-socketio and aiohttp are imported where used: every `wsconsole` command line
# loads this module for its HELP, and only a running node needs them.

log = logging.getLogger(__name__)

HELP = "Run one Socket.IO harness node (python-socketio fanned out through the broker)."
CHANNEL = "wsconsole-socketio"


@dataclass
class SioStats:
    """Counters reported on /metrics and to the supervisor."""

    accepted: int = 0
    msgs_in: int = 0
    msgs_out: int = 0
    auth_failures: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class SioNode(Supervised):
    """A Socket.IO node: call `run()`; it returns the exit code after a drain."""

    def __init__(self, config: NodeConfig) -> None:
        import socketio
        from aiohttp import web

        super().__init__()
        self.config = config
        self.stats = SioStats()
        self.users: dict[str, str] = {}  # sid -> user
        self.rooms: dict[str, set[str]] = {}  # sid -> rooms joined
        self.draining = False
        self.port = 0
        self.broker = "up"
        self.admission = Admission.of(config)
        self.manager = socketio.AsyncRedisManager(config.redis, channel=CHANNEL)
        origins: Any = "*" if "*" in config.origins else self._origin_ok
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            client_manager=self.manager,
            ping_interval=config.ping_interval or 25,
            ping_timeout=config.ping_timeout or 20,
            max_http_buffer_size=config.max_size or 10**8,
            cors_allowed_origins=origins,
        )
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)
        self.sio.attach(self.app)
        self._runner: web.AppRunner | None = None
        self._wire()
        self.commands = {
            "stats": self._cmd_stats,
            "drain": self._cmd_drain,
            "connections": self._cmd_connections,
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

        refusal = DRAINING if self.draining else self.admission.over_capacity(len(self.users))
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
        claims = self._admit(environ, auth)
        self.users[sid] = claims.user if claims else "anonymous"
        self.rooms[sid] = set()
        self.stats.accepted += 1
        if claims is not None:
            await self.sio.save_session(sid, {"rooms": claims.rooms})

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.users.pop(sid, None)
        self.rooms.pop(sid, None)
        if self.draining and not self.users:
            self._stop.set()

    async def _allowed(self, sid: str, room: Any) -> bool:
        if not isinstance(room, str) or not room or len(room) > 200:
            self.stats.errors["bad_room"] += 1
            return False
        if not self.config.auth:
            return True
        session = await self.sio.get_session(sid)
        claims = Claims(user=self.users.get(sid, ""), rooms=tuple(session.get("rooms", ())), exp=0)
        if not room_allowed(claims, room):
            self.stats.errors["unauthorized"] += 1
            return False
        return True

    async def _on_join(self, sid: str, room: Any = None) -> Any:
        self.stats.msgs_in += 1
        if not await self._allowed(sid, room):
            return "error", "unauthorized or bad room"
        await self.sio.enter_room(sid, room)
        self.rooms.setdefault(sid, set()).add(room)
        return "joined", room

    async def _on_leave(self, sid: str, room: Any = None) -> Any:
        self.stats.msgs_in += 1
        if isinstance(room, str):
            await self.sio.leave_room(sid, room)
            self.rooms.get(sid, set()).discard(room)
        return "left", room

    async def _on_publish(self, sid: str, room: Any = None, data: Any = None) -> Any:
        self.stats.msgs_in += 1
        if not await self._allowed(sid, room):
            return "error", "unauthorized or bad room"
        message = {
            "room": room,
            "data": data,
            "node": self.config.id,
            "pub_node": self.config.id,
            "ts": time.time(),
        }
        try:
            await self.sio.emit("message", message, room=room)
        except Exception as exc:  # the broker is down: say so, never crash the node
            self.stats.errors["broker_unavailable"] += 1
            self.broker = "down"
            return "error", f"broker_unavailable: {type(exc).__name__}"
        self.broker = "up"
        self.stats.msgs_out += 1
        return "ok"

    async def _on_echo(self, sid: str, *args: Any) -> Any:
        self.stats.msgs_in += 1
        return args

    async def _on_whoami(self, sid: str, *args: Any) -> Any:
        self.stats.msgs_in += 1
        return {
            "node": self.config.id,
            "sid": sid,
            "user": self.users.get(sid),
            "rooms": sorted(self.rooms.get(sid, ())),
        }

    # -- HTTP -----------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if self.draining:
            return web.Response(status=503, text="draining")
        return web.Response(text="ok", headers={"X-Broker": self.broker})

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        body = exposition(
            self.config.id, self.stats, connections=len(self.users), draining=self.draining
        )
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- control --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The stats message pushed to the supervisor (the ws node's shape)."""
        s = self.stats
        return NodeSnapshot(
            node=self.config.id, t=time.time(), connections=len(self.users),
            msgs_in=s.msgs_in, msgs_out=s.msgs_out, errors=dict(s.errors),
            auth_failures=s.auth_failures, broker=self.broker, draining=self.draining,
            rooms=len(set().union(*self.rooms.values())) if self.rooms else 0,
            flavour="socketio",
        ).message()

    async def _cmd_drain(self, message: dict[str, Any]) -> dict[str, Any]:
        self.drain_soon()
        return {"draining": True, "connections": len(self.users)}

    async def _cmd_connections(self, message: dict[str, Any]) -> dict[str, Any]:
        """Connections (Socket.IO sids) with user and rooms, the ws node's reply shape."""
        limit = message.get("limit", 2000)
        limit = limit if isinstance(limit, int) and limit >= 0 else 2000
        conns = [
            {"id": sid, "user": user, "rooms": sorted(self.rooms.get(sid, ())), "remote": None}
            for sid, user in list(self.users.items())[:limit]
        ]
        return {"connections": conns, "total": len(self.users)}

    # -- lifecycle ------------------------------------------------------------------------

    def drain_soon(self) -> None:
        """Start draining (idempotent); safe from a signal handler."""
        if not self.draining:
            self.draining = True
            self._spawn(self._drain(), "sionode-drain")

    async def _drain(self) -> None:
        self._event("draining", connections=len(self.users))
        for sid in list(self.users):
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid)
        if not self.users:
            self._stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.config.drain_deadline)
        self._stop.set()

    async def run(self) -> int:
        """Listen, print the `listening` line, serve until drained; the exit code."""
        from aiohttp import web

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
            return 2
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._announce(broker=self.broker, flavour="socketio")
        await self._connect_control()
        await self._stop.wait()
        self._event("stopped")
        await asyncio.sleep(0)
        await self._runner.cleanup()
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
