"""Single-process `websockets.broadcast` server: the upper bound of the fan-out benchmark.

`python -m benchmarks.servers.broadcast_server --port 0`. Subscribers connect to `/` and
get `welcome`; a text message from a client on `/pub` is broadcast as-is to every
subscriber. No broker, no protocol, no auth: what one Python process can push.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed


async def main(argv: list[str] | None = None) -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    subscribers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path.startswith("/pub"):
            try:
                async for message in ws:
                    broadcast(subscribers, message)
            except ConnectionClosed:
                pass
            return
        subscribers.add(ws)
        try:
            await ws.send("welcome")
            await ws.wait_closed()
        finally:
            subscribers.discard(ws)

    async with serve(handler, "127.0.0.1", args.port, compression=None, backlog=4096) as server:
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(json.dumps({"event": "listening", "port": port}) + "\n")
        sys.stdout.flush()
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
