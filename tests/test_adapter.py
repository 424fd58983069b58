"""The Redis adapter against a real broker: atomic dense seqs, history, idempotency,
presence, and the broker going away and coming back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from tests.support import SCALE, until
from wsconsole.harness.adapter import AdapterConfig, RecoveryWindowExceeded, RedisAdapter
from wsconsole.harness.broker import Broker
from wsconsole.harness.brokerlink import DOWN, UP, BrokerUnavailable

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
        self.states: list[str] = []
        self.resets: list[list[str]] = []
        self.gaps: list[RecoveryWindowExceeded] = []

    def kwargs(self) -> dict[str, object]:
        return dict(
            on_message=lambda room, seq, frame: self.messages.append(
                (room, seq, orjson.loads(frame))
            ),
            on_state=self.states.append,
            on_reset=self.resets.append,
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


def frame_parts(room: str, ident: str, body: object) -> tuple[bytes, bytes]:
    prefix = b'{"type":"message","room":' + orjson.dumps(room) + b',"seq":'
    suffix = b',"id":' + orjson.dumps(ident) + b',"data":' + orjson.dumps(body) + b"}"
    return prefix, suffix


async def publish(adapter: RedisAdapter, room: str, ident: str, body: object = None) -> int:
    return (await adapter.publish(room, ident, *frame_parts(room, ident, body))).seq


async def test_concurrent_publishers_get_dense_atomic_seqs(make: object) -> None:
    recs = [Recorder(), Recorder()]
    a = await make("a", recs[0])  # type: ignore[operator]
    b = await make("b", recs[1])  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    await a.subscribe(room)
    await b.subscribe(room)
    a.note_seq(room, 0)
    b.note_seq(room, 0)
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
    assert (again.seq, again.duplicate) == (1, True)
    assert other.seq == 2
    await until(lambda: len(rec.messages) == 2, "m1 and m2 delivered")
    # pub/sub keeps order: a second delivery of m1 would have arrived before m2
    assert [f["id"] for *_, f in rec.messages] == ["m1", "m2"]
    assert (await a.snapshot(room, 0)).frames == [
        orjson.dumps({"type": "message", "room": room, "seq": s, "id": i, "data": d})
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
    a.note_seq(room, 0)
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
    assert rec.resets == [[room]], "a restarted broker without persistence is a reset"
    await until(lambda: room in a._live, "re-subscribed")
    assert await publish(b, room, "after") == 1
    await until(lambda: len(rec.messages) == 2, "2 deliveries")
    assert rec.messages[-1][2]["id"] == "after"


async def test_catch_up_after_missing_frames(make: object) -> None:
    rec = Recorder()
    a = await make("a", rec)  # type: ignore[operator]
    b = await make("b")  # type: ignore[operator]
    room = f"r-{uuid.uuid4().hex}"
    await a.subscribe(room)
    a.note_seq(room, 0)
    await publish(b, room, "m1")
    await until(lambda: len(rec.messages) == 1, "one delivery")
    # simulate a lost pub/sub delivery: the adapter believes it saw less than it did
    await a.unsubscribe(room)
    await publish(b, room, "m2")
    await publish(b, room, "m3")
    await a.subscribe(room)
    a.note_seq(room, 1)
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
    a.note_seq(room, 0)
    await a.unsubscribe(room)  # as if the pub/sub link had lost these
    for i in range(10):
        await publish(b, room, f"m{i}")
    await a.subscribe(room)
    a.note_seq(room, 1)
    await publish(b, room, "m10")  # seq 11 after 1: a gap the history cannot fill
    await until(lambda: len(rec.gaps) == 1, "the gap reported")
    gap = rec.gaps[0]
    assert (gap.room, gap.since, gap.first, gap.seq) == (room, 1, 9, 11)
    await publish(b, room, "m11")
    await until(lambda: len(rec.messages) == 1, "one delivery")
    assert rec.messages[0][1] == 12, "live frames continue after the reported gap"
