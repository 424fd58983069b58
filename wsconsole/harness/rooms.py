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

Every seq belongs to an *epoch*, the room's sequence space in the broker (docs/protocol.md).
The room follows the epoch of the frames the node delivers; the adapter announces a new one
(`reset`) before its first frame. A member whose snapshot came from another epoch than the
room's (the broker changed under a join, and the adapter has not caught up yet, or the
snapshot was already old) is a *stray*: it gets no frames until a `reset` to its epoch
takes it in, or the node brings it to the room's epoch by joining it again (`strays`).

Members are any hashable objects (the node uses its connection records); frames are
opaque bytes.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

M = TypeVar("M", bound=Hashable)


class _Room(Generic[M]):
    """One room's local members: position (last seq sent) of those in the room's epoch, the
    strays' (epoch, seq), buffers of joiners."""

    __slots__ = ("epoch", "joining", "positions", "strays")

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.positions: dict[M, int] = {}
        self.strays: dict[M, tuple[str, int]] = {}
        self.joining: dict[M, list[tuple[str, int, bytes]]] = {}

    def __bool__(self) -> bool:
        return bool(self.positions) or bool(self.strays) or bool(self.joining)


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
        return [] if state is None else [*state.positions, *state.strays, *state.joining]

    def rooms_of(self, member: M) -> list[str]:
        """The rooms `member` is in or joining, sorted."""
        return sorted(self._member_rooms.get(member, ()))

    def position(self, member: M, room: str) -> int | None:
        """The last seq of `room` sent to `member`; None while joining or when not a member."""
        state = self._rooms.get(room)
        if state is None:
            return None
        stray = state.strays.get(member)
        return stray[1] if stray is not None else state.positions.get(member)

    def epoch(self, room: str) -> str | None:
        """The epoch of the frames the node delivers for `room` (None before any)."""
        state = self._rooms.get(room)
        return None if state is None else state.epoch

    def strays(self, room: str) -> list[tuple[M, str, int]]:
        """Members whose position is in another epoch than the room's: (member, epoch, seq)."""
        state = self._rooms.get(room)
        if state is None:
            return []
        return [(member, epoch, seq) for member, (epoch, seq) in state.strays.items()]

    # -- membership ---------------------------------------------------------------------
    def join(self, member: M, room: str) -> None:
        """`member` starts joining `room`: live frames are buffered until `joined`.

        Joining a room again starts over (the member's position is forgotten).
        """
        state = self._rooms.get(room)
        if state is None:
            state = self._rooms[room] = _Room()
        state.positions.pop(member, None)
        state.strays.pop(member, None)
        state.joining[member] = []
        self._member_rooms.setdefault(member, set()).add(room)

    def joined(self, member: M, room: str, epoch: str, seq: int) -> list[bytes] | None:
        """The room's snapshot is at (epoch, seq): the member is in; the buffered frames
        after it (of that epoch). A snapshot of another epoch than the room's makes the
        member a stray (see the module docstring).

        None when the member is no longer joining the room (it left meanwhile): send nothing.
        """
        state = self._rooms.get(room)
        if state is None or member not in state.joining:
            return None
        if state.epoch is None:
            state.epoch = epoch
        frames, last, _ = _after(state.joining.pop(member), epoch, seq)
        if epoch == state.epoch:
            state.positions[member] = last
        else:
            state.strays[member] = (epoch, last)
        return frames

    def behind(self, member: M, room: str, epoch: str, seq: int, handed: int | None) -> bool:
        """Whether a snapshot at (epoch, seq) would leave the joining `member` short of frames
        the node's stream has gone past: a gap before or among its buffered frames, or
        `handed` (the last seq of `epoch` the node's stream accounts for) beyond them. Such a
        snapshot was read before frames still in flight that the stream then skipped as
        another's (see harness/joins.py); the member must read the room again.

        False when the member is not joining the room (it left meanwhile).
        """
        state = self._rooms.get(room)
        buffer = None if state is None else state.joining.get(member)
        if buffer is None:
            return False
        _, last, contiguous = _after(buffer, epoch, seq)
        return not contiguous or (handed is not None and handed > last)

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
        state.strays.pop(member, None)
        state.joining.pop(member, None)
        if state:
            return False
        del self._rooms[room]
        return True

    # -- broker events ------------------------------------------------------------------
    def deliver(self, room: str, epoch: str, seq: int, frame: bytes) -> list[M]:
        """Frame (epoch, seq) of `room` arrived: the members to send it to (positions move to
        seq). Joining members get it buffered instead. The per-delivery hot path of a node.

        Frames come in the room's epoch (the adapter announces a new one with `reset`
        first); a frame of another epoch reaches only the joining members' buffers.
        """
        state = self._rooms.get(room)
        if state is None:
            return []
        if state.joining:
            for buffer in state.joining.values():
                buffer.append((epoch, seq, frame))
        if epoch != state.epoch:
            if state.epoch is not None:
                return []
            state.epoch = epoch
        positions = state.positions
        targets = [member for member, last in positions.items() if seq > last]
        for member in targets:
            positions[member] = seq
        return targets

    def reset(self, room: str, epoch: str) -> list[M]:
        """The room's frames now come from `epoch`, from its seq 1 (the broker lost the old
        sequence space, or this node learns of the new one late).

        Members of another epoch restart at 0 and are returned, to be told (`joined` with
        `reset`); strays already in `epoch` simply join the others at their position.
        """
        state = self._rooms.get(room)
        if state is None:
            return []
        told = []
        if state.epoch != epoch:
            state.epoch = epoch
            for member in state.positions:
                state.positions[member] = 0
                told.append(member)
        for member, (stray_epoch, seq) in list(state.strays.items()):
            del state.strays[member]
            if stray_epoch == epoch:
                state.positions[member] = seq
            else:
                state.positions[member] = 0
                told.append(member)
        return told

    def skip_to(self, room: str, epoch: str, seq: int) -> list[tuple[M, bool]]:
        """Frames up to (epoch, seq) are lost for good (beyond the history): members move to
        seq of `epoch`. Returns (member, True if that is a new epoch for it) to be told."""
        state = self._rooms.get(room)
        if state is None:
            return []
        told = [(member, state.epoch != epoch) for member in state.positions]
        told += [(member, stray[0] != epoch) for member, stray in state.strays.items()]
        state.epoch = epoch
        state.positions = {member: seq for member, _ in told}
        state.strays.clear()
        return told


def _after(
    buffer: list[tuple[str, int, bytes]], epoch: str, seq: int
) -> tuple[list[bytes], int, bool]:
    """A joiner's buffered frames of `epoch` after `seq`: the frames, the last seq they reach,
    and whether they follow `seq` without a gap."""
    last = seq
    frames = []
    contiguous = True
    for buffered_epoch, buffered_seq, frame in buffer:
        if buffered_epoch == epoch and buffered_seq > last:
            contiguous = contiguous and buffered_seq == last + 1
            frames.append(frame)
            last = buffered_seq
    return frames, last, contiguous
