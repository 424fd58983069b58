"""A WebSocket server flooding each client with harness-style text frames at a set rate.

`python -m benchmarks.servers.flood_server --port 0 --rate 20000 --seconds 3`. Frames are
pre-encoded and written in 5 ms batches straight to the transport (no pings are sent, so
nothing else writes), so the server is not what limits the window benchmark. Each client
gets `rate * seconds` frames then `{"done": N}`. `--frames N` instead sends N frames as fast
as the client reads them (written in batches while the transport's buffer is under 256 KiB,
then waiting for it to drain): the most a client can take. Prints the usual "listening"
line.
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


def message(seq: int) -> bytes:
    """Harness message `seq`, sent now."""
    return text_frame(
        b'{"type":"message","room":"flood","seq":%d,"id":"m%d","node":"f1",'
        b'"ts":%.6f,"data":{"n":%d,"text":"frame payload"}}' % (seq, seq, time.time(), seq)
    )


def handler(rate: int, seconds: float, frames: int | None):  # type: ignore[no-untyped-def]
    """Pace rate*seconds frames in 5 ms batches (or `frames` as fast as the client reads),
    then a final marker."""

    async def flood(ws: ServerConnection) -> None:
        total = frames if frames is not None else int(rate * seconds)
        sent = 0
        began = time.monotonic()
        transport = ws.transport
        while sent < total:
            if frames is not None:
                due = min(total, sent + 500)
            else:
                due = min(total, int((time.monotonic() - began) * rate) + 1)
            chunk = []
            while sent < due:
                sent += 1
                chunk.append(message(sent))
            transport.write(b"".join(chunk))
            if frames is None:
                await asyncio.sleep(0.005)
            elif transport.get_write_buffer_size() > 256 * 1024:
                await ws.drain()
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
    parser.add_argument("--frames", type=int, default=None)
    args = parser.parse_args(argv)
    async with serve(handler(args.rate, args.seconds, args.frames), "127.0.0.1", args.port,
                     compression=None, ping_interval=None) as server:  # fmt: skip
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(json.dumps({"event": "listening", "port": port}) + "\n")
        sys.stdout.flush()
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
