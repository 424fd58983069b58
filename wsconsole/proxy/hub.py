"""What every proxied connection shares: rules, held frames, faults, counters and observers.

A `ProxyHub` is the proxy's headless model: the command line and the window are front ends
over one hub (mitmproxy style), reading the same records and calling the same controls.

Observers receive, in order, for every connection:
- `Transition` (core.lifecycle): CONNECTING at the request, OPEN once both handshakes are
  done, CLOSING at the first close frame, CLOSED at the end (code = the close code the app's
  client saw, error = why when the upstream refused or was unreachable);
- `FrameRecord` (core.events) for every frame as it was delivered to a peer (direction OUT:
  to the server, IN: to the client), control frames and each fragment included; frames the
  proxy made itself (inject, close) have `injected=True`;
- `HeartbeatEvent` "pong_received" with the round trip of a client's ping through the
  server, as the console's own connections report it;
- `ProxyEvent` for everything the proxy did or saw beyond plain relaying (see its kinds).

Every action is counted in `counters` (one Counter for the whole proxy; each connection keeps
its own too), so `--json` summaries and the window's panel show the same figures.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wsconsole.core.events import Direction, Opcode
from wsconsole.core.tasks import Tasks
from wsconsole.errors import WsconsoleError
from wsconsole.harness.netfaults import ALL, Fault, FaultBoard, Reset
from wsconsole.proxy.rules import Rule, RuleSet

if TYPE_CHECKING:
    from wsconsole.proxy.relay import ProxiedConnection

log = logging.getLogger(__name__)

EVENT_KINDS = frozenset({
    "opened",        # both handshakes done; detail: status, subprotocol
    "refused",       # the upstream answered the upgrade with another status (passed back)
    "failed",        # the upstream could not be reached (the client got 502/504)
    "held",          # a rule held a frame (payload: the frame)
    "released",      # a held frame was forwarded as it was
    "edited",        # a held frame was forwarded edited (payload: the original)
    "dropped",       # a frame was not delivered (payload: the frame; detail: why)
    "delayed",       # a frame was delivered late by a rule (detail: ms)
    "rewritten",     # a rule replaced a payload (payload: the original)
    "duplicated",    # a rule delivered a frame more than once (detail: copies)
    "injected",      # the user sent a frame of their own to one side
    "closed",        # the user closed a side with a chosen code
    "fault",         # a network fault was set on the connection (detail: kind, params)
    "fault_cleared",
    "error",         # a peer broke the protocol or a socket failed (detail: what)
    "ended",         # the connection is over (detail: the close codes)
})


class ProxyError(WsconsoleError):
    """A proxy control that cannot be done now (unknown connection or frame, side closed)."""


@dataclass(frozen=True, slots=True)
class ProxyEvent:
    """Something the proxy did to, or saw on, one connection (kinds: EVENT_KINDS)."""

    conn: str
    kind: str
    direction: Direction | None = None
    detail: str = ""
    rule: str | None = None
    opcode: Opcode | None = None
    payload: bytes | None = None
    at: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)


@dataclass
class ConnectionInfo:
    """One proxied connection's handshake and lifetime, as the views and the record show it."""

    id: str
    client: str  # the app client's address
    url: str  # the upstream URL this connection went to
    mode: str  # "reverse" or "forward"
    request_headers: list[tuple[str, str]] = field(default_factory=list)  # as the client sent
    upstream_headers: list[tuple[str, str]] = field(default_factory=list)  # as sent upstream
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)  # upstream's answer
    subprotocol: str | None = None
    compression: bool = False
    started: float = field(default_factory=time.time)
    opened: float | None = None
    ended: float | None = None
    client_close: tuple[int, str] | None = None  # the close code and reason the client sent
    server_close: tuple[int, str] | None = None  # ... and the server sent
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "conn": self.id, "client": self.client, "url": self.url, "mode": self.mode,
            "status": self.status, "subprotocol": self.subprotocol,
            "compression": self.compression, "request_headers": self.request_headers,
            "response_headers": self.response_headers, "started": self.started,
            "opened": self.opened, "ended": self.ended,
            "client_close": list(self.client_close) if self.client_close else None,
            "server_close": list(self.server_close) if self.server_close else None,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The user's decision on a held frame: forward (payload None: as it was) or drop."""

    forward: bool
    payload: bytes | None = None


