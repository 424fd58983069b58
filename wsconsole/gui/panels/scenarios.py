"""Scenarios panel: open a scenario (a file or a shipped one), check it in place, run, stop,
follow its progress and live assertion states, mark each step on the Timeline and the plots,
open the HTML report.

The run is a child process (app/scenariorun.py: `wsconsole scenario run ... --json`); a 5 Hz
timer pulls its buffered events, folds them into a RunProgress and repaints only what changed.
Each step becomes a Timeline fault marker ("scenario: kill n1"), which the plots' fault lines
show too; the scenario swarm's figures are added to the plot series (`*.scenario`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QStandardPaths, Qt, QTimer, QUrl
from PySide6.QtGui import QColor, QDesktopServices, QTextCursor, QTextFormat
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console
from wsconsole.app.scenariorun import (
    FAILED,
    FAILING,
    NOT_RUN,
    PASSED,
    PASSING,
    PENDING,
    RunProgress,
    ScenarioControl,
    ScenarioRun,
)
from wsconsole.gui.tables import row_table, set_text
from wsconsole.gui.theme import mono
from wsconsole.scenarios.model import Scenario, ScenarioError, parse_scenario, shipped_scenarios

STATE_COLORS = {
    PENDING: "#7a7a7a",
    PASSING: "#6fbf73",
    FAILING: "#e67e22",
    PASSED: "#2e9e44",
    FAILED: "#c0392b",
    "ok": "#2e9e44",
    "running": "#1f77b4",
    NOT_RUN: "#d9822b",
}
VERDICT_COLORS = {"PASSED": "#2e9e44", "FAILED": "#c0392b", "STOPPED": "#d9822b"}
STEP_COLUMNS = ("At", "Step", "Status", "Detail")
ASSERT_COLUMNS = ("Assertion", "State", "Measured", "Detail")
SHIPPED_PLACEHOLDER = "shipped scenarios\u2026"


def default_report_dir() -> Path:
    """Where reports go: the user's local app data dir (…/wsconsole/reports), else temp."""
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppLocalDataLocation)
    return Path(base) / "reports" if base else Path(tempfile.gettempdir()) / "wsconsole-reports"


def _table(columns: tuple[str, ...]) -> QTableWidget:
    return row_table(columns, selectable=False)


def _set(table: QTableWidget, row: int, col: int, text: str, color: str | None = None) -> None:
    item = set_text(table, row, col, text)
    if color is not None:
        item.setBackground(QColor(color))
        item.setForeground(QColor("white"))
        item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)


