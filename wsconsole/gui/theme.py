"""Colours and small widgets shared by the panels (state badge colours, monospace font)."""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QFontDatabase

STATE_COLORS: dict[str, str] = {
    "CONNECTING": "#e0a800",
    "OPEN": "#2e9e44",
    "CLOSING": "#d9822b",
    "CLOSED": "#7a7a7a",
    "RECONNECTING": "#c0392b",
}
NODE_COLORS: dict[str, str] = {
    "starting": "#e0a800",
    "running": "#2e9e44",
    "paused": "#8e44ad",
    "draining": "#d9822b",
    "killed": "#c0392b",
    "stopped": "#7a7a7a",
    "failed": "#c0392b",
}
# The server's notices that messages will not come (a reset, recovery window exceeded):
# the Timeline's marker and the Frames view's rows.
NOTICE_COLOR = "#c2185b"

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f"]


def color(name: str) -> QColor:
    """QColor from a #rrggbb string."""
    return QColor(name)


def mono() -> QFont:
    """The system fixed-width font, for payloads and hex."""
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


def badge_style(state: str) -> str:
    """Style sheet of a coloured state badge."""
    bg = STATE_COLORS.get(state, NODE_COLORS.get(state, "#7a7a7a"))
    return (f"QLabel {{ background: {bg}; color: white; border-radius: 4px; "
            f"padding: 2px 8px; font-weight: bold; }}")
