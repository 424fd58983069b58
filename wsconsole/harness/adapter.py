"""Redis fan-out between harness nodes: sequence numbers, history, idempotency, presence.

Everything that must survive a node lives in the broker (DESIGN.md). One Lua script does,
atomically: check the publish id's idempotency key (a re-send returns the original seq
and is not delivered again), INCR the room's sequence, append the ready-to-send frame to
the room's bounded history (LPUSH + LTRIM) and PUBLISH it. Subscribers therefore get frames
in sequence order, and `join since=N` reads exactly what was missed from the history.

Per node: one pub/sub connection subscribed to the rooms its clients joined, publishes
batched into pipelines (DESIGN.md "Performance notes"), and a monitor that pings the
broker. When the broker goes away the adapter's state is "down": publishes fail at once
with `BrokerUnavailable`, nothing is dropped silently. When it returns the adapter
reloads its scripts, re-subscribes, and catches every room up from the history since the
last sequence it saw. If the broker lost its state (a restarted server without
persistence: its "epoch" key changed) the node is told through `on_reset` and sequences
start again from 0.

The pieces around it: `brokerlink.py` holds the connection pool, the up/down state and
the named Lua scripts every broker call goes through; `presence.py` counts each user's
connections across the cluster (the per-user limit) over the same link.

Frames on the wire of a room channel are `b"<seq>\\n<frame>"`; `on_message` is called
in sequence order per room, without duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from wsconsole.errors import WsconsoleError
from wsconsole.harness.brokerlink import UP, BrokerLink, BrokerUnavailable
from wsconsole.harness.presence import Presence

log = logging.getLogger(__name__)

_PUBLISH = """
local prev = redis.call('GET', KEYS[3])
if prev then return {tonumber(prev), 1} end
local seq = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[3], seq, 'PX', ARGV[5])
local frame = ARGV[2] .. seq .. ARGV[3]
redis.call('LPUSH', KEYS[2], frame)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
redis.call('PUBLISH', ARGV[1], seq .. '\\n' .. frame)
return {seq, 0}
"""

# -> {current seq, status, first seq kept, frames newest first}; status 0 ok,
# 1 beyond the window, 2 `since` ahead of the room (the broker lost its state).
_SNAPSHOT = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
local n = redis.call('LLEN', KEYS[2])
local first = cur - n + 1
if since < 0 or since == cur then return {cur, 0, first, {}} end
if since > cur then return {cur, 2, first, {}} end
if since + 1 < first then return {cur, 1, first, {}} end
return {cur, 0, first, redis.call('LRANGE', KEYS[2], 0, cur - since - 1)}
"""


class RecoveryWindowExceeded(WsconsoleError, LookupError):
    """`since` is outside the room's kept history; `first` is the oldest seq still kept."""

    def __init__(self, room: str, since: int, first: int, seq: int) -> None:
        if since > seq:
            why = f"since={since} is ahead of the room (at {seq}): the broker lost its history"
        else:
            why = f"since={since} is before the oldest kept message {first}"
        super().__init__(f"{room}: {why}")
        self.room = room
        self.since = since
        self.first = first
        self.seq = seq


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The seq a publish got; `duplicate` if its id was seen before (no second delivery)."""

    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A room's current seq and the frames after `since`, oldest first."""

    seq: int
    frames: list[bytes]


@dataclass(slots=True)
class AdapterConfig:
    """Every limit and timing of the adapter; the defaults are the harness defaults."""

    history: int = 10_000  # messages kept per room for `join since=N`
    dedupe_ttl: float = 300.0  # seconds a publish id is remembered
    presence_ttl: float = 15.0  # a connection not refreshed for this long is gone
    presence_refresh: float = 5.0  # how often a node refreshes its connections
    check_interval: float = 0.5  # broker ping / reconnect attempt period
    socket_timeout: float = 2.0  # a broker that answers nothing this long is down
    batch: int = 256  # publishes per pipeline
    max_backlog: int = 50_000  # queued publishes beyond this are refused
    pool_size: int = 64  # broker connections per node (plus the pub/sub one)
    pool_wait: float = 30.0  # seconds a call may wait for a free broker connection
    prefix: str = "ws"


MessageCallback = Callable[[str, int, bytes], None]
GapCallback = Callable[[str, RecoveryWindowExceeded], None]


