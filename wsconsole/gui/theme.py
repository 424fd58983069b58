"""Colours and small widgets shared by the panels (state badge colours, monospace font), and
the light or dark theme, which follows the system unless the user chose one.

`Theme` watches the system's colour scheme (QStyleHints.colorScheme, Qt 6.5+) and applies a
dark palette (with the Fusion style, which draws it faithfully everywhere) or the style's
own light one; `changed` tells the views that paint colours of their own (the plots). The
user's choice (View > Theme: system, light, dark) overrides the system's through
QStyleHints.setColorScheme, so one code path serves both.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontDatabase, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

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


THEMES = ("system", "light", "dark")
_SCHEMES = {"light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}


def dark_palette() -> QPalette:
    """A dark palette for every widget (Fusion draws it faithfully)."""
    palette = QPalette()
    role = QPalette.ColorRole
    colours = {
        role.Window: "#2b2b2b", role.WindowText: "#e6e6e6", role.Base: "#1f1f1f",
        role.AlternateBase: "#2f3136", role.ToolTipBase: "#3a3a3a", role.ToolTipText: "#f0f0f0",
        role.Text: "#e6e6e6", role.Button: "#353535", role.ButtonText: "#e6e6e6",
        role.BrightText: "#ff6b6b", role.Highlight: "#2f65ca", role.HighlightedText: "#ffffff",
        role.Link: "#6ea8fe", role.PlaceholderText: "#8a8a8a", role.Mid: "#444444",
        role.Dark: "#1a1a1a", role.Light: "#4a4a4a", role.Shadow: "#000000",
    }
    for name, value in colours.items():
        palette.setColor(name, QColor(value))
    disabled = QPalette.ColorGroup.Disabled
    for name in (role.Text, role.WindowText, role.ButtonText):
        palette.setColor(disabled, name, QColor("#7a7a7a"))
    return palette


def plot_colors(palette: QPalette) -> tuple[str, str]:
    """(background, foreground) for pyqtgraph from a widget palette."""
    return palette.base().color().name(), palette.text().color().name()


class Theme(QObject):
    """Follows the system's colour scheme, or the user's choice; see the module docstring."""

    changed = Signal(bool)  # dark

    def __init__(self, app: QApplication, choice: str = "system",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.app = app
        self.light_style = app.style().name()
        self.dark = False
        self.choice = "system"
        app.styleHints().colorSchemeChanged.connect(self._scheme_changed)
        self.choose(choice)

    def choose(self, choice: str) -> None:
        """"system" (follow it), "light" or "dark"; an unknown word means "system"."""
        self.choice = choice if choice in THEMES else "system"
        hints = self.app.styleHints()
        if self.choice == "system":
            hints.unsetColorScheme()
        else:
            hints.setColorScheme(_SCHEMES[self.choice])
        self._scheme_changed(hints.colorScheme())

    def _scheme_changed(self, scheme: Qt.ColorScheme) -> None:
        dark = scheme == Qt.ColorScheme.Dark or (
            self.choice == "dark" and scheme == Qt.ColorScheme.Unknown)
        if dark:
            self.app.setStyle("Fusion")
            self.app.setPalette(dark_palette())
        elif self.dark:
            self.app.setStyle(self.light_style)
            self.app.setPalette(self.app.style().standardPalette())
        if dark != self.dark:
            self.dark = dark
            self.changed.emit(dark)

    @staticmethod
    def palette() -> QPalette:
        """The application's palette now."""
        return QGuiApplication.palette()
