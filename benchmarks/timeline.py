"""Timeline scroll: a thousand swarm lanes painted virtually, measured per repaint.

Runs `benchmarks.timeline_child` (the real Timeline panel, offscreen Qt, its own process)
once per repeat: the fleet's history is ingested as the swarm's batches deliver it, one
batch where every client changes state at once is timed, then the viewport is repainted at
every scroll position from the top lane to the bottom one (what one frame costs while the
user scrolls), with a 30 s and a 15 min window, and with every group collapsed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.common import repeated_children, summarize


@dataclass
class TimelineSize:
    """Lanes, minutes of history, seconds between a client's reconnects, the panel's size."""

    lanes: int = 1000
    minutes: float = 10.0
    cycle: float = 60.0
    width: int = 1600
    height: int = 900

    @classmethod
    def quick(cls) -> TimelineSize:
        """Tiny: proves the machinery."""
        return cls(lanes=50, minutes=1.0, cycle=20.0, width=800, height=400)


async def run(size: TimelineSize, repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    """`repeat` child runs; medians of each figure."""
    runs, good = await repeated_children("benchmarks.timeline_child", json.dumps(asdict(size)),
                                         "timeline", repeat, log, timeout=300.0)
    if not good:
        return {"not_run": runs[0]["error"], "runs": runs}
    figures: dict[str, Any] = {"lanes": size.lanes, "minutes": size.minutes,
                               "events": good[0]["events"], "runs": runs}
    figures["kill_batch_ms"] = summarize([r["kill_batch_ms"] for r in good])
    for key in ("paint_30s", "paint_15min"):
        figures[key] = {stat: summarize([r[key][stat] for r in good])
                        for stat in ("p50_ms", "p99_ms", "max_ms")}
    figures["paint_bands_ms"] = summarize([r["paint_bands"]["p50_ms"] for r in good])
    return figures
