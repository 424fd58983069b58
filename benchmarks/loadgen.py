"""Load-generator process: `python -m benchmarks.loadgen`, driven by JSON lines on stdin.

The first stdin line is the spec `{"role": "sub"|"pub", "kind": ..., "targets": [...]}`
(one target `{"host", "port", "path", "local"?}` per connection). Then commands, each
answered by one JSON line on stdout:
- sub: `start {sample_every}` resets the window; `count`; `stop` returns received,
  seconds, the process CPU seconds and the sampled latencies (ms).
- pub: `publish {rate, seconds}` paces publishes over the connections in 5 ms ticks and
  returns sent, seconds and CPU seconds.
- storm: every target is held open and reconnected with `BackoffPolicy(**backoff)`;
  `state` says how many are up, `report {since}` when each dropped client came back.
- all: `quit`.
The first stdout line is `{"event": "ready", "connected": N, "failed": M, "error": ...}`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import sys
import time
from typing import Any

import psutil

from benchmarks.wsclient import Counters, WsClient, open_client
from wsconsole.core.backoff import BackoffPolicy

PAD = "x" * 64


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def emit(line: dict[str, Any]) -> None:
    """One JSON reply line on stdout."""
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def publish_frame(kind: str, ident: str) -> bytes:
    """A publish in the contender's protocol, carrying its send time `t` (wall clock)."""
    stamp = f"{time.time():.6f}"
    if kind == "harness":
        return (
            '{"type":"publish","room":"bench","id":"' + ident + '","data":{"t":' + stamp
            + ',"p":"' + PAD + '"}}'
        ).encode()  # fmt: skip
    if kind == "sio":
        return ('42["publish",{"room":"bench","data":{"t":' + stamp + ',"p":"' + PAD
                + '"}}]').encode()  # fmt: skip
    return ('{"t":' + stamp + ',"p":"' + PAD + '"}').encode()


async def connect_all(
    spec: dict[str, Any], counters: Counters | None, concurrency: int = 200
) -> tuple[list[WsClient], list[str]]:
    """Open every target's connection, `concurrency` at a time; (clients, errors)."""
    kind = spec["kind"]
    join = spec["role"] == "sub"
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(target: dict[str, Any]) -> WsClient | None:
        async with gate:
            try:
                return await open_client(
                    kind,
                    target["host"],
                    target["port"],
                    target["path"],
                    counters,
                    local_host=target.get("local"),
                    join=join,
                )
            except (OSError, TimeoutError, ConnectionError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return None

    results = await asyncio.gather(*(one(t) for t in spec["targets"]))
    return [c for c in results if c is not None], errors


async def publish(clients: list[WsClient], kind: str, rate: float, seconds: float) -> int:
    """Send `rate` publishes/s for `seconds`, round-robin over the clients; returns sent."""
    tick = 0.005
    began = time.monotonic()
    total = int(rate * seconds)
    sent = 0
    cycle = itertools.cycle(clients)
    prefix = os.urandom(4).hex()
    while sent < total:
        due = min(total, int((time.monotonic() - began) * rate) + 1)
        while sent < due:
            next(cycle).send(publish_frame(kind, f"{prefix}-{sent}"))
            sent += 1
        await asyncio.sleep(tick)
    return sent


class Holder:
    """One storm client: stays connected, reconnecting with the product's backoff policy."""

    def __init__(self, target: dict[str, Any], kind: str, backoff: dict[str, float]) -> None:
        self.target = target
        self.kind = kind
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
                self.client = await open_client(
                    self.kind, t["host"], t["port"], t["path"], None,
                    local_host=t.get("local"), timeout=10.0,
                )  # fmt: skip
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
    holders = [Holder(t, spec["kind"], spec.get("backoff", {})) for t in spec["targets"]]
    gate = asyncio.Semaphore(200)

    async def staged(holder: Holder) -> None:
        async with gate:  # the first connects are staged; reconnects are not
            t = holder.target
            try:
                holder.client = await open_client(
                    holder.kind, t["host"], t["port"], t["path"], None,
                    local_host=t.get("local"), timeout=30.0,
                )  # fmt: skip
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
    """Read the spec, connect, then serve commands until `quit` or end of input."""
    raise_nofile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = json.loads(await reader.readline())
    if spec["role"] == "storm":
        await storm(spec, reader)
        return
    counters = Counters() if spec["role"] == "sub" else None
    t0 = time.monotonic()
    clients, errors = await connect_all(spec, counters)
    emit(
        {
            "event": "ready",
            "connected": len(clients),
            "failed": len(errors),
            "error": errors[0] if errors else None,
            "connect_s": time.monotonic() - t0,
        }
    )
    proc = psutil.Process()
    began = time.monotonic()
    cpu0 = sum(proc.cpu_times()[:2])
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        name = cmd.get("cmd")
        if name == "quit":
            break
        if name == "start" and counters is not None:
            counters.reset(int(cmd.get("sample_every", 1)))
            began = time.monotonic()
            cpu0 = sum(proc.cpu_times()[:2])
            emit({"ok": True})
        elif name == "count" and counters is not None:
            emit({"received": counters.received})
        elif name == "stop" and counters is not None:
            emit(
                {
                    "received": counters.received,
                    "seconds": time.monotonic() - began,
                    "cpu_s": sum(proc.cpu_times()[:2]) - cpu0,
                    "latencies": [round(x, 3) for x in counters.latencies],
                    "open": sum(1 for c in clients if not c.closed.done()),
                }
            )
        elif name == "publish":
            t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
            sent = await publish(clients, spec["kind"], float(cmd["rate"]), float(cmd["seconds"]))
            emit(
                {
                    "sent": sent,
                    "seconds": time.monotonic() - t0,
                    "cpu_s": sum(proc.cpu_times()[:2]) - c0,
                }
            )
        else:
            emit({"error": f"unknown command {name!r} for role {spec['role']!r}"})
    for client in clients:
        client.close()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the bench extra installs it
        asyncio.run(main())
    else:
        uvloop.run(main())
