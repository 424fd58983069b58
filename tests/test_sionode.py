"""The Socket.IO node flavour keeps the ws node's promises: what a client missed while its
node was SIGKILLed comes back from the broker's history (with epochs), the per-connection
rate and the per-user limit hold, and "inject" reaches a Socket.IO session's websocket.

The clients are python-socketio's own, each straight to one node's port, so the test says
which node is killed and which one the client comes back to.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import socketio

from tests.support import SCALE, pid_alive, until
from wsconsole.harness.cluster import Cluster, ClusterConfig, Limits

WAIT_S = 20.0  # seconds for until(), which scales it
WAIT = WAIT_S * SCALE  # the same bound for the Socket.IO client's own timeouts


@contextlib.asynccontextmanager
async def sio_cluster(**limits: Any) -> AsyncIterator[Cluster]:
    """Two Socket.IO nodes (demo timings) with these limits; every child gone afterwards."""
    cluster = Cluster(ClusterConfig.demo(flavour="socketio", nodes=2, limits=Limits(**limits)))
    pids: set[int] = set()
    try:
        await cluster.start()
        pids |= set(cluster.pids())
        yield cluster
    finally:
        pids |= set(cluster.pids())
        await cluster.stop()
        assert not [pid for pid in pids if pid_alive(pid)]


class Listener:
    """A python-socketio client straight to one node that records what it is sent."""

    def __init__(self, cluster: Cluster, user: str) -> None:
        self.cluster = cluster
        self.user = user
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, dict[str, Any]]] = []
        for event in ("joined", "message", "error", "connect_error"):
            self.sio.on(event, lambda data, event=event: self.events.append((event, data)))

    async def connect(self, node: str) -> None:
        port = self.cluster.nodes[node].port
        await self.sio.connect(f"http://127.0.0.1:{port}", transports=["websocket"],
                               auth={"token": self.cluster.token(self.user)},
                               wait_timeout=WAIT)  # fmt: skip

    def seen(self, event: str) -> list[dict[str, Any]]:
        return [data for kind, data in self.events if kind == event]


async def test_a_client_away_during_a_node_kill_gets_what_it_missed() -> None:
    async with sio_cluster() as cluster:
        n1, n2 = list(cluster.nodes)
        reader, writer = Listener(cluster, "reader"), Listener(cluster, "writer")
        await reader.connect(n1)
        await writer.connect(n2)
        try:
            assert await reader.sio.call("join", "lobby", timeout=WAIT) == ("joined", "lobby")
            await until(lambda: reader.seen("joined"), "the joined event", WAIT_S)
            epoch = reader.seen("joined")[0]["epoch"]
            for n in range(3):
                status, acked = await writer.sio.call("publish", ("lobby", n, f"m{n}"))
                assert (status, acked["id"], acked["seq"], acked["epoch"]) == (
                    "ok", f"m{n}", n + 1, epoch
                )
            await until(lambda: len(reader.seen("message")) == 3, "3 messages", WAIT_S)
            await cluster.kill(n1)  # the reader's node dies without a word
            await until(lambda: not reader.sio.connected, "the reader cut off", WAIT_S)
            for n in range(3, 7):
                await writer.sio.call("publish", ("lobby", n, f"m{n}"))
            again = Listener(cluster, "reader")
            await again.connect(n2)
            try:
                last = reader.seen("message")[-1]
                since = {"since": last["seq"], "epoch": last["epoch"]}
                assert await again.sio.call("join", ("lobby", since)) == ("joined", "lobby")
                await until(lambda: len(again.seen("message")) == 4, "the missed 4", WAIT_S)
                [joined] = again.seen("joined")
                assert (joined["epoch"], joined["seq"], "reset" in joined) == (epoch, 7, False)
                missed = again.seen("message")
                assert [(m["seq"], m["id"], m["node"]) for m in missed] == [
                    (4, "m3", n2), (5, "m4", n2), (6, "m5", n2), (7, "m6", n2)
                ]
                await writer.sio.call("publish", ("lobby", "live", "live"))
                await until(lambda: len(again.seen("message")) == 5, "the live one", WAIT_S)
            finally:
                await again.sio.disconnect()
        finally:
            for client in (reader, writer):
                if client.sio.connected:
                    await client.sio.disconnect()


async def test_the_rate_limit_and_the_per_user_limit_hold() -> None:
    async with sio_cluster(rate=5, per_user=1) as cluster:
        n1 = next(iter(cluster.nodes))
        first = Listener(cluster, "alice")
        await first.connect(n1)
        try:
            second = Listener(cluster, "alice")
            with pytest.raises(socketio.exceptions.ConnectionError):
                await second.connect(n1)
            [refusal] = second.seen("connect_error")
            assert refusal["message"] == "too many connections for this user (1)"
            replies = []
            for n in range(30):  # far over 5/s: refused, then cut off for abuse
                if not first.sio.connected:
                    break
                with contextlib.suppress(socketio.exceptions.TimeoutError):
                    replies.append(await first.sio.call("publish", ("r", n, f"p{n}"), timeout=2))
            statuses = [status for status, _ in replies]
            assert statuses[:5] == ["ok"] * 5, statuses
            refused = [body for status, body in replies if status == "error"]
            assert refused and all(body["code"] == "rate_limited" for body in refused)
            await until(lambda: not first.sio.connected, "disconnected for abuse", WAIT_S)
            stats = await cluster.request(n1, "stats")
            assert stats["rate_limited"] >= 10 and stats["errors"]["rate_abuse"] == 1
            assert stats["errors"]["per_user_limit"] == 1
        finally:
            if first.sio.connected:
                await first.sio.disconnect()


async def test_inject_writes_a_malformed_frame_to_a_socketio_websocket() -> None:
    async with sio_cluster() as cluster:
        n1 = next(iter(cluster.nodes))
        victim = Listener(cluster, "victim")
        await victim.connect(n1)
        try:
            reply = await cluster.inject(n1, "rsv1-set", "all", wait=3)
            assert (reply["sent"], reply["kind"], reply["case"]) == (1, "all", "rsv1-set")
            [reaction] = reply["reactions"]
            assert "closed" in reaction["observed"] and reaction["verdict"].startswith("pass")
            await until(lambda: not victim.sio.connected, "the client gone", WAIT_S)
        finally:
            if victim.sio.connected:
                await victim.sio.disconnect()
