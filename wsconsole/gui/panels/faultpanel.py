"""The Timeline's side panel for one fault: who it affected and how long each took to come back.

Shown when a fault line is clicked: the fault in words, a histogram of the time away of the
clients that came back, and a table of the affected clients (when each dropped after the
fault, how long it was away). "Frames of these clients" (or a row) asks for a Frames scope.
"""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.faultimpact import FaultImpact

COLUMNS = ("Client", "Dropped after", "Away")


class Histogram(QWidget):
    """Bars of counts over edges in seconds, with the axis in words."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edges = np.array([0.0, 1.0])
        self.counts = np.zeros(1, np.int64)
        self.setMinimumHeight(90)

    def set_data(self, edges: np.ndarray, counts: np.ndarray) -> None:
        """Show these bins."""
        self.edges, self.counts = edges, counts
        self.update()

    def paintEvent(self, _event: QPaintEvent) -> None:
        """Bars, the highest count and the time axis."""
        painter = QPainter(self)
        palette = self.palette()
        painter.fillRect(self.rect(), palette.base())
        text = QPen(palette.text().color())
        left, bottom, top = 28, self.height() - 16, 6
        width = max(1, self.width() - left - 6)
        highest = int(self.counts.max()) if len(self.counts) else 0
        painter.setPen(text)
        painter.drawText(QRectF(0, top - 4, left - 4, 14), Qt.AlignmentFlag.AlignRight,
                         str(highest))
        painter.drawText(QRectF(0, bottom - 12, left - 4, 14), Qt.AlignmentFlag.AlignRight, "0")
        if highest:
            bar_w = width / len(self.counts)
            for index, count in enumerate(self.counts):
                h = (bottom - top) * count / highest
                painter.fillRect(QRectF(left + index * bar_w + 1, bottom - h,
                                        max(1.0, bar_w - 2), h), QColor("#2e9e44"))
        painter.setPen(text)
        painter.drawLine(left, bottom, left + width, bottom)
        painter.drawText(QRectF(left, bottom + 1, width, 14), Qt.AlignmentFlag.AlignLeft, "0 s")
        painter.drawText(QRectF(left, bottom + 1, width, 14), Qt.AlignmentFlag.AlignCenter,
                         "time to come back")
        painter.drawText(QRectF(left, bottom + 1, width, 14), Qt.AlignmentFlag.AlignRight,
                         f"{self.edges[-1]:.1f} s")
        painter.end()


class FaultPanel(QWidget):
    """One fault's impact: words, a histogram, the affected clients."""

    scope_requested = Signal(object, float, float, str)  # lane names, monotonic from, to, label
    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.impact: FaultImpact | None = None
        self.title = QLabel()
        self.title.setStyleSheet("font-weight: bold; color: #c0392b;")
        self.title.setWordWrap(True)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.histogram = Histogram()
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 4)
        self.frames_button = QPushButton("Frames of these clients")
        self.close_button = QPushButton("Close")
        buttons = QHBoxLayout()
        buttons.addWidget(self.frames_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 2, 2)
        layout.addWidget(self.title)
        layout.addWidget(self.summary)
        layout.addWidget(self.histogram)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self.frames_button.clicked.connect(self.request_all)
        self.close_button.clicked.connect(self.closed.emit)
        self.table.cellClicked.connect(self._row_clicked)

    def show_impact(self, impact: FaultImpact) -> None:
        """Fill the panel for one fault."""
        self.impact = impact
        fault = impact.fault
        wall = fault.at + time.time() - time.monotonic()
        self.title.setText(f"{fault.label} at "
                           f"{time.strftime('%H:%M:%S', time.localtime(wall))}")
        self.summary.setText(impact.summary().split(": ", 1)[-1])
        self.histogram.set_data(*impact.histogram())
        self.table.setRowCount(len(impact.hits))
        for row, hit in enumerate(impact.hits):
            away = "not back" if hit.down is None else f"{hit.down:.2f} s"
            dropped = round(hit.left - fault.at, 2) or 0.0  # no "-0.00"
            for column, text in enumerate((hit.label, f"{dropped:+.2f} s", away)):
                item = QTableWidgetItem(text)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.frames_button.setEnabled(bool(impact.hits))

    def request_all(self) -> None:
        """Ask for the frames of every affected client around the fault."""
        if self.impact is None or not self.impact.hits:
            return
        since, until = self.impact.span()
        self.scope_requested.emit([h.lane for h in self.impact.hits], since, until,
                                  f"{len(self.impact.hits)} clients hit by "
                                  f"{self.impact.fault.label}")

    def _row_clicked(self, row: int, _column: int) -> None:
        if self.impact is None or not 0 <= row < len(self.impact.hits):
            return
        hit = self.impact.hits[row]
        end = hit.back if hit.back is not None else self.impact.until
        self.scope_requested.emit([hit.lane], min(self.impact.fault.at, hit.left) - 1.0,
                                  end + 1.0, f"{hit.label} around {self.impact.fault.label}")


__all__ = ["FaultPanel", "Histogram"]
