"""What a user notices: plot legends beside the plots and a crosshair with values, the layout
(splitters, open docks, the Timeline's view) back on the next start, keyboard shortcuts for
the selected node and the Frames view, and a dark theme that follows the system."""

from __future__ import annotations

import time

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from tests.support import until
from wsconsole.core.metrics import TimeSeries
from wsconsole.gui.app import ConsoleApp, GuiOptions
from wsconsole.gui.menus import NODE_SHORTCUTS, PAUSE_FRAMES
from wsconsole.gui.panels.plots import PlotsPanel

from .conftest import run


def test_legends_sit_beside_the_plots_and_the_crosshair_reads_values(qtbot) -> None:  # type: ignore[no-untyped-def]
    series = TimeSeries()
    now = time.time()
    for i in range(60):
        series.record(now - 59 + i, [("connections.n1", float(i % 7)),
                                     ("connections.total", 20.0), ("lat.p99", 12.5)])
    panel = PlotsPanel(series)
    qtbot.addWidget(panel)
    panel.timer.stop()
    panel.resize(700, 800)
    panel.show()
    panel.refresh()
    plot = panel.plots[0][0]
    legend = plot.legend
    assert isinstance(legend, pg.LegendItem)
    assert legend.parentItem() is not plot.vb  # not over the lines: in the layout beside
    qtbot.waitUntil(lambda: legend.geometry().left() > 0)  # the layout placed it
    assert legend.geometry().left() >= plot.geometry().right() - 1
    assert [label.text for _, label in legend.items] == ["n1", "total"]
    panel.crosshair.show_at(-10.0)
    assert panel.crosshair.lines[id(plot)].isVisible()
    text = panel.crosshair.texts[id(plot)].toPlainText()
    assert text.startswith("-10.0 s ago") and "total 20" in text and "n1 " in text
    latency = panel.plots[panel.titles.index("Latency")][0]
    assert "p99 12.50" in panel.crosshair.texts[id(latency)].toPlainText()
    # the mouse over a plot moves it; outside every plot hides it
    center = plot.vb.sceneBoundingRect().center()
    panel.crosshair.show_at_scene(center)
    assert panel.crosshair.x is not None and -60 <= panel.crosshair.x <= 0
    panel.crosshair.show_at_scene(pg.QtCore.QPointF(-50, -50))
    assert panel.crosshair.x is None and not panel.crosshair.lines[id(plot)].isVisible()


def test_layout_shortcuts_and_theme_come_back(qloop, settings_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
        app.start()
        w = app.window
        try:
            # every dock scrolls when squeezed: the window fits a 1366x768 laptop screen
            assert w.minimumSizeHint().width() <= 1366 and w.minimumSizeHint().height() <= 700
            # shortcuts: shown in the menus, acting on the selection
            for action, keys in NODE_SHORTCUTS.items():
                assert w.node_actions[action].shortcut() == QKeySequence(keys)
            w.node_actions["kill"].trigger()
            assert w.cluster.message.text() == "select a node to kill"
            assert w.pause_frames_action.shortcut() == QKeySequence(PAUSE_FRAMES)
            w.pause_frames_action.trigger()
            assert w.frames.model.paused and w.frames.pause_button.text() == "Resume"
            w.frames.pause_button.setChecked(False)
            assert not w.pause_frames_action.isChecked()
            # the layout: a splitter, the Timeline's view, a closed dock
            w.frames.splitter.setSizes([500, 120])
            sizes = w.frames.splitter.sizes()
            w.timeline.group_box.setCurrentIndex(w.timeline.group_box.findData("node"))
            w.timeline.window_box.setCurrentText("2 min")
            w.timeline.canvas.expanded = {("node", "n2")}
            w.docks["Live plots"].hide()
            # the theme: dark on request, and the plots follow
            w.choose_theme("dark")
            await until(lambda: w.palette().window().color().lightness() < 80,
                        "the window in dark colours", 5)
            assert w.theme.dark
            assert w.plots.layout_widget.backgroundBrush().color().lightness() < 80
            w.close()
            await app.shutdown()
        finally:
            await app.shutdown()

        again = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
        again.start()
        try:
            w2 = again.window
            assert w2.frames.splitter.sizes() == sizes
            assert w2.timeline.canvas.grouping == "node"
            assert w2.timeline.canvas.window == 120.0
            assert w2.timeline.canvas.expanded == {("node", "n2")}
            assert not w2.docks["Live plots"].isVisible() and w2.docks["Timeline"].isVisible()
            assert w2.theme.choice == "dark" and w2.theme.dark
            assert w2.theme_actions["dark"].isChecked()
            # following the system: its scheme changes, the window follows
            w2.choose_theme("system")
            hints = again.window.theme.app.styleHints()
            hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)
            assert w2.theme.dark
            hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
            assert not w2.theme.dark
            await until(lambda: w2.palette().window().color().lightness() > 160,
                        "the window in light colours", 5)
            assert w2.plots.layout_widget.backgroundBrush().color().lightness() > 160
        finally:
            again.window.choose_theme("system")
            again.window.close()
            await again.shutdown()

    run(qloop, scenario(), 90)
