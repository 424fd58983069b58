"""The swarm against real servers: 200 clients on the harness account for every message;
`wsconsole swarm` as a subprocess prints JSON lines, stops on SIGINT, fails when it should."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.support import SCALE, ProcessRegistry, pid_alive
from wsconsole.harness.cluster import Cluster, ClusterConfig
from wsconsole.swarm.config import SwarmConfig, SwarmConfigError
from wsconsole.swarm.swarm import Swarm


@pytest.mark.slow
async def test_two_hundred_clients_account_for_every_message() -> None:
    clients, rooms = 200, 4
    async with Cluster(ClusterConfig.demo(nodes=2)) as cluster:
        per_node: Counter[str] = Counter()

        def on_stats(stats: dict) -> None:
            for node_id, figures in cluster.latest.nodes.items():
                per_node[node_id] = max(per_node[node_id], figures.connections)

        swarm = Swarm(
            SwarmConfig(
                url=cluster.url,
                clients=clients,
                rooms=rooms,
                rate=100,
                duration=3,
                ramp=1,
                settle=10,
                token_factory=cluster.token,
                wait_joined=60,
            ),
            on_stats=on_stats,
        )
        summary = await swarm.run()
    acc = swarm.accounting
    assert summary["never_connected"] == 0 and summary["subscriptions"] == clients
    assert summary["sent"] >= 250
    assert summary["sent"] == summary["acknowledged"]
    # every acknowledged message reached every subscriber of its room, once, in order
    subscribers = Counter(room for _, room in acc.subs)
    owed = sum(len(acc._rooms[room].acked) * n for room, n in subscribers.items())
    assert subscribers == {f"swarm-{r}": clients // rooms for r in range(rooms)}
    assert summary["delivered"] == summary["expected"] == owed
    assert summary["lost"] == summary["duplicated"] == summary["out_of_order"] == 0
    assert summary["errors"] == {}
    assert summary["p99_latency_ms"] is not None
    # distinct 127.x.y.z source addresses let ip-hash stickiness use both nodes
    assert per_node["n1"] > 0 and per_node["n2"] > 0, per_node
    assert all(client.state.value == "CLOSED" for client in swarm.clients)


def _harness_server(procs: ProcessRegistry, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = procs.python("-m", "tests.servers", *args, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, f"ws://127.0.0.1:{json.loads(line)['port']}"


def _swarm_cli(procs: ProcessRegistry, *args: str) -> subprocess.Popen[str]:
    return procs.start(  # type: ignore[return-value]
        [sys.executable, "-m", "wsconsole", "swarm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_swarm_cli_json_lines_and_a_clean_verdict(procs: ProcessRegistry) -> None:
    _, url = _harness_server(procs, "harness")
    proc = _swarm_cli(
        procs, url, "--clients", "8", "--rooms", "2", "--rate", "20", "--duration", "2", "--json"
    )
    out, err = proc.communicate(timeout=60 * SCALE)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    stats = [e for e in lines if e["event"] == "stats"]
    (summary,) = [e for e in lines if e["event"] == "summary"]
    assert stats and stats[0]["clients"] == 8
    assert summary["ok"] is True and summary["sent"] == summary["acknowledged"] > 20
    assert summary["lost"] == summary["duplicated"] == 0
    assert summary["delivered"] == summary["expected"] > 0


def test_swarm_cli_stops_on_sigint_with_a_summary(procs: ProcessRegistry) -> None:
    _, url = _harness_server(procs, "harness")
    proc = _swarm_cli(procs, url, "--clients", "4", "--rate", "10", "--duration", "120", "--json")
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    assert first["event"] == "stats"
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30 * SCALE)
    assert time.monotonic() - began < 20 * SCALE
    summary = json.loads(out.splitlines()[-1])
    assert summary["event"] == "summary" and summary["sent"] > 0
    assert proc.returncode == 0
    assert not pid_alive(proc.pid)


def test_swarm_cli_fails_when_nothing_is_acknowledged(procs: ProcessRegistry) -> None:
    _, url = _harness_server(procs, "echo")  # echoes publishes back: no acks, no messages
    proc = _swarm_cli(
        procs, url, "--clients", "3", "--rate", "10", "--duration", "1", "--settle", "1"
    )
    out, _ = proc.communicate(timeout=60 * SCALE)
    assert proc.returncode == 1
    assert "unacknowledged" in out and "acknowledged 0" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clients", "2", "--rooms", "5"], "rooms must be between 1 and clients"),
        (["--rate", "-1"], "rate must be"),
        (["--secret-env", "WSCONSOLE_TEST_UNSET_VAR"], "is not set"),
        (["--backoff-initial", "9", "--backoff-cap", "1"], "--backoff-cap must not be below"),
        (["--ping-timeout", "0"], "--ping-timeout must be > 0"),
        (["--backoff-jitter", "x"], "--backoff-jitter must be a number"),
        (["--token", "t", "--secret-env", "HOME"], "not allowed with argument --token"),
    ],
)
def test_swarm_cli_bad_usage_exits_2(args: list[str], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WSCONSOLE_TEST_UNSET_VAR"}
    out = subprocess.run(
        [sys.executable, "-m", "wsconsole", "swarm", "ws://127.0.0.1:9", *args],
        capture_output=True,
        text=True,
        timeout=30 * SCALE,
        env=env,
    )
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_config_validation_names_the_setting() -> None:
    with pytest.raises(SwarmConfigError, match="URL scheme"):
        SwarmConfig(url="http://x").validate()
    with pytest.raises(SwarmConfigError, match="clients"):
        SwarmConfig(url="ws://127.0.0.1:1", clients=0).validate()
    config = SwarmConfig(url="ws://127.0.0.1:1", clients=600)
    addresses = {config.local_addr(i) for i in range(600)}
    if sys.platform.startswith("linux"):
        assert len(addresses) == 600 and all(a[0].startswith("127.") for a in addresses)
    assert SwarmConfig(url="ws://example.com:1").local_addr(0) is None
    assert config.user(0) == "swarm-0001" and config.room(5) == "swarm-0"


def test_swarm_cli_unreachable_server_exits_1_and_says_why() -> None:
    from tests.support import free_port

    out = subprocess.run(
        [sys.executable, "-m", "wsconsole", "swarm", f"ws://127.0.0.1:{free_port()}",
         "--clients", "2", "--rate", "0", "--duration", "1.5", "--settle", "0"],
        capture_output=True,
        text=True,
        timeout=30 * SCALE,
    )
    assert out.returncode == 1
    assert "2 never connected" in out.stdout and "refused" in out.stdout
