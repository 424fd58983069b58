"""Backpressure on the harness: a deliberately slow subscriber, then 4x the bounded rate.

The same setup and load generator as the fan-out benchmark (fanout.py: 3 nodes, 500
subscribers, Node.js `ws` clients), with `SLOW` of the subscribers paused from the start
(they join, then never read), and a send cap per connection of `MAX_BUFFERED` (the nodes'
default is 1 MiB; with it, a paused reader of this step's 25 KB/s would take about a minute
to fill the cap and the kernel's socket buffers, longer than the benchmark). Two steps in
one cluster:

1. `slow`: the equal-load step (50,000 deliveries/s) with the paused subscribers present;
   the others' p50/p99 beside the same step of the ramp without them (same run). The
   paused ones are told `lagging` and closed 1013 once their send buffer is full, so they
   cost the node a bounded buffer each, not a growing queue; the nodes' own count of
   `lagging` notices is read from their /metrics (a paused client cannot read its notice).
2. `overload`: 4x wsconsole's latency-bounded rate from the ramp (4x the ramp's first step
   when nothing was in bound), with the largest RSS of any node sampled during the step,
   the share delivered of the publishes acknowledged, the p99 of the clients that keep up
   (the load generator keeps the ones told `lagging` apart), `lagging` notices and refused
   publishes (`broker_busy`, `rate_limited`; the load generator does not re-send them, so
   what is refused is not offered again).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import psutil

from benchmarks.common import BenchError, CpuMeter
from benchmarks.fanout import FanoutSize, Generators, _lean, wsconsole
from wsconsole.harness.clusterconfig import Limits

SLOW = 5  # paused subscribers in the slow step
RSS_SAMPLE_S = 0.2
MAX_BUFFERED = 64 << 10  # the send cap per connection in this benchmark (see above)
_ERRORS = re.compile(r'^wsconsole_errors_total\{[^}]*kind="([^"]+)"[^}]*\} ([0-9.e+]+)$', re.M)


async def node_errors(ports: list[int]) -> Counter[str]:
    """The nodes' own error counters by kind (`lagging`, `broker_busy`...), summed."""
    total: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=10) as client:
        for port in ports:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            for kind, value in _ERRORS.findall(text):
                total[kind] += int(float(value))
    return total


class PeakRss:
    """The largest RSS of any of `pids` while running (sampled every RSS_SAMPLE_S)."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]
        self.peak = 0

    async def sample(self, stop: asyncio.Event) -> None:
        """Sample until `stop` is set."""
        while not stop.is_set():
            for proc in self.procs:
                try:
                    self.peak = max(self.peak, proc.memory_info().rss)
                except psutil.Error:
                    continue
            await asyncio.sleep(RSS_SAMPLE_S)


async def _step(gens: Generators, servers: CpuMeter, meters: CpuMeter, node_pids: list[int],
                ports: list[int], rate: float, size: FanoutSize,
                index: int) -> dict[str, Any]:  # fmt: skip
    """One step with the nodes' peak RSS and their own counts of what they refused."""
    rss = PeakRss(node_pids)
    stop = asyncio.Event()
    sampler = asyncio.create_task(rss.sample(stop))
    before = await node_errors(ports)
    try:
        step = _lean(await gens.step(servers, meters, rate, size.step_seconds, size.grace,
                                     index))  # fmt: skip
    finally:
        stop.set()
        await sampler
    after = await node_errors(ports)
    step["node_rss_peak_mb"] = round(rss.peak / 2**20, 1)
    step["node_lagging"] = after["lagging"] - before["lagging"]
    step["node_broker_busy"] = after["broker_busy"] - before["broker_busy"]
    acked = step.get("acked") or 0
    step["delivered_of_acked"] = (round(step["received"] / (acked * gens.subscribers), 5)
                                  if acked else None)  # fmt: skip
    return step


async def run(size: FanoutSize, fanout: dict[str, Any] | None,
              log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Both steps once on a fresh wsconsole cluster; the ramp's figures it compares with."""
    ours = (fanout or {}).get("wsconsole", {})
    bounded_rate = next((r["bounded_rate"] for r in ours.get("runs", []) if r["bounded_rate"]),
                        None)  # fmt: skip
    overload = 4 * (bounded_rate or size.rates[0])
    baseline = next((s for r in ours.get("runs", []) for s in r["steps"]
                     if s["rate"] == size.equal_load), None)  # fmt: skip
    try:
        async with wsconsole(size, Limits(max_buffered=MAX_BUFFERED)) as setup:
            ports = sorted({target["port"] for target in setup.subs})
            slow = min(SLOW, max(1, len(setup.subs) // 10))
            gens = Generators(setup, size, slow=slow)
            gens.subscribers -= slow  # the paused ones are not expected to receive
            try:
                await gens.start("wsconsole")
                servers = CpuMeter(setup.pids)
                meters = CpuMeter([g.pid for g in gens.all if g.pid])
                await gens.step(servers, meters, 10.0, 0.5, 0.5, 0)  # warm-up
                with_slow = await _step(gens, servers, meters, setup.node_pids, ports,
                                        size.equal_load, size, 1)  # fmt: skip
                log(f"pressure: {slow} paused subscribers at {size.equal_load:g}/s: others "
                    f"p50 {with_slow['p50_ms']} p99 {with_slow['p99_ms']} ms, "
                    f"{with_slow['node_lagging']} lagging")  # fmt: skip
                over = await _step(gens, servers, meters, setup.node_pids, ports, overload,
                                   size, 2)  # fmt: skip
                log(f"pressure: {overload:g}/s (4x): {over['delivered_of_acked']} of the acked "
                    f"delivered, p99 {over['p99_ms']} ms, node RSS peak "
                    f"{over['node_rss_peak_mb']} MB, refused {over['refused']}, "
                    f"{over['node_lagging']} lagging")  # fmt: skip
            finally:
                await gens.stop()
    except BenchError as exc:
        return {"not_run": str(exc)}
    return {
        "slow_subscribers": slow,
        "max_buffered": MAX_BUFFERED,
        "subscribers": size.subscribers,
        "slow_step": with_slow,
        "baseline_step": baseline,
        "bounded_rate": bounded_rate,
        "overload_rate": overload,
        "overload_step": over,
    }
