"""Nodes SIGKILLed under a steady publish load: the broker's history and idempotency keys
mean no acknowledged message is lost and none is delivered twice, order kept."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.nodekit import TIMEOUT, broker, client, join, module_procs, start_node
from tests.support import ProcessRegistry
from wsconsole.harness.broker import Broker

__all__ = ["broker", "module_procs"]

TOTAL = 150


async def test_subscriber_node_killed_then_recovery_on_another_node(
    broker: Broker, procs: ProcessRegistry
) -> None:
    n1 = start_node(procs, broker.url, "a1", "--no-auth", "--rate", "0")
    n2 = start_node(procs, broker.url, "a2", "--no-auth", "--rate", "0")
    room = f"crash-{uuid.uuid4().hex[:6]}"
    seen: list[dict[str, Any]] = []
    acked: dict[str, int] = {}

    async with client(n1.url) as pub:

        async def publish_steadily() -> None:
            for k in range(TOTAL):
                await pub.send(
                    json.dumps({"type": "publish", "room": room, "id": f"m{k}", "data": k})
                )
                await asyncio.sleep(0.005)

        async def read_acks() -> None:
            while len(acked) < TOTAL:
                frame = json.loads(await pub.recv())
                if frame["type"] == "ack":
                    acked[frame["id"]] = frame["seq"]

        ws = await client(n2.url).__aenter__()
        await join(ws, room)  # before the first publish

        async def subscribe() -> None:
            try:
                while len(seen) < 40:
                    seen.append(json.loads(await ws.recv()))
                n2.proc.kill()  # SIGKILL the subscriber's node mid-stream
                try:
                    while True:
                        frame = json.loads(await ws.recv())
                        seen.append(frame)
                except ConnectionClosed:
                    pass
            finally:
                ws.transport.abort()
            async with client(n1.url) as again:  # reconnect elsewhere, ask for what was missed
                await join(again, room, since=seen[-1]["seq"])
                while not seen or seen[-1]["seq"] < TOTAL:
                    seen.append(json.loads(await again.recv()))

        async with asyncio.timeout(TIMEOUT * 2):
            await asyncio.gather(publish_steadily(), read_acks(), subscribe())

    assert [m["seq"] for m in seen] == list(range(1, TOTAL + 1)), "none lost, none twice"
    assert [m["data"] for m in seen] == list(range(TOTAL)), "publisher order kept"
    assert sorted(acked.values()) == list(range(1, TOTAL + 1))
    assert n2.proc.wait(TIMEOUT) != 0


async def test_publisher_node_killed_resends_are_delivered_once(
    broker: Broker, procs: ProcessRegistry
) -> None:
    n1 = start_node(procs, broker.url, "b1", "--no-auth", "--rate", "0")
    n2 = start_node(procs, broker.url, "b2", "--no-auth", "--rate", "0")
    room = f"crash-{uuid.uuid4().hex[:6]}"
    async with client(n2.url) as watcher:
        await join(watcher, room)
        unacked: dict[str, int] = {}
        pub = await client(n1.url).__aenter__()
        try:
            for k in range(TOTAL):
                unacked[f"m{k}"] = k
                await pub.send(
                    json.dumps({"type": "publish", "room": room, "id": f"m{k}", "data": k})
                )
                if k == TOTAL // 2:
                    n1.proc.kill()  # some of these were accepted, their acks never arrive
                    break
            try:
                while True:
                    frame = json.loads(await pub.recv())
                    if frame["type"] == "ack":
                        unacked.pop(frame["id"], None)
            except ConnectionClosed:
                pass
        finally:
            pub.transport.abort()
        remaining = [f"m{k}" for k in range(TOTAL // 2 + 1, TOTAL)]
        async with client(n2.url) as pub2:  # the client re-sends everything not acknowledged
            for ident in [*unacked, *remaining]:
                k = int(ident[1:])
                await pub2.send(
                    json.dumps({"type": "publish", "room": room, "id": ident, "data": k})
                )
            acks = 0
            async with asyncio.timeout(TIMEOUT):
                while acks < len(unacked) + len(remaining):
                    acks += json.loads(await pub2.recv())["type"] == "ack"
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(TIMEOUT):
            while len(got) < TOTAL:
                got.append(json.loads(await watcher.recv()))
        await watcher.send(json.dumps({"type": "rpc", "id": "end", "method": "echo"}))
        assert json.loads(await watcher.recv())["id"] == "end", "nothing after the last one"
    ids = [m["id"] for m in got]
    assert sorted(ids, key=lambda i: int(i[1:])) == [f"m{k}" for k in range(TOTAL)]
    assert len(set(ids)) == TOTAL, "each id delivered once"
    assert [m["seq"] for m in got] == list(range(1, TOTAL + 1))
