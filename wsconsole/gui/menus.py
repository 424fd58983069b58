"""Menus with keyboard shortcuts: the selected node's Kill / Pause / Resume, pausing the
Frames view, and the theme (system, light, dark).

Shortcuts are window-wide (they work whichever dock has the focus) and shown next to their
menu entries, so they can be found. They act on what the panels show: the node selected in
the Cluster panel, the Frames view's own Pause button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu

from wsconsole.gui.theme import THEMES

if TYPE_CHECKING:
    from wsconsole.gui.mainwindow import MainWindow

NODE_SHORTCUTS = {"kill": "Ctrl+Shift+K", "pause": "Ctrl+Shift+P", "resume": "Ctrl+Shift+R"}
PAUSE_FRAMES = "F8"


def install_cluster_menu(window: MainWindow) -> dict[str, QAction]:
    """A Cluster menu: Kill, Pause and Resume on the node selected in the Cluster panel."""
    menu = window.menuBar().addMenu("&Cluster")
    actions: dict[str, QAction] = {}
    for action, keys in NODE_SHORTCUTS.items():
        item = QAction(f"{action.capitalize()} the selected node", window,
                       shortcut=QKeySequence(keys))
        item.setToolTip(f"{action} the node selected in the Cluster panel")
        item.triggered.connect(lambda _=False, a=action: window.cluster.run_action(a))
        menu.addAction(item)
        actions[action] = item
    return actions


def install_view_extras(window: MainWindow, view_menu: QMenu) -> tuple[QAction, dict[str, QAction]]:
    """Pause the Frames view (F8) and the Theme submenu; returns (pause, theme actions)."""
    view_menu.addSeparator()
    pause = QAction("&Pause the Frames view", window, shortcut=QKeySequence(PAUSE_FRAMES),
                    checkable=True)
    button = window.frames.pause_button
    pause.toggled.connect(button.setChecked)
    button.toggled.connect(pause.setChecked)
    view_menu.addAction(pause)
    themes = view_menu.addMenu("&Theme")
    group = QActionGroup(window)
    actions: dict[str, QAction] = {}
    for name in THEMES:
        item = QAction(name.capitalize() + (" (follow the system)" if name == "system" else ""),
                       window, checkable=True)
        item.setChecked(name == window.theme.choice)
        item.triggered.connect(lambda _=False, n=name: window.choose_theme(n))
        group.addAction(item)
        themes.addAction(item)
        actions[name] = item
    return pause, actions


__all__ = ["NODE_SHORTCUTS", "PAUSE_FRAMES", "install_cluster_menu", "install_view_extras"]
