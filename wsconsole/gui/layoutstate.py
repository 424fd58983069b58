"""The window's layout beyond Qt's own state: every splitter, and how the Timeline was shown.

QMainWindow.saveState keeps the docks (where, how big, which are open); the splitters inside
the panels (the Frames table and its detail pane, the Timeline and its fault panel, the
Composer, the Scenarios and Intercept tables ...) and the Timeline's window, grouping and
expanded groups are saved here under keys that name the dock they live in, so a panel
needs no name of its own and a new panel is covered without a line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QSplitter, QWidget

if TYPE_CHECKING:
    from wsconsole.gui.mainwindow import MainWindow


def _splitters(window: MainWindow) -> dict[str, QSplitter]:
    """Every splitter inside the panels, keyed "dock title/index" ("Frames/0" ...)."""
    found: dict[str, QSplitter] = {}
    holders: dict[str, QWidget] = {"Frames": window.frames}
    holders.update({title: dock.widget() for title, dock in window.docks.items()
                    if dock.widget() is not None})
    for title, widget in holders.items():
        for index, splitter in enumerate(widget.findChildren(QSplitter)):
            found[f"{title}/{index}"] = splitter
    return found


def save_layout(window: MainWindow, settings: QSettings) -> None:
    """Splitter sizes and the Timeline's view."""
    for key, splitter in _splitters(window).items():
        settings.setValue(f"splitters/{key}", splitter.saveState())
    timeline = window.timeline
    view = {"window": timeline.window_box.currentText(),
            "grouping": timeline.canvas.grouping,
            "expanded": sorted([list(key) for key in timeline.canvas.expanded])}
    settings.setValue("timeline/view", orjson.dumps(view).decode())


def restore_layout(window: MainWindow, settings: QSettings) -> None:
    """Put back what save_layout wrote (anything missing or unreadable stays as built)."""
    for key, splitter in _splitters(window).items():
        state = settings.value(f"splitters/{key}")
        if state is not None:
            splitter.restoreState(state)
    raw = settings.value("timeline/view")
    try:
        view = orjson.loads(raw) if isinstance(raw, str | bytes) else None
    except orjson.JSONDecodeError:
        view = None
    if not isinstance(view, dict):
        return
    timeline = window.timeline
    if isinstance(view.get("window"), str) and timeline.window_box.findText(view["window"]) >= 0:
        timeline.window_box.setCurrentText(view["window"])
    index = timeline.group_box.findData(view.get("grouping"))
    if index >= 0:
        timeline.group_box.setCurrentIndex(index)
    expanded = view.get("expanded")
    if isinstance(expanded, list):
        timeline.canvas.expanded = {(str(k[0]), str(k[1])) for k in expanded
                                    if isinstance(k, list) and len(k) == 2}


__all__ = ["restore_layout", "save_layout"]
