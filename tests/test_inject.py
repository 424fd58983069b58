"""Server-to-client injection: a real node writes catalogue cases raw to real clients.

Pure rules first (faults/inject.py: request validation, verdicts), then a one-node cluster
(broker, node and balancer processes): plain `websockets` clients and the product's
ReconnectingClient get malformed frames from the node, fail the connection with the RFC's
code, the ReconnectingClient reconnects, and the node keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError
from websockets.sync.client import connect as ws_connect

from tests.support import MS, SCALE, ProcessRegistry, pid_alive, until
from tests.test_harness_cli import HarnessProcess, ready_pids
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.lifecycle import State, Transition
from wsconsole.faults.catalogue import FAIL_1002, FAIL_1007, Expectation, Reaction, get_case
from wsconsole.faults.inject import (
    ALL,
    InjectError,
    describe_reaction,
    judge_reaction,
    parse_request,
    split_target,
)
from wsconsole.faults.probe import Verdict
from wsconsole.harness.cluster import Cluster, ClusterConfig, ClusterError

WAIT_S = 20.0  # seconds for until(), which scales it
WAIT = WAIT_S * SCALE
REACT = 5_000 * MS  # how long the node watches a client react

# ------------------------------------------------------------------ pure rules


def test_parse_request_defaults_and_aliases() -> None:
    request = parse_request({"case": "rsv1-set"})
    assert (request.target, request.count, request.repeat, request.wait) == (ALL, None, 1, 1.0)
    assert parse_request({"case": "rsv1-set", "target": "all"}).target == ALL
    assert parse_request({"case": "rsv1-set", "target": " lobby "}).target == "lobby"
    request = parse_request({"case": "ping-echo", "repeat": 3})
    assert request.data() == get_case("ping-echo").wire() * 3
    # the server's view of the bytes: unmasked frames (the masked case is masked on purpose)
    assert request.data()[1] & 0x80 == 0
    assert parse_request({"case": "masked-server-frame"}).data()[1] & 0x80


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "inject needs case=ID"),
        ({"case": "no-such-case"}, "unknown case id 'no-such-case'"),
        ({"case": "unmasked-client-frame"}, "client-to-server only"),
        ({"case": "app-bad-json"}, "client-to-server only"),
        ({"case": "rsv1-set", "target": ""}, "target must be"),
        ({"case": "rsv1-set", "count": 0}, "count must be an integer"),
        ({"case": "rsv1-set", "repeat": 1000}, "repeat must be an integer"),
        ({"case": "rsv1-set", "repeat": True}, "repeat must be an integer"),
        ({"case": "rsv1-set", "wait": -1}, "wait must be a number"),
        ({"case": "rsv1-set", "wait": "soon"}, "wait must be a number"),
    ],
)
def test_parse_request_refuses_bad_fields_plainly(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InjectError, match=message):
        parse_request(fields)


def test_split_target() -> None:
    assert split_target("conn:abc") == ("conn", "abc")
    assert split_target("room:lobby") == ("room", "lobby")
    assert split_target("lobby") == (None, "lobby")
    assert split_target("conn:") == (None, "conn:")


@pytest.mark.parametrize(
    ("expected", "closed", "code", "verdict"),
    [
        (FAIL_1002, True, 1002, Verdict.PASS),
        (FAIL_1002, True, 1006, Verdict.LENIENT),  # dropped without a close frame
        (FAIL_1002, True, 1000, Verdict.FAIL),
        (FAIL_1002, False, None, Verdict.FAIL),
        (FAIL_1007, True, 1007, Verdict.PASS),
        (FAIL_1007, True, 1002, Verdict.LENIENT),
        (Expectation(Reaction.CLOSE, (1000,)), True, 1000, Verdict.PASS),
        (Expectation(Reaction.CLOSE, (1000,)), False, None, Verdict.FAIL),
        (Expectation(Reaction.WAIT), False, None, Verdict.PASS),
        (Expectation(Reaction.WAIT), True, 1002, Verdict.LENIENT),
        (Expectation(Reaction.ECHO, echo=b"x"), False, None, Verdict.PASS),
        (Expectation(Reaction.IGNORE), True, 1002, Verdict.FAIL),
    ],
)
def test_judge_reaction(
    expected: Expectation, closed: bool, code: int | None, verdict: Verdict
) -> None:
    assert judge_reaction(expected, closed, code)[0] is verdict


def test_describe_reaction() -> None:
    assert describe_reaction(True, 1002, "bad rsv", 0.1) == "closed 1002 'bad rsv'"
    assert describe_reaction(True, 1006, "", 0.1) == "TCP closed without a close frame"
    assert describe_reaction(False, None, "", 1.04) == "still open after 1.0 s"


# ------------------------------------------------------------------ a real node


@pytest.fixture
async def cluster(tmp_path: Any) -> AsyncIterator[Cluster]:
    """One node behind the balancer, demo timings; nothing may outlive it."""
    harness = Cluster(
        ClusterConfig.demo(nodes=1, health_interval=0.25, stats_interval=0.25,
                           log_dir=str(tmp_path))
    )
    await harness.start()
    pids = set(harness.pids())
    try:
        yield harness
    finally:
        pids |= set(harness.pids())
        await harness.stop()
        assert not [pid for pid in pids if pid_alive(pid)]


class Plain:
    """A plain `websockets` client that reads all the time, as an application does (websockets
    checks UTF-8 when a message is read, so a client that never reads never fails it)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                with contextlib.suppress(orjson.JSONDecodeError):
                    self.replies.put_nowait(orjson.loads(raw))

    async def closed_with(self) -> int | None:
        """Wait for the client to end; the close code it sent (its verdict on the frame)."""
        await asyncio.wait_for(self.reader, WAIT)
        assert self.ws.protocol.close_sent is not None, "the client sent no close frame"
        return self.ws.protocol.close_sent.code

    async def still_served(self, ident: str) -> None:
        """The connection answers an rpc: the node still serves it."""
        message = {"type": "rpc", "id": ident, "method": "echo", "params": 1}
        await self.ws.send(orjson.dumps(message).decode())
        while True:
            reply = await asyncio.wait_for(self.replies.get(), WAIT)
            if reply.get("type") == "result":
                assert reply["id"] == ident
                return

    async def close(self) -> None:
        """Close and wait for the reader."""
        await self.ws.close()
        await asyncio.wait_for(self.reader, WAIT)


