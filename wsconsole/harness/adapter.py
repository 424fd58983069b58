"""Redis fan-out between harness nodes: epochs, sequence numbers, history, idempotency.

Everything that must survive a node lives in the broker (DESIGN.md). A room's state there is
its sequence counter, its bounded history and its *epoch*, the identity of that sequence
space: a random id created together with the room's state by whichever script touches the
room first, so a broker that lost its state (restarted without persistence, an external
Redis wiped or failed over empty) starts the room under a new epoch, never silently under
the old numbers. One Lua script does, atomically: create the epoch if the room has none,
check the publish id's idempotency key (a re-send returns the original epoch and seq and is
not delivered again), INCR the sequence, append the ready-to-send frame to the history
(LPUSH + LTRIM) and PUBLISH it. Another reads a room's epoch, seq and the frames after
`since`; given the epoch `since` belongs to and a different current one, it answers with a
reset and the new epoch's history from its start.

Per node: one pub/sub connection subscribed to the rooms its clients joined, publishes
batched into pipelines (DESIGN.md "Performance notes"), and a monitor that pings the
broker. When the broker goes away the adapter's state is "down": publishes fail at once
with `BrokerUnavailable`, nothing is dropped silently. When it returns the adapter
reloads its scripts, re-subscribes, and catches every room up from the history since the
(epoch, seq) it last handed over; a room whose epoch changed is reported through
`on_reset(room, epoch, seq)` before its new frames, a gap the history no longer covers
through `on_gap`. `streams.RoomStreams` keeps the per-room order.

The pieces around it: `brokerlink.py` holds the connection pool, the up/down state and
the named Lua scripts every broker call goes through; `presence.py` counts each user's
connections across the cluster (the per-user limit) over the same link.

Frames on the wire of a room channel are `b"<epoch> <seq>\\n<frame>"`; `on_message` is
called in (epoch, seq) order per room, without duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from wsconsole.errors import WsconsoleError
from wsconsole.harness.brokerlink import UP, BrokerBusy, BrokerLink, BrokerUnavailable
from wsconsole.harness.presence import Presence
from wsconsole.harness.streams import CATCH_UP, DELIVER, RoomStreams

log = logging.getLogger(__name__)

# Both scripts start the same way: a room without an epoch gets one (the caller's candidate)
# and starts empty, so an epoch always names exactly one sequence space.
_EPOCH = """
local epoch = redis.call('GET', KEYS[EPOCH])
if not epoch then
  epoch = ARGV[CANDIDATE]
  redis.call('SET', KEYS[EPOCH], epoch)
  redis.call('DEL', KEYS[1], KEYS[2])
end
"""

# KEYS: seq, history, publish id, epoch. ARGV: channel, frame parts (before the epoch,
# between epoch and seq, after the seq), history size, id ttl ms, candidate epoch.
# -> {seq, 1 if the id was seen before, epoch}
_PUBLISH = _EPOCH.replace("EPOCH", "4").replace("CANDIDATE", "7") + """
local prev = redis.call('GET', KEYS[3])
if prev then
  local space = string.find(prev, ' ', 1, true)
  if space and string.sub(prev, 1, space - 1) == epoch then
    return {tonumber(string.sub(prev, space + 1)), 1, epoch}
  end
end
local seq = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[3], epoch .. ' ' .. seq, 'PX', ARGV[6])
local frame = ARGV[2] .. epoch .. ARGV[3] .. seq .. ARGV[4]
redis.call('LPUSH', KEYS[2], frame)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
redis.call('PUBLISH', ARGV[1], epoch .. ' ' .. seq .. '\\n' .. frame)
return {seq, 0, epoch}
"""

# KEYS: seq, history, epoch. ARGV: since (-1: none), the epoch `since` belongs to ('': not
# given, read in the current one), candidate epoch.
# -> {current seq, status, first seq kept, frames newest first, epoch, reset}; status 0 ok,
# 1 beyond the window, 2 `since` ahead of the room; reset 1 when the epoch given is not the
# room's (then `since` counts from the new epoch's start). A `since` ahead of the room in its
# own epoch means the broker lost acknowledged writes (an external server restored from an
# old copy): the numbers after its seq would be handed out twice, so the room starts again
# under a new epoch, which every member is told.
_SNAPSHOT = _EPOCH.replace("EPOCH", "3").replace("CANDIDATE", "3") + """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local since = tonumber(ARGV[1])
local reset = 0
if ARGV[2] ~= '' and ARGV[2] == epoch and since > cur then
  epoch = ARGV[3]
  redis.call('SET', KEYS[3], epoch)
  redis.call('DEL', KEYS[1], KEYS[2])
  cur = 0
