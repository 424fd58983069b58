"""The adapter on a real local Valkey Cluster (three primaries, a replica each): the room's keys
in one slot, sharded fan-out only through the owning shard, WAIT before the acknowledgement, a
refused publish re-sent with the same id, a primary's death and a slot move followed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import redis
from redis.crc import key_slot

from tests.shardkit import room_on, spublishes, until_shard
from tests.support import SCALE, until
from tests.test_adapter import Recorder, frame_parts
from wsconsole.harness.adapter import AdapterConfig, RedisAdapter
from wsconsole.harness.brokeraddr import BrokerAddress
from wsconsole.harness.brokerlink import BrokerUnavailable
from wsconsole.harness.roomscripts import RoomKeys
from wsconsole.harness.valkeycluster import LocalValkeyCluster, slot_ranges

FAST = dict(check_interval=0.1, socket_timeout=1.0, presence_refresh=0.2, wait_timeout=0.3)


@pytest.fixture
def valkey() -> Iterator[LocalValkeyCluster]:
    cluster = LocalValkeyCluster(3, 1, persist=False)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def make(valkey: LocalValkeyCluster) -> AsyncIterator[object]:
    adapters: list[RedisAdapter] = []

    async def factory(node: str, rec: Recorder | None = None, **config: float) -> RedisAdapter:
        adapter = RedisAdapter(valkey.url, node,
                               AdapterConfig(**{**FAST, **config}),  # type: ignore[arg-type]
                               **(rec.kwargs() if rec else {}))  # type: ignore[arg-type]
        adapters.append(adapter)
        await adapter.start()
        assert await adapter.wait_up(10 * SCALE)
        return adapter

    try:
        yield factory
    finally:
        for adapter in adapters:
            await adapter.close()


async def publish(adapter: RedisAdapter, room: str, ident: str) -> int:
    return (await adapter.publish(room, ident, *frame_parts(room, ident, ident))).seq


def test_the_cluster_forms_with_a_replica_per_shard_over_every_slot() -> None:
    with LocalValkeyCluster(2, 1, persist=False) as valkey:
        shards = valkey.topology()
        assert [(s.name, s.primary, s.replicas, s.state) for s in shards] == [
            ("s1", "s1a", ("s1b",), "ok"), ("s2", "s2a", ("s2b",), "ok")]
        assert [s.slots[0] for s in shards] == slot_ranges(2) == [(0, 8191), (8192, 16383)]
        address = BrokerAddress.parse(valkey.url)
        assert len(address.seeds) == 4 and address.several
        node = valkey.nodes["s1a"]
        client = redis.Redis(port=node.port, decode_responses=True)
        try:  # every key of a room and its channel share one slot (the scripts stay atomic)
            keys = RoomKeys.of("ws", "lobby")
            names = [keys.seq, keys.hist, keys.epoch, keys.released, keys.publish_id("x"),
                     keys.channel.decode()]
            assert len({client.cluster("keyslot", name) for name in names}) == 1
        finally:
            client.close()


async def test_fan_out_travels_only_through_the_shard_owning_the_room(
    valkey: LocalValkeyCluster, make: object
) -> None:
    rec = Recorder()
    sub = await make("sub", rec)  # type: ignore[operator]
    pub = await make("pub")  # type: ignore[operator]
    rooms = {shard: room_on(valkey, shard) for shard in ("s1", "s2", "s3")}
    for room in rooms.values():
        await sub.subscribe(room)
    before = spublishes(valkey)
    for shard, room in rooms.items():
        for i in range(5):
            assert await publish(pub, room, f"{shard}-{i}") == i + 1
    await until(lambda: len(rec.messages) == 15, "15 deliveries across three shards")
    for room in rooms.values():
        assert [(r, seq) for r, seq, _ in rec.messages if r == room] == [
            (room, i) for i in range(1, 6)]
    after = spublishes(valkey)
    # each shard fanned out its own room's five frames and nothing else
    assert {shard: after[shard] - before[shard] for shard in after} == {
        "s1": 5, "s2": 5, "s3": 5}


async def test_joins_racing_onto_a_new_shard_connection_all_receive(
    valkey: LocalValkeyCluster, make: object
) -> None:
    rec = Recorder()
    sub = await make("sub", rec)  # type: ignore[operator]
    pub = await make("pub")  # type: ignore[operator]
    rooms = [room_on(valkey, "s2") for _ in range(8)]
    # the first subscriptions to a shard open its connection: all at once, as joins do
    await asyncio.wait_for(asyncio.gather(*(sub.subscribe(room) for room in rooms * 2)),
                           5 * SCALE)
    for room in rooms:
        await publish(pub, room, "m1")
    await until(lambda: len(rec.messages) == len(rooms), "a frame in every room")


async def test_without_a_replica_a_publish_is_refused_and_its_resend_delivered_once(
    valkey: LocalValkeyCluster, make: object
) -> None:
    rec = Recorder()
    sub = await make("sub", rec)  # type: ignore[operator]
    pub = await make("pub")  # type: ignore[operator]
    room = room_on(valkey, "s2")
    await sub.subscribe(room)
    assert await publish(pub, room, "m1") == 1
    await asyncio.to_thread(valkey.kill, "s2b")
    with pytest.raises(BrokerUnavailable, match="not replicated"):
        await publish(pub, room, "m2")
    assert pub.publisher.not_replicated >= 1
    await asyncio.to_thread(valkey.restart, "s2b")
    await until_shard(valkey, "s2", lambda s: s.replicas == ("s2b",), "s2b back as replica")
    result = None
    for _ in range(20):  # the replica may still be syncing: the publisher re-sends, same id
        try:
            result = await pub.publish(room, "m2", *frame_parts(room, "m2", "m2"))
            break
        except BrokerUnavailable:
            await asyncio.sleep(0.2 * SCALE)
    assert result is not None and result.seq == 2
    assert await publish(pub, room, "m3") == 3
    await until(lambda: len(rec.messages) == 3, "m1, m2, m3 delivered")
    assert [(seq, f["id"]) for _, seq, f in rec.messages] == [(1, "m1"), (2, "m2"), (3, "m3")]
    assert not rec.resets and not rec.gaps


async def test_a_primary_killed_under_publishes_loses_no_acknowledged_frame(
    valkey: LocalValkeyCluster, make: object
) -> None:
    rec = Recorder()
    sub = await make("sub", rec)  # type: ignore[operator]
    pub = await make("pub")  # type: ignore[operator]
    room = room_on(valkey, "s1")
    other = room_on(valkey, "s3")
    await sub.subscribe(room)
    await sub.subscribe(other)
    acked: dict[str, int] = {}
    refused = 0

    async def publish_until_acked(ident: str) -> None:
        nonlocal refused
        while True:
            try:
                acked[ident] = await publish(pub, room, ident)
                return
            except BrokerUnavailable:
                refused += 1
                await asyncio.sleep(0.05 * SCALE)

    for i in range(20):
        await publish_until_acked(f"a{i}")
    await asyncio.to_thread(valkey.kill, "s1a")

    async def more() -> None:
        for i in range(20):
            await publish_until_acked(f"b{i}")

    publishing = asyncio.create_task(more())
    assert await publish(pub, other, "elsewhere") == 1  # the other shards keep serving
    await until_shard(valkey, "s1", lambda s: s.primary == "s1b", "s1b promoted")
    # s1b alone cannot make a publish durable: refused until s1a is back as its replica
    await asyncio.to_thread(valkey.restart, "s1a")
    await until_shard(valkey, "s1", lambda s: s.replicas == ("s1a",), "s1a a replica of s1b")
    await asyncio.wait_for(publishing, 20 * SCALE)
    assert refused > 0  # the dead primary's publishes were refused, not lost
    assert sorted(acked.values()) == list(range(1, 41))
    await until(lambda: len([m for m in rec.messages if m[0] == room]) == 40,
                "every acknowledged frame delivered after the failover")
    got = [(seq, f["id"]) for r, seq, f in rec.messages if r == room]
    assert got == sorted((seq, ident) for ident, seq in acked.items())
    assert not rec.resets and not rec.gaps

async def test_a_join_behind_the_released_position_still_gets_what_the_node_handed_over(
    valkey: LocalValkeyCluster, make: object
) -> None:
    """A primary that fans frames out and dies before its replica has the released position
    leaves the promoted replica's position behind what the nodes already handed over. A
    member joining from that older position must get those frames: the live stream will not
    bring them again (the node has them), so a snapshot answering the older seq loses them."""
    rec = Recorder()
    sub = await make("sub", rec)  # type: ignore[operator]
    pub = await make("pub")  # type: ignore[operator]
    room = room_on(valkey, "s1")
    await sub.subscribe(room)
    for i in range(1, 6):
        await publish(pub, room, f"m{i}")
    await until(lambda: len(rec.messages) == 5, "m1..m5 handed over")
    epoch = rec.epochs[-1]
    keys = RoomKeys.of("ws", room)
    primary = redis.Redis(port=valkey.nodes[valkey.shard("s1").primary or ""].port)
    try:  # the promoted replica's state: the last release (m3..m5) not marked
        primary.set(keys.released, f"{epoch} 2")
    finally:
        primary.close()
    snap = await sub.snapshot(room, 2, epoch)  # a member joining from what it last saw
    assert (snap.epoch, snap.seq, snap.reset) == (epoch, 5, False)
    assert [orjson.loads(frame)["id"] for frame in snap.frames] == ["m3", "m4", "m5"]
    assert await publish(pub, room, "m6") == 6  # released from 5 on: m3..m5 not sent again
    await until(lambda: len(rec.messages) == 6, "m6 handed over")
    assert [seq for _, seq, _ in rec.messages] == list(range(1, 7))


async def test_a_subscribe_failing_on_a_shard_connection_moves_the_rooms_it_carried(
    valkey: LocalValkeyCluster, make: object
) -> None:
    """A subscribe whose confirmation does not come in time (a stalled server, a partition)
    closes that shard's connection; the rooms it already carried must be followed again and
    caught up, not stay "live" on a closed connection, delivering nothing."""
    rec = Recorder()
    # confirmations awaited 0.5 s: the stall below ends well before the node timeout (1 s)
    sub = await make("sub", rec, socket_timeout=0.25)  # type: ignore[operator]
    pub = await make("pub")  # type: ignore[operator]
    carried, failing = room_on(valkey, "s2"), room_on(valkey, "s2")
    await sub.subscribe(carried)
    await publish(pub, carried, "m1")
    await until(lambda: len(rec.messages) == 1, "m1 handed over")
    primary = valkey.shard("s2").primary or ""
    await asyncio.to_thread(valkey.pause, primary)
    try:
        with pytest.raises(BrokerUnavailable):
            await sub.subscribe(failing)
    finally:
        await asyncio.to_thread(valkey.resume, primary)
    assert valkey.shard("s2").primary == primary  # no failover: the same server serves on
    await publish(pub, carried, "m2")
    await until(lambda: len(rec.messages) == 2, "m2 handed over on a new connection")
    assert [(room, seq) for room, seq, _ in rec.messages] == [(carried, 1), (carried, 2)]


async def test_a_snapshot_moving_the_released_position_up_fans_those_frames_out_again(
    valkey: LocalValkeyCluster, make: object
) -> None:
    """After a primary that fanned m3..m5 out died before its replica had the released
    position, a node whose subscription broke with that primary may have missed them, and
    with nothing published after them it would never see a gap to catch up from. A snapshot
    moving the position up (a member that saw m5 rejoins) releases them: fanned out again,
    the node that missed them gets them and the nodes that have them drop the repeats."""
    rec, late_rec = Recorder(), Recorder()
    sub = await make("sub", rec)  # type: ignore[operator]
    late = await make("late", late_rec)  # type: ignore[operator]
    pub = await make("pub")  # type: ignore[operator]
    room = room_on(valkey, "s1")
    await sub.subscribe(room)
    for i in range(1, 6):
        await publish(pub, room, f"m{i}")
    await until(lambda: len(rec.messages) == 5, "m1..m5 handed over")
    epoch = rec.epochs[-1]
    keys = RoomKeys.of("ws", room)
    primary = redis.Redis(port=valkey.nodes[valkey.shard("s1").primary or ""].port)
    try:  # the promoted replica's state: the last release (m3..m5) not marked
        primary.set(keys.released, f"{epoch} 2")
    finally:
        primary.close()
    await late.subscribe(room)
    assert late.note_seq(room, epoch, 2)  # it had m1..m2; m3..m5 went with its subscription
    snap = await sub.snapshot(room, 5, epoch)
    assert (snap.epoch, snap.seq, snap.frames) == (epoch, 5, [])
    await until(lambda: [seq for _, seq, _ in late_rec.messages] == [3, 4, 5],
                "m3..m5 fanned out again to the node that missed them")
    assert await publish(pub, room, "m6") == 6
    await until(lambda: len(rec.messages) == 6, "m6 handed over")
    assert [seq for _, seq, _ in rec.messages] == list(range(1, 7)), "repeats dropped"


async def test_a_moved_slot_is_followed_with_its_history(
    valkey: LocalValkeyCluster, make: object
) -> None:
    rec = Recorder()
    sub = await make("sub", rec)  # type: ignore[operator]
    pub = await make("pub")  # type: ignore[operator]
    room = room_on(valkey, "s1")
    await sub.subscribe(room)
    for i in range(3):
        await publish(pub, room, f"before-{i}")
    slot = key_slot(RoomKeys.of("ws", room).seq.encode())
    assert await asyncio.to_thread(valkey.move_slot, slot, "s3") == "s1"
    assert await asyncio.to_thread(valkey.slot_owner, slot) == "s3"
    for i in range(3):
        assert await publish(pub, room, f"after-{i}") == 4 + i
    await until(lambda: len(rec.messages) == 6, "six deliveries across the move")
    assert [seq for _, seq, _ in rec.messages] == list(range(1, 7))
    assert len((await pub.snapshot(room, 0)).frames) == 6
    assert not rec.resets and not rec.gaps


async def test_a_slot_move_left_half_done_is_finished(
    valkey: LocalValkeyCluster, make: object
) -> None:
    """A move cut after some keys went over (a MIGRATE that timed out, a server that went
    away) leaves the slot migrating: the room's publish script, whose keys are split, gets
    TRYAGAIN for good. The next cluster operation finishes the move and publishes go on."""
    pub = await make("pub")  # type: ignore[operator]
    room = room_on(valkey, "s1")
    for i in range(3):
        await publish(pub, room, f"before-{i}")
    keys = RoomKeys.of("ws", room)
    slot = key_slot(keys.seq.encode())
    source, target = (valkey.nodes[str(valkey.shard(name).primary)] for name in ("s1", "s3"))
    with redis.Redis(port=target.port) as dst, redis.Redis(port=source.port) as src:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", keys.hist)
    with pytest.raises(BrokerUnavailable):
        await publish(pub, room, "while-split")
    assert await asyncio.to_thread(valkey.settle_moves) == [slot]
    assert await asyncio.to_thread(valkey.slot_owner, slot) == "s3"
    assert await asyncio.to_thread(valkey.settle_moves) == [], "nothing left to settle"
    assert await publish(pub, room, "after") == 4
    assert len((await pub.snapshot(room, 0)).frames) == 4


@pytest.mark.parametrize(
    ("url", "seeds", "several"),
    [
        ("redis://127.0.0.1:7000", ((("127.0.0.1", 7000),)), False),
        ("redis://u:p%40ss@a:7000,b:7001,[::1]:7002", (("a", 7000), ("b", 7001), ("::1", 7002)),
         True),
        ("valkey://cache", (("cache", 6379),), False),
    ],
)
def test_a_redis_url_names_one_server_or_a_cluster_s_seeds(
    url: str, seeds: tuple[tuple[str, int], ...], several: bool
) -> None:
    address = BrokerAddress.parse(url)
    assert (address.seeds, address.several) == (seeds, several)
    assert BrokerAddress.parse(address.seed_url()).seeds == seeds[:1]  # credentials quoted


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://a:1", "not a Redis URL"),
        ("redis://a:1,:2", "empty host"),
        ("redis://a:99999", "bad port"),
        ("redis://a:1/x", "must be a number"),
    ],
)
def test_a_bad_redis_url_says_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BrokerAddress.parse(url)
