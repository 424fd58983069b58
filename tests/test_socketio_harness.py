"""The Socket.IO harness flavour: python-socketio nodes over the real broker behind the real
sticky balancer. A client rides through a node SIGKILL and a drain, messages fan out across
nodes through Redis, polling sessions stay on one node in ip and cookie modes, auth is
enforced, stats/health/metrics match the ws node's, and `wsconsole harness --flavour
socketio` runs as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support import MS, SCALE, ProcessRegistry, pid_alive, until
from tests.test_connect_cli import ENV, ROOT, WAIT, Lines
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.events import ErrorEvent
from wsconsole.core.lifecycle import State, Transition
from wsconsole.core.localca import DATA_DIR_ENV
from wsconsole.core.targets.socketio import SocketIOClient, SocketIOOptions
from wsconsole.harness.cluster import Cluster, ClusterConfig
from wsconsole.harness.procs import child_argv

CLUSTER_WAIT_S = 30.0  # seconds for until(), which scales it
CLUSTER_WAIT = CLUSTER_WAIT_S * SCALE  # the same bound for every other wait


@contextlib.asynccontextmanager
async def sio_cluster(**overrides: Any) -> AsyncIterator[Cluster]:
    """A started Socket.IO-flavour cluster (demo timings); every child gone afterwards."""
    config = ClusterConfig.demo(flavour="socketio", nodes=overrides.pop("nodes", 2),
                                **overrides)
    cluster = Cluster(config)
    pids: set[int] = set()
    try:
        await cluster.start()
        pids |= set(cluster.pids())
        yield cluster
    finally:
        pids |= set(cluster.pids())
        await cluster.stop()
        assert not [pid for pid in pids if pid_alive(pid)], "a child outlived stop()"


def client(cluster: Cluster, log: list[Any], name: str = "c", **kw: Any) -> SocketIOClient:
    """A Socket.IO client for the cluster's balancer with a valid token."""
    opts: dict[str, Any] = dict(auth={"token": cluster.token("qa")}, transports=["websocket"],
                                backoff=BackoffPolicy(initial=100 * MS, cap=1.0, jitter=0),
                                connect_timeout=5.0, ack_timeout=5.0)
    opts.update(kw)
    return SocketIOClient(SocketIOOptions(url=cluster.url, **opts), name=name,
                          observers=[log.append])


async def whoami(c: SocketIOClient) -> dict[str, Any]:
    reply = await c.emit("whoami", ack=True)
    assert reply is not None
    return reply[0]


async def test_client_rides_through_a_node_kill_and_a_drain() -> None:
    async with sio_cluster(nodes=3) as cluster:
        log: list[Any] = []
        got: list[tuple[str, str, tuple[Any, ...]]] = []
        c = client(cluster, log, rooms=["lobby"])
        c.on_event(lambda ns, ev, args: got.append((ns, ev, args)))
        await c.start()
        try:
            await c.wait_state(State.OPEN, CLUSTER_WAIT)
            first = await whoami(c)
            assert first["user"] == "qa"
            assert first["rooms"] == ["lobby"]
            # SIGKILL the node serving us: the client reconnects elsewhere via the balancer
            await cluster.kill(first["node"])
            await c.wait_state(State.RECONNECTING, CLUSTER_WAIT)
            await c.wait_state(State.OPEN, CLUSTER_WAIT)
            second = await whoami(c)
            assert second["node"] != first["node"] and second["rooms"] == ["lobby"]
            # a publisher on whichever node: the message fans out through the broker
            plog: list[Any] = []
            pub = client(cluster, plog, "pub")
            await pub.start()
            try:
                await pub.wait_state(State.OPEN, CLUSTER_WAIT)
                status, acked = await pub.emit("publish", "lobby", {"n": 1}, ack=True) or [None, {}]
                assert status == "ok" and acked["seq"] >= 1 and acked["epoch"]
                await until(lambda: any(ev == "message" and args[0]["data"] == {"n": 1}
                                        for _, ev, args in got),
                            "the fanned-out message", CLUSTER_WAIT_S)
            finally:
                await pub.stop()
            # drain the node we are on now: disconnected, back on the remaining node
            await cluster.drain(second["node"])
            await until(lambda: c.state is State.OPEN and sum(
                1 for e in log if isinstance(e, Transition) and e.state is State.OPEN) == 3,
                "the reconnect after the drain", CLUSTER_WAIT_S)
            third = await whoami(c)
            assert third["node"] not in (first["node"], second["node"])
        finally:
            await c.stop()
    waits = [e for e in log if isinstance(e, Transition) and e.state is State.RECONNECTING]
    assert len(waits) >= 2 and all(w.previous is State.OPEN for w in waits[:1])
    assert c.stats.reconnects == 2


