"""Headless model of the fleet Timeline: a lane per client with state spans and markers, lanes
grouped, and a summary band per group (no Qt).

Every client the console knows gets a lane in a source group: "own" (the console's own
connections, fed by their client as an Observer), "swarm" (the swarm's simulated clients,
fed in batches read from the swarm's `fleet` lines: `apply_swarm`) and "proxy" (connections
through the intercepting proxy: the hub's observer is `observer("proxy")`). Each lane also
knows the node serving it (read from the `node` of the first message of each connection,
or told by the swarm), so the view can group by node instead. `bands` (fleetbands.py)
counts the lanes of each group per state over time.

Fault markers are global (node killed, broker down, network fault ...); `impact()`
(faultimpact.py) says which clients each one affected and how long they took to come back.
Everything is on the monotonic clock and bounded per lane; the view repaints when `version`
changes. Fed on the asyncio loop, read by the Qt thread: the same thread under qasync.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wsconsole.app.fleetbands import NO_NODE, FleetBands, bucket
from wsconsole.core.events import (
    DeliveryEvent,
    Direction,
    ErrorEvent,
    FrameBatch,
    FrameRecord,
    HeartbeatEvent,
    Opcode,
    describe_close,
)
from wsconsole.core.lifecycle import State, Transition
from wsconsole.swarm.fleet import FleetBatch

NOTICES = frozenset({"reset", "recovery_window_exceeded"})  # delivery events marked
SOURCES = ("own", "swarm", "proxy")
SWARM_PREFIX = "swarm/"  # swarm lanes (and their frames) are named swarm/c0001 ...
# what a heartbeat event becomes on its lane: (marker kind, label)
HEARTBEAT_MARKS = {
    "ping_sent": ("ping", ""),
    "ping_received": ("sping", "server ping"),
    "liveness_lost": ("miss", "heartbeat missed"),
    "pong_withheld": ("withheld", "pong withheld (heartbeat lab)"),
    "pong_delayed": ("late", "pong delayed (heartbeat lab)"),
    "pong_altered": ("altered", "pong with a wrong payload (heartbeat lab)"),
    "pong_unsolicited": ("unsolicited", "unsolicited pong sent (heartbeat lab)"),
    "server_dropped": ("dropped", "the server dropped this silent client"),
}


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
    """A point event: "ping", "sping" (a server ping), "pong" (rtt), "miss", "error",
    "attempt", "fault", "action" (something the intercepting proxy did to the connection),
    "notice" (the server said messages will not come: a room's sequence space was reset, or
    the recovery window was exceeded), or the heartbeat lab's "withheld", "late", "altered",
    "unsolicited" and "dropped"."""

    at: float
    kind: str
    label: str = ""
    value: float | None = None


class Lane:
    """One client's spans and markers, each bounded to `limit` entries."""

    def __init__(self, name: str, limit: int, group: str = "own") -> None:
        self.name = name
        self.group = group
        self.node: str | None = None
        self.spans: deque[Span] = deque(maxlen=limit)
        self.markers: deque[Marker] = deque(maxlen=limit)
        self.node_wanted = True  # read the node from the next inbound message

    @property
    def state(self) -> State:
        """The state of the last span (CLOSED before anything happened)."""
        return self.spans[-1].state if self.spans else State.CLOSED

    @property
    def label(self) -> str:
        """The name shown in the lane (a swarm client without its prefix)."""
        return self.name.removeprefix(SWARM_PREFIX)

    def key(self, grouping: str) -> tuple[str, str]:
        """The group this lane is in under `grouping` ("source" or "node")."""
        return ("source", self.group) if grouping == "source" else ("node", self.node or NO_NODE)


