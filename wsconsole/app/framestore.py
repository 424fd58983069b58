"""A bounded, compact store of WebSocket frames for the Frames view (no Qt here).

Producers (client observers on the asyncio loop) call `append`; views pull new rows in
batches on a timer (DESIGN.md: never one Qt signal per frame). Numeric columns live in
parallel numpy arrays used as a ring (about 35 bytes a frame), payloads in compressed chunks
(a `PayloadArena`, payloads.py), close codes and reasons in a map by id; the oldest frames
are dropped (and counted) when either the frame capacity or the payload byte budget is
reached.
Frames are addressed by a monotonically increasing id; ids in [first_id, next_id) are kept.

`append` runs once per frame received (up to a few hundred thousand a second): it reads
the frame's fields and stages their values in one flat list; staged frames are written to
the columns in one batch (`flush`: slice assignments instead of a dozen numpy item writes
per frame) when anything reads the store or when `STAGE_LIMIT` are waiting. What a reader
sees is exactly what appending them one by one gives.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from wsconsole.app.decoding import Decoding
from wsconsole.app.payloads import PayloadArena
from wsconsole.core.events import PARSE_LIMIT, Direction, FrameBatch, FrameRecord, Opcode
from wsconsole.decoders.base import Decoded

NONE = -1  # "no value" for seq, room and node; their columns hold value + 1, so "none" is 0
# and a new store's columns are zero pages the system has not handed out yet (filled with
# -1 they cost 20 MB of a million-frame store before its first frame)
_DIRS = (Direction.IN, Direction.OUT)
_MAX_NAMES = 65_535  # interned room/node/conn names (index + 1 fits the uint16 columns);
# beyond that they read as "(other)"
STAGE_LIMIT = 4096  # frames staged by `append` before they are written to the columns
_FIELDS = 10  # values staged per frame: the nine numeric columns, then the payload
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
        self._seq = np.zeros(capacity, np.int64)
        self._size = np.zeros(capacity, np.uint32)
        self._room = np.zeros(capacity, np.uint16)
        self._node = np.zeros(capacity, np.uint16)
        self._conn = np.zeros(capacity, np.uint16)
        self._dir = np.zeros(capacity, np.uint8)
        self._op = np.zeros(capacity, np.uint8)
        self._flags = np.zeros(capacity, np.uint8)  # bit0 truncated, bit1 injected, bit2 notice
        self._chunk = np.zeros(capacity, np.uint32)  # where the payload is in the arena
        self._offset = np.zeros(capacity, np.uint32)
        self._arena = PayloadArena()
        # close code and reason by id: close frames are rare, a column would cost 4 B a frame
        self._closes: dict[int, tuple[int | None, str | None]] = {}
        self._names: list[str] = []
        self._name_bytes: list[bytes] = []  # the same names encoded, for the text filter
        self._name_ids: dict[str, int] = {}
        self._first = 0  # first_id once the staged frames are written
        self._written = 0  # the id after the last frame written to the columns
        self.next_id = 0  # the id the next appended frame gets
        self._payload_bytes = 0
        self._cleared = 0
        # appended, not yet in the columns: _FIELDS values per frame in one flat list, numbers
        # and bytes only. Nothing staged is an object the garbage collector tracks: staging
        # records (with their parsed JSON) or a tuple per frame made thousands of them live
        # between flushes, so collections ran, and a full one costs tens of milliseconds
        self._staged: list[Any] = []

    # -- producers -------------------------------------------------------------------------

    def __call__(self, event: object) -> None:
        """Observer form: store frames, ignore every other event."""
        if isinstance(event, FrameRecord):
            self.append(event)

    def take_frames(self, batch: FrameBatch) -> None:
        """Batch observer form: store a read's received frames as `append` would, one by
        one, with the JSON the batch parsed (see FrameBatch)."""
        first = self.next_id
        self.next_id = first + len(batch.payloads)
        conn = self._intern(batch.conn)
        wall = batch.wall
        limit = self.max_payload
        harness_fields = self._harness_fields
        stage = self._staged.extend
        for payload, opcode, value in zip(batch.payloads, batch.opcodes, batch.values,
                                          strict=True):  # fmt: skip
            size = len(payload)
            room = node = seq = NONE
            flags = 0
            if limit is not None and size > limit:
                payload = payload[:limit]
                flags = 1
            elif value is not None:
                room, seq, node, notice = harness_fields(value)
                flags = 4 if notice else 0
            stage((wall, seq + 1, min(size, 0xFFFFFFFF), room + 1, node + 1, conn, 0,
                   int(opcode), flags, payload))  # fmt: skip
        if batch.conn not in self.decoding.learned:  # decoders look at first messages only
            for payload, opcode in zip(batch.payloads, batch.opcodes, strict=True):
                self.decoding.learn(batch.conn, Direction.IN, opcode, payload)
                if batch.conn in self.decoding.learned:
                    break
        if len(self._staged) >= STAGE_LIMIT * _FIELDS:
            self.flush()

    def append(self, frame: FrameRecord) -> int:
        """Store one frame (dropping the oldest if full) and return its id."""
        ident = self.next_id
        self.next_id = ident + 1
        payload = frame.payload
        size = len(payload)
        limit = self.max_payload
        truncated = limit is not None and size > limit
        if truncated:
            payload = payload[:limit]
        room = node = seq = NONE
        notice = False
        opcode = frame.opcode
        if opcode is Opcode.TEXT and 1 < size <= PARSE_LIMIT and not truncated:
            room, seq, node, notice = self._harness_fields(frame.json())
        if frame.close_code is not None or frame.close_reason:
            self._closes[ident] = (frame.close_code, frame.close_reason or None)
        conn = frame.conn
        staged = self._staged
        staged.extend((
            frame.wall, seq + 1, min(size, 0xFFFFFFFF), room + 1, node + 1, self._intern(conn),
            1 if frame.direction is Direction.OUT else 0, int(opcode),
            (1 if truncated else 0) | (2 if frame.injected else 0) | (4 if notice else 0),
            payload,
        ))  # fmt: skip
        if conn not in self.decoding.learned:  # decoders look at first messages only
            self.decoding.learn(conn, frame.direction, opcode, frame.payload)
        if len(staged) >= STAGE_LIMIT * _FIELDS:
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
        first_new = self._written
        count = len(staged) // _FIELDS
        skip = max(0, count - self.capacity)  # newer staged frames push these out
        columns = [staged[(skip * _FIELDS) + field::_FIELDS] for field in range(_FIELDS)]
        payloads = columns[-1]
        self._make_room(len(payloads), payloads)
        kept_from = len(payloads) - self._fitting(payloads)
        lo = first_new + skip + kept_from  # the first new frame kept
        for ident in range(first_new, lo):
            self._closes.pop(ident, None)
        if self._first == first_new:  # nothing stored is left before the new frames
            self._first = lo
        self._written = self.next_id
        kept = payloads[kept_from:]
        values = [column[kept_from:] for column in columns[:-1]]
        values.extend(self._arena.add_many(kept))
        for start, end, first in self._slices(lo, self.next_id):
            part = slice(first - lo, first - lo + end - start)
            for column, new in zip(self._column_arrays(), values, strict=True):
                column[start:end] = new[part]
        self._payload_bytes += sum(map(len, kept))

    def _column_arrays(self) -> tuple[np.ndarray, ...]:
        """The ring's columns in the order `_columns` gives their values, then the payload's
        place in the arena."""
        return (self._wall, self._seq, self._size, self._room, self._node,
                self._conn, self._dir, self._op, self._flags, self._chunk,
                self._offset)  # fmt: skip

    def _lengths(self, slots: np.ndarray | slice) -> np.ndarray:
        """Payload bytes kept for these slots (the size, or max_payload when truncated)."""
        sizes = self._size[slots].astype(np.int64)
        if self.max_payload is None:
            return sizes
        return np.where(self._flags[slots] & 1, self.max_payload, sizes)

    def _payload(self, slot: int) -> bytes:
        """The payload kept for the frame in `slot`."""
        length = int(self._lengths(slice(slot, slot + 1))[0])
        return self._arena.get(int(self._chunk[slot]), int(self._offset[slot]), length)

    def _make_room(self, count: int, payloads: list[bytes]) -> None:
        """Drop the oldest stored frames so that `count` more (these payloads) fit the
        capacity and, as far as dropping stored frames can, the byte budget."""
        self._drop(self._written - self._first + count - self.capacity)
        if self.max_payload_bytes is None:
            return
        need = self._payload_bytes + sum(map(len, payloads)) - self.max_payload_bytes
        while need > 0 and self._first < self._written:
            lengths = np.concatenate([self._lengths(slice(start, end)) for start, end, _ in
                                      self._slices(self._first, self._first + STAGE_LIMIT)])
            total = np.cumsum(lengths)
            count = min(int(np.searchsorted(total, need)) + 1, len(lengths))
            self._drop(count)
            need -= int(total[count - 1])

    def _fitting(self, payloads: list[bytes]) -> int:
        """How many of the newest `payloads` fit the byte budget with what is stored (at
        least one: a frame larger than the budget is still kept, alone)."""
        budget = self.max_payload_bytes
        if budget is None:
            return len(payloads)
        room = budget - self._payload_bytes
        if sum(map(len, payloads)) <= room:
            return len(payloads)  # the usual case: no need to count them one by one
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
        self._arena.clear()
        self._closes.clear()
        self._payload_bytes = 0
        self._cleared += self.next_id - self._first
        self._first = self.next_id

    def _drop(self, count: int) -> None:
        """Drop the `count` oldest stored frames and release the chunks only they used."""
        count = min(count, self._written - self._first)
        if count <= 0:
            return
        new_first = self._first + count
        for start, end, _ in self._slices(self._first, new_first):
            self._payload_bytes -= int(self._lengths(slice(start, end)).sum())
        for ident in [i for i in self._closes if i < new_first]:
            del self._closes[ident]
        self._first = new_first
        if new_first < self._written:
            self._arena.release_before(int(self._chunk[new_first % self.capacity]))
        else:  # nothing stored: every sealed chunk can go
            self._arena.release_before(self._arena.open_index)

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
        seq = int(self._seq[slot]) - 1
        flags = int(self._flags[slot])
        close_code, close_reason = self._closes.get(ident, (None, None))
        return FrameRow(
            id=ident,
            wall=float(self._wall[slot]),
            conn=self._names[int(self._conn[slot])],
            direction=_DIRS[int(self._dir[slot])],
            opcode=Opcode(int(self._op[slot])),
            size=int(self._size[slot]),
            room=self._name(int(self._room[slot]) - 1),
            seq=None if seq == NONE else seq,
            node=self._name(int(self._node[slot]) - 1),
            close_code=close_code,
            close_reason=close_reason,
            payload=self._payload(slot),
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
        get = self._arena.get
        names = self._name_bytes
        slots_array = ids % self.capacity
        places = zip(self._chunk[slots_array].tolist(), self._offset[slots_array].tolist(),
                     self._lengths(slots_array).tolist(), strict=True)
        rooms = (self._room[slots_array].astype(np.int32) - 1).tolist()  # -1: none
        nodes = (self._node[slots_array].astype(np.int32) - 1).tolist()
        reasons = {ident: reason for ident, (_, reason) in self._closes.items() if reason}
        name_hit = [search(name) is not None for name in names]
        keep = []
        for ident, room, node, place in zip(ids.tolist(), rooms, nodes, places, strict=True):
            if (
                search(get(*place))
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
                                        self._payload(slot),
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
