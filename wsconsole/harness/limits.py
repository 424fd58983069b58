"""Rate limits as plain objects fed timestamps: the token bucket and a connection's message rate.

One `TokenBucket` serves both ends of the harness: a node limits each connection's
messages with `take` (a message over the rate is refused), the balancer's bandwidth fault
paces bytes with `reserve` (a write over the rate waits). Time is always given, never
read, so both test without a loop or a clock.
"""

from __future__ import annotations

import enum


class TokenBucket:
    """`rate` tokens per second, at most `burst` (at least 1) held; time comes from the caller."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False (nothing spent) when the bucket is empty."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def reserve(self, amount: int, now: float) -> float:
        """Take `amount` tokens (into debt if need be); returns seconds to wait before sending."""
        self._refill(now)
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Verdict(enum.Enum):
    """What to do with one incoming message under the rate limit."""

    OK = "ok"  # process it
    LIMITED = "limited"  # refuse it (`error rate_limited`), keep the connection
    ABUSE = "abuse"  # too many refused in a row: close the connection (1008)


class MessageRate:
    """One connection's message limit: `rate` msg/s (burst `rate`), closing after `abuse`
    refusals in a row (default: the burst, at least 10)."""

    __slots__ = ("abuse", "bucket", "strikes")

    def __init__(self, rate: float, now: float, abuse: int | None = None) -> None:
        self.bucket = TokenBucket(rate, rate, now)
        self.abuse = abuse or max(10, int(rate))
        self.strikes = 0

    @property
    def retry_after(self) -> float:
        """Seconds until the next message would be taken (after a refusal by `check`)."""
        bucket = self.bucket
        return round(max(0.0, 1.0 - bucket.tokens) / bucket.rate, 3)

    def check(self, now: float) -> Verdict:
        """The verdict on a message arriving at `now`."""
        if self.bucket.take(now):
            self.strikes = 0
            return Verdict.OK
        self.strikes += 1
        return Verdict.ABUSE if self.strikes >= self.abuse else Verdict.LIMITED
