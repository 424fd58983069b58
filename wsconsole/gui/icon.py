"""The application icon, drawn in code so a packaged bundle needs no data file
(resources/icons/wsconsole.svg is the same picture for desktop entries)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPen, QPixmap, QPolygonF


def app_icon() -> QIcon:
    """A pulse line on a dark rounded square, at a few sizes."""
    icon = QIcon()
    for size in (16, 32, 64, 128, 256):
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        scale = size / 256
        painter.scale(scale, scale)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(QColor("#1f2a36")))
        painter.drawRoundedRect(8, 8, 240, 240, 40, 40)
        pen = QPen(QColor("#2e9e44"), 16)
        pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        painter.setPen(pen)
        points = [(40, 168), (80, 168), (100, 96), (124, 200), (148, 72), (170, 168), (216, 168)]
        painter.drawPolyline(QPolygonF([QPointF(x, y) for x, y in points]))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QBrush(QColor("#e0a800")))
        painter.drawEllipse(QPointF(200, 64), 18, 18)
        painter.end()
        icon.addPixmap(pixmap)
    return icon
