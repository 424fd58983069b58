"""`wsconsole harness --stack`: the user's own nodes under the harness, as a subprocess.

Nothing of a node's process tree (a shell wrapper, a child in its group, a child that left
its group with setsid) survives `quit`, SIGINT or a SIGKILLed supervisor; every operation
works on the user's nodes (and the harness's broker and balancer faults); the balancer
counts their messages on the wire.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from tests.support import ProcessRegistry, pid_alive, wait_for
from tests.test_harness_cli import HarnessProcess

ROOT = Path(__file__).resolve().parent.parent
FORKING = ROOT / "tests" / "fixtures" / "stacks" / "forking" / "stack.toml"
BROADCAST = ROOT / "examples" / "python-broadcast" / "stack.toml"
SSE = ROOT / "tests" / "fixtures" / "stacks" / "sse" / "stack.toml"


def _state(pid: int) -> str:
    """The process state letter of /proc/PID/stat (T: stopped)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0]


def _tree(pids_dir: Path, ready: dict[str, Any]) -> list[int]:
    """Every PID of the nodes' trees (the wrappers' records), the balancer, the broker."""
    assert wait_for(lambda: all((pids_dir / n["id"]).exists() and
                                len((pids_dir / n["id"]).read_text().split()) == 3
                                for n in ready["nodes"]), timeout=10)
    pids = [int(p) for n in ready["nodes"] for p in (pids_dir / n["id"]).read_text().split()]
    pids.append(ready["balancer"]["pid"])
    if ready["broker"]["pid"] is not None:  # --node-cmd: the harness's own broker
        pids.append(ready["broker"]["pid"])
    return pids


