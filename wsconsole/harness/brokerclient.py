"""A node's connections to the broker, one server or a cluster, behind one small interface.

The adapter, the presence counts and the publish batches talk to the broker through a
`BrokerClient`; it knows which kind of broker is there (brokeraddr.py: several seeds, or
`cluster_enabled:1`) and hides the difference where it can:

- `redis`: the client for keyed commands and scripts: redis-py's `Redis` on a blocking pool
  for one server (a burst of handshakes waits for a free connection instead of failing), its
  `RedisCluster` for a cluster (slot map, MOVED/ASK redirects, reconnects);
- `publish_command`: PUBLISH on one server, SPUBLISH (sharded pub/sub) on a cluster, so a
  room's frames travel only to the shard owning its slot;
- `subscriber(...)`: subscriber.py's one connection, or one per shard;
- `owner(key)` and `node_client(owner)`: on a cluster, the primary serving a key's slot and a
  plain client on it, for what must run on one connection of one node (a pipeline of
  publishes followed by `WAIT`, which counts the replicas that have the writes made on that
  very connection); `refresh()` re-reads the slot map after a MOVED, a failover or a lost
  node;
- `ping()`: is the broker there at all? One server answers PING; a cluster is there while
  any primary does (one shard down is not the whole broker down).
"""

from __future__ import annotations

import contextlib
import logging
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from wsconsole.harness.brokeraddr import (
    BrokerAddress,
    BrokerUnavailable,
    cluster_client,
    is_cluster,
)
from wsconsole.harness.subscriber import (
    LostHandler,
    MessageHandler,
    ServerSubscriber,
    ShardSubscriber,
    Subscriber,
)

log = logging.getLogger(__name__)


class Owner(NamedTuple):
    """The node serving a slot: its cluster name (host:port), host and port."""

    name: str
    host: str
    port: int


class BrokerClient:
    """One server or a cluster; see the module docstring. `open()` before use."""

    def __init__(self, url: str, *, pool_size: int, pool_wait: float,
                 socket_timeout: float) -> None:
        self.address = BrokerAddress.parse(url)
        self.pool_size = pool_size
        self.pool_wait = pool_wait
        self.socket_timeout = socket_timeout
        self.cluster: bool | None = None  # known after the first open()
        self._redis: aioredis.Redis | RedisCluster | None = None
        self._nodes: dict[str, aioredis.Redis] = {}

    @property
    def redis(self) -> aioredis.Redis | RedisCluster:
        """The client for keyed commands and scripts; BrokerUnavailable before `open()`."""
        if self._redis is None:
            raise BrokerUnavailable("broker unavailable")
        return self._redis

    @property
    def publish_command(self) -> str:
        """PUBLISH (one server) or SPUBLISH (a cluster: sharded pub/sub)."""
        return "SPUBLISH" if self.cluster else "PUBLISH"

    def _options(self) -> dict[str, object]:
        return {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_timeout,
            "health_check_interval": 0,
        }

    async def open(self) -> None:
        """Find out what the broker is (once) and make the client; OSError/RedisError when
        it cannot be asked."""
        if self._redis is not None:
            return
        if self.cluster is None:
            self.cluster = await is_cluster(self.address, self.socket_timeout)
        if self.cluster:
            client = cluster_client(
                self.address, max_connections=self.pool_size,
                retry=Retry(NoBackoff(), 1), **self._options(),
            )  # fmt: skip
            await client.initialize()
            self._redis = client
            return
        pool = aioredis.BlockingConnectionPool.from_url(
            self.address.seed_url(), max_connections=self.pool_size, timeout=self.pool_wait,
            retry=Retry(NoBackoff(), 0), **self._options(),
        )  # fmt: skip
        self._redis = aioredis.Redis.from_pool(pool)

    def subscriber(self, on_message: MessageHandler, on_lost: LostHandler) -> Subscriber:
        """The subscriptions object for this kind of broker (after `open()`)."""
        redis = self.redis
        timeout = self.socket_timeout * 2
        if isinstance(redis, RedisCluster):
            return ShardSubscriber(redis, timeout, on_message, on_lost)
        return ServerSubscriber(redis, timeout, on_message, on_lost)

    async def ping(self) -> None:
        """Raise (RedisError/OSError) unless the broker answers: the server, or on a cluster
        at least one primary."""
        redis = self.redis
        if not isinstance(redis, RedisCluster):
            await redis.ping()
            return
        errors: list[str] = []
        for node in redis.get_primaries():
            try:
                await self.node_client(Owner(node.name, node.host, int(node.port))).ping()
                return
            except (RedisError, OSError) as exc:
                errors.append(f"{node.name}: {exc!r}")
        raise RedisConnectionError("no primary of the cluster answers: " + "; ".join(errors))

    def owner(self, key: str | bytes) -> Owner:
        """The primary serving `key`'s slot, per the current slot map (cluster only)."""
        redis = self.redis
        assert isinstance(redis, RedisCluster), "owner() is for a cluster"
        node = redis.nodes_manager.get_node_from_slot(redis.keyslot(key))
        return Owner(node.name, node.host, int(node.port))

    def node_client(self, owner: Owner) -> aioredis.Redis:
        """A plain client on one node (cached; a pipeline runs on one of its connections)."""
        client = self._nodes.get(owner.name)
        if client is None:
            client = self._nodes[owner.name] = aioredis.Redis(
                host=owner.host, port=owner.port, max_connections=self.pool_size,
                retry=Retry(NoBackoff(), 0), **self._options(),
            )  # fmt: skip
        return client

    async def refresh(self) -> None:
        """Re-read the cluster's slot map (after MOVED, a failover, a lost node); a no-op on
        one server. RedisError/OSError when no node answers."""
        redis = self._redis
        if isinstance(redis, RedisCluster):
            await redis.nodes_manager.initialize()

    async def disconnect(self) -> None:
        """Drop every connection; the next use reconnects (a cluster re-reads its slots)."""
        nodes, self._nodes = list(self._nodes.values()), {}
        for client in nodes:
            with contextlib.suppress(Exception):
                await client.aclose()
        redis = self._redis
        if isinstance(redis, RedisCluster):
            self._redis = None
            with contextlib.suppress(Exception):
                await redis.aclose()
        elif redis is not None:
            with contextlib.suppress(Exception):
                await redis.connection_pool.disconnect()

    async def aclose(self) -> None:
        """Close everything for good."""
        await self.disconnect()
        redis, self._redis = self._redis, None
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()


__all__ = ["BrokerClient", "Owner"]
