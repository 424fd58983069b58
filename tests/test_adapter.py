"""The Redis adapter against a real broker: atomic dense seqs, epochs, history,
idempotency, presence, and the broker going away and coming back (with or without its state)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import redis

from tests.support import SCALE, until
from wsconsole.core.tasks import spawn
from wsconsole.harness.adapter import AdapterConfig, RecoveryWindowExceeded, RedisAdapter
from wsconsole.harness.broker import Broker
from wsconsole.harness.brokerlink import DOWN, UP, BrokerUnavailable
from wsconsole.harness.joins import join_room
from wsconsole.harness.rooms import RoomTable

FAST = dict(check_interval=0.1, socket_timeout=1.0, presence_refresh=0.2)


@pytest.fixture
def broker() -> Iterator[Broker]:
    server = Broker(persist=False)  # a restart loses the state: resets are tested here
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Recorder:
    """Collects what an adapter hands over."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, int, dict[str, object]]] = []
        self.epochs: list[str] = []
        self.states: list[str] = []
        self.resets: list[tuple[str, str, int]] = []
        self.log: list[tuple[str, str, int]] = []  # ("message" | "reset", epoch, seq), in order
        self.gaps: list[RecoveryWindowExceeded] = []

    def message(self, room: str, epoch: str, seq: int, frame: bytes) -> None:
        self.messages.append((room, seq, orjson.loads(frame)))
        self.epochs.append(epoch)
        self.log.append(("message", epoch, seq))

    def reset(self, room: str, epoch: str, seq: int) -> None:
        self.resets.append((room, epoch, seq))
        self.log.append(("reset", epoch, seq))

    def kwargs(self) -> dict[str, object]:
        return dict(
            on_message=self.message,
            on_state=self.states.append,
            on_reset=self.reset,
            on_gap=lambda room, exc: self.gaps.append(exc),
        )


@pytest.fixture
async def make(broker: Broker) -> AsyncIterator[object]:
    adapters: list[RedisAdapter] = []

    async def factory(node: str, rec: Recorder | None = None, **config: object) -> RedisAdapter:
        cfg = AdapterConfig(**{**FAST, **config})  # type: ignore[arg-type]
        adapter = RedisAdapter(broker.url, node, cfg, **(rec.kwargs() if rec else {}))  # type: ignore[arg-type]
        adapters.append(adapter)
        await adapter.start()
        assert await adapter.wait_up(10)
        return adapter

    try:
        yield factory
    finally:
        for adapter in adapters:
            await adapter.close()


def frame_parts(room: str, ident: str, body: object) -> tuple[bytes, bytes, bytes]:
    prefix = b'{"type":"message","room":' + orjson.dumps(room) + b',"epoch":"'
    suffix = b',"id":' + orjson.dumps(ident) + b',"data":' + orjson.dumps(body) + b"}"
    return prefix, b'","seq":', suffix


async def epoch_at(adapter: RedisAdapter, room: str) -> tuple[str, int]:
    """The room's (epoch, seq) now."""
    snap = await adapter.snapshot(room)
    return snap.epoch, snap.seq


async def publish(adapter: RedisAdapter, room: str, ident: str, body: object = None) -> int:
    return (await adapter.publish(room, ident, *frame_parts(room, ident, body))).seq


async def test_concurrent_publishers_get_dense_atomic_seqs(make: object) -> None:
    recs = [Recorder(), Recorder()]
    a = await make("a", recs[0])  # type: ignore[operator]
    b = await make("b", recs[1])  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    await a.subscribe(room)
    await b.subscribe(room)
    a.note_seq(room, *await epoch_at(a, room))
    b.note_seq(room, *await epoch_at(a, room))
    jobs = [publish(ad, room, f"{ad.node_id}-{i}", i) for i in range(150) for ad in (a, b)]
    seqs = await asyncio.gather(*jobs)
    assert sorted(seqs) == list(range(1, 301))
    for rec in recs:
        await until(lambda rec=rec: len(rec.messages) == 300, "300 deliveries")
        assert [seq for _, seq, _ in rec.messages] == list(range(1, 301))
        assert all(frame["seq"] == seq for _, seq, frame in rec.messages)
    assert [f["id"] for *_, f in recs[0].messages] == [f["id"] for *_, f in recs[1].messages]
    # one publisher's messages keep their order
    mine = [f["data"] for *_, f in recs[0].messages if f["id"].startswith("a-")]
    assert mine == list(range(150))


