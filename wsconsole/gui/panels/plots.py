"""Live plots panel (pyqtgraph): connections, msgs/s, bytes/s, latency, reconnects, RTT.

Messages and bytes per second are per node (in and out) and for the whole cluster; for a
stack of the user's own nodes they are the balancer's count of the frames on the wire. A
stack's scraped /metrics series appear in an "App metrics" plot once the first one arrives,
and a cluster broker's publishes per second of each shard in a "Shard publishes / s" plot.

Each plot's legend sits beside it (never over the lines) and a crosshair follows the mouse
with every curve's value at that moment (gui/plotaids.py).

Like pyqtgraph's scrollingPlots example: curves are redrawn from the console's one
`TimeSeries` on a QTimer (4 Hz), with peak downsampling, clip-to-view and skipFiniteCheck;
never per sample. The timer is the one clock between the data and the screen: the cluster's
figures are already in the series (recorded with every `stats` event), and each tick first
pulls the console's own figures (`pull`) before it redraws.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from wsconsole.core.metrics import TimeSeries
from wsconsole.gui.plotaids import Crosshair, legend_beside
from wsconsole.gui.theme import PALETTE, Theme, plot_colors

WINDOWS = {"30 s": 30.0, "1 min": 60.0, "5 min": 300.0, "15 min": 900.0, "1 h": 3600.0}

# (title, unit, series-name prefixes): the cluster's names are harness/stats.py's
# `ClusterSample.points()`, the console's own are app/console.py's `sample_clients`.
PLOTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Connections", "", ("connections.", "conns.")),
    ("Messages / s", "", ("msgs_in_per_s.", "msgs_out_per_s.", "msgs.", "client.")),
    ("Bytes / s", "B/s", ("bytes_in_per_s.", "bytes_out_per_s.")),
    ("Latency", "ms", ("lat.",)),
    ("Reconnects / s", "", ("reconnects",)),
    ("Heartbeat RTT", "ms", ("rtt.",)),
)
# Added under the others when their first series arrives: a stack's scraped /metrics, and
# the publishes per second of each shard of a cluster broker.
APP_METRICS = ("App metrics", "", ("metric.",))
SHARD_PUBLISHES = ("Shard publishes / s", "", ("publishes_per_s.",))
OPTIONAL_PLOTS = (APP_METRICS, SHARD_PUBLISHES)
DIRECTIONS = {"msgs_in_per_s": "in", "msgs_out_per_s": "out", "bytes_in_per_s": "in",
              "bytes_out_per_s": "out"}
TOTAL_CONNECTIONS = "connections.total"
TOTAL_IN = "msgs_in_per_s.total"
LABELS = {
    TOTAL_CONNECTIONS: "total",
    "conns.swarm": "swarm",
    TOTAL_IN: "cluster in",
    "msgs_out_per_s.total": "cluster out",
    "bytes_in_per_s.total": "cluster in",
    "bytes_out_per_s.total": "cluster out",
    "client.in": "console in",
    "client.out": "console out",
    "lat.p50": "p50",
    "lat.p95": "p95",
    "lat.p99": "p99",
    "reconnects": "reconnects",
}


def _label(name: str) -> str:
    """Legend text: a fixed label; a node's rate as "n1 in"; a scraped series as
    "name n1"; else what follows the first dot (a node id, a name)."""
    if name in LABELS:
        return LABELS[name]
    kind, _, rest = name.partition(".")
    if kind in DIRECTIONS:
        return f"{rest} {DIRECTIONS[kind]}"
    if kind == "publishes_per_s":
        return f"{rest} publishes"
    if kind == "metric":
        metric, _, node = rest.rpartition(".")
        return f"{metric} {node}"
    return rest or name


class PlotsPanel(QWidget):
    """Stacked plots sharing a time window; curves appear as series appear, and the
    optional plots with their first series."""

    def __init__(self, series: TimeSeries, parent: QWidget | None = None,
                 refresh_ms: int = 250, pull: Callable[[], object] | None = None) -> None:
        super().__init__(parent)
        self.series = series
        self.pull = pull
        self.window = 60.0
        self.paused = False
        self.redraws = 0
        pg.setConfigOptions(antialias=False, foreground="#444", background="w")
        self.layout_widget = pg.GraphicsLayoutWidget()
        self.plots: list[tuple[pg.PlotItem, tuple[str, ...]]] = []
        self.titles: list[str] = []
        self._dark = False
        self.curves: dict[str, pg.PlotDataItem] = {}
        for title, unit, prefixes in PLOTS:
            self._add_plot(title, unit, prefixes)
        self.crosshair = Crosshair(self.layout_widget, lambda: [p for p, _ in self.plots])

        self.window_box = QComboBox()
        self.window_box.addItems(list(WINDOWS))
        self.window_box.setCurrentText("1 min")
        self.pause_button = QToolButton(text="Pause", checkable=True)
        self.summary = QLabel(wordWrap=True)  # wraps in a narrow dock, never widens it
        bar = QHBoxLayout()
        bar.addWidget(QLabel("window"))
        bar.addWidget(self.window_box)
        bar.addWidget(self.pause_button)
        bar.addWidget(self.summary, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(bar)
        layout.addWidget(self.layout_widget, 1)
        self.window_box.currentTextChanged.connect(self._set_window)
        self.pause_button.toggled.connect(self._set_paused)

        self._seen_version = -1
        self.timer = QTimer(self, interval=refresh_ms)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    def restyle(self, dark: bool = False) -> None:
        """Background, axes, titles, legends and the crosshair in the theme's colours."""
        background, foreground = plot_colors(Theme.palette())  # the app's: widgets follow later
        self.layout_widget.setBackground(background)
        self._dark = dark
        for (plot, _), title in zip(self.plots, self.titles, strict=True):
            plot.setTitle(title, size="9pt", color=foreground)
            for side in ("left", "bottom"):
                axis = plot.getAxis(side)
                axis.setPen(foreground)
                axis.setTextPen(foreground)
            if plot.legend is not None:
                plot.legend.setLabelTextColor(foreground)
        self.crosshair.restyle("#9a9a9a" if dark else "#666666")
    def _add_plot(self, title: str, unit: str, prefixes: tuple[str, ...]) -> None:
        """One more plot under the others, sharing their time axis."""
        row = len(self.plots)
        plot = self.layout_widget.addPlot(row=row, col=0)
        plot.setTitle(title, size="9pt")
        plot.showGrid(x=True, y=True, alpha=0.25)
        if unit:
            plot.setLabel("left", units=unit)
        plot.getAxis("left").enableAutoSIPrefix(unit == "B/s")  # "ms" must not become "kms"
        legend_beside(self.layout_widget.ci, plot, row)
        plot.setMouseEnabled(x=False, y=True)
        plot.setXRange(-self.window, 0, padding=0)
        plot.enableAutoRange(axis="y")
        plot.setMenuEnabled(False)
        if self.plots:
            above = self.plots[-1][0]
            above.getAxis("bottom").setStyle(showValues=False)
            above.setLabel("bottom", "")
            plot.setXLink(self.plots[0][0])
        plot.setLabel("bottom", "seconds ago")
        self.plots.append((plot, prefixes))
        self.titles.append(title)

    def _add_optional_plots(self) -> None:
        """Add each optional plot once, when a series it draws first appears."""
        added = False
        for title, unit, prefixes in OPTIONAL_PLOTS:
            if title not in self.titles and any(self.series.names(p) for p in prefixes):
                self._add_plot(title, unit, prefixes)
                added = True
        if added:
            self.restyle(self._dark)

    def _set_window(self, text: str) -> None:
        self.window = WINDOWS.get(text, 60.0)
        self.plots[0][0].setXRange(-self.window, 0, padding=0)
        self._seen_version = -1
        self.refresh()

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.pause_button.setText("Resume" if paused else "Pause")

    def _curve(self, plot: pg.PlotItem, name: str) -> pg.PlotDataItem:
        curve = self.curves.get(name)
        if curve is None:
            color = PALETTE[len(plot.listDataItems()) % len(PALETTE)]
            width = 2 if name in (TOTAL_CONNECTIONS, "lat.p99") else 1
            curve = plot.plot(pen=pg.mkPen(color, width=width), name=_label(name))
            curve.setDownsampling(auto=True, method="peak")
            curve.setClipToView(True)
            self.curves[name] = curve
        return curve

    def refresh(self) -> None:
        """Timer tick: pull the newest figures, then redraw every curve unless paused."""
        if self.pull is not None:
            self.pull()
        if self.paused or self.series.version == self._seen_version:
            return
        self._seen_version = self.series.version
        self._add_optional_plots()
        now = time.time()
        since = now - self.window
        for plot, prefixes in self.plots:
            names = {n for p in prefixes for n in self.series.names(p)}
            for name in sorted(names, key=lambda n: (n.endswith(".total"), n)):  # totals last
                t, v = self.series.window(name, since)
                self._curve(plot, name).setData(t - now, v, skipFiniteCheck=True)
        self.redraws += 1
        total = self.series.last(TOTAL_CONNECTIONS)
        rate_in = self.series.last(TOTAL_IN)
        bits = []
        if total is not None:
            bits.append(f"{total:.0f} connections")
        if rate_in is not None:
            bits.append(f"{rate_in:.0f} msg/s in")
        p99 = self.series.last("lat.p99")
        if p99 is not None:
            bits.append(f"p99 {p99:.1f} ms")
        self.summary.setText("   ".join(bits))

    def points(self, name: str) -> int:
        """How many points the curve of `name` currently shows (for tests and the status)."""
        curve = self.curves.get(name)
        if curve is None or curve.yData is None:
            return 0
        return len(curve.yData)
