"""HAR actions of the File menu: import a DevTools HAR into the Frames view, export the
session as HAR, replay an imported connection's sent messages into a running connection,
and export any connection (the console's own, a proxied or an imported one) as a replay
scenario that `wsconsole scenario run` (or the Scenarios panel) plays again.

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
from wsconsole.app.framestore import FrameFilter
from wsconsole.core.lifecycle import State
from wsconsole.har import (
    HarConnection,
    HarError,
    dump_har,
    load_har,
    recorded,
    replay,
    to_records,
)
from wsconsole.scenarios.replay import scenario_text

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

    def exportable(self) -> list[str]:
        """Connections a replay scenario can be made of: the console's own, the proxied
        ones and the imported ones."""
        return [*self.console.sessions, *reversed(self.console.proxy.infos), *self.imported]

    def connection(self, name: str) -> HarConnection:
        """Connection `name` as recorded (KeyError if unknown)."""
        store = self.console.frames
        if name in self.imported:
            return self.imported[name]
        rows = store.rows(store.match(FrameFilter.make(conns=[name])))
        if name in self.console.proxy.infos:
            return self.console.proxy.har_connection(name, rows)
        session = self.console.sessions[name]
        profile = session.profile
        headers = list(profile.headers)
        if profile.origin:
            headers.append(("Origin", profile.origin))
        if profile.subprotocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(profile.subprotocols)))
        return recorded(rows, profile.url, headers)

    def export_scenario(self, name: str, path: str) -> int:
        """Write connection `name` as a replay scenario file; how many sends it replays
        (ValueError when it sent nothing, OSError when the file cannot be written)."""
        try:
            conn = self.connection(name)
        except KeyError:
            raise ValueError(f"no connection named {name!r}") from None
        if not conn.sent:
            raise ValueError(f"{name} sent nothing to replay")
        with open(path, "w", encoding="utf-8") as out:
            out.write(scenario_text(conn, name=f"replay of {name}"))
        self.console.errors.info(f"{name} exported as a replay scenario to {path} "
                                 f"({len(conn.sent)} sends)")
        return len(conn.sent)

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

    def do_scenario() -> None:
        names = actions.exportable()
        if not names:
            console.errors.report("Export scenario: no connection yet")
            return
        current = selected() or names[0]
        name, ok = QInputDialog.getItem(window, "Export as a replay scenario", "Connection",
                                        names, names.index(current) if current in names
                                        else 0, False)
        if not ok:
            return
        path, _ = QFileDialog.getSaveFileName(window, "Export as a replay scenario",
                                              f"{name.replace('/', '-')}.toml",
                                              "Scenario (*.toml)")
        if path:
            try:
                actions.export_scenario(name, path)
            except (ValueError, OSError) as exc:
                console.errors.report(f"Export scenario: {exc}")

    for text, slot in (("Import &HAR\u2026", do_import), ("&Export session as HAR\u2026",
                       do_export), ("&Replay HAR connection into selected\u2026", do_replay),
                       ("Export connection as replay &scenario\u2026", do_scenario)):
        action = QAction(text, window)
        action.triggered.connect(slot)
        menu.addAction(action)
    menu.addSeparator()
    return actions
