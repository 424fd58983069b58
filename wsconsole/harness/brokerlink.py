"""One node's link to the broker: its connections, its up/down state, Lua scripts by name.

The pieces that talk to the broker (`adapter.RedisAdapter`: rooms, publishes, history;
`presence.Presence`: per-user connection counts) share one link, so they share one
answer to "is the broker there?": when any call fails on the connection, the link goes
"down" and every piece refuses at once with `BrokerUnavailable` instead of waiting for
timeouts one by one. Coming back "up" is the adapter's job (its monitor reconnects and
re-subscribes, then calls `load_scripts`).

The broker may be one server or a Redis/Valkey Cluster (brokerclient.py knows which). On a
cluster one shard failing is not the broker failing: a call that fails there raises
`BrokerUnavailable` for that call only and asks for the slot map to be read again
(`trouble`), while the link stays up as long as any primary answers.

Scripts are registered by name with their body; a call runs `EVALSHA` and loads the
script again if the broker forgot it (a restarted server, a promoted replica), so callers
never see `NoScriptError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterError, NoScriptError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsconsole.harness.brokeraddr import BrokerAddress, BrokerUnavailable
from wsconsole.harness.brokerclient import BrokerClient

log = logging.getLogger(__name__)

UP = "up"
DOWN = "down"

# What a call on a cluster raises while a shard is failing over or a slot moving.
CALL_FAILURES = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError, ClusterError,
                 RedisClusterException)


class BrokerBusy(BrokerUnavailable):
    """The broker is up but the node's publish backlog to it is full: refused at once, so
    a publisher learns of the overload before waiting in a queue that only grows."""


class BrokerLink:
    """The broker's client (one server or a cluster), an up/down state, named scripts."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int,
        pool_wait: float,
        socket_timeout: float,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.on_state = on_state or (lambda state: None)
        self.state = DOWN
        self.client = BrokerClient(
            url, pool_size=pool_size, pool_wait=pool_wait, socket_timeout=socket_timeout
        )
        self.scripts: dict[str, str] = {}  # name -> Lua body, loaded on every (re)connect
        self.sha: dict[str, str] = {}  # name -> SHA1 the broker knows it by
        self._up = asyncio.Event()

    @property
    def redis(self) -> aioredis.Redis | RedisCluster:
        """The client for keyed commands and scripts (redis-py `Redis` or `RedisCluster`)."""
        return self.client.redis

    @property
    def clustered(self) -> bool:
        """True once the broker is known to be a cluster."""
        return bool(self.client.cluster)

    @staticmethod
    def check_url(url: str) -> None:
        """Raise ValueError for a URL that names no broker (checked before starting a node)."""
        BrokerAddress.parse(url)

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the broker is up; False after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state == UP:
            self._up.set()
        else:
            self._up.clear()
        log.info("broker %s", state)
        try:
            self.on_state(state)
        except Exception:
            log.exception("on_state callback failed")

    def mark_down(self, reason: object) -> None:
        """A call failed on the connection: one server is down until the link reconnects;
        on a cluster only a shard may be, so the slot map is read again instead."""
        if self.clustered:
            self.trouble(reason)
            return
        self.lose(reason)

    def lose(self, reason: object) -> None:
        """The broker is gone (no server, no primary answers) until the link reconnects."""
        if self.state == DOWN:
            return
        log.warning("broker unavailable: %s", reason)
        self._set_state(DOWN)
        self._went_down()

    def _went_down(self) -> None:
        """What a subclass drops when the broker goes away (here: nothing)."""

    def trouble(self, reason: object) -> None:
        """A cluster call failed: what a subclass does about it (here: log it)."""
        log.info("broker call failed on a shard: %s", reason)

    async def load_scripts(self) -> None:
        """Load every registered script (after connecting: the broker may be a new one)."""
        for name, body in self.scripts.items():
            self.sha[name] = await self.client.redis.script_load(body)

    async def call(self, name: str, keys: Iterable[str], args: Iterable[object]) -> object:
        """Run the registered script `name`; BrokerUnavailable when the broker is not there."""
        if self.state != UP:
            raise BrokerUnavailable("broker unavailable")
        keys = list(keys)
        try:
            try:
                return await self.client.redis.evalsha(self.sha[name], len(keys), *keys, *args)
            except NoScriptError:
                self.sha[name] = await self.client.redis.script_load(self.scripts[name])
                return await self.client.redis.evalsha(self.sha[name], len(keys), *keys, *args)
        except CALL_FAILURES as exc:
            self.mark_down(exc)
            raise BrokerUnavailable(f"broker unavailable: {exc}") from None