async def test_republish_same_id_returns_original_seq_and_is_not_delivered_twice(
    make: object,
) -> None:
    rec = Recorder()
    a = await make("a", rec)  # type: ignore[operator]
    b = await make("b")  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    await a.subscribe(room)
    first = await a.publish(room, "m1", *frame_parts(room, "m1", 1))
    again = await b.publish(room, "m1", *frame_parts(room, "m1", 1))
    other = await a.publish(room, "m2", *frame_parts(room, "m2", 2))
    assert (first.seq, first.duplicate) == (1, False)
    assert (again.seq, again.duplicate, again.epoch) == (1, True, first.epoch)
    assert other.seq == 2 and len(first.epoch) == 12
    await until(lambda: len(rec.messages) == 2, "m1 and m2 delivered")
    # pub/sub keeps order: a second delivery of m1 would have arrived before m2
    assert [f["id"] for *_, f in rec.messages] == ["m1", "m2"]
    assert (await a.snapshot(room, 0)).frames == [
        orjson.dumps(
            {"type": "message", "room": room, "epoch": first.epoch, "seq": s, "id": i, "data": d}
        )
        for s, i, d in ((1, "m1", 1), (2, "m2", 2))
    ]


async def test_history_since_and_the_window(make: object) -> None:
    a = await make("a", history=5)  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    assert (await a.snapshot(room)).seq == 0
    assert (await a.snapshot(room, 0)).frames == []
    for i in range(8):
        await publish(a, room, f"m{i}", i)
    snap = await a.snapshot(room, 5)
    assert snap.seq == 8
    assert [orjson.loads(f)["seq"] for f in snap.frames] == [6, 7, 8]
    assert [orjson.loads(f)["seq"] for f in (await a.snapshot(room, 3)).frames] == [4, 5, 6, 7, 8]
    assert (await a.snapshot(room, 8)).frames == []
    with pytest.raises(RecoveryWindowExceeded) as caught:
        await a.snapshot(room, 2)
    assert (caught.value.first, caught.value.seq) == (4, 8)
    with pytest.raises(RecoveryWindowExceeded, match="ahead"):
        await a.snapshot(room, 9)


async def test_per_user_limit_across_nodes_and_expiry_of_a_dead_node(make: object) -> None:
    a = await make("a", presence_ttl=0.6)  # type: ignore[operator]
    b = await make("b", presence_ttl=0.6)  # type: ignore[operator]
    user = f"u-{uuid.uuid4().hex}"
    assert (await a.presence.claim(user, "c1", 3))[0]
    assert (await b.presence.claim(user, "c2", 3))[0]
    assert (await a.presence.claim(user, "c3", 3))[0]
    assert await a.presence.claim(user, "c4", 3) == (False, 3)
    assert (await a.presence.claim(user, "c1", 3))[0], "re-claiming a held id is a refresh"
    await b.presence.release(user, "c2")
    assert (await b.presence.claim(user, "c5", 3))[0]
    # refreshed entries outlive the TTL (the wait is the property: time past the TTL) ...
    await asyncio.sleep(1.0 * SCALE)
    assert await a.presence.count(user) == 3
    # ... and a node that stops refreshing (as a SIGKILLed one) stops counting after it
    for task in b._tasks:
        task.cancel()
    await asyncio.sleep(1.0 * SCALE)
    assert await a.presence.count(user) == 2


async def test_broker_down_fails_fast_then_recovers_with_reset(
    broker: Broker, make: object
) -> None:
    rec = Recorder()
    a = await make("a", rec)  # type: ignore[operator]
    b = await make("b")  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    await a.subscribe(room)
    a.note_seq(room, *await epoch_at(a, room))
    assert await publish(b, room, "before") == 1
    await until(lambda: len(rec.messages) == 1, "one delivery")
    broker.kill()
    await until(lambda: a.state == DOWN and b.state == DOWN, "both adapters down")
    assert rec.states[-1] == DOWN
    with pytest.raises(BrokerUnavailable):
        await publish(b, room, "during")
    with pytest.raises(BrokerUnavailable):
        await a.snapshot(room)
    broker.restart()
    await until(lambda: a.state == UP and b.state == UP, "both adapters up")
    await until(lambda: bool(rec.resets), "the reset reported")
    [(where, epoch, head)] = rec.resets
    assert (where, head) == (room, 0) and epoch != rec.epochs[0], "a new epoch, from 0"
    await until(lambda: room in a._live, "re-subscribed")
    assert await publish(b, room, "after") == 1
    await until(lambda: len(rec.messages) == 2, "2 deliveries")
    assert rec.messages[-1][2]["id"] == "after" and rec.epochs[-1] == epoch


