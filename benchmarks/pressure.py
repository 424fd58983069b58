"""Backpressure on the harness: a deliberately slow subscriber, then 4x the bounded rate.

The same setup and load generator as the fan-out benchmark (fanout.py: 3 nodes, 500
subscribers, Node.js `ws` clients), with a send cap per connection of `MAX_BUFFERED` (the
nodes' default is 1 MiB; with it, a paused reader of this step's 25 KB/s would take about a
minute to fill the cap and the kernel's socket buffers, longer than the benchmark). In one
cluster:

1. `slow`, `ROUNDS` times: the equal-load step (50,000 deliveries/s) with every subscriber
   reading, then again with `SLOW` of them paused (the load generator stops reading their
   sockets; other ones each round, read again after it); the others' p50/p99 beside those
   of the step just before, same cluster, interleaved, so the machine's load falls on
   both (the ramp's step of the same load, another cluster minutes earlier, is kept for
   reference). A paused one is told `lagging` and closed 1013 once its send buffer is
   full, so it costs the node a bounded buffer, not a growing queue; the nodes' own count
   of `lagging` notices is read from their /metrics (a paused client cannot read its
   notice).
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
from benchmarks.fanout import FanoutSize, Generators, Setup, _lean, wsconsole
from wsconsole.harness.clusterconfig import Limits

SLOW = 5  # paused subscribers in the slow step
ROUNDS = 3  # (every subscriber reading, SLOW paused) pairs of steps
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


async def _slow_rounds(gens: Generators, servers: CpuMeter, meters: CpuMeter,
                       setup: Setup, ports: list[int], slow: int, size: FanoutSize,
                       log: Callable[[str], None]) -> list[dict[str, Any]]:  # fmt: skip
    """`ROUNDS` pairs of equal-load steps: every subscriber reading, then `slow` of them
    paused (other ones each round, read again after their step)."""
    rounds = []
    pauser = gens.subs[0]
    for index in range(ROUNDS):
        gens.subscribers = await _open_subscribers(gens)
        base = await _step(gens, servers, meters, setup.node_pids, ports, size.equal_load,
                           size, 1 + 2 * index)  # fmt: skip
        first = index * slow
        await pauser.call(cmd="pause", first=first, count=slow)
        gens.subscribers -= slow  # the paused ones are not expected to receive
        try:
            paused = await _step(gens, servers, meters, setup.node_pids, ports,
                                 size.equal_load, size, 2 + 2 * index)  # fmt: skip
        finally:
            await pauser.call(cmd="resume", first=first, count=slow)
        log(f"pressure round {index + 1}: all reading p50 {base['p50_ms']} p99 "
            f"{base['p99_ms']} ms; {slow} paused: others p50 {paused['p50_ms']} p99 "
            f"{paused['p99_ms']} ms, {paused['node_lagging']} lagging")  # fmt: skip
        rounds.append({"all_reading": base, "paused": paused})
    gens.subscribers = await _open_subscribers(gens)
    return rounds


async def _open_subscribers(gens: Generators) -> int:
    """How many subscribers are open (a paused one cut as `lagging` is closed)."""
    await gens.quiet()
    counts = await asyncio.gather(*(sub.call(cmd="count") for sub in gens.subs))
    return sum(count["open"] for count in counts)


def _median_step(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The step whose p99 is the median of `steps` (the lower one of an even count)."""
    ranked = sorted(steps, key=lambda step: step["p99_ms"] if step["p99_ms"] is not None
                    else float("inf"))  # fmt: skip
    return ranked[(len(ranked) - 1) // 2]


async def run(size: FanoutSize, fanout: dict[str, Any] | None,
              log: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """Both parts once on a fresh wsconsole cluster; the ramp's figures it compares with."""
    ours = (fanout or {}).get("wsconsole", {})
    bounded_rate = next((r["bounded_rate"] for r in ours.get("runs", []) if r["bounded_rate"]),
                        None)  # fmt: skip
    overload = 4 * (bounded_rate or size.rates[0])
    ramp_step = next((s for r in ours.get("runs", []) for s in r["steps"]
                      if s["rate"] == size.equal_load), None)  # fmt: skip
    try:
        async with wsconsole(size, Limits(max_buffered=MAX_BUFFERED)) as setup:
            ports = sorted({target["port"] for target in setup.subs})
            gens = Generators(setup, size)
            slow = min(SLOW, max(1, len(gens.subs[0].spec["targets"]) // (10 * ROUNDS)))
            try:
                await gens.start("wsconsole")
                servers = CpuMeter(setup.pids)
                meters = CpuMeter([g.pid for g in gens.all if g.pid])
                # warm-up at the load of the rounds: their first step is not a cold start
                await gens.step(servers, meters, size.equal_load, 1.0, 0.5, 0)
                rounds = await _slow_rounds(gens, servers, meters, setup, ports, slow, size,
                                            log)  # fmt: skip
                over = await _step(gens, servers, meters, setup.node_pids, ports, overload,
                                   size, 1 + 2 * ROUNDS)  # fmt: skip
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
        "rounds": rounds,
        "slow_step": _median_step([r["paused"] for r in rounds]),
        "baseline_step": _median_step([r["all_reading"] for r in rounds]),
        "ramp_step": ramp_step,
        "bounded_rate": bounded_rate,
        "overload_rate": overload,
        "overload_step": over,
    }
