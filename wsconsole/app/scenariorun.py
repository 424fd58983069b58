"""Headless side of the Scenarios panel: a scenario run as a child process, and its progress.

The window runs `wsconsole scenario run FILE --json --report R --junit J --scale S` as a CHILD
process (like the demo swarm), so the scenario's cluster and swarm never compete with the
window's event loop. `ScenarioRun` reads its JSON lines on the asyncio loop into a bounded
buffer; the panel pulls the buffer on a timer (no Qt signal per line) and folds the events
into a `RunProgress` (plain state, no Qt, no I/O: testable by feeding it dicts).

Stop is SIGTERM (the runner ends the load, still judges and stops its cluster), a second
SIGTERM skips the settle phase, and SIGKILL follows if the child lingers; the cluster's own
children die with it (PDEATHSIG). `ScenarioControl` owns the current run; the console adopts
it so closing the window stops a running scenario.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from wsconsole.core.tasks import Tasks
from wsconsole.harness import procs
from wsconsole.scenarios.model import Scenario

log = logging.getLogger(__name__)

PENDING, PASSING, FAILING, PASSED, FAILED = "pending", "passing", "failing", "passed", "failed"
NOT_RUN = "not run"
LINE_LIMIT = 16 << 20  # longest JSON line read from the child (a result with many steps)
LIVE_STATES = {"holding": PASSING, "violated": FAILING}
GROWING = frozenset({"reconnects", "sent", "acknowledged", "delivered", "duplicated",
                     "out_of_order"})  # swarm counters in the stats lines that never go down


# -- progress: pure state ---------------------------------------------------------------------


@dataclass(slots=True)
class AssertionView:
    """One assertion as the panel shows it: its state moves pending -> passing/failing ->
    passed/failed, with the measured value once judged."""

    name: str
    expect: str
    line: int | None
    state: str = PENDING
    measured: Any = None
    detail: str = ""


@dataclass(slots=True)
class StepView:
    """One timed step: planned time (already scaled), then when it ran and how it went."""

    at: float
    label: str
    line: int | None
    note: str | None = None
    status: str = PENDING  # pending, ok, failed, not run
    t: float | None = None
    detail: str = ""


class RunProgress:
    """Folds the runner's events (the `scenario run --json` shapes) into what the panel shows."""

    def __init__(self, scenario: Scenario, scale: float) -> None:
        self.scenario = scenario
        self.scale = scale
        self.phase = "starting"  # runner phases, then "done"
        self.swarm_phase: str | None = None  # ramp, load, settle (from the stats lines)
        self.load_s = scenario.load_seconds * scale
        self.settle_s = scenario.settle_seconds * scale
        self.steps = [
            StepView(s.at * scale, s.describe(), s.line, s.note) for s in scenario.steps
        ]
        self.assertions = [
            AssertionView(a.label, a.expect, a.line) for a in scenario.assertions
        ]
        # "reconnects > 0" on a counter that only grows: once met it stays met, so it can
        # show as passing while the run goes on (the runner judges the "<" kind live)
        self._growing = {
            index: a for index, a in enumerate(scenario.assertions)
            if a.kind == "compare" and a.metric in GROWING and a.op in (">", ">=")
        }
        self.stats: dict[str, Any] = {}
        self.result: dict[str, Any] | None = None
        self.errors: list[str] = []
        self.t = 0.0  # the newest scenario-clock time seen (0 = the swarm started)
        self.t0_mono: float | None = None  # local monotonic time of scenario t = 0
        self.url: str | None = None
        self.exit_code: int | None = None
        self.version = 0

    # -- folding --

    def apply(self, event: dict[str, Any]) -> StepView | None:
        """Take one event; returns the StepView when the event finished a step (for markers)."""
        kind = event.get("event")
        done: StepView | None = None
        t = event.get("t")
        if isinstance(t, int | float) and not isinstance(t, bool):
            self.t = max(self.t, float(t))
        if kind == "phase":
            if event.get("phase") != "done":  # done means the child exited (finished())
                self.phase = str(event.get("phase"))
            if self.phase == "swarm":
                self.t0_mono = event.get("_mono", time.monotonic())
            elif self.phase == "cluster_ready":
                self.url = event.get("url")
        elif kind == "stats":
            self.stats = event
            self.swarm_phase = event.get("phase") or self.swarm_phase
            for index, assertion in self._growing.items():
                view = self.assertions[index]
                if view.state == PENDING and assertion.evaluate(event).passed:
                    view.state = PASSING
            for live in event.get("assertions") or ():
                view = self._assertion(str(live.get("name")), final=False)
                if view is not None and view.state in (PENDING, PASSING, FAILING):
                    view.state = LIVE_STATES.get(str(live.get("state")), view.state)
            for view, assertion in zip(self.assertions, self.scenario.assertions, strict=True):
                if view.state in (PASSING, FAILING) and assertion.kind != "reconnected_within":
                    view.measured = assertion.evaluate(event).measured  # so far
        elif kind == "step":
            done = self._step(event)
            if done is not None:
                done.status = "ok" if event.get("ok") else "failed"
                done.t = float(event.get("t") or 0.0)
                done.detail = str(event.get("detail") or "")
        elif kind == "assertion":
            view = self._assertion(str(event.get("name")), final=True)
            if view is not None:
                view.state = PASSED if event.get("passed") else FAILED
                view.measured = event.get("measured")
                view.detail = str(event.get("detail") or "")
        elif kind == "error":
            self.errors.append(str(event.get("detail")))
        elif kind == "result":  # judged; the child still writes its reports, then exits
            self.result = event
            self.phase = "reporting"
            for view in self.assertions:  # not judged at all: the run could not measure it
                if view.state not in (PASSED, FAILED):
                    view.state = FAILED
                    view.detail = view.detail or "not measured"
        else:
            return None
        self.version += 1
        return done

    def finished(self, exit_code: int | None, stderr: str = "") -> None:
        """The child exited; without a result line the run failed (say why)."""
        self.exit_code = exit_code
        self.phase = "done"
        for step in self.steps:  # cut off by the end of the load or a stop: say so
            if step.status == PENDING:
                step.status = NOT_RUN
                step.detail = "no outcome: the run ended first"
        why = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if self.result is not None and self.result.get("passed") and exit_code != 0:
            self.errors.append(f"the scenario passed but exited with code {exit_code}"
                               f"{': ' + why if why else ''}")
        if self.result is None:
            self.errors.append(f"the scenario process exited with code {exit_code} "
                               f"without a verdict{': ' + why if why else ''}")
            for view in self.assertions:
                if view.state not in (PASSED, FAILED):
                    view.state = FAILED
                    view.detail = view.detail or "not measured"
        self.version += 1

    def _assertion(self, name: str, final: bool) -> AssertionView | None:
        candidates = [a for a in self.assertions if a.name == name]
        if final:  # the first one with this label not judged yet
            candidates = [a for a in candidates if a.state not in (PASSED, FAILED)]
        return candidates[0] if candidates else None

    def _step(self, event: dict[str, Any]) -> StepView | None:
        line, label = event.get("line"), event.get("label")
        for view in self.steps:
            if view.status == PENDING and line is not None and view.line == line:
                return view
        for view in self.steps:
            if view.status == PENDING and view.label == label:
                return view
        return None

    # -- reading --

    @property
    def running(self) -> bool:
        """True until the verdict (or the child's exit) arrived."""
        return self.phase != "done"

    @property
    def verdict(self) -> str | None:
        """"PASSED", "FAILED", "STOPPED" once done, else None."""
        if self.phase != "done":
            return None
        if self.result is not None and self.result.get("passed") and self.exit_code == 0:
            return "PASSED"
        if self.result is not None and self.result.get("stopped"):
            return "STOPPED"
        return "FAILED"

    def elapsed(self, now: float | None = None) -> float:
        """Seconds on the scenario clock: smooth while running, the last event's time after."""
        if self.t0_mono is None:
            return 0.0
        if self.phase == "done" or self.result is not None:
            return self.t
        now = time.monotonic() if now is None else now
        return max(self.t, now - self.t0_mono)

    @property
    def planned(self) -> float:
        """Planned seconds of load (the settle phase after it is 'up to', not planned)."""
        return self.load_s

    def current_step(self) -> StepView | None:
        """The step carried out last, or None before the first."""
        done = [s for s in self.steps if s.status != PENDING]
        return max(done, key=lambda s: s.t or 0.0) if done else None

    def next_step(self) -> StepView | None:
        """The next step still to come."""
        pending = [s for s in self.steps if s.status == PENDING]
        return min(pending, key=lambda s: s.at) if pending else None

    def phase_text(self, now: float | None = None) -> str:
        """A one-line progress text such as 'load 3.2 / 4.0 s'."""
        if self.phase == "done":
            return f"done in {self.elapsed(now):.1f} s: {self.verdict}"
        if self.t0_mono is None:
            return {"starting": "starting the scenario process", "cluster": "starting the cluster",
                    "cluster_ready": "cluster ready, starting the swarm"}.get(
                        self.phase, self.phase)
        elapsed = self.elapsed(now)
        if self.phase in ("judging", "cluster_stopping", "reporting"):
            return f"{self.phase.replace('_', ' ')} at {elapsed:.1f} s"
        stage = self.swarm_phase or "ramp"
        if elapsed > self.load_s or stage == "settle":
            return f"settle {elapsed - self.load_s:.1f} s (up to {self.settle_s:.1f} s)"
        return f"{stage} {elapsed:.1f} / {self.load_s:.1f} s"


