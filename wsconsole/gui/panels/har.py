"""HAR actions of the File menu: import a DevTools HAR into the Frames view, export the
session as HAR, replay an imported connection's sent messages into a running connection.

`HarActions` holds the headless part (import_file, export_file, replay) that tests drive
directly; the menu entries only add the file and choice dialogs around it. Problems (a bad
HAR, no connection to replay into) go to the Log dock through the console's ErrorHub.
"""

from __future__ import annotations

import asyncio
from typing import Any

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMainWindow, QMenu

from wsconsole.app.console import Console
from wsconsole.core.lifecycle import State
from wsconsole.har import HarConnection, HarError, dump_har, load_har, replay, to_records

TIMINGS = ("fast", "original")


class HarActions:
    """Import / export / replay over one Console (no dialogs here)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.imported: dict[str, HarConnection] = {}  # frames `conn` label -> connection

    def import_file(self, path: str) -> list[str]:
        """Load a HAR; every WebSocket connection's messages go to the Frames view.

        Returns the connection labels; HarError (reported to the Log dock too) if bad."""
        try:
            connections = load_har(path)
        except HarError as exc:
            self.console.errors.report(f"HAR import: {exc}")
            raise
        labels = []
        for conn in connections:
            label = conn.label()
            self.imported[label] = conn
            for record in to_records(conn, label):
                self.console.frames.append(record)
            labels.append(label)
        count = sum(len(c.messages) for c in connections)
        self.console.errors.info(f"HAR import: {len(connections)} WebSocket connection(s), "
                                 f"{count} message(s) from {path}")
        return labels

    def export_file(self, path: str) -> int:
        """Write every frame held in the Frames view as HAR, one entry per connection."""
        store = self.console.frames
        rows = store.rows(range(store.first_id, store.next_id))
        urls = {name: s.profile.url for name, s in self.console.sessions.items()}
        urls.update({label: conn.url for label, conn in self.imported.items()})
        try:
            count = dump_har(rows, path, urls=urls)
        except OSError as exc:
            self.console.errors.report(f"HAR export: cannot write {path}: {exc.strerror}")
            raise
        self.console.errors.info(f"HAR export: {count} message(s) to {path}")
        return count

    def replay(self, label: str, session_name: str, timing: str = "fast",
               speed: float = 1.0) -> asyncio.Task[Any]:
        """Re-send an imported connection's sent messages through a running connection."""
        conn = self.imported.get(label)
        if conn is None:
            raise ValueError(f"no imported HAR connection {label!r}")
        session = self.console.sessions.get(session_name)
        if session is None or session.client is None or session.state is not State.OPEN:
            raise ValueError(f"connection {session_name!r} is not open: connect it first")
        client = session.client
        send = getattr(client, "send_recorded", client.send)

        async def run() -> int:
            count = await replay(conn, send, timing=timing, speed=speed)
            self.console.errors.info(f"HAR replay: {count} message(s) from {label} "
                                     f"into {session_name} ({timing})")
            return count

        return self.console.spawn(run(), f"har-replay-{session_name}")


def install_har_menu(window: QMainWindow, menu: QMenu, console: Console,
                     selected: Any) -> HarActions:
    """Add Import HAR, Export HAR and Replay to `menu`; `selected()` names the current
    connection (the replay target)."""
    actions = HarActions(console)

    def do_import() -> None:
        path, _ = QFileDialog.getOpenFileName(window, "Import HAR", "", "HAR (*.har *.json)")
        if path:
            try:
                actions.import_file(path)
            except HarError:
                pass  # already in the Log dock

    def do_export() -> None:
        path, _ = QFileDialog.getSaveFileName(window, "Export session as HAR", "session.har",
                                              "HAR (*.har)")
        if path:
            try:
                actions.export_file(path)
            except OSError:
                pass  # already in the Log dock

    def do_replay() -> None:
        if not actions.imported:
            console.errors.report("HAR replay: import a HAR first (File > Import HAR)")
            return
        label, ok = QInputDialog.getItem(window, "Replay HAR", "Recorded connection",
                                         list(actions.imported), 0, False)
        if not ok:
            return
        timing, ok = QInputDialog.getItem(window, "Replay HAR", "Timing", list(TIMINGS), 0,
                                          False)
        if not ok:
            return
        try:
            actions.replay(label, selected() or "", timing)
        except ValueError as exc:
            console.errors.report(f"HAR replay: {exc}")

    for text, slot in (("Import &HAR\u2026", do_import), ("&Export session as HAR\u2026",
                       do_export), ("&Replay HAR connection into selected\u2026", do_replay)):
        action = QAction(text, window)
        action.triggered.connect(slot)
        menu.addAction(action)
    menu.addSeparator()
    return actions