@pytest.mark.parametrize("how", ["quit", "sigint", "sigkill"])
def test_nothing_of_a_forking_node_outlives_the_supervisor(
    procs: ProcessRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("PIDS_DIR", str(tmp_path))
    wrapper = FORKING.parent / "wrapper.sh"
    own = ["--stack", str(FORKING)] if how != "sigint" else \
        ["--node-cmd", f"sh {wrapper}", "--nodes", "2"]  # the one-line form, with a broker
    harness = HarnessProcess(procs, *own, "--stats-interval", "0")
    pids: list[int] = []
    try:
        ready = harness.expect(lambda e: e["event"] == "ready", timeout=90)
        expected = "sh wrapper.sh" if how != "sigint" else f"sh {wrapper}"
        assert [n["command_line"] for n in ready["nodes"]] == [expected] * 2
        pids = _tree(tmp_path, ready)
        assert all(pid_alive(pid) for pid in pids)
        if how == "quit":
            harness.send("quit")
        else:
            harness.proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
        harness.proc.wait(timeout=60)
        assert wait_for(lambda: not [p for p in pids if pid_alive(p)], timeout=10), \
            f"still alive after {how}: {[p for p in pids if pid_alive(p)]}"
    finally:
        if harness.proc.poll() is None:
            harness.proc.kill()
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_every_operation_on_a_users_nodes_and_their_traffic_counted(
    procs: ProcessRegistry,
) -> None:
    harness = HarnessProcess(procs, "--stack", str(BROADCAST), "--stats-interval", "0.5")
    pids: list[int] = []
    try:
        ready = harness.expect(lambda e: e["event"] == "ready", timeout=90)
        pids = [n["pid"] for n in ready["nodes"]]
        assert ready["stack"] == "python-broadcast" and ready["url"].endswith("/")
        with ws_connect(ready["url"], open_timeout=10) as ws:
            node = ws.response.headers["X-Wsconsole-Node"]  # the balancer says who serves
            assert node in ("n1", "n2")
            ws.send(json.dumps({"type": "join", "room": "r"}))
            assert json.loads(ws.recv(timeout=10)) == {"type": "joined", "room": "r"}
            # a node's first sample is the baseline its rates start from
            harness.expect(lambda e: e["event"] == "stats" and e["connections"][node] == 1)
            for n in range(20):
                ws.send(json.dumps({"type": "chat", "room": "r", "id": f"m{n}"}))
            got = [json.loads(ws.recv(timeout=10))["id"] for _ in range(20)]
            assert got == [f"m{n}" for n in range(20)]
            stats = harness.expect(lambda e: e["event"] == "stats" and
                                   e["msgs_in_per_s"][node] > 0 and
                                   e["msgs_out_per_s"][node] > 0)
            assert stats["connections"][node] == 1
            # the app's own /metrics (its stack file's [metrics]), scraped beside ours: a
            # second batch, so its rate shows in a stats line still to come
            for n in range(20):
                ws.send(json.dumps({"type": "chat", "room": "r", "id": f"again{n}"}))
            assert [json.loads(ws.recv(timeout=10))["id"] for _ in range(20)] == [
                f"again{n}" for n in range(20)]
            scraped = harness.expect(lambda e: e["event"] == "stats" and
                                     e.get("metrics", {}).get(node, {}).get(
                                         "broadcast_published_per_s", 0) > 0)
            assert scraped["metrics"][node]["broadcast_connections"] == 1
        harness.send(f"log {node} 5")
        log = harness.expect(lambda e: e["event"] == "log")
        assert any("listening on" in line["text"] for line in log["lines"])
        n1 = next(n["pid"] for n in ready["nodes"] if n["id"] == "n1")
        broker = ready["broker"]["pid"]
        for line in ("pause n1", "resume n1", "drain n2", "restart n2", "add", "kill n1",
                     "broker kill", "broker restart", "net all latency 20ms", "net all clear",
                     "sticky cookie"):
            harness.send(line)
            done = harness.expect(lambda e: e["event"] in ("done", "error"))
            assert done["event"] == "done", done
            if done.get("pid"):
                pids.append(done["pid"])
            if line == "pause n1":  # the signal reached the node itself, not only its keeper
                assert wait_for(lambda: _state(n1) == "T", timeout=5)
            elif line == "resume n1":
                assert wait_for(lambda: _state(n1) != "T", timeout=5)
            elif line == "broker kill":
                assert wait_for(lambda: not pid_alive(broker), timeout=10)
            elif line == "broker restart":
                assert done["broker"]["pid"] not in (None, broker), done
                pids.append(done["broker"]["pid"])
        harness.send("status")
        status = harness.expect(lambda e: e["event"] == "status")
        assert {n["id"]: n["state"] for n in status["nodes"]} == {
            "n1": "killed", "n2": "running", "n3": "running"}
        harness.send("conns n2")
        assert "control channel" in harness.expect(lambda e: e["event"] == "error")["error"]
        harness.send("quit")
        harness.expect(lambda e: e["event"] == "stopped")
        assert harness.proc.wait(timeout=60) == 0
        assert wait_for(lambda: not [p for p in pids if pid_alive(p)], timeout=10)
        log_dir = Path(ready["log_dir"])
        n1_log = (log_dir / "n1.log").read_text()
        assert "listening on" in n1_log and f"pid {n1} ended by SIGKILL" in n1_log
    finally:
        if harness.proc.poll() is None:
            harness.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                harness.proc.wait(timeout=30)
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_swarm_on_a_stack_starts_it_for_the_run_and_accounts_for_every_message() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wsconsole", "swarm", "--stack", str(BROADCAST), "--clients",
         "4", "--rate", "20", "--duration", "2", "--wait-joined", "10", "--json"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    ready = next(e for e in lines if e["event"] == "stack_ready")
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["ok"], summary
    assert done.returncode == 0, done.stderr[-500:]
    assert ready["url"].startswith("ws://127.0.0.1:") and summary["sent"] >= 20
    assert summary["delivered"] == summary["expected"] == 4 * summary["sent"]
    assert set(summary["per_node"]) <= {"n1", "n2"} and summary["per_client"]


def test_an_sse_app_under_the_harness_has_its_events_counted(procs: ProcessRegistry) -> None:
    """An aiohttp SSE node (chunked, comments between events): the balancer names the node
    serving the stream and counts its events on the wire, none the other way."""
    harness = HarnessProcess(procs, "--stack", str(SSE), "--stats-interval", "0.3")
    pids: list[int] = []
    try:
        ready = harness.expect(lambda e: e["event"] == "ready", timeout=90)
        pids = [n["pid"] for n in ready["nodes"]]
        assert ready["url"].startswith("http://127.0.0.1:") and ready["url"].endswith("/events")
        with urllib.request.urlopen(ready["url"] + "?count=40", timeout=30) as response:
            node = response.headers["X-Wsconsole-Node"]
            events = [line for line in response.read().decode().splitlines()
                      if line.startswith("data: ")]
        assert node in ("n1", "n2") and len(events) == 40
        stats = harness.expect(lambda e: e["event"] == "stats" and
                               e["msgs_out_per_s"][node] > 0)
        assert stats["msgs_in_per_s"][node] == 0  # an event stream has no way up
        harness.send(f"kill {node}")
        assert harness.expect(lambda e: e["event"] in ("done", "error"))["event"] == "done"
        harness.send("quit")
        harness.expect(lambda e: e["event"] == "stopped")
        assert harness.proc.wait(timeout=60) == 0
        assert wait_for(lambda: not [p for p in pids if pid_alive(p)], timeout=10)
    finally:
        harness.stop(pids)
