"""The supervisor end to end: real broker, real node processes, the real balancer, real sockets.

Clients here are plain `websockets` connections with a tiny reconnect loop of their own (join
with `since` = the last seq seen, re-send unacknowledged publishes with the same id), so what
the tests prove is the harness's guarantee, not a client library's bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from tests.support import MS, pid_alive, until, wait_for
from wsconsole.core.envelope import encode, parse_server
from wsconsole.core.tasks import spawn
from wsconsole.harness.cluster import Cluster, ClusterConfig, ClusterError, NodeState
from wsconsole.harness.routing import rendezvous
from wsconsole.harness.stats import NodeFigures

WAIT = 20_000 * MS  # generous upper bound for anything that should take a second or two
WAIT_S = 20.0  # the same bound for until(), which scales it itself


def config(**overrides: Any) -> ClusterConfig:
    """A test cluster: demo heartbeat, fast health checks and samples."""
    values: dict[str, Any] = {"nodes": 3, "health_interval": 0.25, "stats_interval": 0.25}
    values.update(overrides)
    return ClusterConfig.demo(**values)


@pytest.fixture
async def cluster(tmp_path: Any, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """A started cluster (indirect param = number of nodes, default 3); nothing may outlive it."""
    nodes = getattr(request, "param", 3)
    harness = Cluster(config(nodes=nodes, log_dir=str(tmp_path / "logs")))
    events: list[dict[str, Any]] = []
    harness.subscribe(events.append)
    harness.events = events  # type: ignore[attr-defined]
    began = time.monotonic()
    await harness.start()
    print(f"\ncluster of {nodes} ready in {time.monotonic() - began:.2f} s")
    pids = set(harness.pids())
    try:
        yield harness
    finally:
        pids |= set(harness.pids())
        await harness.stop()
        assert not [pid for pid in pids if pid_alive(pid)], "a child outlived stop()"


def source_addresses(ids: list[str], per_node: int) -> dict[str, list[str]]:
    """127.0.0.x source addresses that ip-hash onto each node of `ids` (all the healthy ones)."""
    found: dict[str, list[str]] = {node_id: [] for node_id in ids}
    for x in range(2, 250):
        address = f"127.0.0.{x}"
        owner = rendezvous(address, ids)
        assert owner is not None
        if len(found[owner]) < per_node:
            found[owner].append(address)
        if all(len(v) == per_node for v in found.values()):
            return found
    raise AssertionError("not enough loopback addresses for an even spread")


class RoomClient:
    """A harness-protocol client in one room with its own reconnect, recovery and re-send."""

    def __init__(self, url: str, token: str, room: str, name: str, address: str) -> None:
        self.url = f"{url}/?token={token}"
        self.room = room
        self.name = name
        self.address = address
        self.raw_seqs: list[int] = []  # every message seq in arrival order (duplicates kept)
        self.messages: dict[int, dict[str, Any]] = {}
        self.last_seq: int | None = None
        self.joined_seq: int | None = None
        self.pending: dict[str, Any] = {}  # publish id -> data, until acked
        self.acked: dict[str, int] = {}
        self.errors: list[dict[str, Any]] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.closes: list[int | None] = []
        self.opens = 0
        self.resets = 0
        self.before_reset: dict[str, dict[str, Any]] = {}
        self.ws: ClientConnection | None = None
        self.joined = asyncio.Event()
        self._stop = False
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the connection loop in the background."""
        self._task = asyncio.create_task(self._run(), name=f"client-{self.name}")

    async def stop(self) -> None:
        """Close and stop reconnecting."""
        self._stop = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stop:
            try:
                async with connect(
                    self.url,
                    local_addr=(self.address, 0),
                    open_timeout=5,
                    close_timeout=1,
                    ping_interval=1,
                    ping_timeout=2,
                ) as ws:
                    self.opens += 1
                    await ws.send(encode("join", room=self.room, since=self.last_seq))
                    # re-send what is unacknowledged, in order, including anything queued
                    # while re-sending; only then does publish() send directly
                    sent: set[str] = set()
                    while batch := [i for i in self.pending if i not in sent]:
                        for ident in batch:
                            data = self.pending.get(ident)
                            sent.add(ident)
                            if ident in self.pending:
                                await ws.send(
                                    encode("publish", room=self.room, data=data, id=ident)
                                )
                    self.ws = ws
                    async for raw in ws:
                        self._handle(parse_server(raw))
                    self.closes.append(ws.close_code)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                code = getattr(exc, "rcvd", None)
                self.closes.append(code.code if code is not None else None)
            finally:
                self.ws = None
                self.joined.clear()
            await asyncio.sleep(0.1)

    def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "joined":
            if frame.get("reset"):  # the broker lost its state: the room starts again at 0
                self.resets += 1
                self.before_reset.update((m["id"], m) for m in self.messages.values())
                self.messages.clear()
                self.raw_seqs.clear()
                self.last_seq = self.joined_seq = 0
            if self.joined_seq is None:
                self.joined_seq = frame["seq"]
            if self.last_seq is None:
                self.last_seq = frame["seq"]
            self.joined.set()
        elif kind == "message":
            seq = frame["seq"]
            self.raw_seqs.append(seq)
            self.messages.setdefault(seq, frame)
            self.last_seq = max(seq, self.last_seq or 0)
        elif kind == "ack":
            self.pending.pop(frame["id"], None)
            self.acked[frame["id"]] = frame["seq"]
        elif kind == "result":
            self.results[frame["id"]] = frame
        elif kind == "error":
            self.errors.append(frame)
            if frame.get("code") == "broker_busy" and frame.get("id") in self.pending:
                spawn(self._resend(frame["id"], frame.get("retry_after") or 0.1), "resend")

    async def _resend(self, ident: str, after: float) -> None:
        """A publish refused as busy (not taken: protocol.md) goes again after `after` s."""
        await asyncio.sleep(after)
        ws, data = self.ws, self.pending.get(ident)
        if ws is not None and ident in self.pending:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await ws.send(encode("publish", room=self.room, data=data, id=ident))

    async def publish(self, data: Any) -> str:
        """Queue one message and send it now if connected (re-sent after a reconnect if unacked)."""
        ident = f"{self.name}-{next(self._ids)}"
        self.pending[ident] = data
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(websockets.exceptions.ConnectionClosed):
                await ws.send(encode("publish", room=self.room, data=data, id=ident))
        return ident

    async def rpc(self, method: str, params: Any = None, timeout: float = 5.0) -> dict[str, Any]:
        """Call a node rpc and await its result."""
        ident = f"rpc-{self.name}-{next(self._ids)}"
        assert self.ws is not None
        await self.ws.send(encode("rpc", id=ident, method=method, params=params))
        await until(lambda: ident in self.results, f"rpc {method}", timeout)
        return self.results.pop(ident)


