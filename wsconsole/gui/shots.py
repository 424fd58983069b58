"""What `wsconsole screenshot` does before it grabs: the moments worth showing, reproducibly.

A `Shot` is a small plan run against a started ConsoleApp: kill the node serving the
console's client after a while (the Timeline shows the reconnect; a stack's node shows its
output), withhold the console's pongs after a while, a share of the swarm's too (the
heartbeat lab: the server's close shows), expand Timeline groups, open the last fault's side
panel, raise docks, then grab the whole window, or some docks alone at the size asked
(stacked top to bottom in one image).
The user guide's screenshots are made with it, so anyone can make them again.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PySide6.QtGui import QPainter, QPixmap

from wsconsole.app.console import CONSOLE_CONN

if TYPE_CHECKING:
    from wsconsole.gui.app import ConsoleApp

GROUPS = ("own", "swarm", "proxy", "all")


@dataclass
class Shot:
    """The plan; times are seconds after the start-up finished."""

    after: float = 8.0  # grab this long after start-up
    kill_after: float | None = None
    pongs_off_after: float | None = None
    swarm_dead: int | None = None  # percent of the swarm withholding pongs with the console
    expand: list[str] = field(default_factory=list)
    fault: bool = False  # open the side panel of the last fault on the Timeline
    show: list[str] = field(default_factory=list)  # docks to raise
    grab: list[str] = field(default_factory=list)  # docks alone, else the whole window

    def problems(self, docks: list[str] | None = None) -> list[str]:
        """What cannot work, in words (the CLI refuses it with exit code 2); the dock names
        are checked against `docks` when given."""
        found = []
        for name, value in (("--kill-after", self.kill_after),
                            ("--pongs-off-after", self.pongs_off_after)):
            if value is not None and not 0 <= value <= self.after:
                found.append(f"{name} must be between 0 and --after")
        if self.swarm_dead is not None and (self.pongs_off_after is None
                                            or not 0 <= self.swarm_dead <= 100):
            found.append("--swarm-dead needs --pongs-off-after and a percentage 0 to 100")
        found += [f"--expand {g}: one of {', '.join(GROUPS)}" for g in self.expand
                  if g not in GROUPS]
        if docks is not None:
            found += [f"{flag} {d!r}: no such dock ({', '.join(docks)})"
                      for flag, names in (("--show", self.show), ("--grab", self.grab))
                      for d in names if d not in docks]
        return found


async def take(app: ConsoleApp, path: str, shot: Shot) -> int:
    """Run the plan and save the PNG; 0, or 1 when the file cannot be written."""
    ready = await app.wait_ready(timeout=60.0)
    if not ready:
        sys.stderr.write("wsconsole: the demo did not start; the screenshot shows why\n")
    window, console = app.window, app.console
    events = sorted((t, what) for what, t in (("kill", shot.kill_after),
                                               ("pongs", shot.pongs_off_after))
                    if t is not None and ready)
    elapsed = 0.0
    for at, what in events:
        await asyncio.sleep(max(0.0, at - elapsed))
        elapsed = max(elapsed, at)
        if what == "kill" and console.cluster is not None:
            node = await console.serving_node()
            if node is not None:
                await console.cluster_action("kill", node)
                if console.stack_path is not None:  # the user's node: show what it printed
                    window.show_node_output(node)
        elif what == "pongs":
            _play_dead(app, shot.swarm_dead)
    await asyncio.sleep(max(0.0, shot.after - elapsed))
    _arrange(app, shot)
    await asyncio.sleep(0.3)
    pixmap = await _docks_alone(app, shot.grab) if shot.grab else window.grab()
    if not pixmap.save(path):
        sys.stderr.write(f"wsconsole: error: cannot write {path}\n")
        return 1
    print(f"saved {path} ({pixmap.width()}x{pixmap.height()})")
    return 0


def _play_dead(app: ConsoleApp, swarm_percent: int | None) -> None:
    """Through the heartbeat lab's controls, as a user would: the console's connection
    withholds its pongs, and `swarm_percent` of the swarm's clients too."""
    lab = app.window.heartbeat
    lab.sync_connections()
    if CONSOLE_CONN in app.console.sessions:
        lab.conn_box.setCurrentText(CONSOLE_CONN)
        lab.mode_box.setCurrentIndex(lab.mode_box.findData("off"))
        lab.apply_pongs()
    if swarm_percent is not None:
        lab.swarm_share.setValue(swarm_percent)
        lab.swarm_mode.setCurrentIndex(lab.swarm_mode.findData("off"))
        lab.apply_swarm()


async def _docks_alone(app: ConsoleApp, titles: list[str]) -> QPixmap:
    """The docks `titles` floated at the asked width, grabbed and stacked top to bottom: each
    as tall as it wants (at most its share), the last one the height left."""
    width, height = app.options.width, app.options.height
    left = height
    for index, title in enumerate(titles):
        dock = app.window.docks[title]
        dock.setFloating(True)
        tall = left if index == len(titles) - 1 else \
            min(height // len(titles), dock.sizeHint().height())
        dock.resize(width, tall)
        left -= tall
    await asyncio.sleep(0.3)
    shots = [app.window.docks[title].grab() for title in titles]
    image = QPixmap(max(s.width() for s in shots), sum(s.height() for s in shots))
    image.fill(app.window.palette().window().color())
    painter = QPainter(image)
    top = 0
    for part in shots:
        painter.drawPixmap(0, top, part)
        top += part.height()
    painter.end()
    return image


def _arrange(app: ConsoleApp, shot: Shot) -> None:
    """Everything the grab should show, pulled from the models now."""
    window = app.window
    frames = window.frames
    frames.refresh()
    window.plots.refresh()
    window.heartbeat.refresh()
    rows = frames.model.rowCount()
    if rows:  # show the detail pane with the newest frame
        frames.table.selectRow(rows - 1)
    timeline = window.timeline
    for group in shot.expand:
        if group == "all":
            timeline.expand_all(True)
        else:
            timeline.canvas.expanded.add(("source", group))
    timeline.canvas.relayout()
    if shot.fault and app.console.timeline.faults:
        timeline.canvas.frozen_at = None
        timeline.show_fault(app.console.timeline.faults[-1])
    timeline.refresh()
    for title in shot.show:
        window.docks[title].show()
        window.docks[title].raise_()


__all__ = ["GROUPS", "Shot", "take"]
