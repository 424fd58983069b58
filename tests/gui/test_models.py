"""Headless models under the views: Timeline lanes (no Qt, no loop); the plot series ring is
tested with core/metrics.py in tests/test_client_metrics.py."""

from __future__ import annotations

import pytest

from wsconsole.app.faultimpact import impact
from wsconsole.app.timelinemodel import TimelineModel
from wsconsole.core.events import (
    DeliveryEvent,
    Direction,
    ErrorEvent,
    FrameRecord,
    HeartbeatEvent,
    Opcode,
)
from wsconsole.core.lifecycle import Lifecycle, State
from wsconsole.swarm.fleet import FleetBatch


def test_timeline_spans_attempts_and_markers() -> None:
    model = TimelineModel(limit=100)
    life = Lifecycle("c1")
    for state, kw in [
        (State.CONNECTING, {"at": 1.0}),
        (State.OPEN, {"at": 1.5}),
        (State.RECONNECTING, {"at": 4.0, "attempt": 1, "delay": 0.7, "code": 1006,
                              "reason": "abnormal"}),
        (State.CONNECTING, {"at": 4.7, "attempt": 1}),
        (State.OPEN, {"at": 5.0}),
    ]:
        model(life.move(state, **kw))
    model(HeartbeatEvent("c1", "ping_sent", at=5.5))
    model(HeartbeatEvent("c1", "pong_received", rtt=0.003, at=5.51))
    model(HeartbeatEvent("c1", "liveness_lost", at=6.0))
    model(ErrorEvent("c1", "refused", "connection refused", at=6.1))
    model.fault("node n1 killed", at=3.9)
    lane = model.lanes["c1"]
    assert model.states("c1") == [State.CONNECTING, State.OPEN, State.RECONNECTING,
                                  State.CONNECTING, State.OPEN]
    assert [(s.start, s.end) for s in lane.spans] == [(1.0, 1.5), (1.5, 4.0), (4.0, 4.7),
                                                      (4.7, 5.0), (5.0, None)]
    assert lane.spans[2].detail == "close 1006 abnormal"
    kinds = [m.kind for m in lane.markers]
    assert kinds == ["attempt", "ping", "pong", "miss", "error"]
    assert lane.markers[0].label == "attempt 1 in 0.7 s"
    assert lane.markers[2].label == "rtt 3.0 ms"
    assert model.faults[0].label == "node n1 killed"
    version = model.version
    model.remove_lane("c1")
    assert "c1" not in model.lanes and model.version > version


def test_timeline_says_why_a_delay_was_chosen_and_marks_resets() -> None:
    """The reconnect decision is on the attempt marker and the span; a room reset and an
    empty close frame (1005) are shown in words."""
    model = TimelineModel(limit=100)
    life = Lifecycle("c1")
    model(life.move(State.CONNECTING, at=1.0))
    model(life.move(State.OPEN, at=1.1))
    model(life.move(State.RECONNECTING, at=1.3, attempt=2, delay=2.0, code=1005, reason="",
                    decision="backoff grows: open only 0.2 s (< 5 s)"))
    model(DeliveryEvent("c1", "reset", room="r", detail="epoch e1 -> e2", at=1.4))
    lane = model.lanes["c1"]
    assert lane.markers[0].label == "attempt 2 in 2.0 s: backoff grows: open only 0.2 s (< 5 s)"
    assert lane.spans[-1].detail == "close 1005 (no status code) - backoff grows: open only " \
                                    "0.2 s (< 5 s)"
    assert (lane.markers[1].kind, lane.markers[1].label) == ("notice", "reset r: epoch e1 -> e2")


def test_timeline_marks_the_servers_notices_not_ordinary_deliveries() -> None:
    model = TimelineModel(limit=100)
    model(DeliveryEvent("c1", "ack", room="r", seq=3, at=1.0))
    model(DeliveryEvent("c1", "reset", room="r", detail="epoch e1 -> e2", at=2.0))
    model(DeliveryEvent("c1", "recovery_window_exceeded", room="r", detail="first 9", at=3.0))
    labels = [(m.kind, m.label) for m in model.lanes["c1"].markers]
    assert labels == [("notice", "reset r: epoch e1 -> e2"),
                      ("notice", "recovery_window_exceeded r: first 9")]


def test_timeline_is_bounded() -> None:
    model = TimelineModel(limit=10)
    for i in range(100):
        model(HeartbeatEvent("c1", "ping_sent", at=float(i)))
    assert len(model.lanes["c1"].markers) == 10
    assert model.lanes["c1"].markers[0].at == 90.0


def _life(model: TimelineModel, name: str, moves: list[tuple[State, float]],
          group: str = "own") -> None:
    life = Lifecycle(name)
    for state, at in moves:
        model.record(life.move(state, at=at), group)