async def plain_client(cluster: Cluster, user: str, room: str | None = None) -> Plain:
    """A plain `websockets` client through the balancer, joined to `room` if given."""
    ws = await connect(f"{cluster.url}/?token={cluster.token(user)}", open_timeout=WAIT)
    client = Plain(ws)
    if room is not None:
        await ws.send(orjson.dumps({"type": "join", "room": room}).decode())
        reply = await asyncio.wait_for(client.replies.get(), WAIT)
        assert reply["type"] == "joined", reply
    return client


async def conn_of(cluster: Cluster, user: str) -> str:
    """The node's connection id of `user` (from the "connections" control command)."""
    found: list[str] = []

    async def listed() -> bool:
        found[:] = [c["id"] for c in await cluster.connections("n1") if c["user"] == user]
        return bool(found)

    await until(listed, f"a connection of {user} on n1", WAIT_S, interval=0.05)
    return found[0]


async def test_plain_clients_fail_injected_frames_and_the_node_serves_on(
    cluster: Cluster,
) -> None:
    bystander = await plain_client(cluster, "bystander", "other")
    victims = {user: await plain_client(cluster, user) for user in ("rsv", "utf8", "ctrl")}
    members = [await plain_client(cluster, f"member{i}", "lobby") for i in range(2)]
    conns = {user: await conn_of(cluster, user) for user in victims}
    cases = {"rsv": ("rsv1-set", 1002), "utf8": ("invalid-utf8-text", 1007),
             "ctrl": ("ping-too-long", 1002)}  # fmt: skip
    for user, (case_id, code) in cases.items():
        reply = await cluster.inject("n1", case_id, conns[user], wait=REACT)
        assert (reply["kind"], reply["sent"], reply["connections"]) == ("conn", 1, [conns[user]])
        assert reply["bytes"] == len(get_case(case_id).wire())
        (reaction,) = reply["reactions"]
        assert reaction["code"] == code and reaction["verdict"] == "pass", reaction
        assert await victims[user].closed_with() == code
        await bystander.still_served(f"after-{case_id}")

    # a room: every member gets it, nobody else
    reply = await cluster.inject("n1", "masked-server-frame", "lobby", wait=REACT)
    assert (reply["kind"], reply["sent"], reply["verdicts"]) == ("room", 2, {"pass": 2})
    assert [await ws.closed_with() for ws in members] == [1002, 1002]
    await bystander.still_served("after-room")

    # the node forgot every failed connection and did not count them as its own errors
    remaining = [c["user"] for c in await cluster.connections("n1")]
    assert remaining == ["bystander"]
    stats = await cluster.request("n1", "stats")
    assert "protocol_error" not in stats["errors"] and "invalid_payload" not in stats["errors"]
    metrics_url = cluster.nodes["n1"].metrics_url
    assert metrics_url is not None
    async with httpx.AsyncClient() as http:
        text = (await http.get(metrics_url, timeout=WAIT)).text
    assert 'wsconsole_injected_total{node="n1"} 5.0' in text

    # a frame a client must answer, not fail: the connection stays open
    reply = await cluster.inject("n1", "ping-echo", "all", wait=0.3)
    assert reply["reactions"][0]["verdict"] == "pass"
    assert reply["reactions"][0]["observed"].startswith("still open")
    await bystander.still_served("after-ping")
    await bystander.close()