async def test_catch_up_after_missing_frames(make: object) -> None:
    rec = Recorder()
    a = await make("a", rec)  # type: ignore[operator]
    b = await make("b")  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    await a.subscribe(room)
    a.note_seq(room, *await epoch_at(a, room))
    await publish(b, room, "m1")
    await until(lambda: len(rec.messages) == 1, "one delivery")
    # simulate a lost pub/sub delivery: the adapter believes it saw less than it did
    await a.unsubscribe(room)
    await publish(b, room, "m2")
    await publish(b, room, "m3")
    await a.subscribe(room)
    a.note_seq(room, (await a.snapshot(room)).epoch, 1)
    await publish(b, room, "m4")  # seq 4 after 1: a gap, filled from the history
    await until(lambda: len(rec.messages) == 4, "4 deliveries")
    assert [seq for _, seq, _ in rec.messages] == [1, 2, 3, 4]
    assert not rec.gaps


async def test_publish_while_never_connected_is_refused(broker: Broker) -> None:
    adapter = RedisAdapter("redis://127.0.0.1:1/0", "x", AdapterConfig(**FAST))  # type: ignore[arg-type]
    await adapter.start()
    try:
        assert not await adapter.wait_up(0.3)
        with pytest.raises(BrokerUnavailable):
            await publish(adapter, "r", "m")
        with pytest.raises(BrokerUnavailable):
            await adapter.subscribe("r")
    finally:
        await adapter.close()


async def test_gap_beyond_the_window_is_reported_not_papered_over(make: object) -> None:
    rec = Recorder()
    a = await make("a", rec, history=3)  # type: ignore[operator]
    b = await make("b", history=3)  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    await a.subscribe(room)
    a.note_seq(room, *await epoch_at(a, room))
    await a.unsubscribe(room)  # as if the pub/sub link had lost these
    for i in range(10):
        await publish(b, room, f"m{i}")
    await a.subscribe(room)
    a.note_seq(room, (await a.snapshot(room)).epoch, 1)
    await publish(b, room, "m10")  # seq 11 after 1: a gap the history cannot fill
    await until(lambda: len(rec.gaps) == 1, "the gap reported")
    gap = rec.gaps[0]
    assert (gap.room, gap.since, gap.first, gap.seq, gap.reset) == (room, 1, 9, 11, False)
    await publish(b, room, "m11")
    await until(lambda: len(rec.messages) == 1, "one delivery")
    assert rec.messages[0][1] == 12, "live frames continue after the reported gap"


def wipe(broker: Broker) -> None:
    """The broker loses every key, as an external server restored empty would."""
    client = redis.Redis.from_url(broker.url)
    try:
        client.flushall()
    finally:
        client.close()


async def test_epochs_tell_sequence_spaces_apart(broker: Broker, make: object) -> None:
    a = await make("a", history=3)  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    for i in range(4):
        await publish(a, room, f"old{i}")
    old = await a.snapshot(room)
    assert (old.seq, old.reset) == (4, False)
    assert (await a.snapshot(room, 2)).frames == (await a.snapshot(room, 2, old.epoch)).frames
    wipe(broker)
    for i in range(2):
        await publish(a, room, f"new{i}")
    # a client that read up to 3 of the old epoch: told of the reset, given 1..2 of the new one
    snap = await a.snapshot(room, 3, old.epoch)
    assert snap.reset and snap.epoch != old.epoch and snap.seq == 2
    assert [orjson.loads(f)["id"] for f in snap.frames] == ["new0", "new1"]
    assert all(orjson.loads(f)["epoch"] == snap.epoch for f in snap.frames)
    # within the new epoch, since works as before; without an epoch it is read in the current one
    assert [orjson.loads(f)["seq"] for f in (await a.snapshot(room, 1, snap.epoch)).frames] == [2]
    assert not (await a.snapshot(room, 1)).reset
    # the new epoch's start beyond the history: a reset and a window error at once
    for i in range(2, 6):
        await publish(a, room, f"new{i}")
    with pytest.raises(RecoveryWindowExceeded) as caught:
        await a.snapshot(room, 3, old.epoch)
    gap = caught.value
    assert (gap.reset, gap.epoch, gap.first, gap.seq) == (True, snap.epoch, 4, 6)


