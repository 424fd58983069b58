"""What every connection driver shares: observers, the lifecycle, counters, state waits.

The WebSocket client (`client.ReconnectingClient`) and the Socket.IO and SSE targets
(`targets/`) all build on this, so each reports transitions, `next_attempt` and counters the
same way and the views can treat every kind of target alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.events import Event, Observer
from wsconsole.core.lifecycle import Lifecycle, State, Transition

log = logging.getLogger(__name__)


@dataclass
class ClientStats:
    """Counters of one client; `queued` is the current offline queue length."""

    sent: int = 0
    received: int = 0
    acked: int = 0
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    queued: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON-ready counters."""
        return dict(self.__dict__)


class ConnectionDriver:
    """Observers, lifecycle, backoff policy, counters and waits shared by every driver."""

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
        """Wait until the driver enters `state` (now if already there); TimeoutError after."""
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

    async def _end_task(self, task: asyncio.Task[None], grace: float) -> None:
        """Give the driver's task `grace` seconds to end by itself, then cancel it."""
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.shield(task)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