def _measured(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ScenariosPanel(QWidget):
    """File/shipped picker, the checked source, Run/Stop/Open report, progress and verdicts."""

    def __init__(self, console: Console, report_dir: str | Path | None = None,
                 parent: QWidget | None = None, refresh_ms: int = 200) -> None:
        super().__init__(parent)
        self.console = console
        self.control = ScenarioControl(console.tasks)
        console.adopt(self.control)  # closing the window stops a running scenario
        self.report_dir = Path(report_dir) if report_dir is not None else default_report_dir()
        self.open_url: Callable[[QUrl], Any] = QDesktopServices.openUrl
        self.path: Path | None = None
        self.saved_text = ""
        self.scenario: Scenario | None = None
        self.error: ScenarioError | None = None
        self.run: ScenarioRun | None = None
        self.progress: RunProgress | None = None
        self._seen_version = -1
        self._stop_task: Any = None

        from wsconsole.scenarios.runner import scale_from_env

        try:
            scale = scale_from_env()
        except ValueError:
            scale = 1.0
        self.shipped = shipped_scenarios()
        self.shipped_box = QComboBox()
        self.shipped_box.addItem(SHIPPED_PLACEHOLDER)
        self.shipped_box.addItems(sorted(self.shipped))
        self.shipped_box.activated.connect(self._shipped_chosen)
        self.open_button = QPushButton("Open\u2026")
        self.open_button.clicked.connect(self.choose_file)
        self.scale_spin = QDoubleSpinBox(minimum=0.05, maximum=20.0, singleStep=0.1,
                                         decimals=2, value=scale)
        self.scale_spin.setToolTip("multiplies every scheduled time (steps, load, settle)")
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run_scenario)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_scenario)
        self.report_button = QPushButton("Open report")
        self.report_button.clicked.connect(self.open_report)
        bar = QHBoxLayout()
        bar.addWidget(self.shipped_box)
        bar.addWidget(self.open_button)
        bar.addWidget(QLabel("time scale"))
        bar.addWidget(self.scale_spin)
        bar.addWidget(self.run_button)
        bar.addWidget(self.stop_button)
        bar.addWidget(self.report_button)
        bar.addStretch(1)

        self.file_label = QLabel("no scenario open")
        self.file_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.source = QPlainTextEdit()
        self.source.setFont(mono())
        self.source.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.source.setPlaceholderText("open a scenario file or pick a shipped one")
        self._check_timer = QTimer(self, singleShot=True, interval=300)
        self._check_timer.timeout.connect(self.validate)
        self.source.textChanged.connect(self._check_timer.start)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.file_label)
        left_layout.addWidget(self.source, 1)
        left_layout.addWidget(self.message)

        self.verdict_label = QLabel("")
        self.phase_label = QLabel("")
        self.progress_bar = QProgressBar(minimum=0, maximum=1000, textVisible=False)
        self.progress_bar.setMaximumHeight(12)
        self.step_label = QLabel("")
        self.step_label.setWordWrap(True)
        self.stats_label = QLabel("")
        self.stats_label.setWordWrap(True)
        self.steps_table = _table(STEP_COLUMNS)
        self.assert_table = _table(ASSERT_COLUMNS)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        head.addWidget(self.verdict_label)
        head.addWidget(self.phase_label, 1)
        right_layout.addLayout(head)
        right_layout.addWidget(self.progress_bar)
        right_layout.addWidget(self.step_label)
        tables = QSplitter(Qt.Orientation.Vertical)  # the dock may be short: let the user share
        tables.addWidget(self.steps_table)
        tables.addWidget(self.assert_table)
        tables.setStretchFactor(0, 2)
        tables.setStretchFactor(1, 3)
        right_layout.addWidget(tables, 1)
        right_layout.addWidget(self.stats_label)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.splitter, 1)

        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self._buttons()

    # -- opening and checking ----------------------------------------------------------------

    def _shipped_chosen(self, index: int) -> None:
        name = self.shipped_box.itemText(index)
        if name in self.shipped:
            self.open_path(self.shipped[name])
        self.shipped_box.setCurrentIndex(0)

    def choose_file(self) -> None:
        """The file dialog; opens what the user picked."""
        start = str(self.path.parent) if self.path else str(Path.cwd())
        name, _ = QFileDialog.getOpenFileName(self, "Open a scenario", start,
                                              "Scenarios (*.toml);;All files (*)")
        if name:
            self.open_path(name)

    def open_path(self, path: str | Path) -> bool:
        """Show a scenario file and check it; True when it is valid (ready to run)."""
        if self.control.running:
            self._say("a scenario is running: stop it first", error=True)
            return False
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._say(f"cannot read {path}: {exc}", error=True)
            return False
        self.path = path
        self.saved_text = text
        self.source.blockSignals(True)
        self.source.setPlainText(text)
        self.source.blockSignals(False)
        return self.validate()

    def validate(self) -> bool:
        """Check the text shown (as `scenario check` does): the line and reason, in place."""
        self._check_timer.stop()
        if self.path is None:
            return False
        text = self.source.toPlainText()
        edited = " (edited)" if text != self.saved_text else ""
        try:
            self.scenario = parse_scenario(text, str(self.path))
            self.error = None
        except ScenarioError as exc:
            self.scenario, self.error = None, exc
        if self.error is not None:
            where = f"line {self.error.line}: " if self.error.line else ""
            self._say(f"invalid \u2014 {where}{self.error.reason}", error=True)
            self.file_label.setText(f"{self.path.name}{edited}")
            self._highlight(self.error.line)
        else:
            sc = self.scenario
            assert sc is not None
            self._say(f"valid \u2014 {len(sc.steps)} steps, {len(sc.assertions)} assertions, "
                      f"{sc.load_text()}")
            self.file_label.setText(f"<b>{sc.name}</b> \u2014 {self.path.name}{edited}")
            self._highlight(None)
        self._buttons()
        return self.error is None

    def _highlight(self, line: int | None) -> None:
        if line is None:
            self.source.setExtraSelections([])
            return
        block = self.source.document().findBlockByNumber(line - 1)
        selection = QTextEdit.ExtraSelection()
        selection.format.setBackground(QColor("#f5c6c0"))
        selection.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
        cursor = QTextCursor(block)
        selection.cursor = cursor
        self.source.setExtraSelections([selection])
        self.source.setTextCursor(cursor)
        self.source.centerCursor()

    def _say(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(f"color: {'#c0392b' if error else '#2e7d32'};")

    # -- running -----------------------------------------------------------------------------

    def can_run(self) -> bool:
        """A valid scenario is open and none is running."""
        return self.scenario is not None and self.error is None and not self.control.running \
            and (self.progress is None or not self.progress.running)

    def run_scenario(self) -> bool:
        """Start the open scenario as a child process; False (and why) if it cannot run."""
        self.validate()
        if not self.can_run() or self.path is None or self.scenario is None:
            if self.error is None and self.path is not None:
                self._say("a scenario is already running", error=True)
            return False
        try:
            self.report_dir.mkdir(parents=True, exist_ok=True)
            target = self.path
            text = self.source.toPlainText()
            stamp = time.strftime("%Y%m%d-%H%M%S")
            base = self.report_dir / f"{self.path.stem}-{stamp}"
            if text != self.saved_text:  # run what is shown, not what is on disk
                target = base.with_suffix(".toml")
                target.write_text(text, encoding="utf-8")
        except OSError as exc:
            self._say(f"cannot write to {self.report_dir}: {exc}", error=True)
            return False
        scale = float(self.scale_spin.value())
        self.run = ScenarioRun(target, scale, base.with_suffix(".html"),
                               base.with_suffix(".xml"))
        self.progress = RunProgress(self.scenario, scale)
        self._seen_version = -1
        self._stop_task = None
        self._say(f"running {self.scenario.name!r} (time scale {scale:g}); report: "
                  f"{self.run.report}")
        self.console.spawn(self._start(self.run), "scenario start")
        self._buttons()
        self.render()
        return True

    async def _start(self, run: ScenarioRun) -> None:
        try:
            await self.control.start(run)
        except Exception as exc:
            if self.progress is not None:
                self.progress.finished(None, f"{type(exc).__name__}: {exc}")
            self._say(f"the scenario could not start: {exc}", error=True)
            self.console.errors.report(f"scenario: could not start: {exc}", exc)

    def stop_scenario(self) -> bool:
        """Stop: the load ends and the verdict is still given; pressed again, the settle phase
        is skipped; a child that does not stop is killed."""
        run = self.run
        if run is None or not run.running:
            return False
        if self._stop_task is None:
            self._say("stopping: the load ends, the cluster is stopped, a verdict follows")
            self._stop_task = self.console.spawn(run.stop(grace=3.0, timeout=10.0),
                                                 "scenario stop")
        else:
            run.terminate()
            self._say("stopping now (settle skipped)")
        self._buttons()
        return True

    def open_report(self) -> bool:
        """Open the HTML report of the last run in the user's browser."""
        run = self.run
        if run is None or not run.report.is_file():
            return False
        return bool(self.open_url(QUrl.fromLocalFile(str(run.report.resolve()))))

    def report_path(self) -> Path | None:
        """The last run's HTML report, once it exists."""
        run = self.run
        return run.report if run is not None and run.report.is_file() else None

    def _buttons(self) -> None:
        running = self.progress is not None and self.progress.running
        self.run_button.setEnabled(self.can_run())
        self.stop_button.setEnabled(running and self.run is not None and self.run.running)
        self.report_button.setEnabled(not running and self.report_path() is not None)
        for widget in (self.open_button, self.shipped_box):
            widget.setEnabled(not running)
        self.source.setReadOnly(running)  # what runs stays readable, not greyed out

    # -- following the run -------------------------------------------------------------------

    def refresh(self) -> None:
        """Timer tick: pull the buffered events, fold them, mark steps, repaint."""
        run, progress = self.run, self.progress
        if run is None or progress is None:
            return
        exited = run.exited.is_set()
        for event in run.drain():
            self._take(progress, event)
        if exited and progress.exit_code is None:
            progress.finished(run.returncode, run.stderr_text())
            verdict = progress.verdict or "FAILED"
            report = run.report if run.report.is_file() else None
            text = f"{verdict}: {progress.scenario.name}"
            text += f" \u2014 report {report}" if report else " \u2014 no report was written"
            if progress.errors:
                text += f"\n{progress.errors[-1]}"
            self._say(text, error=verdict != "PASSED")
            self.console.errors.info(f"scenario {progress.scenario.name!r}: {verdict}")
        if progress.running or progress.version != self._seen_version:
            self.render()

    def _take(self, progress: RunProgress, event: dict[str, Any]) -> None:
        step = progress.apply(event)
        if step is not None:
            at = event.get("_mono")
            if progress.t0_mono is not None and step.t is not None:
                at = progress.t0_mono + step.t
            mark = f"scenario: {step.label}" + ("" if step.status == "ok" else " (failed)")
            self.console.timeline.fault(mark, at=at)
        elif event.get("event") == "stats":
            wall = float(event.get("_wall") or time.time())
            add = self.console.series.add
            if isinstance(event.get("connected"), int):
                add("conns.scenario", wall, event["connected"])
            if isinstance(event.get("delivered_delta"), int):
                add("msgs.scenario", wall, event["delivered_delta"])
            if isinstance(event.get("reconnects_delta"), int):
                add("reconnects.scenario", wall, event["reconnects_delta"])
            if isinstance(event.get("p99_latency_ms"), int | float):
                add("lat.scenario p99", wall, float(event["p99_latency_ms"]))

    def render(self) -> None:
        """Repaint progress, steps and assertions from the RunProgress."""
        progress = self.progress
        if progress is None:
            return
        now = time.monotonic()
        self.phase_label.setText(progress.phase_text(now))
        verdict = progress.verdict
        if verdict is None:
            self.verdict_label.setText("RUNNING")
            self.verdict_label.setStyleSheet(_badge("#1f77b4"))
        else:
            self.verdict_label.setText(verdict)
            self.verdict_label.setStyleSheet(_badge(VERDICT_COLORS.get(verdict, "#7a7a7a")))
        planned = progress.planned
        if progress.phase == "done":
            fraction = 1.0
        else:
            fraction = min(1.0, progress.elapsed(now) / planned) if planned > 0 else 0.0
        self.progress_bar.setValue(int(fraction * 1000))
        current, upcoming = progress.current_step(), progress.next_step()
        bits = []
        if current is not None:
            mark = "\u2713" if current.status == "ok" else "\u2717"
            bits.append(f"last step: <b>{current.label}</b> at {current.t or 0:.1f} s {mark}")
        if upcoming is not None:
            bits.append(f"next: <b>{upcoming.label}</b> at {upcoming.at:.1f} s")
        self.step_label.setText(" \u2014 ".join(bits) or "no steps")
        stats = progress.stats
        if stats:
            p99 = stats.get("p99_latency_ms")
            self.stats_label.setText(
                f"connected {stats.get('connected')}/{stats.get('clients')}  "
                f"sent {stats.get('sent')}  delivered {stats.get('delivered')}  "
                f"reconnects {stats.get('reconnects')}  "
                f"p99 {'-' if p99 is None else f'{p99:.1f} ms'}")
        due = progress.next_step()
        if progress.version != self._seen_version or (
                due is not None and due.at <= progress.elapsed(now)):
            self._seen_version = progress.version
            self._fill_tables(progress)
            self._buttons()

    def _fill_tables(self, progress: RunProgress) -> None:
        table = self.steps_table
        table.setRowCount(len(progress.steps))
        elapsed = progress.elapsed() if progress.t0_mono is not None else -1.0
        for row, step in enumerate(progress.steps):
            _set(table, row, 0, f"{step.at:.1f} s")
            _set(table, row, 1, step.label + (f"  ({step.note})" if step.note else ""))
            status = step.status
            if status == PENDING and progress.running and step.at <= elapsed:
                status = "running"  # due: the step is being carried out
            _set(table, row, 2, status, STATE_COLORS.get(status, STATE_COLORS[FAILED]))
            when = f"at {step.t:.1f} s: " if step.t is not None else ""
            _set(table, row, 3, f"{when}{step.detail}" if step.detail else "")
        table = self.assert_table
        table.setRowCount(len(progress.assertions))
        for row, view in enumerate(progress.assertions):
            label = view.name if view.name == view.expect else f"{view.name}: {view.expect}"
            _set(table, row, 0, label)
            _set(table, row, 1, view.state, STATE_COLORS[view.state])
            _set(table, row, 2, _measured(view.measured))
            _set(table, row, 3, view.detail)

    # -- reading, for tests and tools -------------------------------------------------------

    def assertion_states(self) -> dict[str, str]:
        """Assertion label -> state as shown (pending/passing/failing/passed/failed)."""
        table = self.assert_table
        return {table.item(r, 0).text(): table.item(r, 1).text()
                for r in range(table.rowCount()) if table.item(r, 1) is not None}


def _badge(color: str) -> str:
    return (f"QLabel {{ background: {color}; color: white; border-radius: 4px; "
            f"padding: 2px 8px; font-weight: bold; }}")
