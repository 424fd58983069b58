"""Harness nodes as real processes over a real broker: fan-out, dense seqs, epochs,
idempotency, recovery, broker outage, metrics, drain, control channel, command line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.nodekit import (
    TIMEOUT,
    NodeProc,
    RawClient,
    broker,
    client,
    http_get,
    join,
    module_procs,
    recv_json,
    recv_until,
    send_json,
    start_node,
)
from tests.support import SCALE, ProcessRegistry, free_port, pid_alive, until
from wsconsole.harness.auth import issue_token, new_secret
from wsconsole.harness.broker import Broker
from wsconsole.harness.control import ControlServer
from wsconsole.harness.procs import child_argv

__all__ = ["broker", "module_procs"]

SECRET = new_secret()


def token(user: str | None = None, **kwargs: Any) -> str:
    return issue_token(SECRET, user or f"u-{uuid.uuid4().hex[:8]}", **kwargs)


def room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def healthz(node: NodeProc) -> str:
    """The body of the node's /healthz (a quick blocking call on loopback)."""
    return http_get(node.port, "/healthz")[1]


@pytest.fixture(scope="module")
def nodes(broker: Broker, module_procs: ProcessRegistry) -> Iterator[list[NodeProc]]:
    """Two nodes with default settings on one broker."""
    yield [start_node(module_procs, broker.url, nid, secret=SECRET) for nid in ("n1", "n2")]


async def test_two_clients_on_different_nodes_see_each_other(nodes: list[NodeProc]) -> None:
    r = room()
    async with client(nodes[0].url, token("alice")) as a, client(nodes[1].url, token("bob")) as b:
        joined = await join(a, r)
        epoch = joined.pop("epoch")
        assert joined == {"type": "joined", "room": r, "seq": 0} and isinstance(epoch, str)
        assert (await join(b, r))["epoch"] == epoch, "one room, one sequence space"
        await send_json(a, type="publish", room=r, id="a1", data={"text": "hi bob"})
        got = await recv_json(b)
        assert got["type"] == "message" and got["data"] == {"text": "hi bob"}
        assert (got["room"], got["epoch"], got["seq"], got["id"]) == (r, epoch, 1, "a1")
        assert (got["node"], got["pub_node"]) == ("n2", "n1"), "delivered by n2, published on n1"
        assert isinstance(got["ts"], float)
        ack, _ = await recv_until(a, lambda f: f["type"] == "ack")
        assert ack == {"type": "ack", "id": "a1", "seq": 1, "epoch": epoch}
        await send_json(b, type="publish", room=r, id="b1", data="hi alice")
        got, _ = await recv_until(a, lambda f: f.get("id") == "b1")
        assert (got["seq"], got["node"], got["pub_node"], got["data"]) == (
            2,
            "n1",
            "n2",
            "hi alice",
        )


async def test_seq_dense_and_atomic_with_publishers_on_two_nodes(nodes: list[NodeProc]) -> None:
    r = room()
    per_publisher = 40
    async with (
        client(nodes[0].url, token()) as watch1,
        client(nodes[1].url, token()) as watch2,
    ):
        await join(watch1, r)
        await join(watch2, r)
        publishers = [client(nodes[i % 2].url, token()) for i in range(4)]
        conns = [await p.__aenter__() for p in publishers]
        try:

            async def burst(i: int, ws: Any) -> list[int]:
                for k in range(per_publisher):
                    await send_json(ws, type="publish", room=r, id=f"p{i}-{k}", data=k)
                acks = []
                while len(acks) < per_publisher:
                    frame = await recv_json(ws)
                    assert frame["type"] == "ack", frame
                    acks.append(frame)
                assert [a["id"] for a in acks] == [f"p{i}-{k}" for k in range(per_publisher)]
                return [a["seq"] for a in acks]

            seqs = await asyncio.gather(*(burst(i, ws) for i, ws in enumerate(conns)))
        finally:
            for p in publishers:
                await p.__aexit__(None, None, None)
        total = 4 * per_publisher
        assert sorted(s for chunk in seqs for s in chunk) == list(range(1, total + 1))
        for chunk in seqs:
            assert chunk == sorted(chunk), "one connection's messages keep their order"
        streams = []
        for watcher in (watch1, watch2):
            frames = [await recv_json(watcher) for _ in range(total)]
            assert [f["seq"] for f in frames] == list(range(1, total + 1))
            streams.append([f["id"] for f in frames])
        assert streams[0] == streams[1]