# -- the child process --------------------------------------------------------------------------


def _start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (Linux /proc), to recognise the same process later."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[-1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


class ScenarioRun:
    """One `wsconsole scenario run` child: its JSON lines in a bounded buffer, stop, PIDs."""

    def __init__(
        self,
        path: str | Path,
        scale: float,
        report: str | Path,
        junit: str | Path | None = None,
        buffer_limit: int = 20_000,
        stderr_lines: int = 40,
    ) -> None:
        self.path = Path(path)
        self.scale = scale
        self.report = Path(report)
        self.junit = Path(junit) if junit is not None else None
        self.buffer: deque[dict[str, Any]] = deque(maxlen=buffer_limit)
        self.dropped = 0  # lines that fell out of a full buffer (the panel pulls 5x a second)
        self.stderr_lines = stderr_lines
        self.child: procs.Child | None = None
        self.exited = asyncio.Event()  # the child exited and all of its output was read
        self.returncode: int | None = None
        self.result: dict[str, Any] | None = None
        self.cluster_pids: dict[int, int] = {}  # pid -> start time, as the child reported them
        self._stopping = 0

    def argv(self) -> list[str]:
        """The child's command line (built by procs.child_argv, as every child's is)."""
        args = [str(self.path), "--json", "--scale", repr(self.scale), "--report",
                str(self.report)]
        if self.junit is not None:
            args += ["--junit", str(self.junit)]
        return procs.child_argv("scenario", "run", *args)

    async def start(self, tasks: Tasks | None = None) -> None:
        """Start the child (harness/procs.py) and the task reading its output, kept by
        `tasks` (whose owner hears of a failure; a module-wide keeper logs it otherwise)."""
        if self.child is not None:
            raise RuntimeError("this run was already started")
        self.child = await procs.spawn(self.argv(), "scenario", stderr_lines=self.stderr_lines,
                                       limit=LINE_LIMIT, tasks=tasks)
        (tasks or _TASKS).spawn(self._read(self.child), "scenario-reader")

    @property
    def pid(self) -> int | None:
        """The child's PID once started."""
        return None if self.child is None else self.child.pid

    @property
    def running(self) -> bool:
        """Started and not yet exited (`exited` is set later, once its output is all read)."""
        return self.child is not None and self.child.alive

    def drain(self) -> list[dict[str, Any]]:
        """Every buffered event, oldest first, emptying the buffer (the panel's timer pull)."""
        items = list(self.buffer)
        self.buffer.clear()
        return items

    def pids(self) -> set[int]:
        """The child's PID and the cluster PIDs it reported that are still the same process."""
        pids = {pid for pid, started in self.cluster_pids.items() if _start_time(pid) == started}
        if self.child is not None and self.child.alive:
            pids.add(self.child.pid)
        return pids

    async def _read(self, child: procs.Child) -> None:
        try:
            async for line in child.lines():
                self._take(line)
            await child.wait()
        finally:
            if child.returncode is not None:
                self.returncode = child.returncode
                self.exited.set()

    def _take(self, line: bytes) -> None:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(record, dict):
            return
        record["_mono"] = time.monotonic()
        record["_wall"] = time.time()
        self._note_pid(record)
        if record.get("event") == "result":
            self.result = record
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
        self.buffer.append(record)

    def _note_pid(self, record: dict[str, Any]) -> None:
        pid = record.get("pid")
        if record.get("event") != "cluster_event" or not isinstance(pid, int) or pid <= 0:
            return
        if record.get("state") in ("running", "up", "starting"):
            started = _start_time(pid)
            if started is not None:
                self.cluster_pids[pid] = started

    def terminate(self) -> bool:
        """SIGTERM the child: the first ends the load, the second skips the settle phase."""
        if self.child is None or not self.running:
            return False
        self.child.send_signal(signal.SIGTERM)
        self._stopping += 1
        return True

    async def stop(self, grace: float = 2.0, timeout: float = 10.0) -> int | None:
        """SIGTERM, a second SIGTERM after `grace`, SIGKILL after `timeout`; then make sure the
        cluster processes it reported are gone. Returns the exit code."""
        child = self.child
        if child is None:
            return None
        if self.running and self.result is not None:  # judged: let it write its reports
            await child.wait(timeout)
        if self.running:
            if self._stopping == 0:
                self.terminate()
            if not await child.wait(grace):
                self._stopping += 1
                await child.stop(signal.SIGTERM, timeout)
        self.returncode = child.returncode
        for pid in self.pids():  # orphans left by a killed runner (no PDEATHSIG off Linux)
            if pid != child.pid:
                procs.kill_group(pid)
        return self.returncode

    def stderr_text(self) -> str:
        """The last lines the child wrote to stderr."""
        if self.child is None:
            return ""
        lines = list(self.child.stderr_tail)
        if self.child.skipped_lines:
            lines.append(f"wsconsole: {self.child.skipped_lines} output lines from the scenario "
                         "were too long to read")
        return "\n".join(lines)


