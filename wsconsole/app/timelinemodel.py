"""Headless model of the Timeline: a lane per client with state spans and markers (no Qt).

Fed with the client's events (it is an Observer) and with fault markers from the cluster;
bounded per lane; the view repaints when `version` changes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from wsconsole.core.events import DeliveryEvent, ErrorEvent, HeartbeatEvent, describe_close
from wsconsole.core.lifecycle import State, Transition

NOTICES = frozenset({"reset", "recovery_window_exceeded"})  # delivery events marked


@dataclass(slots=True)
class Span:
    """A stretch of time in one state; `end` is None while it lasts."""

    state: State
    start: float
    end: float | None = None
    attempt: int = 0
    delay: float | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Marker:
    """A point event: "ping", "pong" (rtt), "miss", "error", "attempt", "fault" or "action"
    (something the intercepting proxy did to the connection: held, dropped, injected...)."""

    at: float
    kind: str
    label: str = ""
    value: float | None = None


class Lane:
    """One client's spans and markers, each bounded to `limit` entries."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.spans: deque[Span] = deque(maxlen=limit)
        self.markers: deque[Marker] = deque(maxlen=limit)

    @property
    def state(self) -> State:
        """The state of the last span (CLOSED before anything happened)."""
        return self.spans[-1].state if self.spans else State.CLOSED


class TimelineModel:
    """Lanes keyed by connection name plus global fault markers, on the monotonic clock."""

    def __init__(self, limit: int = 5_000) -> None:
        self.limit = limit
        self.lanes: dict[str, Lane] = {}
        self.faults: deque[Marker] = deque(maxlen=limit)
        self.origin = time.monotonic()
        self.version = 0

    def lane(self, name: str) -> Lane:
        """The lane for `name`, created on first use."""
        found = self.lanes.get(name)
        if found is None:
            found = self.lanes[name] = Lane(name, self.limit)
            self.version += 1
        return found

    def remove_lane(self, name: str) -> None:
        """Forget a connection's lane (the connection was removed)."""
        if self.lanes.pop(name, None) is not None:
            self.version += 1

    def __call__(self, event: object) -> None:
        """Observer: record transitions, heartbeats, errors and room resets; ignore frames."""
        if isinstance(event, Transition):
            self.transition(event)
        elif isinstance(event, HeartbeatEvent):
            self.heartbeat(event)
        elif isinstance(event, ErrorEvent):
            lane = self.lane(event.conn)
            lane.markers.append(Marker(event.at, "error", f"{event.kind}: {event.detail}"))
            self.version += 1
        elif isinstance(event, DeliveryEvent) and event.kind in NOTICES:
            lane = self.lane(event.conn)  # a room's sequence restarted or could not resume
            lane.markers.append(Marker(event.at, "error",
                                       f"{event.kind} {event.room}: {event.detail}"))
            self.version += 1

    def transition(self, change: Transition) -> None:
        """Close the current span and open one for the new state."""
        lane = self.lane(change.conn)
        if lane.spans and lane.spans[-1].end is None:
            lane.spans[-1].end = change.at
        cause = None
        if change.code is not None:
            cause = f"close {describe_close(change.code, change.reason)}"
        elif change.error:
            cause = change.error
        detail = " - ".join(part for part in (cause, change.decision) if part) or None
        lane.spans.append(
            Span(change.state, change.at, None, change.attempt, change.delay, detail)
        )
        if change.state == State.RECONNECTING and change.delay is not None:
            label = f"attempt {change.attempt} in {change.delay:.1f} s"
            if change.decision:  # why this delay: grew, reset, Retry-After, a fresh token
                label += f": {change.decision}"
            lane.markers.append(Marker(change.at, "attempt", label, change.delay))
        self.version += 1

    def heartbeat(self, event: HeartbeatEvent) -> None:
        """Tick marks for pings and pongs, a miss marker for a lost liveness."""
        lane = self.lane(event.conn)
        if event.kind == "ping_sent":
            lane.markers.append(Marker(event.at, "ping"))
        elif event.kind == "pong_received":
            rtt = event.rtt or 0.0
            lane.markers.append(Marker(event.at, "pong", f"rtt {rtt * 1000:.1f} ms", rtt))
        elif event.kind == "liveness_lost":
            lane.markers.append(Marker(event.at, "miss", "heartbeat missed"))
        else:
            return
        self.version += 1

    def action(self, conn: str, label: str, at: float | None = None) -> None:
        """Something done to one connection's traffic (by the proxy): a marker on its lane."""
        lane = self.lane(conn)
        lane.markers.append(Marker(time.monotonic() if at is None else at, "action", label))
        self.version += 1

    def fault(self, label: str, at: float | None = None) -> None:
        """A fault injected by the user or a scenario (node killed, broker cut, ...)."""
        self.faults.append(Marker(time.monotonic() if at is None else at, "fault", label))
        self.version += 1

    def states(self, name: str) -> list[State]:
        """The sequence of states a lane went through, oldest first (for tests and tools)."""
        lane = self.lanes.get(name)
        return [] if lane is None else [span.state for span in lane.spans]