async def test_republished_id_is_acked_with_the_same_seq_and_delivered_once(
    nodes: list[NodeProc],
) -> None:
    r = room()
    async with (
        client(nodes[0].url, token()) as watcher,
        client(nodes[0].url, token()) as first,
        client(nodes[1].url, token()) as second,
    ):
        await join(watcher, r)
        for ws in (first, first, second):
            await send_json(ws, type="publish", room=r, id="same-id", data="once")
            ack, _ = await recv_until(ws, lambda f: f["type"] == "ack")
            assert ack["seq"] == 1
        await send_json(first, type="publish", room=r, id="next", data="twice?")
        frames = [await recv_json(watcher), await recv_json(watcher)]
        assert [(f["id"], f["seq"]) for f in frames] == [("same-id", 1), ("next", 2)]


async def test_join_since_recovers_exactly_what_was_missed(nodes: list[NodeProc]) -> None:
    r = room()
    async with client(nodes[0].url, token()) as pub:
        for k in range(10):
            await send_json(pub, type="publish", room=r, id=f"m{k + 1}", data=k + 1)
        for _ in range(10):
            await recv_until(pub, lambda f: f["type"] == "ack")
        async with client(nodes[1].url, token()) as late:
            joined = await join(late, r, since=4)
            assert joined["seq"] == 10
            missed = [await recv_json(late) for _ in range(6)]
            assert [m["seq"] for m in missed] == [5, 6, 7, 8, 9, 10]
            assert [m["data"] for m in missed] == [5, 6, 7, 8, 9, 10]
            assert {(m["node"], m["pub_node"]) for m in missed} == {("n2", "n1")}
            await send_json(pub, type="publish", room=r, id="live", data=11)
            live = await recv_json(late)
            assert (live["seq"], live["id"]) == (11, "live")
        async with client(nodes[1].url, token()) as current:
            assert (await join(current, r, since=11))["seq"] == 11
            await send_json(current, type="rpc", id="x", method="echo", params=1)
            assert (await recv_json(current))["type"] == "result", "nothing was replayed"


async def test_join_beyond_the_window_is_told_so(broker: Broker, procs: ProcessRegistry) -> None:
    node = start_node(procs, broker.url, "small", "--history", "3", secret=SECRET)
    r = room()
    async with client(node.url, token()) as ws:
        for k in range(6):
            await send_json(ws, type="publish", room=r, id=f"m{k}", data=k)
        for _ in range(6):
            await recv_until(ws, lambda f: f["type"] == "ack")
        await send_json(ws, type="join", room=r, since=1)
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "recovery_window_exceeded"
        assert (error["room"], error["first"], error["seq"]) == (r, 4, 6)
        joined = await recv_json(ws)
        assert joined == {"type": "joined", "room": r, "epoch": error["epoch"], "seq": 6}
        assert (await join(ws, r, since=3))["seq"] == 6
        assert [(await recv_json(ws))["seq"] for _ in range(3)] == [4, 5, 6]


async def publish_all(ws: Any, r: str, ids: list[str]) -> list[dict[str, Any]]:
    """Publish each id to room `r` and return the acks, in order."""
    for ident in ids:
        await send_json(ws, type="publish", room=r, id=ident, data=ident)
    return [(await recv_until(ws, lambda f: f["type"] == "ack"))[0] for _ in ids]


