"""Issue 19 across hosts: two hosts simulated with network namespaces (tests/netns.py), each
with its agent (`wsconsole agent`, started in the namespace) that starts the host's demo
nodes; a local Valkey Cluster of three shards on the bridge; the console (AgentsClient, the
clients) in the root namespace.

Every delivery claim is judged by the independent client (tests/protoclient.py, written from
docs/protocol.md): its ledger checks that each acknowledged message reached every subscriber
exactly once and in order, or that the subscriber was told it would not come.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode

from tests.agentkit import SECRET as AGENTS_SECRET
from tests.agentkit import SECRET_ENV as AGENTS_SECRET_ENV
from tests.agentkit import start_agent
from tests.netns import Host, NetLab, hosts, netlab  # noqa: F401  (fixtures)
from tests.protoclient import Ledger, Peer
from tests.shardkit import room_on, spublishes, until_shard
from tests.support import SCALE, pid_alive, until
from wsconsole.harness import procs
from wsconsole.harness.agents import AgentsClient, AgentTimeout, ProcView
from wsconsole.harness.agentwire import REPORTS_STREAM, commands_stream
from wsconsole.harness.auth import issue_token, new_secret
from wsconsole.harness.valkeycluster import LocalValkeyCluster

pytestmark = [pytest.mark.netns]

SECRET = new_secret()  # the nodes' JWT secret, in the agents' environment
JWT_ENV = "WSCONSOLE_JWT_SECRET"
NODE_PORT = 8100  # each host is a network stack of its own: nothing else listens there
RATE = 20.0  # publishes per second per publisher
SWARM_ROOMS = ("swarm-0", "swarm-1")  # a swarm's rooms with --rooms 2


@pytest.fixture(scope="module")
def valkey(netlab: NetLab) -> Iterator[LocalValkeyCluster]:  # noqa: F811
    """Three primaries with a replica each, listening on the bridge's address only."""
    cluster = LocalValkeyCluster(3, 1, host=netlab.bridge_address, persist=False)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def server_thread() -> Iterator[ThreadPoolExecutor]:
    """The thread that restarts cluster servers: it lives as long as the cluster, since a
    child dies with the thread that started it (procs.py: PDEATHSIG), and asyncio.to_thread's
    workers end with each test's loop."""
    with ThreadPoolExecutor(1, thread_name_prefix="valkey-restarts") as thread:
        yield thread


@pytest.fixture
async def console(valkey: LocalValkeyCluster) -> AsyncIterator[AgentsClient]:
    """The console's agents client. The agents' streams are emptied after each test, so no
    agent of a later test reads an earlier one's commands, nor the console its reports."""
    client = AgentsClient(valkey.url, AGENTS_SECRET)
    await client.open()
    try:
        yield client
    finally:
        await client.close()
        await asyncio.to_thread(drop_agent_streams, valkey)


def drop_agent_streams(valkey: LocalValkeyCluster) -> None:
    """Delete the agents' report and command streams (blocking: run it in a thread)."""
    client = redis.RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in valkey.seeds])
    try:
        client.delete(REPORTS_STREAM, *(commands_stream(name) for name in ("hostA", "hostB")))
    finally:
        client.close()


@pytest.fixture
def jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes' JWT secret in the environment the agents start with (their nodes and
    workers inherit it; it never travels on the wire)."""
    monkeypatch.setenv(JWT_ENV, SECRET)


def agent_on(host: Host, valkey: LocalValkeyCluster, state_dir: Path) -> subprocess.Popen[bytes]:
    """`wsconsole agent` in the host's namespace, named after it (its log: state_dir/agent.log)."""
    return start_agent(host, valkey.url, host.name, state_dir, "--advertise", host.address)


@pytest.fixture
async def agents(hosts: dict[str, Host], valkey: LocalValkeyCluster,  # noqa: F811
                 console: AgentsClient, tmp_path: Path, jwt_secret: None) -> AgentsClient:
    """An agent on each host, both seen up by the console (the `hosts` fixture kills them
    and their processes by PID after the test)."""
    for host in hosts.values():
        agent_on(host, valkey, tmp_path / host.name)
    for name in hosts:
        await console.wait_for_agent(name, 20)
    return console


async def node_on(console: AgentsClient, host: Host, valkey: LocalValkeyCluster,
                  node_id: str) -> tuple[str, ProcView]:
    """A demo node on `host` started by its agent, on the cluster broker; once it listens,
    its ws:// URL and the agent's row for it."""
    row = await console.start(host.name, node_id, "node", [
        "--id", node_id, "--redis", valkey.url, "--host", host.address,
        "--port", str(NODE_PORT)])
    await listening(host.address, NODE_PORT)
    return f"ws://{host.address}:{NODE_PORT}", row


async def listening(address: str, port: int) -> None:
    """Wait until something accepts TCP connections at address:port."""
    async def accepts() -> bool:
        try:
            _, writer = await asyncio.open_connection(address, port)
        except OSError:
            return False
        writer.close()
        return True

    await until(accepts, f"a node listening at {address}:{port}", 20, interval=0.1)


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
    hosts: dict[str, Host], valkey: LocalValkeyCluster, agents: AgentsClient,  # noqa: F811
    peers: Any,
) -> None:
    subscribed_at, _ = await node_on(agents, hosts["hostA"], valkey, "a1")
    published_at, _ = await node_on(agents, hosts["hostB"], valkey, "b1")
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
    hosts: dict[str, Host], valkey: LocalValkeyCluster, agents: AgentsClient,  # noqa: F811
    peers: Any, server_thread: ThreadPoolExecutor,
) -> None:
    (on_a, _), (on_b, _) = await asyncio.gather(node_on(agents, hosts["hostA"], valkey, "a1"),
                                                node_on(agents, hosts["hostB"], valkey, "b1"))
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
    await asyncio.get_running_loop().run_in_executor(server_thread, valkey.restart, killed)
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


