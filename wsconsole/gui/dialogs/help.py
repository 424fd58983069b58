"""The main window's Help menu: About, Diagnose endpoint, Open support bundle, Open log folder.

Kept out of mainwindow.py so the window only calls `install_help_menu(window)`. Errors (a
damaged bundle) go to the console's ErrorHub, i.e. the Log dock and the status bar.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSettings, QUrl
from PySide6.QtGui import QAction, QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMainWindow

from wsconsole.gui.bundleview import BundleView, open_bundle
from wsconsole.gui.dialogs.about import AboutDialog
from wsconsole.gui.dialogs.diagnose import DiagnoseDialog
from wsconsole.logs import log_dir


def settings_dict(settings: QSettings) -> dict[str, Any]:
    """The text values of QSettings (geometry blobs left out) for a support bundle."""
    out: dict[str, Any] = {}
    for key in settings.allKeys():
        value = settings.value(key)
        if isinstance(value, str | int | float | bool):
            out[key] = value
    return out


class HelpMenu:
    """Builds the Help menu on `window` (a MainWindow: .console, .settings) and its actions."""

    def __init__(self, window: QMainWindow) -> None:
        self.window = window
        self.bundle_views: list[BundleView] = []
        self.dialogs: list[Any] = []
        menu = window.menuBar().addMenu("&Help")
        self.actions: dict[str, QAction] = {}
        for key, text, slot in (
            ("diagnose", "&Diagnose endpoint\u2026", self.diagnose),
            ("open_bundle", "Open &support bundle\u2026", self.choose_bundle),
            ("log_folder", "Open &log folder", self.open_log_folder),
            ("about", "&About wsconsole", self.about),
        ):
            action = QAction(text, window)
            action.setObjectName(f"help-{key}")
            action.triggered.connect(slot)
            menu.addAction(action)
            self.actions[key] = action

    def about(self) -> AboutDialog:
        """Show the About dialog (non-modal)."""
        dialog = AboutDialog(self.window)
        dialog.show()
        self.dialogs.append(dialog)
        return dialog

    def diagnose(self) -> DiagnoseDialog:
        """Show the Diagnose endpoint dialog."""
        window: Any = self.window
        dialog = DiagnoseDialog(window.console.spawn, lambda: settings_dict(window.settings),
                                window)
        dialog.show()
        self.dialogs.append(dialog)
        return dialog

    def choose_bundle(self) -> None:
        """Ask for a bundle file, then open it."""
        path, _ = QFileDialog.getOpenFileName(self.window, "Open support bundle", "",
                                              "Support bundle (*.zip)")
        if path:
            self.open_bundle(path)

    def open_bundle(self, path: str) -> BundleView | None:
        """Open a bundle in its own window; a damaged one is reported in the Log dock."""
        window: Any = self.window
        view = open_bundle(path, window.console.errors.report, self.window)
        if view is not None:
            self.bundle_views.append(view)
        return view

    def log_folder_url(self) -> QUrl:
        """The log folder as a file URL (created if missing, so the file manager opens it)."""
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        return QUrl.fromLocalFile(str(folder))

    def open_log_folder(self) -> bool:
        """Open the log folder in the desktop's file manager."""
        return QDesktopServices.openUrl(self.log_folder_url())


def install_help_menu(window: QMainWindow) -> HelpMenu:
    """Add the Help menu to the main window."""
    return HelpMenu(window)
