"""The reconnect storm's clients: `python -m benchmarks.stormgen`, driven by JSON lines on stdin.

Unlike the independent load generator (`loadgen.js`), these clients reconnect with the
product's own `BackoffPolicy`: the storm measures that policy against a killed node. The
first stdin line is the spec `{"kind": "harness", "targets": [...], "backoff": {...}}`;
every target is held open and reconnected; then commands, each answered by one JSON line:
`state` says how many are up, `report {since}` when each dropped client came back, `quit`.
The first stdout line is `{"event": "ready", "connected": N, "failed": 0, "error": null}`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from benchmarks.common import raise_nofile
from benchmarks.wsclient import WsClient, open_client
from wsconsole.core.backoff import BackoffPolicy


def emit(line: dict[str, Any]) -> None:
    """One JSON reply line on stdout."""
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Holder:
    """One storm client: stays connected, reconnecting with the product's backoff policy."""

    def __init__(self, target: dict[str, Any], backoff: dict[str, float]) -> None:
        self.target = target
        self.policy = BackoffPolicy(**backoff)
        self.client: WsClient | None = None
        self.joined_at: list[float] = []  # wall times this client (re)joined
        self.lost_at: list[float] = []
        self.attempts = 0

    async def hold(self) -> None:
        """Connect, wait for the close, back off, reconnect; forever."""
        t = self.target
        while True:
            self.attempts += 1
            try:
                self.client = await open_client(t["host"], t["port"], t["path"],
                                                local_host=t.get("local"), timeout=10.0)
            except (OSError, TimeoutError, ConnectionError):
                self.client = None
                await asyncio.sleep(self.policy.next_delay() or 0.0)
                continue
            self.policy.reset()
            self.joined_at.append(time.time())
            await self.client.closed
            self.lost_at.append(time.time())
            self.client = None
            await asyncio.sleep(self.policy.next_delay() or 0.0)

    @property
    def up(self) -> bool:
        """Connected and joined now."""
        return self.client is not None and not self.client.closed.done()


async def storm(spec: dict[str, Any], reader: asyncio.StreamReader) -> None:
    """Role "storm": hold every target; report who is up and when each came back."""
    holders = [Holder(t, spec.get("backoff", {})) for t in spec["targets"]]
    gate = asyncio.Semaphore(200)

    async def staged(holder: Holder) -> None:
        async with gate:  # the first connects are staged; reconnects are not
            t = holder.target
            try:
                holder.client = await open_client(t["host"], t["port"], t["path"],
                                                  local_host=t.get("local"), timeout=30.0)
                holder.joined_at.append(time.time())
            except (OSError, TimeoutError, ConnectionError):
                holder.client = None

    await asyncio.gather(*(staged(h) for h in holders))

    async def keep(holder: Holder) -> None:
        if holder.client is not None:
            await holder.client.closed
            holder.lost_at.append(time.time())
            holder.client = None
            await asyncio.sleep(holder.policy.next_delay() or 0.0)
        await holder.hold()

    tasks = [asyncio.ensure_future(keep(h)) for h in holders]
    emit({"event": "ready", "connected": sum(h.up for h in holders), "failed": 0, "error": None})
    while True:
        line = await reader.readline()
        if not line or json.loads(line).get("cmd") == "quit":
            break
        cmd = json.loads(line)
        if cmd.get("cmd") == "state":
            emit({"up": sum(h.up for h in holders), "total": len(holders)})
        elif cmd.get("cmd") == "report":
            since = float(cmd["since"])
            back = []
            for h in holders:
                lost = [x for x in h.lost_at if x >= since]
                if lost:
                    again = [x for x in h.joined_at if x >= lost[0]]
                    back.append(again[0] - since if again else None)
            emit({"dropped": len(back), "back_s": back,
                  "attempts": sum(h.attempts for h in holders)})  # fmt: skip
    for task in tasks:
        task.cancel()
    for holder in holders:
        if holder.client is not None:
            holder.client.close()


async def main() -> None:
    """Read the spec, hold the clients, serve commands until `quit` or end of input."""
    raise_nofile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = json.loads(await reader.readline())
    await storm(spec, reader)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the bench extra installs it
        asyncio.run(main())
    else:
        uvloop.run(main())
