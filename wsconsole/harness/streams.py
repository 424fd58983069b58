"""What a node's adapter has handed over of each room's stream: pure bookkeeping, no I/O.

A room's frames are numbered within an *epoch*, the identity of the room's sequence space in
the broker (docs/protocol.md): a broker that loses its state starts the room again under a
new epoch, from seq 1. The adapter feeds every frame read from pub/sub through `incoming`,
which answers what to do with it:

- DELIVER: the next one (same epoch, seq = last + 1), hand it over;
- DROP: one already handed over (seq <= last), or of an epoch the room has left behind;
- HOLD: a catch-up is running, keep it until the catch-up ends;
- CATCH_UP: a gap (seq > last + 1) or a frame of an epoch not seen before: keep it, and
  catch the room up from the broker's history (`begin_catch_up` ... `end_catch_up`).

During a catch-up the adapter reports where the history took the room (`moved`: a frame
handed over, a new epoch, a gap beyond the history); `end_catch_up` then releases the held
frames in order, applying the same rules, and says whether another catch-up is needed. A
held frame of an epoch that is still not the room's after a catch-up whose snapshot was
asked for after the frame arrived belongs to a sequence space the broker had already left:
its epoch is left behind too. So every room's frames are handed over in (epoch, seq)
order, each once, and a change of epoch is always seen through a catch-up, which tells the
node (a reset).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

DELIVER = "deliver"
DROP = "drop"
HOLD = "hold"
CATCH_UP = "catch_up"

RETIRED = 16  # epochs remembered per room to drop their late frames

Held = tuple[int, str, int, bytes]  # (arrival number, epoch, seq, frame)


@dataclass(slots=True)
class _Stream:
    """One room: the position handed over, and what is held during a catch-up."""

    epoch: str | None = None
    seq: int | None = None  # last seq handed over; None: the next frame is the start
    held: list[Held] | None = None  # not None while a catch-up runs
    mark: int = 0  # arrivals counted when the running catch-up asked for its snapshot
    retired: deque[str] = field(default_factory=lambda: deque(maxlen=RETIRED))


class RoomStreams:
    """Per-room positions (epoch, seq) of what was handed over; see the module docstring."""

    def __init__(self) -> None:
        self._rooms: dict[str, _Stream] = {}
        self._arrivals = 0

    # -- rooms --------------------------------------------------------------------------
    def want(self, room: str) -> None:
        """Start following `room` (its frames are dropped until then)."""
        self._rooms.setdefault(room, _Stream())

    def forget(self, room: str) -> None:
        """Stop following `room` (no local member left): its position goes too."""
        self._rooms.pop(room, None)

    def rooms(self) -> list[str]:
        """The rooms followed, sorted."""
        return sorted(self._rooms)

    def position(self, room: str) -> tuple[str | None, int | None]:
        """(epoch, last seq) handed over for `room`; (None, None) when nothing is known."""
        stream = self._rooms.get(room)
        return (None, None) if stream is None else (stream.epoch, stream.seq)

    def note(self, room: str, epoch: str, seq: int) -> bool:
        """A join read the room at (epoch, seq): the start, when nothing is known yet.

        False when the room is followed in another epoch (a catch-up will sort it out).
        """
        stream = self._rooms.get(room)
        if stream is None:
            return True
        if stream.seq is None:
            stream.epoch, stream.seq = epoch, seq
            return True
        return stream.epoch == epoch

    # -- frames -------------------------------------------------------------------------
    def incoming(self, room: str, epoch: str, seq: int, frame: bytes) -> str:
        """A frame read from pub/sub: DELIVER, DROP, HOLD or CATCH_UP (see the docstring)."""
        stream = self._rooms.get(room)
        if stream is None:
            return DROP  # still in flight after an unsubscribe
        self._arrivals += 1
        return self._route(stream, (self._arrivals, epoch, seq, frame), -1)

    def _route(self, stream: _Stream, item: Held, mark: int) -> str:
        arrival, epoch, seq, _ = item
        if epoch in stream.retired:
            return DROP
        if stream.held is not None:
            stream.held.append(item)
            return HOLD
        if stream.seq is None:
            stream.epoch, stream.seq = epoch, seq
            return DELIVER
        if epoch == stream.epoch:
            if seq <= stream.seq:
                return DROP
            if seq == stream.seq + 1:
                stream.seq = seq
                return DELIVER
        elif arrival <= mark:  # a catch-up that began after it came did not find its epoch
            stream.retired.append(epoch)
            return DROP
        stream.held = [item]
        stream.mark = self._arrivals
        return CATCH_UP

    # -- catching up ----------------------------------------------------------------------
    def hold(self, room: str) -> None:
        """Hold the room's frames from now on (a reconnect: a catch-up follows)."""
        stream = self._rooms.get(room)
        if stream is not None and stream.held is None:
            stream.held = []

    def begin_catch_up(self, room: str) -> tuple[str, int] | None:
        """Hold frames; the (epoch, seq) to read the history after, None if nothing is known."""
        stream = self._rooms.get(room)
        if stream is None:
            return None
        if stream.held is None:
            stream.held = []
        stream.mark = self._arrivals
        if stream.seq is None or stream.epoch is None:
            return None
        return stream.epoch, stream.seq

    def moved(self, room: str, epoch: str, seq: int) -> None:
        """The room is now at (epoch, seq): a frame from the history handed over, a new
        epoch (a reset), or past a gap the history could not fill. An epoch left is left
        behind for good."""
        stream = self._rooms.get(room)
        if stream is None:
            return
        if stream.epoch is not None and stream.epoch != epoch:
            stream.retired.append(stream.epoch)
        stream.epoch, stream.seq = epoch, seq

    def end_catch_up(self, room: str) -> tuple[list[tuple[str, int, bytes]], bool]:
        """Release the held frames: those to hand over in order, and whether another
        catch-up is needed (a gap, or an epoch not seen yet, among them)."""
        stream = self._rooms.get(room)
        if stream is None or stream.held is None:
            return [], False
        held, stream.held = stream.held, None
        mark = stream.mark
        out: list[tuple[str, int, bytes]] = []
        again = False
        for item in held:
            decision = self._route(stream, item, mark)
            if decision == DELIVER:
                out.append((item[1], item[2], item[3]))
            elif decision == CATCH_UP:
                again = True
        return out, again