async def open_clients(cluster: Cluster, room: str, per_node: int) -> list[RoomClient]:
    """Clients spread `per_node` per node by source address, each joined to `room`."""
    ids = list(cluster.nodes)
    spread = source_addresses(ids, per_node)
    clients = []
    for node_id, addresses in spread.items():
        for i, address in enumerate(addresses):
            name = f"{node_id}c{i}"
            client = RoomClient(cluster.url, cluster.token(f"user-{name}"), room, name, address)
            client.home = node_id  # type: ignore[attr-defined]
            client.start()
            clients.append(client)
    for client in clients:
        await asyncio.wait_for(client.joined.wait(), WAIT)
    return clients


async def node_of(cluster: Cluster, user: str) -> str | None:
    """Which node holds `user`'s connection, asked of every running node over control."""
    for node_id, info in cluster.nodes.items():
        if info.state != NodeState.RUNNING:
            continue
        for conn in await cluster.connections(node_id):
            if conn.get("user") == user:
                return node_id
    return None


def node_stats(cluster: Cluster) -> list[NodeFigures]:
    """The latest merged figures of every node (one unknown before the first sample)."""
    nodes = cluster.latest.nodes
    return [nodes[i] for i in cluster.nodes if i in nodes] if nodes else [NodeFigures()]


def process_state(pid: int) -> str:
    """The one-letter state of a process in /proc (R, S, T for stopped, Z...)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0]


def http_get(url: str) -> tuple[int, str]:
    """A blocking GET (run in a thread)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


# ---------------------------------------------------------------------------------------------


