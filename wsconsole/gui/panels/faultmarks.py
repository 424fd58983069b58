"""Fault markers on the live plots: a dashed vertical line per Timeline fault, on every plot.

The Timeline model keeps the faults (node killed, broker down, network fault toggled, frame
injected) on the monotonic clock; the plots' x axis is "seconds ago". This overlay, given the
PlotsPanel and the TimelineModel, places the lines on its own timer, reusing line items and
showing only the faults inside the window (bounded to `limit`), so the plots stay cheap.
"""

from __future__ import annotations

import time

import pyqtgraph as pg
from PySide6.QtCore import QObject, QTimer

from wsconsole.app.timelinemodel import TimelineModel
from wsconsole.gui.panels.plots import PlotsPanel

FAULT_COLOR = "#c0392b"


class FaultMarks(QObject):
    """Keeps one InfiniteLine per visible fault on each plot of a PlotsPanel."""

    def __init__(self, plots: PlotsPanel, timeline: TimelineModel, limit: int = 50,
                 refresh_ms: int = 500) -> None:
        super().__init__(plots)
        self.plots = plots
        self.timeline = timeline
        self.limit = limit
        self.lines: list[list[pg.InfiniteLine]] = [[] for _ in plots.plots]
        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    def visible(self, now: float | None = None) -> list[tuple[float, str]]:
        """(seconds ago as a negative x, label) of the faults inside the plots' window."""
        now = time.monotonic() if now is None else now
        window = self.plots.window
        shown = [(m.at - now, m.label) for m in list(self.timeline.faults)
                 if -window <= m.at - now <= 0]
        return shown[-self.limit:]

    def refresh(self) -> None:
        """Timer tick: move, add or hide lines so they match the visible faults."""
        if self.plots.paused:
            return
        marks = self.visible()
        while len(self.lines) < len(self.plots.plots):  # a plot added since (app metrics)
            self.lines.append([])
        for index, (plot, _) in enumerate(self.plots.plots):
            lines = self.lines[index]
            while len(lines) < len(marks):
                line = pg.InfiniteLine(angle=90, movable=False,
                                       pen=pg.mkPen(FAULT_COLOR, width=1, style=pg.QtCore.Qt
                                                    .PenStyle.DashLine))
                plot.addItem(line, ignoreBounds=True)
                lines.append(line)
            for line, (x, label) in zip(lines, marks, strict=False):
                line.setPos(x)
                line.setToolTip(label)
                line.setVisible(True)
            for line in lines[len(marks):]:
                line.setVisible(False)

    def count(self) -> int:
        """How many fault lines the first plot shows (for tests and the status)."""
        return sum(1 for line in self.lines[0] if line.isVisible()) if self.lines else 0
