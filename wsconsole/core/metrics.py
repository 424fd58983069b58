"""Percentiles, latency histograms and the time-series ring the live plots read.

Plain objects fed values and timestamps, so they test without a loop and cost little on hot
paths. One percentile definition (nearest rank, `percentile`) for every figure: exact over a
list of samples, and within 1 % over a `LatencyHistogram`. Who uses what: the console and
the swarm measure delivery latency in histograms; the benchmarks and the swarm's reconnect
times take exact percentiles of lists; the window's plots read a `TimeSeries`.

LatencyHistogram uses logarithmic buckets (HDR-histogram style) in a numpy array rather
than a sampled reservoir: memory is fixed (about 2,100 buckets for 1 us..1000 s at 1 %),
recording is O(1), percentiles are within the bucket precision for *every* sample (a
reservoir drops samples and is noisiest exactly in the tail, p99), and two histograms
merge by adding counts, which is what the supervisor needs to combine sources.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) of `values` by nearest rank, None when empty.

    The one definition every figure uses: the smallest sample with at least p % of the
    samples at or below it (rank ceil(p/100 * n), at least 1), always one of the samples.
    `LatencyHistogram.percentile` answers the same question within its bucket precision.
    """
    if not 0 <= p <= 100:
        raise ValueError("percentile must be within 0..100")
    if len(values) == 0:
        return None
    ordered = sorted(values)
    return ordered[_rank(p, len(ordered)) - 1]


def _rank(p: float, count: int) -> int:
    """The 1-based nearest rank of the p-th percentile among `count` samples."""
    return max(1, math.ceil(p / 100 * count))


class LatencyHistogram:
    """Latency distribution in log buckets: fixed memory, mergeable, percentiles within 1 %."""

    def __init__(
        self, lowest: float = 1e-6, highest: float = 1000.0, precision: float = 0.01
    ) -> None:
        if not 0 < lowest < highest or not 0 < precision < 1:
            raise ValueError("need 0 < lowest < highest and 0 < precision < 1")
        self.lowest = lowest
        self.highest = highest
        self.precision = precision
        self._log_base = math.log1p(precision)
        self._n = math.ceil(math.log(highest / lowest) / self._log_base) + 2
        self.counts = np.zeros(self._n, dtype=np.int64)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def _index(self, value: float) -> int:
        if value <= self.lowest:
            return 0
        if value >= self.highest:
            return self._n - 1
        return 1 + int(math.log(value / self.lowest) / self._log_base)

    def _value(self, index: int) -> float:
        if index == 0:
            return self.lowest
        # midpoint (geometric) of the bucket, so the relative error is under `precision`
        return self.lowest * math.exp((index - 0.5) * self._log_base)

    def record(self, value: float) -> None:
        """Add one sample (seconds); values outside [lowest, highest] land in the edges."""
        self.counts[self._index(value)] += 1
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def record_many(self, values: np.ndarray | list[float]) -> None:
        """Add many samples at once (vectorised)."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return
        clipped = np.clip(arr, self.lowest, self.highest)
        idx = 1 + (np.log(clipped / self.lowest) / self._log_base).astype(np.int64)
        idx[arr <= self.lowest] = 0
        idx[arr >= self.highest] = self._n - 1
        self.counts += np.bincount(idx, minlength=self._n)
        self.count += int(arr.size)
        self.total += float(arr.sum())
        self.min = min(self.min, float(arr.min()))
        self.max = max(self.max, float(arr.max()))

    def percentile(self, p: float) -> float | None:
        """The p-th percentile (0-100), or None with no samples."""
        if self.count == 0:
            return None
        if not 0 <= p <= 100:
            raise ValueError("percentile must be within 0..100")
        index = int(np.searchsorted(np.cumsum(self.counts), _rank(p, self.count)))
        if index == 0:
            return self.min  # at or below `lowest`: the smallest sample is exact
        if index == self._n - 1:
            return self.max  # at or above `highest`
        value = self._value(index)
        return min(max(value, self.min), self.max)

    def percentiles(self, ps: tuple[float, ...] = (50, 95, 99)) -> dict[str, float | None]:
        """Several percentiles at once, keyed "p50", "p95", ..."""
        return {f"p{p:g}": self.percentile(p) for p in ps}

    @property
    def mean(self) -> float | None:
        """Arithmetic mean of the samples, or None."""
        return self.total / self.count if self.count else None

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram's samples (same bucket layout required)."""
        if other.counts.shape != self.counts.shape or other.lowest != self.lowest:
            raise ValueError("histograms have different layouts")
        self.counts += other.counts
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def reset(self) -> None:
        """Forget every sample (e.g. at the start of each reporting interval)."""
        self.counts[:] = 0
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf


class _Ring:
    """A fixed-size ring of (t, value) float64 pairs."""

    __slots__ = ("_t", "_v", "capacity", "count")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._t = np.zeros(capacity, np.float64)
        self._v = np.zeros(capacity, np.float64)
        self.count = 0  # total appended

    def append(self, t: float, value: float) -> None:
        slot = self.count % self.capacity
        self._t[slot] = t
        self._v[slot] = value
        self.count += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the held points in time order."""
        if self.count <= self.capacity:
            return self._t[: self.count].copy(), self._v[: self.count].copy()
        start = self.count % self.capacity
        order = np.r_[start : self.capacity, 0:start]
        return self._t[order], self._v[order]

    def last(self) -> float | None:
        if not self.count:
            return None
        return float(self._v[(self.count - 1) % self.capacity])


class TimeSeries:
    """Named bounded time series of (t, value): the one ring the live plots read.

    A series is created by its first point and keeps its last `capacity` points. `record`
    appends a round of points at one time and bumps `version`, so a view redraws only when
    something new arrived.
    """

    def __init__(self, capacity: int = 7_200) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.version = 0
        self._rings: dict[str, _Ring] = {}

    def add(self, name: str, t: float, value: float) -> None:
        """Append one point to the series `name` (the views see it at the next `version`)."""
        ring = self._rings.get(name)
        if ring is None:
            ring = self._rings[name] = _Ring(self.capacity)
        ring.append(t, float(value))

    def record(self, t: float, points: Iterable[tuple[str, float]]) -> None:
        """Append a round of (name, value) points taken at time `t`; bumps `version`."""
        for name, value in points:
            self.add(name, t, value)
        self.tick()

    def tick(self) -> None:
        """Mark the end of a round of `add`s (views redraw when the version moved)."""
        self.version += 1

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) of `name`, oldest first (empty arrays if the series is unknown)."""
        ring = self._rings.get(name)
        if ring is None:
            return np.empty(0), np.empty(0)
        return ring.arrays()

    def window(self, name: str, since: float) -> tuple[np.ndarray, np.ndarray]:
        """Points of `name` with t >= since."""
        t, v = self.arrays(name)
        start = int(np.searchsorted(t, since, side="left"))
        return t[start:], v[start:]

    def names(self, prefix: str = "") -> list[str]:
        """Known series names starting with `prefix`, sorted."""
        return sorted(n for n in self._rings if n.startswith(prefix))

    def last(self, name: str) -> float | None:
        """The newest value of a series, or None."""
        ring = self._rings.get(name)
        return None if ring is None else ring.last()
