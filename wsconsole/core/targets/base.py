"""What the Socket.IO and SSE drivers share beyond `core.driver`: the backoff wait, the end.

Kept apart from the protocol code so those drivers stay small and report transitions
exactly as `ReconnectingClient` does (same ConnectionDriver base).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging

from wsconsole.core.driver import ConnectionDriver
from wsconsole.core.events import ErrorEvent
from wsconsole.core.lifecycle import State

log = logging.getLogger(__name__)


class TargetBase(ConnectionDriver, abc.ABC):
    """The backoff wait and the ending shared by the Socket.IO and SSE drivers."""

    label = "target"  # names the driver's task: wsconsole-<label>-<name>

    async def start(self) -> None:
        """Start connecting in a named background task (returns at once)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self.final_error = None
        self.policy.reset()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"wsconsole-{self.label}-{self.name}"
        )

    @abc.abstractmethod
    async def _run(self) -> None:
        """The driver's connect / read / reconnect loop, ending in CLOSED."""

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