async def test_start_reports_every_part_ready_and_stop_leaves_nothing(tmp_path: Any) -> None:
    harness = Cluster(config(log_dir=str(tmp_path)))
    events: list[dict[str, Any]] = []
    harness.subscribe(events.append)
    await harness.start()
    try:
        print(f"\ntime to ready (broker + 3 nodes + balancer): {harness.ready_seconds:.2f} s")
        assert harness.url.startswith("ws://127.0.0.1:")
        assert [n.state for n in harness.nodes.values()] == [NodeState.RUNNING] * 3
        assert harness.broker.state == "up" and harness.broker.pid is not None
        assert harness.balancer.state == "running"
        pids = harness.pids()
        assert len(pids) == 5 and all(pid_alive(pid) for pid in pids)
        for info in harness.nodes.values():
            assert info.metrics_url is not None
            status, body = await asyncio.to_thread(http_get, info.metrics_url)
            assert status == 200 and "# TYPE" in body
            status, _ = await asyncio.to_thread(
                http_get, info.metrics_url.replace("/metrics", "/healthz")
            )
            assert status == 200
        running = {e["id"] for e in events if e["event"] == "node" and e["state"] == "running"}
        assert running == set(harness.nodes)
        await until(
            lambda: harness.latest.nodes.keys() >= set(harness.nodes), "every node's stats", WAIT_S
        )
    finally:
        await harness.stop()
        await harness.stop()  # idempotent
    assert not [pid for pid in pids if pid_alive(pid)]
    assert events[-1] == {"event": "cluster", "state": "stopped"}


async def test_two_clients_on_different_nodes_see_each_other(cluster: Cluster) -> None:
    ids = list(cluster.nodes)
    spread = source_addresses(ids, 1)
    a = RoomClient(cluster.url, cluster.token("alice"), "lobby", "alice", spread[ids[0]][0])
    b = RoomClient(cluster.url, cluster.token("bob"), "lobby", "bob", spread[ids[1]][0])
    for client in (a, b):
        client.start()
        await asyncio.wait_for(client.joined.wait(), WAIT)
    try:
        where = {await node_of(cluster, "alice"), await node_of(cluster, "bob")}
        assert where == {ids[0], ids[1]}, "ip-hash should put them on different nodes"
        from_a = await a.publish({"text": "hello from a"})
        from_b = await b.publish({"text": "hello from b"})
        await until(
            lambda: len(a.messages) == 2 and len(b.messages) == 2,
            what="both messages",
            timeout=WAIT_S,
        )
        for client in (a, b):
            got = {m["id"]: m for m in client.messages.values()}
            assert got[from_a]["data"] == {"text": "hello from a"}
            assert got[from_b]["data"] == {"text": "hello from b"}
        assert a.acked.keys() == {from_a} and b.acked.keys() == {from_b}
        # network faults go through the supervisor to the balancer, live, and come off again
        reply = await cluster.net_fault("all", "latency", ms=150)
        assert reply["faults"], "the balancer lists the active fault"
        began = time.monotonic()
        await a.rpc("echo", "slow")
        slow = time.monotonic() - began
        assert slow >= 0.25, f"a round trip under 150 ms latency each way took {slow:.3f} s"
        cleared = await cluster.net_clear("all")
        assert cleared["faults"] == []
        began = time.monotonic()
        await a.rpc("echo", "fast")
        print(
            f"\nrpc round trip: {slow:.3f} s with latency 150 ms, "
            f"{time.monotonic() - began:.3f} s after clearing"
        )
        with pytest.raises(ClusterError, match="unknown node"):
            await cluster.net_fault("n42", "blackhole")
        # the cluster's secret reached the nodes: its tokens pass, anything else is refused
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await connect(f"{cluster.url}/?token=not-a-jwt", open_timeout=5)
        assert refused.value.response.status_code == 401
    finally:
        await a.stop()
        await b.stop()