@dataclass(eq=False)
class HeldFrame:
    """A frame waiting for the user; the frames behind it in its direction wait too."""

    id: int
    conn: str
    direction: Direction
    opcode: Opcode
    payload: bytes
    rule: str
    wall: float
    timeout: float | None
    on_timeout: str
    verdict: asyncio.Future[Verdict]


@dataclass(frozen=True)
class RelayLimits:
    """Every limit of a proxied connection (None: no limit)."""

    max_message: int | None = 16 << 20  # a larger message from a peer closes it with 1009
    max_pending: int | None = 10_000  # frames queued behind a held/delayed one before the
    #                                   proxy stops reading from that peer
    close_timeout: float = 5.0  # after a close frame is sent, the peer's TCP close is awaited
    handshake_timeout: float = 10.0  # request head, upstream dial and answer, each


class ProxyHub:
    """Rules, held frames, faults, counters and observers shared by every connection."""

    def __init__(self, rules: Iterable[Rule] = (), limits: RelayLimits | None = None) -> None:
        self.rules = RuleSet(rules)
        self.limits = limits or RelayLimits()
        self.faults = FaultBoard()
        self.counters: Counter[str] = Counter()
        self.connections: dict[str, ProxiedConnection] = {}
        self.held: dict[int, HeldFrame] = {}
        self._observers: list[Callable[[object], None]] = []  # every event
        self._frame_observers: list[Callable[[object], None]] = []  # ... frames too
        self.tasks = Tasks(prefix="proxy")
        self._ids = itertools.count(1)
        self._held_ids = itertools.count(1)
        self._faults_changed = asyncio.Event()

    # -- events -----------------------------------------------------------------------------

    def new_id(self) -> str:
        """The next connection id ("proxy-1", "proxy-2", ...)."""
        return f"proxy-{next(self._ids)}"

    def subscribe(self, observer: Callable[[object], None],
                  frames: bool = True) -> Callable[[], None]:
        """Call `observer` with every event (without frames and heartbeats unless `frames`);
        returns the function that unsubscribes it. With no frame observer at all, the relay
        makes no frame records (the fast path of `wsconsole proxy --quiet`)."""
        chosen = self._frame_observers if frames else self._observers
        chosen.append(observer)
        return lambda: chosen.remove(observer) if observer in chosen else None

    @property
    def wants_frames(self) -> bool:
        """Whether anyone observes frames."""
        return bool(self._frame_observers)

    def emit(self, event: object) -> None:
        """Hand `event` to every observer (one failing observer does not stop the others)."""
        self._call(self._frame_observers, event)
        self._call(self._observers, event)

    def emit_frame(self, event: object) -> None:
        """Hand a frame record or heartbeat to the observers of frames."""
        self._call(self._frame_observers, event)

    @staticmethod
    def _call(observers: list[Callable[[object], None]], event: object) -> None:
        for observer in observers:
            try:
                observer(event)
            except Exception:
                log.exception("proxy observer %r failed", observer)

    def event(self, conn: str, kind: str, **fields: Any) -> ProxyEvent:
        """Emit a ProxyEvent and count it under its kind (one of EVENT_KINDS)."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown proxy event kind {kind!r}")
        record = ProxyEvent(conn, kind, **fields)
        self.counters[kind] += 1
        connection = self.connections.get(conn)
        if connection is not None:
            connection.counters[kind] += 1
        self.emit(record)
        return record

    def connection(self, conn: str) -> ProxiedConnection:
        """The open connection `conn` (ProxyError when there is none)."""
        found = self.connections.get(conn)
        if found is None:
            known = ", ".join(self.connections) or "none open"
            raise ProxyError(f"no proxied connection {conn!r} ({known})")
        return found

    # -- held frames ------------------------------------------------------------------------

    def hold(self, conn: str, direction: Direction, opcode: Opcode, payload: bytes,
             rule: Rule) -> HeldFrame:
        """Register a held frame; its `verdict` future is resolved by `resolve` or timeout."""
        held = HeldFrame(
            id=next(self._held_ids), conn=conn, direction=direction, opcode=opcode,
            payload=payload, rule=rule.name, wall=time.time(), timeout=rule.timeout,
            on_timeout=rule.on_timeout, verdict=asyncio.get_running_loop().create_future())
        self.held[held.id] = held
        self.event(conn, "held", direction=direction, rule=rule.name, opcode=opcode,
                   payload=payload, detail=f"#{held.id}")
        return held

    def pending(self, conn: str | None = None) -> list[HeldFrame]:
        """Frames waiting for a decision, oldest first (of one connection, or all)."""
        return [h for h in self.held.values() if conn is None or h.conn == conn]

    def resolve(self, held_id: int, forward: bool, payload: bytes | None = None) -> HeldFrame:
        """Forward (as is, or with `payload`) or drop held frame `held_id`."""
        held = self.held.pop(held_id, None)
        if held is None:
            raise ProxyError(f"no held frame #{held_id} (it was decided already or its "
                             "connection ended)")
        if not held.verdict.done():
            held.verdict.set_result(Verdict(forward, payload))
        return held

    def release_all(self, conn: str | None = None, forward: bool = True) -> int:
        """Forward (or drop) every held frame, of one connection or all; returns how many."""
        chosen = self.pending(conn)
        for held in chosen:
            self.resolve(held.id, forward)
        return len(chosen)

    def forget(self, conn: str) -> None:
        """A connection ended: its held frames are dropped with it."""
        for held in self.pending(conn):
            self.held.pop(held.id, None)
            if not held.verdict.done():
                held.verdict.set_result(Verdict(False))

    # -- network faults ---------------------------------------------------------------------

    def set_fault(self, target: str, fault: Fault) -> None:
        """Apply a network fault to one connection, or to every connection with "all"."""
        if target != ALL:
            self.connection(target)
        if isinstance(fault, Reset):
            for conn in self._targets(target):
                self.event(conn.id, "fault", detail="reset")
                conn.reset()
            if not fault.persist:
                return
        self.faults.set(target, fault)
        self._refresh(target, "fault", fault.kind)

    def clear_fault(self, target: str, kind: str | None = None) -> int:
        """Remove one fault kind (None: all) from a target; returns how many went away."""
        removed = self.faults.clear(target, kind)
        if removed:
            self._refresh(target, "fault_cleared", kind or "all")
        return removed

    def _targets(self, target: str) -> list[ProxiedConnection]:
        return list(self.connections.values()) if target == ALL else [self.connection(target)]

    def _refresh(self, target: str, kind: str, detail: str) -> None:
        for conn in self._targets(target):
            conn.faults = self.faults.effective(conn.id)
            self.event(conn.id, kind, detail=detail)
        self._faults_changed.set()
        self._faults_changed = asyncio.Event()

    async def faults_changed(self) -> None:
        """Wait until a fault is set or cleared somewhere."""
        await self._faults_changed.wait()

    def persistent_reset(self, conn: str) -> bool:
        """Whether new connections must be reset as soon as they are accepted."""
        faults = self.faults.effective(conn)
        return faults is not None and faults.reset

    async def stop(self) -> None:
        """End every connection and task (held frames are dropped)."""
        for conn in list(self.connections.values()):
            conn.abort()
            self.forget(conn.id)
        await self.tasks.cancel_all()
