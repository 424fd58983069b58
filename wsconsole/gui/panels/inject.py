"""Inject panel: pick a catalogue case and a target, run it, compare expected with observed.

Client to server goes through the probe (a raw connection via a session's URL or the cluster),
server to client through a node (`Cluster.inject`); the work is an `Injector` (app/injector.py,
no Qt) run as console tasks, and the history table is redrawn from it on a timer.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console
from wsconsole.app.injector import Injector, InjectRecord
from wsconsole.faults.catalogue import CATALOGUE, Direction, get_case

COLUMNS = ("Time", "Dir", "Case", "RFC", "Target", "Expected", "Observed", "Verdict")
VERDICT_COLORS = {"pass": "#2e9e44", "pass (lenient)": "#b7950b", "fail": "#c0392b",
                  "error": "#c0392b", "n/a": "#7a7a7a"}


class InjectPanel(QWidget):
    """Case, direction and target pickers, a Run button and the history of verdicts."""

    def __init__(self, console: Console, injector: Injector | None = None,
                 parent: QWidget | None = None, refresh_ms: int = 500) -> None:
        super().__init__(parent)
        self.console = console
        self.injector = injector or Injector(console)
        self.case_box = QComboBox()
        self.case_box.setMaxVisibleItems(25)
        self.case_info = QLabel()
        self.case_info.setWordWrap(True)
        self.c2s = QRadioButton("client → server (probe)")
        self.s2c = QRadioButton("server → client (node)")
        self.direction_group = QButtonGroup(self)
        self.direction_group.addButton(self.c2s)
        self.direction_group.addButton(self.s2c)
        self.c2s.setChecked(True)
        self.via_box = QComboBox()
        self.node_box = QComboBox()
        self.target_box = QComboBox()
        self.target_box.setEditable(True)
        self.target_box.setMinimumContentsLength(18)
        self.refresh_button = QPushButton("Refresh")
        self.run_button = QPushButton("Run")
        self.message = QLabel("")
        self.message.setWordWrap(True)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("Observed"), QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)

        direction_row = QHBoxLayout()
        direction_row.addWidget(self.c2s)
        direction_row.addWidget(self.s2c)
        direction_row.addStretch(1)
        self.c2s_row = QWidget()
        c2s_layout = QHBoxLayout(self.c2s_row)
        c2s_layout.setContentsMargins(0, 0, 0, 0)
        c2s_layout.addWidget(QLabel("via"))
        c2s_layout.addWidget(self.via_box, 1)
        self.s2c_row = QWidget()
        s2c_layout = QHBoxLayout(self.s2c_row)
        s2c_layout.setContentsMargins(0, 0, 0, 0)
        s2c_layout.addWidget(QLabel("node"))
        s2c_layout.addWidget(self.node_box)
        s2c_layout.addWidget(QLabel("to"))
        s2c_layout.addWidget(self.target_box, 1)
        s2c_layout.addWidget(self.refresh_button)
        self.form = form = QFormLayout()
        form.addRow("case", self.case_box)
        form.addRow("", self.case_info)
        form.addRow("direction", direction_row)
        form.addRow("target", self.c2s_row)
        form.addRow("target", self.s2c_row)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.message, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(form)
        layout.addLayout(run_row)
        layout.addWidget(self.table, 1)

        self.case_box.currentIndexChanged.connect(self._show_case)
        self.c2s.toggled.connect(self._direction_changed)
        self.node_box.currentTextChanged.connect(lambda _: self.load_targets())
        self.refresh_button.clicked.connect(self.load_targets)
        self.run_button.clicked.connect(self.run)
        self._direction_changed()
        self._seen = -1
        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    # -- pickers ----------------------------------------------------------------------------
    @property
    def direction(self) -> Direction:
        """The chosen direction."""
        return Direction.CLIENT_TO_SERVER if self.c2s.isChecked() else Direction.SERVER_TO_CLIENT

    def _direction_changed(self) -> None:
        current = self.case_box.currentData()
        self.case_box.blockSignals(True)
        self.case_box.clear()
        for case in CATALOGUE:
            if case.applies_to(self.direction):
                self.case_box.addItem(f"{case.id}  ({case.section})", case.id)
        index = self.case_box.findData(current)
        self.case_box.setCurrentIndex(max(0, index))
        self.case_box.blockSignals(False)
        self._show_case()
        c2s = self.direction is Direction.CLIENT_TO_SERVER
        self.form.setRowVisible(self.c2s_row, c2s)
        self.form.setRowVisible(self.s2c_row, not c2s)
        self._update_run()
        if not c2s and self.target_box.count() == 0:
            self.load_targets()

    def select_case(self, case_id: str) -> bool:
        """Choose a case by id (for keyboard users and tests)."""
        index = self.case_box.findData(case_id)
        if index >= 0:
            self.case_box.setCurrentIndex(index)
        return index >= 0

    def _show_case(self) -> None:
        case_id = self.case_box.currentData()
        if not case_id:
            self.case_info.setText("")
            return
        case = get_case(case_id)
        section = "harness protocol" if case.section == "harness" else f"RFC 6455 §{case.section}"
        self.case_info.setText(f"<b>{case.title}</b> — {section}<br>{case.construction}<br>"
                               f"expected: <b>{case.expected.describe()}</b>")

    def load_targets(self) -> None:
        """Ask the chosen node for its connections and rooms (a console task)."""
        node = self.node_box.currentText()
        if not node or self.console.cluster is None:
            return
        if self.console.stack_path is not None:  # the user's nodes have no control channel
            self.message.setText("a stack's nodes cannot inject: send from the client side")
            return
        self.console.spawn(self._load_targets(node), f"inject targets on {node}")

    async def _load_targets(self, node: str) -> None:
        targets = await self.injector.node_targets(node)
        if node != self.node_box.currentText():
            return
        typed = self.target_box.currentText()
        self.target_box.clear()
        for target, label in targets:
            self.target_box.addItem(label, target)
        index = self.target_box.findData(typed) if typed else -1
        if index >= 0:
            self.target_box.setCurrentIndex(index)

    def set_target(self, target: str) -> None:
        """Choose a server-to-client target (conn id, room:NAME, all, session:NAME)."""
        index = self.target_box.findData(target)
        if index >= 0:
            self.target_box.setCurrentIndex(index)
        else:
            self.target_box.setEditText(target)

    def target(self) -> str:
        """The target to send to: the chosen item's value, or the typed text."""
        index = self.target_box.currentIndex()
        text = self.target_box.currentText().strip()
        if index >= 0 and self.target_box.itemText(index) == text:
            return str(self.target_box.itemData(index))
        return text

    # -- running ----------------------------------------------------------------------------
    def run(self) -> bool:
        """Run the chosen case against the chosen target as a console task."""
        case_id = self.case_box.currentData()
        if not case_id:
            self.message.setText("pick a case")
            return False
        if self.direction is Direction.CLIENT_TO_SERVER:
            via = self.via_box.currentText()
            if not via:
                self.message.setText("no connection or cluster to probe through")
                return False
            coro = self.injector.client_to_server(case_id, via)
            label = f"inject {case_id} via {via}"
        else:
            node, target = self.node_box.currentText(), self.target()
            if not node or self.console.cluster is None:
                self.message.setText("no running node to inject from")
                return False
            if not target:
                self.message.setText("pick a connection, a room or all")
                return False
            coro = self.injector.server_to_client(node, case_id, target)
            label = f"inject {case_id} from {node} to {target}"
        self.message.setStyleSheet("")
        self.message.setText(f"running {case_id}…")
        task = self.console.spawn(coro, label)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: object) -> None:
        exc = task.exception() if not task.cancelled() else None  # type: ignore[attr-defined]
        if exc is not None:
            self.message.setStyleSheet("color: #c0392b;")
            self.message.setText(str(exc))
        else:
            self._seen = -1  # the next tick shows the new record's verdict

    def _update_run(self) -> None:
        c2s = self.direction is Direction.CLIENT_TO_SERVER
        self.run_button.setEnabled(bool((self.via_box if c2s else self.node_box).count()))

    # -- view -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Timer tick: routes and nodes, then the history if it changed."""
        _sync(self.via_box, self.injector.probe_vias())
        _sync(self.node_box, self.injector.nodes())
        self._update_run()
        if self.injector.version == self._seen:
            return
        self._seen = self.injector.version
        records = list(self.injector.history)[::-1]
        self.table.setRowCount(len(records))
        for row, record in enumerate(records):
            for col, value in enumerate(_cells(record)):
                item = self.table.item(row, col)
                if item is None:
                    item = QTableWidgetItem()
                    self.table.setItem(row, col, item)
                item.setText(value)
                item.setToolTip(record.reason if col >= COLUMNS.index("Observed") else value)
                if col == COLUMNS.index("Verdict"):
                    item.setForeground(QColor(VERDICT_COLORS.get(record.verdict, "#444")))
        if records:
            first = records[0]
            self.message.setStyleSheet(f"color: {VERDICT_COLORS.get(first.verdict, '#444')};")
            self.message.setText(f"{first.case}: {first.verdict} — {first.reason}")


def _cells(record: InjectRecord) -> tuple[str, ...]:
    arrow = "C→S" if record.direction is Direction.CLIENT_TO_SERVER else "S→C"
    stamp = time.strftime("%H:%M:%S", time.localtime(record.wall))
    return (stamp, arrow, record.case, record.section, record.target, record.expected,
            record.observed, record.verdict)


def _sync(box: QComboBox, items: list[str]) -> None:
    """Make a combo box list `items`, keeping the current choice when it is still there."""
    if [box.itemText(i) for i in range(box.count())] == items:
        return
    current = box.currentText()
    box.blockSignals(True)
    box.clear()
    box.addItems(items)
    if current in items:
        box.setCurrentText(current)
    box.blockSignals(False)
    if box.currentText() != current:
        box.currentTextChanged.emit(box.currentText())
