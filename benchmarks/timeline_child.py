"""The timeline benchmark's own process: `python -m benchmarks.timeline_child '<json size>'`.

Builds the fleet Timeline of `lanes` swarm clients with `minutes` of history (each client
reconnecting every `cycle` seconds, a pong every 2 s), as the window receives it from the
swarm (FleetBatch lines), then measures with the real panel, offscreen:

- ingest: applying one batch in which every client changes state at once (a node kill);
- paint: repainting the viewport at every scroll position from the top to the bottom of
  the expanded lanes (the work of one frame while the user scrolls), for a 30 s and a
  15 min window, and with every group collapsed to its band.

Prints one JSON result line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from benchmarks.common import percentile


def _history(lanes: int, minutes: float, cycle: float, now_wall: float) -> dict[str, Any]:
    """One big fleet batch: every client's state changes and pongs over `minutes`."""
    states: list[list[Any]] = []
    marks: list[list[Any]] = []
    start = now_wall - minutes * 60
    for index in range(lanes):
        name = f"c{index + 1:05d}"
        t = start + index * 0.003
        while t < now_wall:
            states += [[name, t, "C", 0, None, None, None], [name, t + 0.05, "O", 0, None, None,
                                                               None]]
            down = t + cycle
            if down < now_wall:
                states += [[name, down, "R", 1, 0.5, 1006, "backoff grows"]]
            pong = t + 1.0
            while pong < min(down, now_wall):
                marks.append([name, pong, "pong_received", 0.002])
                pong += 2.0
            t = down + 0.5
    return {"states": states, "marks": marks, "nodes": {f"c{i + 1:05d}": f"n{i % 3 + 1}"
                                                       for i in range(lanes)}}


def _paint_pass(panel: Any, app: Any) -> list[float]:
    """Milliseconds per repaint at each scroll position, top to bottom."""
    view = panel.canvas
    bar = view.verticalScrollBar()
    step = max(1, view.content_height() // 2)
    times = []
    position = 0
    while True:
        bar.setValue(position)
        app.processEvents()
        began = time.perf_counter()
        view.viewport().repaint()
        times.append((time.perf_counter() - began) * 1000)
        if position >= bar.maximum():
            return times
        position = min(bar.maximum(), position + step)


def main(size: dict[str, Any]) -> dict[str, Any]:
    """Build, ingest, paint; the figures."""
    from PySide6.QtWidgets import QApplication

    from wsconsole.app.timelinemodel import TimelineModel
    from wsconsole.gui.panels.timeline import TimelinePanel
    from wsconsole.swarm.fleet import FleetBatch

    app = QApplication.instance() or QApplication(sys.argv[:1])
    lanes, minutes, cycle = int(size["lanes"]), float(size["minutes"]), float(size["cycle"])
    model = TimelineModel()
    wall = time.time()
    history = FleetBatch.parse(_history(lanes, minutes, cycle, wall - 1.0))
    began = time.perf_counter()
    model.apply_swarm(history)
    history_s = time.perf_counter() - began
    kill = FleetBatch.parse({"states": [[f"c{i + 1:05d}", wall, "R", 1, 0.5, 1006, "kill"]
                                        for i in range(lanes)]})
    began = time.perf_counter()
    model.apply_swarm(kill)
    kill_ms = (time.perf_counter() - began) * 1000

    panel = TimelinePanel(model)
    panel.timer.stop()
    panel.resize(int(size["width"]), int(size["height"]))
    panel.show()
    panel.expand_all(True)
    app.processEvents()
    result: dict[str, Any] = {
        "lanes": lanes, "events": len(history.states) + len(history.marks),
        "history_ingest_s": round(history_s, 3), "kill_batch_ms": round(kill_ms, 2),
        "rows": len(panel.canvas.rows), "content_px": panel.canvas.total_height(),
    }
    for label, window in (("30s", "30 s"), ("15min", "15 min")):
        panel.window_box.setCurrentText(window)
        times = _paint_pass(panel, app)
        result[f"paint_{label}"] = {"frames": len(times),
                                    "p50_ms": round(percentile(times, 50) or 0, 2),
                                    "p99_ms": round(percentile(times, 99) or 0, 2),
                                    "max_ms": round(max(times), 2)}
    panel.expand_all(False)
    times = _paint_pass(panel, app)
    result["paint_bands"] = {"frames": len(times),
                             "p50_ms": round(percentile(times, 50) or 0, 2),
                             "max_ms": round(max(times), 2)}
    return result


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
