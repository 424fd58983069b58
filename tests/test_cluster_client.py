"""The product's ReconnectingClient against the real harness, with the demo timings preset.

What the console window does at start-up, checked end to end: a client on a node that is
SIGKILLed goes RECONNECTING, comes back OPEN through the balancer on another node, and
recovers every message it missed, none twice, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from tests.support import MS, pid_alive, until
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.events import DeliveryEvent, Direction, FrameRecord
from wsconsole.core.lifecycle import State, Transition
from wsconsole.harness.cluster import (
    DEMO_BACKOFF_CAP,
    DEMO_BACKOFF_INITIAL,
    Cluster,
    ClusterConfig,
    NodeState,
)
from wsconsole.harness.routing import rendezvous

WAIT = 20_000 * MS
WAIT_S = 20.0  # the same bound for until(), which scales it itself
ROOM = "demo"


@pytest.fixture
async def cluster(tmp_path: Any) -> AsyncIterator[Cluster]:
    """Three nodes with the demo preset; nothing may outlive it."""
    harness = Cluster(ClusterConfig.demo(health_interval=0.25, log_dir=str(tmp_path)))
    await harness.start()
    pids = set(harness.pids())
    try:
        yield harness
    finally:
        pids |= set(harness.pids())
        await harness.stop()
        assert not [pid for pid in pids if pid_alive(pid)]


class Watcher:
    """Observer keeping what a client saw: message seqs, acks, and state transitions."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.acks: dict[str, int] = {}
        self.states: list[State] = []
        self.joined = 0  # `joined` replies: one per (re)join of the room

    def __call__(self, event: object) -> None:
        if isinstance(event, FrameRecord) and event.direction == Direction.IN and event.payload:
            try:
                frame = orjson.loads(event.payload)
            except orjson.JSONDecodeError:
                return
            if isinstance(frame, dict) and frame.get("type") == "message":
                self.seqs.append(frame["seq"])
            elif isinstance(frame, dict) and frame.get("type") == "joined":
                self.joined += 1
        elif isinstance(event, DeliveryEvent) and event.kind == "ack" and event.id:
            self.acks[event.id] = event.seq or 0
        elif isinstance(event, Transition):
            self.states.append(event.state)


def client_on(cluster: Cluster, node_id: str, user: str, watcher: Watcher) -> ReconnectingClient:
    """A harness-mode client whose source address ip-hashes onto `node_id`."""
    ids = list(cluster.nodes)
    address = next(
        f"127.0.0.{x}" for x in range(2, 250) if rendezvous(f"127.0.0.{x}", ids) == node_id
    )
    options = ClientOptions(
        url=cluster.url,
        token=lambda: cluster.token(user),
        harness=True,
        rooms=[ROOM],
        backoff=BackoffPolicy(initial=DEMO_BACKOFF_INITIAL, cap=DEMO_BACKOFF_CAP, jitter=0.2),
        ping_interval=cluster.config.ping_interval,
        ping_timeout=cluster.config.ping_timeout,
        local_addr=(address, 0),
    )
    return ReconnectingClient(options, name=user, observers=[watcher])


async def test_reconnecting_client_recovers_everything_after_its_node_is_killed(
    cluster: Cluster,
) -> None:
    victim_node, other_node, _ = list(cluster.nodes)
    seen, sent = Watcher(), Watcher()
    victim = client_on(cluster, victim_node, "watcher", seen)
    publisher = client_on(cluster, other_node, "publisher", sent)
    for client in (victim, publisher):
        await client.start()
        assert await client.wait_state(State.OPEN, WAIT) is not None
    await until(lambda: seen.joined and sent.joined, "both clients joined", WAIT_S)
    stop = asyncio.Event()
    published: list[str] = []

    async def load() -> None:
        while not stop.is_set():
            published.append(await publisher.publish(ROOM, {"n": len(published)}))
            await asyncio.sleep(0.02)  # 50 msg/s

    loader = asyncio.create_task(load())
    try:
        await until(lambda: len(seen.seqs) >= 20, "the watcher to receive", WAIT_S)
        await cluster.kill(victim_node)
        assert cluster.nodes[victim_node].state == NodeState.KILLED
        await until(lambda: State.RECONNECTING in seen.states, "RECONNECTING", WAIT_S)
        assert await victim.wait_state(State.OPEN, WAIT) is not None
        before = len(published)  # keep publishing until 20 more than before it are acked
        await until(lambda: len(sent.acks) >= before + 20, "publishes after the recovery",
                    WAIT_S)
    finally:
        stop.set()
        await loader
    try:
        await until(lambda: set(published) <= set(sent.acks), "every publish acked", WAIT_S)
        top = max(sent.acks.values())
        await until(lambda: bool(seen.seqs) and max(seen.seqs) >= top, "every delivery", WAIT_S)
        first = seen.seqs[0]
        assert seen.seqs == list(range(first, top + 1)), "lost, duplicated or out of order"
        acked_seqs = sorted(sent.acks.values())
        assert acked_seqs == list(range(acked_seqs[0], top + 1))
        assert victim.stats.duplicates == 0 and victim.stats.missing == 0
        print(
            f"\nReconnectingClient: {len(published)} published, node {victim_node} killed, "
            f"states {' > '.join(s.value for s in seen.states)}, 0 lost, 0 duplicated"
        )
    finally:
        await victim.stop()
        await publisher.stop()
