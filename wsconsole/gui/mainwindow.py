"""The main window: docks around the Frames table, a Log dock for errors, QSettings state.

Thin: it builds one panel per dock, each given its model from the Console, and persists
window geometry, dock layout, splitter sizes and the Timeline's view (layoutstate.py), the
theme, connection profiles and composer templates. Menus carry the keyboard shortcuts
(menus.py). Closing it asks the application (app.py) to shut the console down; it never
stops processes itself.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QFrame,
    QMainWindow,
    QMenu,
    QPlainTextEdit,
    QScrollArea,
    QWidget,
)

from wsconsole import __version__
from wsconsole.app.console import CONSOLE_CONN, Console
from wsconsole.app.errors import Report
from wsconsole.app.profiles import Profile
from wsconsole.app.stacks import remember
from wsconsole.app.swarmlink import SwarmControlError
from wsconsole.gui.dialogs.help import install_help_menu
from wsconsole.gui.layoutstate import restore_layout, save_layout
from wsconsole.gui.menus import install_cluster_menu, install_view_extras
from wsconsole.gui.panels.cluster import ClusterPanel
from wsconsole.gui.panels.composer import ComposerPanel
from wsconsole.gui.panels.connection import ConnectionPanel
from wsconsole.gui.panels.faultmarks import FaultMarks
from wsconsole.gui.panels.frames import FramesPanel
from wsconsole.gui.panels.har import install_har_menu
from wsconsole.gui.panels.heartbeat import HeartbeatPanel
from wsconsole.gui.panels.inject import InjectPanel
from wsconsole.gui.panels.intercept import InterceptPanel
from wsconsole.gui.panels.network import NetworkPanel
from wsconsole.gui.panels.nodeoutput import NodeOutputPanel
from wsconsole.gui.panels.plots import PlotsPanel
from wsconsole.gui.panels.scenarios import ScenariosPanel
from wsconsole.gui.panels.timeline import TimelinePanel
from wsconsole.gui.theme import Theme

SETTINGS_VERSION = 1


class MainWindow(QMainWindow):
    """Connection, Cluster, Plots, Timeline, Composer, Intercept and Log docks around the
    Frames table."""

    closing = Signal()  # the user asked to close: app.py shuts down, then closes for real

    def __init__(self, console: Console, settings: QSettings,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.console = console
        self.settings = settings
        self.allow_close = False
        self.saved = False  # settings written at least once (a Ctrl-C skips the close button)
        self.setWindowTitle(f"wsconsole {__version__}")
        self.setObjectName("MainWindow")
        self.setDockNestingEnabled(True)
        app = QApplication.instance()
        assert isinstance(app, QApplication)
        self.theme = Theme(app, str(settings.value("view/theme", "system")), self)

        self.frames = FramesPanel(console.frames)
        self.setCentralWidget(self.frames)
        self.connection = ConnectionPanel(console)
        self.cluster = ClusterPanel(console)
        self.plots = PlotsPanel(console.series, pull=console.sample_clients)
        self.timeline = TimelinePanel(console.timeline)
        self.timeline.scope_requested.connect(self.show_scope)
        self.composer = ComposerPanel(console)
        # a schema loaded in the Frames' detail pane is a Composer format too
        self.frames.detail.decoding_changed.connect(self.composer.sync_formats)
        self.inject = InjectPanel(console)
        self.network = NetworkPanel(console)
        self.scenarios = ScenariosPanel(console)
        self.intercept = InterceptPanel(console)
        self.heartbeat = HeartbeatPanel(console)
        self.fault_marks = FaultMarks(self.plots, console.timeline)
        self.node_output = NodeOutputPanel(console)
        self.log_view = QPlainTextEdit(readOnly=True)
        self.log_view.setMaximumBlockCount(2000)

        self.docks: dict[str, QDockWidget] = {}
        self._dock("Connection", self.connection, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Cluster", self.cluster, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Live plots", self.plots, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Timeline", self.timeline, Qt.DockWidgetArea.BottomDockWidgetArea)
        self._dock("Composer", self.composer, Qt.DockWidgetArea.BottomDockWidgetArea)
        self._dock("Log", self.log_view, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.splitDockWidget(self.docks["Timeline"], self.docks["Composer"],
                             Qt.Orientation.Horizontal)
        self.tabifyDockWidget(self.docks["Composer"], self.docks["Log"])
        self._dock("Inject", self.inject, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.docks["Composer"], self.docks["Inject"])
        self._dock("Scenarios", self.scenarios, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.docks["Composer"], self.docks["Scenarios"])
        self._dock("Intercept", self.intercept, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.docks["Composer"], self.docks["Intercept"])
        self._dock("Heartbeat lab", self.heartbeat, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.docks["Composer"], self.docks["Heartbeat lab"])
        self._dock("Network", self.network, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.tabifyDockWidget(self.docks["Cluster"], self.docks["Network"])
        self._dock("Node output", self.node_output, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.docks["Composer"], self.docks["Node output"])
        self.cluster.output_requested.connect(self.show_node_output)
        self.docks["Cluster"].raise_()
        self.docks["Composer"].raise_()
        self.resize(1600, 1000)
        left = max(360, self.cluster.minimumSizeHint().width() + 16)  # its buttons in view
        self.resizeDocks([self.docks["Connection"], self.docks["Live plots"]], [left, 420],
                         Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Timeline"]], [240], Qt.Orientation.Vertical)
        tall = self.cluster.sizeHint().height() + 24  # the Cluster panel whole, with title
        self.resizeDocks([self.docks["Connection"], self.docks["Cluster"]], [300, tall],
                         Qt.Orientation.Vertical)

        view_menu = self.menuBar().addMenu("&View")
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        self.pause_frames_action, self.theme_actions = install_view_extras(self, view_menu)
        self.theme.changed.connect(self.plots.restyle)
        self.plots.restyle(self.theme.dark)
        self.node_actions = install_cluster_menu(self)
        file_menu = self.menuBar().addMenu("&File")
        self.open_stack_action = QAction("Open &stack…", self)
        self.open_stack_action.setToolTip("run your own nodes as a stack file describes them")
        self.open_stack_action.triggered.connect(self.choose_stack)
        file_menu.addAction(self.open_stack_action)
        self.recent_menu = QMenu("Recent stacks", self)
        file_menu.addMenu(self.recent_menu)
        file_menu.addSeparator()
        self.har = install_har_menu(self, file_menu, console, self.connection.selected_name)
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        self.help_menu = install_help_menu(self)  # About, Diagnose, support bundle, logs

        console.errors.listeners.append(self.show_report)
        self.connection.profiles_changed.connect(self.save_profiles)
        self.restore()

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        """A dock holding `widget` in a scroll area: squeezed, a panel scrolls instead of
        forcing its minimum size on the window (without it, the docks' minimums summed to
        1838x1257 pixels, more than a laptop's screen)."""
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title.lower().replace(' ', '-')}")
        holder = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        holder.setWidget(widget)
        dock.setWidget(holder)
        self.addDockWidget(area, dock)
        self.docks[title] = dock
        return dock

    def choose_theme(self, choice: str) -> None:
        """View > Theme: "system" (follow it), "light" or "dark"; remembered."""
        self.theme.choose(choice)
        self.settings.setValue("view/theme", self.theme.choice)

    # -- the Timeline's clicks
    def show_scope(self, lanes: list[str], since: float, until: float, label: str) -> None:
        """Scope the Frames view to `lanes` in a time range; swarm clients' frames are
        fetched from the swarm first (it keeps their last frames)."""
        self.frames.set_scope(lanes, since, until, label)

        async def fetch() -> None:
            try:
                added = await self.console.fetch_swarm_frames(lanes, since, until)
            except SwarmControlError as exc:
                if not self.console.closing:
                    self.console.errors.report(f"swarm frames for {label}: {exc}")
                return
            if added:
                self.console.errors.info(f"{added} frame(s) of swarm clients fetched for "
                                         f"{label}")

        self.console.spawn(fetch(), "fetch swarm frames")
    # -- stacks
    def recent_stacks(self) -> list[str]:
        """Stack files opened before, newest first."""
        recent = _load_json(self.settings.value("stacks/recent", "[]"), [])
        return [p for p in recent if isinstance(p, str)] if isinstance(recent, list) else []

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.recent_stacks():
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _=False, p=path: self.open_stack(p))
        self.recent_menu.setEnabled(bool(self.recent_stacks()))

    def choose_stack(self) -> None:
        """File > Open stack…: pick a stack file, then run it."""
        start = next(iter(self.recent_stacks()), str(Path.cwd()))
        path, _ = QFileDialog.getOpenFileName(self, "Open stack", str(Path(start).parent),
                                              "Stack files (*.toml);;All files (*)")
        if path:
            self.open_stack(path)

    def open_stack(self, path: str, swarm_clients: int = 20) -> asyncio.Task[Any]:
        """Run the stack in `path` in place of the current cluster (errors go to the Log),
        with `swarm_clients` simulated users on its recipe; the task starting it."""
        self.settings.setValue("stacks/recent",
                               orjson.dumps(remember(self.recent_stacks(), path)).decode())
        self._fill_recent()
        self.setWindowTitle(f"wsconsole {__version__} — {Path(path).name}")
        self.docks["Cluster"].raise_()
        return self.console.spawn(self.console.start_stack(path, swarm_clients),
                                  f"open stack {path}")

    def show_node_output(self, node_id: str) -> None:
        """Raise the Node output dock on `node_id`."""
        self.node_output.show_node(node_id)
        self.docks["Node output"].show()
        self.docks["Node output"].raise_()

    # -- errors
    def show_report(self, report: Report) -> None:
        """Errors and notices land in the Log dock and the status bar."""
        stamp = time.strftime("%H:%M:%S", time.localtime(report.wall or time.time()))
        self.log_view.appendPlainText(f"{stamp} {report.level.upper():5} {report.summary}")
        if report.details:
            self.log_view.appendPlainText(report.details.rstrip())
        self.statusBar().showMessage(report.summary, 15_000 if report.level == "error" else 5000)

    # -- persistence
    def restore(self) -> None:
        """Window geometry, dock layout, saved profiles and templates from QSettings."""
        s = self.settings
        if s.value("version", 0, int) == SETTINGS_VERSION:
            geometry = s.value("window/geometry")
            state = s.value("window/state")
            if geometry is not None:
                self.restoreGeometry(geometry)
            if state is not None:
                self.restoreState(state, SETTINGS_VERSION)
            restore_layout(self, s)
        self.composer.set_templates(_load_json(s.value("composer/templates", "{}"), {}))
        self._fill_recent()
        for data in _load_json(s.value("connections/profiles", "[]"), []):
            if not isinstance(data, dict):
                continue
            profile = Profile.from_dict(data)
            if profile.name and profile.name != CONSOLE_CONN and \
                    profile.name not in self.console.sessions:
                self.console.add_session(profile)

    def save_profiles(self) -> None:
        """Saved connections without their tokens (the demo's own client is not saved)."""
        profiles = [{**s.profile.as_dict(), "token": ""}  # secrets stay out of settings
                    for s in self.console.sessions.values() if s.name != CONSOLE_CONN]
        self.settings.setValue("connections/profiles", orjson.dumps(profiles).decode())

    def save(self) -> None:
        """Everything that persists."""
        s = self.settings
        s.setValue("version", SETTINGS_VERSION)
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState(SETTINGS_VERSION))
        save_layout(self, s)
        s.setValue("composer/templates", orjson.dumps(self.composer.templates).decode())
        self.save_profiles()
        s.sync()
        self.saved = True

    def closeEvent(self, event: QCloseEvent) -> None:
        """First close: save and ask for shutdown; the app closes us once everything stopped."""
        if self.allow_close:
            if not self.saved:
                self.save()
            event.accept()
            return
        event.ignore()
        self.save()
        self.closing.emit()

    def stop_timers(self) -> None:
        """Stop the panels' refresh timers (before the console goes away)."""
        for panel in (self.frames, self.connection, self.cluster, self.plots, self.timeline,
                      self.inject, self.network, self.fault_marks, self.scenarios,
                      self.intercept, self.heartbeat, self.node_output):
            panel.timer.stop()


def _load_json(value: object, default: object) -> object:
    if not isinstance(value, str | bytes):
        return default
    try:
        loaded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return default
    return loaded if isinstance(loaded, type(default)) else default
