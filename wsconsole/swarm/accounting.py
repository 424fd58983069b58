"""Delivery accounting for a swarm: a plain object fed events, no I/O and no event loop.

The driver (swarm.py) tells it what each simulated client did and saw: state changes,
`joined` replies, publishes, acks, delivered messages and errors. From that it answers,
live and at the end, the questions a QA engineer asks after breaking a cluster:

- sent / acknowledged / unacknowledged publishes;
- delivered: distinct (subscriber, room, seq) deliveries of messages this swarm published;
- lost: for every subscriber of a room, the acknowledged messages of that room published
  after it first joined (seq above its `joined` baseline) that it never received and was
  not told it would not get. Seqs count within an *epoch* (the room's sequence space, on
  every `joined`, `message` and `ack`): a broker that lost its state starts a new one, all
  of it owed; a `joined` with `reset: true` tells the subscriber the rest of its old epoch
  is gone, and `error recovery_window_exceeded` that everything up to its `seq` is, so
  those are not counted lost. (A server that sends no epoch: an acked seq taken by another
  id opens a new epoch.)
- announced lost: those a subscriber did not receive because it was told so (a reset, a
  window error): not silent, but not delivered either, so a QA engineer sees how many;
- duplicated: the same message id delivered twice to one subscriber;
- out of order: a seq below one the subscriber already saw in that room;
- publish-to-deliver latency percentiles (in a `LatencyHistogram`: fixed memory however
  long the run, every sample counted, the tail included); reconnect count and
  time-to-reconnect distribution (from leaving OPEN to the next OPEN); errors by kind.

Percentiles are the one definition of core/metrics.py (nearest rank), as everywhere else.

The figures do not depend on the order of events of *different* clients, only on each
client's own order: a swarm split over workers (journal.py) replays each worker's events in
its order, but the workers' batches interleave as they arrive. So a delivery may be replayed
before the publisher's `published` (another worker's journal): an id whose publisher is one of
the swarm's clients (ids are CLIENT-N) is ours however late its publish record comes, never
"foreign". Epochs are numbered in the order first seen, which across workers is the order
of their batches: the real order unless a room's sequence restarts within one batch interval
of another worker first seeing the room.
Who was connected when, and the reconnect times, are kept by connbook.py, which the
accounting of a user's app (appaccounting.py) shares.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from wsconsole.core.metrics import LatencyHistogram, percentile
from wsconsole.swarm.connbook import ClientBook, ConnectionBook
from wsconsole.swarm.connbook import ms as _ms


@dataclass(slots=True)
class _Subscription:
    """What one client saw in one room; `baseline` and `epoch` say where its duty starts,
    `at` is the epoch it is in now, `covered` what it was told it will not get:
    (epoch, after seq, up to seq or -1 for the rest of that epoch)."""

    baseline: int
    epoch: int
    max_seq: int
    ids: set[str] = field(default_factory=set)
    window_pending: bool = False  # a window error came: the next `joined` is its position
    at: int = 0
    covered: list[tuple[int, int, int]] = field(default_factory=list)
    resets: int = 0

    def after_join(self, epoch: int, seq: int) -> bool:
        """Whether an acknowledged (epoch, seq) came after this subscriber's first `joined`."""
        return not (epoch < self.epoch or (epoch == self.epoch and seq <= self.baseline))

    def told_gone(self, epoch: int, seq: int) -> bool:
        """Whether a reset or a window error told this subscriber (epoch, seq) will not come."""
        return any(
            e == epoch and seq > low and (high < 0 or seq <= high) for e, low, high in self.covered
        )

    def owes(self, epoch: int, seq: int) -> bool:
        """Whether an acknowledged (epoch, seq) is owed to this subscriber."""
        return self.after_join(epoch, seq) and not self.told_gone(epoch, seq)

    def announced(self, epoch: int, seq: int) -> bool:
        """Whether (epoch, seq) came after the join and was announced as gone."""
        return self.after_join(epoch, seq) and self.told_gone(epoch, seq)


