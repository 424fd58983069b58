"""What every node flavour shares with the supervisor: named tasks, stats pushes, events.

The WebSocket node (`node.Node`) and the Socket.IO node (`sionode.SioNode`) both subclass
`Supervised`; each provides `config` (with `id` and `stats_interval`), `snapshot()` and
`drain_soon()`, and sets `control` once its control channel is open.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from wsconsole.core.tasks import Tasks
from wsconsole.harness.control import ControlClient

log = logging.getLogger(__name__)


class Supervised(abc.ABC):
    """Task ownership, the periodic stats push and event messages of a supervised node."""

    config: Any
    control: ControlClient | None

    def __init__(self) -> None:
        self.control = None
        self._stop = asyncio.Event()
        self._tasks = Tasks(prefix="")  # a failure is logged, never dropped

    @abc.abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The stats message pushed to the supervisor."""

    @abc.abstractmethod
    def drain_soon(self) -> None:
        """Start draining: refuse new clients, close the others with 1001, then exit."""

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as a named task this node keeps a strong reference to."""
        return self._tasks.spawn(coro, name)

    async def _stats_loop(self) -> None:
        """Push a snapshot every stats_interval; a lost channel means the supervisor is gone."""
        while not self._stop.is_set():
            if self.control is None or not self.control.connected:
                log.error("control channel lost: the supervisor is gone; draining")
                self.drain_soon()
                return
            await self.control.send(self.snapshot())
            await asyncio.sleep(self.config.stats_interval)

    def _event(self, kind: str, **fields: Any) -> None:
        """Tell the supervisor something happened (logged either way)."""
        log.info("event %s %s", kind, fields or "")
        if self.control is not None and self.control.connected:
            message = {"type": "event", "kind": kind, "node": self.config.id, "t": time.time()}
            self._spawn(self.control.send({**message, **fields}), f"{self.config.id}-{kind}")
