"""The supervisor's broker: start it (or check an external one), kill, restart, watch, stop.

`harness/broker.py` runs the Redis-protocol server itself, with blocking calls; here they run
in a worker thread so the supervisor's loop (the window's, under qasync) never blocks. A
broker that dies without being asked is noticed by a watch loop and reported as
`{"event": "broker", "state": "down", "reason": "exited", "expected": false}`.

With `--broker-cluster N` the broker is a Valkey Cluster of our own, kept by a ShardKeeper
(shardkeeper.py): its servers are killed, restarted and failed over one by one, not as a
whole, so `kill` and `restart` here refuse and say so.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from wsconsole.harness.broker import Broker, BrokerError
from wsconsole.harness.clusterconfig import ClusterConfig, ClusterError
from wsconsole.harness.events import EventHub
from wsconsole.harness.shardkeeper import ShardKeeper

WATCH_INTERVAL = 0.25  # how often an owned broker's process is checked


@dataclass
class BrokerInfo:
    """The Redis-protocol broker: its URL, PID (None when external), state up/down (or
    "none": a stack whose nodes share no broker), and whether a restart keeps its state
    (our own broker with its append-only file)."""

    url: str | None = None
    pid: int | None = None
    state: str = "down"
    external: bool = False
    persistent: bool = False
    shards: int = 0  # a cluster of ours: how many shards

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "url": self.url, "pid": self.pid, "state": self.state,
            "external": self.external, "persistent": self.persistent, "shards": self.shards,
        }  # fmt: skip


class BrokerKeeper:
    """Owns the cluster's `Broker` and keeps `info` (what the views show) up to date."""

    def __init__(self, config: ClusterConfig, hub: EventHub,
                 shards: ShardKeeper | None = None) -> None:
        self.config = config
        self.hub = hub
        self.wanted = config.broker_wanted  # False: a stack whose nodes share no broker
        self.shards = shards
        self.info = BrokerInfo(
            external=config.redis_url is not None,
            persistent=config.redis_url is None and not config.broker_ephemeral,
            state="down" if self.wanted else "none",
            shards=config.broker_cluster,
        )
        self._broker: Broker | None = None
        self._busy = False  # a kill or restart is under way: the watch loop keeps out

    @property
    def owned_pid(self) -> int | None:
        """The PID of the server we started, while it is up."""
        if self._broker is None or self.info.state != "up":
            return None
        return self.info.pid

    def _emit(self, **extra: Any) -> None:
        self.hub.emit({"event": "broker", **self.info.as_dict(), **extra})

    async def start(self) -> None:
        """Start our own server (or cluster), or check that the external one answers
        (nothing when none is wanted)."""
        if not self.wanted:
            return
        if self.shards is not None:
            self.info.url = await self.shards.start()
            self.info.state = "up"
            self._emit()
            return
        try:
            broker = Broker(
                self.config.redis_url,
                data_dir=self.config.data_dir,
                persist=not self.config.broker_ephemeral,
            )
            self._broker = broker
            await asyncio.to_thread(broker.start)
        except BrokerError as exc:
            raise ClusterError(f"broker: {exc}") from None
        self._up(broker)

    def _up(self, broker: Broker, **extra: Any) -> None:
        self.info.url = broker.url
        self.info.pid = None if self.info.external else broker.pid
        self.info.state = "up"
        self._emit(**extra)

    def _owned(self) -> Broker:
        if not self.wanted:
            raise ClusterError("this stack has no broker ([broker] kind = \"none\")")
        if self.shards is not None:
            raise ClusterError("the broker is a cluster: kill, restart or fail over one of its "
                               "servers instead (shard kill s1a, shard failover s1)")
        if self._broker is None or self.info.external:
            raise ClusterError("the broker is external (--redis): the harness does not own it")
        return self._broker

    async def kill(self) -> None:
        """SIGKILL the broker; nodes see it down, publishes fail with broker_unavailable."""
        broker = self._owned()
        self._busy = True
        try:
            try:
                await asyncio.to_thread(broker.kill)
            except BrokerError as exc:
                raise ClusterError(f"broker: {exc}") from None
            self.info.state = "down"
            self._emit(reason="killed")
        finally:
            self._busy = False

    async def restart(self, fresh: bool = False) -> None:
        """Start the broker again on the same port (`fresh`: without its state); the nodes
        reconnect by themselves."""
        broker = self._owned()
        self._busy = True
        try:
            try:
                await asyncio.to_thread(broker.restart, fresh)
            except BrokerError as exc:
                self.info.state = "down"
                raise ClusterError(f"broker: {exc}") from None
            self._up(broker, fresh=fresh)
        finally:
            self._busy = False

    async def watch(self) -> None:
        """Forever: notice an owned broker that died without being asked to (a cluster's
        servers are watched by its keeper)."""
        if self.shards is not None:
            await self.shards.watch()
            return
        if self._broker is None or self.info.external:
            return
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self._busy or self.info.state != "up" or self._broker.alive:
                continue
            self.info.state = "down"
            self._emit(reason="exited", expected=False)

    async def stop(self) -> None:
        """Stop our own server or cluster (an external one is left alone)."""
        if self.shards is not None:
            await self.shards.stop()
            self.info.state = "down"
            self._emit(reason="stop")
            return
        if self._broker is None or self.info.external:
            return
        await asyncio.to_thread(self._broker.stop)
        if self.info.state != "down":
            self.info.state = "down"
            self._emit(reason="stop")
