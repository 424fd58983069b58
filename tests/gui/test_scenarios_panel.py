"""The Scenarios panel: a shipped scenario run as a child process to its verdict, an invalid
file refused in place with its line, Stop and window close leaving no process behind.

Real `wsconsole scenario run` children with real clusters (broker, nodes, balancer), shrunk
with the time scale; PIDs are checked through /proc.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.support import SCALE, pid_alive, until
from tests.test_scenarios_shipped import SCHEDULE_SCALE
from wsconsole.app.console import Console
from wsconsole.app.scenariorun import RunProgress
from wsconsole.gui.panels.scenarios import ScenariosPanel
from wsconsole.scenarios.model import parse_scenario, shipped_scenarios

from .conftest import run

SMALL = """\
name = "small"
[cluster]
nodes = 2
[swarm]
clients = 4
rooms = 2
duration = 10
settle = 5
[[steps]]
at = 2
action = "kill"
node = "n1"
[[steps]]
at = 6
action = "restart"
node = "n1"
[[assertions]]
expect = "duplicated == 0"
[[assertions]]
name = "nothing lost"
expect = "lost == 0"
[[assertions]]
expect = "reconnected_within 3"
[[assertions]]
expect = "reconnects > 0"
"""


def _panel(tmp_path: Path) -> tuple[Console, ScenariosPanel, list[Any]]:
    console = Console(frame_capacity=1000)
    panel = ScenariosPanel(console, report_dir=tmp_path / "reports")
    opened: list[Any] = []
    panel.open_url = lambda url: opened.append(url) or True  # no browser in CI
    panel.resize(1100, 560)
    panel.show()
    return console, panel, opened


# -- the progress model alone ------------------------------------------------------------------


def test_progress_folds_runner_events() -> None:
    scenario = parse_scenario(SMALL, "small.toml")
    progress = RunProgress(scenario, scale=0.5)
    assert [s.at for s in progress.steps] == [1.0, 3.0]  # scaled plan
    assert progress.planned == 5.0
    assert [a.state for a in progress.assertions] == ["pending"] * 4
    progress.apply({"event": "phase", "phase": "swarm", "_mono": 100.0})
    assert progress.phase_text(now=101.0).startswith("ramp 1.0 / 5.0 s")
    live = [{"name": "duplicated == 0", "state": "holding"}]
    progress.apply({"event": "stats", "t": 1.0, "phase": "load", "assertions": live,
                    "reconnects": 0})
    assert progress.assertions[0].state == "passing"
    assert progress.assertions[1].state == "pending"  # not judged live
    assert progress.assertions[3].state == "pending"  # reconnects > 0: not yet
    progress.apply({"event": "stats", "t": 1.5, "phase": "load", "reconnects": 3})
    assert progress.assertions[3].state == "passing"  # met, and a counter never goes down
    assert progress.assertions[3].measured == 3  # the value so far
    live = [{"name": "duplicated == 0", "state": "violated"}]
    progress.apply({"event": "stats", "t": 2.0, "phase": "load", "assertions": live})
    assert progress.assertions[0].state == "failing"
    done = progress.apply({"event": "step", "t": 1.01, "label": "kill n1", "ok": True,
                           "detail": "node n1 kill", "line": scenario.steps[0].line})
    assert done is progress.steps[0] and done.status == "ok"
    assert progress.current_step() is done and progress.next_step() is progress.steps[1]
    progress.apply({"event": "step", "t": 3.0, "label": "restart n1", "ok": False,
                    "detail": "did not finish", "line": None})
    assert progress.steps[1].status == "failed"  # matched by label without a line
    progress.apply({"event": "assertion", "name": "duplicated == 0", "measured": 2,
                    "passed": False, "detail": "measured 2"})
    progress.apply({"event": "assertion", "name": "nothing lost", "measured": 0,
                    "passed": True, "detail": "measured 0"})
    assert progress.running
    progress.apply({"event": "result", "passed": False, "stopped": False, "t": 6.0})
    assert progress.running and progress.verdict is None  # the reports are being written
    progress.finished(1)
    assert not progress.running and progress.verdict == "FAILED"
    states = [(a.state, a.measured, a.detail) for a in progress.assertions]
    assert states == [("failed", 2, "measured 2"), ("passed", 0, "measured 0"),
                      ("failed", None, "not measured"), ("failed", None, "not measured")]


def test_progress_without_a_verdict_says_why() -> None:
    progress = RunProgress(parse_scenario(SMALL, "small.toml"), scale=1.0)
    progress.finished(1, "Traceback...\nOSError: no space left on device\n")
    assert progress.verdict == "FAILED"
    assert [s.status for s in progress.steps] == ["not run", "not run"]
    assert "code 1" in progress.errors[-1] and "no space left" in progress.errors[-1]
    assert {a.state for a in progress.assertions} == {"failed"}


# -- the panel with real runs ------------------------------------------------------------------


def test_shipped_scenario_runs_to_passed_with_markers_and_report(qloop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    console, panel, opened = _panel(tmp_path)
    seen: set[str] = set()

    async def scenario() -> None:
        assert panel.open_path(shipped_scenarios()["node-kill"])
        assert "valid" in panel.message.text() and panel.run_button.isEnabled()
        panel.scale_spin.setValue(SCHEDULE_SCALE)
        assert panel.run_scenario()
        assert not panel.run_button.isEnabled() and panel.source.isReadOnly()

        def watch() -> bool:
            seen.update(panel.assertion_states().values())
            return panel.progress is not None and panel.progress.verdict is not None

        await until(watch, "the scenario's verdict", 90, detail=lambda: panel.message.text())

    try:
        run(qloop, scenario(), 120)
    finally:
        run(qloop, console.shutdown(), 30)
    progress = panel.progress
    assert progress is not None and panel.run is not None
    assert progress.verdict == "PASSED", (panel.message.text(), progress.errors)
    assert panel.verdict_label.text() == "PASSED"
    states = panel.assertion_states()
    assert len(states) == 6 and set(states.values()) == {"passed"}, states
    # live states were shown while it ran: pending ones and live-judged ones passing
    assert {"pending", "passing"} <= seen, seen
    steps = [panel.steps_table.item(r, 2).text() for r in range(panel.steps_table.rowCount())]
    assert steps == ["ok", "ok"], progress.steps
    assert panel.progress_bar.value() == 1000
    # a marker per step on the Timeline (the plots' fault lines read the same markers)
    labels = [m.label for m in console.timeline.faults]
    assert "scenario: kill n1" in labels and "scenario: restart n1" in labels
    kill_at = next(m.at for m in console.timeline.faults if m.label == "scenario: kill n1")
    assert progress.t0_mono is not None
    assert abs(kill_at - (progress.t0_mono + 3 * SCHEDULE_SCALE)) < 1.0
    # the scenario swarm's figures reached the plot series
    assert console.series.last("conns.scenario") is not None
    # the report: written, openable
    report = panel.report_path()
    assert report is not None and report.parent == tmp_path / "reports"
    assert "node kill under load" in report.read_text(encoding="utf-8")
    assert panel.run.junit is not None and panel.run.junit.is_file()
    assert panel.report_button.isEnabled() and panel.open_report()
    assert opened and Path(opened[0].toLocalFile()) == report.resolve()
    # nothing left running: the child and every cluster process it reported
    assert panel.run.returncode == 0
    assert panel.run.cluster_pids and panel.run.pid is not None
    alive = [p for p in [*panel.run.cluster_pids, panel.run.pid] if pid_alive(p)]
    assert not alive, alive


def test_invalid_file_shows_line_and_reason_and_does_not_run(qloop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    console, panel, _ = _panel(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace("rooms = 2", 'rooms = "two"'), encoding="utf-8")
    assert not panel.open_path(bad)
    text = panel.message.text()
    assert "line 6" in text and "rooms must be an integer" in text, text
    assert not panel.run_button.isEnabled()
    assert not panel.run_scenario()
    assert panel.control.current is None and panel.progress is None
    highlighted = panel.source.extraSelections()
    assert highlighted and highlighted[0].cursor.blockNumber() == 5  # 0-based: line 6

    # a TOML syntax error names its line too
    broken = tmp_path / "broken.toml"
    broken.write_text(SMALL.replace("[[steps]]\nat = 6", "[[steps]\nat = 6"), encoding="utf-8")
    assert not panel.open_path(broken)
    assert "line 13" in panel.message.text() and "not valid TOML" in panel.message.text()

    # fixed in place: checked again, runnable, the edit is marked
    panel.source.setPlainText(SMALL)
    assert panel.validate()
    assert panel.run_button.isEnabled() and "(edited)" in panel.file_label.text()
    assert not panel.source.extraSelections()
    run(qloop, console.shutdown(), 30)


def _start_and_wait_for_cluster(panel: ScenariosPanel, name: str) -> Any:
    async def started() -> set[int]:
        assert panel.open_path(shipped_scenarios()[name])
        panel.scale_spin.setValue(1.0)
        assert panel.run_scenario()
        # the child reported its broker, balancer and nodes, and the swarm is on
        await until(lambda: panel.progress is not None and panel.progress.t0_mono is not None,
                    "the run's cluster and swarm", 60, detail=lambda: panel.message.text())
        assert panel.run is not None and panel.run.pid is not None
        pids = panel.run.pids()
        assert len(pids) >= 5, pids  # the child, broker, balancer, nodes
        return pids

    return started()


def test_stop_during_a_run_leaves_no_process(qloop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    console, panel, _ = _panel(tmp_path)

    async def scenario() -> set[int]:
        pids = await _start_and_wait_for_cluster(panel, "node-kill")
        assert panel.stop_button.isEnabled()
        assert panel.stop_scenario()
        await until(lambda: panel.progress is not None and panel.progress.verdict is not None,
                    "the stopped run's verdict", 40)
        return pids

    try:
        pids = run(qloop, scenario(), 100)
    finally:
        run(qloop, console.shutdown(), 30)
    assert panel.progress is not None and panel.progress.verdict == "STOPPED"
    assert panel.verdict_label.text() == "STOPPED"
    assert panel.run is not None and panel.run.returncode == 1  # stopped runs do not pass
    alive = [pid for pid in pids if pid_alive(pid)]
    assert not alive, f"still running after Stop: {alive}"


def test_closing_the_window_stops_a_running_scenario(qloop, tmp_path, settings_path) -> None:  # type: ignore[no-untyped-def]
    from wsconsole.gui.app import ConsoleApp, GuiOptions

    app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
    panel = app.window.scenarios
    panel.report_dir = tmp_path / "reports"

    async def scenario() -> set[int]:
        app.start()
        try:
            pids = await _start_and_wait_for_cluster(panel, "heartbeat-loss")
            assert pids <= app.console.started_pids()
            app.window.close()
            assert app.closed.is_set()
        finally:
            await app.shutdown()
        return pids

    pids = run(qloop, scenario(), 100)
    alive = [pid for pid in pids | app.console.started_pids() if pid_alive(pid)]
    assert not alive, f"still running after close: {alive}"


def test_stop_kills_a_child_that_ignores_sigterm(qloop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The SIGKILL fallback, with a real child that ignores SIGTERM (not a scenario)."""
    import sys

    from wsconsole.app.scenariorun import ScenarioRun

    class Stubborn(ScenarioRun):
        def argv(self) -> list[str]:
            code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                    "print('{\"event\": \"phase\", \"phase\": \"starting\"}', flush=True);"
                    "time.sleep(60)")
            return [sys.executable, "-c", code]

    async def scenario() -> tuple[int | None, int | None]:
        stubborn = Stubborn(tmp_path / "x.toml", 1.0, tmp_path / "r.html")
        await stubborn.start()
        await until(lambda: len(stubborn.buffer) == 1, "the stubborn child's one line", 20)
        code = await stubborn.stop(grace=0.2, timeout=0.5)
        await asyncio.wait_for(stubborn.exited.wait(), 10 * SCALE)
        return stubborn.pid, code

    pid, code = run(qloop, scenario(), 30)
    assert code == -9
    assert pid is not None and not pid_alive(pid)


def test_long_lines_are_read_and_the_exit_is_seen(qloop, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A result line far beyond asyncio's default 64 KiB line limit still arrives whole."""
    import sys

    from wsconsole.app.scenariorun import ScenarioRun

    class Chatty(ScenarioRun):
        def argv(self) -> list[str]:
            code = ("import json; print(json.dumps({'event': 'result', 'passed': True, "
                    "'steps': ['x' * 100 for _ in range(3000)]}));"
                    "print(json.dumps({'event': 'phase', 'phase': 'after'}))")
            return [sys.executable, "-c", code]

    async def scenario() -> ScenarioRun:
        chatty = Chatty(tmp_path / "x.toml", 1.0, tmp_path / "r.html")
        await chatty.start()
        await asyncio.wait_for(chatty.exited.wait(), 20 * SCALE)
        return chatty

    chatty = run(qloop, scenario(), 30)
    events = chatty.drain()
    assert [e["event"] for e in events] == ["result", "phase"]
    assert chatty.result is not None and len(chatty.result["steps"]) == 3000
    assert chatty.returncode == 0 and not chatty.running and not chatty.buffer
