"""The swarm on an app of the test's own (no harness): the recipe's header, query and first
message authenticate, its join and publish templates are what the app gets, deliveries are
recognised by the id path, and an app that does not echo to the sender owes it nothing."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.harness.stackfile import parse_stack
from wsconsole.swarm.appswarm import AppSwarm
from wsconsole.swarm.config import SwarmConfig

RECIPE = """\
[node]
command = "unused"
[broker]
kind = "none"
[client]
receive_own = false
[client.auth]
token = "tok-{user}"
header = "Authorization: Bearer {token}"
query = "key=k1"
message = { type = "hello", token = "{token}" }
[client.join]
message = { type = "sub", channel = "{room}" }
[client.publish]
message = { type = "say", channel = "{room}", msg = { uid = "{id}", at = "{ts}" }, n = "{counter}" }
[client.receive]
match = { type = "said" }
id = "msg.uid"
timestamp = "msg.at"
"""


async def test_a_recipe_authenticates_joins_publishes_and_is_accounted() -> None:
    rooms: dict[str, set[ServerConnection]] = defaultdict(set)
    refused: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        user = request.headers.get("Authorization", "").removeprefix("Bearer tok-")
        hello = json.loads(await ws.recv())
        if "key=k1" not in request.path or hello != {"type": "hello", "token": f"tok-{user}"}:
            refused.append(request.path)
            await ws.close(1008, "auth")
            return
        async for text in ws:
            message: dict[str, Any] = json.loads(text)
            if message["type"] == "sub":
                rooms[message["channel"]].add(ws)
            elif message["type"] == "say" and isinstance(message["n"], int):
                out = json.dumps({"type": "said", "msg": message["msg"], "from": user})
                for peer in list(rooms[message["channel"]]):
                    if peer is not ws:  # this app does not echo to the sender
                        await peer.send(out)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = SwarmConfig(url=f"ws://127.0.0.1:{port}/chat", stack=parse_stack(RECIPE),
                             clients=3, rooms=1, rate=30, duration=1.5, settle=2,
                             wait_joined=5, backoff=BackoffPolicy(initial=0.2, cap=1.0),
                             distinct_addresses=False)
        summary = await AppSwarm(config).run()
    assert not refused
    assert summary["never_connected"] == 0 and summary["errors_total"] == 0, summary
    assert summary["sent"] >= 30 and summary["unsent"] == 0
    assert summary["expected"] == 2 * summary["sent"]  # every other client, not the sender
    assert summary["delivered"] == summary["expected"] and summary["lost"] == 0
    assert summary["duplicated"] == 0 and summary["out_of_order"] == 0
    assert summary["p50_latency_ms"] is not None and summary["foreign"] == 0
    assert set(summary["per_client"]) == {"c0001", "c0002", "c0003"}
    assert summary["per_node"] == {"?": summary["per_node"]["?"]}  # no balancer, no node