_TASKS = Tasks("wsconsole")


class ScenarioControl:
    """Owns the current scenario run; the console adopts it (its PIDs, stopped on close)."""

    def __init__(self, tasks: Tasks | None = None) -> None:
        self.tasks = tasks
        self.current: ScenarioRun | None = None
        self.closed = False  # the console is shutting down: no new runs

    @property
    def running(self) -> bool:
        """A scenario child is running now."""
        return self.current is not None and self.current.running

    async def start(self, run: ScenarioRun) -> ScenarioRun:
        """Start `run` (one at a time: RuntimeError while another runs)."""
        if self.closed:
            raise RuntimeError("the console is closing")
        if self.running:
            raise RuntimeError("a scenario is already running")
        self.current = run
        await run.start(self.tasks)
        if self.closed:  # the window closed while the child was starting
            await run.stop(grace=0.5)
        return run

    def pids(self) -> set[int]:
        """PIDs of the running scenario (the child and its cluster)."""
        return set() if self.current is None else self.current.pids()

    async def stop(self, grace: float = 0.5, timeout: float = 10.0) -> None:
        """Stop the running scenario, if any, and take no more (the console calls this when
        the window closes)."""
        self.closed = True
        if self.current is not None:
            await self.current.stop(grace=grace, timeout=timeout)


__all__ = [
    "FAILED",
    "FAILING",
    "NOT_RUN",
    "PASSED",
    "PASSING",
    "PENDING",
    "AssertionView",
    "RunProgress",
    "ScenarioControl",
    "ScenarioRun",
    "StepView",
]
