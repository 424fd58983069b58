"""Timeline panel: the fleet of clients, grouped, with a summary band per group.

Every client the console knows has a lane: its own connections, the swarm's clients and the
proxied connections, grouped by source (own / swarm / proxy) or by the node serving them.
Each group starts as a band (how many of its clients are CONNECTING, OPEN, RECONNECTING or
CLOSED over time) that expands into its lanes (fleetview.py paints them virtually). A click
on a lane, a band or a fault asks for a Frames scope (`scope_requested`: those clients,
that time); a fault also opens the side panel with who it affected and how long each took
to come back (faultpanel.py).

Painted from the headless TimelineModel on a 5 Hz timer; no signal per event.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.faultimpact import impact
from wsconsole.app.timelinemodel import Lane, Marker, TimelineModel
from wsconsole.gui.panels.faultpanel import FaultPanel
from wsconsole.gui.panels.fleetview import FleetView
from wsconsole.gui.theme import NOTICE_COLOR, STATE_COLORS

WINDOWS = {"30 s": 30.0, "1 min": 60.0, "2 min": 120.0, "5 min": 300.0, "15 min": 900.0}
GROUPINGS = {"source": "own / swarm / proxy", "node": "node"}
LEGEND = (" ".join(f'<span style="background:{c}; color:white">&nbsp;{s[:4]}&nbsp;</span>'
                   for s, c in STATE_COLORS.items() if s != "CLOSING")
          + ' <span style="color:#c0392b">\u25bc miss \u2506 fault</span>'
          ' <span style="color:#8e44ad">\u25bd pong lab</span>'
          ' <span style="color:#e67e22">\u25bc proxy</span>'
          f' <span style="color:{NOTICE_COLOR}">\u25bc reset / window</span>')


class TimelinePanel(QWidget):
    """The fleet view with its window, pause, grouping and expand controls, and the fault
    side panel."""

    scope_requested = Signal(object, float, float, str)  # lane names, wall from, to, label

    def __init__(self, model: TimelineModel, parent: QWidget | None = None,
                 refresh_ms: int = 200) -> None:
        super().__init__(parent)
        self.model = model
        self.canvas = FleetView(model)
        self.fault_panel = FaultPanel()
        self.fault_panel.hide()
        self.window_box = QComboBox()
        self.window_box.addItems(list(WINDOWS))
        self.window_box.setCurrentText("30 s")
        self.pause_button = QToolButton(text="Pause", checkable=True)
        self.group_box = QComboBox()
        for key, label in GROUPINGS.items():
            self.group_box.addItem(label, key)
        self.expand_button = QToolButton(text="Expand all")
        self.collapse_button = QToolButton(text="Collapse all")
        self.status = QLabel()
        legend = QLabel(LEGEND, toolTip=LEGEND)
        for label in (self.status, legend):  # clipped, not widening the dock, when narrow
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("window"))
        bar.addWidget(self.window_box)
        bar.addWidget(self.pause_button)
        bar.addWidget(QLabel("group by"))
        bar.addWidget(self.group_box)
        bar.addWidget(self.expand_button)
        bar.addWidget(self.collapse_button)
        bar.addWidget(self.status, 1)
        bar.addWidget(legend)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("timeline-splitter")
        self.splitter.addWidget(self.canvas)
        self.splitter.addWidget(self.fault_panel)
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.splitter, 1)

        self.window_box.currentTextChanged.connect(self._set_window)
        self.pause_button.toggled.connect(self._set_paused)
        self.group_box.currentIndexChanged.connect(self._set_grouping)
        self.expand_button.clicked.connect(lambda: self.expand_all(True))
        self.collapse_button.clicked.connect(lambda: self.expand_all(False))
        self.canvas.lane_clicked.connect(self.show_lane)
        self.canvas.band_clicked.connect(self.show_band)
        self.canvas.fault_clicked.connect(self.show_fault)
        self.fault_panel.scope_requested.connect(self._scope_monotonic)
        self.fault_panel.closed.connect(self.fault_panel.hide)
        self._set_window(self.window_box.currentText())
        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    # -- controls ---------------------------------------------------------------------------

    def _set_window(self, text: str) -> None:
        self.canvas.window = WINDOWS.get(text, 60.0)
        self.canvas.viewport().update()

    def _set_paused(self, paused: bool) -> None:
        self.canvas.frozen_at = time.monotonic() if paused else None
        self.pause_button.setText("Resume" if paused else "Pause")

    def _set_grouping(self) -> None:
        self.canvas.grouping = self.group_box.currentData()
        self.canvas.relayout()
        self.canvas.viewport().update()

    def expand_all(self, expand: bool) -> None:
        """Expand (or collapse) every group of the current grouping."""
        grouping = self.canvas.grouping
        keys = {(grouping, group) for group in self.model.bands.groups(grouping)}
        self.canvas.expanded = (self.canvas.expanded | keys) if expand else \
            (self.canvas.expanded - keys)
        self.canvas.relayout()
        self.canvas.viewport().update()

    # -- clicks to scopes --------------------------------------------------------------------------

    def show_lane(self, lane: Lane, at: float) -> None:
        """A lane was clicked: its frames during the state span under the mouse."""
        span = next((s for s in reversed(lane.spans) if s.start <= at), None)
        if span is None:
            since, until, what = at - 2.0, at + 2.0, "around the click"
        else:
            end = span.end if span.end is not None else time.monotonic()
            since, until, what = span.start - 0.5, end + 0.5, f"while {span.state.value}"
        self._scope_monotonic([lane.name], since, until, f"{lane.label} {what}")

    def show_band(self, key: tuple[str, str], at: float) -> None:
        """A band was clicked: the frames of its group within a few seconds of the click."""
        lanes = [lane.name for lane in self.model.in_group(*key)]
        pad = max(2.0, self.canvas.window / 30)
        self._scope_monotonic(lanes, at - pad, at + pad, f"group {key[1]}")

    def show_fault(self, marker: Marker) -> FaultPanel:
        """A fault was clicked: the side panel with its impact, and the affected clients'
        frames around it."""
        found = impact(self.model, marker)
        self.fault_panel.show_impact(found)
        self.fault_panel.show()
        if self.splitter.sizes()[1] < 120:
            total = sum(self.splitter.sizes())
            self.splitter.setSizes([max(100, total - 300), 300])
        self.fault_panel.request_all()
        return self.fault_panel

    def _scope_monotonic(self, lanes: list[str], since: float, until: float, label: str) -> None:
        offset = time.time() - time.monotonic()
        self.scope_requested.emit(lanes, since + offset, until + offset, label)

    # -- the clock -------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Timer tick: the status line, and a repaint (the time axis slides)."""
        lanes = len(self.model.lanes)
        groups = len(self.canvas.rows) and sum(1 for r in self.canvas.rows if r.lane is None)
        dropped = f", {self.model.swarm_dropped} swarm events dropped" \
            if self.model.swarm_dropped else ""
        self.status.setText(f"{lanes} lanes in {groups} groups{dropped}")
        if self.canvas.frozen_at is None:
            self.canvas.viewport().update()


__all__ = ["GROUPINGS", "WINDOWS", "TimelinePanel"]
