"""A swarm worker's accounting journal: every event its Accounting is fed, as compact records
a coordinator replays into ONE Accounting, so a swarm split over processes and hosts gets its
figures from the same code as a one-process swarm (exact: every client's received ids and
latencies, not a sum of summaries).

`JournalingAccounting` is an `Accounting` that also appends one record per call to a
journal; `replay` calls the same methods on another Accounting. A record is a short list,
`[code, *arguments]` (orjson-friendly). Times go as wall-clock seconds (`time.time()` terms):
the worker's monotonic clock means nothing to the coordinator, so the recorder converts
`at` to wall time and `replay` back to the coordinator's monotonic clock. Latencies are
durations measured on the worker and travel as they are.

The Accounting's figures depend only on each client's own order of events (accounting.py
says how it copes with another worker's batch arriving later), so batches from several
workers can be replayed as they arrive.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from wsconsole.errors import WsconsoleError
from wsconsole.swarm.accounting import Accounting

Record = list[Any]


class JournalError(WsconsoleError, ValueError):
    """A record that is not one of the journal's (a worker of another version, corruption)."""


class WallClock:
    """Converts between this process's monotonic clock and wall-clock seconds."""

    def __init__(self) -> None:
        self.offset = time.time() - time.monotonic()

    def to_wall(self, at: float) -> float:
        """A monotonic time of this process as wall-clock seconds."""
        return at + self.offset

    def from_wall(self, wall: float) -> float:
        """Wall-clock seconds as a monotonic time of this process."""
        return wall - self.offset


class JournalingAccounting(Accounting):
    """An Accounting that records every call it is fed into `journal` (a worker's part);
    each feeding method appends its record, then does what Accounting's does."""

    def __init__(self, started_at: float, clock: WallClock | None = None) -> None:
        super().__init__(started_at=started_at)
        self.journal: list[Record] = []
        self.wall = clock or WallClock()
        self._names: list[str] = []

    def take(self) -> list[Record]:
        """The records since the last call (for one batch), oldest first."""
        batch, self.journal = self.journal, []
        return batch

    def client_added(self, name: str) -> None:
        self._names.append(name)
        self.journal.append(["a", name])
        super().client_added(name)

    def transition(self, name: str, state: str, at: float) -> None:
        self.journal.append(["t", name, state, self.wall.to_wall(at)])
        super().transition(name, state, at)

    def joined(self, name: str, room: str, seq: int, epoch: str | None = None,
               reset: bool = False) -> None:
        self.journal.append(["j", name, room, seq, epoch, reset])
        super().joined(name, room, seq, epoch, reset)

    def published(self, name: str, room: str, ident: str) -> None:
        self.journal.append(["p", name, room, ident])
        super().published(name, room, ident)

    def acked(self, ident: str, seq: int, at: float | None = None,
              epoch: str | None = None) -> None:
        at = time.monotonic() if at is None else at
        self.journal.append(["k", ident, seq, self.wall.to_wall(at), epoch])
        super().acked(ident, seq, at, epoch)

    def delivered_message(self, name: str, room: str, seq: int, ident: str | None,
                          latency: float | None, epoch: str | None = None) -> None:
        self.journal.append(["d", name, room, seq, ident, latency, epoch])
        super().delivered_message(name, room, seq, ident, latency, epoch)

    def window_exceeded(self, name: str, room: str, seq: int | None = None,
                        epoch: str | None = None) -> None:
        self.journal.append(["w", name, room, seq, epoch])
        super().window_exceeded(name, room, seq, epoch)

    def error(self, kind: str) -> None:
        self.journal.append(["e", kind])
        super().error(kind)

    def retried_publish(self) -> None:
        self.journal.append(["r"])
        super().retried_publish()

    def begin_stop(self, names: Iterable[str] | None = None) -> None:
        """This part stops: recorded with its clients' names, so in the merged accounting
        only they stop (another worker may still be running)."""
        stopping = list(self._names if names is None else names)
        self.journal.append(["s", stopping])
        super().begin_stop(stopping)


def replay(accounting: Accounting, records: Sequence[Record], clock: WallClock) -> None:
    """Feed `records` (one worker's, in its order) to `accounting`; JournalError for a record
    that is none of the journal's (the records before it are applied)."""
    for record in records:
        try:
            _apply(accounting, record, clock)
        except (IndexError, TypeError, ValueError) as exc:
            raise JournalError(f"bad journal record {str(record)[:80]}: {exc}") from None


def _apply(acc: Accounting, record: Record, clock: WallClock) -> None:
    code, args = record[0], record[1:]
    if code == "d":
        acc.delivered_message(*args)
    elif code == "k":
        ident, seq, wall, epoch = args
        acc.acked(ident, seq, clock.from_wall(wall), epoch)
    elif code == "p":
        acc.published(*args)
    elif code == "j":
        acc.joined(*args)
    elif code == "t":
        name, state, wall = args
        acc.transition(name, state, clock.from_wall(wall))
    elif code == "a":
        acc.client_added(*args)
    elif code == "w":
        acc.window_exceeded(*args)
    elif code == "e":
        acc.error(*args)
    elif code == "r":
        acc.retried_publish()
    elif code == "s":
        acc.begin_stop(args[0])
    else:
        raise ValueError(f"unknown record {code!r}")
