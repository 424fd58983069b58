"""Timeline panel: a lane per client with coloured state spans, heartbeats, attempts, faults.

Painted directly from the headless TimelineModel on a 5 Hz timer (cheap: only the spans and
markers inside the visible window are drawn).
"""

from __future__ import annotations

import time

from PySide6.QtCore import QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPaintEvent, QPen, QPolygonF
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from wsconsole.app.timelinemodel import TimelineModel
from wsconsole.gui.theme import STATE_COLORS

WINDOWS = {"30 s": 30.0, "1 min": 60.0, "2 min": 120.0, "5 min": 300.0, "15 min": 900.0}
LANE_H = 28
NAME_W = 96
AXIS_H = 18


class TimelineCanvas(QWidget):
    """Paints the lanes of a TimelineModel for the last `window` seconds."""

    def __init__(self, model: TimelineModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.window = 30.0
        self.frozen_at: float | None = None  # paused: the right edge stays here
        self.setMinimumHeight(LANE_H + AXIS_H + 20)

    def right_edge(self) -> float:
        """Monotonic time drawn at the right border."""
        return self.frozen_at if self.frozen_at is not None else time.monotonic()

    def paintEvent(self, _event: QPaintEvent) -> None:
        """Draw axis, lanes, spans and markers."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.fillRect(self.rect(), self.palette().base())
        right = self.right_edge()
        left = right - self.window
        plot_w = max(1, self.width() - NAME_W - 8)

        def x_of(t: float) -> float:
            return NAME_W + (t - left) / self.window * plot_w

        lanes = list(self.model.lanes.values())
        text_pen = QPen(self.palette().text().color())
        grid_pen = QPen(QColor(128, 128, 128, 60))
        # time axis
        step = _nice_step(self.window)
        tick = (int(left / step) + 1) * step
        axis_y = self.height() - AXIS_H
        while tick <= right:
            x = x_of(tick)
            painter.setPen(grid_pen)
            painter.drawLine(QPointF(x, 0), QPointF(x, axis_y))
            painter.setPen(text_pen)
            painter.drawText(QPointF(x + 2, self.height() - 4), f"-{right - tick:.0f}s")
            tick += step
        for row, lane in enumerate(lanes):
            y = 4 + row * LANE_H
            painter.setPen(text_pen)
            painter.drawText(QRectF(4, y, NAME_W - 8, LANE_H - 6),
                             Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                             f"{lane.name}")
            for span in lane.spans:
                end = span.end if span.end is not None else right
                if end < left or span.start > right:
                    continue
                x0, x1 = x_of(max(span.start, left)), x_of(min(end, right))
                painter.fillRect(QRectF(x0, y + 4, max(1.0, x1 - x0), LANE_H - 12),
                                 QColor(STATE_COLORS.get(span.state.value, "#7a7a7a")))
            for marker in lane.markers:
                if not left <= marker.at <= right:
                    continue
                x = x_of(marker.at)
                if marker.kind == "ping":
                    painter.setPen(QPen(QColor("#ffffff"), 1))
                    painter.drawLine(QPointF(x, y + 6), QPointF(x, y + 12))
                elif marker.kind == "pong":
                    painter.setPen(QPen(QColor("#0b3d17"), 1))
                    painter.drawLine(QPointF(x, y + 12), QPointF(x, y + LANE_H - 10))
                elif marker.kind in ("miss", "error"):
                    painter.setPen(QPen(QColor("#c0392b"), 2))
                    painter.setBrush(QColor("#c0392b"))
                    painter.drawPolygon(QPolygonF([QPointF(x, y + 2), QPointF(x - 4, y - 4),
                                                   QPointF(x + 4, y - 4)]))
                    painter.setBrush(Qt.BrushStyle.NoBrush)
                elif marker.kind == "action":  # the proxy acted on this connection
                    painter.setPen(QPen(QColor("#e67e22"), 1))
                    painter.setBrush(QColor("#e67e22"))
                    painter.drawPolygon(QPolygonF([
                        QPointF(x, y + LANE_H - 12), QPointF(x - 4, y + LANE_H - 8),
                        QPointF(x, y + LANE_H - 4), QPointF(x + 4, y + LANE_H - 8)]))
                    painter.setBrush(Qt.BrushStyle.NoBrush)
                elif marker.kind == "attempt":
                    painter.setPen(QPen(QColor("#ffffff")))
                    painter.drawText(QPointF(x + 2, y + LANE_H - 11), marker.label)
        # faults across every lane
        fault_pen = QPen(QColor("#c0392b"), 1, Qt.PenStyle.DashLine)
        bottom = 4 + max(1, len(lanes)) * LANE_H
        for marker in self.model.faults:
            if left <= marker.at <= right:
                x = x_of(marker.at)
                painter.setPen(fault_pen)
                painter.drawLine(QPointF(x, 0), QPointF(x, bottom))
                painter.setPen(QPen(QColor("#c0392b")))
                painter.drawText(QPointF(x + 3, bottom + 12), marker.label)
        if not lanes:
            painter.setPen(text_pen)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no connections yet")
        painter.end()

    def lanes_height(self) -> int:
        """Height the lanes need (for the scroll area/minimum size)."""
        return 4 + max(1, len(self.model.lanes)) * LANE_H + AXIS_H + 16


def _nice_step(window: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300):
        if window / step <= 10:
            return float(step)
    return 600.0


class TimelinePanel(QWidget):
    """The canvas plus a window selector, a pause button and a legend."""

    def __init__(self, model: TimelineModel, parent: QWidget | None = None,
                 refresh_ms: int = 200) -> None:
        super().__init__(parent)
        self.model = model
        self.canvas = TimelineCanvas(model)
        self.window_box = QComboBox()
        self.window_box.addItems(list(WINDOWS))
        self.window_box.setCurrentText("30 s")
        self.pause_button = QToolButton(text="Pause", checkable=True)
        legend = QLabel(" ".join(
            f'<span style="background:{c}; color:white">&nbsp;{s}&nbsp;</span>'
            for s, c in STATE_COLORS.items()
        ) + ' &nbsp;<span style="color:#c0392b">\u25bc miss/error &nbsp;\u2506 fault</span>'
          ' &nbsp;<span style="color:#e67e22">\u25c6 proxy action</span>')
        bar = QHBoxLayout()
        bar.addWidget(QLabel("window"))
        bar.addWidget(self.window_box)
        bar.addWidget(self.pause_button)
        bar.addWidget(legend, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.canvas, 1)
        self.window_box.currentTextChanged.connect(self._set_window)
        self.pause_button.toggled.connect(self._set_paused)
        self._set_window(self.window_box.currentText())
        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    def _set_window(self, text: str) -> None:
        self.canvas.window = WINDOWS.get(text, 60.0)
        self.canvas.update()

    def _set_paused(self, paused: bool) -> None:
        self.canvas.frozen_at = time.monotonic() if paused else None
        self.pause_button.setText("Resume" if paused else "Pause")

    def refresh(self) -> None:
        """Timer tick: resize for the lanes and repaint (the time axis slides)."""
        need = self.canvas.lanes_height()
        if self.canvas.minimumHeight() != need:
            self.canvas.setMinimumHeight(need)
        if self.canvas.frozen_at is None:
            self.canvas.update()
