"""One node's link to the broker: a connection pool, its up/down state, Lua scripts by name.

The pieces that talk to the broker (`adapter.RedisAdapter`: rooms, publishes, history;
`presence.Presence`: per-user connection counts) share one link, so they share one
answer to "is the broker there?": when any call fails on the connection, the link goes
"down" and every piece refuses at once with `BrokerUnavailable` instead of waiting for
timeouts one by one. Coming back "up" is the adapter's job (its monitor reconnects and
re-subscribes, then calls `load_scripts`).

Scripts are registered by name with their body; a call runs `EVALSHA` and loads the
script again if the broker forgot it (a restarted server), so callers never see
`NoScriptError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wsconsole.errors import WsconsoleError

log = logging.getLogger(__name__)

UP = "up"
DOWN = "down"


class BrokerUnavailable(WsconsoleError, RuntimeError):
    """The broker cannot take the request now (down, or the publish backlog is full)."""


class BrokerBusy(BrokerUnavailable):
    """The broker is up but the node's publish backlog to it is full: refused at once, so
    a publisher learns of the overload before waiting in a queue that only grows."""


class BrokerLink:
    """A blocking connection pool to the broker with an up/down state and named scripts."""

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
        # A blocking pool: a burst of handshakes (each claims presence and joins) waits for
        # a free broker connection instead of failing with "Too many connections" (redis-py's
        # plain pool caps at 100 and raises), which would mark a healthy broker down.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=pool_wait,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.redis = aioredis.Redis.from_pool(pool)
        self.scripts: dict[str, str] = {}  # name -> Lua body, loaded on every (re)connect
        self.sha: dict[str, str] = {}  # name -> SHA1 the broker knows it by
        self._up = asyncio.Event()

    @staticmethod
    def check_url(url: str) -> None:
        """Raise ValueError if redis-py cannot parse `url` (checked before starting a node)."""
        from redis.asyncio.connection import parse_url

        parse_url(url)

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
        """A call failed on the connection: the broker is down until the link reconnects."""
        if self.state == DOWN:
            return
        log.warning("broker unavailable: %s", reason)
        self._set_state(DOWN)
        self._went_down()

    def _went_down(self) -> None:
        """What a subclass drops when the broker goes away (here: nothing)."""

    async def load_scripts(self) -> None:
        """Load every registered script (after connecting: the broker may be a new one)."""
        for name, body in self.scripts.items():
            self.sha[name] = await self.redis.script_load(body)

    async def call(self, name: str, keys: Iterable[str], args: Iterable[object]) -> object:
        """Run the registered script `name`; BrokerUnavailable when the broker is not there."""
        if self.state != UP:
            raise BrokerUnavailable("broker unavailable")
        keys = list(keys)
        try:
            try:
                return await self.redis.evalsha(self.sha[name], len(keys), *keys, *args)
            except NoScriptError:
                self.sha[name] = await self.redis.script_load(self.scripts[name])
                return await self.redis.evalsha(self.sha[name], len(keys), *keys, *args)
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            self.mark_down(exc)
            raise BrokerUnavailable("broker unavailable") from None
