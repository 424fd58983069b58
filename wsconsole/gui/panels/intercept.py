"""Intercept panel: run the proxy, decide on held frames, edit the rules, act on connections.

Top: the proxy's mode (reverse to one upstream, or a forward proxy for browsers), where it
listens, Start/Stop, and its counters. Middle: the held frames in arrival order (a held frame
holds the frames behind it in its direction) with Forward, Forward edited (the payload as
edited below), Drop and Forward all. Bottom tabs: the rules (the rules-file TOML, applied as
a whole and refused with its line when invalid, plus a one-line quick rule), the chosen
connection's controls (panels/interceptconn.py), and the log of the proxy's actions.

Everything is pulled from the headless ConsoleProxy (app/intercept.py) on a timer; the
proxy's frames, lanes and plots show in the other views through the console's stores.
"""

from __future__ import annotations

import asyncio
import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QTextCursor, QTextFormat
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.console import Console
from wsconsole.gui.panels.interceptconn import ConnectionControls
from wsconsole.proxy.hub import ProxyError, ProxyEvent
from wsconsole.proxy.rulesfile import RulesFileError
from wsconsole.proxy.server import ProxyConfig

COLUMNS = ("#", "Connection", "Dir", "Type", "Rule", "Payload")
PREVIEW = 120
EXAMPLE_RULES = """\
# Intercept rules (the format of `wsconsole proxy --rules`); the first match decides.
# [[rule]]
# name = "hold orders"
# direction = "out"          # out: client -> server, in: server -> client, both
# contains = "order"         # or regex = "...", json_path = "$.type" + equals = "order"
# action = "hold"            # hold, drop, delay (delay_ms), rewrite (template/replace/set),
#                            # duplicate (copies)
"""


