"""The rate limits as pure objects fed timestamps: the token bucket and a connection's rate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsconsole.harness.limits import MessageRate, TokenBucket, Verdict


def test_take_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=10, now=0.0)
    assert [bucket.take(0.0) for _ in range(11)] == [True] * 10 + [False]
    assert bucket.take(0.1) and not bucket.take(0.1), "one token per 1/rate seconds"
    assert sum(bucket.take(100.0) for _ in range(50)) == 10, "never more than the burst"


def test_reserve_holds_the_rate() -> None:
    bucket = TokenBucket(rate=1000, burst=100, now=0.0)
    now = 0.0
    sent = 0
    while now < 10.0:  # a greedy sender: always waits exactly as told
        now += bucket.reserve(50, now)
        sent += 50
    assert 9_900 <= sent <= 10_200  # 1000 B/s for 10 s, plus at most the burst
    idle = TokenBucket(rate=1000, burst=100, now=0.0)
    assert idle.reserve(100, 60.0) == 0.0  # tokens never exceed the burst...
    assert idle.reserve(100, 60.0) == pytest.approx(0.1)  # ...so the next 100 B wait 0.1 s


def test_a_burst_below_one_still_lets_one_through() -> None:
    bucket = TokenBucket(rate=0.5, burst=0.5, now=0.0)
    assert bucket.take(0.0) and not bucket.take(1.0) and bucket.take(2.0)


@given(
    rate=st.floats(min_value=0.5, max_value=1000),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_take_never_exceeds_burst_plus_rate_times_elapsed(rate: float, gaps: list[float]) -> None:
    bucket = TokenBucket(rate=rate, burst=rate, now=0.0)
    now = 0.0
    taken = 0
    for gap in gaps:
        now += gap
        taken += bucket.take(now)
    assert taken <= max(1.0, rate) + rate * now + 1e-6


def test_message_rate_refuses_over_the_rate_and_closes_after_abuse() -> None:
    rate = MessageRate(rate=10, now=0.0)  # burst 10, abuse after max(10, 10) refusals in a row
    assert [rate.check(0.0) for _ in range(10)] == [Verdict.OK] * 10
    assert [rate.check(0.0) for _ in range(9)] == [Verdict.LIMITED] * 9
    assert rate.check(0.0) is Verdict.ABUSE


def test_an_accepted_message_clears_the_strikes() -> None:
    rate = MessageRate(rate=10, now=0.0, abuse=3)
    for _ in range(10):
        rate.check(0.0)
    assert [rate.check(0.0), rate.check(0.0)] == [Verdict.LIMITED] * 2
    assert rate.check(0.1) is Verdict.OK, "a token came back after 1/rate s"
    assert [rate.check(0.1), rate.check(0.1)] == [Verdict.LIMITED] * 2, "counting from 0 again"
    assert rate.check(0.1) is Verdict.ABUSE
