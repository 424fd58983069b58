"""The swarm on the user's own app: the same phases as swarm.py, clients that follow the
stack's recipe (appclient.py), accounting without sequence numbers (appaccounting.py).

Each client joins the room `<room_prefix>-<index % rooms>` and publishes its share of the
total rate, round-robin, while connected. The settle phase waits until every owed delivery
arrived (or `settle` seconds passed): on an app with no recovery, the messages a client
missed while it was reconnecting never come, and the summary says how many, where and when.
"""

from __future__ import annotations

import asyncio
import secrets

from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.tasks import Tasks
from wsconsole.swarm.appaccounting import AppAccounting
from wsconsole.swarm.appclient import AppClient
from wsconsole.swarm.config import SwarmConfigError
from wsconsole.swarm.swarm import Stats, Swarm


class AppSwarm(Swarm):
    """N simulated users of the app in `config.stack`; `await run()` returns the summary."""

    accounting: AppAccounting  # type: ignore[assignment]

    def _prepare(self, started: float) -> None:
        cfg = self.config
        stack = cfg.stack
        assert stack is not None and stack.client is not None
        self.accounting = AppAccounting(started, cfg.join_grace, stack.client.receive_own)
        self._client_tasks = Tasks("swarm-clients")
        run = secrets.token_hex(3)  # ids of this run only: another swarm's are foreign
        for index in range(cfg.clients):
            name = cfg.client_name(index)
            client = AppClient(
                stack, cfg.url, name, index + 1, cfg.user(index), cfg.room(index),
                self.accounting, run, self._client_tasks, cfg.backoff.copy(),
                ping_interval=cfg.ping_interval, ping_timeout=cfg.ping_timeout,
                connect_timeout=cfg.connect_timeout, local_addr=cfg.local_addr(index),
                clock=self.clock,
            )  # fmt: skip
            client.driver.subscribe(self.fleet.observer(name))  # the window's fleet lanes
            self.clients.append(client)
            self.accounting.client_added(name)

    async def _wait_all_joined(self, limit: float) -> None:
        """Every client joined, and its join had time to take effect on the server."""
        await super()._wait_all_joined(limit)
        if self.config.join_grace > 0 and not self._stop.is_set():
            await asyncio.sleep(self.config.join_grace)

    def set_pongs(self, share: float, policy: PongPolicy) -> int:
        """Refused: the heartbeat lab's pong shaping is for the harness protocol's clients."""
        raise SwarmConfigError("pong shaping runs on the harness protocol's clients, not on "
                               "a stack's recipe clients")

    def fault(self, label: str) -> None:
        """A fault happens now (a scenario step): from here on, a new window of figures."""
        self.accounting.begin_window(label, self.clock())

    async def _publish_one(self, index: int, pad: str) -> None:
        await self.clients[index].publish()

    def _settled(self) -> bool:
        return self.accounting.settled()

    def _snapshot(self) -> Stats:
        return self.accounting.snapshot(self.clock())

    async def _stop_clients(self) -> None:
        await super()._stop_clients()
        await self._client_tasks.cancel_all()
