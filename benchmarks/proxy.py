"""Proxy overhead: round-trip time at a steady 1,000 messages/s, direct and through the proxy.

An echo server (websockets, its own process) and `wsconsole proxy --upstream ... --quiet`
(its own process, as a user runs it, printing connections and actions but not each frame)
start once. A paced client in this process then alternates, in rounds, between a direct
connection to the echo server and one through the proxy: each phase sends `rate` small
text messages per second for `seconds`, on an absolute schedule, and times each echo. The
first 10 % of each phase is warm-up and not counted. Alternating rounds in one run puts
both paths under the same machine load. Reported: p50/p99 of each path and the p50 the
proxy adds (target: no more than 1 ms), how many messages came back, and the proxy's CPU
time per round trip (its two frames), which the machine's load does not inflate the way it
inflates the latency of a third process on the path.

`python -m benchmarks.proxy echo` is the echo server child.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.common import BenchError, Child, percentile, python, summarize
from wsconsole.core.tasks import spawn

TARGET_ADDED_P50_MS = 1.0


@dataclass
class ProxySize:
    """Rate, phase length and rounds."""

    rate: int = 1000
    seconds: float = 5.0
    rounds: int = 4

    @classmethod
    def quick(cls) -> ProxySize:
        """Tiny: proves the machinery."""
        return cls(rate=200, seconds=0.5, rounds=1)


async def _phase(url: str, rate: int, seconds: float) -> dict[str, Any]:
    """Send `rate` msg/s for `seconds` on a fixed schedule; the echoes' round-trip times."""
    total = max(1, int(rate * seconds))
    sent_at: dict[int, float] = {}
    rtts: list[float] = []
    async with connect(url, ping_interval=None, compression=None, max_queue=None) as ws:
        done = asyncio.Event()

        async def receive() -> None:
            async for message in ws:
                seq = int(message)
                rtts.append((time.perf_counter() - sent_at.pop(seq)) * 1000.0)
                if seq == total - 1:
                    done.set()

        reader = spawn(receive(), "bench-proxy-reader")
        start = time.perf_counter()
        for seq in range(total):
            due = start + seq / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[seq] = time.perf_counter()
            await ws.send(str(seq))
        try:
            await asyncio.wait_for(done.wait(), 10.0)
        except TimeoutError:
            pass
        reader.cancel()
    counted = rtts[len(rtts) // 10:]
    return {"sent": total, "received": len(rtts), "p50_ms": percentile(counted, 50),
            "p99_ms": percentile(counted, 99)}


async def run_once(size: ProxySize, echo: Child, proxy: Child,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """Alternate direct and proxied phases; medians of each path over the rounds."""
    direct_url = f"ws://127.0.0.1:{echo.port}/"
    proxied_url = f"ws://127.0.0.1:{proxy.port}/"
    phases: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy": []}
    proxy_process = psutil.Process(proxy.pid)
    for index in range(size.rounds):
        order = [("direct", direct_url), ("proxy", proxied_url)]
        for name, url in order if index % 2 == 0 else reversed(order):
            before = sum(proxy_process.cpu_times()[:2])
            result = await _phase(url, size.rate, size.seconds)
            if name == "proxy":
                used = sum(proxy_process.cpu_times()[:2]) - before
                result["cpu_us_per_message"] = round(used / result["sent"] * 1e6, 1)
            log(f"proxy bench round {index + 1} {name}: {result}")
            phases[name].append(result)
    out: dict[str, Any] = {}
    for name, results in phases.items():
        out[name] = {
            "p50_ms": summarize([r["p50_ms"] for r in results])["median"],
            "p99_ms": summarize([r["p99_ms"] for r in results])["median"],
            "received_ratio": sum(r["received"] for r in results) / sum(
                r["sent"] for r in results),
        }
    out["proxy"]["cpu_us_per_message"] = summarize(
        [r["cpu_us_per_message"] for r in phases["proxy"]])["median"]
    direct, through = out["direct"]["p50_ms"], out["proxy"]["p50_ms"]
    out["added_p50_ms"] = None if direct is None or through is None else round(
        through - direct, 4)
    return out


async def run(size: ProxySize, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Start the echo server and the proxy once, measure `repeat` times."""
    echo = Child([python(), "-m", "benchmarks.proxy", "echo"])
    await echo.start()
    proxy = Child([python(), "-m", "wsconsole", "proxy", "--upstream",
                   f"ws://127.0.0.1:{echo.port}", "--listen", "127.0.0.1:0", "--json",
                   "--quiet"])
    runs: list[dict[str, Any]] = []
    try:
        await proxy.start()
        for index in range(repeat):
            try:
                result = await run_once(size, echo, proxy, log)
            except (BenchError, OSError) as exc:
                result = {"error": str(exc)}
            log(f"proxy run {index + 1}: {result}")
            runs.append(result)
    finally:
        proxy.stop()
        echo.stop()
    good = [r for r in runs if "error" not in r]
    return {
        "rate": size.rate,
        "seconds_per_phase": size.seconds,
        "rounds": size.rounds,
        "direct_p50_ms": summarize([r["direct"]["p50_ms"] for r in good])["median"],
        "proxy_p50_ms": summarize([r["proxy"]["p50_ms"] for r in good])["median"],
        "direct_p99_ms": summarize([r["direct"]["p99_ms"] for r in good])["median"],
        "proxy_p99_ms": summarize([r["proxy"]["p99_ms"] for r in good])["median"],
        "added_p50_ms": summarize([r["added_p50_ms"] for r in good]),
        "proxy_cpu_us_per_message": summarize(
            [r["proxy"]["cpu_us_per_message"] for r in good])["median"],
        "received_ratio": min((r[p]["received_ratio"] for r in good for p in ("direct", "proxy")),
                              default=None),
        "runs": runs,
    }


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def _serve_echo() -> None:
    async with serve(_echo, "127.0.0.1", 0, ping_interval=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"event": "listening", "port": port}), flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    if sys.argv[1:] != ["echo"]:
        sys.exit("usage: python -m benchmarks.proxy echo")
    asyncio.run(_serve_echo())