async def test_every_server_to_client_case_against_a_plain_websockets_client(
    cluster: Cluster,
) -> None:
    """Each case into a fresh reading `websockets` client: its reaction, as the node sees it,
    conforms (pass or lenient); one bystander is served throughout."""
    from wsconsole.faults.catalogue import Direction, Reaction, select

    bystander = await plain_client(cluster, "bystander")
    results: dict[str, str] = {}
    for index, case in enumerate(select(direction=Direction.SERVER_TO_CLIENT)):
        user = f"sweep{index}"
        client = await plain_client(cluster, user)
        conn = await conn_of(cluster, user)
        stays_open = case.expected.reaction not in (Reaction.FAIL, Reaction.CLOSE)
        reply = await cluster.inject("n1", case.id, conn, wait=0.3 if stays_open else REACT)
        (reaction,) = reply["reactions"]
        results[case.id] = f"{reaction['verdict']}: {reaction['observed']}"
        if reaction["verdict"] not in ("pass", "pass (lenient)"):
            results[case.id] += f" ({reaction['reason']})"
        if stays_open:
            await client.close()
        else:
            await asyncio.wait_for(client.reader, WAIT)
    await bystander.still_served("after-sweep")
    await bystander.close()
    bad = {k: v for k, v in results.items() if not v.startswith("pass")}
    assert not bad, bad
    assert len(results) >= 40
    assert results["length-64bit-msb"].startswith("pass (lenient): closed 1009")


async def test_bad_inject_requests_get_clear_errors(cluster: Cluster) -> None:
    with pytest.raises(ClusterError, match="no connection to inject into"):
        await cluster.inject("n1", "rsv1-set", "all")
    ws = await plain_client(cluster, "someone", "lobby")
    try:
        with pytest.raises(ClusterError, match="unknown case id 'nope'"):
            await cluster.inject("n1", "nope", "all")
        with pytest.raises(ClusterError, match="client-to-server only"):
            await cluster.inject("n1", "unmasked-client-frame", "all")
        with pytest.raises(ClusterError, match=r"no conn or room 'ghost' on node n1 .*lobby"):
            await cluster.inject("n1", "rsv1-set", "ghost")
        with pytest.raises(ClusterError, match="no room 'someone'"):
            await cluster.inject("n1", "rsv1-set", "room:someone")
        with pytest.raises(ClusterError, match="unknown node 'n7'"):
            await cluster.inject("n7", "rsv1-set", "all")
        # the raw control command refuses the same way (what a scenario step sends)
        with pytest.raises(ClusterError, match="unknown case id"):
            await cluster.request("n1", "inject", case="nope")
        await ws.still_served("after-errors")
    finally:
        await ws.close()


