"""Issue 19 across hosts: two hosts simulated with network namespaces (tests/netns.py), a local
Valkey Cluster of three shards on the bridge (the console's side), demo nodes on the hosts,
and the console's clients in the root namespace.

Every delivery claim is judged by the independent client (tests/protoclient.py, written from
docs/protocol.md): its ledger checks that each acknowledged message reached every subscriber
exactly once and in order, or that the subscriber was told it would not come.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.netns import Host, NetLab, hosts, netlab  # noqa: F401  (fixtures)
from tests.nodekit import start_node
from tests.protoclient import Ledger, Peer
from tests.shardkit import room_on, spublishes, until_shard
from tests.support import until
from wsconsole.harness.auth import issue_token, new_secret
from wsconsole.harness.valkeycluster import LocalValkeyCluster

pytestmark = [pytest.mark.netns]

SECRET = new_secret()  # the nodes' JWT secret
RATE = 20.0  # publishes per second per publisher


@pytest.fixture(scope="module")
def valkey(netlab: NetLab) -> Iterator[LocalValkeyCluster]:  # noqa: F811
    """Three primaries with a replica each, listening on the bridge's address only."""
    cluster = LocalValkeyCluster(3, 1, host=netlab.bridge_address, persist=False)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def node_on(host: Host, valkey: LocalValkeyCluster, node_id: str) -> str:
    """A demo node on `host`, on the cluster broker; its ws:// URL."""
    node = start_node(host, valkey.url, node_id, "--host", host.address, "--port", "0",
                      secret=SECRET)
    return f"ws://{host.address}:{node.port}"


@pytest.fixture
async def peers(netlab: NetLab) -> AsyncIterator[Any]:  # noqa: F811
    """Makes protoclient peers from the console's side of the bridge; closes them after."""
    made: list[Peer] = []

    def make(name: str, url: str, rooms: list[str], ledger: Ledger,
             publish_to: str | None = None) -> Peer:
        peer = Peer(name, url, issue_token(SECRET, name), rooms, ledger,
                    local_addr=netlab.bridge_address, publish_to=publish_to,
                    rate=RATE if publish_to else 0.0)
        made.append(peer)
        peer.start()
        return peer

    try:
        yield make
    finally:
        for peer in made:
            await peer.close()


async def joined(ledger: Ledger, subscriptions: int) -> None:
    """Wait until that many (peer, room) subscriptions have their first `joined`."""
    await until(lambda: len(ledger.streams) >= subscriptions, f"{subscriptions} joins", 15)


async def settle(ledger: Ledger, publishers: list[Peer]) -> None:
    """Stop publishing, wait until every publish is acknowledged and delivered."""
    for peer in publishers:
        peer.stop_publishing()
    await until(lambda: not any(p.outbox for p in publishers), "every publish acknowledged", 30,
                detail=lambda: [(p.name, len(p.outbox), dict(p.stats.errors))
                                for p in publishers])
    with contextlib.suppress(AssertionError):  # judged just below, with the details
        await until(lambda: not ledger.judge().lost, "deliveries to arrive", 10, interval=0.2)


async def test_fan_out_crosses_hosts_through_the_sharded_broker(
    hosts: dict[str, Host], valkey: LocalValkeyCluster, peers: Any  # noqa: F811
) -> None:
    subscribed_at = node_on(hosts["hostA"], valkey, "a1")
    published_at = node_on(hosts["hostB"], valkey, "b1")
    rooms = [room_on(valkey, shard) for shard in ("s1", "s2", "s3")]
    ledger = Ledger()
    subscribers = [peers(f"sub{i}", subscribed_at, rooms, ledger) for i in range(3)]
    await joined(ledger, len(subscribers) * len(rooms))
    before = await asyncio.to_thread(spublishes, valkey)
    publishers = [peers(f"pub{i}", published_at, [], ledger, publish_to=room)
                  for i, room in enumerate(rooms)]
    await until(lambda: len(ledger.acks) >= 45, "45 publishes acknowledged", 20)
    await settle(ledger, publishers)
    verdict = ledger.judge()
    assert verdict.ok, verdict.problems()
    assert verdict.acknowledged >= 45
    # each subscriber owed, and got, every acknowledged message of every room
    assert verdict.checked == verdict.delivered == verdict.acknowledged * len(subscribers)
    assert not ledger.unexpected_errors
    assert {s.last_frame[1] for s in subscribers if s.last_frame} == {"a1"}
    after = await asyncio.to_thread(spublishes, valkey)
    # each room's frames went out through its own shard: all three carried fan-out
    assert all(after[shard] > before[shard] for shard in ("s1", "s2", "s3")), (before, after)


async def test_a_primary_killed_under_load_loses_nothing_silently(
    hosts: dict[str, Host], valkey: LocalValkeyCluster, peers: Any  # noqa: F811
) -> None:
    on_a = node_on(hosts["hostA"], valkey, "a1")
    on_b = node_on(hosts["hostB"], valkey, "b1")
    room, other = room_on(valkey, "s1"), room_on(valkey, "s2")
    ledger = Ledger()
    subscribers = [peers(f"sub{i}", (on_a, on_b)[i % 2], [room, other], ledger)
                   for i in range(4)]
    await joined(ledger, len(subscribers) * 2)
    publishers = [peers("pubA", on_a, [room], ledger, publish_to=room),
                  peers("pubB", on_b, [room], ledger, publish_to=room),
                  peers("pubO", on_b, [other], ledger, publish_to=other)]
    await until(lambda: len(ledger.acks) >= 30, "publishing under way", 15)
    killed = (await asyncio.to_thread(valkey.shard, "s1")).primary
    assert killed is not None
    await asyncio.to_thread(valkey.kill, killed)
    await until_shard(valkey, "s1", lambda s: s.primary not in (None, killed), "replica promoted")
    # the new primary has no replica: publishes to the room are refused until the killed
    # server is back as its replica (docs/scale-out.md)
    await asyncio.to_thread(valkey.restart, killed)
    await until_shard(valkey, "s1", lambda s: s.replicas == (killed,), f"{killed} a replica")
    acked = len(ledger.acks)
    await until(lambda: len(ledger.acks) >= acked + 30, "publishing after the failover", 15)
    await settle(ledger, publishers)
    verdict = ledger.judge()
    report = verdict.problems()
    if verdict.lost:
        report += "\n" + ledger.explain(*verdict.lost[0])
    assert verdict.ok, report
    assert verdict.checked > 0 and verdict.acknowledged >= 60
    refused = sum(p.stats.errors["broker_unavailable"] for p in publishers[:2])
    assert refused > 0, "the kill landed while nobody published to its shard"
    assert ledger.epochs(room) == 1, "a room reset: an acknowledged write was lost"
    assert not ledger.unexpected_errors
