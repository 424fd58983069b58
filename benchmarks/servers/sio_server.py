"""python-socketio node for the fan-out benchmark: `python -m benchmarks.servers.sio_server`.

A standard setup as its documentation shows it: `socketio.AsyncServer` on aiohttp with
`AsyncRedisManager`, so an emit to a room on one node reaches the room's members on every
node. Events: `join` (enter the room, reply `joined`), `publish {room, data}` (emit `msg`
to the room). Prints `{"event": "listening", "port": P}` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import socketio
from aiohttp import web


async def main(argv: list[str] | None = None) -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args(argv)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=socketio.AsyncRedisManager(args.redis),
        cors_allowed_origins="*",
    )

    @sio.on("join")
    async def join(sid: str, room: str) -> None:
        await sio.enter_room(sid, room)
        await sio.emit("joined", room, to=sid)

    @sio.on("publish")
    async def publish(sid: str, message: dict) -> None:
        await sio.emit("msg", message["data"], room=message["room"])

    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sys.stdout.write(json.dumps({"event": "listening", "port": port}) + "\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
