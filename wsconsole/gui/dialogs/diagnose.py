"""Diagnose endpoint: the guided check of a customer's URL, and the support bundle it saves.

The form takes what `wsconsole diagnose` takes; Run starts `diagnostics.checks.diagnose` as a
task owned by the console, and each step appears as it finishes: a coloured verdict and the
plain-language summary; selecting a row shows its technical detail. "Save support bundle"
writes the zip (secrets redacted) with the app's settings and logs.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.options import TOKEN_MODES, ConnectionOptions, OptionsError
from wsconsole.app.targets import diagnose_options
from wsconsole.diagnostics.bundle import BundleInputs, write_bundle
from wsconsole.diagnostics.checks import diagnose
from wsconsole.diagnostics.model import (
    DiagnoseError,
    DiagnoseOptions,
    Diagnosis,
    StepResult,
    Verdict,
)
from wsconsole.diagnostics.versions import versions
from wsconsole.logs import log_files

Spawn = Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]
COLOURS = {Verdict.OK: "#2e9e44", Verdict.WARN: "#c88a00", Verdict.FAIL: "#c62828",
           Verdict.SKIP: "#777777"}
WORDS = {Verdict.OK: "OK", Verdict.WARN: "Warning", Verdict.FAIL: "Problem",
         Verdict.SKIP: "Not checked"}


class DiagnoseDialog(QDialog):
    """Form, live step table, detail pane, headline and Save support bundle."""

    def __init__(self, spawn: Spawn, settings: Callable[[], dict[str, Any]] | None = None,
                 parent: QWidget | None = None, url: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Diagnose endpoint")
        self.spawn = spawn
        self.settings = settings or dict
        self.diagnosis: Diagnosis | None = None
        self.task: asyncio.Task[Any] | None = None
        self.steps: list[StepResult] = []

        self.url_edit = QLineEdit(url, placeholderText="wss://customer.example.com/ws")
        self.token_edit = QLineEdit(placeholderText="optional; redacted in the bundle")
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_mode = QComboBox()
        self.token_mode.addItems(TOKEN_MODES)
        self.headers_edit = QPlainTextEdit(placeholderText="Header: value (one per line)")
        self.headers_edit.setMaximumHeight(60)
        self.timeout = QDoubleSpinBox(minimum=0.5, maximum=120.0, value=5.0, suffix=" s")
        self.pings = QSpinBox(minimum=1, maximum=1000, value=5)
        self.reconnect_box = QCheckBox("reconnect cycle", checked=True)
        self.audit_box = QCheckBox("production-safe security checks", checked=True)
        form = QFormLayout()
        form.addRow("URL", self.url_edit)
        form.addRow("Token", self.token_edit)
        form.addRow("Token sent as", self.token_mode)
        form.addRow("Headers", self.headers_edit)
        form.addRow("Timeout", self.timeout)
        form.addRow("Pings", self.pings)
        checks = QHBoxLayout()
        checks.addWidget(self.reconnect_box)
        checks.addWidget(self.audit_box)
        checks.addStretch(1)
        form.addRow("", checks)

        self.run_button = QPushButton("Run diagnosis")
        self.save_button = QPushButton("Save support bundle\u2026")
        self.save_button.setEnabled(False)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Check", "Verdict", "What it means"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setWordWrap(True)
        self.detail = QPlainTextEdit(readOnly=True, placeholderText="select a check for its "
                                     "technical detail")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setSizes([300, 160])
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addWidget(split, 1)
        self.resize(900, 700)

        self.run_button.clicked.connect(self.start)
        self.save_button.clicked.connect(self.choose_bundle_path)
        self.table.currentCellChanged.connect(lambda row, *_: self.show_detail(row))

    # -- running

    def options(self) -> DiagnoseOptions:
        """The form as DiagnoseOptions; OptionsError / DiagnoseError if invalid."""
        conn = ConnectionOptions(url=self.url_edit.text(), token=self.token_edit.text(),
                                 token_mode=self.token_mode.currentText(),
                                 headers=self.headers_edit.toPlainText())
        return diagnose_options(conn, conn.token, timeout=self.timeout.value(),
                                pings=self.pings.value(),
                                reconnect=self.reconnect_box.isChecked(),
                                audit=self.audit_box.isChecked())

    def start(self) -> bool:
        """Validate the form and start the diagnosis; False (message shown) if invalid."""
        if self.task is not None and not self.task.done():
            return False
        try:
            options = self.options()
        except (OptionsError, DiagnoseError) as exc:
            self.message.setText(f'<span style="color:#c62828">{html.escape(str(exc))}</span>')
            return False
        self.table.setRowCount(0)
        self.steps.clear()
        self.detail.clear()
        self.diagnosis = None
        self.save_button.setEnabled(False)
        self.run_button.setEnabled(False)
        self.message.setText("Running\u2026")
        self.task = self.spawn(self._run(options), "diagnose")
        return True

    async def _run(self, options: DiagnoseOptions) -> None:
        try:
            self.diagnosis = await diagnose(options, self.add_step)
        finally:
            self.run_button.setEnabled(True)
        verdict = self.diagnosis.verdict
        self.message.setText(f'<b style="color:{COLOURS[verdict]}">{WORDS[verdict]}:</b> '
                             f"{self.diagnosis.headline()}")
        self.save_button.setEnabled(True)

    def add_step(self, step: StepResult) -> None:
        """One finished step becomes a row."""
        self.steps.append(step)
        row = self.table.rowCount()
        self.table.insertRow(row)
        verdict = QTableWidgetItem(WORDS[step.verdict])
        verdict.setForeground(QColor(COLOURS[step.verdict]))
        self.table.setItem(row, 0, QTableWidgetItem(step.title))
        self.table.setItem(row, 1, verdict)
        self.table.setItem(row, 2, QTableWidgetItem(step.summary))
        self.table.resizeRowToContents(row)

    def show_detail(self, row: int) -> None:
        """The technical detail of the selected step."""
        if 0 <= row < len(self.steps):
            step = self.steps[row]
            self.detail.setPlainText(orjson.dumps(
                {"id": step.id, "seconds": round(step.seconds, 3), **step.detail},
                option=orjson.OPT_INDENT_2, default=str).decode())

    # -- the bundle

    def choose_bundle_path(self) -> None:
        """Ask where to save, then save."""
        path, _ = QFileDialog.getSaveFileName(self, "Save support bundle",
                                              "wsconsole-support.zip", "Zip (*.zip)")
        if path:
            self.save_bundle(path)

    def save_bundle(self, path: str | Path) -> Path | None:
        """Write the support bundle of the last run; None (message shown) if impossible."""
        if self.diagnosis is None:
            self.message.setText("Run a diagnosis first.")
            return None
        inputs = BundleInputs(versions=versions(), settings={"app": self.settings()},
                              log_files=log_files(),
                              extra_secrets=[self.token_edit.text()] if
                              self.token_edit.text() else [])
        try:
            written = write_bundle(self.diagnosis, path, inputs)
        except OSError as exc:
            self.message.setText(f'<span style="color:#c62828">Cannot write {path}: '
                                 f"{exc}</span>")
            return None
        self.message.setText(f"Support bundle saved: {written}")
        return written
