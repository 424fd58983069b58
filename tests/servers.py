"""Small real WebSocket servers for the client tests, in-process or as subprocesses.

    python -m tests.servers echo --port P [--subprotocol S] [--tls CERT KEY]
                                 [--ping-interval S --ping-timeout S]
    python -m tests.servers close --port P --code 1001 --reason "going away"
    python -m tests.servers refuse --port P --status 403 [--retry-after S]
    python -m tests.servers harness --port P [--token T] [--history N]

Each prints one JSON line {"event": "listening", "port": P, "pid": ...} when ready.
`harness` speaks a minimal in-memory version of the harness protocol (DESIGN.md): dense
per-room seq, bounded history for `join since`, idempotent publish ids, acks, rpc "echo",
so the client's recovery and replay can be tested without the real cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
import time
import urllib.parse
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from wsconsole.core import envelope


async def _echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


def _closer(code: int, reason: str):  # type: ignore[no-untyped-def]
    async def handler(ws: ServerConnection) -> None:
        await ws.close(code, reason)

    return handler


@dataclass
class HarnessState:
    """In-memory rooms: seq counters, bounded histories, seen publish ids, subscribers."""

    history_limit: int = 1000
    seq: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    history: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    seen: dict[tuple[str, str], int] = field(default_factory=dict)
    subs: dict[str, set[ServerConnection]] = field(default_factory=lambda: defaultdict(set))
    deliveries: int = 0
    ack_delay: float = 0.0  # seconds between fan-out and ack: a window to lose the ack in


def _token_of(request: Request) -> str | None:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
    if "token" in query:
        return query["token"][-1]
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[7:]
    return None


def refuser(status: int, retry_after: str | None):  # type: ignore[no-untyped-def]
    """A process_request answering every handshake with `status` (and Retry-After)."""

    def refuse(conn: ServerConnection, request: Request) -> Any:
        response = conn.respond(status, f"refused with {status}\n")
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    return refuse


def harness_handler(state: HarnessState, token: str | None, node: str = "t1"):  # type: ignore[no-untyped-def]
    """The connection handler of the minimal harness server."""

    async def send(ws: ServerConnection, kind: str, **fields: Any) -> None:
        await ws.send(envelope.encode(kind, **fields))

    async def handler(ws: ServerConnection) -> None:
        authed = token is None or (ws.request is not None and _token_of(ws.request) == token)
        rooms: set[str] = set()
        try:
            if not authed:
                try:
                    first = await asyncio.wait_for(ws.recv(), 2.0)
                    msg = envelope.parse_client(first)
                except (TimeoutError, envelope.EnvelopeError):
                    await ws.close(1008, "authentication required")
                    return
                if msg["type"] != "auth" or msg["token"] != token:
                    await ws.close(1008, "bad token")
                    return
            async for raw in ws:
                try:
                    msg = envelope.parse_client(raw)
                except envelope.EnvelopeError as exc:
                    await send(ws, "error", code=exc.code, detail=exc.detail, id=exc.id)
                    continue
                kind = msg["type"]
                if kind == "join":
                    room, since = msg["room"], msg["since"]
                    head = state.seq[room]
                    hist = state.history[room]
                    oldest = hist[0]["seq"] if hist else head + 1
                    if since is not None and since < head and since + 1 < oldest:
                        await send(ws, "error", code="recovery_window_exceeded",
                                   detail=f"oldest kept is {oldest}", room=room)
                        since = None
                    rooms.add(room)
                    state.subs[room].add(ws)
                    await send(ws, "joined", room=room, seq=head)
                    if since is not None:
                        for item in hist:
                            if item["seq"] > since:
                                await ws.send(json.dumps(item))
                elif kind == "leave":
                    rooms.discard(msg["room"])
                    state.subs[msg["room"]].discard(ws)
                    await send(ws, "left", room=msg["room"])
                elif kind == "publish":
                    room, ident = msg["room"], msg["id"]
                    known = state.seen.get((room, ident))
                    if known is not None:
                        await send(ws, "ack", id=ident, seq=known)
                        continue
                    state.seq[room] += 1
                    seq = state.seq[room]
                    state.seen[(room, ident)] = seq
                    item = {"type": "message", "room": room, "seq": seq, "id": ident,
                            "node": node, "ts": time.time(), "data": msg["data"]}
                    state.history[room].append(item)
                    del state.history[room][: -state.history_limit]
                    text = json.dumps(item)
                    for sub in list(state.subs[room]):
                        try:
                            await sub.send(text)
                            state.deliveries += 1
                        except ConnectionClosed:
                            state.subs[room].discard(sub)
                    if state.ack_delay:
                        await asyncio.sleep(state.ack_delay)
                    await send(ws, "ack", id=ident, seq=seq)
                elif kind == "rpc":
                    if msg["method"] == "echo":
                        await send(ws, "result", id=msg["id"], result=msg["params"])
                    elif msg["method"] == "sleep":
                        await asyncio.sleep(float(msg["params"] or 0))
                        await send(ws, "result", id=msg["id"], result="slept")
                    else:
                        await send(ws, "error", code="unknown_method",
                                   detail=msg["method"], id=msg["id"])
        except ConnectionClosed:
            pass
        finally:
            for room in rooms:
                state.subs[room].discard(ws)

    return handler


async def start(
    mode: str,
    port: int = 0,
    *,
    code: int = 1000,
    reason: str = "",
    subprotocols: list[str] | None = None,
    tls: tuple[str, str] | ssl.SSLContext | None = None,
    token: str | None = None,
    history: int = 1000,
    ping_interval: float | None = None,
    ping_timeout: float | None = 20.0,
    ack_delay: float = 0.0,
    status: int = 403,
    retry_after: str | None = None,
) -> tuple[Server, HarnessState | None]:
    """Start a test server on 127.0.0.1 in this loop; returns (server, harness state)."""
    state = None
    process_request = None
    if mode == "echo":
        handler = _echo
    elif mode == "close":
        handler = _closer(code, reason)
    elif mode == "harness":
        state = HarnessState(history_limit=history, ack_delay=ack_delay)
        handler = harness_handler(state, token)
    elif mode == "refuse":
        handler, process_request = _echo, refuser(status, retry_after)
    else:
        raise ValueError(f"unknown mode {mode}")
    context = None
    if isinstance(tls, ssl.SSLContext):
        context = tls
    elif tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
    server = await serve(
        handler,
        "127.0.0.1",
        port,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        ssl=context,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        compression=None,
        process_request=process_request,
    )
    return server, state


@contextlib.asynccontextmanager
async def aiohttp_site(app: web.Application) -> AsyncIterator[str]:
    """Serve an aiohttp application on a free loopback port; yields http://127.0.0.1:PORT."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def server_port(server: Server) -> int:
    """The TCP port a started server listens on."""
    return next(iter(server.sockets)).getsockname()[1]


async def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servers")
    parser.add_argument("mode", choices=["echo", "close", "harness", "refuse"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--code", type=int, default=1000)
    parser.add_argument("--reason", default="")
    parser.add_argument("--subprotocol", action="append")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--token")
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--ping-interval", type=float)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    parser.add_argument("--status", type=int, default=403)
    parser.add_argument("--retry-after")
    args = parser.parse_args(argv)
    server, _ = await start(
        args.mode, args.port, code=args.code, reason=args.reason,
        subprotocols=args.subprotocol, tls=tuple(args.tls) if args.tls else None,
        token=args.token, history=args.history, ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout, status=args.status, retry_after=args.retry_after,
    )
    print(json.dumps({"event": "listening", "port": server_port(server), "pid": os.getpid()}),
          flush=True)
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
