"""A node's room membership and fan-out decisions, as a pure state object (no I/O, no loop).

Like `websockets`' sans-I/O protocol: the node feeds it events — a client starts joining a
room, the room's snapshot arrived, the broker delivered frame `seq`, a client left or went
away, the broker lost its state, a gap could not be filled — and it answers with decisions:
which members get a frame, which buffered frames a finished join must send, which rooms
no local member wants any more (unsubscribe), who must be told of a reset. The node does
the writing, the subscribing and the encoding.

Where each member stands: a member that is *joining* a room (its snapshot is on the way
from the broker) has every live frame buffered for it; when the snapshot arrives at seq
S the member is *in* the room at S and gets the buffered frames after S, in order. From
then on a frame reaches the member only if its seq is after the member's position, so a
frame that was already in the member's snapshot is never sent twice. With frames fed in
seq order per room (the adapter's promise), every member therefore sees each seq after
its snapshot exactly once and in order; `tests/test_rooms.py` checks it with hypothesis.

Members are any hashable objects (the node uses its connection records); frames are
opaque bytes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

M = TypeVar("M", bound=Hashable)


class _Room(Generic[M]):
    """One room's local members: position (last seq sent) of those in, buffers of joiners."""

    __slots__ = ("joining", "positions")

    def __init__(self) -> None:
        self.positions: dict[M, int] = {}
        self.joining: dict[M, list[tuple[int, bytes]]] = {}

    def __bool__(self) -> bool:
        return bool(self.positions) or bool(self.joining)


class RoomTable(Generic[M]):
    """Which local members are in which room and where each stands in its sequence."""

    def __init__(self) -> None:
        self._rooms: dict[str, _Room[M]] = {}
        self._member_rooms: dict[M, set[str]] = {}

    # -- queries ------------------------------------------------------------------------
    def __len__(self) -> int:
        """Rooms with at least one local member (in or joining)."""
        return len(self._rooms)

    def names(self) -> list[str]:
        """The rooms with a local member, sorted."""
        return sorted(self._rooms)

    def members(self, room: str) -> list[M]:
        """Every local member of `room`, in or joining."""
        state = self._rooms.get(room)
        return [] if state is None else [*state.positions, *state.joining]

    def rooms_of(self, member: M) -> list[str]:
        """The rooms `member` is in or joining, sorted."""
        return sorted(self._member_rooms.get(member, ()))

    def position(self, member: M, room: str) -> int | None:
        """The last seq of `room` sent to `member`; None while joining or when not a member."""
        state = self._rooms.get(room)
        return None if state is None else state.positions.get(member)

    # -- membership ---------------------------------------------------------------------
    def join(self, member: M, room: str) -> None:
        """`member` starts joining `room`: live frames are buffered until `joined`.

        Joining a room again starts over (the member's position is forgotten).
        """
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
        state.positions.pop(member, None)
        state.joining[member] = []
        self._member_rooms.setdefault(member, set()).add(room)

    def joined(self, member: M, room: str, seq: int) -> list[bytes] | None:
        """The room's snapshot is at `seq`: the member is in; the buffered frames after it.

        None when the member is no longer joining the room (it left meanwhile): send nothing.
        """
        state = self._rooms.get(room)
        if state is None or member not in state.joining:
            return None
        last = seq
        frames = []
        for buffered_seq, frame in state.joining.pop(member):
            if buffered_seq > last:
                frames.append(frame)
                last = buffered_seq
        state.positions[member] = last
        return frames

    def leave(self, member: M, room: str) -> bool:
        """`member` leaves `room`; True when no local member is left (unsubscribe)."""
        rooms = self._member_rooms.get(member)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._member_rooms[member]
        state = self._rooms.get(room)
        if state is None:
            return False
        state.positions.pop(member, None)
        state.joining.pop(member, None)
        if state:
            return False
        del self._rooms[room]
        return True

    # -- broker events ------------------------------------------------------------------
    def deliver(self, room: str, seq: int, frame: bytes) -> list[M]:
        """Frame `seq` of `room` arrived: the members to send it to (positions move to seq).

        Joining members get it buffered instead. The per-delivery hot path of a node.
        """
        state = self._rooms.get(room)
        if state is None:
            return []
        if state.joining:
            for buffer in state.joining.values():
                buffer.append((seq, frame))
        positions = state.positions
        targets = [member for member, last in positions.items() if seq > last]
        for member in targets:
            positions[member] = seq
        return targets

    def reset(self, rooms: Iterable[str]) -> list[tuple[M, str]]:
        """The broker lost its state: these rooms' sequences start again at 0.

        Returns (member, room) for each member in the room, to be told (`joined` with
        `reset`). Joining members forget what was buffered for them: those frames belong
        to the lost sequence space, and their snapshot will come from the new one.
        """
        told = []
        for room in rooms:
            state = self._rooms.get(room)
            if state is None:
                continue
            for buffer in state.joining.values():
                buffer.clear()
            for member in state.positions:
                state.positions[member] = 0
                told.append((member, room))
        return told

    def skip_to(self, room: str, seq: int) -> list[M]:
        """Frames up to `seq` are lost for good (beyond the history): members move to `seq`.

        Returns the members to tell (they were in the room, not joining).
        """
        state = self._rooms.get(room)
        if state is None:
            return []
        members = list(state.positions)
        for member in members:
            state.positions[member] = seq
        return members