class InterceptPanel(QWidget):
    """Proxy controls, the held frames, and tabs for rules, a connection and the action log."""

    def __init__(self, console: Console, parent: QWidget | None = None,
                 refresh_ms: int = 250) -> None:
        super().__init__(parent)
        self.console = console
        self.proxy = console.proxy
        self._seen_actions = 0
        self._held_ids: list[int] = []
        self._build_controls()
        self._build_held()
        self.controls = ConnectionControls(console)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_rules(), "Rules")
        self.tabs.addTab(self.controls, "Connection")
        self.log = QPlainTextEdit(readOnly=True)
        self.log.setMaximumBlockCount(2000)
        self.tabs.addTab(self.log, "Actions")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.held_box)
        splitter.addWidget(self.tabs)
        splitter.setSizes([260, 300])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(self.top)
        layout.addWidget(self.status)
        layout.addWidget(splitter, 1)
        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    # -- building -------------------------------------------------------------------------------

    def _build_controls(self) -> None:
        self.mode_box = QComboBox()
        self.mode_box.addItems(["reverse", "forward"])
        self.listen_edit = QLineEdit("127.0.0.1:8080")
        self.listen_edit.setMaximumWidth(150)
        self.upstream_edit = QLineEdit()
        self.upstream_edit.setPlaceholderText("upstream ws(s)://host:port/path")
        self.tls_box = QCheckBox("TLS")
        self.tls_box.setToolTip("serve wss:// with the local CA (wsconsole proxy --print-ca)")
        self.start_button = QPushButton("Start")
        self.status = QLabel("proxy stopped")
        self.status.setWordWrap(True)
        self.top = QHBoxLayout()
        for widget in (QLabel("proxy"), self.mode_box, QLabel("listen"), self.listen_edit):
            self.top.addWidget(widget)
        self.top.addWidget(self.upstream_edit, 1)
        self.top.addWidget(self.tls_box)
        self.top.addWidget(self.start_button)
        self.mode_box.currentTextChanged.connect(
            lambda mode: self.upstream_edit.setEnabled(mode == "reverse"))
        self.start_button.clicked.connect(self.toggle_proxy)

    def _build_held(self) -> None:
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("Payload"), QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.editor = QPlainTextEdit()
        self.editor.setPlaceholderText("the selected held frame's payload: edit it, then "
                                       "Forward edited")
        self.editor.setMaximumHeight(90)
        self.forward_button = QPushButton("Forward")
        self.edit_button = QPushButton("Forward edited")
        self.drop_button = QPushButton("Drop")
        self.all_button = QPushButton("Forward all")
        self.held_label = QLabel("Held frames")
        buttons = QHBoxLayout()
        buttons.addWidget(self.held_label, 1)
        for button in (self.forward_button, self.edit_button, self.drop_button, self.all_button):
            buttons.addWidget(button)
        self.held_box = QWidget()
        box = QVBoxLayout(self.held_box)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(buttons)
        box.addWidget(self.table, 1)
        box.addWidget(self.editor)
        self.table.itemSelectionChanged.connect(self._selected)
        self.forward_button.clicked.connect(lambda: self.decide(forward=True))
        self.edit_button.clicked.connect(lambda: self.decide(forward=True, edited=True))
        self.drop_button.clicked.connect(lambda: self.decide(forward=False))
        self.all_button.clicked.connect(self.forward_all)

    def _build_rules(self) -> QWidget:
        self.rules_edit = QPlainTextEdit(EXAMPLE_RULES)
        self.quick_direction = QComboBox()
        self.quick_direction.addItems(["out", "in", "both"])
        self.quick_opcode = QComboBox()
        self.quick_opcode.addItems(["data", "text", "binary", "ping", "pong", "close", "any"])
        self.quick_contains = QLineEdit()
        self.quick_contains.setPlaceholderText("contains (empty: every frame)")
        self.quick_action = QComboBox()
        self.quick_action.addItems(["hold", "drop", "duplicate"])
        self.quick_button = QPushButton("Add rule")
        self.apply_button = QPushButton("Apply rules")
        self.rules_message = QLabel("no rules: every frame passes untouched")
        self.rules_message.setWordWrap(True)
        quick = QHBoxLayout()
        for widget in (self.quick_direction, self.quick_opcode):
            quick.addWidget(widget)
        quick.addWidget(self.quick_contains, 1)
        quick.addWidget(self.quick_action)
        quick.addWidget(self.quick_button)
        quick.addWidget(self.apply_button)
        holder = QWidget()
        layout = QVBoxLayout(holder)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.rules_edit, 1)
        layout.addLayout(quick)
        layout.addWidget(self.rules_message)
        self.quick_button.clicked.connect(self.add_quick_rule)
        self.apply_button.clicked.connect(self.apply_rules)
        return holder

    # -- the proxy ------------------------------------------------------------------------------

    def config(self) -> ProxyConfig:
        """The proxy settings typed in the panel (ValueError when they cannot work)."""
        host, colon, port = self.listen_edit.text().strip().rpartition(":")
        if not colon or not port.isdigit():
            raise ValueError(f"listen must be HOST:PORT, not {self.listen_edit.text()!r}")
        forward = self.mode_box.currentText() == "forward"
        config = ProxyConfig(host=host.strip("[]") or "127.0.0.1", port=int(port),
                             upstream=None if forward else self.upstream_edit.text().strip(),
                             forward=forward, tls=self.tls_box.isChecked())
        config.check()
        return config

    def toggle_proxy(self) -> bool:
        """Start the proxy with the panel's settings, or stop it."""
        if self.proxy.running:
            self.console.spawn(self.proxy.stop(), "proxy stop")
            self.status.setText("proxy stopping")
            return True
        try:
            config = self.config()
        except ValueError as exc:
            self.status.setText(f"cannot start: {exc}")
            return False
        self.status.setText("proxy starting")
        task = self.console.spawn(self.proxy.start(config), "proxy start")
        task.add_done_callback(self._started)
        return True

    def _started(self, task: asyncio.Task[object]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self.status.setText(f"cannot start: {exc}")

    # -- held frames ----------------------------------------------------------------------------

    def selected_id(self) -> int | None:
        """The held frame chosen in the table."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return int(item.text()) if item is not None else None

    def _selected(self) -> None:
        held = self.proxy.hub.held.get(self.selected_id() or -1)
        self.editor.setPlainText(held.payload.decode("utf-8", "replace") if held else "")

    def decide(self, forward: bool, edited: bool = False) -> bool:
        """Forward (as it was, or as edited) or drop the selected held frame."""
        held_id = self.selected_id()
        if held_id is None:
            self.held_label.setText("select a held frame first")
            return False
        payload = self.editor.toPlainText().encode() if edited else None
        try:
            self.proxy.hub.resolve(held_id, forward, payload)
        except ProxyError as exc:  # decided already, or its connection ended
            self.held_label.setText(str(exc))
            return False
        self.refresh()
        return True

    def forward_all(self) -> int:
        """Forward every held frame as it was."""
        count = self.proxy.hub.release_all()
        self.refresh()
        return count

    def _fill_held(self) -> None:
        held = self.proxy.hub.pending()
        ids = [h.id for h in held]
        if ids == self._held_ids:
            return
        chosen = self.selected_id()
        self._held_ids = ids
        self.table.setRowCount(len(held))
        for row, frame in enumerate(held):
            preview = frame.payload.decode("utf-8", "replace")
            cells = (str(frame.id), frame.conn, "→ server" if frame.direction.value == "out"
                     else "→ client", frame.opcode.name.lower(), frame.rule,
                     preview if len(preview) <= PREVIEW else preview[:PREVIEW] + "…")
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
            if frame.id == chosen:
                self.table.selectRow(row)
        if held and self.selected_id() is None:
            self.table.selectRow(0)
        self.held_label.setText(f"Held frames: {len(held)}" if held else "Held frames: none")

    # -- rules ----------------------------------------------------------------------------------

    def apply_rules(self) -> bool:
        """Use the rules written in the editor (nothing changes when they are invalid)."""
        self._mark_line(None)
        try:
            loaded = self.proxy.apply_rules(self.rules_edit.toPlainText())
        except RulesFileError as exc:
            self.rules_message.setText(f"! line {exc.line}: {exc.reason}" if exc.line
                                       else f"! {exc.reason}")
            self._mark_line(exc.line)
            return False
        self.rules_message.setText(f"{len(loaded.rules)} rule(s) and {len(loaded.faults)} "
                                   "fault(s) applied")
        return True

    def add_quick_rule(self) -> bool:
        """Append the one-line rule to the editor and apply the whole list."""
        contains = self.quick_contains.text()
        lines = ["", "[[rule]]", f'direction = "{self.quick_direction.currentText()}"',
                 f'opcode = "{self.quick_opcode.currentText()}"',
                 f'action = "{self.quick_action.currentText()}"']
        if contains:
            escaped = contains.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'contains = "{escaped}"')
        self.rules_edit.setPlainText(self.rules_edit.toPlainText().rstrip("\n") + "\n"
                                     + "\n".join(lines) + "\n")
        return self.apply_rules()

    def _mark_line(self, line: int | None) -> None:
        if line is None:
            self.rules_edit.setExtraSelections([])
            return
        selection = QTextEdit.ExtraSelection()
        selection.format.setBackground(QColor("#f6d5d1"))
        selection.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
        cursor = QTextCursor(self.rules_edit.document().findBlockByLineNumber(line - 1))
        selection.cursor = cursor
        self.rules_edit.setExtraSelections([selection])

    # -- refresh --------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Timer tick: status and counters, held frames, the connection tab, new actions."""
        proxy = self.proxy
        self.start_button.setText("Stop" if proxy.running else "Start")
        for widget in (self.mode_box, self.listen_edit, self.tls_box):
            widget.setEnabled(not proxy.running)
        self.upstream_edit.setEnabled(not proxy.running and
                                      self.mode_box.currentText() == "reverse")
        counters = proxy.hub.counters
        figures = ", ".join(f"{key.replace('_', ' ')} {counters[key]}" for key in (
            "frames_out", "frames_in", "held", "edited", "dropped", "injected", "closed")
            if counters[key])
        if proxy.running:
            target = proxy.server.config.upstream if proxy.server else None
            self.status.setText(f"listening on {proxy.url} → {target or 'any host (forward)'}"
                                f" · {proxy.open} open · {figures or 'no traffic yet'}")
        elif not self.status.text().startswith(("cannot", "proxy starting")):
            self.status.setText("proxy stopped" + (f" · {figures}" if figures else ""))
        self._fill_held()
        self.controls.refresh()
        fresh, self._seen_actions = proxy.new_actions(self._seen_actions)
        for event in fresh:
            self.log.appendPlainText(_action_line(event))


def _action_line(event: ProxyEvent) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.wall))
    rule = f" [{event.rule}]" if event.rule else ""
    data = ""
    if event.payload is not None:
        text = event.payload.decode("utf-8", "replace")
        data = f"  {text[:PREVIEW]}"
    return f"{stamp} {event.conn} {event.kind}{rule} {event.detail}{data}".rstrip()