class TimelineModel:
    """Lanes keyed by connection name plus global fault markers, on the monotonic clock."""

    def __init__(self, limit: int = 5_000, swarm_limit: int = 400) -> None:
        self.limit = limit
        self.swarm_limit = swarm_limit  # a thousand swarm lanes must stay light
        self.lanes: dict[str, Lane] = {}
        self.faults: deque[Marker] = deque(maxlen=limit)
        self.bands = FleetBands()
        self.origin = time.monotonic()
        self.version = 0
        self.swarm_dropped = 0  # swarm events the swarm could not send (its batch was full)

    # -- lanes -------------------------------------------------------------------------------

    def lane(self, name: str, group: str = "own", at: float | None = None) -> Lane:
        """The lane for `name`, created in `group` on first use (at monotonic `at`)."""
        found = self.lanes.get(name)
        if found is None:
            limit = self.swarm_limit if group == "swarm" else self.limit
            found = self.lanes[name] = Lane(name, limit, group)
            self.bands.move(time.monotonic() if at is None else at,
                            (found.key("source"), found.key("node")), None, "CLOSED")
            self.version += 1
        return found

    def remove_lane(self, name: str) -> None:
        """Forget a connection's lane (the connection was removed)."""
        lane = self.lanes.pop(name, None)
        if lane is not None:
            self.bands.move(time.monotonic(), (lane.key("source"), lane.key("node")),
                            bucket(lane.state), None)
            self.version += 1

    def in_group(self, grouping: str, group: str) -> list[Lane]:
        """The lanes of one group, in order of appearance."""
        return [lane for lane in self.lanes.values() if lane.key(grouping)[1] == group]

    def set_node(self, name: str, node: str, at: float | None = None) -> None:
        """The node serving `name` (moves it between the per-node groups)."""
        lane = self.lanes.get(name)
        if lane is None or lane.node == node:
            return
        old = lane.key("node")
        lane.node = node
        self.bands.regroup(time.monotonic() if at is None else at, old, lane.key("node"),
                           bucket(lane.state))
        self.version += 1

    # -- events ------------------------------------------------------------------------------

    def __call__(self, event: object) -> None:
        """Observer of the console's own clients (group "own")."""
        self.record(event, "own")

    def take_frames(self, batch: FrameBatch) -> None:
        """Batch observer form of `__call__` for a read's received frames: only the first
        harness message naming its node is looked at (see `_node_from`)."""
        lane = self.lanes.get(batch.conn)
        if lane is None or not lane.node_wanted:
            return
        for value in batch.values:
            if value is not None and self._node_named(lane, value, batch.at):
                return

    def observer(self, group: str) -> Callable[[object], None]:
        """An observer whose clients get lanes in `group` (the proxy's hub: "proxy")."""
        return lambda event: self.record(event, group)

    def record(self, event: object, group: str) -> None:
        """Record transitions, heartbeats, errors, room resets and the serving node."""
        if isinstance(event, FrameRecord):  # by far the most frequent: tested first
            if event.direction is Direction.IN and event.opcode is Opcode.TEXT:
                self._node_from(event, group)
        elif isinstance(event, Transition):
            self.transition(event, group)
        elif isinstance(event, HeartbeatEvent):
            self.heartbeat(event, group)
        elif isinstance(event, ErrorEvent):
            lane = self.lane(event.conn, group)
            lane.markers.append(Marker(event.at, "error", f"{event.kind}: {event.detail}"))
            self.version += 1
        elif isinstance(event, DeliveryEvent) and event.kind in NOTICES:
            lane = self.lane(event.conn, group)  # a room's sequence restarted or could not resume
            lane.markers.append(Marker(event.at, "notice",
                                       f"{event.kind} {event.room}: {event.detail}"))
            self.version += 1

    def _node_from(self, frame: FrameRecord, group: str) -> None:
        """The first inbound harness message of a connection says which node serves it."""
        lane = self.lanes.get(frame.conn)
        if lane is None or not lane.node_wanted or b'"node"' not in frame.payload[:2048]:
            return
        value = frame.json()  # parsed once, shared with the other observers
        if value is not None:
            self._node_named(lane, value, frame.at)

    def _node_named(self, lane: Lane, value: dict[str, Any], at: float) -> bool:
        """Take the node a harness message names (`node`) as the lane's; False if none."""
        node = value.get("node")
        if not isinstance(node, str) or not node:
            return False
        lane.node_wanted = False
        self.set_node(lane.name, node, at)
        return True

    def transition(self, change: Transition, group: str = "own") -> None:
        """Close the current span and open one for the new state."""
        cause = None
        if change.code is not None:
            cause = f"close {describe_close(change.code, change.reason)}"
        elif change.error:
            cause = change.error
        self._move(self.lane(change.conn, group, change.at), change.state, change.at,
                   change.attempt, change.delay, cause, change.decision)

    def _move(self, lane: Lane, state: State, at: float, attempt: int, delay: float | None,
              cause: str | None, decision: str | None) -> None:
        old = bucket(lane.state)
        if lane.spans and lane.spans[-1].end is None:
            lane.spans[-1].end = at
        detail = " - ".join(part for part in (cause, decision) if part) or None
        lane.spans.append(Span(state, at, None, attempt, delay, detail))
        if state is State.OPEN:
            lane.node_wanted = True
        new = bucket(state)
        if new != old:
            self.bands.move(at, (lane.key("source"), lane.key("node")), old, new)
        if state is State.RECONNECTING and delay is not None:
            label = f"attempt {attempt} in {delay:.1f} s"
            if decision:  # why this delay: grew, reset, Retry-After, a fresh token
                label += f": {decision}"
            lane.markers.append(Marker(at, "attempt", label, delay))
        self.version += 1

    def heartbeat(self, event: HeartbeatEvent, group: str = "own") -> None:
        """Tick marks for pings and pongs, a miss marker for a lost liveness, and the heartbeat
        lab's shaped pongs and the server's reaction."""
        lane = self.lane(event.conn, group)
        if event.kind == "pong_received":
            rtt = event.rtt or 0.0
            lane.markers.append(Marker(event.at, "pong", f"rtt {rtt * 1000:.1f} ms", rtt))
        elif event.kind in HEARTBEAT_MARKS:
            kind, label = HEARTBEAT_MARKS[event.kind]
            if event.delay is not None:
                label += f" ({event.delay * 1000:.0f} ms)" if kind == "late" else \
                    f" after {event.delay:.2f} s"
            lane.markers.append(Marker(event.at, kind, label, event.delay))
        else:
            return
        self.version += 1

    def apply_swarm(self, batch: FleetBatch, offset: float | None = None) -> None:
        """A `fleet` batch from the swarm: lanes swarm/<client> in group "swarm"; wall times
        become monotonic with `offset` (wall - monotonic; measured now by default)."""
        offset = time.time() - time.monotonic() if offset is None else offset
        for change in batch.states:
            lane = self.lane(SWARM_PREFIX + change.client, "swarm", change.wall - offset)
            cause = None if change.code is None else f"close {describe_close(change.code)}"
            self._move(lane, change.state, change.wall - offset, change.attempt, change.delay,
                       cause, change.why)
        for mark in batch.marks:
            lane = self.lane(SWARM_PREFIX + mark.client, "swarm")
            kind = "pong_received" if mark.kind == "pong_received" else mark.kind
            self.heartbeat(HeartbeatEvent(lane.name, kind,
                                          rtt=mark.value if kind == "pong_received" else None,
                                          at=mark.wall - offset, wall=mark.wall,
                                          delay=None if kind == "pong_received" else mark.value),
                           "swarm")
        for client, node in batch.nodes.items():
            self.set_node(SWARM_PREFIX + client, node)
        self.swarm_dropped += batch.dropped
        self.version += 1

    def action(self, conn: str, label: str, at: float | None = None) -> None:
        """Something done to one connection's traffic (by the proxy): a marker on its lane."""
        lane = self.lane(conn, "proxy")
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


__all__ = ["SOURCES", "SWARM_PREFIX", "Lane", "Marker", "Span", "TimelineModel"]
