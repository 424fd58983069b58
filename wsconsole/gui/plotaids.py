"""What the live plots add to pyqtgraph: legends beside the plots and a crosshair with values.

`legend_beside(layout, plot, row)` puts a plot's legend in the layout's next column instead
of over the lines (pyqtgraph adds a named curve to `plot.legend`, wherever that legend
lives). `Crosshair` follows the mouse over any plot of a stack sharing their time axis: one
vertical line on every plot and, on each, the time and the value of each curve there,
updated at most 30 times a second (a SignalProxy), hidden when the mouse leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QSizePolicy

LEGEND_WIDTH = 112


def legend_beside(layout: pg.GraphicsLayout, plot: pg.PlotItem, row: int) -> pg.LegendItem:
    """A legend in column 1 of `row`, next to the plot, that the plot's named curves join."""
    legend = pg.LegendItem(labelTextSize="8pt", colCount=1, verSpacing=-6, frame=False)
    legend.setMinimumWidth(LEGEND_WIDTH)
    legend.setMaximumWidth(LEGEND_WIDTH)
    legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Maximum)
    layout.addItem(legend, row=row, col=1)
    layout.layout.setAlignment(legend, Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    plot.legend = legend
    return legend


class Crosshair:
    """A vertical line and a readout on every plot at the mouse's time (see the module doc)."""

    def __init__(self, widget: pg.GraphicsLayoutWidget, plots: Callable[[], Sequence[pg.PlotItem]],
                 unit: str = "s ago", pen: str = "#888888") -> None:
        self.widget = widget
        self.plots = plots
        self.unit = unit
        self.pen = pen
        self.lines: dict[int, pg.InfiniteLine] = {}
        self.texts: dict[int, pg.TextItem] = {}
        self.x: float | None = None
        self._proxy = pg.SignalProxy(widget.scene().sigMouseMoved, rateLimit=30,
                                     slot=self._moved)

    def _moved(self, args: tuple[QPointF]) -> None:
        self.show_at_scene(args[0])

    def show_at_scene(self, pos: QPointF) -> None:
        """Place the crosshair at a scene position (hidden outside every plot)."""
        for plot in self.plots():
            if plot.sceneBoundingRect().contains(pos) and \
                    plot.vb.sceneBoundingRect().contains(pos):
                self.show_at(float(plot.vb.mapSceneToView(pos).x()))
                return
        self.hide()

    def show_at(self, x: float) -> None:
        """Place the crosshair at time x on every plot, with each curve's value there."""
        self.x = x
        for plot in self.plots():
            line, text = self._items(plot)
            line.setPos(x)
            line.setVisible(True)
            text.setText(self.readout(plot, x))
            (left, right), (_, top) = plot.vb.viewRange()
            text.setPos(left + (right - left) * 0.01, top)
            text.setVisible(True)

    def hide(self) -> None:
        """Hide the line and the readout on every plot."""
        self.x = None
        for item in (*self.lines.values(), *self.texts.values()):
            item.setVisible(False)

    def readout(self, plot: pg.PlotItem, x: float) -> str:
        """"-12.4 s ago  n1 9  n2 12": the time and each named curve's value at x."""
        parts = [f"{x:.1f} {self.unit}"]
        for curve in plot.listDataItems():
            name = curve.name()
            xs, ys = curve.xData, curve.yData
            if not name or xs is None or ys is None or not len(xs):
                continue
            index = int(np.searchsorted(xs, x, side="right")) - 1
            if index < 0:
                continue
            parts.append(f"{name} {_number(float(ys[index]))}")
        return "  ".join(parts)

    def _items(self, plot: pg.PlotItem) -> tuple[pg.InfiniteLine, pg.TextItem]:
        key = id(plot)
        line = self.lines.get(key)
        if line is None:
            line = pg.InfiniteLine(angle=90, movable=False,
                                   pen=pg.mkPen(self.pen, width=1))
            plot.addItem(line, ignoreBounds=True)
            text = pg.TextItem(anchor=(0, 0), color=self.pen, fill=pg.mkBrush(0, 0, 0, 0))
            plot.addItem(text, ignoreBounds=True)
            self.lines[key], self.texts[key] = line, text
        return line, self.texts[key]

    def restyle(self, pen: str) -> None:
        """New colours for the line and the readout (the theme changed)."""
        self.pen = pen
        for line in self.lines.values():
            line.setPen(pg.mkPen(pen, width=1))
        for text in self.texts.values():
            text.setColor(pen)


def _number(value: float) -> str:
    if value != value:  # NaN: no value there
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.2f}"


__all__ = ["Crosshair", "legend_beside"]