async def test_an_agent_killed_and_restarted_readopts_its_serving_node(
    hosts: dict[str, Host], valkey: LocalValkeyCluster, console: AgentsClient,  # noqa: F811
    peers: Any, tmp_path: Path, jwt_secret: None,
) -> None:
    host = hosts["hostA"]
    agent = agent_on(host, valkey, tmp_path)
    await console.wait_for_agent("hostA", 20)
    url, node = await node_on(console, host, valkey, "a1")
    room = room_on(valkey, "s1")
    ledger = Ledger()
    peers("sub", url, [room], ledger)
    await joined(ledger, 1)
    publisher = peers("pub", url, [room], ledger, publish_to=room)
    await until(lambda: len(ledger.acks) >= 10, "publishing under way", 15)
    host.stop(agent, None)  # SIGKILL, by PID
    await until(lambda: console.agents()["hostA"].lost, "the killed agent seen lost", 10)
    acked, got = len(ledger.acks), len(ledger.streams[("sub", room)])
    await until(lambda: len(ledger.acks) >= acked + 20
                and len(ledger.streams[("sub", room)]) >= got + 20,
                "the node serving its clients without its agent", 15)
    assert pid_alive(node.pid)
    again = agent_on(host, valkey, tmp_path)  # the same state folder
    view = await console.wait_for_agent("hostA", 20)
    assert view.pid == again.pid
    assert [(p.proc, p.pid, p.state) for p in view.procs] == [("a1", node.pid, "running")]
    restarted = await console.restart("hostA", "a1")  # the re-adopted node obeys again
    assert restarted.pid != node.pid and restarted.state == "running"
    assert not pid_alive(node.pid)
    await listening(host.address, NODE_PORT)
    acked = len(ledger.acks)
    await until(lambda: len(ledger.acks) >= acked + 10, "publishing on the restarted node", 15)
    await settle(ledger, [publisher])
    verdict = ledger.judge()
    assert verdict.ok, verdict.problems()
    assert verdict.checked >= 2 * len(ledger.acks)  # the subscriber and the publisher
    assert not ledger.unexpected_errors


async def test_a_command_signed_with_another_secret_is_refused_and_logged(
    hosts: dict[str, Host], valkey: LocalValkeyCluster, agents: AgentsClient,  # noqa: F811
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    host = hosts["hostB"]
    running = set(host.pids())
    async with AgentsClient(valkey.url, new_secret(), timeout=3) as intruder:
        with pytest.raises(AgentTimeout):  # its answer is signed with the real secret
            await intruder.start("hostB", "intruder", "node", [
                "--id", "x1", "--redis", valkey.url, "--host", host.address])
    refusal = "agent hostB refused entry"
    await until(lambda: any(refusal in r.getMessage() and "bad_signature" in r.getMessage()
                            for r in caplog.records), "the console reading the refusal", 10)
    assert "bad_signature" in (tmp_path / "hostB" / "agent.log").read_text()
    assert await agents.status("hostB") == []
    assert set(host.pids()) == running, "a process was started on a forged command"


async def test_swarm_workers_on_both_hosts_merge_to_the_sum_of_their_parts(
    hosts: dict[str, Host], valkey: LocalValkeyCluster, agents: AgentsClient,  # noqa: F811
    peers: Any,
) -> None:
    (on_a, _), (on_b, _) = await asyncio.gather(node_on(agents, hosts["hostA"], valkey, "a1"),
                                                node_on(agents, hosts["hostB"], valkey, "b1"))
    ledger = Ledger()
    peers("watcher", on_b, list(SWARM_ROOMS), ledger)  # on the other host's node
    await joined(ledger, len(SWARM_ROOMS))
    env = {**os.environ, AGENTS_SECRET_ENV: AGENTS_SECRET}
    swarm = await procs.spawn(procs.child_argv(
        "swarm", on_a, "--agents", "hostA,hostB", "--agents-broker", valkey.url,
        "--agents-secret-env", AGENTS_SECRET_ENV, "--secret-env", JWT_ENV, "--clients", "8",
        "--rooms", "2", "--rate", "40", "--duration", "2", "--wait-joined", "20",
        "--settle", "5", "--json"), "swarm", env=env, stderr_lines=40)
    try:
        lines = [json.loads(line) async for line in swarm.lines()]
        assert await swarm.wait(30 * SCALE), "the swarm did not end"
    finally:
        await swarm.stop(timeout=5)
    assert swarm.returncode == 0, swarm.log_tail(10)
    summary, parts = lines[-1], lines[-1]["workers"]
    assert summary["event"] == "summary" and summary["ok"] is True, summary
    assert [(w["where"].split()[0], w["state"], w["clients"]) for w in parts] == \
        [("hostA", "done", 4), ("hostB", "done", 4)]
    assert summary["incomplete"] == [] and summary["lost"] == 0
    # merged = the sum of the parts, each part's figures from its own worker's accounting
    for figure in ("sent", "acknowledged", "delivered"):
        assert summary[figure] == sum(w[figure] for w in parts), figure
    assert summary["sent"] == summary["acknowledged"] >= 60
    # every message reached the 4 swarm subscribers of its room once, in order
    assert summary["delivered"] == summary["expected"] == 4 * summary["acknowledged"]
    # the independent count: the watcher on hostB's node got every swarm message once
    await until(lambda: ledger.received("c")[0] >= summary["acknowledged"],
                "the watcher to get every swarm message", 10)
    assert ledger.received("c") == (summary["acknowledged"], summary["duplicated"],
                                    summary["out_of_order"])
