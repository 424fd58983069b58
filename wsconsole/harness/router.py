"""The supervisor's end of the control channel: commands out, pushed lines routed in.

Each member (node, balancer) connects to `ControlServer` with the per-cluster key and then
pushes two kinds of lines: `stats` snapshots, handed to `on_stats(peer, message)`, and
`event`s, re-emitted to the cluster's subscribers as `node_event` / `balancer_event`.
Commands go the other way (`request`); a command that cannot be delivered or answered is a
`ClusterError` for the caller, in the same words the control channel gave.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from wsconsole.harness.clusterconfig import BALANCER, LOOPBACK, ClusterError
from wsconsole.harness.control import ControlError, ControlServer
from wsconsole.harness.events import EventHub

log = logging.getLogger(__name__)


class ControlRouter:
    """Listens for members, sends them commands, routes what they push."""

    def __init__(self, hub: EventHub, on_stats: Callable[[str, dict[str, Any]], None]) -> None:
        self.hub = hub
        self.on_stats = on_stats
        self.key = secrets.token_urlsafe(32)
        self._server = ControlServer(self.key, self._on_message, self._on_disconnect)

    @property
    def address(self) -> str:
        """host:port the members connect to (their `--control` argument)."""
        return f"{LOOPBACK}:{self._server.port}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        await self._server.start(LOOPBACK, 0)

    async def close(self) -> None:
        """Stop listening and drop every member's connection."""
        await self._server.close()

    async def wait_connected(self, peer: str, timeout: float) -> None:
        """Wait until `peer` said hello on the channel; TimeoutError after `timeout` s."""
        await self._server.wait_connected(peer, timeout)

    async def request(
        self, peer: str, cmd: str, timeout: float = 5.0, **fields: Any
    ) -> dict[str, Any]:
        """Send a command and await the reply; ClusterError if it fails or is refused."""
        try:
            return await self._server.request(peer, cmd, timeout=timeout, **fields)
        except ControlError as exc:
            raise ClusterError(str(exc)) from None

    def _on_message(self, peer: str, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "stats":
            self.on_stats(peer, message)
        elif kind == "event":
            fields = {k: v for k, v in message.items() if k not in ("type", "event")}
            source = "balancer_event" if peer == BALANCER else "node_event"
            self.hub.emit({"event": source, "id": peer, **fields})

    def _on_disconnect(self, peer: str) -> None:
        log.debug("control: %s disconnected", peer)
