"""A member's join of a room on a node: the broker reads both node flavours share.

The ws node (session.py) and the Socket.IO node (sionode.py) join the same way and differ
only in what they send: the member starts joining (the RoomTable buffers live frames for
it), the node subscribes, reads the room's snapshot from the member's (epoch, since) — or,
when that is beyond the kept history, the room's current position and the gap — and the
member is in at the snapshot's seq with the buffered frames after it; the adapter learns
that position when it knew none of the room (`note_seq`).

The snapshot is never behind what the node had handed over when it was asked for (the
adapter's floor), but the node's stream of the room can move past frames still in flight
*while* the snapshot is on its way back: another join's `note_seq` on a stream with no
position yet (its snapshot, read later, already held frames this one lacks, so the stream
drops them as accounted for when they arrive), or a catch-up without a start after a shard
was lost (its first held frame becomes the start). A member placed at such a snapshot never
gets the frames in between and is told nothing. `RoomTable.behind` sees it (a gap before
its buffered frames, or the stream's position past them) and the room is read again: the
new snapshot is at or after the stream's position, which no longer jumps. A read that does
not move on means the broker is behind the node itself (it lost writes): the join ends out
of step and the node's recheck of the room resets it, telling its members.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TypeVar

from wsconsole.harness.adapter import RecoveryWindowExceeded, RedisAdapter, Snapshot
from wsconsole.harness.rooms import RoomTable

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Hashable)


@dataclass(frozen=True, slots=True)
class JoinRead:
    """What a finished join sends: `joined` at the snapshot, its frames, then `buffered`.

    `gap` when `since` was beyond the kept history (the snapshot is then the room's current
    position); `in_step` False when the node follows the room in another epoch than the
    snapshot's, or is ahead of the broker (the caller rechecks the room).
    """

    snapshot: Snapshot
    gap: RecoveryWindowExceeded | None
    buffered: list[bytes]
    in_step: bool


async def join_room(
    adapter: RedisAdapter, rooms: RoomTable[M], member: M, room: str, since: int | None,
    epoch: str | None,
) -> JoinRead | None:
    """Join `member` to `room` from (epoch, since); see the module docstring.

    None when the member left meanwhile (send nothing). BrokerUnavailable when the room
    cannot be subscribed or read: the member is still joining, the caller makes it leave.
    """
    rooms.join(member, room)
    previous = -1
    while True:
        await adapter.subscribe(room)
        gap: RecoveryWindowExceeded | None = None
        try:
            snap = await adapter.snapshot(room, since, epoch)
        except RecoveryWindowExceeded as exc:
            gap = exc
            snap = await adapter.snapshot(room)
        stream_epoch, stream_seq = adapter.streams.position(room)
        handed = stream_seq if stream_epoch == snap.epoch else None
        behind = rooms.behind(member, room, snap.epoch, snap.seq, handed)
        if not behind or snap.seq <= previous:
            break
        log.info("room %s: a join's snapshot at %s/%d is behind frames the node's stream "
                 "went past (at %s); reading the room again", room, snap.epoch, snap.seq,
                 handed)  # fmt: skip
        previous = snap.seq
        rooms.join(member, room)  # start over: the frames buffered so far are in the next read
    buffered = rooms.joined(member, room, snap.epoch, snap.seq)
    if buffered is None:
        return None
    # Still behind after a read that did not move on: the broker is behind the node's own
    # stream (it lost writes); out of step, so the caller's recheck catches the room up,
    # which resets it and tells the members.
    in_step = adapter.note_seq(room, snap.epoch, snap.seq) and not behind
    return JoinRead(snap, gap, buffered, in_step)
