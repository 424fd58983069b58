"""Exponential backoff policy for reconnection: a plain object, no I/O, no clock.

delay(n) for the n-th retry (1-based) is ``min(cap, initial * factor ** (n - 1))`` plus a
uniform jitter in ``[0, jitter]``. The driver asks `next_delay()` after each failure and
calls `reset()` once a connection proved stable (reconnect.py: open for `stable_after`
seconds, so a server that accepts and then drops still sees the delays grow);
`next_delay()` returns None once `max_attempts` retries were used (None means unlimited).
The random source is injectable for tests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from wsconsole.errors import WsconsoleError


class BackoffError(WsconsoleError, ValueError):
    """A backoff parameter out of range."""


@dataclass
class BackoffPolicy:
    """1 s doubling, capped at 30 s, plus 0-1 s jitter, unlimited attempts by default."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 1.0
    max_attempts: int | None = None
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)
    attempt: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        for name in ("initial", "factor", "cap", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise BackoffError(f"backoff {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise BackoffError(f"backoff {name} must be a finite number >= 0, got {value}")
        if self.factor < 1:
            raise BackoffError(f"backoff factor must be >= 1, got {self.factor}")
        if self.cap < self.initial:
            raise BackoffError(f"backoff cap ({self.cap}) is below initial ({self.initial})")
        if self.max_attempts is not None and (
            not isinstance(self.max_attempts, int) or self.max_attempts < 0
        ):
            raise BackoffError(f"max attempts must be an integer >= 0, got {self.max_attempts}")

    def base(self, attempt: int) -> float:
        """The delay before jitter for retry number `attempt` (1-based), capped."""
        if attempt < 1:
            raise BackoffError(f"attempt numbers start at 1, got {attempt}")
        try:
            raw = self.initial * self.factor ** (attempt - 1)
        except OverflowError:
            return self.cap
        return min(self.cap, raw)

    def delay(self, attempt: int) -> float:
        """The delay for retry `attempt` with a fresh jitter draw."""
        return self.base(attempt) + self.jitter * self.rand()

    @property
    def exhausted(self) -> bool:
        """True when every allowed retry was used."""
        return self.max_attempts is not None and self.attempt >= self.max_attempts

    def next_delay(self) -> float | None:
        """Count one more retry and return its delay, or None if the attempts are used up."""
        if self.exhausted:
            return None
        self.attempt += 1
        return self.delay(self.attempt)

    def reset(self) -> None:
        """Start over after a stable connection: the next failure waits `initial` again."""
        self.attempt = 0

    def copy(self) -> BackoffPolicy:
        """A fresh policy with the same parameters (attempt counter at zero)."""
        return BackoffPolicy(
            initial=self.initial,
            factor=self.factor,
            cap=self.cap,
            jitter=self.jitter,
            max_attempts=self.max_attempts,
            rand=self.rand,
        )

    def __iter__(self) -> BackoffPolicy:
        return self

    def __next__(self) -> float:
        delay = self.next_delay()
        if delay is None:
            raise StopIteration
        return delay