class RedisAdapter(BrokerLink):
    """Rooms, publishes and history over the broker; see the module docstring for the guarantees.

    `presence` counts each user's connections across the cluster over the same link.
    """

    def __init__(
        self,
        url: str,
        node_id: str,
        config: AdapterConfig | None = None,
        *,
        on_message: MessageCallback | None = None,
        on_state: Callable[[str], None] | None = None,
        on_reset: Callable[[list[str]], None] | None = None,
        on_gap: GapCallback | None = None,
    ) -> None:
        self.config = config or AdapterConfig()
        super().__init__(
            url,
            pool_size=self.config.pool_size,
            pool_wait=self.config.pool_wait,
            socket_timeout=self.config.socket_timeout,
            on_state=on_state,
        )
        self.node_id = node_id
        self.on_message = on_message or (lambda room, seq, frame: None)
        self.on_reset = on_reset or (lambda rooms: None)
        self.on_gap = on_gap or (lambda room, exc: None)
        self.scripts.update(publish=_PUBLISH, snapshot=_SNAPSHOT)
        self.presence = Presence(
            self,
            node_id,
            ttl=self.config.presence_ttl,
            refresh=self.config.presence_refresh,
            prefix=self.config.prefix,
        )
        self._epoch: bytes | None = None
        self._queue: deque[tuple[tuple[bytes | str, ...], asyncio.Future[PublishResult]]] = deque()
        self._wake = asyncio.Event()
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._want: set[str] = set()  # rooms the node wants
        self._live: set[str] = set()  # rooms confirmed subscribed on the current pubsub
        self._waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._last: dict[str, int] = {}  # last seq handed to on_message, per room
        self._catching: dict[str, list[tuple[int, bytes]]] = {}
        self._closed = False
        p = self.config.prefix
        self._node_channel = f"{p}:node:{node_id}".encode()
        self._room_channel_prefix = f"{p}:room:".encode()

    # -- keys -------------------------------------------------------------------------
    def _keys(self, room: str) -> tuple[str, str]:
        p = self.config.prefix
        return f"{p}:{{{room}}}:seq", f"{p}:{{{room}}}:hist"

    def channel(self, room: str) -> bytes:
        """The pub/sub channel of a room."""
        return self._room_channel_prefix + room.encode()

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Start the monitor, publish batcher and presence refresh; returns at once."""
        for coro, job in (
            (self._monitor(), "monitor"),
            (self._batcher(), "batch"),
            (self.presence.run(), "presence"),
        ):
            self._tasks.append(asyncio.create_task(coro, name=f"adapter-{job}-{self.node_id}"))

    async def close(self) -> None:
        """Release this node's presence entries if possible, stop every task, disconnect."""
        await self.presence.release_all(self.config.socket_timeout)
        self._closed = True
        self._fail_queue("the node is stopping")
        for task in [*self._tasks, self._reader]:
            if task is not None:
                task.cancel()
        for task in [*self._tasks, self._reader]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._drop_pubsub()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    def _went_down(self) -> None:
        self._live.clear()
        self._fail_queue("broker unavailable")
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()

    def _fail_queue(self, detail: str) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(BrokerUnavailable(detail))

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(BrokerUnavailable("broker unavailable"))
        self._waiters.clear()

    async def _monitor(self) -> None:
        while not self._closed:
            if self.state == UP:
                await asyncio.sleep(self.config.check_interval)
                try:
                    await self.redis.ping()
                except (RedisError, OSError, TimeoutError) as exc:
                    self.mark_down(exc)
                continue
            try:
                await self._connect_once()
            except (RedisError, OSError, TimeoutError, BrokerUnavailable) as exc:
                log.debug("broker still unavailable: %r", exc)
                await self._disconnect_all()
                await asyncio.sleep(self.config.check_interval)

    async def _disconnect_all(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        await self._drop_pubsub()
        with contextlib.suppress(Exception):
            await self.redis.connection_pool.disconnect()

    async def _connect_once(self) -> None:
        """Reconnect: scripts, epoch, pub/sub with every wanted room, then catch up."""
        await self._disconnect_all()
        async with asyncio.timeout(self.config.socket_timeout * 2):
            await self.redis.ping()
            await self.load_scripts()
            epoch_key = f"{self.config.prefix}:epoch"
            await self.redis.set(epoch_key, secrets.token_hex(8), nx=True)
            epoch = await self.redis.get(epoch_key)
        reset = self._epoch is not None and epoch != self._epoch
        self._epoch = epoch
        rooms = sorted(self._want)
        if reset:
            log.warning("the broker lost its state (new epoch); sequences restart")
            for room in rooms:
                self._last[room] = 0
        for room in rooms:
            self._catching.setdefault(room, [])
        self._pubsub = self.redis.pubsub()
        futures = [self._expect(self._node_channel)]
        futures += [self._expect(self.channel(room)) for room in rooms]
        await self._pubsub.subscribe(self._node_channel, *(self.channel(r) for r in rooms))
        self._reader = asyncio.create_task(
            self._read(self._pubsub), name=f"adapter-pubsub-{self.node_id}"
        )
        async with asyncio.timeout(self.config.socket_timeout * 2):
            await asyncio.gather(*futures)
        self._live.update(rooms)
        self._set_state(UP)
        if reset:
            try:
                self.on_reset(rooms)
            except Exception:
                log.exception("on_reset callback failed")
        await self.presence.refresh()
        await asyncio.gather(*(self._catch_up(room) for room in rooms))

    def _expect(self, channel: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, deque()).append(future)
        return future

    async def _read(self, pubsub: aioredis.client.PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = message["type"]
                channel = message["channel"]
                if kind == "message":
                    self._incoming(channel, message["data"])
                elif kind == "subscribe":
                    waiters = self._waiters.get(channel)
                    if waiters:
                        future = waiters.popleft()
                        if not future.done():
                            future.set_result(None)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError, TimeoutError, RuntimeError) as exc:
            if not self._closed:
                self.mark_down(exc)

    def _incoming(self, channel: bytes, data: bytes) -> None:
        if not channel.startswith(self._room_channel_prefix):
            return
        room = channel[len(self._room_channel_prefix) :].decode("utf-8", "replace")
        if room not in self._want:
            return  # still in flight after an unsubscribe
        seq_text, _, frame = data.partition(b"\n")
        try:
            seq = int(seq_text)
        except ValueError:
            log.warning("ignored a malformed frame on %r", channel)
            return
        buffer = self._catching.get(room)
        if buffer is not None:
            buffer.append((seq, frame))
            return
        last = self._last.get(room)
        if last is not None and seq <= last:
            return  # already handed over (from a snapshot)
        if last is not None and seq > last + 1:
            log.warning("room %s: gap after %d (got %d); catching up", room, last, seq)
            self._catching[room] = [(seq, frame)]
            task = asyncio.create_task(self._catch_up(room), name=f"adapter-catchup-{room}")
            self._tasks.append(task)
            task.add_done_callback(self._forget_task)
            return
        self._deliver(room, seq, frame)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    def _deliver(self, room: str, seq: int, frame: bytes) -> None:
        self._last[room] = seq
        try:
            self.on_message(room, seq, frame)
        except Exception:
            log.exception("on_message callback failed")

    async def _catch_up(self, room: str) -> None:
        """Hand over what the room got since the last seq seen, then the buffered live frames."""
        self._catching.setdefault(room, [])
        try:
            last = self._last.get(room)
            if last is not None:
                try:
                    snap = await self.snapshot(room, last)
                except RecoveryWindowExceeded as exc:
                    self._last[room] = exc.seq
                    self.on_gap(room, exc)
                else:
                    for offset, frame in enumerate(snap.frames):
                        self._deliver(room, last + 1 + offset, frame)
        except (BrokerUnavailable, RedisError, OSError, TimeoutError) as exc:
            log.warning("room %s: catch-up failed: %r", room, exc)
        finally:
            buffered = self._catching.pop(room, [])
        for seq, frame in buffered:
            last = self._last.get(room)
            if last is None or seq > last:
                self._deliver(room, seq, frame)

    # -- rooms ------------------------------------------------------------------------
    async def subscribe(self, room: str) -> None:
        """Make sure this node receives the room's frames; returns once subscribed."""
        self._want.add(room)
        if room in self._live:
            return
        if self.state != UP or self._pubsub is None:
            raise BrokerUnavailable("broker unavailable")
        channel = self.channel(room)
        future = self._expect(channel)
        try:
            await self._pubsub.subscribe(channel)
            async with asyncio.timeout(self.config.socket_timeout * 2):
                await future
        except (RedisError, OSError, TimeoutError) as exc:
            self.mark_down(exc)
            raise BrokerUnavailable("broker unavailable") from None
        if room in self._want:
            self._live.add(room)

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving a room (no local member left)."""
        self._want.discard(room)
        self._live.discard(room)
        self._last.pop(room, None)
        if self.state == UP and self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(self.channel(room))
            except (RedisError, OSError, TimeoutError) as exc:
                self.mark_down(exc)

    def note_seq(self, room: str, seq: int) -> None:
        """Tell the adapter a room's frames up to `seq` are accounted for (after a join)."""
        if self._last.get(room) is None:
            self._last[room] = seq

    # -- publish ----------------------------------------------------------------------
    def publish_nowait(
        self, room: str, pub_id: str, prefix: bytes, suffix: bytes
    ) -> asyncio.Future[PublishResult]:
        """Queue a publish; the future gets its PublishResult or BrokerUnavailable.

        The stored and delivered frame is `prefix + str(seq) + suffix`. Publishes are sent
        in the order queued, so one connection's messages keep their order.
        """
        future: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        if self.state != UP:
            future.set_exception(BrokerUnavailable("broker unavailable"))
            return future
        if len(self._queue) >= self.config.max_backlog:
            future.set_exception(BrokerUnavailable("broker backlog full"))
            return future
        seq_key, hist_key = self._keys(room)
        id_key = f"{self.config.prefix}:{{{room}}}:id:{pub_id}"
        args = (
            seq_key, hist_key, id_key, self.channel(room), prefix, suffix,
            str(self.config.history), str(int(self.config.dedupe_ttl * 1000)),
        )  # fmt: skip
        self._queue.append((args, future))
        self._wake.set()
        return future

    async def publish(self, room: str, pub_id: str, prefix: bytes, suffix: bytes) -> PublishResult:
        """Publish and wait until the broker accepted it (see publish_nowait)."""
        return await self.publish_nowait(room, pub_id, prefix, suffix)

    async def _batcher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [
                    self._queue.popleft() for _ in range(min(self.config.batch, len(self._queue)))
                ]
                await self._run_batch(batch)

    async def _run_batch(
        self, batch: list[tuple[tuple[bytes | str, ...], asyncio.Future[PublishResult]]]
    ) -> None:
        live = [(args, fut) for args, fut in batch if not fut.done()]
        for attempt in range(2):
            if self.state != UP:
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(BrokerUnavailable("broker unavailable"))
                return
            pipe = self.redis.pipeline(transaction=False)
            for args, _ in live:
                pipe.execute_command("EVALSHA", self.sha["publish"], 3, *args)
            try:
                results = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError, TimeoutError) as exc:
                self.mark_down(exc)
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(BrokerUnavailable("broker unavailable"))
                return
            retry = []
            for (args, fut), result in zip(live, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, NoScriptError) and attempt == 0:
                    retry.append((args, fut))
                elif isinstance(result, Exception):
                    fut.set_exception(BrokerUnavailable(f"broker refused the publish: {result}"))
                else:
                    fut.set_result(PublishResult(int(result[0]), bool(result[1])))
            if not retry:
                return
            try:
                self.sha["publish"] = await self.redis.script_load(_PUBLISH)
            except (RedisError, OSError, TimeoutError) as exc:
                self.mark_down(exc)
            live = retry

    # -- history ----------------------------------------------------------------------
    async def snapshot(self, room: str, since: int | None = None) -> Snapshot:
        """The room's current seq and, with `since`, every frame after it, oldest first.

        Atomic in the broker, so nothing falls between the seq and the frames. Raises
        RecoveryWindowExceeded when `since` is older than the kept history (or ahead of it).
        """
        seq_key, hist_key = self._keys(room)
        cur, status, first, frames = await self.call(  # type: ignore[misc]
            "snapshot", (seq_key, hist_key), (-1 if since is None else since,)
        )
        if status:
            raise RecoveryWindowExceeded(room, int(since or 0), int(first), int(cur))
        return Snapshot(int(cur), list(reversed(frames)))
