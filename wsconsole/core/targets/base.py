"""What every target driver shares: observers, the lifecycle, stats, waiting for a state.

Kept apart from the protocol code so the Socket.IO and SSE drivers stay small and report
transitions exactly as `ReconnectingClient` does (same Lifecycle, same next_attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientStats
from wsconsole.core.events import ErrorEvent, Event, Observer
from wsconsole.core.lifecycle import Lifecycle, State, Transition

log = logging.getLogger(__name__)


class TargetBase:
    """Observers, lifecycle, counters and the backoff wait shared by the target drivers."""

    def __init__(self, name: str, backoff: BackoffPolicy, observers: Iterable[Observer]) -> None:
        self.name = name
        self.lifecycle = Lifecycle(name)
        self.policy = backoff.copy()
        self.stats = ClientStats()
        self.latency: float | None = None
        self.next_attempt: tuple[float, float] | None = None  # (monotonic due, delay)
        self.final_error: str | None = None
        self._observers: list[Observer] = list(observers)
        self._state_waiters: list[tuple[State, asyncio.Future[Transition]]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()

    def subscribe(self, observer: Observer) -> None:
        """Receive every event from now on."""
        self._observers.append(observer)

    def unsubscribe(self, observer: Observer) -> None:
        """Stop receiving events."""
        with contextlib.suppress(ValueError):
            self._observers.remove(observer)

    def _emit(self, event: Event) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.exception("observer %r failed", observer)

    @property
    def state(self) -> State:
        """The current connection state."""
        return self.lifecycle.state

    def _move(self, state: State, **fields: Any) -> Transition:
        record = self.lifecycle.move(state, **fields)
        self.next_attempt = (
            (record.at + record.delay, record.delay)
            if state is State.RECONNECTING and record.delay is not None
            else None
        )
        self._emit(record)
        for wanted, future in list(self._state_waiters):
            if wanted is state and not future.done():
                future.set_result(record)
        return record

    async def wait_state(self, state: State, timeout: float | None = None) -> Transition | None:
        """Wait until the target enters `state` (now if already there); TimeoutError after."""
        if self.state is state:
            return self.lifecycle.history[-1] if self.lifecycle.history else None
        future: asyncio.Future[Transition] = asyncio.get_running_loop().create_future()
        waiter = (state, future)
        self._state_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._state_waiters.remove(waiter)

    async def wait_closed(self) -> None:
        """Wait for the driver to end (after stop(), or when the attempts are used up)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    def _start_task(self, coro: Any, label: str) -> None:
        self._stopping = False
        self.final_error = None
        self.policy.reset()
        self._task = asyncio.get_running_loop().create_task(coro, name=f"wsconsole-{label}")

    async def _retry(self, *, code: int | None = None, reason: str | None = None,
                     error: str | None = None) -> int:
        """Wait out the next backoff delay; returns the next attempt number or -1 to stop."""
        return await self._retry_with(None, code=code, reason=reason, error=error)

    async def _retry_with(self, override: float | None, *, code: int | None = None,
                          reason: str | None = None, error: str | None = None) -> int:
        """As _retry, but wait `override` seconds when given (SSE's `retry` field)."""
        delay = self.policy.next_delay()
        if delay is None:
            self.final_error = f"gave up after {self.policy.attempt} retries" + (
                f" ({error})" if error else ""
            )
            self._emit(ErrorEvent(self.name, "gave_up", self.final_error))
            return -1
        if override is not None:
            delay = override
        attempt = self.policy.attempt
        self._move(State.RECONNECTING, attempt=attempt, delay=delay, code=code, reason=reason,
                   error=error)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        return -1 if self._stopping else attempt

    def _finish(self, code: int | None = None, reason: str | None = None) -> None:
        """End in CLOSED whatever happened (stop, give-up, or a bug), visibly."""
        if self.state is not State.CLOSED:
            self._move(State.CLOSED, code=code if self._stopping else None,
                       reason=reason if self._stopping else None, error=self.final_error)
