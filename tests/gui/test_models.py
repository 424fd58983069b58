"""Headless models under the views: Timeline lanes and plot series (no Qt, no loop)."""

from __future__ import annotations

from wsconsole.app.timelinemodel import TimelineModel
from wsconsole.core.events import ErrorEvent, HeartbeatEvent
from wsconsole.core.lifecycle import Lifecycle, State
from wsconsole.gui.series import SeriesStore


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


def test_timeline_is_bounded() -> None:
    model = TimelineModel(limit=10)
    for i in range(100):
        model(HeartbeatEvent("c1", "ping_sent", at=float(i)))
    assert len(model.lanes["c1"].markers) == 10
    assert model.lanes["c1"].markers[0].at == 90.0


def test_series_window_and_ring() -> None:
    store = SeriesStore(capacity=5)
    for t in range(8):
        store.add("conns.total", float(t), t * 10)
    store.tick()
    t, v = store.window("conns.total", since=0)
    assert t.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]  # the ring kept the last 5, in order
    t, v = store.window("conns.total", since=5.5)
    assert v.tolist() == [60.0, 70.0]
    assert store.last("conns.total") == 70.0
    assert store.names("conns.") == ["conns.total"]
    assert store.window("missing", 0)[0].size == 0 and store.version == 1
