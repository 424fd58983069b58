"""Counters, rate meters, latency histograms and ring time series, shared by every view.

Plain objects fed values and timestamps (`now` is injectable everywhere, default
`time.monotonic()`), so they test without a loop and cost little on hot paths.

LatencyHistogram uses logarithmic buckets (HDR-histogram style) in a numpy array rather
than a sampled reservoir: memory is fixed (about 2,100 buckets for 1 us..1000 s at 1 %),
recording is O(1), percentiles are within the bucket precision for *every* sample (a
reservoir drops samples and is noisiest exactly in the tail, p99), and two histograms
merge by adding counts, which is what the supervisor needs to combine sources.
"""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np


class Counter:
    """A monotonically increasing count (reset only explicitly)."""

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def inc(self, n: int = 1) -> int:
        """Add `n` and return the new value."""
        self.value += n
        return self.value

    def reset(self) -> None:
        """Back to zero."""
        self.value = 0

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"Counter({self.value})"


class RateMeter:
    """Events per second over a sliding window, kept as fixed-width time buckets."""

    def __init__(self, window: float = 5.0, resolution: float = 0.1) -> None:
        if window <= 0 or resolution <= 0 or resolution > window:
            raise ValueError("need 0 < resolution <= window")
        self.window = window
        self.resolution = resolution
        self._buckets: deque[tuple[int, float]] = deque()  # (bucket index, amount)
        self._sum = 0.0
        self.total = 0.0
        self._started: float | None = None

    def _expire(self, index: int) -> None:
        oldest = index - math.ceil(self.window / self.resolution) + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._sum -= self._buckets.popleft()[1]

    def add(self, n: float = 1.0, now: float | None = None) -> None:
        """Record `n` events at time `now`."""
        now = time.monotonic() if now is None else now
        if self._started is None:
            self._started = now
        index = int(now // self.resolution)
        if self._buckets and self._buckets[-1][0] == index:
            last_index, amount = self._buckets[-1]
            self._buckets[-1] = (last_index, amount + n)
        else:
            self._buckets.append((index, n))
        self._sum += n
        self.total += n
        self._expire(index)

    def rate(self, now: float | None = None) -> float:
        """Events per second over the last `window` seconds (shorter while warming up)."""
        now = time.monotonic() if now is None else now
        self._expire(int(now // self.resolution))
        if self._started is None:
            return 0.0
        span = min(self.window, max(now - self._started, self.resolution))
        return max(self._sum, 0.0) / span


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
        rank = max(1, math.ceil(p / 100 * self.count))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
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


class RingSeries:
    """A bounded time series of (t, value) in two numpy ring buffers, for the live plots."""

    def __init__(self, capacity: int = 3600) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._t = np.zeros(capacity, dtype=np.float64)
        self._v = np.zeros(capacity, dtype=np.float64)
        self._next = 0
        self._len = 0

    def append(self, t: float, value: float) -> None:
        """Add one point; the oldest is dropped when full."""
        self._t[self._next] = t
        self._v[self._next] = value
        self._next = (self._next + 1) % self.capacity
        self._len = min(self._len + 1, self.capacity)

    def __len__(self) -> int:
        return self._len

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of (times, values), oldest first."""
        if self._len < self.capacity:
            return self._t[: self._len].copy(), self._v[: self._len].copy()
        order = np.r_[self._next : self.capacity, 0 : self._next]
        return self._t[order], self._v[order]

    def since(self, t0: float) -> tuple[np.ndarray, np.ndarray]:
        """Points with t >= t0, oldest first."""
        t, v = self.arrays()
        start = int(np.searchsorted(t, t0, side="left"))
        return t[start:], v[start:]

    def last(self) -> tuple[float, float] | None:
        """The newest point, or None when empty."""
        if self._len == 0:
            return None
        i = (self._next - 1) % self.capacity
        return float(self._t[i]), float(self._v[i])

    def clear(self) -> None:
        """Drop every point."""
        self._next = 0
        self._len = 0
