"""Agents end to end: real `wsconsole agent` subprocesses, a real Valkey, real demo nodes.

The console side is harness/agents.py's AgentsClient; what the agents said is also checked
independently, by reading the reports stream with a Signer of our own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis.asyncio as aioredis

from tests.agentkit import SECRET, SECRET_ENV, node_args, start_agent, stop_agent
from tests.support import ProcessRegistry, pid_alive, until
from wsconsole.harness.agents import (
    AgentCommandFailed,
    AgentsClient,
    AgentTimeout,
    AgentView,
)
from wsconsole.harness.agentwire import CONSOLE, REPORTS_STREAM, Signer, commands_stream
from wsconsole.harness.broker import Broker
from wsconsole.harness.procs import child_argv
from wsconsole.harness.stacknodes import port_accepts

pytestmark = pytest.mark.timeout(60)
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "python-broadcast" / "stack.toml"


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    """The module's broker (no append-only file: the tests need none)."""
    server = Broker(persist=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def console(broker: Broker) -> AsyncIterator[AgentsClient]:
    """The console's client."""
    async with AgentsClient(broker.url, SECRET, timeout=10) as client:
        yield client


def proc_of(view: AgentView | None, name: str) -> Any:
    """The process `name` in an agent's last report (None if it is not there)."""
    return next((p for p in view.procs if p.proc == name), None) if view else None


async def reports(url: str, kind: str) -> list[dict[str, Any]]:
    """Every verified report of `kind` on the stream (our own reader, not the client's)."""
    redis = aioredis.Redis.from_url(url)
    signer = Signer(CONSOLE, SECRET, window=3600)
    try:
        entries = await redis.xrange(REPORTS_STREAM)
    finally:
        await redis.aclose()
    found = []
    for entry_id, fields in entries:
        message = signer.open(fields)
        if message.kind == kind:
            found.append({"entry_id": entry_id.decode(), "from": message.sender, **message.body})
    return found


async def test_start_pause_restart_kill_a_node_through_an_agent(
    broker: Broker, console: AgentsClient, procs: ProcessRegistry, tmp_path: Path
) -> None:
    agent = start_agent(procs, broker.url, "a1", tmp_path / "a1")
    pids: list[int] = []
    try:
        await console.wait_for_agent("a1")
        args = node_args(broker.url)
        port = int(args[args.index("--port") + 1])
        started = await console.start("a1", "n1", "node", args)
        pids.append(started.pid)
        assert (started.proc, started.role, started.state) == ("n1", "node", "running")
        await until(lambda: port_accepts("127.0.0.1", port), "the node listening")
        with pytest.raises(AgentCommandFailed, match="already running"):
            await console.start("a1", "n1", "node", args)

        paused = await console.pause("a1", "n1")
        assert paused.state == "paused"
        assert psutil.Process(started.pid).status() == psutil.STATUS_STOPPED
        await console.resume("a1", "n1")
        assert psutil.Process(started.pid).status() != psutil.STATUS_STOPPED

        restarted = await console.restart("a1", "n1")
        pids.append(restarted.pid)
        assert restarted.pid != started.pid and restarted.restarts == 1
        assert not pid_alive(started.pid)
        await until(lambda: port_accepts("127.0.0.1", port), "the restarted node listening")
        await until(lambda: (p := proc_of(console.agents()["a1"], "n1")) is not None
                    and p.pid == restarted.pid and p.rss > 0, "a state report with its RSS")

        listed = await asyncio.to_thread(cli, "--json", "list", broker_url=broker.url)
        assert listed.returncode == 0, listed.stderr
        line = json.loads(listed.stdout.splitlines()[0])
        assert (line["name"], line["state"]) == ("a1", "up")
        assert [(p["proc"], p["pid"]) for p in line["procs"]] == [("n1", restarted.pid)]
        failed = await asyncio.to_thread(cli, "kill", "a1", "nope", broker_url=broker.url)
        assert failed.returncode == 1 and "no process named 'nope'" in failed.stderr

        killed = await console.kill("a1", "n1")
        assert (killed.state, killed.exit) == ("exited", "signal SIGKILL")
        assert not pid_alive(restarted.pid)
        web = await console.start("a1", "web1", "stack-node", {
            "stack": str(EXAMPLE), "node": "n1", "redis_url": broker.url})
        pids.append(web.pid)
        output = tmp_path / "a1" / "logs" / "web1.log"
        await until(lambda: "listening on" in output.read_text(), "the stack node ready",
                    detail=output.read_text)
        stopped = await console.stop("a1", "web1")  # the stack's stop signal, gracefully
        assert (stopped.state, stopped.exit) == ("exited", "code 0") and not pid_alive(web.pid)
        table = await console.status("a1")
        assert [(p.proc, p.state) for p in table] == [("n1", "exited"), ("web1", "exited")]
        with pytest.raises(AgentCommandFailed, match="unknown role"):
            await console.start("a1", "x", "sh", ["-c", "true"])
        with pytest.raises(AgentCommandFailed, match="no process named"):
            await console.stop("a1", "nope")
        with pytest.raises(AgentTimeout, match=r"'ghost' did not answer status.*never seen"):
            await console.status("ghost", timeout=0.5)
    finally:
        stop_agent(agent, tmp_path / "a1", pids)
    assert agent.returncode == 0


async def test_wrong_signature_and_replayed_commands_are_refused_and_logged(
    broker: Broker, console: AgentsClient, procs: ProcessRegistry, tmp_path: Path
) -> None:
    agent = start_agent(procs, broker.url, "a2", tmp_path / "a2")
    redis = aioredis.Redis.from_url(broker.url)
    try:
        await console.wait_for_agent("a2")
        forger = Signer(CONSOLE, "not-the-secret")
        body = {"id": "forged-1", "proc": "evil", "role": "node", "args": ["--no-auth"]}
        forged_fields = forger.seal("a2", "start", body)
        forged = (await redis.xadd(commands_stream("a2"), forged_fields)).decode()
        genuine_fields = Signer(CONSOLE, SECRET).seal(
            "a2", "start", {"id": "once-1", "proc": "n1", "role": "node",
                            "args": node_args(broker.url)})
        genuine = (await redis.xadd(commands_stream("a2"), genuine_fields)).decode()
        replayed = (await redis.xadd(commands_stream("a2"), genuine_fields)).decode()

        async def refused() -> dict[str, str]:
            return {r["entry"]: r["reason"] for r in await reports(broker.url, "refused")}

        await until(lambda: _has(refused, {forged, replayed}), "both refusals reported")
        await until(lambda: console.agents()["a2"].procs, "the genuine command's process")
        assert (await refused()) == {forged: "bad_signature", replayed: "replayed"}
        results = [r for r in await reports(broker.url, "result") if r["id"] == "once-1"]
        assert len(results) == 1 and results[0]["ok"] and results[0]["entry"] == genuine
        table = await console.status("a2")
        assert [(p.proc, p.restarts) for p in table] == [("n1", 0)]  # started once, no "evil"
        log = (tmp_path / "a2" / "agent.log").read_text()
        assert f"refused entry {forged}: bad_signature" in log
        assert f"refused entry {replayed}: replayed" in log
    finally:
        await redis.aclose()
        stop_agent(agent, tmp_path / "a2")


async def _has(refused: Any, wanted: set[str]) -> bool:
    return wanted <= set(await refused())


async def test_an_agent_killed_and_restarted_adopts_its_node_and_refuses_stale_commands(
    broker: Broker, console: AgentsClient, procs: ProcessRegistry, tmp_path: Path
) -> None:
    state_dir = tmp_path / "a3"
    agent = start_agent(procs, broker.url, "a3", state_dir, "--window", "2")
    pids: list[int] = []
    try:
        await console.wait_for_agent("a3")
        node = await console.start("a3", "n1", "node", node_args(broker.url))
        other = await console.start("a3", "n2", "node", node_args(broker.url))
        pids += [node.pid, other.pid]
        agent.send_signal(signal.SIGKILL)
        agent.wait(5)
        assert pid_alive(node.pid) and pid_alive(other.pid)  # not tied to the agent
        psutil.Process(other.pid).kill()  # dies while the agent is down
        redis = aioredis.Redis.from_url(broker.url)
        try:  # sent while it is down, older than its 2 s window when it comes back
            late = (await redis.xadd(commands_stream("a3"), Signer(CONSOLE, SECRET).seal(
                "a3", "kill", {"id": "late-1", "proc": "n1"}))).decode()
        finally:
            await redis.aclose()
        await until(lambda: console.agents()["a3"].lost, "the agent marked lost", timeout=6)
        await asyncio.sleep(2.2)  # past the window

        agent = start_agent(procs, broker.url, "a3", state_dir, "--window", "2")
        await until(lambda: (v := console.agents()["a3"]).state == "up"
                    and proc_of(v, "n2").state == "exited", "the restarted agent's report")
        view = console.agents()["a3"]
        assert proc_of(view, "n1").pid == node.pid and proc_of(view, "n1").state == "running"
        assert proc_of(view, "n2").exit == "exited while the agent was down"
        hellos = [h for h in await reports(broker.url, "hello") if h["from"] == "a3"]
        assert {p["proc"]: p["state"] for p in hellos[-1]["procs"]} == {
            "n1": "running", "n2": "exited"}
        stale = [r for r in await reports(broker.url, "refused") if r["entry"] == late]
        assert [r["reason"] for r in stale] == ["stale"] and pid_alive(node.pid)

        stopped = await console.stop("a3", "n1")  # an adopted process is still ours to stop
        assert stopped.state == "exited" and not pid_alive(node.pid)
    finally:
        stop_agent(agent, state_dir, pids)


async def test_broker_killed_and_restarted_node_keeps_running_agent_says_hello_again(
    procs: ProcessRegistry, tmp_path: Path
) -> None:
    own = Broker(persist=False)
    own.start()
    state_dir = tmp_path / "a4"
    agent = start_agent(procs, own.url, "a4", state_dir)
    pids: list[int] = []
    try:
        async with AgentsClient(own.url, SECRET, timeout=10) as console:
            await console.wait_for_agent("a4")
            node = await console.start("a4", "n1", "node", node_args(own.url))
            pids.append(node.pid)
            await asyncio.to_thread(own.kill)
            await until(lambda: console.agents()["a4"].lost, "the agent lost with the broker")
            await asyncio.sleep(1.0)
            assert pid_alive(node.pid) and agent.poll() is None
            killed_at = time.time()
            await asyncio.to_thread(own.restart)  # the same port, an empty server
            await until(lambda: console.agents()["a4"].state == "up", "the agent back",
                        timeout=20)
            hellos = await reports(own.url, "hello")
            assert hellos and hellos[0]["from"] == "a4"
            assert [(p["proc"], p["pid"], p["state"]) for p in hellos[0]["procs"]] == [
                ("n1", node.pid, "running")]
            assert console.agents()["a4"].last_seen > killed_at
    finally:
        stop_agent(agent, state_dir, pids)
        own.stop()


def cli(*args: str, broker_url: str = "redis://127.0.0.1:1",
        secret: str | None = SECRET) -> subprocess.CompletedProcess[str]:
    """`wsconsole agents --broker URL --secret-env VAR ARGS` (with the secret set or not)."""
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    if secret is not None:
        env[SECRET_ENV] = secret
    argv = child_argv("agents", "--broker", broker_url, "--secret-env", SECRET_ENV, *args)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_bad_usage_is_refused_with_exit_code_2(tmp_path: Path) -> None:
    unset = subprocess.run(
        child_argv("agent", "--broker", "redis://127.0.0.1:1", "--name", "a9",
                   "--secret-env", "WSCONSOLE_TEST_UNSET", "--state-dir", str(tmp_path)),
        env={k: v for k, v in os.environ.items() if k != "WSCONSOLE_TEST_UNSET"},
        capture_output=True, text=True, timeout=60)
    assert unset.returncode == 2 and "WSCONSOLE_TEST_UNSET" in unset.stderr
    assert "not set or empty" in unset.stderr
    assert cli("list", secret=None).returncode == 2
    bad_role = cli("start", "a1", "n1", "stack-node", "node=n1")
    assert bad_role.returncode == 2 and "stack=FILE" in bad_role.stderr
    assert cli("list", broker_url="http://x").returncode == 2
    unreachable = cli("list")
    assert unreachable.returncode == 1 and "not reachable" in unreachable.stderr
