"""Headless models under the views: Timeline lanes (no Qt, no loop); the plot series ring is
tested with core/metrics.py in tests/test_client_metrics.py."""

from __future__ import annotations

from wsconsole.app.timelinemodel import TimelineModel
from wsconsole.core.events import DeliveryEvent, ErrorEvent, HeartbeatEvent
from wsconsole.core.lifecycle import Lifecycle, State


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
    assert (lane.markers[1].kind, lane.markers[1].label) == ("error", "reset r: epoch e1 -> e2")


def test_timeline_is_bounded() -> None:
    model = TimelineModel(limit=10)
    for i in range(100):
        model(HeartbeatEvent("c1", "ping_sent", at=float(i)))
    assert len(model.lanes["c1"].markers) == 10
    assert model.lanes["c1"].markers[0].at == 90.0