async def test_a_join_from_a_lost_epoch_gets_a_reset_never_a_splice(
    procs: ProcessRegistry,
) -> None:
    """The defect of issue 13: the broker comes back empty, the room's new sequence passes
    the `since` of a client that was away, and the client must not splice the two."""
    broker = Broker(persist=False)
    broker.start()
    try:
        node = start_node(procs, broker.url, "e1", "--broker-check", "0.1", "--history", "3",
                          secret=SECRET)  # fmt: skip
        r = room()
        async with client(node.url, token()) as pub:
            old = (await publish_all(pub, r, ["o1", "o2", "o3"]))[-1]["epoch"]
            broker.restart()  # empty: the old sequence space is gone
            await until(lambda: healthz(node) == "ok\n", "the node back on the broker")
            acks = await publish_all(pub, r, ["n1", "n2"])
            new = acks[0]["epoch"]
            assert new != old and [a["seq"] for a in acks] == [1, 2]
            async with client(node.url, token()) as away:
                # since=1 of the old epoch: seq 2 of the new one is NOT what it missed
                joined = await join(away, r, since=1, epoch=old)
                assert joined == {"type": "joined", "room": r, "epoch": new, "seq": 2,
                                  "reset": True}  # fmt: skip
                replay = [await recv_json(away) for _ in range(2)]
                assert [(m["epoch"], m["seq"], m["id"]) for m in replay] == [
                    (new, 1, "n1"), (new, 2, "n2")
                ], "the new epoch from its start"
                # since=3 is ahead of the new epoch's 2: still a reset, not a window error
                joined = await join(away, r, since=3, epoch=old)
                assert (joined["reset"], joined["seq"]) == (True, 2)
                assert [(await recv_json(away))["id"] for _ in range(2)] == ["n1", "n2"]
                # in its own epoch the same client recovers as usual
                assert "reset" not in await join(away, r, since=1, epoch=new)
                assert (await recv_json(away))["id"] == "n2"
                # the new epoch's start beyond the history: the window error, then the reset
                await publish_all(pub, r, ["n3", "n4", "n5"])
                await send_json(away, type="join", room=r, since=3, epoch=old)
                error, _ = await recv_until(away, lambda f: f["type"] == "error")
                assert (error["code"], error["epoch"], error["first"], error["seq"]) == (
                    "recovery_window_exceeded", new, 3, 5
                )
                assert await recv_json(away) == {"type": "joined", "room": r, "epoch": new,
                                                 "seq": 5, "reset": True}  # fmt: skip
    finally:
        broker.stop()


async def test_rpc_echo_time_and_unknown(nodes: list[NodeProc]) -> None:
    async with client(nodes[0].url, token("rpc-user")) as ws:
        await send_json(ws, type="rpc", id="1", method="echo", params={"a": [1, 2]})
        assert await recv_json(ws) == {"type": "result", "id": "1", "data": {"a": [1, 2]}}
        await send_json(ws, type="rpc", id="2", method="time")
        result = await recv_json(ws)
        assert result["id"] == "2" and abs(result["time"] - __import__("time").time()) < 60
        await send_json(ws, type="rpc", id="3", method="whoami")
        who = await recv_json(ws)
        assert (who["node"], who["user"]) == ("n1", "rpc-user")
        await send_json(ws, type="rpc", id="4", method="nope")
        err = await recv_json(ws)
        assert (err["type"], err["code"], err["id"]) == ("error", "unknown_method", "4")
        await send_json(ws, type="leave", room="never-joined")
        assert await recv_json(ws) == {"type": "left", "room": "never-joined"}


def test_metrics_parse_as_prometheus_text_and_healthz(nodes: list[NodeProc]) -> None:
    status, body = http_get(nodes[0].port, "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    for name in (
        "wsconsole_connections",
        "wsconsole_messages_in",
        "wsconsole_messages_out",
        "wsconsole_rate_limited",
        "wsconsole_auth_failures",
        "wsconsole_broker_up",
        "wsconsole_errors",
    ):
        assert name in families, name
    broker_up = families["wsconsole_broker_up"].samples[0]
    assert broker_up.value == 1 and broker_up.labels == {"node": "n1"}
    assert families["wsconsole_messages_in"].samples[0].value > 0
    assert http_get(nodes[0].port, "/healthz") == (200, "ok\n")


