"""The summary bands of the fleet timeline: how many clients of a group are CONNECTING, OPEN,
RECONNECTING or CLOSED over time (no Qt).

`FleetBands` is told every lane's state bucket and group; it keeps the current counts per
group, for two groupings at once ("source": own / swarm / proxy, and "node": the node each
client is on), and records them into one `TimeSeries` (core/metrics.py, the ring the plots
use too) at most every `resolution` seconds per group, so a thousand clients reconnecting
at once write a few points, not thousands. The view draws the counts as a stacked area.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from wsconsole.core.lifecycle import State
from wsconsole.core.metrics import TimeSeries

BUCKETS = ("CONNECTING", "OPEN", "RECONNECTING", "CLOSED")  # bottom to top in the band
GROUPINGS = ("source", "node")
NO_NODE = "(no node yet)"
_BUCKET_OF = {State.CONNECTING: "CONNECTING", State.OPEN: "OPEN",
              State.RECONNECTING: "RECONNECTING", State.CLOSING: "CLOSED",
              State.CLOSED: "CLOSED"}


def bucket(state: State) -> str:
    """The band a state is counted in (CLOSING counts as CLOSED: the client is leaving)."""
    return _BUCKET_OF[state]


class FleetBands:
    """Counts per (grouping, group) and their history; see the module docstring."""

    def __init__(self, resolution: float = 0.1, capacity: int = 9_000) -> None:
        self.resolution = resolution
        self.series = TimeSeries(capacity)
        self.counts: dict[tuple[str, str], Counter[str]] = {}
        self._last: dict[tuple[str, str], float] = {}
        self._dirty: set[tuple[str, str]] = set()

    def move(self, at: float, keys: tuple[tuple[str, str], ...], old: str | None,
             new: str | None) -> None:
        """One lane left bucket `old` (None: it is new) for `new` (None: it is gone) in the
        groups `keys`, at monotonic time `at`."""
        for key in keys:
            counts = self.counts.setdefault(key, Counter())
            if old is not None:
                counts[old] -= 1
            if new is not None:
                counts[new] += 1
            self._touch(key, at)

    def regroup(self, at: float, old_key: tuple[str, str], new_key: tuple[str, str],
                where: str) -> None:
        """One lane in bucket `where` moved from group `old_key` to `new_key`."""
        self.move(at, (old_key,), where, None)
        self.move(at, (new_key,), None, where)

    def _touch(self, key: tuple[str, str], at: float) -> None:
        last = self._last.get(key)
        if last is None or at - last >= self.resolution:
            self._record(key, at)
        else:
            self._dirty.add(key)

    def _record(self, key: tuple[str, str], at: float) -> None:
        at = max(at, self._last.get(key, at))  # a late event never goes back in time
        counts = self.counts[key]
        for name in BUCKETS:
            self.series.add(_name(key, name), at, max(0, counts[name]))
        self.series.tick()
        self._last[key] = at
        self._dirty.discard(key)

    def flush(self, now: float) -> None:
        """Record the groups whose counts changed since their last point (the view's timer
        calls this, so the band's right edge is never more than one tick behind)."""
        for key in list(self._dirty):
            self._record(key, max(now, self._last.get(key, now)))

    def groups(self, grouping: str) -> list[str]:
        """The groups known under `grouping`, in order of appearance."""
        return [group for (kind, group) in self.counts if kind == grouping]

    def window(self, key: tuple[str, str], since: float) -> tuple[np.ndarray, np.ndarray]:
        """(times, counts) with counts shaped (n, 4) in BUCKETS order: every point from the
        last one before `since` on (the band is a step function)."""
        first = self.series.arrays(_name(key, BUCKETS[0]))[0]
        if not len(first):
            return np.empty(0), np.empty((0, len(BUCKETS)))
        start = max(0, int(np.searchsorted(first, since, side="right")) - 1)
        values = np.stack([self.series.arrays(_name(key, name))[1][start:] for name in BUCKETS],
                          axis=1)
        return first[start:], values

    def now(self, key: tuple[str, str]) -> dict[str, int]:
        """The current counts of one group."""
        counts = self.counts.get(key, Counter())
        return {name: max(0, counts[name]) for name in BUCKETS}


def _name(key: tuple[str, str], bucket_name: str) -> str:
    return f"{key[0]}\x1f{key[1]}\x1f{bucket_name}"


__all__ = ["BUCKETS", "GROUPINGS", "NO_NODE", "FleetBands", "bucket"]
