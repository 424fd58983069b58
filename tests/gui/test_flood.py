"""A flood of 5,000 frames/s for a few seconds keeps the window responsive (lag probe).

What the window guarantees under a flood: the Qt thread keeps answering. 99 % of the time
it is late by less than 150 ms (typically 20-40 ms), and it never stalls for 250 ms, well
short of what a user takes for a freeze. The bounds are on the lag the window causes, not
the lag the machine causes: a probe sleeps 5 ms on the event loop and records how late it
wakes; on Linux the time the OS kept the ready thread waiting for a CPU
(/proc/thread-self/schedstat) is taken off, so other processes on a loaded machine do not
count, while work and blocking calls on the Qt thread do. Elsewhere the raw lag is used.

Measured on the shared 2-core machine over 50 runs at load averages from 3 to 12: own lag
p99 13-50 ms and max 39-78 ms while more than 100 probes fired; with 4-6 runnable processes
per core (15-100 probes, so p99 is about the max) p99 up to 108 ms and max up to 170 ms.
The raw wall-clock lag reached 700 ms in those runs. Checked that the bounds bite: 300 ms
of work or a 300 ms blocking call on the Qt thread fails the max, eight 120 ms stalls the
p99.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from tests.support import SCALE, until
from wsconsole.app.profiles import Profile
from wsconsole.core.lifecycle import State
from wsconsole.gui.app import ConsoleApp, GuiOptions

from .conftest import run, start_server

RATE = 5000
SECONDS = 3.0
PROBE = 0.005  # s a probe sleeps: several hundred probes over the flood, enough for a p99
P99_LAG = 0.150 * SCALE
MAX_LAG = 0.250 * SCALE
SCHEDSTAT = Path("/proc/thread-self/schedstat")


def cpu_wait() -> float:
    """Seconds this thread has spent ready to run but waiting for a CPU (0 where unknown)."""
    try:
        return int(SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class LagProbe:
    """How late a short sleep on the event loop wakes: `wall` as measured, `own` without the
    time the OS kept this thread off the CPU (the lag the window itself caused)."""

    def __init__(self, interval: float = PROBE) -> None:
        self.interval = interval
        self.wall: list[float] = []
        self.own: list[float] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        """Probe until `stop` is set."""
        while not self.stop.is_set():
            began, waited = time.perf_counter(), cpu_wait()
            await asyncio.sleep(self.interval)
            late = time.perf_counter() - began - self.interval
            self.wall.append(late)
            self.own.append(max(0.0, late - (cpu_wait() - waited)))

    @staticmethod
    def p99(lags: list[float]) -> float:
        """The 99th percentile of `lags` (linear interpolation between probes)."""
        return statistics.quantiles(lags, n=100, method="inclusive")[98]


def test_flood_keeps_ui_responsive(qloop, procs, settings_path) -> None:  # type: ignore[no-untyped-def]
    port = start_server(
        procs,
        ["-m", "tests.gui.floodserver", "--port", "0", "--rate", str(RATE),
         "--seconds", str(SECONDS)],
    )
    probe = LagProbe()

    async def scenario() -> float:
        app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
        app.start()
        w = app.window
        try:
            app.console.add_session(Profile(name="flood", url=f"ws://127.0.0.1:{port}/"))
            w.connection.sync_list()
            probe_task = asyncio.get_running_loop().create_task(probe.run())
            began = time.perf_counter()
            await app.console.connect("flood")
            session = app.console.sessions["flood"]
            await until(lambda: session.state is State.OPEN, "the flood session to open", 10)
            total = int(RATE * SECONDS)
            # half way, the user scrolls up: follow-tail lets go and the view stays put
            await until(lambda: w.frames.model.rowCount() > total // 3,
                        "a third of the flood in the table", 20)
            w.frames.table.verticalScrollBar().setValue(10)
            scrolled_at = w.frames.model.rowCount()
            await until(lambda: w.frames.model.rowCount() > scrolled_at,
                        "more frames pulled into the table after the scroll", 10)
            assert not w.frames.follow_button.isChecked()
            assert w.frames.table.verticalScrollBar().value() == 10
            await until(lambda: session.frames_in >= total + 1, "every flood frame received", 30)
            elapsed = time.perf_counter() - began
            await until(lambda: w.frames.model.rowCount() >= total + 1,
                        "every flood frame in the table", 5)
            probe.stop.set()
            await probe_task
            # the view kept up with the store and the bounded store kept every frame
            assert len(app.console.frames) >= total + 1
            assert app.console.frames.dropped == 0
            return elapsed
        finally:
            w.close()
            await app.shutdown()

    elapsed = run(qloop, scenario(), 90)
    wall, own = probe.wall, probe.own
    print(
        f"\nflood {RATE}/s x {SECONDS:.0f} s received in {elapsed:.1f} s; {len(own)} probes; "
        f"own lag p50 {statistics.median(own) * 1000:.1f} ms, p99 {probe.p99(own) * 1000:.1f} "
        f"ms, max {max(own) * 1000:.1f} ms; wall-clock p99 {probe.p99(wall) * 1000:.1f} ms, "
        f"max {max(wall) * 1000:.1f} ms"
    )
    assert len(own) >= 10, "the probe hardly ran: the event loop was not turning"
    assert probe.p99(own) < P99_LAG, sorted(own)[-10:]
    assert max(own) < MAX_LAG, sorted(own)[-10:]
