"""metrics.py: the one percentile definition, LatencyHistogram, the TimeSeries ring."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsconsole.core.metrics import LatencyHistogram, TimeSeries, percentile


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_is_a_sample_by_nearest_rank(values: list[float], q: float) -> None:
    result = percentile(values, q)
    assert result in values
    rank = max(1, int(np.ceil(q / 100 * len(values))))
    assert result == sorted(values)[rank - 1]
    assert percentile(values, 0) == min(values)
    assert percentile(values, 100) == max(values)


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(101)), 99) == 99
    with pytest.raises(ValueError):
        percentile([1.0], 101)


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


def test_time_series_rings_keep_the_newest_points_in_order() -> None:
    series = TimeSeries(capacity=5)
    for t in range(8):
        series.add("connections.total", float(t), t * 10)
    series.tick()
    t, v = series.window("connections.total", since=0)
    assert t.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]  # the ring kept the last 5, in order
    t, v = series.window("connections.total", since=5.5)
    assert v.tolist() == [60.0, 70.0]
    assert series.last("connections.total") == 70.0
    assert series.names("connections.") == ["connections.total"]
    assert series.window("missing", 0)[0].size == 0 and series.last("missing") is None
    series.record(8.0, [("connections.total", 80), ("connections.n1", 1)])
    assert series.version == 2 and series.names("connections.") == [
        "connections.n1", "connections.total",
    ]
    assert series.arrays("connections.n1")[0].tolist() == [8.0]
    with pytest.raises(ValueError):
        TimeSeries(capacity=0)
