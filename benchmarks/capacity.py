"""Handshakes and idle connections: one node, auth on, heartbeats on.

One harness node (auth on, one user per connection, the default soft limit of 10,000)
on a valkey from `Broker`; two processes of the independent load generator (`loadgen.js`)
open the connections from distinct 127.x.y.z source addresses, each authenticating with
its token and joining a room. Reported: handshakes per second (upgrade, token, presence
claim and room join, until `joined`), the node's RSS growth per connection (psutil), the
node's own count on /metrics, and that every connection is still open after holding them
through several heartbeat rounds.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from benchmarks.common import (
    BenchError,
    Child,
    LoadGen,
    child_env,
    python,
    raise_nofile,
    summarize,
)
from wsconsole.harness.auth import SECRET_ENV, issue_token
from wsconsole.harness.broker import Broker


@dataclass
class CapacitySize:
    """How many connections, how long to hold them, heartbeat timing."""

    connections: int = 10_000
    procs: int = 2
    hold: float = 6.0
    ping_interval: float = 2.0
    ping_timeout: float = 5.0

    @classmethod
    def quick(cls) -> CapacitySize:
        """Tiny: proves the machinery."""
        return cls(connections=40, procs=1, hold=1.5, ping_interval=0.5, ping_timeout=2.0)


def local_address(index: int) -> str:
    """A distinct loopback source address per connection (any 127.x.y.z is local on Linux)."""
    return f"127.{50 + index // 62_500}.{index // 250 % 250 + 1}.{index % 250 + 2}"


async def _node_connections(port: int) -> int | None:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    match = re.search(r'^wsconsole_connections\{node="[^"]+"\} ([0-9.e+]+)$', text, re.M)
    return int(float(match.group(1))) if match else None


async def run_once(size: CapacitySize) -> dict[str, Any]:
    """Start a broker and one node, open, hold, measure, stop."""
    raise_nofile()  # inherited by the node and the load generators
    secret = "bench-capacity-secret-0123456789abcdef"
    broker = Broker()
    broker.start()
    node = Child(
        [python(), "-m", "wsconsole.harness.node", "--id", "cap1", "--port", "0",
         "--redis", broker.url, "--ping-interval", str(size.ping_interval),
         "--ping-timeout", str(size.ping_timeout)],
        env=child_env(**{SECRET_ENV: secret}),
    )  # fmt: skip
    gens: list[LoadGen] = []
    try:
        port = await node.start()
        proc = psutil.Process(node.pid)
        await asyncio.sleep(0.5)
        rss0 = proc.memory_info().rss
        targets = [
            {
                "host": "127.0.0.1",
                "port": port,
                "path": f"/?token={issue_token(secret, f'cap{i}', ('bench',))}",
                "local": local_address(i),
            }
            for i in range(size.connections)
        ]
        gens = [
            LoadGen({"role": "conn", "kind": "harness", "targets": targets[i :: size.procs]})
            for i in range(size.procs)
        ]
        began = time.monotonic()
        cpu_open = sum(proc.cpu_times()[:2])
        readies = await asyncio.gather(*(g.start(timeout=300) for g in gens))
        open_s = time.monotonic() - began
        handshake_cpu = sum(proc.cpu_times()[:2]) - cpu_open
        failed = sum(r["failed"] for r in readies)
        first_error = next((r["error"] for r in readies if r["error"]), None)
        if failed == size.connections:
            raise BenchError(f"capacity: none of {size.connections} opened: {first_error}; "
                             f"node stderr: {node.stderr_tail()}")  # fmt: skip
        cpu0 = sum(proc.cpu_times()[:2])
        await asyncio.sleep(size.hold)
        idle_cpu = (sum(proc.cpu_times()[:2]) - cpu0) / size.hold * 100
        counts = await asyncio.gather(*(g.call(cmd="count") for g in gens))
        still_open = sum(c["open"] for c in counts)
        rss1 = proc.memory_info().rss
        on_node = await _node_connections(port)
        opened = size.connections - failed
        return {
            "connections": size.connections,
            "failed": failed,
            "first_error": first_error and f"{first_error}; node stderr: {node.stderr_tail()}",
            "join_retries": sum(r.get("join_retries", 0) for r in readies),
            "open_s": round(open_s, 3),
            "opened_per_s": round(opened / open_s),
            "handshake_cpu_us": round(handshake_cpu / size.connections * 1e6),
            "held_after_s": size.hold,
            "still_open": still_open,
            "node_reports": on_node,
            "node_rss_mb": round(rss1 / 2**20, 1),
            "rss_per_conn_kib": round((rss1 - rss0) / max(1, on_node or opened) / 1024, 2),
            "node_idle_cpu_pct": round(idle_cpu, 1),
            "ping_interval_s": size.ping_interval,
        }
    finally:
        await asyncio.gather(*(g.stop() for g in gens))
        node.stop()
        broker.stop()


async def run(size: CapacitySize, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """`repeat` fresh runs; medians and spreads."""
    runs = []
    for index in range(repeat):
        try:
            result = await run_once(size)
        except BenchError as exc:
            result = {"error": str(exc)}
        log(f"capacity run {index + 1}: {result}")
        runs.append(result)
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"not_run": runs[0]["error"], "runs": runs}
    return {
        "connections": size.connections,
        "held": summarize([r["still_open"] for r in good])["median"],
        "failed": summarize([r["failed"] for r in good])["median"],
        "join_retries": summarize([r["join_retries"] for r in good])["median"],
        "open_s": summarize([r["open_s"] for r in good])["median"],
        "opened_per_s": summarize([r["opened_per_s"] for r in good])["median"],
        "opened_per_s_spread": summarize([r["opened_per_s"] for r in good]),
        "handshake_cpu_us": summarize([r["handshake_cpu_us"] for r in good])["median"],
        "rss_per_conn_kib": summarize([r["rss_per_conn_kib"] for r in good])["median"],
        "node_rss_mb": summarize([r["node_rss_mb"] for r in good])["median"],
        "open_s_spread": summarize([r["open_s"] for r in good]),
        "rss_per_conn_kib_spread": summarize([r["rss_per_conn_kib"] for r in good]),
        "runs": runs,
    }
