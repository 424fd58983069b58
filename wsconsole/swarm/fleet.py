"""What a swarm tells the window about each of its clients, batched, and what it keeps for it.

`FleetWatch` observes every simulated client (one observer per client, plain callables, no
I/O) and keeps three things:

- the fleet events since the last batch: state changes (with the reconnect attempt, its
  delay and why), heartbeat marks (pongs with their round trip, liveness lost, the lab's
  withheld / late / wrong pongs, the server dropping a client that stopped answering) and
  the node serving each client (from the `node` of the messages it receives). `batch()`
  hands them over as one JSON-ready dict: one `fleet` line every few hundred milliseconds
  however many thousand events happened meanwhile (bounded by `max_events`, the rest
  counted as `dropped`);
- a ring of the clients' last `ring` frames, so the window can ask for one client's frames
  in a time range after the fact (`frames()`), which it shows in its Frames view;
- the heartbeat ledger of the clients running the lab's pong policy: how long the server
  kept each one that stopped answering before it closed it (`figures()`, merged into the
  swarm's stats and summary so a scenario can assert on them).

`FleetBatch` reads a batch back (the console's side of the same format), so the format
lives in this one module. Times are wall-clock seconds (time.time()).
"""

from __future__ import annotations

import base64
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from wsconsole.core.events import Direction, Event, FrameRecord, HeartbeatEvent, Opcode
from wsconsole.core.lifecycle import State, Transition
from wsconsole.core.metrics import percentile

STATE_CODES = {State.CONNECTING: "C", State.OPEN: "O", State.CLOSING: "G", State.CLOSED: "X",
               State.RECONNECTING: "R"}
STATES_BY_CODE = {code: state for state, code in STATE_CODES.items()}
# heartbeat kinds a batch carries (pings are too many to mark one by one)
MARKED = frozenset({"pong_received", "liveness_lost", "pong_withheld", "pong_delayed",
                    "pong_altered", "pong_unsolicited", "server_dropped"})
MAX_FRAMES_REPLY = 5000
MAX_REPLY_BYTES = 1 << 20  # payload characters in one reply (the reader's line limit is 4 MiB)