@dataclass(slots=True)
class _RoomAcks:
    """Acknowledged publishes of one room, numbered by epoch: the server's epochs in the
    order seen, or, from a server that sends none, a new one whenever an acked seq is
    already taken by another id."""

    epoch: int = 0  # the latest epoch (index)
    names: dict[str, int] = field(default_factory=dict)  # the server's epoch id -> index
    by_seq: dict[int, str] = field(default_factory=dict)
    acked: list[tuple[int, int, str]] = field(default_factory=list)  # (epoch, seq, id)
    times: list[float] = field(default_factory=list)  # when each was acknowledged
    floor: int = 0  # highest seq of this epoch already compacted away (taken)


class Accounting:
    """Counts and cross-checks everything a swarm sent, got acknowledged and received."""

    def __init__(
        self,
        started_at: float = 0.0,
        horizon: float = 120.0,
        compact_above: int = 100_000,
    ) -> None:
        self.started_at = started_at
        # Long runs stay bounded: once more than `compact_above` messages are tracked, those
        # acknowledged over `horizon` seconds ago get their final verdict (delivered or lost
        # for each subscriber) and are forgotten; latencies go to fixed-size histograms.
        self.horizon = horizon
        self.compact_above = compact_above
        self._final_expected = 0
        self._final_lost = 0
        self._final_announced = 0
        self.book = ConnectionBook(started_at)
        self.subs: dict[tuple[str, str], _Subscription] = {}
        self.sent = 0
        self.acknowledged = 0
        self.delivered = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.seq_mismatch = 0
        self.foreign = 0
        self.retried = 0  # publishes sent again after an error reply (broker down, rate limit)
        self.errors: Counter[str] = Counter()
        # id -> room for every publish; id -> seq once acknowledged
        self._room_of: dict[str, str] = {}
        # delivered ids whose publish is not known (yet): when first delivered
        self._unpublished: dict[str, float] = {}
        self._peers: set[str] = set()  # the swarm's clients on other workers
        self._acked_seq: dict[str, int] = {}
        self._rooms: dict[str, _RoomAcks] = {}
        self.latencies = LatencyHistogram()  # the whole run
        self._interval_latencies = LatencyHistogram()  # since the last snapshot
        self._last: dict[str, int] = {}

    # ---- feeding -------------------------------------------------------------------------

    @property
    def clients(self) -> dict[str, ClientBook]:
        """Every simulated client's connection bookkeeping, by name."""
        return self.book.clients

    @property
    def reconnects(self) -> int:
        """Reconnects completed so far."""
        return self.book.reconnects

    def client_added(self, name: str) -> None:
        """Register a simulated client (before it connects)."""
        self.book.client_added(name)

    def transition(self, name: str, state: str, at: float) -> None:
        """A client's connection changed state; leaving OPEN starts a reconnect clock."""
        self.book.transition(name, state, at)

    def joined(
        self, name: str, room: str, seq: int, epoch: str | None = None, reset: bool = False
    ) -> None:
        """A `joined` reply: the first one fixes the baseline (older seqs are not owed); one
        with `reset` says the rest of the client's epoch (and any epoch in between) is gone;
        without epochs, a later one below what the client saw means the sequence restarted."""
        acks = self._room(room)
        index = acks.epoch if epoch is None else self._index(acks, epoch)
        sub = self.subs.get((name, room))
        if sub is None:
            self.subs[(name, room)] = _Subscription(seq, index, seq, at=index)
        elif reset:
            sub.resets += 1
            sub.covered.append((sub.at, sub.max_seq, -1))
            sub.covered += [(between, 0, -1) for between in range(sub.at + 1, index)]
            window = [high for e, _, high in sub.covered if e == index and high >= 0]
            sub.at, sub.max_seq = index, max(window, default=0)
        elif index != sub.at:
            sub.at, sub.max_seq = index, 0
        elif seq < sub.max_seq:
            sub.max_seq = seq
        if sub is not None and sub.window_pending:
            # the `joined` after a window error is the client's new position (protocol.md):
            # what was published between the error's seq and it will not come either
            sub.window_pending = False
            if index == sub.at and seq > sub.max_seq:
                sub.covered.append((index, sub.max_seq, seq))
                sub.max_seq = seq

    def _room(self, room: str) -> _RoomAcks:
        acks = self._rooms.get(room)
        if acks is None:
            acks = self._rooms[room] = _RoomAcks()
        return acks

    @staticmethod
    def _index(acks: _RoomAcks, epoch: str) -> int:
        """The order of the server's epoch `epoch` among the room's (a new one is next)."""
        index = acks.names.get(epoch)
        if index is None:
            index = acks.names[epoch] = len(acks.names)
            if index > acks.epoch:
                acks.epoch = index
                acks.by_seq = {}
                acks.floor = 0
        return index

    def published(self, name: str, room: str, ident: str) -> None:
        """The swarm handed a publish with this id to a client (queued or sent)."""
        if ident not in self._room_of:
            self._room_of[ident] = room
            self.sent += 1
        elif self._unpublished.pop(ident, None) is not None:  # delivered before its publish
            self.sent += 1

    def _ours(self, ident: str, room: str) -> bool:
        """Whether `ident` is a publish of this swarm: known, or named after one of its
        clients (CLIENT-N) whose publish is recorded elsewhere (another worker's journal,
        replayed later or, for a worker's own accounting, never)."""
        if ident in self._room_of:
            return True
        publisher = ident.rpartition("-")[0]
        if publisher not in self.book.clients and publisher not in self._peers:
            return False
        self._room_of[ident] = room
        self._unpublished[ident] = time.monotonic()
        return True

    def add_peers(self, names: Iterable[str]) -> None:
        """The swarm's clients run by other workers: their publishes delivered here are the
        swarm's, not foreign (a worker's own accounting counts them as delivered)."""
        self._peers.update(names)

    def acked(
        self, ident: str, seq: int, at: float | None = None, epoch: str | None = None
    ) -> None:
        """The broker accepted a publish and gave it (epoch, seq) (re-acks of the same id
        ignored)."""
        room = self._room_of.get(ident)
        if room is None:
            return
        previous = self._acked_seq.get(ident)
        if previous is not None:
            if previous != seq:
                self.seq_mismatch += 1
            return
        self._acked_seq[ident] = seq
        self.acknowledged += 1
        acks = self._room(room)
        if epoch is not None:
            index = self._index(acks, epoch)
        elif acks.by_seq.get(seq, ident) != ident or seq <= acks.floor:
            acks.epoch += 1
            acks.by_seq = {}
            acks.floor = 0
            index = acks.epoch
        else:
            index = acks.epoch
        if index == acks.epoch:
            acks.by_seq[seq] = ident
        acks.acked.append((index, seq, ident))
        acks.times.append(time.monotonic() if at is None else at)

    def delivered_message(
        self,
        name: str,
        room: str,
        seq: int,
        ident: str | None,
        latency: float | None,
        epoch: str | None = None,
    ) -> None:
        """A `message` envelope reached a subscriber; `latency` is publish-to-deliver seconds."""
        if ident is None or not self._ours(ident, room):
            self.foreign += 1
            return
        acks = self._room(room)
        index = acks.epoch if epoch is None else self._index(acks, epoch)
        sub = self.subs.get((name, room))
        if sub is None:  # a message before any `joined`: take the seq before it as baseline
            sub = self.subs[(name, room)] = _Subscription(seq - 1, index, seq - 1, at=index)
        if ident in sub.ids:
            self.duplicated += 1
            return
        sub.ids.add(ident)
        if epoch is not None and index != sub.at:
            if index < sub.at:
                self.out_of_order += 1  # a message of an epoch the subscriber left
            else:
                sub.at, sub.max_seq = index, seq
        elif seq < sub.max_seq:
            self.out_of_order += 1
        else:
            sub.max_seq = seq
        self.delivered += 1
        if latency is not None and latency >= 0:
            self.latencies.record(latency)
            self._interval_latencies.record(latency)

    def compact(self, now: float) -> int:
        """Give old acknowledged messages their final verdict and forget them (bounded memory
        for long runs); returns how many were forgotten. A no-op below `compact_above`."""
        if len(self._room_of) <= self.compact_above:
            return 0
        cutoff = now - self.horizon
        by_room: dict[str, list[_Subscription]] = {}
        for (_, room), sub in self.subs.items():
            by_room.setdefault(room, []).append(sub)
        forgotten = 0
        for room, acks in self._rooms.items():
            count = 0
            while count < len(acks.times) and acks.times[count] < cutoff:
                count += 1
            if not count:
                continue
            for epoch, seq, ident in acks.acked[:count]:
                for sub in by_room.get(room, ()):
                    owed = sub.owes(epoch, seq)
                    had = ident in sub.ids
                    sub.ids.discard(ident)
                    if owed:
                        self._final_expected += 1
                        if not had:
                            self._final_lost += 1
                    elif not had and sub.announced(epoch, seq):
                        self._final_announced += 1
                self._room_of.pop(ident, None)
                self._acked_seq.pop(ident, None)
                if acks.by_seq.get(seq) == ident:
                    del acks.by_seq[seq]
                    acks.floor = max(acks.floor, seq)
            del acks.acked[:count]
            del acks.times[:count]
            forgotten += count
        return forgotten + self._forget_unpublished(cutoff, by_room)

    def _forget_unpublished(self, cutoff: float, by_room: dict[str, list[_Subscription]]) -> int:
        """Forget deliveries of publishes recorded elsewhere, first seen before `cutoff`
        (a worker's accounting never learns their acks, so they never get a verdict here)."""
        old = [ident for ident, seen in self._unpublished.items() if seen < cutoff]
        for ident in old:
            del self._unpublished[ident]
            for sub in by_room.get(self._room_of.pop(ident, ""), ()):
                sub.ids.discard(ident)
        return len(old)

    def window_exceeded(
        self, name: str, room: str, seq: int | None = None, epoch: str | None = None
    ) -> None:
        """The node said it can no longer recover this room for this client: the messages
        up to `seq` (of `epoch`) will not come; the `joined` that follows is its position."""
        sub = self.subs.get((name, room))
        if sub is not None:
            sub.window_pending = True
            if seq is not None:
                acks = self._room(room)
                index = acks.epoch if epoch is None else self._index(acks, epoch)
                low = sub.max_seq if index == sub.at else 0
                sub.covered.append((index, low, seq))
                if index == sub.at:
                    sub.max_seq = max(sub.max_seq, seq)
        self.errors["recovery_window_exceeded"] += 1

    def error(self, kind: str) -> None:
        """Count one error of `kind` (client-side kinds and server error codes alike)."""
        self.errors[kind] += 1

    def retried_publish(self) -> None:
        """A publish was sent again, same id, after an error reply."""
        self.retried += 1

    def begin_stop(self, names: Iterable[str] | None = None) -> None:
        """From now on, connections closing are the swarm (or, with `names`, those clients:
        one worker's part) stopping, not failures."""
        self.book.begin_stop(names)

    # ---- reading -------------------------------------------------------------------------

    @property
    def connected(self) -> int:
        """Clients currently OPEN."""
        return self.book.connected

    @property
    def unacknowledged(self) -> int:
        """Publishes not (yet) acknowledged."""
        return self.sent - self.acknowledged

    def expected_for(self, name: str, room: str) -> list[str]:
        """Ids of the acknowledged messages of `room` this subscriber should have received:
        published after its first `joined` (seq above the baseline, or a later epoch), less
        those it was told will not come (a reset, a window error)."""
        sub = self.subs[(name, room)]
        acks = self._rooms.get(room)
        if acks is None:
            return []
        return [ident for epoch, seq, ident in acks.acked if sub.owes(epoch, seq)]

    def expected(self) -> int:
        """Deliveries owed, over every subscription."""
        current = sum(len(self.expected_for(name, room)) for name, room in self.subs)
        return self._final_expected + current

    def lost(self) -> int:
        """Acknowledged messages a subscriber should have but does not have."""
        total = self._final_lost
        for (name, room), sub in self.subs.items():
            total += sum(1 for ident in self.expected_for(name, room) if ident not in sub.ids)
        return total

    def announced_lost(self) -> int:
        """Acknowledged messages a subscriber does not have because it was told they would
        not come (a reset, a window error): counted apart from the silent losses."""
        total = self._final_announced
        for (_, room), sub in self.subs.items():
            acks = self._rooms.get(room)
            if acks is not None:
                total += sum(1 for epoch, seq, ident in acks.acked
                             if ident not in sub.ids and sub.announced(epoch, seq))
        return total

    def epochs(self) -> dict[str, int]:
        """Rooms whose sequence restarted (a broker that lost its state), and how often."""
        return {room: acks.epoch for room, acks in self._rooms.items() if acks.epoch}

    def down_clients(self) -> list[str]:
        """Clients that were connected once and are not connected now."""
        return self.book.down_clients()

    def settled(self) -> bool:
        """Every publish acknowledged and every owed delivery received (cheap-ish check)."""
        return self.unacknowledged == 0 and self.lost() == 0

    @staticmethod
    def _latency_fields(latencies: LatencyHistogram) -> dict[str, float | None]:
        return {
            "p50_latency_ms": _ms(latencies.percentile(50)),
            "p95_latency_ms": _ms(latencies.percentile(95)),
            "p99_latency_ms": _ms(latencies.percentile(99)),
            "max_latency_ms": _ms(latencies.max if latencies.count else None),
        }

    def snapshot(self, now: float) -> dict[str, object]:
        """Live stats: totals, per-interval rates and latency of the interval since last call."""
        elapsed = round(now - self.started_at, 3)
        totals = {
            "clients": len(self.clients),
            "connected": self.connected,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "delivered": self.delivered,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "reconnects": self.reconnects,
            "errors": dict(self.errors),
        }
        rates = {
            f"{key}_delta": int(totals[key]) - self._last.get(key, 0)  # type: ignore[call-overload]
            for key in ("sent", "acknowledged", "delivered", "reconnects")
        }
        for key in ("sent", "acknowledged", "delivered", "reconnects"):
            self._last[key] = int(totals[key])  # type: ignore[call-overload]
        interval = self._latency_fields(self._interval_latencies)
        self._interval_latencies.reset()
        return {
            "t": elapsed,
            **totals,
            **rates,
            **interval,
            "reconnect_p99_ms": _ms(percentile(self.book.reconnect_times(), 99)),
        }

    def summary(self, now: float) -> dict[str, object]:
        """Final figures: everything in a snapshot plus lost, expected, reconnect spread."""
        book = self.book.summary()
        return {
            "t": round(now - self.started_at, 3),
            **{key: book[key] for key in ("clients", "connected", "never_connected",
                                          "disconnected_at_end")},
            "subscriptions": len(self.subs),
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "unacknowledged": self.unacknowledged,
            "expected": self.expected(),
            "delivered": self.delivered,
            "lost": self.lost(),
            "announced_lost": self.announced_lost(),
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "seq_mismatch": self.seq_mismatch,
            "retried": self.retried,
            "foreign": self.foreign,
            "seq_restarts": sum(self.epochs().values()),
            "reset_notices": sum(sub.resets for sub in self.subs.values()),
            **self._latency_fields(self.latencies),
            **{key: value for key, value in book.items() if key.startswith(("reconnect",
                                                                              "connect_"))},
            "errors": dict(self.errors),
            "errors_total": sum(self.errors.values()),
        }

    def reconnect_times(self) -> list[float]:
        """Every measured time-to-reconnect, seconds, in the order they happened."""
        return self.book.reconnect_times()

    def reconnect_moments(self) -> list[float]:
        """When each reconnect completed, seconds since the swarm started."""
        return self.book.reconnect_moments()
