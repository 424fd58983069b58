"""The balancer's side of its control channel: the supervisor's commands, and stats pushes.

A `ControlClient(peer="balancer")` (key in env `WSCONSOLE_CONTROL_KEY`) pushes every
`STATS_INTERVAL` s, and at once when a backend's health flips, `{"type": "stats", "t",
"sticky", "backends": {id: {"healthy", "connections", "total", "bytes_up", "bytes_down",
"address"}}, "faults": [...], "rejected": {status: n}}`, and answers the commands `stats`;
`backend_add {id, host, port}`; `backend_remove {id}` (its open connections are left to end
by themselves); `fault {target, kind, ...params}`; `fault_clear {target, kind?}`;
`sticky {mode}`. An exception becomes an ok=false reply. Losing the channel stops the
balancer: it never outlives its supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from wsconsole.harness.control import ControlClient
from wsconsole.harness.netfaults import ALL
from wsconsole.harness.routing import STICKY_MODES

if TYPE_CHECKING:
    from wsconsole.harness.balancer import Balancer

log = logging.getLogger("wsconsole.balancer")

STATS_INTERVAL = 0.25
_ENVELOPE = ("type", "rid", "cmd", "target", "kind")  # fields that are not a fault's params

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class BalancerControl:
    """Commands from the supervisor, applied to a balancer; its stats pushed back."""

    def __init__(self, balancer: Balancer, key: str) -> None:
        self.balancer = balancer
        self.client = ControlClient("balancer", key, self.handle)
        self.commands: dict[str, Handler] = {
            "stats": self._stats,
            "backend_add": self._backend_add,
            "backend_remove": self._backend_remove,
            "fault": self._fault,
            "fault_clear": self._fault_clear,
            "sticky": self._sticky,
        }

    async def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one control command."""
        handler = self.commands.get(str(message.get("cmd")))
        if handler is None:
            raise ValueError(f"unknown command {message.get('cmd')!r}")
        return await handler(message)

    async def push_stats(self) -> None:
        """Push stats every STATS_INTERVAL (or when asked) until the channel is lost."""
        balancer = self.balancer
        while self.client.connected:
            balancer.push_now.clear()
            await self.client.send(balancer.stats())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(balancer.push_now.wait(), STATS_INTERVAL)
        log.warning("control channel lost: stopping")
        balancer.stopped.set()

    async def _stats(self, message: dict[str, Any]) -> dict[str, Any]:
        snapshot = self.balancer.stats()
        del snapshot["type"]  # the reply's own "type" must stay "reply"
        return snapshot

    async def _backend_add(self, message: dict[str, Any]) -> dict[str, Any]:
        backend = await self.balancer.add_backend(
            str(message.get("id", "")),
            str(message.get("host", "127.0.0.1")),
            message.get("port"),  # type: ignore[arg-type]
            health_path=message.get("health_path", "/healthz"),  # type: ignore[arg-type]
            health_any=bool(message.get("health_any", False)),
        )
        return {"backend": backend.id, "healthy": backend.healthy}

    async def _backend_remove(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.balancer.remove_backend(str(message.get("id", "")))
        return {}

    async def _fault(self, message: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in message.items() if k not in _ENVELOPE}
        self.balancer.apply_fault(str(message.get("target", ALL)), message.get("kind"), params)
        return {"faults": self.balancer.board.listing()}

    async def _fault_clear(self, message: dict[str, Any]) -> dict[str, Any]:
        removed = self.balancer.clear_fault(str(message.get("target", ALL)), message.get("kind"))
        return {"removed": removed, "faults": self.balancer.board.listing()}

    async def _sticky(self, message: dict[str, Any]) -> dict[str, Any]:
        mode = message.get("mode")
        if mode not in STICKY_MODES:
            raise ValueError(f"sticky mode must be one of {', '.join(STICKY_MODES)}")
        self.balancer.sticky = str(mode)
        return {"sticky": self.balancer.sticky}
