"""The window benchmark's yardstick: `python -m benchmarks.plain_reader '{"frames": N}'`.

A plain asyncio `websockets` client (its defaults, no compression) reads N harness frames
from `benchmarks.servers.flood_server --frames N` as fast as they come, parsing each one
(orjson) as any client that uses its messages would, and prints one JSON line with the
frames/s. The window must keep up with >= 0.8x of this on the same machine in the same run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import orjson
from websockets.asyncio.client import connect

from benchmarks.common import Child, python


async def read_all(frames: int) -> dict[str, Any]:
    """Start a flood server for `frames` frames, read them all; frames/s."""
    server = Child([python(), "-m", "benchmarks.servers.flood_server", "--port", "0",
                    "--frames", str(frames)])  # fmt: skip
    port = await server.start()
    try:
        async with connect(f"ws://127.0.0.1:{port}/", compression=None,
                           ping_interval=None) as ws:  # fmt: skip
            began = time.perf_counter()
            cpu_began = time.process_time()
            count = 0
            async for message in ws:
                value = orjson.loads(message)
                if "done" in value:
                    break
                count += 1
            elapsed = time.perf_counter() - began
            cpu = time.process_time() - cpu_began
    finally:
        server.stop()
    return {"frames": count, "frames_per_s": round(count / elapsed),
            "cpu_us_per_frame": round(cpu / count * 1e6, 2)}


def main() -> int:
    """Read the size argument, run, print the JSON result."""
    size = json.loads(sys.argv[1])
    result = asyncio.run(read_all(int(size["frames"])))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
