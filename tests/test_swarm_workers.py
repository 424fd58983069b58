"""`wsconsole swarm --workers N`: real worker processes against the demo cluster, their
journals merged exactly over a real Valkey; checked against the parts and against an
independent subscriber (tests/protoclient.py); a worker SIGKILLed mid-run is named; a worker
whose coordinator is gone stops on its own; bad input exits 2."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.protoclient import Ledger, Peer
from tests.support import SCALE, ProcessRegistry, pid_alive, until
from wsconsole.harness import procs
from wsconsole.harness.broker import Broker
from wsconsole.harness.brokeraddr import open_client
from wsconsole.harness.cluster import Cluster, ClusterConfig
from wsconsole.scenarios.model import parse_scenario
from wsconsole.swarm.config import SwarmConfig, SwarmConfigError
from wsconsole.swarm.parts import config_to_wire
from wsconsole.swarm.runwire import RunWire, journal_stream, new_run_id

JWT_ENV = "WSCONSOLE_TEST_SWARM_JWT"
ROOMS = ("swarm-0", "swarm-1")


@contextlib.asynccontextmanager
async def _swarm(cluster: Cluster, *args: str) -> AsyncIterator[procs.Child]:
    env = {**os.environ, JWT_ENV: cluster.config.secret}
    child = await procs.spawn(
        procs.child_argv("swarm", cluster.url, "--secret-env", JWT_ENV, "--json", *args),
        "swarm-cli", env=env, stderr_lines=40)
    try:
        yield child
    finally:
        await child.stop(timeout=5)


async def _events(child: procs.Child) -> AsyncIterator[dict[str, Any]]:
    async for line in child.lines():
        yield json.loads(line)


async def test_two_workers_merge_exactly(tmp_path: Any) -> None:
    ledger = Ledger()
    async with Cluster(ClusterConfig.demo(nodes=2, log_dir=str(tmp_path))) as cluster:
        peer = Peer("watcher", cluster.url, cluster.token("watcher"), list(ROOMS), ledger,
                    local_addr="127.0.9.2")
        peer.start()
        try:
            await until(lambda: {r for (_, r) in ledger.streams} == set(ROOMS), "the "
                        "independent subscriber joined", 10)
            async with _swarm(cluster, "--clients", "8", "--rooms", "2", "--rate", "40",
                              "--duration", "2", "--wait-joined", "20", "--settle", "5",
                              "--workers", "2") as child:
                events = [e async for e in _events(child)]
                assert await child.wait(30 * SCALE), "the swarm did not end"
            assert child.returncode == 0, child.log_tail(10)
            await until(lambda: ledger.received("c")[0] >= events[-1]["acknowledged"],
                        "the independent subscriber to get every message", 10)
        finally:
            await peer.close()
    summary = events[-1]
    assert summary["event"] == "summary" and summary["ok"] is True
    parts = summary["workers"]
    assert [(w["state"], w["clients"], w["missing_batches"]) for w in parts] == \
        [("done", 4, 0), ("done", 4, 0)]
    assert summary["incomplete"] == []
    # merged = sum of the parts, each part's figures from its own Accounting
    assert summary["sent"] == sum(w["sent"] for w in parts) >= 60
    assert summary["delivered"] == sum(w["delivered"] for w in parts)
    assert summary["sent"] == summary["acknowledged"]
    # every message reached the 4 swarm subscribers of its room, once, in order
    assert summary["delivered"] == summary["expected"] == 4 * summary["acknowledged"]
    # the independent count: the watcher, subscribed to both rooms, got every swarm message
    # once and in order, as the merged figures say
    received, duplicated, out_of_order = ledger.received("c")
    assert received == summary["acknowledged"]
    assert (duplicated, out_of_order) == (summary["duplicated"], summary["out_of_order"])
    assert summary["lost"] == 0 and summary["p99_latency_ms"] is not None
    stats = [e for e in events if e["event"] == "stats"]
    assert stats and all(len(e["workers"]) == 2 for e in stats)


async def test_a_worker_killed_mid_run_is_named(tmp_path: Any) -> None:
    async with Cluster(ClusterConfig.demo(nodes=1, log_dir=str(tmp_path))) as cluster:
        async with _swarm(cluster, "--clients", "4", "--rate", "20", "--duration", "4",
                          "--settle", "1", "--workers", "2") as child:
            killed = None
            summary: dict[str, Any] = {}
            async for event in _events(child):
                workers = event.get("workers", [])
                if killed is None and event["event"] == "stats" and event["sent"] > 5 and \
                        all(w["state"] == "running" for w in workers):
                    killed = int(workers[1]["where"].removeprefix("pid "))
                    os.kill(killed, signal.SIGKILL)
                summary = event
            assert await child.wait(30 * SCALE)
    assert killed is not None and not pid_alive(killed)
    assert child.returncode == 1
    assert summary["event"] == "summary" and summary["ok"] is False
    worker = summary["workers"][1]
    assert worker["state"] == "lost" and "killed by signal 9" in worker["problem"]
    assert summary["incomplete"] == [f"worker 1 (pid {killed})"]
    assert summary["workers"][0]["state"] == "done"
    # what the killed worker sent before it died still counts
    assert summary["sent"] > summary["workers"][0]["sent"]


async def test_a_worker_without_its_coordinator_stops_on_its_own() -> None:
    broker = Broker(persist=False)
    url = await asyncio.to_thread(broker.start)
    try:
        client = await open_client(url)
        run = new_run_id()
        wire = RunWire(client, "s3cret", run, coordinator=True)
        config = SwarmConfig(url="ws://127.0.0.1:9", clients=2, rate=1, duration=None)
        await wire.send("config", {"config": config_to_wire(config, None), "parts": [[0, 2]]})
        worker = await procs.spawn(
            procs.child_argv("swarm-worker", "--broker", url, "--secret-env", "RUN_SECRET",
                             "--run", run, "--part", "0", "--orphan-after", "2"),
            "swarm-worker", stdout=False, stderr_lines=20,
            env={**os.environ, "RUN_SECRET": "s3cret"})
        try:  # no beat ever comes: it stops after 2 s, sends its summary, exits 1
            assert await worker.wait(20 * SCALE), "the orphaned worker kept running"
            assert worker.returncode == 1, worker.log_tail(5)
            kinds = [m.kind for m in await _all(client, run)]
            assert kinds[0] == "hello" and kinds[-1] == "done"
            assert "no word from the coordinator" in worker.log_tail(5)
        finally:
            await worker.stop()
            await client.aclose()
    finally:
        await asyncio.to_thread(broker.stop)


async def _all(client: Any, run: str) -> list[Any]:
    from wsconsole.harness.agentwire import Signer
    from wsconsole.swarm.runwire import coordinator_name

    signer = Signer(coordinator_name(run), "s3cret")
    entries = await client.xrange(journal_stream(run))
    return [signer.open(fields) for _, fields in entries]


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--workers", "3", "--clients", "2"], "3 workers for 2 clients"),
    (["--agents", "a,b"], "--agents needs --agents-broker"),
    (["--agents", ","], "--agents names one agent or more"),
    (["--workers", "2", "--agents-broker", "redis://127.0.0.1:9"], "needs --agents-secret-env"),
    (["--workers", "2", "--agents-broker", "redis://127.0.0.1:9", "--agents-secret-env",
      "WSCONSOLE_TEST_UNSET_VAR"], "WSCONSOLE_TEST_UNSET_VAR is not set"),
    (["--workers", "2", "--fleet"], "--fleet and --control"),
    (["--agents-broker", "redis://127.0.0.1:9"], "go with --workers or --agents"),
])
def test_split_swarm_bad_usage_exits_2(args: list[str], message: str, capsys: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from wsconsole.cli import main

    monkeypatch.delenv("WSCONSOLE_TEST_UNSET_VAR", raising=False)
    assert main(["swarm", "ws://127.0.0.1:9", *args]) == 2
    assert message in capsys.readouterr().err


def test_split_swarm_bad_usage_exits_2_from_the_shell() -> None:
    out = subprocess.run([sys.executable, "-m", "wsconsole", "swarm", "ws://127.0.0.1:9",
                          "--workers", "5", "--clients", "4"],
                         capture_output=True, text=True, timeout=30 * SCALE)
    assert out.returncode == 2
    assert "5 workers for 4 clients" in out.stderr and "Traceback" not in out.stderr


async def _check_agents(broker_url: str, secret: str, names: list[str]) -> None:
    from wsconsole.harness.agents import AgentsClient
    from wsconsole.swarm.launchers import AgentLauncher

    async with AgentsClient(broker_url, secret) as agents:
        await AgentLauncher(agents, names).check(wait=0.5)


def test_workers_on_two_agents(procs: ProcessRegistry, tmp_path: Path) -> None:
    from tests.agentkit import SECRET, SECRET_ENV, start_agent, stop_agent

    with Broker(persist=False) as broker:
        server = procs.python("-m", "tests.servers", "harness", stdout=subprocess.PIPE)
        assert server.stdout is not None
        url = f"ws://127.0.0.1:{json.loads(server.stdout.readline())['port']}"
        homes = {name: tmp_path / name for name in ("a1", "a2")}
        agents = {name: start_agent(procs, broker.url, name, home)
                  for name, home in homes.items()}
        try:
            env = {**os.environ, SECRET_ENV: SECRET}

            def swarm(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, "-m", "wsconsole", "swarm", url, "--agents-broker",
                     broker.url, "--agents-secret-env", SECRET_ENV, *args],
                    capture_output=True, text=True, env=env, timeout=90 * SCALE)

            out = swarm("--agents", "a1,a2", "--workers", "3", "--clients", "6", "--rate",
                        "30", "--duration", "2", "--wait-joined", "20", "--json")
            assert out.returncode == 0, out.stderr[-2000:]
            with pytest.raises(SwarmConfigError, match=r"agent 'nobody' is unknown on this "
                               r"broker \(live agents: a1, a2\)"):
                asyncio.run(_check_agents(broker.url, SECRET, ["a1", "nobody"]))
            summary = json.loads(out.stdout.splitlines()[-1])
            where = [w["where"].split()[0] for w in summary["workers"]]
            assert where == ["a1", "a2", "a1"]
            assert [w["state"] for w in summary["workers"]] == ["done"] * 3
            assert summary["sent"] == sum(w["sent"] for w in summary["workers"]) > 30
            assert summary["delivered"] == summary["expected"] == 6 * summary["acknowledged"]
        finally:
            for name, agent in agents.items():
                stop_agent(agent, homes[name])


async def test_a_scenario_splits_its_swarm_and_reports_the_workers(tmp_path: Path) -> None:
    from tests.servers import server_port, start
    from wsconsole.scenarios.report import write_html
    from wsconsole.scenarios.runner import ScenarioRunner

    server, _ = await start("harness")
    try:
        text = (f'url = "ws://127.0.0.1:{server_port(server)}"\n[swarm]\nclients = 4\n'
                'rooms = 1\nrate = 20\nduration = 1.5\nsettle = 5\nwait_joined = 20\n'
                'workers = 2\n[[assertions]]\nexpect = "lost == 0"\n'
                '[[assertions]]\nexpect = "delivered > 40"\n')
        result = await ScenarioRunner(parse_scenario(text, "split.toml")).run()
    finally:
        server.close()
    assert result.passed, (result.error, [a.as_dict() for a in result.assertions])
    workers = result.summary["workers"]
    assert [(w["state"], w["clients"]) for w in workers] == [("done", 2), ("done", 2)]
    assert result.summary["delivered"] == sum(w["delivered"] for w in workers)
    write_html(result, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Swarm workers</h2>" in page and workers[1]["where"] in page


@pytest.mark.parametrize(("extra", "message"), [
    ("workers = 5\n", "5 workers for 4 clients"),
    ('workers = 2\n[[steps]]\nat = 1\naction = "pongs"\nshare = 0.5\n',
     "pongs acts on the swarm's clients in this process"),
])
def test_a_scenario_with_workers_that_cannot_work_is_refused(extra: str, message: str) -> None:
    from wsconsole.scenarios.model import ScenarioError

    text = f'url = "ws://127.0.0.1:9"\n[swarm]\nclients = 4\nduration = 2\n{extra}'
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text, "bad.toml")
