"""A WebSocket server (own process) that floods each client with text frames at a set rate.

    python -m tests.gui.floodserver --port P --rate 5000 --seconds 3

Prints {"event": "listening", "port": P} when ready; each client then receives `rate`
JSON frames per second for `seconds` (sent in 10 ms batches) followed by {"done": N}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def handler(rate: int, seconds: float):  # type: ignore[no-untyped-def]
    """Send rate*seconds frames paced in 10 ms batches, then a final marker."""

    async def flood(ws: ServerConnection) -> None:
        sent = 0
        began = time.monotonic()
        total = int(rate * seconds)
        try:
            while sent < total:
                due = min(total, int((time.monotonic() - began) * rate) + rate // 100)
                while sent < due:
                    await ws.send(f'{{"type":"message","room":"flood","seq":{sent + 1},'
                                  f'"node":"f1","data":"frame {sent + 1}"}}')
                    sent += 1
                await asyncio.sleep(0.01)
            await ws.send(json.dumps({"done": sent}))
            await ws.wait_closed()
        except ConnectionClosed:
            pass

    return flood


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    async with serve(handler(args.rate, args.seconds), "127.0.0.1", args.port,
                     compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"event": "listening", "port": port}), flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