@pytest.mark.parametrize("sticky", ["ip", "cookie"])
async def test_polling_sessions_stay_on_one_node(sticky: str) -> None:
    async with sio_cluster(nodes=3, sticky=sticky) as cluster:
        for i in range(3):
            log: list[Any] = []
            c = client(cluster, log, f"p{i}", transports=["polling"])
            await c.start()
            try:
                await c.wait_state(State.OPEN, CLUSTER_WAIT)
                assert c.transport == "polling"
                nodes = set()
                for _ in range(6):  # each ack is a POST plus a long-poll GET
                    nodes.add((await whoami(c))["node"])
                    await asyncio.sleep(0.03)
                assert len(nodes) == 1, nodes
            finally:
                await c.stop()
            assert not [e for e in log if isinstance(e, ErrorEvent)]


async def test_auth_stats_health_and_metrics() -> None:
    async with sio_cluster(nodes=2) as cluster:
        bad: list[Any] = []
        refused = client(cluster, bad, "bad", auth={"token": "not-a-jwt"},
                         backoff=BackoffPolicy(initial=0, jitter=0, max_attempts=0))
        await refused.start()
        async with asyncio.timeout(CLUSTER_WAIT):
            await refused.wait_closed()
        [refusal, _gave_up] = [e for e in bad if isinstance(e, ErrorEvent)]
        assert refusal.kind == "handshake_rejected"
        assert refusal.detail == "connection refused by the server: /: malformed token"
        # a browser Origin outside the allow-list is refused like on the ws nodes
        foreign: list[Any] = []
        evil = client(cluster, foreign, "evil", headers=[("Origin", "http://evil.example")],
                      backoff=BackoffPolicy(initial=0, jitter=0, max_attempts=0))
        await evil.start()
        async with asyncio.timeout(CLUSTER_WAIT):
            await evil.wait_closed()
        [why, _gave_up] = [e for e in foreign if isinstance(e, ErrorEvent)]
        assert why.kind == "handshake_rejected"
        assert why.detail == 'HTTP 400: "http://evil.example is not an accepted origin."'
        assert evil.lifecycle.history[-1].state is State.CLOSED
        assert not any(isinstance(e, Transition) and e.state is State.OPEN for e in foreign)
        log: list[Any] = []
        c = client(cluster, log)
        await c.start()
        try:
            await c.wait_state(State.OPEN, CLUSTER_WAIT)
            await until(lambda: cluster.latest.total.connections == 1,
                        "the node stats to count the client", CLUSTER_WAIT_S)
            node = cluster.nodes[(await whoami(c))["node"]]
            stats = await cluster.request(node.id, "stats")
            assert stats["type"] == "reply" and stats["flavour"] == "socketio"
            assert stats["connections"] == 1
            async with httpx.AsyncClient(timeout=5) as http:
                health = await http.get(f"http://127.0.0.1:{node.port}/healthz")
                metrics = await http.get(node.metrics_url or "")
            [listed] = await cluster.connections(node.id)
            assert listed["user"] == "qa" and listed["id"]
            assert health.status_code == 200 and health.text == "ok"
            assert c.latency is not None and c.latency > 0  # the whoami ack round trip
            assert f'wsconsole_connections{{node="{node.id}"}} 1.0' in metrics.text
            assert "wsconsole_auth_failures" in metrics.text
        finally:
            await c.stop()


def test_harness_cli_flavour_socketio(procs: ProcessRegistry) -> None:
    proc = procs.start(child_argv("harness", "--flavour", "socketio", "--nodes", "2", "--json",
                                  "--demo-timings", "--stats-interval", "0.5"),
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd=ROOT, env=ENV)
    lines = Lines(proc)
    ready = lines.expect(lambda e: "url" in e and "nodes" in e, timeout=WAIT * 3)
    assert ready["flavour"] == "socketio" and ready["url"].startswith("http://127.0.0.1:")
    connect = procs.start(child_argv("connect", "--socketio", ready["url"], "--json",
                                     "--transport", "websocket", "--auth",
                                     json.dumps({"token": ready["token"]}),
                                     "--send", "/call whoami", "--duration", "2"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
    out, err = connect.communicate(timeout=WAIT * 2)
    assert connect.returncode == 0, err
    acks = [json.loads(line) for line in out.splitlines() if b'"event":"ack"' in line]
    assert acks and acks[0]["args"][0]["node"] in {n["id"] for n in ready["nodes"]}
    assert proc.stdin is not None
    proc.stdin.write(b"quit\n")
    proc.stdin.flush()
    assert proc.wait(timeout=WAIT * 2) == 0


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_socketio_flavour_over_tls(transport: str, tmp_path: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """--tls with Socket.IO nodes: the console's Socket.IO client trusts the local CA on
    loopback by itself, over long-polling (HTTPS) and over the WebSocket (wss://)."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    async with sio_cluster(nodes=1, tls=True) as cluster:
        assert cluster.url.startswith("wss://")
        log: list[Any] = []
        c = client(cluster, log, transports=[transport])
        await c.start()
        try:
            await c.wait_state(State.OPEN, CLUSTER_WAIT)
            assert (await whoami(c))["node"] == "n1"
        finally:
            await c.stop()