class FleetWatch:
    """Observes a swarm's clients for the window (see the module docstring)."""

    def __init__(self, max_events: int = 50_000, ring: int | None = 50_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_events = max_events
        self.clock = clock
        self._states: list[list[Any]] = []
        self._marks: list[list[Any]] = []
        self._nodes: dict[str, str] = {}
        self._node_of: dict[str, str] = {}
        self._dropped = 0
        self._frames: deque[tuple[int, FrameRecord]] = deque(maxlen=ring)
        self._count = itertools.count()
        self.drops: list[float] = []  # seconds a silent client was kept before a server close
        self.silent_clients: set[str] = set()

    # -- observing ---------------------------------------------------------------------------

    def observer(self, name: str) -> Callable[[Event], None]:
        """The observer of client `name`."""
        frames = self._frames
        counter = self._count

        def observe(event: Event) -> None:
            if isinstance(event, FrameRecord):
                if frames.maxlen != 0:
                    frames.append((next(counter), event))
            elif isinstance(event, Transition):
                if self._room():
                    why = event.decision or event.error or event.reason
                    self._states.append([name, round(event.wall, 4), STATE_CODES[event.state],
                                         event.attempt, event.delay, event.code, why])
            elif isinstance(event, HeartbeatEvent) and event.kind in MARKED:
                if event.kind == "server_dropped" and event.delay is not None:
                    self.drops.append(event.delay)
                if self._room():
                    value = event.rtt if event.kind == "pong_received" else event.delay
                    self._marks.append([name, round(event.wall, 4), event.kind, value])

        return observe

    def _room(self) -> bool:
        if len(self._states) + len(self._marks) < self.max_events:
            return True
        self._dropped += 1
        return False

    def node(self, name: str, node: object) -> None:
        """Client `name` received a message delivered by `node` (the node serving it)."""
        if isinstance(node, str) and self._node_of.get(name) != node:
            self._node_of[name] = node
            self._nodes[name] = node

    def set_silent(self, name: str, silent: bool) -> None:
        """Client `name` runs a pong policy that does not answer (or no longer does)."""
        if silent:
            self.silent_clients.add(name)
        else:
            self.silent_clients.discard(name)

    # -- handing over ------------------------------------------------------------------------

    def batch(self) -> dict[str, Any] | None:
        """The events since the last batch as one JSON-ready dict, None when there were none."""
        if not (self._states or self._marks or self._nodes or self._dropped):
            return None
        batch = {"t": round(self.clock(), 4), "states": self._states, "marks": self._marks,
                 "nodes": self._nodes, "dropped": self._dropped}
        self._states, self._marks, self._nodes, self._dropped = [], [], {}, 0
        return batch

    def frames(self, clients: Iterable[str], since: float, until: float,
               after: int = -1) -> dict[str, Any]:
        """The kept frames of `clients` with since <= wall <= until and a number above
        `after`, oldest first, at most MAX_FRAMES_REPLY of them or MAX_REPLY_BYTES of payload
        (`more` says when some were left: ask again with `after` = the last number)."""
        wanted = set(clients)
        found = []
        more = False
        size = 0
        for number, frame in self._frames:
            if number <= after or frame.conn not in wanted or not since <= frame.wall <= until:
                continue
            if len(found) >= MAX_FRAMES_REPLY or size > MAX_REPLY_BYTES:
                more = True
                break
            row = _frame_row(number, frame)
            size += len(row[6]) + 64
            found.append(row)
        return {"frames": found, "more": more,
                "kept_since": self._frames[0][1].wall if self._frames else None}

    def figures(self, clients: Iterable[Any], now: float) -> dict[str, Any]:
        """The heartbeat ledger: clients running a silent pong policy, how often the server
        dropped one, after how long, and the longest one stayed connected while silent
        (those still open count with their time so far: a server that never drops dead
        clients shows here)."""
        kept = list(self.drops)
        for client in clients:
            beat = getattr(client, "server_heartbeat", None)
            if beat is not None and client.name in self.silent_clients:
                silent = beat.silent_for(now)
                if silent is not None:
                    kept.append(silent)
        return {
            "pongs_off_clients": len(self.silent_clients),
            "dead_drops": len(self.drops),
            "dead_drop_p50_ms": _ms(percentile(self.drops, 50)),
            "dead_drop_max_ms": _ms(max(self.drops) if self.drops else None),
            "dead_kept_max_ms": _ms(max(kept) if kept else None),
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 3)


def _frame_row(number: int, frame: FrameRecord) -> list[Any]:
    text = frame.opcode is Opcode.TEXT
    data = frame.payload.decode("utf-8", "replace") if text else \
        base64.b64encode(frame.payload).decode()
    return [number, frame.conn, round(frame.wall, 6), frame.direction.value,
            int(frame.opcode), text, data, frame.close_code, frame.close_reason]


# -- the console's side ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetState:
    """One state change of one swarm client, read back from a batch."""

    client: str
    wall: float
    state: State
    attempt: int = 0
    delay: float | None = None
    code: int | None = None
    why: str | None = None


@dataclass(frozen=True, slots=True)
class FleetMark:
    """One heartbeat mark of one swarm client (kinds: MARKED)."""

    client: str
    wall: float
    kind: str
    value: float | None = None


@dataclass
class FleetBatch:
    """A `fleet` batch as the console reads it; malformed rows are skipped and counted."""

    states: list[FleetState] = field(default_factory=list)
    marks: list[FleetMark] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)
    dropped: int = 0
    malformed: int = 0

    @classmethod
    def parse(cls, record: dict[str, Any]) -> FleetBatch:
        """Read one `fleet` line (already JSON-decoded)."""
        batch = cls(dropped=int(record.get("dropped") or 0))
        for row in record.get("states") or ():
            try:
                name, wall, code, attempt, delay, close, why = row
                batch.states.append(FleetState(str(name), float(wall), STATES_BY_CODE[code],
                                               int(attempt), _number(delay),
                                               int(close) if close is not None else None,
                                               str(why) if why else None))
            except (ValueError, TypeError, KeyError):
                batch.malformed += 1
        for row in record.get("marks") or ():
            try:
                name, wall, kind, value = row
                if kind not in MARKED:
                    raise ValueError(kind)
                batch.marks.append(FleetMark(str(name), float(wall), str(kind), _number(value)))
            except (ValueError, TypeError):
                batch.malformed += 1
        nodes = record.get("nodes")
        if isinstance(nodes, dict):
            batch.nodes = {str(k): str(v) for k, v in nodes.items()}
        return batch


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(value)
    return float(value)


def frame_records(rows: Iterable[list[Any]], prefix: str = ""
                  ) -> Iterable[tuple[int, FrameRecord]]:
    """The frames of a `frames` reply as (number, FrameRecord), conn names with `prefix`;
    malformed rows are skipped."""
    for row in rows:
        try:
            number, conn, wall, direction, opcode, text, data, code, reason = row
            payload = str(data).encode() if text else base64.b64decode(str(data))
            yield int(number), FrameRecord(
                f"{prefix}{conn}", Direction(direction), Opcode(int(opcode)), payload,
                close_code=code if isinstance(code, int) else None,
                close_reason=reason if isinstance(reason, str) else None,
                at=0.0, wall=float(wall))
        except (ValueError, TypeError):
            continue


__all__ = ["MARKED", "FleetBatch", "FleetMark", "FleetState", "FleetWatch", "frame_records"]
