"""The one connection driver every target runs on: WebSocket, Socket.IO and SSE.

`ConnectionDriver` owns what does not depend on the protocol: observers, the lifecycle
and its transitions, counters, state waits, `start()` / `stop()`, and the reconnect loop
(connect, run the open connection, decide, wait out the delay, again). A target supplies
three hooks:

- `_attempt()`: connect and run one connection until it ends; calls `_opened()` once it
  is open and returns the `Failure` saying how it ended (raises when the connect fails);
- `_classify(exc)`: a connect exception as a `Failure`;
- `_goodbye(code, reason)` / `_release()`: close an open connection politely on stop(),
  drop whatever the last attempt left behind when the loop ends.

What happens after a failure is decided by a `ReconnectPlanner` (reconnect.py: stable-only
backoff resets, classified refusals, one retry with a fresh token, Retry-After); its reason
goes on the RECONNECTING transition (`decision`) or, when it stops, into `final_error`, an
ErrorEvent ("gave_up" or "stopped") and the CLOSED transition. So every target reports
transitions, `next_attempt` and counters the same way, and the views treat every kind of
target alike.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.events import ErrorEvent, Event, FrameBatch, Observer
from wsconsole.core.lifecycle import Lifecycle, State, Transition
from wsconsole.core.reconnect import Failure, ReconnectPlanner
from wsconsole.core.tasks import spawn

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


class ConnectionDriver(abc.ABC):
    """Lifecycle, reconnect loop, observers and counters shared by every target."""

    label = "driver"  # names the driver's task: wsconsole-<label>-<name>
    closing_reason = ""  # the CLOSING / CLOSED reason when stop() is given none

    def __init__(self, name: str, backoff: BackoffPolicy, observers: Iterable[Observer],
                 grace: float = 3.0, stable_after: float = 5.0,
                 refreshable: bool = False) -> None:
        self.name = name
        self.lifecycle = Lifecycle(name)
        self.policy = backoff.copy()
        self.planner = ReconnectPlanner(self.policy, stable_after, refreshable)
        self.stats = ClientStats()
        self.latency: float | None = None
        self.next_attempt: tuple[float, float] | None = None  # (monotonic due, delay)
        self.final_error: str | None = None
        self.server_retry: float | None = None  # a delay the server asked for (SSE `retry`)
        self._grace = grace  # seconds stop() lets the loop end by itself before cancelling
        self._observers: tuple[Observer, ...] = tuple(observers)  # replaced, never mutated
        self._state_waiters: list[tuple[State, asyncio.Future[Transition]]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_args: tuple[int, str] = (1000, "")
        self._was_open = False  # the current attempt reached OPEN
        self._wake = asyncio.Event()

    # -- observers and state

    def subscribe(self, observer: Observer) -> None:
        """Receive every event from now on."""
        self._observers = (*self._observers, observer)

    def unsubscribe(self, observer: Observer) -> None:
        """Stop receiving events."""
        observers = list(self._observers)
        with contextlib.suppress(ValueError):
            observers.remove(observer)
        self._observers = tuple(observers)

    def _emit(self, event: Event) -> None:
        # a tuple replaced on (un)subscribe: an observer changing them while an event is
        # being emitted does not disturb this loop, and no copy is made per event
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                log.exception("observer %r failed", observer)

    def _emit_frames(self, batch: FrameBatch) -> None:
        """Hand a batch of received frames to every observer: whole to those that take
        batches (`take_frames`), as records to the others, in observer order."""
        for observer in self._observers:
            take = getattr(observer, "take_frames", None)
            if take is None:
                for record in batch.records():
                    try:
                        observer(record)
                    except Exception:
                        log.exception("observer %r failed", observer)
                continue
            try:
                take(batch)
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
        """Wait for the driver to end (after stop(), or when it gave up or was refused)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    # -- start / stop

    async def start(self) -> None:
        """Start connecting in a named background task (returns at once)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self.final_error = None
        self.planner.start()
        self._task = spawn(self._run(), f"wsconsole-{self.label}-{self.name}")

    async def stop(self, code: int = 1000, reason: str = "") -> None:
        """Close politely with `code` if open, stop reconnecting, and wait until CLOSED."""
        self._stopping = True
        self._stop_args = (code, reason)
        self._wake.set()
        task = self._task
        if task is None or task.done():
            return
        if self.state is State.OPEN:
            self._move(State.CLOSING, code=code, reason=reason or self.closing_reason)
            if not await self._goodbye(code, reason):
                task.cancel()
        else:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            async with asyncio.timeout(self._grace):
                await asyncio.shield(task)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _goodbye(self, code: int, reason: str) -> bool:
        """Start closing the open connection; True if the loop will end by itself."""
        return False

    async def _release(self) -> None:  # noqa: B027 - a hook: nothing to release by default
        """Drop whatever the last attempt left behind (the loop has ended)."""

    # -- the loop

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug here must still end in CLOSED, visibly
            log.exception("%s %s failed", self.label, self.name)
            self._emit(ErrorEvent(self.name, "protocol", f"internal error: {exc!r}"))
        finally:
            await self._release()
            if self.state is not State.CLOSED:
                code, reason = self._stop_args
                self._move(State.CLOSED, code=code if self._stopping else None,
                           reason=(reason or self.closing_reason) if self._stopping else None,
                           error=self.final_error)

    async def _loop(self) -> None:
        attempt = 0
        while not self._stopping:
            self._move(State.CONNECTING, attempt=attempt)
            self._was_open = False
            try:
                failure = await self._attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = await self._classify(exc)
            if self._stopping:
                return
            self._emit(ErrorEvent(self.name, failure.kind, failure.detail))
            if self._was_open:
                self.stats.reconnects += 1
            attempt = await self._after(failure)
            if attempt < 0:
                return

    @abc.abstractmethod
    async def _attempt(self) -> Failure:
        """Connect, call `_opened()`, run the connection; return how it ended."""

    @abc.abstractmethod
    async def _classify(self, exc: BaseException) -> Failure:
        """A failed connect (or a broken connection) as a Failure."""

    def _opened(self, **fields: Any) -> None:
        """The attempt's connection is open: move to OPEN with `fields`."""
        record = self._move(State.OPEN, **fields)
        self._was_open = True
        self.planner.opened(record.at)

    async def _after(self, failure: Failure) -> int:
        """Decide after a failure: the next attempt number after the wait, or -1 to stop."""
        decision = self.planner.failed(failure, time.monotonic(), self.server_retry)
        if not decision.retry:
            self.final_error = decision.why
            if not failure.final:  # a final failure was reported as such already
                self._emit(ErrorEvent(self.name, decision.kind, decision.why))
            return -1
        self._move(State.RECONNECTING, attempt=decision.attempt, delay=decision.delay,
                   code=failure.code, reason=failure.reason, error=failure.error,
                   decision=decision.why)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(decision.delay):
                await self._wake.wait()
        return -1 if self._stopping else decision.attempt
