"""A support bundle opened in the console: its report, frames and timeline in one window.

The bundle's frames go into a FrameStore and its transitions, heartbeats and errors into a
TimelineModel, so the same Frames and Timeline panels as the live console show them (filters,
detail pane, export). The timeline is shifted onto this process's monotonic clock and frozen
at the bundle's last event. A damaged bundle never gets this far: `read_bundle` raises
BundleError with a plain message, which `open_bundle` hands to the caller's error sink.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QLabel,
    QPlainTextEdit,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from wsconsole.app.framestore import FrameStore
from wsconsole.app.timelinemodel import TimelineModel
from wsconsole.core.events import ErrorEvent, HeartbeatEvent
from wsconsole.core.lifecycle import State, Transition
from wsconsole.diagnostics.bundle import Bundle, BundleError, read_bundle, report_html
from wsconsole.gui.panels.frames import FramesPanel
from wsconsole.gui.panels.timeline import TimelinePanel


def load_timeline(model: TimelineModel, rows: list[dict[str, Any]],
                  now: float | None = None) -> tuple[float, float] | None:
    """Feed bundle timeline rows into `model`, shifted so the last one is at `now`.

    Returns the (first, last) monotonic times used, None when there was nothing to show.
    Rows that do not parse are skipped (the reader already checked they are JSON objects).
    """
    walls = [float(r["wall"]) for r in rows if isinstance(r.get("wall"), int | float)]
    if not walls:
        return None
    shift = (time.monotonic() if now is None else now) - max(walls)
    for row in rows:
        wall = row.get("wall")
        if not isinstance(wall, int | float):
            continue
        at = float(wall) + shift
        conn = str(row.get("conn", "bundle"))
        kind = row.get("type")
        try:
            if kind == "transition":
                model.transition(Transition(
                    conn, State(row.get("previous", "CLOSED")), State(row["state"]), at,
                    float(wall), int(row.get("attempt", 0)), row.get("delay"), row.get("code"),
                    row.get("reason"), row.get("error")))
            elif kind == "heartbeat":
                model.heartbeat(HeartbeatEvent(conn, str(row.get("kind")), row.get("rtt"), at,
                                               float(wall)))
            elif kind == "error":
                model(ErrorEvent(conn, str(row.get("kind")), str(row.get("detail", "")), at,
                                 float(wall)))
        except (KeyError, ValueError, TypeError):
            continue
    return min(walls) + shift, max(walls) + shift


class BundleView(QWidget):
    """A top-level window: Report, Frames, Timeline and Versions tabs of one bundle."""

    def __init__(self, bundle: Bundle, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bundle = bundle
        self.setWindowFlag(Qt.WindowType.Window)  # its own window even with a parent
        self.setWindowTitle(f"Support bundle \u2014 {bundle.path.name}")
        self.resize(1200, 800)
        self.store = FrameStore(capacity=max(1024, len(bundle.frames) + 1))
        for record in bundle.frame_records():
            self.store.append(record)
        self.timeline = TimelineModel()
        span = load_timeline(self.timeline, bundle.timeline)

        report = bundle.report
        self.headline = QLabel(f"<b>{_esc(report.get('url', ''))}</b>: "
                               f"{_esc(report.get('headline', ''))}")
        self.headline.setWordWrap(True)
        self.report_view = QTextBrowser()
        self.report_view.setHtml(report_html(report))
        self.frames = FramesPanel(self.store)
        self.timeline_panel = TimelinePanel(self.timeline)
        if span is not None:
            first, last = span
            canvas = self.timeline_panel.canvas
            length = max(1.0, (last - first) * 1.1)
            # the whole bundle fills the canvas; the usual windows stay in the selector
            box = self.timeline_panel.window_box
            box.blockSignals(True)
            box.insertItem(0, f"{length:.1f} s (bundle)")
            box.setCurrentIndex(0)
            box.blockSignals(False)
            canvas.window = length
            canvas.frozen_at = last + (last - first) * 0.05  # the end stays at the right edge
        self.versions = QPlainTextEdit(readOnly=True)
        self.versions.setPlainText(orjson.dumps(bundle.versions,
                                                option=orjson.OPT_INDENT_2).decode())
        self.tabs = QTabWidget()
        self.tabs.addTab(self.report_view, "Report")
        self.tabs.addTab(self.frames, f"Frames ({len(self.store)})")
        self.tabs.addTab(self.timeline_panel, "Timeline")
        self.tabs.addTab(self.versions, "Versions")
        layout = QVBoxLayout(self)
        layout.addWidget(self.headline)
        layout.addWidget(self.tabs, 1)

    def closeEvent(self, event: Any) -> None:
        """Stop the panels' timers with the window."""
        self.frames.timer.stop()
        self.timeline_panel.timer.stop()
        super().closeEvent(event)


def _esc(value: object) -> str:
    import html

    return html.escape(str(value))


def open_bundle(path: str | Path, on_error: Callable[[str], None],
                parent: QWidget | None = None) -> BundleView | None:
    """Read the bundle and show it; a damaged one goes to `on_error` in plain words."""
    try:
        bundle = read_bundle(path)
    except BundleError as exc:
        on_error(f"Cannot open support bundle {Path(path).name}: {exc}")
        return None
    view = BundleView(bundle, parent)
    view.show()
    return view