end
if ARGV[2] ~= '' and ARGV[2] ~= epoch then
  reset = 1
  since = 0
end
local n = redis.call('LLEN', KEYS[2])
local first = cur - n + 1
if since < 0 or since == cur then return {cur, 0, first, {}, epoch, reset} end
if since > cur then return {cur, 2, first, {}, epoch, reset} end
if since + 1 < first then return {cur, 1, first, {}, epoch, reset} end
return {cur, 0, first, redis.call('LRANGE', KEYS[2], 0, cur - since - 1), epoch, reset}
"""


def new_epoch() -> str:
    """A candidate epoch id (used only if the room has none): 12 random hex digits."""
    return secrets.token_hex(6)


class RecoveryWindowExceeded(WsconsoleError, LookupError):
    """`since` is outside the room's kept history; `first` is the oldest seq still kept.

    `epoch` is the room's current epoch; `reset` is True when `since` belonged to another
    one (then the new epoch's history from its start was beyond the window).
    """

    def __init__(
        self, room: str, since: int, first: int, seq: int, epoch: str = "", reset: bool = False
    ) -> None:
        if reset:
            why = (f"the room's sequence restarted (epoch {epoch}) and its first {first - 1} "
                   "messages are beyond the history")  # fmt: skip
        elif since > seq:
            why = f"since={since} is ahead of the room (at {seq}): the broker lost its history"
        else:
            why = f"since={since} is before the oldest kept message {first}"
        super().__init__(f"{room}: {why}")
        self.room = room
        self.since = since
        self.first = first
        self.seq = seq
        self.epoch = epoch
        self.reset = reset


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The (epoch, seq) a publish got; `duplicate` if its id was seen before (no second
    delivery)."""

    seq: int
    duplicate: bool
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A room's epoch, current seq and the frames after `since`, oldest first; `reset`
    when `since` belonged to another epoch (the frames then start at the new one's seq 1)."""

    seq: int
    frames: list[bytes]
    epoch: str = ""
    reset: bool = False


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
    max_backlog: int = 2_048  # queued publishes beyond this get broker_busy (~0.1-0.2 s)
    pool_size: int = 64  # broker connections per node (plus the pub/sub one)
    pool_wait: float = 30.0  # seconds a call may wait for a free broker connection
    prefix: str = "ws"


MessageCallback = Callable[[str, str, int, bytes], None]  # room, epoch, seq, frame
ResetCallback = Callable[[str, str, int], None]  # room, new epoch, its seq (replay follows)
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
        on_reset: ResetCallback | None = None,
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
        self.on_message = on_message or (lambda room, epoch, seq, frame: None)
        self.on_reset = on_reset or (lambda room, epoch, seq: None)
        self.on_gap = on_gap or (lambda room, exc: None)
        self.scripts.update(publish=_PUBLISH, snapshot=_SNAPSHOT)
        self.presence = Presence(
            self,
            node_id,
            ttl=self.config.presence_ttl,
            refresh=self.config.presence_refresh,
            prefix=self.config.prefix,
        )
        self._queue: deque[tuple[tuple[bytes | str, ...], asyncio.Future[PublishResult]]] = deque()
        self._wake = asyncio.Event()
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._want: set[str] = set()  # rooms the node wants
        self._live: set[str] = set()  # rooms confirmed subscribed on the current pubsub
        self._waiters: dict[bytes, deque[asyncio.Future[None]]] = {}
        self.streams = RoomStreams()  # what was handed over of each room, in order
        self._catchups: dict[str, asyncio.Task[None]] = {}  # the latest catch-up per room
        self._closed = False
        p = self.config.prefix
        self._node_channel = f"{p}:node:{node_id}".encode()
        self._room_channel_prefix = f"{p}:room:".encode()

    # -- keys -------------------------------------------------------------------------
    def _keys(self, room: str) -> tuple[str, str, str]:
        p = self.config.prefix
        return f"{p}:{{{room}}}:seq", f"{p}:{{{room}}}:hist", f"{p}:{{{room}}}:epoch"

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
        every = [*self._tasks, *self._catchups.values(), self._reader]
        for task in every:
            if task is not None:
                task.cancel()
        for task in every:
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
        """Reconnect: scripts, pub/sub with every wanted room, then catch every room up."""
        await self._disconnect_all()
        async with asyncio.timeout(self.config.socket_timeout * 2):
            await self.redis.ping()
            await self.load_scripts()
        rooms = sorted(self._want)
        for room in rooms:
            self.streams.hold(room)  # frames wait for the catch-up below
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
        await self.presence.refresh()
        await asyncio.gather(*(self.refresh(room) for room in rooms))

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
        head, _, frame = data.partition(b"\n")
        epoch, _, seq_text = head.partition(b" ")
        try:
            seq = int(seq_text)
        except ValueError:
            log.warning("ignored a malformed frame on %r", channel)
            return
        decision = self.streams.incoming(room, epoch.decode(), seq, frame)
        if decision == DELIVER:
            self._hand_over(room, epoch.decode(), seq, frame)
        elif decision == CATCH_UP:
            log.info("room %s: frame %s/%d out of step; catching up", room, epoch, seq)
            self._schedule_catch_up(room)

    def _hand_over(self, room: str, epoch: str, seq: int, frame: bytes) -> None:
        try:
            self.on_message(room, epoch, seq, frame)
        except Exception:
            log.exception("on_message callback failed")

    def _schedule_catch_up(self, room: str) -> asyncio.Task[None]:
        """Catch `room` up after the catch-up already under way (one at a time per room)."""
        previous = self._catchups.get(room)
        task = asyncio.create_task(
            self._catch_up_after(previous, room), name=f"adapter-catchup-{room}"
        )
        self._catchups[room] = task
        task.add_done_callback(partial(self._catch_up_done, room))
        return task

    def _catch_up_done(self, room: str, task: asyncio.Task[None]) -> None:
        if self._catchups.get(room) is task:
            del self._catchups[room]

    async def refresh(self, room: str) -> None:
        """Catch `room` up from the broker now (a reset or gap is reported as usual)."""
        await self._schedule_catch_up(room)

    async def _catch_up_after(self, previous: asyncio.Task[None] | None, room: str) -> None:
        if previous is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await previous
        await self._catch_up(room)

    async def _catch_up(self, room: str) -> None:
        """Hand over what the room got since its position, then the frames held meanwhile."""
        start = self.streams.begin_catch_up(room)
        failed = False
        try:
            if start is not None:
                await self._read_history(room, *start)
        except (BrokerUnavailable, RedisError, OSError, TimeoutError) as exc:
            log.warning("room %s: catch-up failed: %r", room, exc)
            failed = True
        finally:
            frames, again = self.streams.end_catch_up(room)
        for epoch, seq, frame in frames:
            self._hand_over(room, epoch, seq, frame)
        if again and not failed:
            self._schedule_catch_up(room)
        elif failed and self.state == UP and room in self._want:
            # the link is up yet the history could not be read: try again shortly
            loop = asyncio.get_running_loop()
            loop.call_later(self.config.check_interval, self._schedule_catch_up, room)

    async def _read_history(self, room: str, epoch: str, seq: int) -> None:
        try:
            snap = await self.snapshot(room, seq, epoch)
        except RecoveryWindowExceeded as exc:
            self.streams.moved(room, exc.epoch, exc.seq)
            self.on_gap(room, exc)
            return
        base = seq
        if snap.reset:
            log.warning("room %s: epoch %s -> %s, its sequence restarted", room, epoch, snap.epoch)
            base = 0
            self.streams.moved(room, snap.epoch, 0)
            self.on_reset(room, snap.epoch, snap.seq)
        for offset, frame in enumerate(snap.frames, start=base + 1):
            self.streams.moved(room, snap.epoch, offset)
            self._hand_over(room, snap.epoch, offset, frame)

    # -- rooms ------------------------------------------------------------------------
    async def subscribe(self, room: str) -> None:
        """Make sure this node receives the room's frames; returns once subscribed."""
        self._want.add(room)
        self.streams.want(room)
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
        self.streams.forget(room)
        if self.state == UP and self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(self.channel(room))
            except (RedisError, OSError, TimeoutError) as exc:
                self.mark_down(exc)

    def note_seq(self, room: str, epoch: str, seq: int) -> bool:
        """A join read the room at (epoch, seq): frames up to it are accounted for, when the
        adapter knew nothing of the room yet. False when the adapter follows the room in
        another epoch (the caller refreshes it: `refresh`)."""
        return self.streams.note(room, epoch, seq)

    # -- publish ----------------------------------------------------------------------
    def publish_nowait(
        self, room: str, pub_id: str, prefix: bytes, middle: bytes, suffix: bytes
    ) -> asyncio.Future[PublishResult]:
        """Queue a publish; the future gets its PublishResult or BrokerUnavailable.

        The stored and delivered frame is `prefix + epoch + middle + str(seq) + suffix`.
        Publishes are sent in the order queued, so one connection's messages keep their order.
        """
        future: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        if self.state != UP:
            future.set_exception(BrokerUnavailable("broker unavailable"))
            return future
        if len(self._queue) >= self.config.max_backlog:
            future.set_exception(BrokerBusy(f"over {self.config.max_backlog} publishes queued"))
            return future
        seq_key, hist_key, epoch_key = self._keys(room)
        id_key = f"{self.config.prefix}:{{{room}}}:id:{pub_id}"
        args = (
            seq_key, hist_key, id_key, epoch_key, self.channel(room), prefix, middle, suffix,
            str(self.config.history), str(int(self.config.dedupe_ttl * 1000)), new_epoch(),
        )  # fmt: skip
        self._queue.append((args, future))
        self._wake.set()
        return future

    async def publish(
        self, room: str, pub_id: str, prefix: bytes, middle: bytes, suffix: bytes
    ) -> PublishResult:
        """Publish and wait until the broker accepted it (see publish_nowait)."""
        return await self.publish_nowait(room, pub_id, prefix, middle, suffix)

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
                pipe.execute_command("EVALSHA", self.sha["publish"], 4, *args)
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
                    epoch = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
                    fut.set_result(PublishResult(int(result[0]), bool(result[1]), epoch))
            if not retry:
                return
            try:
                self.sha["publish"] = await self.redis.script_load(_PUBLISH)
            except (RedisError, OSError, TimeoutError) as exc:
                self.mark_down(exc)
            live = retry

    # -- history ----------------------------------------------------------------------
    async def snapshot(
        self, room: str, since: int | None = None, epoch: str | None = None
    ) -> Snapshot:
        """The room's epoch, current seq and, with `since`, every frame after it, oldest first.

        Atomic in the broker, so nothing falls between the seq and the frames. With the
        `epoch` that `since` belongs to, a room now in another epoch answers with a reset
        (`Snapshot.reset`) and the new epoch's frames from its start. Raises
        RecoveryWindowExceeded when the frames wanted are older than the kept history (or
        `since` is ahead of the room).
        """
        keys = self._keys(room)
        args = (-1 if since is None else since, epoch or "", new_epoch())
        cur, status, first, frames, current, reset = await self.call(  # type: ignore[misc]
            "snapshot", keys, args
        )
        current = current.decode() if isinstance(current, bytes) else str(current)
        if status:
            since_in = 0 if reset else int(since or 0)
            raise RecoveryWindowExceeded(
                room, since_in, int(first), int(cur), current, bool(reset)
            )
        return Snapshot(int(cur), list(reversed(frames)), current, bool(reset))
