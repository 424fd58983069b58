"""Fan-out through a sharded broker: delivered/s with 1, 2 and 3 shards, and the cost of WAIT.

`python -m benchmarks.scaleout` (`make bench-scaleout`) measures the broker path of the
harness nodes on its own: real `RedisAdapter`s (the nodes' code) in child processes, on a
single Valkey server and on local Valkey Clusters of 1, 2 and 3 shards (a primary and a
replica each, valkeycluster.py), without the WebSocket side. One publisher process keeps
`inflight` publishes outstanding over `rooms` rooms (spread over every shard by their hash
tags); `subscribers` processes each subscribe to every room and count the frames handed
over in order. Figures over a fixed window after a warm-up:

- delivered/s: frames handed over by all subscribers per second (the fan-out);
- acked/s and ack latency p50/p99: the publisher's view, which on a cluster includes the
  `WAIT 1` that makes a publish durable before its acknowledgement (`wait_replicas=0`
  runs show the same cluster without it: the difference is WAIT's cost);
- WAIT's cost alone: one publish at a time (`inflight` 1) on one shard, with and without
  WAIT, so no queue hides the extra round trip.

The servers keep no append-only file here (persistence has its own benchmark), so the
figures are the network, the scripts and the replication. The JSON lands in
docs/scale-out.json; docs/scale-out.md explains it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, machine, percentile
from wsconsole.harness.adapter import AdapterConfig, RedisAdapter
from wsconsole.harness.broker import Broker
from wsconsole.harness.brokerlink import BrokerUnavailable
from wsconsole.harness.valkeycluster import LocalValkeyCluster

FRAME = (b'{"type":"message","epoch":"', b'","seq":', b',"data":"' + b"x" * 64 + b'"}')


@dataclass(frozen=True)
class Setup:
    """One measured configuration: 0 shards is a single server."""

    shards: int
    wait_replicas: int

    @property
    def label(self) -> str:
        """How the report names it."""
        if not self.shards:
            return "1 server"
        return f"{self.shards} shard{'s' if self.shards > 1 else ''}, WAIT {self.wait_replicas}"


@dataclass(frozen=True)
class Size:
    """How hard and how long."""

    rooms: int = 24
    subscribers: int = 2
    inflight: int = 512
    warmup: float = 2.0
    seconds: float = 8.0


SETUPS = (Setup(0, 0), Setup(1, 1), Setup(2, 1), Setup(3, 1), Setup(1, 0), Setup(3, 0))
WAIT_SETUPS = (Setup(1, 1), Setup(1, 0))


def _config(setup: Setup) -> AdapterConfig:
    return AdapterConfig(wait_replicas=setup.wait_replicas, wait_timeout=1.0,
                         max_backlog=100_000)


async def _window(begin: Any, size: Size) -> tuple[float, float]:
    """Wait for the common start (wall clock, set once every child is ready); the measured
    window on this process's monotonic clock."""
    started, at = begin
    await asyncio.to_thread(started.wait)
    start = time.monotonic() + at.value + size.warmup - time.time()
    return start, start + size.seconds


async def _subscribe(url: str, setup: Setup, size: Size, out: Queue[Any], begin: Any) -> None:
    counted = [0]
    window = [float("inf"), 0.0]

    def message(room: str, epoch: str, seq: int, frame: bytes) -> None:
        if window[0] <= time.monotonic() < window[1]:
            counted[0] += 1

    adapter = RedisAdapter(url, f"sub-{time.monotonic_ns()}", _config(setup), on_message=message)
    await adapter.start()
    await adapter.wait_up(20)
    for room in range(size.rooms):
        await adapter.subscribe(f"room-{room}")
    out.put(("ready", 0))
    window[:] = await _window(begin, size)
    await asyncio.sleep(window[1] - time.monotonic() + 1.0)
    out.put(("delivered", counted[0]))
    await adapter.close()


