"""A bounded, compact store of WebSocket frames for the Frames view (no Qt here).

Producers (client observers on the asyncio loop) call `append`; views pull new rows in
batches on a timer (DESIGN.md: never one Qt signal per frame). Numeric columns live in
parallel numpy arrays used as a ring, payloads in a list of bytes; the oldest frames are
dropped (and counted) when either the frame capacity or the payload byte budget is reached.
Frames are addressed by a monotonically increasing id; ids in [first_id, next_id) are kept.

`append` only stages the record and hands out its id (a list append: it runs once per frame
received, at up to a few hundred thousand a second); the staged frames are written to the
columns in one batch (`flush`: slice assignments instead of ten numpy item writes per
frame) when anything reads the store, when `STAGE_LIMIT` are waiting, or when a
connection's decoding context changes. What a reader sees is exactly what appending them
one by one gives.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from wsconsole.app.decoding import Decoding
from wsconsole.core.events import Direction, FrameRecord, Opcode
from wsconsole.decoders.base import Decoded

NONE = -1  # "no value" in the integer columns (seq, room, node, close code)
_DIRS = (Direction.IN, Direction.OUT)
_MAX_NAMES = 65_536  # interned room/node/conn names; beyond that they read as "(other)"
_PARSE_LIMIT = 65_536  # text frames larger than this are not parsed for room/seq/node
STAGE_LIMIT = 4096  # frames staged by `append` before they are written to the columns
# a quantified group that itself contains a quantifier: the classic catastrophic backtracking
# shape, which Python's re cannot interrupt (it would freeze the window)
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)[+*{]")


@dataclass(frozen=True, slots=True)
class FrameRow:
    """One stored frame, decoded for display and export."""

    id: int
    wall: float
    conn: str
    direction: Direction
    opcode: Opcode
    size: int
    room: str | None
    seq: int | None
    node: str | None
    close_code: int | None
    close_reason: str | None
    payload: bytes
    truncated: bool
    injected: bool
    notice: bool = False  # a harness notice that messages will not come (reset, window)

    def as_dict(self, decoded: Decoded | None = None) -> dict[str, object]:
        """JSON-ready fields for export: text payloads as text, others base64, and the
        decoded form when a decoder read it (`decoder`, then `decoded` or `decode_error`)."""
        out: dict[str, object] = {
            "id": self.id,
            "wall": self.wall,
            "conn": self.conn,
            "direction": self.direction.value,
            "opcode": self.opcode.name.lower(),
            "size": self.size,
        }
        for key in ("room", "seq", "node", "close_code", "close_reason"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.opcode == Opcode.TEXT:
            out["text"] = self.payload.decode("utf-8", "replace")
        elif self.payload:
            out["base64"] = base64.b64encode(self.payload).decode()
        if self.truncated:
            out["truncated"] = True
        if self.injected:
            out["injected"] = True
        if decoded is not None and decoded.decoder is not None:
            out["decoder"] = decoded.decoder
            if decoded.ok:
                out["decoded"] = decoded.tree
            else:
                out["decode_error"] = decoded.error
        return out


@dataclass(frozen=True, slots=True)
class FrameFilter:
    """What the Frames view shows: text or regex over payload/room/node, directions, opcodes,
    and a scope: some connections (`conns`) and a wall-clock time range (`since`, `until`)."""

    text: str = ""
    regex: bool = False
    directions: frozenset[Direction] = frozenset(_DIRS)
    opcodes: frozenset[Opcode] = frozenset(Opcode)
    conns: frozenset[str] | None = None
    since: float | None = None
    until: float | None = None
    _pattern: re.Pattern[bytes] | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def make(
        text: str = "",
        regex: bool = False,
        directions: Iterable[Direction] = _DIRS,
        opcodes: Iterable[Opcode] = tuple(Opcode),
        conns: Iterable[str] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> FrameFilter:
        """Build a filter; raises ValueError with a readable message for a bad regex."""
        pattern = None
        if text and regex and _NESTED_QUANTIFIER.search(text):
            raise ValueError("nested quantifiers like (a+)+ can take exponential time; "
                             "simplify the regular expression")
        if text:
            source = text if regex else re.escape(text)
            try:
                pattern = re.compile(source.encode("utf-8"), re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return FrameFilter(
            text=text,
            regex=regex,
            directions=frozenset(directions),
            opcodes=frozenset(opcodes),
            conns=None if conns is None else frozenset(conns),
            since=since,
            until=until,
            _pattern=pattern,
        )

    @property
    def is_all(self) -> bool:
        """True when nothing is filtered out."""
        return (
            self._pattern is None
            and len(self.directions) == len(_DIRS)
            and len(self.opcodes) == len(Opcode)
            and self.conns is None
            and self.since is None
            and self.until is None
        )


class FrameStore:
    """Ring of at most `capacity` frames and `max_payload_bytes` of payload; oldest dropped.

    `max_payload` caps the bytes kept per frame (the size column keeps the real size);
    None means no limit for either budget.
    """

    def __init__(
        self,
        capacity: int = 1_000_000,
        max_payload: int | None = 65_536,
        max_payload_bytes: int | None = 256 * 1024 * 1024,
        decoding: Decoding | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.decoding = decoding if decoding is not None else Decoding()
        self.capacity = capacity
        self.max_payload = max_payload
        self.max_payload_bytes = max_payload_bytes
        self._wall = np.zeros(capacity, np.float64)
        self._seq = np.full(capacity, NONE, np.int64)
        self._size = np.zeros(capacity, np.uint32)
        self._room = np.full(capacity, NONE, np.int32)
        self._node = np.full(capacity, NONE, np.int32)
        self._close = np.full(capacity, NONE, np.int32)
        self._conn = np.zeros(capacity, np.uint16)
        self._dir = np.zeros(capacity, np.uint8)
        self._op = np.zeros(capacity, np.uint8)
        self._flags = np.zeros(capacity, np.uint8)  # bit0 truncated, bit1 injected, bit2 notice
        self._payload: list[bytes | None] = [None] * capacity
        self._reasons: dict[int, str] = {}
        self._names: list[str] = []
        self._name_bytes: list[bytes] = []  # the same names encoded, for the text filter
        self._name_ids: dict[str, int] = {}
        self._first = 0  # first_id once the staged frames are written
        self._written = 0  # the id after the last frame written to the columns
        self.next_id = 0  # the id the next appended frame gets
        self._payload_bytes = 0
        self._cleared = 0
        self._staged: list[FrameRecord] = []  # appended, not yet in the columns

    # -- producers -------------------------------------------------------------------------

    def __call__(self, event: object) -> None:
        """Observer form: store frames, ignore every other event."""
        if isinstance(event, FrameRecord):
            self.append(event)

    def append(self, frame: FrameRecord) -> int:
        """Store one frame (dropping the oldest if full) and return its id."""
        ident = self.next_id
        self.next_id = ident + 1
        staged = self._staged
        staged.append(frame)
        if len(staged) >= STAGE_LIMIT:
            self.flush()
        return ident

    def flush(self) -> None:
        """Write the staged frames to the columns, dropping the oldest frames as appending
        them one by one would: the kept frames are the longest run of the newest ones that
        fits both budgets (at least the newest one)."""
        staged = self._staged
        if not staged:
            return
        self._staged = []
        decoding = self.decoding
        for frame in staged:  # decoders look at first messages only, in arrival order
            if frame.conn not in decoding.learned:
                decoding.learn(frame.conn, frame.direction, frame.opcode, frame.payload)
        first_new = self._written
        skip = max(0, len(staged) - self.capacity)  # newer staged frames push these out
        columns = self._columns(staged[skip:], first_new + skip)
        payloads = columns[-1]
        self._make_room(len(payloads), payloads)
        kept_from = len(payloads) - self._fitting(payloads)
        lo = first_new + skip + kept_from  # the first new frame kept
        for ident in range(first_new + skip, lo):
            self._reasons.pop(ident, None)
        if self._first == first_new:  # nothing stored is left before the new frames
            self._first = lo
        self._written = self.next_id
        for start, end, first in self._slices(lo, self.next_id):
            part = slice(first - lo + kept_from, first - lo + kept_from + end - start)
            for column, values in zip(self._column_arrays(), columns, strict=True):
                column[start:end] = values[part]
        self._payload_bytes += sum(len(p) for p in payloads[kept_from:])

    def _columns(self, frames: list[FrameRecord], first: int) -> tuple[list, ...]:
        """The column values of `frames` (ids from `first`), payloads (truncated) last;
        close reasons go to their map."""
        walls, seqs, sizes, rooms, nodes, closes, conns, dirs, ops, flags, payloads = (
            [] for _ in range(11))  # fmt: skip
        limit = self.max_payload
        intern = self._intern
        for ident, frame in enumerate(frames, first):
            payload = frame.payload
            size = len(payload)
            truncated = limit is not None and size > limit
            if truncated:
                payload = payload[:limit]
            room = node = seq = NONE
            notice = False
            if frame.opcode is Opcode.TEXT and 1 < size <= _PARSE_LIMIT and not truncated:
                room, seq, node, notice = self._harness_fields(frame.json())
            walls.append(frame.wall)
            seqs.append(seq)
            sizes.append(min(size, 0xFFFFFFFF))
            rooms.append(room)
            nodes.append(node)
            closes.append(NONE if frame.close_code is None else frame.close_code)
            conns.append(intern(frame.conn))
            dirs.append(1 if frame.direction is Direction.OUT else 0)
            ops.append(int(frame.opcode))
            flags.append((1 if truncated else 0) | (2 if frame.injected else 0)
                         | (4 if notice else 0))  # fmt: skip
            payloads.append(payload)
            if frame.close_reason:
                self._reasons[ident] = frame.close_reason
        return walls, seqs, sizes, rooms, nodes, closes, conns, dirs, ops, flags, payloads

    def _column_arrays(self) -> tuple[np.ndarray | list[bytes | None], ...]:
        """The ring's columns in the order `_columns` gives their values."""
        return (self._wall, self._seq, self._size, self._room, self._node, self._close,
                self._conn, self._dir, self._op, self._flags, self._payload)  # fmt: skip

    def _make_room(self, count: int, payloads: list[bytes]) -> None:
        """Drop the oldest stored frames so that `count` more (these payloads) fit the
        capacity and, as far as dropping stored frames can, the byte budget."""
        for _ in range(self._written - self._first + count - self.capacity):
            self._drop_oldest()
        if self.max_payload_bytes is not None:
            incoming = sum(len(p) for p in payloads)
            while (self._payload_bytes + incoming > self.max_payload_bytes
                   and self._first < self._written):  # fmt: skip
                self._drop_oldest()

    def _fitting(self, payloads: list[bytes]) -> int:
        """How many of the newest `payloads` fit the byte budget with what is stored (at
        least one: a frame larger than the budget is still kept, alone)."""
        budget = self.max_payload_bytes
        if budget is None:
            return len(payloads)
        room = budget - self._payload_bytes
        fitting = 0
        for payload in reversed(payloads):
            room -= len(payload)
            if room < 0:
                break
            fitting += 1
        return max(1, fitting)

    def clear(self) -> None:
        """Forget every frame (ids keep increasing; cleared frames are not counted as dropped)."""
        self.flush()
        for ident in range(self._first, self.next_id):
            self._payload[ident % self.capacity] = None
        self._reasons.clear()
        self._payload_bytes = 0
        self._cleared += self.next_id - self._first
        self._first = self.next_id

    def _drop_oldest(self) -> None:
        slot = self._first % self.capacity
        old = self._payload[slot]
        if old is not None:
            self._payload_bytes -= len(old)
        self._payload[slot] = None
        self._reasons.pop(self._first, None)
        self._first += 1

    def _intern(self, name: str) -> int:
        found = self._name_ids.get(name)
        if found is not None:
            return found
        if len(self._names) >= _MAX_NAMES:
            return self._intern_fallback()
        self._name_ids[name] = len(self._names)
        self._names.append(name)
        self._name_bytes.append(name.encode("utf-8"))
        return len(self._names) - 1

    def _intern_fallback(self) -> int:
        other = "(other)"
        if other not in self._name_ids:
            self._names[-1] = other
            self._name_bytes[-1] = other.encode()
            self._name_ids[other] = len(self._names) - 1
        return self._name_ids[other]

    def _harness_fields(self, value: dict[str, object] | None) -> tuple[int, int, int, bool]:
        """Room, seq and node of a harness envelope (interned), and whether it is a notice
        that messages will not come: `joined` with `reset: true`, or the window error.
        `value` is the frame's JSON object, parsed once for every observer (FrameRecord.json)."""
        if value is None:
            return NONE, NONE, NONE, False
        room = value.get("room")
        node = value.get("node")
        seq = value.get("seq")
        kind = value.get("type")
        notice = (kind == "joined" and value.get("reset") is True) or (
            kind == "error" and value.get("code") == "recovery_window_exceeded"
        )
        return (
            self._intern(room) if isinstance(room, str) else NONE,
            seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else NONE,
            self._intern(node) if isinstance(node, str) else NONE,
            notice,
        )

    # -- readers ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.next_id - self.first_id

    @property
    def first_id(self) -> int:
        """The oldest id kept (staged frames are written first, so drops are counted)."""
        self.flush()
        return self._first

    @property
    def payload_bytes(self) -> int:
        """Payload bytes kept (after truncation), within `max_payload_bytes`."""
        self.flush()
        return self._payload_bytes

    @property
    def dropped(self) -> int:
        """How many frames were dropped to stay within the bounds (cleared ones excluded)."""
        return self.first_id - self._cleared

    def _name(self, index: int) -> str | None:
        return None if index == NONE else self._names[index]

    def row(self, ident: int) -> FrameRow:
        """The frame with this id; IndexError if it was dropped or never stored."""
        if not self.first_id <= ident < self.next_id:
            raise IndexError(f"frame {ident} is not kept")
        slot = ident % self.capacity
        close = int(self._close[slot])
        seq = int(self._seq[slot])
        flags = int(self._flags[slot])
        return FrameRow(
            id=ident,
            wall=float(self._wall[slot]),
            conn=self._names[int(self._conn[slot])],
            direction=_DIRS[int(self._dir[slot])],
            opcode=Opcode(int(self._op[slot])),
            size=int(self._size[slot]),
            room=self._name(int(self._room[slot])),
            seq=None if seq == NONE else seq,
            node=self._name(int(self._node[slot])),
            close_code=None if close == NONE else close,
            close_reason=self._reasons.get(ident),
            payload=self._payload[slot] or b"",
            truncated=bool(flags & 1),
            injected=bool(flags & 2),
            notice=bool(flags & 4),
        )

    def decoded(self, row: FrameRow) -> Decoded:
        """The decoded form of a stored frame (see app/decoding.py); never raises."""
        return self.decoding.decode(row.id, row.conn, row.direction, row.opcode, row.payload,
                                    row.truncated)

    def rows(self, ids: Iterable[int]) -> Iterator[FrameRow]:
        """Rows for the given ids (ids no longer kept are skipped)."""
        for ident in ids:
            if self.first_id <= ident < self.next_id:
                yield self.row(int(ident))

    def _slices(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """(start slot, end slot, first id) pieces covering the written ids in [lo, hi), in
        ring order."""
        lo = max(lo, self._first)
        hi = min(hi, self._written)
        if lo >= hi:
            return []
        start, end = lo % self.capacity, (hi - 1) % self.capacity + 1
        if start < end:
            return [(start, end, lo)]
        return [(start, self.capacity, lo), (0, end, lo + self.capacity - start)]

    def match(self, flt: FrameFilter, lo: int | None = None, hi: int | None = None) -> np.ndarray:
        """Ids in [lo, hi) (default: everything kept) that pass the filter, ascending."""
        self.flush()
        lo = self.first_id if lo is None else lo
        hi = self.next_id if hi is None else hi
        pieces = []
        dir_codes = np.array([1 if d == Direction.OUT else 0 for d in flt.directions], np.uint8)
        op_codes = np.array([int(o) for o in flt.opcodes], np.uint8)
        conn_codes = None
        if flt.conns is not None:
            conn_codes = np.array(
                [self._name_ids[c] for c in flt.conns if c in self._name_ids], np.uint16
            )
        for start, end, first in self._slices(lo, hi):
            ids = np.arange(first, first + (end - start), dtype=np.int64)
            if flt.is_all:
                pieces.append(ids)
                continue
            mask = np.isin(self._dir[start:end], dir_codes) & np.isin(self._op[start:end], op_codes)
            if conn_codes is not None:
                mask &= np.isin(self._conn[start:end], conn_codes)
            if flt.since is not None:
                mask &= self._wall[start:end] >= flt.since
            if flt.until is not None:
                mask &= self._wall[start:end] <= flt.until
            ids = ids[mask]
            if flt._pattern is not None and len(ids):
                ids = self._search(flt._pattern, ids)
            pieces.append(ids)
        if not pieces:
            return np.empty(0, np.int64)
        return np.concatenate(pieces)

    def _search(self, pattern: re.Pattern[bytes], ids: np.ndarray) -> np.ndarray:
        """The ids whose payload, decoded form, room, node or close reason the pattern finds."""
        search = pattern.search
        payloads = self._payload
        names = self._name_bytes
        slots = (ids % self.capacity).tolist()
        rooms = self._room[slots].tolist()
        nodes = self._node[slots].tolist()
        reasons = self._reasons
        name_hit = [search(name) is not None for name in names]
        keep = []
        for ident, slot, room, node in zip(ids.tolist(), slots, rooms, nodes, strict=True):
            payload = payloads[slot]
            if (
                (payload is not None and search(payload))
                or (room != NONE and name_hit[room])
                or (node != NONE and name_hit[node])
                or (ident in reasons and search(reasons[ident].encode("utf-8")))
                or self._decoded_hit(search, ident)
            ):
                keep.append(ident)
        return np.array(keep, dtype=np.int64)

    def _decoded_hit(self, search: Callable[[bytes], object], ident: int) -> bool:
        slot = ident % self.capacity
        opcode = Opcode(int(self._op[slot]))
        conn = self._names[int(self._conn[slot])]
        if not self.decoding.differs(conn, opcode):
            return False
        text = self.decoding.searchable(ident, conn, _DIRS[int(self._dir[slot])], opcode,
                                        self._payload[slot] or b"",
                                        bool(int(self._flags[slot]) & 1))
        return text is not None and search(text.encode("utf-8")) is not None

    def export_jsonl(self, path: str | Path, ids: Iterable[int] | None = None) -> int:
        """Write the given frames (default: all kept) as JSON lines; returns how many."""
        source = range(self.first_id, self.next_id) if ids is None else ids
        count = 0
        with open(path, "wb") as out:
            for row in self.rows(source):
                out.write(orjson.dumps(row.as_dict(self.decoded(row)), default=str))
                out.write(b"\n")
                count += 1
        return count
