"""Helpers for the tests on a local Valkey Cluster: a room on a chosen shard, waiting on a
shard's state, each shard's fan-out count. Imported by tests/test_broker_cluster.py and
tests/test_scaleout_netns.py; it holds no tests of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from redis.crc import key_slot

from tests.support import SCALE, until
from wsconsole.harness.roomscripts import RoomKeys
from wsconsole.harness.valkeycluster import LocalValkeyCluster, ShardState


def room_on(valkey: LocalValkeyCluster, shard: str) -> str:
    """A fresh room whose slot the shard serves."""
    ranges = valkey.shard(shard).slots
    while True:
        room = f"r-{uuid.uuid4().hex[:10]}"
        slot = key_slot(RoomKeys.of("ws", room).seq.encode())
        if any(low <= slot <= high for low, high in ranges):
            return room


def spublishes(valkey: LocalValkeyCluster) -> dict[str, int]:
    """Each shard's SPUBLISH count so far (on its primary)."""
    return {s.name: valkey.counters(s.primary)[1] for s in valkey.topology() if s.primary}


async def until_shard(valkey: LocalValkeyCluster, shard: str, ok: Callable[[ShardState], object],
                      what: str) -> ShardState:
    """Wait until the shard's state satisfies `ok` (read in a thread: blocking client)."""
    seen: list[ShardState] = []

    async def check() -> bool:
        seen[:] = [await asyncio.to_thread(valkey.shard, shard)]
        return bool(ok(seen[0]))

    await until(check, what, 15 * SCALE)
    return seen[0]
