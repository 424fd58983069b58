"""A node's room subscriptions on the broker: one pub/sub connection, or one per shard.

The adapter asks for channels and gets their messages through `on_message(channel, data)`;
how they travel is this module's business:

- `ServerSubscriber`, one server: a single pub/sub connection with SUBSCRIBE, as the harness
  always had. Losing it loses every channel at once: `on_lost(None, exc)`, and the adapter
  treats the broker as down until it reconnects.
- `ShardSubscriber`, a Redis/Valkey Cluster: sharded pub/sub (SSUBSCRIBE, Redis 7+/Valkey),
  so a room's messages travel only to the shard owning its slot, on one connection per
  shard primary (a channel is subscribed on the node that serves its slot, found through
  redis-py's cluster slot map). When one shard's connection breaks (its primary died), is
  closed because a subscribe on it failed (no confirmation in time), or the server ends a
  subscription itself (its slot moved away: an unasked `sunsubscribe`), only
  those channels are lost: `on_lost(channels, exc)`; the adapter holds those rooms,
  subscribes them again where the slot map now says, and catches them up from the history,
  while the other shards keep flowing.

redis-py's own `ClusterPubSub` re-routes shard channels by itself after a topology change,
silently; the adapter must know when a room's subscription was interrupted, since whatever
was published meanwhile has to be read back from the history, so the connections are kept
here, one plain redis-py `PubSub` per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from wsconsole.core.tasks import spawn
from wsconsole.harness.brokeraddr import BrokerUnavailable

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes, bytes], None]
LostHandler = Callable[[list[bytes] | None, object], None]  # None: every channel


class _Connection:
    """One pub/sub connection: its reader task and the confirmations awaited on it."""

    def __init__(
        self,
        pubsub: aioredis.client.PubSub,
        name: str,
        sharded: bool,
        on_message: MessageHandler,
        on_broken: Callable[[_Connection, object], None],
        on_dropped: Callable[[bytes], None],
    ) -> None:
        self.pubsub = pubsub
        self.name = name
        self.sharded = sharded
        self.channels: set[bytes] = set()
        self._on_message = on_message
        self._on_broken = on_broken
        self._on_dropped = on_dropped
        self._waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._leaving: set[bytes] = set()  # unsubscribes we asked for
        self._task: asyncio.Task[None] | None = None  # reading starts with the first channel
        # One command at a time: redis-py's PubSub takes its connection on the first command,
        # and two joins racing there would each take one, the reader reading only the last.
        self._sending = asyncio.Lock()

    def _expect(self, channel: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, deque()).append(future)
        return future

    async def subscribe(self, channels: list[bytes], timeout: float) -> None:
        """Subscribe and wait for every confirmation (a sharded subscribe is one channel per
        command: several slots in one SSUBSCRIBE are refused)."""
        if not channels:
            return
        futures = [self._expect(channel) for channel in channels]
        self.channels.update(channels)
        try:
            async with self._sending:
                if self.sharded:
                    for channel in channels:
                        await self.pubsub.ssubscribe(channel)
                else:
                    await self.pubsub.subscribe(*channels)
                if self._task is None:
                    self._task = spawn(self._read(), f"pubsub-{self.name}")
        except BaseException:
            for future in futures:
                future.cancel()  # nobody will wait for these confirmations
            raise
        async with asyncio.timeout(timeout):
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def unsubscribe(self, channel: bytes) -> None:
        """Leave one channel (no confirmation awaited)."""
        self.channels.discard(channel)
        self._leaving.add(channel)
        async with self._sending:
            if self.sharded:
                await self.pubsub.sunsubscribe(channel)
            else:
                await self.pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        try:
            while True:
                message = await self.pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = message["type"]
                channel = message["channel"]
                if kind in ("message", "smessage"):
                    self._on_message(channel, message["data"])
                elif kind in ("subscribe", "ssubscribe"):
                    waiters = self._waiters.get(channel)
                    if waiters:
                        future = waiters.popleft()
                        if not future.done():
                            future.set_result(None)
                elif kind == "sunsubscribe":
                    if channel in self._leaving:
                        self._leaving.discard(channel)
                    elif channel in self.channels:  # the server's doing: its slot moved away
                        self.channels.discard(channel)
                        self._on_dropped(channel)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, TimeoutError, RuntimeError) as exc:
            self._fail(BrokerUnavailable(f"{self.name}: pub/sub lost"))
            self._on_broken(self, exc)

    def _fail(self, exc: BaseException) -> None:
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(exc)
        self._waiters.clear()

    async def close(self) -> None:
        """Stop reading and close the connection (awaited confirmations fail)."""
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._fail(BrokerUnavailable("broker unavailable"))
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()


class ServerSubscriber:
    """Every channel on one pub/sub connection to one server."""

    def __init__(self, redis: aioredis.Redis, timeout: float, on_message: MessageHandler,
                 on_lost: LostHandler) -> None:
        self.redis = redis
        self.timeout = timeout
        self.on_message = on_message
        self.on_lost = on_lost
        self._conn: _Connection | None = None

    async def open(self, channels: Iterable[bytes]) -> None:
        """A fresh connection subscribed to `channels` (confirmed before returning)."""
        await self.close()
        self._conn = _Connection(self.redis.pubsub(), "server", False, self.on_message,
                                 self._broken, self._dropped)
        await self._conn.subscribe(list(channels), self.timeout)

    def _broken(self, conn: _Connection, exc: object) -> None:
        if conn is self._conn:
            self.on_lost(None, exc)

    def _dropped(self, channel: bytes) -> None:
        self.on_lost([channel], "unsubscribed by the server")

    async def add(self, channel: bytes) -> None:
        """Subscribe one more channel; BrokerUnavailable when there is no connection."""
        if self._conn is None:
            raise BrokerUnavailable("broker unavailable")
        try:
            await self._conn.subscribe([channel], self.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"subscribe failed: {exc!r}") from None

    async def remove(self, channel: bytes) -> None:
        """Leave one channel (best effort: a lost connection has left it anyway)."""
        if self._conn is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self._conn.unsubscribe(channel)

    async def close(self) -> None:
        """Close the connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