async def test_broker_outage_is_visible_and_recovers(
    procs: ProcessRegistry,
) -> None:
    broker = Broker(persist=False)  # a restart loses the state: the reset is part of the test
    broker.start()
    try:
        n1 = start_node(procs, broker.url, "o1", "--broker-check", "0.1", secret=SECRET)
        n2 = start_node(procs, broker.url, "o2", "--broker-check", "0.1", secret=SECRET)
        r = room()
        async with client(n1.url, token()) as a, client(n2.url, token()) as b:
            old = (await join(a, r))["epoch"]
            await join(b, r)
            broker.kill()
            await until(lambda: healthz(n1) == "ok broker=down\n", "/healthz saying broker=down")
            await send_json(a, type="publish", room=r, id="lost?", data=1)
            err, _ = await recv_until(a, lambda f: f["type"] == "error")
            assert (err["code"], err["id"]) == ("broker_unavailable", "lost?")
            await send_json(a, type="rpc", id="alive", method="echo", params="still here")
            assert (await recv_json(a))["data"] == "still here", "the connection stays up"
            await send_json(a, type="join", room="other")
            err = await recv_json(a)
            assert err["code"] == "broker_unavailable"
            broker.restart()
            for ws in (a, b):
                reset = await recv_json(ws)
                new = reset.pop("epoch")
                assert reset == {"type": "joined", "room": r, "seq": 0, "reset": True}
                assert new != old, "the room's sequence space is a new one"
            await send_json(a, type="publish", room=r, id="again", data=2)
            got, _ = await recv_until(b, lambda f: f["type"] == "message")
            assert (got["id"], got["seq"], got["node"], got["pub_node"]) == ("again", 1, "o2", "o1")
            assert got["epoch"] == new
            assert http_get(n1.port, "/healthz") == (200, "ok\n")
    finally:
        broker.stop()


async def test_drain_closes_with_1001_refuses_new_clients_and_exits(
    broker: Broker, procs: ProcessRegistry
) -> None:
    node = start_node(procs, broker.url, "d1", "--drain-deadline", "5", secret=SECRET)
    stubborn = RawClient(node.port, f"/?token={token()}")  # never answers the close frame
    assert stubborn.status == 101
    try:
        async with client(node.url, token()) as ws:
            await join(ws, room())
            node.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert (ws.close_code, ws.close_reason) == (1001, "going away")
        assert http_get(node.port, "/healthz") == (503, "draining\n")
        status = RawClient(node.port, f"/?token={token()}").status
        assert status == 503
        assert stubborn.recv_close() == 1001
    finally:
        stubborn.close()
    assert await asyncio.to_thread(node.proc.wait, TIMEOUT) == 0


async def test_control_channel_stats_commands_and_events(
    broker: Broker, procs: ProcessRegistry
) -> None:
    received: list[dict[str, Any]] = []
    server = ControlServer("k3y", lambda peer, msg: received.append(msg))
    port = await server.start()
    try:
        node = start_node(
            procs,
            broker.url,
            "c1",
            "--control",
            f"127.0.0.1:{port}",
            secret=SECRET,
            env={"WSCONSOLE_CONTROL_KEY": "k3y"},
        )
        await server.wait_connected("c1", TIMEOUT)
        async with client(node.url, token("carol")) as ws:
            await join(ws, "ops")
            await send_json(ws, type="rpc", id="1", method="echo")
            await recv_json(ws)
            conns = await server.request("c1", "connections")
            assert [(c["user"], c["rooms"]) for c in conns["connections"]] == [("carol", ["ops"])]
            def stats() -> list[dict[str, Any]]:
                return [m for m in received if m.get("type") == "stats"]

            await until(
                lambda: len(stats()) >= 2 and stats()[-1]["msgs_in"] >= 2,
                "two stats pushes counting the connection's messages",
            )
            last, before = stats()[-1], stats()[-2]
            assert last["t"] - before["t"] < 1.0 * SCALE, "pushed several times a second"
            assert last["node"] == "c1" and last["connections"] == 1 and last["rooms"] == 1
            assert last["broker"] == "up" and not last["draining"]
            for key in ("t", "msgs_out", "bytes_in", "bytes_out", "errors", "rate_limited",
                        "auth_failures"):  # fmt: skip
                assert key in last
            reply = await server.request("c1", "stats")
            assert reply["connections"] == 1
            with pytest.raises(Exception, match="unknown command"):
                await server.request("c1", "explode")
            with pytest.raises(Exception, match="inject needs case=ID"):
                await server.request("c1", "inject")
            await server.request("c1", "drain")
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert ws.close_code == 1001
        assert await asyncio.to_thread(node.proc.wait, TIMEOUT) == 0
        kinds = [m.get("kind") for m in received if m.get("type") == "event"]
        assert "draining" in kinds
    finally:
        await server.close()


