"""A WebSocket server flooding each client with harness-style text frames at a set rate.

`python -m benchmarks.servers.flood_server --port 0 --rate 20000 --seconds 3`. Frames are
pre-encoded and written in 5 ms batches straight to the transport (no pings are sent, so
nothing else writes), so the server is not what limits the window benchmark. Each client
gets `rate * seconds` frames then `{"done": N}`. Prints the usual "listening" line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def text_frame(payload: bytes) -> bytes:
    """One unmasked final text frame (server to client)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def handler(rate: int, seconds: float):  # type: ignore[no-untyped-def]
    """Pace rate*seconds frames in 5 ms batches, then a final marker."""

    async def flood(ws: ServerConnection) -> None:
        total = int(rate * seconds)
        sent = 0
        began = time.monotonic()
        transport = ws.transport
        while sent < total:
            due = min(total, int((time.monotonic() - began) * rate) + 1)
            chunk = []
            while sent < due:
                sent += 1
                chunk.append(text_frame(
                    b'{"type":"message","room":"flood","seq":%d,"id":"m%d","node":"f1",'
                    b'"ts":%.6f,"data":{"n":%d,"text":"frame payload"}}'
                    % (sent, sent, time.time(), sent)
                ))  # fmt: skip
            transport.write(b"".join(chunk))
            await asyncio.sleep(0.005)
        try:
            await ws.send(json.dumps({"done": sent}))
            await ws.wait_closed()
        except ConnectionClosed:
            pass

    return flood


async def main(argv: list[str] | None = None) -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    async with serve(handler(args.rate, args.seconds), "127.0.0.1", args.port,
                     compression=None, ping_interval=None) as server:  # fmt: skip
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(json.dumps({"event": "listening", "port": port}) + "\n")
        sys.stdout.flush()
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
