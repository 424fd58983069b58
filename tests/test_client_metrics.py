"""metrics.py: Counter, RateMeter, LatencyHistogram, RingSeries with injected times."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsconsole.core.metrics import Counter, LatencyHistogram, RateMeter, RingSeries


def test_counter() -> None:
    c = Counter()
    assert c.inc() == 1 and c.inc(4) == 5 and int(c) == 5
    c.reset()
    assert c.value == 0


def test_rate_meter_sliding_window() -> None:
    """100 events/s for 10 s reads 100/s; events older than the window stop counting."""
    meter = RateMeter(window=2.0, resolution=0.1)
    for i in range(1000):
        meter.add(1, now=i * 0.01)
    assert meter.rate(now=10.0) == pytest.approx(100, rel=0.06)
    assert meter.rate(now=13.0) == 0.0
    assert meter.total == 1000
    assert RateMeter().rate(now=5.0) == 0.0


def test_rate_meter_warm_up_uses_elapsed_time() -> None:
    """During the first window the rate is over the time actually observed."""
    meter = RateMeter(window=10.0, resolution=0.1)
    for i in range(50):
        meter.add(1, now=100 + i * 0.02)
    assert meter.rate(now=101.0) == pytest.approx(50, rel=0.05)


@settings(max_examples=50)
@given(st.lists(st.floats(min_value=1e-5, max_value=100.0), min_size=1, max_size=500))
def test_histogram_percentiles_within_precision(samples: list[float]) -> None:
    """Each percentile is within 1 % of numpy's nearest-rank value, on every input."""
    hist = LatencyHistogram(precision=0.01)
    for s in samples:
        hist.record(s)
    ordered = np.sort(np.array(samples))
    for p in (0, 50, 95, 99, 100):
        rank = max(1, int(np.ceil(p / 100 * len(samples))))
        exact = ordered[rank - 1]
        got = hist.percentile(p)
        assert got is not None and got == pytest.approx(exact, rel=0.011)
    assert hist.count == len(samples) and hist.min == min(samples) and hist.max == max(samples)


def test_histogram_vectorised_merge_reset_and_edges() -> None:
    """record_many equals record; merge adds counts; out-of-range values land at the edges."""
    rng = np.random.default_rng(7)
    values = rng.lognormal(mean=-5, sigma=1, size=10_000)
    one, many = LatencyHistogram(), LatencyHistogram()
    for v in values:
        one.record(float(v))
    many.record_many(values)
    assert np.array_equal(one.counts, many.counts)
    assert many.percentiles() == one.percentiles()
    merged = LatencyHistogram()
    merged.merge(one)
    merged.merge(many)
    assert merged.count == 20_000 and merged.percentile(50) == one.percentile(50)
    edge = LatencyHistogram(lowest=1e-3, highest=1.0)
    edge.record_many([1e-9, 5.0])
    assert edge.percentile(0) == 1e-9 and edge.percentile(100) == 5.0
    merged.reset()
    assert merged.count == 0 and merged.percentile(50) is None and merged.mean is None
    with pytest.raises(ValueError):
        merged.merge(edge)


def test_ring_series_wraps_oldest_first() -> None:
    """A full ring drops the oldest point and returns time order."""
    ring = RingSeries(capacity=4)
    assert ring.last() is None and len(ring) == 0
    for t in range(6):
        ring.append(float(t), t * 10.0)
    t, v = ring.arrays()
    assert t.tolist() == [2.0, 3.0, 4.0, 5.0] and v.tolist() == [20.0, 30.0, 40.0, 50.0]
    assert ring.last() == (5.0, 50.0)
    t2, v2 = ring.since(3.5)
    assert t2.tolist() == [4.0, 5.0] and v2.tolist() == [40.0, 50.0]
    ring.clear()
    assert len(ring) == 0 and ring.arrays()[0].size == 0
