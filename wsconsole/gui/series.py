"""Headless time series for the Live plots: named numpy rings of (time, value) (no Qt).

The console's sampler appends a point per series a few times a second; the plots read a
time window on their own timer. Bounded: each series keeps its last `capacity` points.
"""

from __future__ import annotations

import numpy as np


class Ring:
    """A fixed-size ring of (t, value) float64 pairs."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._t = np.zeros(capacity, np.float64)
        self._v = np.zeros(capacity, np.float64)
        self.count = 0  # total appended

    def append(self, t: float, value: float) -> None:
        """Add one point, overwriting the oldest when full."""
        slot = self.count % self.capacity
        self._t[slot] = t
        self._v[slot] = value
        self.count += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the held points in time order."""
        held = min(self.count, self.capacity)
        if self.count <= self.capacity:
            return self._t[:held].copy(), self._v[:held].copy()
        start = self.count % self.capacity
        order = np.r_[start:self.capacity, 0:start]
        return self._t[order], self._v[order]

    def last(self) -> float | None:
        """The newest value, or None when empty."""
        if not self.count:
            return None
        return float(self._v[(self.count - 1) % self.capacity])


class SeriesStore:
    """Named series created on first append; `version` grows with every sample round."""

    def __init__(self, capacity: int = 7_200) -> None:
        self.capacity = capacity
        self.series: dict[str, Ring] = {}
        self.version = 0

    def add(self, name: str, t: float, value: float) -> None:
        """Append a point to the series `name`."""
        ring = self.series.get(name)
        if ring is None:
            ring = self.series[name] = Ring(self.capacity)
        ring.append(t, float(value))

    def tick(self) -> None:
        """Mark the end of a sample round (views redraw when the version moved)."""
        self.version += 1

    def window(self, name: str, since: float) -> tuple[np.ndarray, np.ndarray]:
        """Points of `name` with t >= since (empty arrays if the series is unknown)."""
        ring = self.series.get(name)
        if ring is None:
            return np.empty(0), np.empty(0)
        t, v = ring.arrays()
        keep = t >= since
        return t[keep], v[keep]

    def names(self, prefix: str = "") -> list[str]:
        """Known series names starting with `prefix`, sorted."""
        return sorted(n for n in self.series if n.startswith(prefix))

    def last(self, name: str) -> float | None:
        """Newest value of a series, or None."""
        ring = self.series.get(name)
        return None if ring is None else ring.last()
