"""What a harness-mode client keeps to recover after a reconnect: plain objects, no I/O.

`RoomTracker` follows each room's position, an *epoch* (the identity of the room's
sequence space, chosen by the server; opaque, compared for equality only) and the last
sequence number seen in it. Fed the server's `joined` and `message` envelopes, it returns
`(kind, detail)` decisions: "in_order", "gap", "duplicate", "out_of_order", "recovered"
(a rejoin caught up with the head the server reported), "reset" (the room's sequence
space restarted: the position starts again in the new epoch, reported, never spliced onto
the old numbers) and "stale" (a message from an epoch already left behind).

`Outbox` is the bounded queue of messages not yet written plus the publishes waiting for
their ack, re-sent in order after a reconnect.

The async driver (`client.ReconnectingClient`) feeds both and does the I/O; tests drive
them without a loop.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from wsconsole.core.errors import QueueFull

Epoch = str | int
Decision = tuple[str, str]

RETIRED_EPOCHS = 8  # epochs remembered per room to recognise a late message as stale


@dataclass
class RoomPosition:
    """One room's position: its epoch, the highest seq seen, and the recovery in progress."""

    epoch: Epoch | None = None
    last: int | None = None  # highest seq seen (or the baseline), None: take the next one
    missing: set[int] = field(default_factory=set)
    target: int | None = None  # head seq at a rejoin; recovery is complete when last reaches it
    recovered: int = 0
    retired: deque[Epoch] = field(default_factory=lambda: deque(maxlen=RETIRED_EPOCHS))

    def restart(self, epoch: Epoch | None, head: int) -> None:
        """Follow a new sequence space from its start: the server replays 1..head.

        Without a position (a fresh join, or the recovery window was exceeded just before)
        the head is the baseline instead: nothing before it will come.
        """
        if self.epoch is not None and self.epoch != epoch:
            self.retired.append(self.epoch)
        self.epoch = epoch
        self.missing.clear()
        self.recovered = 0
        if self.last is None:
            self.last, self.target = head, None
        else:
            self.last = 0
            self.target = head if head > 0 else None


def _epoch_text(old: Epoch | None, new: Epoch | None) -> str:
    if old is None and new is None:
        return ""
    return f" (epoch {old if old is not None else '?'} -> {new if new is not None else '?'})"


class RoomTracker:
    """Per-room positions (epoch, seq): returns (kind, detail) decisions for each event."""

    def __init__(self, max_missing: int = 10_000) -> None:
        self.rooms: dict[str, RoomPosition] = {}
        self.max_missing = max_missing
        self.missing_total = 0  # messages reported missing by gaps, all rooms
        self.resets = 0  # sequence-space restarts seen, all rooms

    def since(self, room: str) -> int | None:
        """The `since` to send when (re)joining `room`: the last seq seen, if any."""
        state = self.rooms.get(room)
        return None if state is None else state.last

    def epoch(self, room: str) -> Epoch | None:
        """The epoch the room's position belongs to, when the server told one."""
        state = self.rooms.get(room)
        return None if state is None else state.epoch

    def join_fields(self, room: str) -> dict[str, Any]:
        """The position a `join` carries: `since` and, with it, the `epoch` it belongs to."""
        since = self.since(room)
        return {"since": since, "epoch": self.epoch(room) if since is not None else None}

    def joined(
        self, room: str, seq: int, since: int | None, epoch: Epoch | None = None,
        reset: bool = False,
    ) -> list[Decision]:
        """A `joined` reply: a fresh join starts at `seq`; a rejoin waits to reach it; a reset
        (flagged, or a different epoch than ours) restarts the position in the new epoch."""
        state = self.rooms.setdefault(room, RoomPosition())
        if reset or (epoch is not None and state.epoch is not None and epoch != state.epoch):
            why = ("the server restarted the room's sequence" if reset else
                   "the server's epoch changed without a reset notice")
            old = state.epoch
            state.restart(epoch, seq)
            self.resets += 1
            follow = f"replaying 1..{seq}" if state.target else f"continuing after {seq}"
            return [("reset", f"{why}{_epoch_text(old, epoch)}; {follow}")]
        if epoch is not None:
            state.epoch = epoch
        if since is None or state.last is None:
            state.last = seq
            state.target = None
            return []
        state.target = seq
        state.recovered = 0
        if state.last >= seq:
            state.target = None
            return [("recovered", "0 missed")]
        return []

    def window_exceeded(self, room: str) -> None:
        """The server cannot replay from `since`: accept whatever comes next as the baseline."""
        state = self.rooms.setdefault(room, RoomPosition())
        state.last = None
        state.target = None
        state.missing.clear()

    def message(self, room: str, seq: int, epoch: Epoch | None = None) -> list[Decision]:
        """Classify one delivered message by its epoch and room sequence number."""
        state = self.rooms.setdefault(room, RoomPosition())
        out: list[Decision] = []
        if epoch is not None and state.epoch != epoch:
            if state.epoch is None:
                state.epoch = epoch
            elif epoch in state.retired:
                return [("stale", f"seq {seq} of epoch {epoch}, left behind at a reset")]
            else:
                old = state.epoch
                state.restart(epoch, 0)
                self.resets += 1
                out.append(("reset", f"a message from another epoch{_epoch_text(old, epoch)}: "
                                     "the room's sequence restarted"))
        out.extend(self._classify(state, seq))
        return out

    def _classify(self, state: RoomPosition, seq: int) -> list[Decision]:
        out: list[Decision] = []
        if state.last is None or seq == state.last + 1:
            state.last = seq
            out.append(("in_order", ""))
        elif seq > state.last + 1:
            first, last = state.last + 1, seq - 1
            out.append(("gap", f"missing {first}..{last} ({last - first + 1})"))
            self.missing_total += last - first + 1
            if len(state.missing) + (last - first + 1) <= self.max_missing:
                state.missing.update(range(first, last + 1))
            state.last = seq
        elif seq in state.missing:
            state.missing.discard(seq)
            out.append(("out_of_order", f"{seq} arrived after {state.last}"))
        else:
            out.append(("duplicate", f"{seq} already seen (last {state.last})"))
            return out
        if state.target is not None:
            state.recovered += 1
            if state.last >= state.target:
                out.append(("recovered", f"{state.recovered} missed"))
                state.target = None
        return out

    def forget(self, room: str) -> None:
        """Stop tracking a room that was left."""
        self.rooms.pop(room, None)