async def test_a_sequence_that_went_back_in_its_own_epoch_becomes_a_new_epoch(
    broker: Broker, make: object
) -> None:
    a = await make("a")  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    for i in range(5):
        await publish(a, room, f"m{i}")
    epoch = (await a.snapshot(room)).epoch
    client = redis.Redis.from_url(broker.url)
    try:  # the last three acknowledged writes lost (a server restored from an older copy)
        client.set(f"ws:{{{room}}}:seq", 2)
        client.ltrim(f"ws:{{{room}}}:hist", 3, -1)
    finally:
        client.close()
    snap = await a.snapshot(room, 5, epoch)
    assert snap.reset and snap.epoch != epoch and (snap.seq, snap.frames) == (0, [])
    assert await publish(a, room, "after") == 1, "numbers 3..5 are not handed out again"


async def test_a_wiped_room_is_reported_before_its_new_frames(
    broker: Broker, make: object
) -> None:
    rec = Recorder()
    a = await make("a", rec)  # type: ignore[operator]
    b = await make("b")  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    await a.subscribe(room)
    a.note_seq(room, *await epoch_at(a, room))
    await publish(b, room, "old")
    await until(lambda: len(rec.messages) == 1, "one delivery")
    wipe(broker)  # the adapters stay connected: only the frames' epoch says what happened
    await publish(b, room, "new0")
    await publish(b, room, "new1")
    await until(lambda: len(rec.messages) == 3, "the new epoch delivered")
    [(where, epoch, head)] = rec.resets
    assert where == room and epoch != rec.epochs[0] and head >= 1
    assert [(seq, f["id"]) for _, seq, f in rec.messages] == [(1, "old"), (1, "new0"), (2, "new1")]
    assert [kind for kind, *_ in rec.log] == ["message", "reset", "message", "message"]


async def test_a_join_answered_after_a_later_one_still_gets_every_frame_after_its_joined(
    make: object,
) -> None:
    """Two members join a room their node knows nothing of yet. A's snapshot is read first;
    a publish lands; B's snapshot, which has it, comes back first and places the node's
    stream after it while the frame itself is still on its way by pub/sub (the stream then
    drops it as accounted for). A, answered last at the older seq, must not be left without
    that frame and told nothing: its join reads the room again."""
    table: RoomTable[str] = RoomTable()
    got: dict[str, list[int]] = {"a": [], "b": []}

    def delivered(room: str, epoch: str, seq: int, frame: bytes) -> None:
        for member in table.deliver(room, epoch, seq, frame):
            got[member].append(seq)

    node = await make("node")  # type: ignore[operator]
    node.on_message = delivered
    pub = await make("pub")  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    conn = node._subscriber._conn  # pub/sub frames wait on the wire until let go
    intake, on_wire = conn._on_message, []
    conn._on_message = lambda channel, data: on_wire.append((channel, data))
    real_snapshot, a_read, a_answered = node.snapshot, asyncio.Event(), asyncio.Event()

    async def a_answered_late(room: str, since: int | None = None,
                              epoch: str | None = None) -> object:
        snap = await real_snapshot(room, since, epoch)
        if not a_read.is_set():  # the first read is A's: its reply is slow
            a_read.set()
            await a_answered.wait()
        return snap

    node.snapshot = a_answered_late
    join_a = spawn(join_room(node, table, "a", room, None, None), "join-a")
    await asyncio.wait_for(a_read.wait(), 5 * SCALE)
    assert await publish(pub, room, "m1") == 1
    await until(lambda: len(on_wire) == 1, "m1 on its way to the node")
    read_b = await join_room(node, table, "b", room, None, None)
    assert read_b is not None and read_b.snapshot.seq == 1
    for channel, data in on_wire:
        intake(channel, data)
    conn._on_message = intake
    a_answered.set()
    read_a = await asyncio.wait_for(join_a, 5 * SCALE)
    assert read_a is not None
    assert await publish(pub, room, "m2") == 2
    await until(lambda: got["a"] and got["b"], "m2 delivered to both")
    assert [read_a.snapshot.seq, *got["a"]] == [1, 2], "A's joined, then every frame after it"
    assert [read_b.snapshot.seq, *got["b"]] == [1, 2]
