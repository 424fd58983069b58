"""BackoffPolicy: property tests over the whole parameter space, plus the documented defaults."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsconsole.core.backoff import BackoffError, BackoffPolicy

finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
factors = st.floats(min_value=1.0, max_value=1e3, allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@st.composite
def policies(draw: st.DrawFn) -> BackoffPolicy:
    """Any valid policy, with a deterministic random source drawn from hypothesis."""
    initial = draw(finite)
    cap = draw(st.floats(min_value=initial, max_value=max(initial, 1e7), allow_nan=False))
    draws = draw(st.lists(unit, min_size=1, max_size=8))
    source = itertools.cycle(draws)
    return BackoffPolicy(
        initial=initial,
        factor=draw(factors),
        cap=cap,
        jitter=draw(finite),
        max_attempts=draw(st.none() | st.integers(min_value=0, max_value=50)),
        rand=lambda: next(source),
    )


@given(policies(), st.integers(min_value=1, max_value=5000))
def test_base_is_monotone_and_capped(policy: BackoffPolicy, attempt: int) -> None:
    """The base delay never decreases with the attempt and never exceeds the cap."""
    a, b = policy.base(attempt), policy.base(attempt + 1)
    assert policy.initial <= a <= b <= policy.cap or policy.initial == policy.cap == a == b
    assert math.isfinite(b)


@given(policies(), st.integers(min_value=1, max_value=5000))
def test_jitter_stays_within_bounds(policy: BackoffPolicy, attempt: int) -> None:
    """delay = base + jitter * u with u in [0, 1): never below base, never base + jitter."""
    delay = policy.delay(attempt)
    base = policy.base(attempt)
    assert base <= delay <= base + policy.jitter
    assert delay <= policy.cap + policy.jitter


@given(policies())
def test_max_attempts_and_reset(policy: BackoffPolicy) -> None:
    """Exactly max_attempts delays are handed out (50 probed when unlimited); reset restarts."""
    limit = 50 if policy.max_attempts is None else policy.max_attempts
    delays = list(itertools.islice(iter(policy), 60))
    assert len(delays) == (60 if policy.max_attempts is None else limit)
    assert policy.exhausted == (policy.max_attempts is not None)
    if policy.max_attempts is not None:
        assert policy.next_delay() is None
    policy.reset()
    assert (policy.attempt == 0 and not policy.exhausted) or policy.max_attempts == 0
    if policy.max_attempts != 0:
        first = policy.next_delay()
        assert first is not None and policy.initial <= first <= policy.initial + policy.jitter


def test_documented_defaults() -> None:
    """1 s doubling, capped at 30 s, jitter 0-1 s, unlimited attempts."""
    policy = BackoffPolicy(rand=lambda: 0.5)
    assert [policy.next_delay() for _ in range(7)] == [1.5, 2.5, 4.5, 8.5, 16.5, 30.5, 30.5]
    assert policy.max_attempts is None and not policy.exhausted
    assert BackoffPolicy(rand=lambda: 0.0).base(10_000) == 30.0  # no overflow


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": -1},
        {"factor": 0.5},
        {"cap": 0.5, "initial": 1.0},
        {"jitter": float("nan")},
        {"initial": float("inf")},
        {"max_attempts": -1},
        {"initial": "1"},
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, object]) -> None:
    """Out-of-range values raise BackoffError (a ValueError) naming the parameter."""
    with pytest.raises(BackoffError):
        BackoffPolicy(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(BackoffError):
        BackoffPolicy().base(0)


def test_copy_is_fresh() -> None:
    """copy() keeps the parameters and starts at attempt zero."""
    policy = BackoffPolicy(initial=0.1, max_attempts=2)
    policy.next_delay()
    clone = policy.copy()
    assert clone.attempt == 0 and clone.initial == 0.1 and clone.max_attempts == 2
