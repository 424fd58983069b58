"""Broker persistence: what the append-only file costs on the publish path.

The same publish path the nodes use (`RedisAdapter.publish_nowait`: the Lua script with
idempotency key, sequence, history append and PUBLISH, pipelined in batches) against the
harness's own broker in three modes: in memory (`--broker-ephemeral`), AOF with
`appendfsync everysec`, and AOF with `appendfsync always` (the harness default). Two
figures per mode:

- pipelined throughput: `burst` publishes queued at once over a few rooms, as a busy node
  queues them; publishes acknowledged per second;
- one at a time: `single` publishes, each awaited before the next (a lone client on an idle
  cluster, where nothing shares an fsync); the acknowledgement latency p50 / p99.

The broker's data folder is a temporary directory on the machine's temp file system, where
the harness keeps it unless given --data-dir.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.common import percentile, summarize
from wsconsole.harness.adapter import AdapterConfig, RedisAdapter
from wsconsole.harness.broker import Broker

MODES = {  # label -> (persist, fsync)
    "ephemeral": (False, "always"),
    "aof_everysec": (True, "everysec"),
    "aof_always": (True, "always"),
}
ROOMS = 4


@dataclass
class PersistenceSize:
    """How many publishes per measurement."""

    burst: int = 50_000
    single: int = 3_000

    @classmethod
    def quick(cls) -> PersistenceSize:
        """Tiny: proves the machinery."""
        return cls(burst=500, single=50)


async def _measure(url: str, size: PersistenceSize, tag: str) -> dict[str, Any]:
    # the whole burst queued at once: the broker's pipelined throughput is measured here,
    # not the node's bound on its backlog (a node refuses beyond 2,048 with broker_busy)
    adapter = RedisAdapter(url, f"bench-{tag}",
                           AdapterConfig(history=10_000, max_backlog=size.burst))  # fmt: skip
    await adapter.start()
    try:
        if not await adapter.wait_up(10.0):
            raise RuntimeError(f"the broker at {url} did not come up")
        parts = (b'{"type":"message","epoch":"', b'","seq":', b',"data":"x"}')
        began = time.perf_counter()
        futures = [
            adapter.publish_nowait(f"bench-{i % ROOMS}", f"{tag}-b{i}", *parts)
            for i in range(size.burst)
        ]
        await asyncio.gather(*futures)
        burst_s = time.perf_counter() - began
        latencies = []
        for i in range(size.single):
            start = time.perf_counter()
            await adapter.publish("bench-single", f"{tag}-s{i}", *parts)
            latencies.append((time.perf_counter() - start) * 1000)
    finally:
        await adapter.close()
    return {
        "burst_per_s": round(size.burst / burst_s),
        "single_p50_ms": round(percentile(latencies, 50) or 0, 3),
        "single_p99_ms": round(percentile(latencies, 99) or 0, 3),
    }


async def run_mode(label: str, size: PersistenceSize) -> dict[str, Any]:
    """One measurement against a fresh broker in mode `label`."""
    persist, fsync = MODES[label]
    with tempfile.TemporaryDirectory(prefix="wsconsole-bench-broker-") as folder:
        broker = Broker(data_dir=folder, persist=persist, fsync=fsync)
        url = await asyncio.to_thread(broker.start)
        try:
            return await _measure(url, size, label)
        finally:
            await asyncio.to_thread(broker.stop)


async def run(size: PersistenceSize, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Every mode `repeat` times, interleaved so load changes hit every mode alike."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in MODES}
    for index in range(repeat):
        for label in MODES:
            result = await run_mode(label, size)
            log(f"persistence {label} run {index + 1}: {result}")
            runs[label].append(result)
    out: dict[str, Any] = {"burst": size.burst, "single": size.single}
    for label, results in runs.items():
        out[label] = {
            key: summarize([r[key] for r in results])["median"]
            for key in ("burst_per_s", "single_p50_ms", "single_p99_ms")
        }
        out[label]["burst_per_s_spread"] = summarize([r["burst_per_s"] for r in results])
        out[label]["runs"] = results
    return out
