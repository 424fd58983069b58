"""The window benchmark's own process: `python -m benchmarks.window_child '<json size>'`.

Runs the real console window (offscreen Qt, qasync) with one session per flood rate
against `benchmarks.servers.flood_server`, probing event-loop lag with a 20 ms timer while
frames arrive, then the most frames/s it takes (a flood as fast as it reads); then fills
the console's FrameStore with `million` harness frames and lets
the Frames view catch up, measuring the process RSS. Prints one JSON result line. A short
unreported flood first warms the window up.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import psutil

from benchmarks.common import Child, percentile, python


async def _until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


async def _ingest(capp: Any, rate: int, seconds: float, most: int | None = None
                  ) -> dict[str, Any]:  # fmt: skip
    """One session under a flood of `rate` frames/s for `seconds`, or (`most`) that many
    frames as fast as the window reads them."""
    from wsconsole.app.profiles import Profile
    from wsconsole.core.lifecycle import State

    pace = ["--frames", str(most)] if most else ["--rate", str(rate), "--seconds", str(seconds)]
    server = Child([python(), "-m", "benchmarks.servers.flood_server", "--port", "0", *pace])
    port = await server.start()
    lags: list[float] = []
    stop = asyncio.Event()

    async def probe(interval: float = 0.02) -> None:
        while not stop.is_set():
            began = time.perf_counter()
            await asyncio.sleep(interval)
            lags.append((time.perf_counter() - began - interval) * 1000)

    name = f"most{most}" if most else f"flood{rate}"
    console = capp.console
    window = capp.window
    try:
        console.add_session(Profile(name=name, url=f"ws://127.0.0.1:{port}/"))
        window.connection.sync_list()
        store_before = console.frames.next_id
        rows_before = window.frames.model.rowCount()
        prober = asyncio.get_running_loop().create_task(probe())
        began = time.perf_counter()
        cpu_began = time.process_time()
        await console.connect(name)
        session = console.sessions[name]
        await _until(lambda: session.state is State.OPEN, 20)
        total = most or int(rate * seconds)
        done = await _until(lambda: session.frames_in >= total + 1, seconds * 10 + 30)
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        caught_up = await _until(
            lambda: window.frames.model.rowCount() - rows_before >= total + 1
            or console.frames.next_id - store_before > console.frames.capacity,
            30,
        )
        view_s = time.perf_counter() - began
        stop.set()
        await prober
        await console.disconnect(name)
        await console.remove_session(name)
    finally:
        server.stop()
    return {
        "rate": rate,
        "frames": total,
        "received_all": done,
        "frames_per_s": round(total / elapsed) if done else None,
        # the whole process (GUI included): a figure load on other cores does not change
        "cpu_us_per_frame": round(cpu / total * 1e6, 2) if done else None,
        "view_caught_up": caught_up,
        "view_frames_per_s": round(total / view_s) if caught_up else None,
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": percentile(lags, 99),
        "lag_max_ms": max(lags) if lags else None,
        "probes": len(lags),
    }


async def _million(capp: Any, count: int) -> dict[str, Any]:
    from wsconsole.core.events import Direction, FrameRecord, Opcode

    proc = psutil.Process()
    console, window = capp.console, capp.window
    console.frames.clear()
    await asyncio.sleep(0.5)
    gc.collect()
    rss0 = proc.memory_info().rss
    began = time.perf_counter()
    wall = time.time()
    append = console.frames.append
    for i in range(count):
        payload = (
            b'{"type":"message","room":"room-%d","seq":%d,"id":"m%d","node":"n%d",'
            b'"ts":%.6f,"data":{"n":%d,"text":"frame payload"}}'
            % (i % 16, i + 1, i, i % 3, wall, i)
        )
        append(FrameRecord("bench", Direction.IN, Opcode.TEXT, payload, wall=wall))
        if i % 50_000 == 0:
            await asyncio.sleep(0)  # let the window breathe
    fill_s = time.perf_counter() - began
    caught_up = await _until(lambda: window.frames.model.rowCount() >= count, 60)
    await asyncio.sleep(0.5)
    gc.collect()
    rss1 = proc.memory_info().rss
    return {
        "frames": count,
        "held": len(console.frames),
        "view_rows": window.frames.model.rowCount(),
        "view_caught_up": caught_up,
        "fill_s": round(fill_s, 2),
        "rss_mb": round(rss1 / 2**20, 1),
        "rss_delta_mb": round((rss1 - rss0) / 2**20, 1),
        "bytes_per_frame": round((rss1 - rss0) / count),
    }


async def _main(size: dict[str, Any]) -> dict[str, Any]:
    from wsconsole.gui.app import ConsoleApp, GuiOptions

    settings = os.path.join(tempfile.mkdtemp(prefix="wsconsole-bench-"), "wsconsole.ini")
    capp = ConsoleApp(GuiOptions(harness=False, settings_path=settings))
    capp.start()
    try:
        await asyncio.sleep(0.5)
        # warm-up, not reported: the first session pays one-time costs (first paint of the
        # Frames table, lazy imports) that are not what a steady flood costs
        await _ingest(capp, 2000, 1.0)
        steps = [await _ingest(capp, int(rate), float(size["seconds"])) for rate in size["rates"]]
        most = await _ingest(capp, 0, 0.0, most=int(size["most"]))
        million = await _million(capp, int(size["million"]))
    finally:
        capp.window.close()
        await capp.shutdown()
    return {"ingest": steps, "most": most, "memory": million}


def main() -> int:
    """Run in a qasync loop made after the QApplication; print the JSON result."""
    import qasync

    from wsconsole.gui.app import collect_garbage_between_events, ensure_app

    size = json.loads(sys.argv[1])
    app = ensure_app()
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    try:
        with collect_garbage_between_events():  # as the window runs (gui/app.py)
            result = loop.run_until_complete(_main(size))
    finally:
        loop.close()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
