"""The fleet Timeline offscreen: groups with bands that expand into lanes, virtual painting,
tooltips, clicks that scope the Frames view, and a fault's side panel with who it affected."""

from __future__ import annotations

import time

from wsconsole.app.framestore import FrameStore
from wsconsole.app.timelinemodel import TimelineModel
from wsconsole.core.events import Direction, FrameRecord, Opcode
from wsconsole.core.lifecycle import Lifecycle, State
from wsconsole.gui.panels.fleetview import BAND_H, LANE_H, NAME_W, OWN_LANE_H
from wsconsole.gui.panels.frames import FramesPanel
from wsconsole.gui.panels.timeline import TimelinePanel
from wsconsole.swarm.fleet import FleetBatch


def fleet(clients: int = 40, killed: int = 12) -> tuple[TimelineModel, float]:
    """An own connection and `clients` swarm clients, open for 20 s; a node kill 8 s ago
    sent `killed` of them reconnecting for a while. Returns the model and the kill time."""
    model = TimelineModel()
    now = time.monotonic()
    wall = time.time()
    offset = wall - now
    life = Lifecycle("console")
    for state, at in ((State.CONNECTING, now - 20.0), (State.OPEN, now - 19.9),
                      (State.RECONNECTING, now - 7.9), (State.CONNECTING, now - 6.0),
                      (State.OPEN, now - 5.9)):
        model(life.move(state, at=at, attempt=1 if state is State.RECONNECTING else 0,
                        delay=1.9 if state is State.RECONNECTING else None))
    states = []
    for i in range(1, clients + 1):
        name = f"c{i:04d}"
        states += [[name, offset + now - 20 + i * 0.01, "C", 0, None, None, None],
                   [name, offset + now - 19.8 + i * 0.01, "O", 0, None, None, None]]
        if i <= killed:
            back = now - 7.5 + i * 0.2
            states += [[name, offset + now - 7.95, "R", 1, 0.5, 1006, "backoff grows"],
                       [name, offset + back - 0.1, "C", 1, None, None, None],
                       [name, offset + back, "O", 0, None, None, None]]
    nodes = {f"c{i:04d}": f"n{1 + i % 2}" for i in range(1, clients + 1)}
    model.apply_swarm(FleetBatch.parse({"states": states, "marks": [], "nodes": nodes}),
                      offset=offset)
    model.fault("node n1 killed", at=now - 8.0)
    return model, now - 8.0


def on_screen(qtbot, model: TimelineModel, width: int = 1000) -> TimelinePanel:  # type: ignore[no-untyped-def]
    """The panel on screen (offscreen), its timer stopped, its right edge frozen at now."""
    panel = TimelinePanel(model)
    qtbot.addWidget(panel)
    panel.resize(width, 500)
    panel.show()
    panel.timer.stop()
    panel.canvas.frozen_at = time.monotonic()
    panel.canvas.relayout()
    return panel


def test_groups_start_as_bands_and_expand_into_lanes(qtbot) -> None:  # type: ignore[no-untyped-def]
    model, _ = fleet()
    panel = on_screen(qtbot, model, 1000)
    view = panel.canvas
    kinds = [(row.key[1], row.lane is not None) for row in view.rows]
    assert kinds == [("own", False), ("own", True), ("swarm", False)]  # swarm collapsed
    # a click on the swarm group's name expands it into its 40 lanes
    swarm_band = view.rows[2]
    view.click(20, view.content_top() + swarm_band.y + BAND_H / 2)
    assert len(view.rows) == 3 + 40 and view.rows[3].lane.label == "c0001"
    assert view.rows[1].height == OWN_LANE_H and view.rows[3].height == LANE_H  # own: taller
    assert view.total_height() > view.content_height()  # it scrolls
    assert view.verticalScrollBar().maximum() == view.total_height() - view.content_height()
    panel.refresh()
    assert panel.status.text() == "41 lanes in 2 groups"
    image = view.viewport().grab()  # paints (only the rows in view)
    assert not image.isNull() and view.paints >= 1
    # grouped by node: n1 and n2 (and the console, whose node nobody told)
    panel.group_box.setCurrentIndex(panel.group_box.findData("node"))
    groups = [row.key[1] for row in view.rows if row.lane is None]
    assert groups == ["(no node yet)", "n2", "n1"]  # in order of appearance
    panel.expand_all(True)
    assert sum(1 for row in view.rows if row.lane is not None) == 41
    panel.expand_all(False)
    assert all(row.lane is None for row in view.rows)


def test_tooltips_say_what_is_under_the_mouse(qtbot) -> None:  # type: ignore[no-untyped-def]
    model, kill = fleet()
    panel = on_screen(qtbot, model, 1000)
    view = panel.canvas
    lane_row = view.rows[1]
    y = view.content_top() + lane_row.y + lane_row.height / 2
    x_reconnecting = view.x_of(kill + 1.0, view.frozen_at)
    text = view.describe(x_reconnecting, y)
    assert text is not None and text.startswith("console: RECONNECTING for 1.90 s")
    assert "attempt 1, waiting 1.90 s" in text
    band_y = view.content_top() + view.rows[0].y + 5
    assert view.describe(NAME_W + 10, band_y).startswith("own: 0 CONNECTING, 1 OPEN")
    fault_x = view.x_of(kill, view.frozen_at)
    assert view.describe(fault_x, 5) == "node n1 killed (click: who it affected)"


