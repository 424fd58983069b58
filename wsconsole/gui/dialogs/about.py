"""About wsconsole: versions of the app, Qt, PySide6, Python, websockets and the broker.

The same facts a support engineer asks for first; "Copy" puts them on the clipboard as
text, and the log folder is one click away.
"""

from __future__ import annotations

import sys
from typing import Any

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import qVersion
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wsconsole import __version__
from wsconsole.diagnostics.versions import versions
from wsconsole.logs import log_dir


def about_rows(info: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(name, version) rows: app, Qt, PySide6, Python, websockets, broker, then the rest."""
    info = info if info is not None else versions()
    libs = info.get("libraries", {})
    rows = [
        ("wsconsole", __version__ + (" (bundle)" if info.get("bundle") else "")),
        ("Qt", qVersion()),
        ("PySide6", pyside_version),
        ("Python", f"{info.get('python', sys.version.split()[0])}"),
        ("websockets", str(libs.get("websockets", "?"))),
        *_broker_rows(str(info.get("broker", "?"))),
    ]
    shown = {"websockets", "PySide6", "PySide6-Essentials"}
    rows += [(name, str(v)) for name, v in libs.items() if name not in shown]
    rows.append(("system", str(info.get("system", {}).get("platform", "?"))))
    rows.append(("log folder", str(log_dir())))
    return rows


def _broker_rows(text: str) -> list[tuple[str, str]]:
    """`valkey-server --version` output split into a short version and the binary's path."""
    version, _, path = text.partition(" [")
    version = version.split(" sha=")[0]
    rows = [("broker", version)]
    if path:
        rows.append(("broker binary", path.rstrip("]")))
    return rows


class AboutDialog(QDialog):
    """A table of versions with Copy and Close."""

    def __init__(self, parent: QWidget | None = None,
                 info: dict[str, Any] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About wsconsole")
        self.rows = about_rows(info)
        title = QLabel(f"<h2>wsconsole {__version__}</h2>"
                       "<p>Monitor, debug and break WebSocket and real-time systems.</p>")
        self.table = QTableWidget(len(self.rows), 2)
        self.table.setHorizontalHeaderLabels(["Component", "Version"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for r, (name, value) in enumerate(self.rows):
            self.table.setItem(r, 0, QTableWidgetItem(name))
            self.table.setItem(r, 1, QTableWidgetItem(value))
        self.table.resizeColumnToContents(0)
        self.table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy")
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        self.copy_button.clicked.connect(self.copy)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.table, 1)
        layout.addWidget(buttons)
        self.resize(620, 460)

    def text(self) -> str:
        """The versions as plain text, one per line."""
        return "\n".join(f"{name}: {value}" for name, value in self.rows)

    def copy(self) -> None:
        """Put the versions on the clipboard."""
        QGuiApplication.clipboard().setText(self.text())