async def test_node_killed_under_load_loses_nothing_and_duplicates_nothing(
    cluster: Cluster,
) -> None:
    clients = await open_clients(cluster, "load", per_node=2)
    victim = list(cluster.nodes)[1]
    victims = [c for c in clients if c.home == victim]  # type: ignore[attr-defined]
    assert await node_of(cluster, f"user-{victims[0].name}") == victim
    stop_load = asyncio.Event()

    async def load(client: RoomClient) -> None:
        while not stop_load.is_set():
            await client.publish({"from": client.name, "at": time.time()})
            await asyncio.sleep(0.05)  # 20 msg/s per client, 120 msg/s over the room

    loaders = [asyncio.create_task(load(c)) for c in clients]
    try:
        await until(lambda: all(len(c.acked) >= 10 for c in clients), "load flowing", WAIT_S)
        opens_before = {c.name: c.opens for c in victims}
        await cluster.kill(victim)
        assert cluster.nodes[victim].state == NodeState.KILLED
        await until(
            lambda: all(c.opens > opens_before[c.name] and c.joined.is_set() for c in victims),
            what="the killed node's clients to reconnect",
            timeout=WAIT_S,
        )
        for client in victims:
            now_on = await node_of(cluster, f"user-{client.name}")
            assert now_on not in (None, victim)
        after = {c.name: len(c.acked) for c in clients}  # the load goes on after the recovery
        await until(
            lambda: all(len(c.acked) >= after[c.name] + 10 for c in clients),
            "load flowing after the recovery",
            WAIT_S,
        )
    finally:
        stop_load.set()
        await asyncio.gather(*loaders)
    try:
        await until(
            lambda: not any(c.pending for c in clients),
            what="every publish acked",
            timeout=WAIT_S,
            detail=lambda: {c.name: (list(c.pending)[:3], c.errors[-3:]) for c in clients},
        )
        acked = {ident: seq for c in clients for ident, seq in c.acked.items()}
        top = max(acked.values())
        await until(
            lambda: all((c.last_seq or 0) >= top for c in clients),
            what="every delivery",
            timeout=WAIT_S,
        )
        assert len(set(acked.values())) == len(acked), "two publishes share a seq"
        assert not any(c.resets for c in clients)
        for client in clients:
            assert client.raw_seqs == sorted(client.raw_seqs), f"{client.name}: out of order"
            assert len(client.raw_seqs) == len(set(client.raw_seqs)), f"{client.name}: dup"
            start = client.joined_seq or 0
            expected = list(range(start + 1, top + 1))
            assert client.raw_seqs[: len(expected)] == expected, f"{client.name}: gap"
            for ident, seq in acked.items():
                if seq > start:
                    assert client.messages[seq]["id"] == ident
        total = len(acked)
        print(
            f"\nkill under load: {total} acked publishes, {len(clients)} subscribers, "
            f"{len(victims)} reconnected, 0 lost, 0 duplicated"
        )
        node_events = [e for e in cluster.events if e["event"] == "node" and e["id"] == victim]  # type: ignore[attr-defined]
        assert node_events[-1]["state"] == "killed" and node_events[-1]["exit_code"] == -9
    finally:
        await asyncio.gather(*(c.stop() for c in clients))


