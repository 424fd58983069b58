"""The harness's own broker keeps its state in an append-only file: a SIGKILL and a restart
lose nothing that was acknowledged; `persist=False` (`--broker-ephemeral`) loses everything.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect

from tests.support import SCALE, pid_alive
from wsconsole.harness.broker import Broker, BrokerError
from wsconsole.harness.cluster import Cluster, ClusterConfig, Limits


def _client(broker: Broker) -> redis.Redis:
    return redis.Redis.from_url(broker.url, socket_timeout=5)


def _write(broker: Broker, count: int) -> None:
    client = _client(broker)
    try:
        for n in range(count):
            client.rpush("history", f"m{n}")  # each reply came back: acknowledged
        client.incrby("seq", count)
    finally:
        client.close()


def _read(broker: Broker) -> tuple[int, list[bytes]]:
    client = _client(broker)
    try:
        return int(client.get("seq") or 0), client.lrange("history", 0, -1)
    finally:
        client.close()


def test_sigkill_and_restart_keep_every_acknowledged_write(tmp_path: Path) -> None:
    broker = Broker(data_dir=tmp_path / "data")
    broker.start()
    try:
        assert broker.persist and broker.fsync == "always"
        _write(broker, 500)
        pid = broker.pid
        assert pid is not None
        broker.kill()  # SIGKILL: no shutdown, no final save
        assert not pid_alive(pid)
        broker.restart()
        seq, history = _read(broker)
        assert seq == 500 and history == [f"m{n}".encode() for n in range(500)]
    finally:
        broker.stop()
    assert (tmp_path / "data" / "appendonlydir").is_dir(), "a given data folder is kept"


def test_a_fresh_restart_starts_without_the_state(tmp_path: Path) -> None:
    with Broker(data_dir=tmp_path) as broker:
        _write(broker, 5)
        broker.restart()
        assert _read(broker)[0] == 5
        broker.restart(fresh=True)  # as a failover to an empty replica
        assert _read(broker) == (0, [])
        _write(broker, 1)
        broker.restart()
        assert _read(broker) == (1, [b"m0"]), "and keeps what it got since"


def test_a_given_data_folder_carries_the_state_to_the_next_broker(tmp_path: Path) -> None:
    with Broker(data_dir=tmp_path) as first:
        _write(first, 3)
    with Broker(data_dir=tmp_path) as second:
        assert _read(second) == (3, [b"m0", b"m1", b"m2"])


def test_ephemeral_broker_loses_its_state_on_restart(tmp_path: Path) -> None:
    broker = Broker(data_dir=tmp_path, persist=False)
    broker.start()
    try:
        _write(broker, 10)
        broker.restart()
        assert _read(broker) == (0, [])
    finally:
        broker.stop()
    assert not (tmp_path / "appendonlydir").exists()


def test_a_temporary_data_folder_is_removed_at_stop() -> None:
    broker = Broker(fsync="everysec")
    broker.start()
    folder = broker.data_dir
    assert folder is not None and (folder / "appendonlydir").is_dir()
    broker.stop()
    assert not folder.exists()


def test_unknown_fsync_policy_is_refused() -> None:
    with pytest.raises(BrokerError, match="always, everysec"):
        Broker(fsync="no")


async def _recv_until(ws: ClientConnection, want: Callable[[dict], bool]) -> list[dict]:
    """Frames up to and including the first that `want` accepts."""
    frames: list[dict] = []
    try:
        async with asyncio.timeout(20 * SCALE):
            while True:
                frame = json.loads(await ws.recv())
                frames.append(frame)
                if want(frame):
                    return frames
    except TimeoutError:
        raise AssertionError(f"timed out; received {frames}") from None


async def _publish(ws: ClientConnection, ident: str, seen: list[dict]) -> dict:
    """Publish until acknowledged (the broker may be coming back); frames read go to `seen`."""
    while True:
        await ws.send(json.dumps({"type": "publish", "room": "r", "id": ident, "data": ident}))
        frames = await _recv_until(ws, lambda f: f.get("id") == ident and f["type"] != "message")
        seen += frames
        if frames[-1]["type"] == "ack":
            return frames[-1]
        assert frames[-1]["code"] == "broker_unavailable", frames[-1]
        await asyncio.sleep(0.1)


async def test_a_cluster_keeps_sequences_and_history_across_a_broker_kill(tmp_path: Path) -> None:
    config = ClusterConfig.demo(nodes=1, log_dir=str(tmp_path), limits=Limits(auth=False))
    async with Cluster(config) as cluster:
        assert cluster.broker.persistent
        async with connect(cluster.url) as stayer:
            await stayer.send(json.dumps({"type": "join", "room": "r"}))
            await _recv_until(stayer, lambda f: f["type"] == "joined")
            seen: list[dict] = []
            acks = [await _publish(stayer, f"a{n}", seen) for n in range(5)]
            assert [a["seq"] for a in acks] == [1, 2, 3, 4, 5]
            await cluster.broker_kill()
            await cluster.broker_restart()
            after = await _publish(stayer, "b0", seen)
            assert after["seq"] == 6, "the sequence went on where it was"
            async with connect(cluster.url) as late:
                await late.send(json.dumps({"type": "join", "room": "r", "since": 2}))
                frames = await _recv_until(late, lambda f: f.get("id") == "b0")
    assert frames[0]["type"] == "joined" and frames[0]["seq"] == 6
    assert not frames[0].get("reset")
    assert [f["id"] for f in frames[1:]] == ["a2", "a3", "a4", "b0"], "history survived"
    assert not [f for f in seen if f["type"] == "joined"], "no reset reached a member"
