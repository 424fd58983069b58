"""Window ingest: frames/s the console keeps up with while staying responsive; 1M frames RSS.

Runs `benchmarks.window_child` (the real window, offscreen Qt, its own process so the
benchmark's loop is not the one measured) once per repeat, and summarizes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.common import ROOT, child_env, python, summarize


@dataclass
class WindowSize:
    """Flood rates (frames/s), seconds per rate, frames for the memory figure."""

    rates: tuple[int, ...] = (5_000, 10_000, 20_000, 40_000)
    seconds: float = 6.0
    million: int = 1_000_000

    @classmethod
    def quick(cls) -> WindowSize:
        """Tiny: proves the machinery."""
        return cls(rates=(2_000,), seconds=0.5, million=20_000)


async def run_once(size: WindowSize, timeout: float = 600.0) -> dict[str, Any]:
    """One child run; its JSON result."""
    arg = json.dumps({"rates": list(size.rates), "seconds": size.seconds,
                      "million": size.million})  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        python(), "-m", "benchmarks.window_child", arg,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=child_env(QT_QPA_PLATFORM="offscreen"), cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"error": f"the window child did not finish in {timeout} s"}
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"window child exit {proc.returncode}: {err.decode()[-400:]}"}
    return json.loads(lines[-1])


async def run(size: WindowSize, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """`repeat` child runs; per rate the median lag p99 and frames/s; the memory figure."""
    runs = []
    for index in range(repeat):
        result = await run_once(size)
        log(f"window run {index + 1}: {json.dumps(result)[:300]}")
        runs.append(result)
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"not_run": runs[0]["error"], "runs": runs}
    by_rate = {}
    for i, rate in enumerate(size.rates):
        steps = [r["ingest"][i] for r in good]
        by_rate[str(rate)] = {
            "frames_per_s": summarize([s["frames_per_s"] for s in steps])["median"],
            "view_frames_per_s": summarize([s["view_frames_per_s"] for s in steps])["median"],
            "lag_p50_ms": summarize([s["lag_p50_ms"] for s in steps])["median"],
            "lag_p99_ms": summarize([s["lag_p99_ms"] for s in steps])["median"],
            "lag_p99_ms_spread": summarize([s["lag_p99_ms"] for s in steps]),
            "kept_up": all(s["received_all"] and s["view_caught_up"] for s in steps),
        }
    responsive = [int(r) for r, v in by_rate.items()
                  if v["kept_up"] and (v["lag_p99_ms"] or 0) < 50]  # fmt: skip
    memory = [r["memory"] for r in good]
    return {
        "rates": by_rate,
        "max_responsive_rate": max(responsive) if responsive else None,
        "frames_held": size.million,
        "rss_mb": summarize([m["rss_mb"] for m in memory])["median"],
        "rss_delta_mb": summarize([m["rss_delta_mb"] for m in memory])["median"],
        "bytes_per_frame": summarize([m["bytes_per_frame"] for m in memory])["median"],
        "runs": runs,
    }