@pytest.mark.parametrize("cluster", [2], indirect=True)
async def test_broker_kill_fails_publishes_visibly_and_recovers(cluster: Cluster) -> None:
    clients = await open_clients(cluster, "news", per_node=1)
    a, b = clients
    try:
        first = await a.publish("before")
        await until(
            lambda: first in a.acked and len(b.messages) == 1,
            what="a normal publish",
            timeout=WAIT_S,
        )
        await cluster.broker_kill()
        assert cluster.broker.state == "down"
        await until(
            lambda: all(n.broker == "down" and n.up for n in node_stats(cluster)),
            what="every node to see the broker down",
            timeout=WAIT_S,
        )
        failed = await a.publish("while down")
        await until(
            lambda: any(e.get("id") == failed for e in a.errors),
            what="publish error",
            timeout=WAIT_S,
        )
        error = next(e for e in a.errors if e.get("id") == failed)
        assert error["code"] == "broker_unavailable"
        assert a.ws is not None and b.ws is not None, "connections must stay up"
        echo = await a.rpc("echo", {"still": "here"})
        assert echo["id"].startswith("rpc-")
        a.pending.pop(failed, None)  # the client saw the failure; it is not silently retried

        await cluster.broker_restart()
        assert cluster.broker.state == "up"
        await until(
            lambda: all(n.broker == "up" for n in node_stats(cluster)),
            what="every node to reconnect to the broker",
            timeout=WAIT_S,
        )
        after = await b.publish("after")
        await until(
            lambda: after in b.acked, what="a publish acked after the restart", timeout=WAIT_S
        )
        await until(
            lambda: any(m["id"] == after for m in a.messages.values()),
            what="fan-out to the other node after the restart",
            timeout=WAIT_S,
        )
        assert a.resets == 0 and b.resets == 0, "the broker kept its state (append-only file)"
        kinds = [e.get("reason") for e in cluster.events if e["event"] == "broker"]  # type: ignore[attr-defined]
        assert "killed" in kinds

        # a broker that dies behind the supervisor's back is noticed and reported
        assert cluster.broker.pid is not None
        os.kill(cluster.broker.pid, signal.SIGKILL)
        await until(
            lambda: cluster.broker.state == "down",
            what="unexpected broker exit seen",
            timeout=WAIT_S,
        )
        last = [e for e in cluster.events if e["event"] == "broker"][-1]  # type: ignore[attr-defined]
        assert last["reason"] == "exited" and last["expected"] is False
        await cluster.broker_restart()
        assert cluster.broker.state == "up" and pid_alive(cluster.broker.pid or 0)
    finally:
        await asyncio.gather(*(c.stop() for c in clients))


async def test_pause_resume_drain_restart_add(cluster: Cluster) -> None:
    n1, n2, n3 = list(cluster.nodes)
    events = cluster.events  # type: ignore[attr-defined]

    def healthy(node_id: str) -> bool | None:
        backend = cluster.latest.balancer.backends.get(node_id)
        return None if backend is None else backend.healthy

    # pause: SIGSTOP; the balancer stops routing to it within 2 s; resume brings it back
    began = time.monotonic()
    await cluster.pause(n1)
    assert cluster.nodes[n1].state == NodeState.PAUSED
    await until(lambda: healthy(n1) is False, what="paused node unhealthy", timeout=WAIT_S)
    print(f"\npaused node seen unhealthy after {time.monotonic() - began:.2f} s")
    assert process_state(cluster.nodes[n1].pid or 0) == "T"  # stopped by SIGSTOP
    await cluster.resume(n1)
    assert cluster.nodes[n1].state == NodeState.RUNNING
    await until(lambda: healthy(n1) is True, what="resumed node healthy", timeout=WAIT_S)
    with pytest.raises(ClusterError, match="not paused"):
        await cluster.resume(n1)

    # drain: clients on the node are closed with 1001 and reconnect elsewhere; the node exits
    spread = source_addresses([n1, n2, n3], 1)
    client = RoomClient(cluster.url, cluster.token("dave"), "ops", "dave", spread[n2][0])
    client.start()
    await asyncio.wait_for(client.joined.wait(), WAIT)
    try:
        assert await node_of(cluster, "dave") == n2
        old_pid = cluster.nodes[n2].pid
        assert old_pid is not None
        await cluster.drain(n2)
        assert cluster.nodes[n2].state == NodeState.STOPPED
        assert not pid_alive(old_pid)
        await until(
            lambda: 1001 in client.closes, what="close code 1001 going away", timeout=WAIT_S
        )
        await until(
            lambda: client.joined.is_set() and client.opens >= 2, what="reconnect", timeout=WAIT_S
        )
        assert await node_of(cluster, "dave") in (n1, n3)
        states = [e["state"] for e in events if e["event"] == "node" and e["id"] == n2]
        assert states[-2:] == ["draining", "stopped"]
    finally:
        await client.stop()

    # restart: a new process under the same id, on a new port, back behind the balancer
    old_port = cluster.nodes[n2].port
    await cluster.restart(n2)
    info = cluster.nodes[n2]
    assert info.state == NodeState.RUNNING and info.pid != old_pid and pid_alive(info.pid or 0)
    await until(lambda: healthy(n2) is True, what="restarted node healthy", timeout=WAIT_S)
    print(f"restarted {n2}: port {old_port} -> {info.port}")

    # restart a live node (n3): the old process is replaced
    live_pid = cluster.nodes[n3].pid
    await cluster.restart(n3)
    assert cluster.nodes[n3].pid != live_pid and not pid_alive(live_pid or 0)

    # add: one more node, routable
    new_id = await cluster.add()
    assert new_id == "n4" and cluster.nodes[new_id].state == NodeState.RUNNING
    await until(lambda: healthy(new_id) is True, what="added node healthy", timeout=WAIT_S)

    # a process that dies on its own is reported as failed, with its exit code
    victim_pid = cluster.nodes[n1].pid
    assert victim_pid is not None
    os.kill(victim_pid, signal.SIGTERM)  # nobody asked the supervisor: unexpected
    await until(
        lambda: cluster.nodes[n1].state in (NodeState.FAILED,),
        what="failure noticed",
        timeout=WAIT_S,
    )
    failure = [e for e in events if e["event"] == "node" and e["id"] == n1][-1]
    assert failure["expected"] is False and "exit_code" in failure

    with pytest.raises(ClusterError, match="unknown node"):
        await cluster.kill("n99")
    with pytest.raises(ClusterError, match="not running"):
        await cluster.pause(n1)

    # the merged samples name every node, the gone one as down
    await until(
        lambda: set(cluster.latest.nodes) >= {n1, n2, n3, new_id}, "every node sampled", WAIT_S
    )
    await until(lambda: not cluster.latest.nodes[n1].up, "the failed node sampled as down", WAIT_S)
    assert cluster.latest.total.connections == sum(
        n.connections for n in cluster.latest.nodes.values()
    )


