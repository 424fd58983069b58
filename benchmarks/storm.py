"""Reconnect storm: N clients on one node, the node is SIGKILLed, how long until all are back.

A `Cluster` starts with one node, the clients connect through its balancer (distinct
source addresses, one user each, auth on) and join a room, so all of them sit on n1. A
second node is added, n1 is SIGKILLed, and every client reconnects through the balancer
with the product's `BackoffPolicy` (DESIGN.md defaults: 1 s doubling, cap 30 s), once with
its uniform 0-1 s jitter and once without. Reported: time until every client is back
(joined again), median and p99 of the per-client times, connection attempts made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.capacity import local_address
from benchmarks.common import BenchError, LoadGen, percentile, raise_nofile, summarize
from wsconsole.harness.cluster import Cluster, ClusterConfig


@dataclass
class StormSize:
    """How many clients, over how many load-generator processes, how long to wait."""

    clients: int = 2000
    procs: int = 2
    timeout: float = 120.0

    @classmethod
    def quick(cls) -> StormSize:
        """Tiny: proves the machinery."""
        return cls(clients=20, procs=1, timeout=60.0)


async def _wait_up(gens: list[LoadGen], want: int, timeout: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    up = 0
    while loop.time() < deadline:
        states = await asyncio.gather(*(g.call(cmd="state") for g in gens))
        up = sum(s["up"] for s in states)
        if up >= want:
            return up
        await asyncio.sleep(0.1)
    return up


async def run_once(size: StormSize, jitter: float) -> dict[str, Any]:
    """One storm with the given jitter; SIGKILL n1 under `size.clients` clients."""
    raise_nofile()
    cluster = Cluster(ClusterConfig(nodes=1))
    await cluster.start()
    gens: list[LoadGen] = []
    try:
        port = cluster.balancer.port
        targets = [
            {
                "host": "127.0.0.1",
                "port": port,
                "path": f"/?token={cluster.token(f'storm{i}', ('bench',))}",
                "local": local_address(i),
            }
            for i in range(size.clients)
        ]
        backoff = {"initial": 1.0, "factor": 2.0, "cap": 30.0, "jitter": jitter}
        gens = [
            LoadGen({"targets": targets[i :: size.procs], "backoff": backoff},
                    python_clients=True)
            for i in range(size.procs)
        ]
        await asyncio.gather(*(g.start(timeout=300) for g in gens))
        up = await _wait_up(gens, size.clients, size.timeout)
        if up < size.clients:
            raise BenchError(f"storm: only {up} of {size.clients} clients connected")
        await cluster.add()
        since = time.time()
        await cluster.kill("n1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + size.timeout
        while True:  # until every client was dropped and is back (or the timeout)
            reports = await asyncio.gather(*(g.call(cmd="report", since=since) for g in gens))
            back_now = [x for r in reports for x in r["back_s"] if x is not None]
            if len(back_now) >= size.clients or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
        back = [x for r in reports for x in r["back_s"]]
        times = [x for x in back if x is not None]
        return {
            "clients": size.clients,
            "jitter_s": jitter,
            "dropped": len(back),
            "back": len(times),
            "all_back_s": round(max(times), 3) if times and len(times) == len(back) else None,
            "p50_s": percentile(times, 50),
            "p99_s": percentile(times, 99),
            "attempts": sum(r["attempts"] for r in reports),
        }
    finally:
        await asyncio.gather(*(g.stop() for g in gens))
        await cluster.stop()


async def run(size: StormSize, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """With and without jitter, `repeat` times each; medians and spreads."""
    out: dict[str, Any] = {"clients": size.clients}
    for label, jitter in (("jitter", 1.0), ("no_jitter", 0.0)):
        runs = []
        for index in range(repeat):
            try:
                result = await run_once(size, jitter)
            except BenchError as exc:
                result = {"error": str(exc)}
            log(f"storm {label} run {index + 1}: {result}")
            runs.append(result)
        good = [r for r in runs if "error" not in r]
        out[label] = {
            "all_back_s": summarize([r["all_back_s"] for r in good])["median"],
            "p50_s": summarize([r["p50_s"] for r in good])["median"],
            "p99_s": summarize([r["p99_s"] for r in good])["median"],
            "all_back_s_spread": summarize([r["all_back_s"] for r in good]),
            "runs": runs,
        }
    return out
