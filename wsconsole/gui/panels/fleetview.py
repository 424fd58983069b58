"""The fleet Timeline's canvas: groups with a summary band each, expanding to one lane per
client, painted virtually so a thousand lanes scroll smoothly.

A `QAbstractScrollArea` whose viewport paints only the rows inside it: the row layout (band
rows and lane rows, with their y) is rebuilt when the model's lanes, the grouping or the
expanded groups change, and a paint finds its first row by bisection. Per lane, spans and
markers are walked from the newest back to the window's left edge, so old history costs
nothing. A band is the stacked count of its group's clients per state over time, sampled
once per pixel column and drawn as one polygon per state.

Labels stay inside what they describe (a reconnect attempt's text inside its span, clipped,
or not at all); everything is in the tooltips (hover a span, a marker, a band or a fault).
Clicks are reported as signals: a lane (with the span under the mouse), a band (the group
around that time) or a fault line; the panel turns them into a Frames scope.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QLineF, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPolygonF,
    QResizeEvent,
)
from PySide6.QtWidgets import QAbstractScrollArea, QToolTip, QWidget

from wsconsole.app.fleetbands import BUCKETS
from wsconsole.app.timelinemodel import Lane, Marker, Span, TimelineModel
from wsconsole.gui.theme import NOTICE_COLOR, STATE_COLORS

NAME_W = 118
LANE_H = 18  # a swarm client's lane: a thousand of them must fit
OWN_LANE_H = 26  # the console's own and proxied connections: few, and looked at closely
BAND_H = 36
HEADER_H = 16  # fault labels
AXIS_H = 18
GAP = 2
TICK_WINDOW = 120.0  # heartbeat ticks are drawn up to this window (beyond: a solid smear)
TICKS = {"ping": ("#ffffff", 0.22, 0.45), "sping": ("#1f4e79", 0.17, 0.83),
         "pong": ("#0b3d17", 0.5, 0.78)}  # kind: colour, top and bottom (share of the lane)
LAB_MARKS = ("withheld", "late", "altered", "unsolicited")  # what the heartbeat lab did
MARK_COLORS = {"miss": "#c0392b", "error": "#c0392b", "dropped": "#8e0000",
               **dict.fromkeys(LAB_MARKS, "#8e44ad"),
               "action": "#e67e22", "fault": "#c0392b", "notice": NOTICE_COLOR}
SOURCE_TITLES = {"own": "own connections", "swarm": "swarm", "proxy": "proxied"}


@dataclass(frozen=True, slots=True)
class Row:
    """One painted row: a group's band (lane None) or one client's lane."""

    y: int
    height: int
    key: tuple[str, str]
    lane: Lane | None = None


class FleetView(QAbstractScrollArea):
    """Paints a TimelineModel's groups and lanes for the last `window` seconds."""

    lane_clicked = Signal(object, float)  # Lane, monotonic time under the mouse
    band_clicked = Signal(object, float)  # group key, monotonic time
    fault_clicked = Signal(object)  # Marker

    def __init__(self, model: TimelineModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.window = 30.0
        self.frozen_at: float | None = None  # paused: the right edge stays here
        self.grouping = "source"
        self.expanded: set[tuple[str, str]] = {("source", "own"), ("source", "proxy")}
        self.rows: list[Row] = []
        self._row_tops: list[int] = []
        self._layout_key: tuple[object, ...] = ()
        self._total = 0
        self.paints = 0
        self.setMouseTracking(True)
        self.viewport().setMouseTracking(True)
        self.verticalScrollBar().setSingleStep(LANE_H)
        self.setMinimumHeight(HEADER_H + BAND_H + AXIS_H + 24)
        self._colors = {state: QColor(color) for state, color in STATE_COLORS.items()}
        self._small = QFont(self.font())
        self._small.setPointSizeF(max(6.5, self.font().pointSizeF() * 0.8))

    # -- geometry ---------------------------------------------------------------------------

    def right_edge(self) -> float:
        """Monotonic time drawn at the right border."""
        return self.frozen_at if self.frozen_at is not None else time.monotonic()

    def plot_width(self) -> int:
        """Pixels of the time axis."""
        return max(1, self.viewport().width() - NAME_W - 6)

    def x_of(self, t: float, right: float) -> float:
        """The x of monotonic time `t` with `right` at the right edge."""
        return NAME_W + (t - (right - self.window)) / self.window * self.plot_width()

    def t_of(self, x: float) -> float:
        """The monotonic time at x."""
        right = self.right_edge()
        return right - self.window + (x - NAME_W) / self.plot_width() * self.window

    def content_top(self) -> int:
        """Where the rows start in the viewport (below the fault labels)."""
        return HEADER_H

    def content_height(self) -> int:
        """Height of the scrolled rows area."""
        return max(1, self.viewport().height() - HEADER_H - AXIS_H)

    # -- layout -------------------------------------------------------------------------------

    def relayout(self) -> bool:
        """Rebuild the rows if lanes, grouping or expansion changed; True if it did."""
        key = (len(self.model.lanes), self.grouping, frozenset(self.expanded),
               self._node_version())
        if key == self._layout_key and self.rows:
            return False
        self._layout_key = key
        rows: list[Row] = []
        y = 0
        for group in self.model.bands.groups(self.grouping):
            gkey = (self.grouping, group)
            lanes = self.model.in_group(self.grouping, group)
            if not lanes:
                continue
            rows.append(Row(y, BAND_H, gkey))
            y += BAND_H + GAP
            if gkey in self.expanded:
                for lane in lanes:
                    height = LANE_H if lane.group == "swarm" else OWN_LANE_H
                    rows.append(Row(y, height, gkey, lane))
                    y += height
                y += GAP
        self.rows = rows
        self._row_tops = [row.y for row in rows]
        self._total = y
        bar = self.verticalScrollBar()
        bar.setRange(0, max(0, y - self.content_height()))
        bar.setPageStep(self.content_height())
        return True

    def _node_version(self) -> object:
        if self.grouping != "node":
            return None
        return tuple(lane.node for lane in self.model.lanes.values())

    def total_height(self) -> int:
        """Height of every row together (the scrolled content)."""
        return self._total

    def row_at(self, y: float) -> Row | None:
        """The row under viewport y."""
        content_y = y - self.content_top() + self.verticalScrollBar().value()
        index = bisect.bisect_right(self._row_tops, content_y) - 1
        if 0 <= index < len(self.rows):
            row = self.rows[index]
            if row.y <= content_y < row.y + row.height:
                return row
        return None

    def toggle(self, key: tuple[str, str]) -> None:
        """Expand a collapsed group, collapse an expanded one."""
        self.expanded ^= {key}
        self.relayout()
        self.viewport().update()

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Keep the scroll range right for the new height."""
        super().resizeEvent(event)
        self._layout_key = ()
        self.relayout()

    # -- painting ------------------------------------------------------------------------------

    def paintEvent(self, _event: QPaintEvent) -> None:
        """Grid, bands and lanes in view, fault lines, the fault labels and the time axis."""
        self.relayout()
        self.model.bands.flush(time.monotonic())
        painter = QPainter(self.viewport())
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        palette = self.palette()
        painter.fillRect(self.viewport().rect(), palette.base())
        right = self.right_edge()
        left = right - self.window
        text_pen = QPen(palette.text().color())
        self._grid(painter, right, text_pen)
        top = self.content_top()
        scroll = self.verticalScrollBar().value()
        painter.save()
        painter.setClipRect(QRect(0, top, self.viewport().width(), self.content_height()))
        first = max(0, bisect.bisect_right(self._row_tops, scroll) - 1)
        bottom = scroll + self.content_height()
        for row in self.rows[first:]:
            if row.y > bottom:
                break
            y = top + row.y - scroll
            if row.lane is None:
                self._band(painter, row, y, left, right, text_pen)
            else:
                self._lane(painter, row.lane, y, row.height, left, right, text_pen)
        painter.restore()
        self._faults(painter, left, right)
        if not self.rows:
            painter.setPen(text_pen)
            painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter,
                             "no connections yet")
        painter.end()
        self.paints += 1

    def _grid(self, painter: QPainter, right: float, text_pen: QPen) -> None:
        step = nice_step(self.window)
        tick = (int((right - self.window) / step) + 1) * step
        axis_y = self.viewport().height() - AXIS_H
        grid = QPen(QColor(128, 128, 128, 60))
        painter.setFont(self._small)
        while tick <= right:
            x = self.x_of(tick, right)
            painter.setPen(grid)
            painter.drawLine(QPointF(x, HEADER_H), QPointF(x, axis_y))
            painter.setPen(text_pen)
            painter.drawText(QPointF(x + 2, self.viewport().height() - 5), f"-{right - tick:.0f}s")
            tick += step
        painter.setFont(self.font())

    def _band(self, painter: QPainter, row: Row, y: int, left: float, right: float,
              text_pen: QPen) -> None:
        key = row.key
        lanes = len(self.model.in_group(*key))
        mark = "\u25be" if key in self.expanded else "\u25b8"
        title = SOURCE_TITLES.get(key[1], key[1]) if key[0] == "source" else f"node {key[1]}"
        painter.fillRect(QRectF(0, y, self.viewport().width(), row.height),
                         self.palette().alternateBase())
        painter.setPen(text_pen)
        painter.drawText(QRectF(4, y + 1, NAME_W - 8, row.height / 2),
                         Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                         f"{mark} {title}")
        now = self.model.bands.now(key)
        painter.setFont(self._small)
        painter.drawText(QRectF(14, y + row.height / 2, NAME_W - 18, row.height / 2 - 1),
                         Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                         f"{now['OPEN']}/{lanes} open")
        painter.setFont(self.font())
        times, counts = self.model.bands.window(key, left)
        if not len(times):
            return
        width = self.plot_width()
        columns = left + (np.arange(width) + 0.5) / width * self.window
        index = np.searchsorted(times, columns, side="right") - 1
        valid = index >= 0
        sampled = np.zeros((width, len(BUCKETS)))
        sampled[valid] = counts[index[valid]]
        stacked = np.cumsum(sampled, axis=1)
        scale = (row.height - 4) / max(1.0, float(stacked[:, -1].max()), float(lanes))
        base = y + row.height - 2
        xs = NAME_W + np.arange(width + 1, dtype=float)
        below = np.zeros(width)
        for column, name in enumerate(BUCKETS):
            above = stacked[:, column]
            if not above.any():
                below = above
                continue
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(STATE_COLORS[name]))
            painter.drawPolygon(_step_polygon(xs, base - above * scale, base - below * scale))
            below = above
        painter.setBrush(Qt.BrushStyle.NoBrush)

    def _lane(self, painter: QPainter, lane: Lane, y: int, h: int, left: float, right: float,
              text_pen: QPen) -> None:
        painter.setPen(text_pen)
        painter.setFont(self._small)
        painter.drawText(QRectF(16, y, NAME_W - 20, h),
                         Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, lane.label)
        scale = self.plot_width() / self.window  # x = origin + t * scale, inlined: hot loops
        origin = NAME_W - left * scale
        for span in reversed(lane.spans):
            end = span.end if span.end is not None else right
            if end < left:
                break
            if span.start > right:
                continue
            x0 = origin + max(span.start, left) * scale
            box = QRectF(x0, y + 3, max(1.0, origin + min(end, right) * scale - x0), h - 6)
            painter.fillRect(box, self._colors[span.state.value])
            if span.delay is not None and box.width() > 40:
                painter.setPen(QColor("#ffffff"))
                painter.drawText(box.adjusted(3, 0, -2, 0),
                                 Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                                 _elide(painter, f"attempt {span.attempt} in {span.delay:.1f} s",
                                        box.width() - 5))
        painter.setFont(self.font())
        ticks: dict[str, list[QLineF]] = {}
        draw_ticks = self.window <= TICK_WINDOW
        for marker in reversed(lane.markers):
            if marker.at < left:
                break
            if marker.at > right:
                continue
            tick = TICKS.get(marker.kind)
            if tick is None:
                self._marker(painter, marker, origin + marker.at * scale, y, h)
            elif draw_ticks:
                x = origin + marker.at * scale
                ticks.setdefault(marker.kind, []).append(
                    QLineF(x, y + h * tick[1], x, y + h * tick[2]))
        for kind, lines in ticks.items():  # one call per kind: cheap with many lanes
            painter.setPen(QPen(QColor(TICKS[kind][0]), 1))
            painter.drawLines(lines)

    def _marker(self, painter: QPainter, marker: Marker, x: float, y: int, h: int) -> None:
        kind = marker.kind
        if kind != "attempt":
            color = QColor(MARK_COLORS.get(kind, "#c0392b"))
            lab = kind in LAB_MARKS  # hollow: nothing went wrong yet
            painter.setPen(QPen(color, 2 if lab else 1))
            painter.setBrush(QColor("#f3e5f5") if lab else color)
            size = (4 if kind in ("dropped", "miss", "error", "notice") else 3) * h / LANE_H
            painter.drawPolygon(QPolygonF([QPointF(x, y + h - 3),
                                           QPointF(x - size, y + 2),
                                           QPointF(x + size, y + 2)]))
            painter.setBrush(Qt.BrushStyle.NoBrush)

    def _faults(self, painter: QPainter, left: float, right: float) -> None:
        pen = QPen(QColor("#c0392b"), 1, Qt.PenStyle.DashLine)
        bottom = self.viewport().height() - AXIS_H
        painter.setFont(self._small)
        last_label_end = -1.0
        for marker in self.model.faults:
            if not left <= marker.at <= right:
                continue
            x = self.x_of(marker.at, right)
            painter.setPen(pen)
            painter.drawLine(QPointF(x, 0), QPointF(x, bottom))
            if x > last_label_end:  # labels never overlap; the tooltip has every one
                text = _elide(painter, marker.label, 180)
                painter.setPen(QColor("#c0392b"))
                painter.drawText(QPointF(x + 3, HEADER_H - 4), text)
                last_label_end = x + painter.fontMetrics().horizontalAdvance(text) + 8
        painter.setFont(self.font())

    # -- the mouse -------------------------------------------------------------------------------

    def fault_near(self, x: float, slack: float = 4.0) -> Marker | None:
        """The fault marker drawn within `slack` pixels of x."""
        right = self.right_edge()
        best = None
        for marker in self.model.faults:
            distance = abs(self.x_of(marker.at, right) - x)
            if distance <= slack and (best is None or distance < best[0]):
                best = (distance, marker)
        return best[1] if best else None

    def describe(self, x: float, y: float) -> str | None:
        """The tooltip text at (x, y) of the viewport."""
        if x >= NAME_W:
            fault = self.fault_near(x)
            if fault is not None and (y < HEADER_H or self.row_at(y) is None):
                return f"{fault.label} (click: who it affected)"
        row = self.row_at(y)
        if row is None:
            return None
        t = self.t_of(x)
        if row.lane is None:
            counts = self.model.bands.now(row.key)
            return (f"{row.key[1]}: " + ", ".join(f"{v} {k}" for k, v in counts.items())
                    + "\nclick the name to expand or collapse; the band: frames of the group")
        lane = row.lane
        if x < NAME_W:
            return f"{lane.name} ({lane.group}{', node ' + lane.node if lane.node else ''})"
        marker = _marker_near(lane, t, self.window / self.plot_width() * 4)
        if marker is not None and marker.kind != "attempt":
            return f"{lane.label}: {marker.label or marker.kind}"
        span = _span_at(lane, t)
        if span is None:
            return lane.label
        end = span.end if span.end is not None else self.right_edge()
        parts = [f"{lane.label}: {span.state.value} for {end - span.start:.2f} s"]
        if span.delay is not None:
            parts.append(f"attempt {span.attempt}, waiting {span.delay:.2f} s")
        if span.detail:
            parts.append(span.detail)
        return "\n".join(parts)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        """Tooltips follow the mouse."""
        pos = event.position()
        text = self.describe(pos.x(), pos.y())
        if text:
            QToolTip.showText(event.globalPosition().toPoint(), text, self.viewport())
        else:
            QToolTip.hideText()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        """Click: a fault line, a group's name (expand), a band or a lane."""
        if event.button() != Qt.MouseButton.LeftButton:
            return
        pos = event.position()
        self.click(pos.x(), pos.y())

    def click(self, x: float, y: float) -> None:
        """What a left click at (x, y) of the viewport does (tests call it too)."""
        if x >= NAME_W:
            fault = self.fault_near(x)
            if fault is not None and (y < HEADER_H or self.row_at(y) is None
                                      or self.row_at(y).lane is None):  # type: ignore[union-attr]
                self.fault_clicked.emit(fault)
                return
        row = self.row_at(y)
        if row is None:
            return
        if row.lane is None:
            if x < NAME_W:
                self.toggle(row.key)
            else:
                self.band_clicked.emit(row.key, self.t_of(x))
        else:
            self.lane_clicked.emit(row.lane, self.t_of(max(x, NAME_W)))


def nice_step(window: float) -> float:
    """A round tick step for a window of `window` seconds (about ten ticks)."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300):
        if window / step <= 10:
            return float(step)
    return 600.0


def _step_polygon(xs: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> QPolygonF:
    """A polygon between two step functions given per column, with vertices only where a
    value changes (a quiet band is a rectangle, however wide)."""
    points: list[QPointF] = []
    for values, backwards in ((top, False), (bottom, True)):
        change = np.flatnonzero(np.diff(values)) + 1
        steps: list[QPointF] = []
        for start, end in zip(np.r_[0, change], np.r_[change, len(values)], strict=True):
            steps += [QPointF(xs[start], values[start]), QPointF(xs[end], values[start])]
        points += steps[::-1] if backwards else steps
    return QPolygonF(points)


def _elide(painter: QPainter, text: str, width: float) -> str:
    return painter.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, int(width))


def _span_at(lane: Lane, t: float) -> Span | None:
    for span in reversed(lane.spans):
        if span.start <= t:
            return span if span.end is None or t <= span.end else None
    return None


def _marker_near(lane: Lane, t: float, slack: float) -> Marker | None:
    best = None
    for marker in reversed(lane.markers):
        if marker.at < t - slack:
            break
        distance = abs(marker.at - t)
        if distance <= slack and (best is None or distance < best[0]):
            best = (distance, marker)
    return best[1] if best else None


__all__ = ["BAND_H", "LANE_H", "NAME_W", "FleetView", "Row", "nice_step"]
