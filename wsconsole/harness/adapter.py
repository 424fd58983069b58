"""Redis fan-out between harness nodes: epochs, sequence numbers, history, idempotency.

Everything that must survive a node lives in the broker (DESIGN.md): a room's sequence
counter, its bounded history, its epoch (the identity of that sequence space) and the
publish ids it has seen, changed only by the Lua scripts of roomscripts.py, one atomic step
per publish. A snapshot reads a room's epoch, seq and the frames after `since`; given the
epoch `since` belongs to and a different current one, it answers with a reset and the new
epoch's history from its start.

Per node: subscriptions to the rooms its clients joined (subscriber.py: one pub/sub
connection to one server, or sharded pub/sub with one connection per shard primary of a
Redis/Valkey Cluster), publishes batched into pipelines (publisher.py: on a cluster,
acknowledged only once `WAIT` says the replicas have them), and a monitor that pings the
broker. When the broker goes away the adapter's state is "down": publishes fail at once
with `BrokerUnavailable`, nothing is dropped silently. When it returns the adapter
reloads its scripts, re-subscribes, and catches every room up from the history since the
(epoch, seq) it last handed over; a room whose epoch changed is reported through
`on_reset(room, epoch, seq)` before its new frames, a gap the history no longer covers
through `on_gap`. `streams.RoomStreams` keeps the per-room order.

On a cluster one shard can be lost while the others serve (its primary died and the
replica is not promoted yet, its slot moved, the network to it cut): only its rooms are
held, subscribed again where the slot map now says (every `check_interval` until it
works) and caught up from the history, and only publishes to its rooms are refused.

The pieces around it: `brokerlink.py` holds the client, the up/down state and the named
Lua scripts every broker call goes through; `presence.py` counts each user's connections
across the cluster (the per-user limit) over the same link.

Frames on the wire of a room channel are `b"<epoch> <seq>\\n<frame>"`; `on_message` is
called in (epoch, seq) order per room, without duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from redis.exceptions import RedisError

from wsconsole.core.tasks import Tasks
from wsconsole.errors import WsconsoleError
from wsconsole.harness import roomscripts
from wsconsole.harness.brokerlink import CALL_FAILURES, UP, BrokerLink, BrokerUnavailable
from wsconsole.harness.presence import Presence
from wsconsole.harness.publisher import Publisher, PublishResult
from wsconsole.harness.roomscripts import RoomKeys, new_epoch, room_of
from wsconsole.harness.streams import CATCH_UP, DELIVER, RoomStreams
from wsconsole.harness.subscriber import Subscriber

log = logging.getLogger(__name__)

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
    # On a cluster, a publish is acknowledged once this many replicas of its shard have it
    # (WAIT), or refused after `wait_timeout` seconds; 0: once its primary has it.
    wait_replicas: int = 1
    wait_timeout: float = 0.5


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
        self.scripts.update(snapshot=roomscripts.SNAPSHOT)  # publish: once the broker is known
        self.presence = Presence(
            self,
            node_id,
            ttl=self.config.presence_ttl,
            refresh=self.config.presence_refresh,
            prefix=self.config.prefix,
        )
        self.publisher = Publisher(
            self, batch=self.config.batch, max_backlog=self.config.max_backlog,
            wait_replicas=self.config.wait_replicas, wait_timeout=self.config.wait_timeout,
        )  # fmt: skip
        self._subscriber: Subscriber | None = None
        self._tasks = Tasks(f"adapter-{node_id}")
        self._want: set[str] = set()  # rooms the node wants
        self._live: set[str] = set()  # rooms confirmed subscribed
        self._moving: set[str] = set()  # rooms whose shard was lost, to subscribe again
        self._moving_task: asyncio.Task[None] | None = None
        self.streams = RoomStreams()  # what was handed over of each room, in order
        self._catchups: dict[str, asyncio.Task[None]] = {}  # the latest catch-up per room
        self._closed = False
        self._channel_prefix = roomscripts.channel_prefix(self.config.prefix)

    # -- keys -------------------------------------------------------------------------
    def keys(self, room: str) -> RoomKeys:
        """The broker keys and channel of a room."""
        return RoomKeys.of(self.config.prefix, room)

    def channel(self, room: str) -> bytes:
        """The pub/sub channel of a room."""
        return self.keys(room).channel

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Start the monitor, publish batcher and presence refresh; returns at once."""
        self._tasks.spawn(self._monitor(), "monitor")
        self._tasks.spawn(self.publisher.run(), "batch")
        self._tasks.spawn(self.presence.run(), "presence")

    async def close(self) -> None:
        """Release this node's presence entries if possible, stop every task, disconnect."""
        await self.presence.release_all(self.config.socket_timeout)
        self._closed = True
        self.publisher.fail_all("the node is stopping")
        for task in self._catchups.values():
            task.cancel()
        await asyncio.gather(*self._catchups.values(), return_exceptions=True)
        await self._tasks.cancel_all()
        await self._drop_subscriber()
        await self.client.aclose()

    def _went_down(self) -> None:
        self._live.clear()
        self.publisher.fail_all("broker unavailable")
        if self._subscriber is not None:
            self._tasks.spawn(self._drop_subscriber(), "drop-subscriber")

    def trouble(self, reason: object) -> None:
        """A call failed on one shard of a cluster: read the slot map again (soon)."""
        log.info("broker call failed on a shard (%s); re-reading the slot map", reason)
        if self._moving_task is None or self._moving_task.done():
            self._moving_task = self._tasks.spawn(self._follow_shards(), "follow-shards")

    async def _drop_subscriber(self) -> None:
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            await subscriber.close()

    async def _monitor(self) -> None:
        while not self._closed:
            if self.state == UP:
                await asyncio.sleep(self.config.check_interval)
                try:
                    await self.client.ping()
                except (*CALL_FAILURES, RedisError) as exc:
                    self.lose(exc)
                continue
            try:
                await self._connect_once()
            except (*CALL_FAILURES, RedisError, BrokerUnavailable) as exc:
                log.debug("broker still unavailable: %r", exc)
                await self._disconnect_all()
                await asyncio.sleep(self.config.check_interval)

    async def _disconnect_all(self) -> None:
        await self._drop_subscriber()
        await self.client.disconnect()

    async def _connect_once(self) -> None:
        """Reconnect: scripts, pub/sub with every wanted room, then catch every room up."""
        await self._disconnect_all()
        async with asyncio.timeout(self.config.socket_timeout * 2):
            await self.client.open()
            await self.client.ping()
            command = self.client.publish_command
            self.scripts["publish"] = roomscripts.publish_script(command,
                                                                 self.publisher.deferred)
            self.scripts["release"] = roomscripts.release_script(command)
            await self.load_scripts()
        rooms = sorted(self._want)
        for room in rooms:
            self.streams.hold(room)  # frames wait for the catch-up below
        self._moving.clear()
        self._subscriber = self.client.subscriber(self._incoming, self._lost)
        await self._subscriber.open([self.channel(room) for room in rooms])
        self._live.update(rooms)
        self._set_state(UP)
        await self.presence.refresh()
        await asyncio.gather(*(self.refresh(room) for room in rooms))

    def _lost(self, channels: list[bytes] | None, reason: object) -> None:
        """Subscriptions were lost: all of them (one server: the broker is down), or one
        shard's (a cluster: hold those rooms and follow the slot map)."""
        if channels is None:
            if not self._closed:
                self.lose(reason)
            return
        rooms = [room for channel in channels
                 if (room := room_of(self._channel_prefix, channel)) is not None]
        log.warning("%d room(s) lost their shard (%s); following the slot map", len(rooms),
                    reason)
        for room in rooms:
            self._live.discard(room)
            if room in self._want:
                self.streams.hold(room)
                self._moving.add(room)
        self.trouble(reason)

    async def _follow_shards(self) -> None:
        """Re-read the slot map and subscribe the held rooms where it says, then catch them
        up; again every `check_interval` until none is left (rooms lost meanwhile too)."""
        while not self._closed and self.state == UP:
            try:
                await self.client.refresh()
            except (*CALL_FAILURES, RedisError) as exc:
                log.debug("slot map not readable yet: %r", exc)
            rooms = sorted(self._moving & self._want)
            self._moving.clear()
            subscriber = self._subscriber
            if not rooms or subscriber is None:
                return
            failed: list[str] = []
            for room in rooms:
                try:
                    await subscriber.add(self.channel(room))
                except (*CALL_FAILURES, RedisError, BrokerUnavailable) as exc:
                    log.debug("room %s: not subscribed again yet: %r", room, exc)
                    failed.append(room)
                    continue
                self._live.add(room)
                self._schedule_catch_up(room)
            self._moving.update(failed)
            if failed:
                await asyncio.sleep(self.config.check_interval)

    def _incoming(self, channel: bytes, data: bytes) -> None:
        room = room_of(self._channel_prefix, channel)
        if room is None:
            return
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
            if start is None:
                await self._read_position(room)
            else:
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

    async def _read_position(self, room: str) -> None:
        """Nothing of the room was handed over yet (its members are all still joining): its
        current position is the start, not the first frame held, so frames published while
        the subscription was away are not skipped unseen: a join whose snapshot is behind
        the position reads the room again (joins.py). A join that placed the room meanwhile
        (`note_seq`) may have read it before those frames: the history from there."""
        snap = await self.snapshot(room)
        epoch, seq = self.streams.position(room)
        if epoch is None or seq is None:
            self.streams.moved(room, snap.epoch, snap.seq)
        else:
            await self._read_history(room, epoch, seq)

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
        if self.state != UP or self._subscriber is None:
            raise BrokerUnavailable("broker unavailable")
        try:
            await self._subscriber.add(self.channel(room))
        except (*CALL_FAILURES, RedisError, BrokerUnavailable) as exc:
            self.mark_down(exc)
            raise BrokerUnavailable(f"broker unavailable: {exc}") from None
        if room in self._want:
            self._live.add(room)
        if room in self._moving:  # its shard was lost: held until caught up
            self._moving.discard(room)
            self._schedule_catch_up(room)

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving a room (no local member left)."""
        self._want.discard(room)
        self._live.discard(room)
        self._moving.discard(room)
        self.streams.forget(room)
        if self.state == UP and self._subscriber is not None:
            await self._subscriber.remove(self.channel(room))

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
        return self.publisher.submit(
            self.keys(room), pub_id, (prefix, middle, suffix), self.config.history,
            int(self.config.dedupe_ttl * 1000),
        )  # fmt: skip

    async def publish(
        self, room: str, pub_id: str, prefix: bytes, middle: bytes, suffix: bytes
    ) -> PublishResult:
        """Publish and wait until the broker accepted it (see publish_nowait)."""
        return await self.publish_nowait(room, pub_id, prefix, middle, suffix)

    # -- history ----------------------------------------------------------------------
    async def snapshot(
        self, room: str, since: int | None = None, epoch: str | None = None
    ) -> Snapshot:
        """The room's epoch, current seq and, with `since`, every frame after it, oldest first.

        Atomic in the broker, so nothing falls between the seq and the frames. With the
        `epoch` that `since` belongs to, a room now in another epoch answers with a reset
        (`Snapshot.reset`) and the new epoch's frames from its start. Never behind what this
        node has already handed over of the room (a replica promoted before it learnt how far
        its dead primary had released is moved up to it, fanning the frames it passes out
        again), so a join's members get every
        frame after the seq it answers, from the snapshot or from the live stream. Raises
        RecoveryWindowExceeded when the frames wanted are older than the kept history (or
        `since` is ahead of the room).
        """
        keys = self.keys(room)
        released = "1" if self.publisher.deferred else "0"
        known_epoch, known_seq = self.streams.position(room)
        args = (-1 if since is None else since, epoch or "", new_epoch(), released,
                known_epoch or "", -1 if known_seq is None else known_seq,
                keys.channel)  # fmt: skip
        cur, status, first, frames, current, reset = await self.call(  # type: ignore[misc]
            "snapshot", (keys.seq, keys.hist, keys.epoch, keys.released), args
        )
        current = current.decode() if isinstance(current, bytes) else str(current)
        if status:
            since_in = 0 if reset else int(since or 0)
            raise RecoveryWindowExceeded(
                room, since_in, int(first), int(cur), current, bool(reset)
            )
        return Snapshot(int(cur), list(reversed(frames)), current, bool(reset))
