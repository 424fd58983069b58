"""Events the client emits to its observers: frames, heartbeats, errors, delivery accounting.

Together with `lifecycle.Transition` these are everything a view, a log or the CLI needs;
observers are plain callables, so the core stays free of Qt (the GUI buffers and batches).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import orjson

from wsconsole.core.lifecycle import Transition


class Direction(StrEnum):
    """Which way a frame went, seen from the client."""

    IN = "in"
    OUT = "out"


class Opcode(IntEnum):
    """RFC 6455 opcodes (section 5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


def _now() -> float:
    return time.monotonic()


def _wall() -> float:
    return time.time()


_UNPARSED: Any = object()

PARSE_LIMIT = 65_536  # text frames larger than this are not parsed on the ingest path


def json_object(payload: bytes) -> dict[str, Any] | None:
    """A text payload's JSON object, or None: not starting with `{`, not JSON (invalid
    UTF-8 included), or not an object."""
    if payload[:1] != b"{":
        return None
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def read_text(payload: bytes) -> dict[str, Any] | None:
    """An unfragmented text frame as it arrives: its JSON object (`json_object`; not parsed
    above PARSE_LIMIT bytes) after proving it is UTF-8, which RFC 6455 (8.1) requires of a
    text message: UnicodeDecodeError if not (the connection then fails with 1007). A
    successful parse is the proof, so a JSON frame costs one pass, not a parse and a
    decode."""
    value = json_object(payload) if len(payload) <= PARSE_LIMIT else None
    if value is None:
        payload.decode()
    return value


@dataclass(slots=True)
class FrameRecord:
    """One WebSocket frame as sent or received, content kept as bytes (like mitmproxy).

    `json()` parses a text frame's JSON object once and keeps it: every observer of a frame
    (the frame store, a session's latency figure, the client's own envelope handling) shares
    that one parse instead of parsing the same bytes again.

    Treat a record as immutable once emitted. It is not a frozen dataclass because one is
    built for every frame on the ingest path, and a frozen one's `__init__` (one
    `object.__setattr__` call per field) costs 2.5x a plain one (1.5 vs 0.6 µs).
    """

    conn: str
    direction: Direction
    opcode: Opcode
    payload: bytes
    fin: bool = True
    close_code: int | None = None
    close_reason: str | None = None
    injected: bool = False
    at: float = field(default_factory=_now)
    wall: float = field(default_factory=_wall)
    _json: Any = field(default=_UNPARSED, init=False, repr=False, compare=False)

    @property
    def size(self) -> int:
        """Payload length in bytes."""
        return len(self.payload)

    def json(self) -> dict[str, Any] | None:
        """The payload as a JSON object (parsed on the first call, then kept), or None: not
        a final text frame, not starting with `{`, not JSON, or not an object."""
        value = self._json
        if value is _UNPARSED:
            value = None
            if self.opcode is Opcode.TEXT and self.fin:
                value = json_object(self.payload)
            self._json = value
        return value


class FrameBatch:
    """The unfragmented data frames one connection received in one read of its transport,
    in wire order, as parallel lists: the ingest path's unit of work.

    A flood arrives as thousands of frames per read; handing each observer (and the client)
    the whole read at once costs one call per read instead of one record and one call per
    frame and observer. Frames of one read arrived together, so they share one arrival time
    (`at`, monotonic; `wall`). `values[i]` is frame i's JSON object when it is a text frame
    whose payload is one (parsed once, by `read_text`, for every consumer), else None.
    Observers that know batches define `take_frames(batch)`; the others get `records()`.
    """

    __slots__ = ("_records", "at", "conn", "opcodes", "payloads", "values", "wall")

    def __init__(self, conn: str) -> None:
        self.conn = conn
        self.at = time.monotonic()  # made as its read arrives
        self.wall = time.time()
        self.payloads: list[bytes] = []
        self.opcodes: list[Opcode] = []
        self.values: list[dict[str, Any] | None] = []
        self._records: list[FrameRecord] | None = None

    def __len__(self) -> int:
        return len(self.payloads)

    def records(self) -> list[FrameRecord]:
        """The frames as records (made on the first call, shared by every observer that
        asks), their JSON already parsed where the batch parsed it."""
        if self._records is None:
            made = []
            conn, at, wall = self.conn, self.at, self.wall
            for payload, opcode, value in zip(self.payloads, self.opcodes, self.values,
                                              strict=True):
                record = FrameRecord(conn, Direction.IN, opcode, payload, at=at, wall=wall)
                if opcode is Opcode.TEXT and len(payload) <= PARSE_LIMIT:
                    record._json = value  # read_text parsed it (None: not a JSON object)
                made.append(record)
            self._records = made
        return self._records


@dataclass(frozen=True, slots=True)
class HeartbeatEvent:
    """A ping sent or received, a pong with its round-trip time, a liveness failure, or the
    heartbeat lab shaping the automatic pong to a server ping (core/heartbeat.py).

    kind: "ping_sent", "ping_received", "pong_received" (rtt set), "liveness_lost",
    "pong_withheld", "pong_delayed" (delay set, seconds), "pong_altered" (a wrong payload),
    "pong_unsolicited" (the lab sent a pong nobody asked for) or "server_dropped" (the server
    closed the connection `delay` seconds after its pongs stopped: how long it keeps a dead
    client).
    """

    conn: str
    kind: str
    rtt: float | None = None
    at: float = field(default_factory=_now)
    wall: float = field(default_factory=_wall)
    delay: float | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Something went wrong: kind is a short stable word ("refused", "dns", "tls", ...)."""

    conn: str
    kind: str
    detail: str
    at: float = field(default_factory=_now)
    wall: float = field(default_factory=_wall)


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    """Delivery bookkeeping: kind is "ack", "gap", "duplicate", "out_of_order", "recovered",
    "replayed", "recovery_window_exceeded", "reset" (a room's sequence space restarted),
    "stale" (a message from an epoch left behind) or "lagging" (the node stopped sending:
    we read too slowly; recovered on the rejoin); room/seq/id/epoch where they apply."""

    conn: str
    kind: str
    room: str | None = None
    seq: int | None = None
    id: str | None = None
    detail: str | None = None
    epoch: str | int | None = None
    at: float = field(default_factory=_now)
    wall: float = field(default_factory=_wall)


# Close codes that never travel in a close frame: they name what a peer saw instead.
_NOT_SENT = {1005: "no status code", 1006: "closed abnormally, no close frame",
             1015: "TLS handshake failed"}


def describe_close(code: int | None, reason: str | None = None) -> str:
    """A close code and reason in plain words for logs and terminals: "1001 going away",
    "1005 (no status code)" for an empty close frame, "no close code" for none at all."""
    if code is None:
        return f"no close code {reason}".strip() if reason else "no close code"
    text = f"{code} {reason or ''}".strip()
    return f"{text} ({_NOT_SENT[code]})" if code in _NOT_SENT and not reason else text


Event = Transition | FrameRecord | HeartbeatEvent | ErrorEvent | DeliveryEvent
Observer = Callable[[Event], None]
