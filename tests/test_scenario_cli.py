"""`wsconsole scenario`: exit 2 for an invalid file (with its line), 1 for a failed verdict,
reports written, progress as JSON lines; the runner stops early on request."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.support import SCALE, pid_alive, until
from wsconsole.scenarios.model import parse_scenario
from wsconsole.scenarios.runner import ScenarioRunner

SMALL = """\
name = "small"
[cluster]
nodes = 1
[swarm]
clients = 4
rooms = 1
rate = 8
duration = 2
settle = 3
[[assertions]]
expect = "lost == 0"
[[assertions]]
name = "impossible"
expect = "p99_latency_ms < 0"
"""


def acknowledged(runner: ScenarioRunner) -> int:
    """Publishes the run's swarm has had acknowledged so far (0 before the swarm starts)."""
    return 0 if runner.swarm is None else runner.swarm.accounting.acknowledged


def _cli(*args: str, timeout: float = 90 * SCALE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsconsole", "scenario", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_malformed_file_exits_2_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace("rooms = 1", 'rooms = "one"'))
    out = _cli("run", str(bad))
    assert out.returncode == 2
    assert f"{bad}:6: rooms must be an integer" in out.stderr
    assert "Traceback" not in out.stderr
    syntax = tmp_path / "syntax.toml"
    syntax.write_text(SMALL.replace("rate = 8", "rate = [8"))
    out = _cli("check", str(syntax))
    assert out.returncode == 2 and f"{syntax}:8: not valid TOML" in out.stderr


def test_check_and_list(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(SMALL)
    out = _cli("check", str(good), "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout)["assertions"] == 2
    listed = _cli("list", "--json")
    names = {json.loads(line)["name"] for line in listed.stdout.splitlines()}
    assert {"node-kill", "heartbeat-loss"} <= names
    assert _cli("run", str(tmp_path / "nope.toml")).returncode == 2
    assert _cli().returncode == 2
    two_lines = _cli("run", str(good), "--token", "a\nb")  # checked as connect checks it
    assert two_lines.returncode == 2 and "--token must be one line" in two_lines.stderr


def test_impossible_assertion_exits_1_and_reports_are_written(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    junit, report = tmp_path / "out.xml", tmp_path / "out.html"
    out = _cli("run", str(path), "--json", "--junit", str(junit), "--report", str(report))
    assert out.returncode == 1, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    verdicts = {e["name"]: e["passed"] for e in lines if e["event"] == "assertion"}
    assert verdicts == {"lost == 0": True, "impossible": False}
    result = [e for e in lines if e["event"] == "result"][-1]
    assert result["passed"] is False and result["error"] is None
    assert any(e["event"] == "stats" for e in lines)
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    page = report.read_text()
    assert "<svg" in page and "impossible" in page and "FAIL" in page


async def test_server_inject_on_an_unknown_node_fails_the_step_plainly() -> None:
    text = SMALL.replace(
        '[[assertions]]\nname = "impossible"\nexpect = "p99_latency_ms < 0"\n', ""
    )
    text += '[[steps]]\nat = 0.5\naction = "inject"\ndirection = "server"\n'
    text += 'case = "masked-server-frame"\nnode = "n9"\n'
    runner = ScenarioRunner(parse_scenario(text, "inject.toml"))
    result = await runner.run()
    (step,) = result.steps
    assert not step.ok
    assert "n9" in step.detail
    assert not result.passed  # a step that could not be done never passes silently


async def test_stop_ends_a_long_run_early_and_cleans_up() -> None:
    text = SMALL.replace("duration = 2", "duration = 60")
    runner = ScenarioRunner(parse_scenario(text, "long.toml"))
    task = asyncio.create_task(runner.run())
    await until(lambda: task.done() or acknowledged(runner) >= 4,
                "four acknowledged publishes", 30)
    assert not task.done(), task
    runner.stop()
    result = await asyncio.wait_for(task, 30 * SCALE)
    assert result.stopped and not result.passed
    assert result.summary["sent"] > 0
    cluster = runner.cluster
    pids = [cluster.broker.pid, cluster.balancer.pid, *(n.pid for n in cluster.nodes.values())]
    assert not [pid for pid in pids if pid and pid_alive(pid)]


async def test_a_scenario_against_an_external_url() -> None:
    from tests.servers import server_port, start

    server, state = await start("harness")
    try:
        url = f"ws://127.0.0.1:{server_port(server)}"
        text = (
            f'url = "{url}"\n[swarm]\nclients = 5\nrooms = 1\nrate = 10\nduration = 1.5\n'
            '[[steps]]\nat = 0\naction = "wait"\nuntil = "connected"\ntimeout = 10\n'
            '[[assertions]]\nexpect = "lost == 0"\n[[assertions]]\nexpect = "delivered > 0"\n'
        )
        result = await ScenarioRunner(parse_scenario(text, "url.toml")).run()
    finally:
        server.close()
    assert result.passed, (result.error, [a.as_dict() for a in result.assertions])
    assert result.steps[0].ok and "all 5 clients connected" in result.steps[0].detail
    assert state is not None and state.deliveries > 0


async def test_real_loss_is_caught_when_the_history_is_too_short() -> None:
    """With a one-message history, clients of a killed node cannot recover what they
    missed: the node says so (recovery_window_exceeded), so nothing is lost silently, and
    the accounting counts what they were told is gone, which an assertion can refuse."""
    text = """\
name = "no history"
[cluster]
nodes = 2
[cluster.limits]
history = 1
[swarm]
clients = 12
rooms = 1
rate = 40
duration = 4
settle = 3
[[steps]]
at = 1.5
action = "kill"
node = "n1"
[[assertions]]
expect = "lost == 0"
[[assertions]]
expect = "announced_lost == 0"
"""
    result = await ScenarioRunner(parse_scenario(text, "nohistory.toml")).run()
    summary = result.summary
    assert summary["reconnects"] > 0
    assert summary["errors"].get("recovery_window_exceeded", 0) > 0
    assert summary["lost"] == 0 and summary["announced_lost"] > 0
    assert [a.passed for a in result.assertions] == [True, False] and not result.passed


def test_sigterm_stops_a_child_run_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """How a window runs a scenario: as a child reading JSON lines, stopped by SIGTERM. A Stop
    repeats SIGTERM when the child lingers; one landing while the child stops its cluster or
    writes its report must not kill it (exit -15, report lost)."""
    import signal

    from tests.test_connect_cli import Lines

    path = tmp_path / "long.toml"
    path.write_text(SMALL.replace("duration = 2", "duration = 120"))
    report = tmp_path / "stopped.html"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsconsole", "scenario", "run", str(path), "--json",
         "--report", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        lines = Lines(proc)
        lines.expect(lambda e: e["event"] == "stats" and e["acknowledged"] > 0, 60 * SCALE)
        deadline = time.monotonic() + 30 * SCALE
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGTERM)  # an impatient parent, every 20 ms until it exits
            time.sleep(0.02)
        assert proc.wait(timeout=5 * SCALE) == 1
        lines.rest()  # read to the end of the stream
    finally:
        if proc.poll() is None:
            proc.kill()
    events = [json.loads(line) for line in lines.seen]
    result = [e for e in events if e["event"] == "result"][-1]
    assert result["stopped"] is True and result["passed"] is False
    assert report.exists() and "stopped early" in report.read_text()
    pids = {e["pid"] for e in events if e["event"] == "cluster_event" and e.get("pid")}
    assert len(pids) >= 3  # broker, node, balancer
    assert not [pid for pid in pids if pid_alive(pid)]


async def test_a_run_over_its_timeout_is_ended_and_judged_failed() -> None:
    text = "timeout = 3\n" + SMALL.replace("duration = 2", "duration = 60")
    runner = ScenarioRunner(parse_scenario(text, "slow.toml"))
    result = await asyncio.wait_for(runner.run(), 60 * SCALE)
    assert result.error is not None and "did not finish within 3 s" in result.error
    assert result.summary["sent"] > 0 and not result.passed
    assert all(client.state.value == "CLOSED" for client in runner.swarm.clients)


async def test_cancelling_a_run_still_stops_clients_and_cluster() -> None:
    runner = ScenarioRunner(parse_scenario(SMALL.replace("duration = 2", "duration = 60"), "c"))
    task = asyncio.create_task(runner.run())
    await until(lambda: task.done() or acknowledged(runner) >= 2,
                "two acknowledged publishes", 30)
    assert not task.done(), task
    task.cancel()
    try:
        await asyncio.wait_for(task, 30 * SCALE)
    except asyncio.CancelledError:
        pass
    assert all(client.state.value == "CLOSED" for client in runner.swarm.clients)
    cluster = runner.cluster
    pids = [cluster.broker.pid, cluster.balancer.pid, *(n.pid for n in cluster.nodes.values())]
    assert not [pid for pid in pids if pid and pid_alive(pid)]


async def test_a_step_the_load_outlives_fails_the_run() -> None:
    """A step still running when the swarm ends is recorded as failed, never dropped silently."""
    impossible = 'name = "impossible"\nexpect = "p99_latency_ms < 0"'
    text = SMALL.replace(impossible, 'expect = "sent > 0"')
    text += '[[steps]]\nat = 1\naction = "wait"\nseconds = 60\n'
    result = await ScenarioRunner(parse_scenario(text, "late.toml")).run()
    assert [a.passed for a in result.assertions] == [True, True]
    assert len(result.steps) == 1 and not result.steps[0].ok
    assert "not run" in result.steps[0].detail
    assert not result.passed


def test_a_stack_scenario_prints_where_its_losses_were() -> None:
    from wsconsole.commands.scenario import _human

    row = {"owed": 10, "delivered": 7, "lost": 3, "missed": 2, "duplicated": 0,
           "out_of_order": 0, "p50_latency_ms": 5.0, "p99_latency_ms": 9.0}
    summary = {"event": "summary", "sent": 5, "expected": 10, "lost": 3, "missed": 2,
               "duplicated": 0, "per_node": {"n1": row},
               "per_window": [{"label": "kill n1", "from_s": 3.0, **row}]}
    lines = _human(summary).splitlines()
    assert lines[0] == "messages: sent 5  owed 10  lost 3  missed 2  duplicated 0"
    assert lines[1].startswith("  node n1: owed 10  delivered 7  lost 3")
    assert lines[2].startswith("  window 3s kill n1: owed 10  delivered 7  lost 3")
