"""What every node flavour shares with the supervisor: named tasks, stats pushes, events.

The WebSocket node (`node.Node`) and the Socket.IO node (`sionode.SioNode`) both subclass
`Supervised`; each provides `config` (a `NodeConfig`), `port`, `commands` (the control
commands it answers, by name), `snapshot()` and `drain_soon()`. The process interface is
the same for both: one `listening` JSON line on stdout, SIGTERM/SIGINT drain, and the
control channel (unreachable or lost: drain, so no node outlives its supervisor).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from wsconsole.core.tasks import Tasks
from wsconsole.harness.control import ControlClient

log = logging.getLogger(__name__)


CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class Supervised(abc.ABC):
    """Task ownership, the periodic stats push and event messages of a supervised node."""

    config: Any
    port: int
    commands: dict[str, CommandHandler]
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

    def _announce(self, **extra: Any) -> None:
        """Drain on SIGTERM/SIGINT, then print the one `listening` line the supervisor awaits."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.drain_soon)
        line = {
            "event": "listening",
            "id": self.config.id,
            "port": self.port,
            "pid": os.getpid(),
            **extra,
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()

    async def _connect_control(self) -> None:
        """With a control address: open the channel and push stats; unreachable: drain."""
        if self.config.control is None:
            return
        host, port = self.config.control
        self.control = ControlClient(self.config.id, self.config.control_key or "", self._command)
        try:
            await self.control.connect(host, port)
        except OSError as exc:
            log.error("control channel %s:%d unreachable: %s; draining", host, port, exc)
            self.drain_soon()
            return
        self._spawn(self._stats_loop(), f"{self.config.id}-stats")

    async def _command(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Answer one control command by name (an exception becomes an ok=false reply)."""
        handler = self.commands.get(str(message.get("cmd")))
        if handler is None:
            raise ValueError(f"unknown command {message.get('cmd')!r}")
        return await handler(message)

    async def _cmd_stats(self, message: dict[str, Any]) -> dict[str, Any]:
        """The "stats" command: the snapshot as the reply's fields."""
        reply = self.snapshot()
        del reply["type"]  # the reply's own "type" must stay "reply"
        return reply

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
