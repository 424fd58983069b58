"""Window ingest: frames/s the console keeps up with while staying responsive; 1M frames RSS.

Runs `benchmarks.window_child` (the real window, offscreen Qt, its own process so the
benchmark's loop is not the one measured) once per repeat, and summarizes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.common import repeated_children, summarize


@dataclass
class WindowSize:
    """Flood rates (frames/s), seconds per rate, frames for the memory figure."""

    rates: tuple[int, ...] = (5_000, 10_000, 20_000, 40_000)
    seconds: float = 6.0
    million: int = 1_000_000
    most: int = 300_000  # frames sent as fast as read: the window and a plain client

    @classmethod
    def quick(cls) -> WindowSize:
        """Tiny: proves the machinery."""
        return cls(rates=(2_000,), seconds=0.5, million=20_000, most=5_000)


async def run(size: WindowSize, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """`repeat` child runs; per rate the median lag p99 and frames/s; the most frames/s
    beside a plain asyncio websockets client's (as many runs); the memory figure."""
    arg = json.dumps({"rates": list(size.rates), "seconds": size.seconds,
                      "million": size.million, "most": size.most})  # fmt: skip
    runs, good = await repeated_children("benchmarks.window_child", arg, "window", repeat,
                                         log, timeout=600.0)
    if not good:
        return {"not_run": runs[0]["error"], "runs": runs}
    _, plain = await repeated_children("benchmarks.plain_reader",
                                       json.dumps({"frames": size.most}), "plain client",
                                       repeat, log, timeout=300.0)  # fmt: skip
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
    most = summarize([r["most"]["frames_per_s"] for r in good])["median"]
    plain_most = summarize([p["frames_per_s"] for p in plain])["median"] if plain else None
    return {
        "rates": by_rate,
        "max_responsive_rate": max(responsive) if responsive else None,
        "max_frames_per_s": max((v["frames_per_s"] or 0) for v in by_rate.values()),
        "most": size.most,
        "most_frames_per_s": most,
        "most_lag_p99_ms": summarize([r["most"]["lag_p99_ms"] for r in good])["median"],
        "plain_client_frames_per_s": plain_most,
        "of_plain_client": round(most / plain_most, 2) if most and plain_most else None,
        "most_cpu_us_per_frame": summarize([r["most"]["cpu_us_per_frame"]
                                            for r in good])["median"],
        "plain_client_cpu_us_per_frame": (summarize([p["cpu_us_per_frame"] for p in plain])
                                          ["median"] if plain else None),
        "frames_held": size.million,
        "rss_mb": summarize([m["rss_mb"] for m in memory])["median"],
        "rss_delta_mb": summarize([m["rss_delta_mb"] for m in memory])["median"],
        "bytes_per_frame": summarize([m["bytes_per_frame"] for m in memory])["median"],
        "runs": runs,
    }