def test_a_lane_click_scopes_the_frames_to_that_client_and_span(qtbot) -> None:  # type: ignore[no-untyped-def]
    model, kill = fleet()
    panel = on_screen(qtbot, model, 1000)
    view = panel.canvas
    asked: list[tuple] = []
    panel.scope_requested.connect(lambda *args: asked.append(args))
    lane_row = view.rows[1]
    view.click(view.x_of(kill + 1.0, view.frozen_at),
               view.content_top() + lane_row.y + lane_row.height / 2)
    [(lanes, since, until, label)] = asked
    offset = time.time() - time.monotonic()
    assert lanes == ["console"] and label == "console while RECONNECTING"
    assert abs(since - (kill + 0.1 - 0.5 + offset)) < 0.05  # the span, half a second around
    assert abs(until - (kill + 2.0 + 0.5 + offset)) < 0.05
    # the Frames view shows only that client in that time
    store = FrameStore()
    for i in range(30):
        conn = "console" if i % 2 else "other"
        store.append(FrameRecord(conn, Direction.IN, Opcode.TEXT, b"x",
                                 wall=offset + kill - 10 + i))
    frames = FramesPanel(store)
    qtbot.addWidget(frames)
    frames.timer.stop()
    narrowest = frames.minimumSizeHint().width()
    frames.set_scope([f"swarm/c{i:04d}" for i in range(40)], since, until,
                     "40 clients hit by node n1 killed")  # a long scope line wraps
    assert frames.minimumSizeHint().width() <= narrowest
    frames.set_scope(lanes, since, until, label)
    frames.refresh()
    shown = [frames.model.row_at(r) for r in range(frames.model.rowCount())]
    assert shown and all(f.conn == "console" and since <= f.wall <= until for f in shown)
    assert "console while RECONNECTING" in frames.scope_label.text()
    assert frames.scope_row.isVisibleTo(frames)
    frames.scope_clear.click()  # "Show all frames"
    frames.refresh()
    assert frames.model.rowCount() == 30 and not frames.scope_row.isVisibleTo(frames)


def test_a_fault_click_shows_who_it_hit_and_how_long_each_was_away(qtbot) -> None:  # type: ignore[no-untyped-def]
    model, kill = fleet(clients=40, killed=12)
    panel = on_screen(qtbot, model, 1200)
    view = panel.canvas
    asked: list[tuple] = []
    panel.scope_requested.connect(lambda *args: asked.append(args))
    view.click(view.x_of(kill, view.frozen_at), 5)  # on the fault's label
    side = panel.fault_panel
    assert side.isVisibleTo(panel)
    assert side.title.text().startswith("node n1 killed at ")
    assert side.summary.text().startswith("13 of 41 open clients dropped; back after p50")
    assert side.table.rowCount() == 13
    assert side.table.item(0, 0).text() == "c0001"  # the quickest back first
    assert side.table.item(0, 1).text() == "+0.05 s"  # after the fault
    assert side.table.item(0, 2).text() == "0.65 s"  # left at -7.95 s, back at -7.3 s
    assert int(side.histogram.counts.sum()) == 13
    [(lanes, since, until, label)] = asked
    assert len(lanes) == 13 and "swarm/c0012" in lanes and "console" in lanes
    assert label == "13 clients hit by node n1 killed"
    offset = time.time() - time.monotonic()
    assert since < kill + offset and until > kill + offset + 2.4  # every recovery inside
    image = side.grab()
    assert not image.isNull()
    # a row: that client around the fault; Close hides the panel
    side.table.cellClicked.emit(0, 0)
    assert asked[-1][0] == ["swarm/c0001"] and asked[-1][3] == "c0001 around node n1 killed"
    side.close_button.click()
    assert not side.isVisibleTo(panel)


def test_the_toolbar_buttons_do_what_they_say(qtbot) -> None:  # type: ignore[no-untyped-def]
    model, _ = fleet()
    panel = on_screen(qtbot, model, 1000)
    view = panel.canvas
    panel.pause_button.click()  # Pause: the right edge stops, the button offers Resume
    assert view.frozen_at is not None and panel.pause_button.text() == "Resume"
    panel.pause_button.click()
    assert view.frozen_at is None and panel.pause_button.text() == "Pause"
    panel.window_box.setCurrentText("5 min")
    assert view.window == 300.0
    panel.expand_button.click()
    assert sum(1 for row in view.rows if row.lane is not None) == 41
    panel.collapse_button.click()
    assert all(row.lane is None for row in view.rows)
    asked: list[tuple] = []
    panel.scope_requested.connect(lambda *args: asked.append(args))
    swarm_band = view.rows[-1]
    view.click(NAME_W + 50, view.content_top() + swarm_band.y + BAND_H / 2)  # the band itself
    [(lanes, _since, _until, label)] = asked
    assert label == "group swarm" and len(lanes) == 40