def test_lanes_are_grouped_and_each_group_has_a_band() -> None:
    model = TimelineModel()
    model.bands.resolution = 0.0  # every change is a point (the view's flush does the rest)
    _life(model, "console", [(State.CONNECTING, 1.0), (State.OPEN, 1.2)])
    _life(model, "p1", [(State.CONNECTING, 1.0)], group="proxy")
    batch = FleetBatch.parse({"states": [[f"c{i:04d}", 1000.0 + i / 10, "O", 0, None, None,
                                           None] for i in range(1, 5)],
                              "marks": [["c0001", 1002.0, "pong_received", 0.004],
                                        ["c0002", 1003.0, "server_dropped", 1.1]],
                              "nodes": {"c0001": "n1", "c0002": "n2"}})
    model.apply_swarm(batch, offset=1000.0 - 2.0)  # wall 1000 is monotonic 2.0
    assert [lane.group for lane in model.lanes.values()] == ["own", "proxy"] + ["swarm"] * 4
    assert model.lanes["swarm/c0001"].label == "c0001"
    assert model.lanes["swarm/c0003"].spans[0].start == pytest.approx(2.3)
    assert [(m.kind, m.value) for m in model.lanes["swarm/c0002"].markers] == [("dropped", 1.1)]
    assert model.lanes["swarm/c0001"].markers[0].label == "rtt 4.0 ms"
    assert model.bands.now(("source", "swarm")) == {"CONNECTING": 0, "OPEN": 4,
                                                   "RECONNECTING": 0, "CLOSED": 0}
    assert model.bands.now(("source", "proxy"))["CONNECTING"] == 1
    assert model.bands.groups("node") == ["(no node yet)", "n1", "n2"]
    assert [lane.name for lane in model.in_group("node", "n2")] == ["swarm/c0002"]
    t, counts = model.bands.window(("source", "swarm"), since=0.0)
    assert counts[-1].tolist() == [0, 4, 0, 0] and t[-1] >= t[0]
    # a client leaves: the band moves it from OPEN to RECONNECTING
    model.apply_swarm(FleetBatch.parse({"states": [["c0004", 1005.0, "R", 1, 0.5, 1001,
                                                     "backoff grows"]]}), offset=998.0)
    assert model.bands.now(("source", "swarm"))["RECONNECTING"] == 1
    span = model.lanes["swarm/c0004"].spans[-1]
    assert span.detail == "close 1001 - backoff grows" and span.delay == 0.5


def test_the_serving_node_comes_from_the_first_message_of_each_connection() -> None:
    model = TimelineModel()
    _life(model, "console", [(State.CONNECTING, 1.0), (State.OPEN, 1.1)])
    model(FrameRecord("console", Direction.IN, Opcode.TEXT, b'{"type":"joined","seq":1}'))
    assert model.lanes["console"].node is None
    model(FrameRecord("console", Direction.IN, Opcode.TEXT,
                      b'{"type":"message","room":"r","seq":2,"node":"n3"}'))
    model(FrameRecord("console", Direction.IN, Opcode.TEXT, b'{"node":"n9"}'))  # not read
    assert model.lanes["console"].node == "n3"
    assert model.bands.now(("node", "n3"))["OPEN"] == 1


def test_a_fault_shows_who_dropped_and_how_long_each_took_to_come_back() -> None:
    model = TimelineModel()
    _life(model, "a", [(State.CONNECTING, 1.0), (State.OPEN, 1.1), (State.RECONNECTING, 10.2),
                       (State.CONNECTING, 10.7), (State.OPEN, 11.5)])
    _life(model, "b", [(State.CONNECTING, 1.0), (State.OPEN, 1.1), (State.RECONNECTING, 10.4),
                       (State.CONNECTING, 11.0), (State.OPEN, 13.4)])
    _life(model, "c", [(State.CONNECTING, 1.0), (State.OPEN, 1.1)])  # untouched
    _life(model, "d", [(State.CONNECTING, 1.0), (State.OPEN, 1.1), (State.RECONNECTING, 10.3)])
    _life(model, "e", [(State.CONNECTING, 1.0), (State.OPEN, 1.1), (State.RECONNECTING, 30.0),
                       (State.CONNECTING, 30.5), (State.OPEN, 31.0)])  # after the next fault
    model.fault("node n1 killed", at=10.0)
    model.fault("broker down", at=25.0)
    found = impact(model, model.faults[0])
    assert [(h.lane, h.down) for h in found.hits] == [("a", pytest.approx(1.3)),
                                                      ("b", pytest.approx(3.0)), ("d", None)]
    assert found.open_at_fault == 5 and found.still_down == 1 and found.until == 25.0
    assert found.summary() == ("node n1 killed: 3 of 5 open clients dropped; back after p50 "
                               "1.30 s, max 3.00 s; 1 not back")
    edges, counts = found.histogram(bins=3)
    assert counts.sum() == 2 and edges[0] == 0.0 and edges[-1] >= 3.0
    assert impact(model, model.faults[1]).hits[0].lane == "e"