async def test_a_failed_start_says_why_and_leaves_nothing(tmp_path: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        harness = Cluster(config(nodes=1, port=port, log_dir=str(tmp_path)))
        started: list[int] = []
        harness.subscribe(lambda e: started.append(e["pid"]) if e.get("pid") else None)
        with pytest.raises(ClusterError, match="balancer failed to start"):
            await harness.start()
    assert started and not [pid for pid in set(started) if pid_alive(pid)]
    with pytest.raises(ClusterError, match="not running"):
        await harness.kill("n1")


def test_children_die_with_an_interpreter_that_never_called_stop(tmp_path: Any) -> None:
    script = (
        "import asyncio, json\n"
        "from wsconsole.harness.cluster import Cluster, ClusterConfig\n"
        "async def main():\n"
        f"    cluster = Cluster(ClusterConfig(nodes=1, log_dir={str(tmp_path)!r}))\n"
        "    await cluster.start()\n"
        "    print(json.dumps(cluster.pids()), flush=True)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    pids = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(pids) == 3  # broker, node, balancer
    assert wait_for(lambda: not [pid for pid in pids if pid_alive(pid)], timeout=10)


def test_children_die_with_a_supervisor_that_was_sigkilled(tmp_path: Any) -> None:
    """SIGKILL leaves atexit no chance: the broker, node and balancer go with PDEATHSIG."""
    script = (
        "import asyncio, json\n"
        "from wsconsole.harness.cluster import Cluster, ClusterConfig\n"
        "async def main():\n"
        f"    cluster = Cluster(ClusterConfig(nodes=1, log_dir={str(tmp_path)!r}))\n"
        "    await cluster.start()\n"
        "    print(json.dumps(cluster.pids()), flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert supervisor.stdout is not None
        pids = json.loads(supervisor.stdout.readline())
        assert len(pids) == 3  # broker, node, balancer
        supervisor.kill()
        supervisor.wait(timeout=10)
        assert wait_for(lambda: not [pid for pid in pids if pid_alive(pid)], timeout=10)
    finally:
        supervisor.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def live_children() -> list[int]:
    """PIDs of this test process's children that are alive (not zombies)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(entry))
    return found


async def test_stop_during_start_leaves_nothing(tmp_path: Any) -> None:
    before = set(await asyncio.to_thread(live_children))
    harness = Cluster(config(log_dir=str(tmp_path)))
    starting = asyncio.create_task(harness.start())
    await until(
        lambda: len(set(live_children()) - before) >= 2, what="children booting", timeout=WAIT_S
    )
    assert not starting.done()
    await harness.stop()
    with pytest.raises(ClusterError):
        await starting
    await until(
        lambda: not (set(live_children()) - before),
        what="every child started to be gone",
        timeout=WAIT_S,
    )