class ShardSubscriber:
    """Sharded subscriptions, one connection per shard primary; see the module docstring."""

    def __init__(self, cluster: RedisCluster, timeout: float, on_message: MessageHandler,
                 on_lost: LostHandler) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self.on_message = on_message
        self.on_lost = on_lost
        self._conns: dict[str, _Connection] = {}  # node name -> its connection

    def _owner(self, channel: bytes) -> tuple[str, str, int]:
        node = self.cluster.nodes_manager.get_node_from_slot(self.cluster.keyslot(channel))
        return node.name, node.host, int(node.port)

    def _connection(self, name: str, host: str, port: int) -> _Connection:
        conn = self._conns.get(name)
        if conn is None:
            client = aioredis.Redis(
                host=host, port=port, socket_timeout=None, socket_connect_timeout=self.timeout,
                socket_keepalive=True, retry=None,
            )  # fmt: skip
            conn = self._conns[name] = _Connection(
                client.pubsub(), name, True, self.on_message, self._broken, self._dropped
            )
        return conn

    async def open(self, channels: Iterable[bytes]) -> None:
        """Subscribe `channels` where the slot map says (fresh connections)."""
        await self.close()
        await self.add_many(list(channels))

    async def add_many(self, channels: list[bytes]) -> None:
        """Subscribe channels on their owners' connections; BrokerUnavailable naming the
        first shard that could not take them (the others are subscribed)."""
        groups: dict[tuple[str, str, int], list[bytes]] = {}
        for channel in channels:
            groups.setdefault(self._owner(channel), []).append(channel)
        failures: list[str] = []
        for (name, host, port), group in groups.items():
            conn = self._connection(name, host, port)
            try:
                await conn.subscribe(group, self.timeout)
            except (RedisError, OSError, TimeoutError, BrokerUnavailable) as exc:
                failures.append(f"{name}: {exc!r}")
                await self._forget(conn, group, exc)
        if failures:
            raise BrokerUnavailable("subscribe failed on " + "; ".join(failures))

    async def add(self, channel: bytes) -> None:
        """Subscribe one channel on its owner's connection."""
        await self.add_many([channel])

    async def remove(self, channel: bytes) -> None:
        """Leave one channel wherever it is subscribed."""
        for conn in list(self._conns.values()):
            if channel in conn.channels:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await conn.unsubscribe(channel)

    def _broken(self, conn: _Connection, exc: object) -> None:
        if self._conns.get(conn.name) is not conn:
            return
        del self._conns[conn.name]
        lost = sorted(conn.channels)
        log.warning("shard connection %s lost (%r): %d channel(s) to move", conn.name, exc,
                    len(lost))
        spawn(conn.close(), f"pubsub-close-{conn.name}")
        self.on_lost(lost, exc)

    def _dropped(self, channel: bytes) -> None:
        self.on_lost([channel], "the shard gave the channel's slot away")

    async def _forget(self, conn: _Connection, failed: list[bytes], exc: object) -> None:
        """Close a connection a subscribe failed on: the `failed` channels are the caller's
        to retry; the others it carried are lost like a broken connection's (on_lost)."""
        current = self._conns.get(conn.name) is conn
        if current:
            del self._conns[conn.name]
        await conn.close()
        if not current:
            return  # already broken and reported, or forgotten by a racing subscribe
        lost = sorted(conn.channels.difference(failed))
        if lost:
            log.warning("shard connection %s closed after a failed subscribe (%r): %d "
                        "channel(s) to move", conn.name, exc, len(lost))
            self.on_lost(lost, exc)

    async def close(self) -> None:
        """Close every shard connection."""
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.close()


Subscriber = ServerSubscriber | ShardSubscriber