@dataclass
class OutboxEntry:
    """One outgoing message: a plain send (dropped once written) or a publish (until ack)."""

    key: str
    data: str | bytes
    publish_id: str | None = None
    sent: bool = False
    refusals: int = 0  # times the server refused this publish without taking it


class Outbox:
    """Ordered, bounded queue of messages not yet written plus publishes not yet acked."""

    def __init__(self, limit: int | None = 10_000) -> None:
        self.limit = limit
        self.entries: OrderedDict[str, OutboxEntry] = OrderedDict()
        self._counter = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, data: str | bytes, publish_id: str | None = None) -> OutboxEntry:
        """Queue a message at the end; QueueFull beyond `limit`."""
        if self.limit is not None and len(self.entries) >= self.limit:
            raise QueueFull(f"offline queue is full ({self.limit} messages)")
        if publish_id is not None and f"p:{publish_id}" in self.entries:
            return self.entries[f"p:{publish_id}"]  # same id: one entry (idempotent)
        self._counter += 1
        key = f"p:{publish_id}" if publish_id is not None else f"s:{self._counter}"
        entry = OutboxEntry(key=key, data=data, publish_id=publish_id)
        self.entries[key] = entry
        return entry

    def next_unsent(self) -> OutboxEntry | None:
        """The oldest entry not yet written on the current connection."""
        for entry in self.entries.values():
            if not entry.sent:
                return entry
        return None

    def written(self, entry: OutboxEntry) -> None:
        """The entry went out: a plain send is done, a publish waits for its ack."""
        if entry.publish_id is None:
            self.entries.pop(entry.key, None)
        else:
            entry.sent = True

    def ack(self, publish_id: str) -> bool:
        """Drop the acked publish; False if it was not pending."""
        return self.entries.pop(f"p:{publish_id}", None) is not None

    def refused(self, publish_id: str) -> int | None:
        """The server refused a sent publish without taking it (`broker_busy`...): it is to
        be sent again; returns how many times it was refused (None: not pending)."""
        entry = self.entries.get(f"p:{publish_id}")
        if entry is None or not entry.sent:
            return None
        entry.sent = False
        entry.refusals += 1
        return entry.refusals

    def connection_lost(self) -> int:
        """Mark every unacked publish for re-sending; returns how many."""
        count = 0
        for entry in self.entries.values():
            if entry.sent:
                entry.sent = False
                count += 1
        return count

    @property
    def unacked(self) -> list[str]:
        """Ids of publishes waiting for their ack, oldest first."""
        return [e.publish_id for e in self.entries.values() if e.publish_id is not None]