async def test_reconnecting_client_fails_injected_frame_and_reconnects(
    cluster: Cluster,
) -> None:
    options = ClientOptions(
        url=cluster.url,
        token=lambda: cluster.token("rc"),
        harness=True,
        rooms=["lobby"],
        backoff=BackoffPolicy(initial=0.1, cap=0.5, jitter=0.05),
        ping_interval=cluster.config.ping_interval,
        ping_timeout=cluster.config.ping_timeout,
        close_timeout=1.0,
    )
    seen: list[Transition] = []
    client = ReconnectingClient(options, name="rc")
    client.subscribe(lambda e: seen.append(e) if isinstance(e, Transition) else None)
    bystander = await plain_client(cluster, "bystander")
    await client.start()
    try:
        assert await client.wait_state(State.OPEN, WAIT) is not None
        first = await conn_of(cluster, "rc")
        for case_id, code in (("invalid-utf8-fragmented", 1007), ("fragmented-ping", 1002)):
            opened = len(seen)
            conn = await conn_of(cluster, "rc")
            reply = await cluster.inject("n1", case_id, f"conn:{conn}", wait=REACT)
            assert reply["reactions"][0]["code"] == code, reply
            await until(lambda n=opened: any(t.state is State.OPEN for t in seen[n + 1:]),
                        f"a reconnect after {case_id}", WAIT_S,
                        detail=lambda: [t.state.value for t in seen])
            states = [t.state for t in seen[opened:]]
            assert State.RECONNECTING in states, states
            dropped = next(t for t in seen[opened:] if t.state is State.RECONNECTING)
            assert dropped.code == code or str(code) in (dropped.error or ""), dropped
            await bystander.still_served(f"after-{case_id}")
        assert await conn_of(cluster, "rc") != first  # a new connection, rooms re-joined
        await asyncio.wait_for(client.rpc("echo", {"back": True}), WAIT)
    finally:
        await client.stop()
        await bystander.close()


# ------------------------------------------------------------------ harness stdin


def test_harness_stdin_inject_line(procs: ProcessRegistry) -> None:
    """`inject n1 CASE CONN|ROOM` typed into `wsconsole harness`: the client fails, the
    reply names the connection and the verdict; a bad line is an error line, not an exit."""
    harness = HarnessProcess(procs, "--nodes", "1", "--stats-interval", "0", "--exit-on-eof")
    pids: list[int] = []
    try:
        ready = harness.expect(lambda e: e["event"] == "ready")
        pids = ready_pids(ready)
        with ws_connect(f"{ready['url']}/?token={ready['token']}", open_timeout=WAIT) as ws:
            ws.send('{"type": "join", "room": "lobby"}')
            assert json.loads(ws.recv(timeout=WAIT))["type"] == "joined"
            harness.send("inject n1 rsv1-set nowhere")
            error = harness.expect(lambda e: e["event"] == "error")
            assert "no conn or room 'nowhere' on node n1" in error["error"]
            harness.send("inject n1 not-a-case lobby")
            assert "unknown case id" in harness.expect(lambda e: e["event"] == "error")["error"]
            harness.send("conns n1")
            listed = harness.expect(lambda e: e["event"] == "connections")
            (conn,) = listed["connections"]
            assert listed["id"] == "n1" and conn["rooms"] == ["lobby"]
            harness.send("inject n1 rsv1-set lobby wait=5")
            done = harness.expect(lambda e: e["event"] == "done")
            assert done["command"] == "inject n1 rsv1-set lobby"
            reply = done["reply"]
            assert (reply["kind"], reply["sent"], reply["verdicts"]) == ("room", 1, {"pass": 1})
            assert reply["reactions"][0]["code"] == 1002
            assert reply["connections"] == [conn["id"]]
            with pytest.raises(ConnectionClosedError):
                ws.recv(timeout=WAIT)
            assert ws.protocol.close_sent is not None and ws.protocol.close_sent.code == 1002
        harness.send("quit")
        harness.expect(lambda e: e["event"] == "stopped")
        assert harness.proc.wait(timeout=60 * SCALE) == 0
    finally:
        if harness.proc.poll() is None:
            harness.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                harness.proc.wait(timeout=30 * SCALE)
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ scenario step


async def test_scenario_server_inject_step_reaches_swarm_clients() -> None:
    """A `direction = "server"` inject step: the node writes the case to 2 swarm clients,
    each fails the connection with 1002, the step passes and says so; the swarm reconnects."""
    from wsconsole.scenarios.model import parse_scenario
    from wsconsole.scenarios.runner import ScenarioRunner

    text = """\
name = "server inject"
[cluster]
nodes = 1
timings = "demo"
[swarm]
clients = 4
rooms = 1
rate = 8
duration = 3
settle = 4
[[steps]]
at = 1
action = "inject"
direction = "server"
case = "rsv2-set"
count = 2
[[assertions]]
expect = "lost == 0"
"""
    runner = ScenarioRunner(parse_scenario(text, "server-inject.toml"))
    result = await runner.run()
    (step,) = result.steps
    assert step.ok, step.detail
    assert step.detail.startswith("rsv2-set from node n1 to 2 of its clients: 2 pass"), step.detail
    assert result.passed, result