async def _publish(url: str, setup: Setup, size: Size, out: Queue[Any], begin: Any) -> None:
    adapter = RedisAdapter(url, "pub", _config(setup))
    await adapter.start()
    await adapter.wait_up(20)
    out.put(("ready", 0))
    latencies: list[float] = []
    refused = 0
    start, stop = await _window(begin, size)
    counter = iter(range(1 << 62))

    async def lane(offset: int) -> None:
        nonlocal refused
        while (now := time.monotonic()) < stop:
            n = next(counter)
            room = f"room-{(n + offset) % size.rooms}"
            try:
                await adapter.publish(room, f"p{n}", *FRAME)
            except BrokerUnavailable:
                refused += 1
                continue
            if now >= start:
                latencies.append((time.monotonic() - now) * 1000)

    await asyncio.gather(*(lane(i) for i in range(size.inflight)))
    latencies.sort()
    out.put(("published", {
        "acked_per_s": round(len(latencies) / size.seconds),
        "ack_p50_ms": round(percentile(latencies, 50), 2) if latencies else None,
        "ack_p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
        "refused": refused,
    }))  # fmt: skip
    await adapter.close()


def _child(role: str, url: str, setup: Setup, size: Size, out: Queue[Any], begin: Any) -> None:
    job = _subscribe if role == "sub" else _publish
    asyncio.run(job(url, setup, size, out, begin))


def measure(setup: Setup, size: Size, log: Any) -> dict[str, Any]:
    """Start the broker of `setup`, run the publisher and the subscribers, stop them all."""
    broker: Broker | LocalValkeyCluster
    if setup.shards:
        broker = LocalValkeyCluster(setup.shards, 1, persist=False)
        url = broker.start()
    else:
        broker = Broker(persist=False)
        broker.start()
        url = broker.url
    ctx = multiprocessing.get_context("spawn")
    out: Queue[Any] = ctx.Queue()
    begin = (ctx.Event(), ctx.Value("d", 0.0))  # set once every child is ready
    children = []
    try:
        for role in ["sub"] * size.subscribers + ["pub"]:
            child = ctx.Process(target=_child, args=(role, url, setup, size, out, begin))
            child.start()
            children.append(child)
        for _ in children:
            assert out.get(timeout=60)[0] == "ready"
        begin[1].value = time.time()
        begin[0].set()
        delivered, published = 0, {}
        for _ in range(size.subscribers + 1):
            kind, value = out.get(timeout=size.warmup + size.seconds + 60)
            if kind == "delivered":
                delivered += value
            else:
                published = value
        for child in children:
            child.join(timeout=15)
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
                child.join(timeout=5)
        broker.stop()
    result = {"setup": setup.label, **asdict(setup),
              "delivered_per_s": round(delivered / size.seconds), **published}
    log(f"{setup.label}: {result['delivered_per_s']} delivered/s, "
        f"{published.get('acked_per_s')} acked/s, p50 {published.get('ack_p50_ms')} ms, "
        f"p99 {published.get('ack_p99_ms')} ms")
    return result


def main(argv: list[str] | None = None) -> int:
    """Run every setup `--repeat` times (interleaved), write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each setup (>= 1)")
    parser.add_argument("--seconds", type=float, default=Size.seconds, help="window per run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "scale-out.json"))
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.seconds <= 0:
        parser.error("--repeat must be >= 1 and --seconds > 0")
    size = Size(seconds=args.seconds)

    def log(line: str) -> None:
        sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")

    began = time.time()
    runs = [measure(setup, size, log) for _ in range(args.repeat) for setup in SETUPS]
    one = Size(subscribers=1, inflight=1, seconds=args.seconds)
    wait_runs = [measure(setup, one, log) for _ in range(args.repeat) for setup in WAIT_SETUPS]
    document = {
        "size": asdict(size), "runs": runs, "wait_size": asdict(one), "wait_runs": wait_runs,
        "meta": {"machine": machine(), "duration_s": round(time.time() - began, 1),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(began))},
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(document, indent=1) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