def test_node_exits_when_its_supervisor_goes_away(broker: Broker, procs: ProcessRegistry) -> None:
    async def scenario() -> NodeProc:
        server = ControlServer("k", lambda peer, msg: None)
        port = await server.start()
        node = start_node(
            procs, broker.url, "orphan", "--control", f"127.0.0.1:{port}",
            secret=SECRET, env={"WSCONSOLE_CONTROL_KEY": "k"},
        )  # fmt: skip
        await server.wait_connected("orphan", TIMEOUT)
        await server.close()
        return node

    node = asyncio.run(scenario())
    assert node.proc.wait(TIMEOUT) == 0
    assert not pid_alive(node.proc.pid)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "--redis"),
        (["--redis", "redis://127.0.0.1:1/0"], {}, "WSCONSOLE_JWT_SECRET"),
        (["--redis", "http://x"], {"WSCONSOLE_JWT_SECRET": "s"}, "expected redis://host:port"),
        (["--redis", "redis://h:1", "--control", "nope"], {"WSCONSOLE_JWT_SECRET": "s"},
         "HOST:PORT"),
        (["--redis", "redis://h:1", "--control", "h:1"], {"WSCONSOLE_JWT_SECRET": "s"},
         "WSCONSOLE_CONTROL_KEY"),
        (["--redis", "redis://h:1", "--no-auth", "--rate", "-1"], {}, "--rate"),
        (["--redis", "redis://h:port", "--no-auth"], {}, "bad port 'port'"),
        (["--redis", "redis://h:1", "--no-auth", "--id", "bad id!"], {}, "--id"),
    ],
)  # fmt: skip
def test_bad_usage_exits_2_with_a_clear_message(
    args: list[str], env: dict[str, str], message: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WSCONSOLE_")}
    result = subprocess.run(
        child_argv("node", *args), env={**clean, **env}, capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert b"Traceback" not in result.stderr and result.stdout == b""


def test_port_in_use_is_a_clear_error(broker: Broker, nodes: list[NodeProc]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsconsole.harness.node", "--redis", broker.url, "--no-auth",
         "--port", str(nodes[0].port)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"cannot listen" in result.stderr and b"Traceback" not in result.stderr


async def test_node_started_before_its_broker_serves_once_it_is_up(
    procs: ProcessRegistry,
) -> None:
    late = Broker()
    port = free_port()
    node = start_node(
        procs, f"redis://127.0.0.1:{port}/0", "early", "--broker-check", "0.1", secret=SECRET
    )
    try:
        async with client(node.url, token()) as ws:
            await send_json(ws, type="join", room="r")
            err = await recv_json(ws)
            assert err["code"] == "broker_unavailable", "said plainly, not hung"
            assert http_get(node.port, "/healthz") == (200, "ok broker=down\n")
            await asyncio.to_thread(late.start, port)
            await until(lambda: healthz(node) == "ok\n", "/healthz saying ok")
            assert (await join(ws, "r"))["seq"] == 0
    finally:
        late.stop()
