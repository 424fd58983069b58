"""`wsconsole harness`: stdin command parsing, usage errors, and the real thing as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from tests.support import ProcessRegistry, free_port, pid_alive, wait_for
from wsconsole.core.localca import DATA_DIR_ENV
from wsconsole.harness.shell import Command, CommandError, help_event, parse


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("kill n2", Command("kill", ("n2",))),
        ("  PAUSE n1  ", Command("pause", ("n1",))),
        ("resume n1 # after the pause", Command("resume", ("n1",))),
        ("drain n3", Command("drain", ("n3",))),
        ("restart n1", Command("restart", ("n1",))),
        ("add", Command("add")),
        ("broker kill", Command("broker", ("kill",))),
        ("broker restart", Command("broker", ("restart",))),
        ("broker restart fresh", Command("broker", ("restart", "fresh"))),
        ("status", Command("status")),
        ("token alice", Command("token", ("alice",))),
        ("token bob lobby ops-*", Command("token", ("bob", "lobby", "ops-*"))),
        ("sticky cookie", Command("sticky", ("cookie",))),
        ("exit", Command("quit")),
        ("quit", Command("quit")),
        (
            "net n1 latency ms=200 jitter_ms=20.5",
            Command("net", ("n1", "latency"), (("ms", 200), ("jitter_ms", 20.5))),
        ),
        (
            "net all latency 200ms 20ms",
            Command("net", ("all", "latency"), (("ms", 200.0), ("jitter_ms", 20.0))),
        ),
        (
            "net n1 bandwidth 100kB/s",
            Command("net", ("n1", "bandwidth"), (("bytes_per_s", 100000.0),)),
        ),
        ("net n3 half-open up", Command("net", ("n3", "half_open"), (("direction", "up"),))),
        ("net n1 blackhole", Command("net", ("n1", "blackhole"))),
        ("net all clear", Command("net", ("all", "clear"))),
        ("net n2 clear latency", Command("net", ("n2", "clear", "latency"))),
        (
            "inject n1 invalid-utf8-text lobby repeat=2",
            Command("inject", ("n1", "invalid-utf8-text", "lobby"), (("repeat", 2),)),
        ),
        ("inject n2 rsv1-set all", Command("inject", ("n2", "rsv1-set", "all"))),
        ("conns n1", Command("conns", ("n1",))),
        ("shard kill s1a", Command("shard", ("kill", "s1a"))),
        ("shard failover s2", Command("shard", ("failover", "s2"))),
        ("shard partition s3", Command("shard", ("partition", "s3"))),
        ("shard move 42 s3", Command("shard", ("move", "s3", "42"))),
    ],
)
def test_parse_accepts_every_documented_command(line: str, expected: Command) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize("line", ["", "   ", "# just a comment"])
def test_blank_lines_and_comments_are_skipped(line: str) -> None:
    assert parse(line) is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("explode n1", "unknown command 'explode'"),
        ("kill", "usage: kill ID"),
        ("kill n1 n2", "usage: kill ID"),
        ("add n4", "usage: add"),
        ("broker pause", "usage: broker kill|restart [fresh]"),
        ("broker kill fresh", "usage: broker kill|restart [fresh]"),
        ("broker", "usage: broker"),
        ("token", "usage: token USER"),
        ("sticky round-robin", "usage: sticky"),
        ("net n1", "usage: net"),
        ("net n1 latency 200 ms=3", "not a number"),
        ("net n1 latency fast", "not a number"),
        ("net n1 warp 9", "unknown fault kind"),
        ("net n1 latency ms=-5", "usage: net"),
        ("net n1 clear latency extra", "usage: net"),
        ("inject n1", "usage: inject"),
        ("conns", "usage: conns ID"),
        ("inject n1 rsv1-set", "usage: inject"),
        ("inject n1 rsv1-set count=2", "usage: inject"),
        ("inject n1 bad-utf8 all", "unknown case id 'bad-utf8'"),
        ("inject n1 app-bad-json all", "client-to-server only"),
        ("inject n1 rsv1-set all speed=3", "unknown option 'speed'"),
        ("inject n1 rsv1-set all repeat=0", "repeat must be"),
        ("status now", "usage: status"),
        ("shard explode s1", "usage: shard"),
        ("shard kill", "usage: shard"),
        ("shard move s1 42", "usage: shard"),
    ],
)
def test_bad_lines_get_a_plain_message(line: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse(line)


def test_help_lists_every_command() -> None:
    listed = " ".join(help_event()["commands"])
    for word in ("kill", "pause", "resume", "drain", "restart", "add", "broker", "token", "quit"):
        assert word in listed


@pytest.mark.parametrize(
    "args",
    [
        ["--nodes", "0"],
        ["--nodes", "three"],
        ["--port", "99999"],
        ["--sticky", "random"],
        ["--redis", "http://localhost:6379"],
        ["--rate", "-1"],
        ["--ping-interval", "-1"],
        ["--stats-interval", "-2"],
        ["--broker-cluster", "17"],
        ["--broker-cluster", "3", "--redis", "redis://127.0.0.1:6379"],
    ],
)
def test_bad_flags_exit_2_with_one_line_and_no_traceback(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wsconsole", "harness", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error" in proc.stderr
    assert proc.stdout == ""


# ------------------------------------------------------------------ the real thing, end to end


class HarnessProcess:
    """`wsconsole harness --json` as a child, with its stdout lines read on a thread."""

    def __init__(self, procs: ProcessRegistry, *args: str) -> None:
        self.proc = procs.start(
            [sys.executable, "-m", "wsconsole", "harness", "--json", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(json.loads(raw))  # every stdout line must be one JSON object
        self.lines.put(None)

    def stop(self, pids: list[int]) -> None:
        """SIGTERM the harness if it still runs, then SIGKILL any of `pids` left: never a
        child behind, even when an assertion failed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)

    def send(self, line: str) -> None:
        """Type one command."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        """The next output line matching `predicate` (fails on timeout or end of output)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching line; seen {self.seen[-5:]}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"output ended; seen {self.seen[-5:]}")
            self.seen.append(line)
            if predicate(line):
                return line


def ready_pids(ready: dict[str, Any]) -> list[int]:
    """Every PID the ready line names: nodes, broker, balancer."""
    pids = [node["pid"] for node in ready["nodes"]]
    pids += [ready["broker"]["pid"], ready["balancer"]["pid"]]
    assert all(isinstance(pid, int) for pid in pids)
    return pids


def test_harness_json_ready_kill_quit_leaves_nothing(procs: ProcessRegistry) -> None:
    harness = HarnessProcess(procs, "--demo-timings", "--stats-interval", "0.5")
    pids: list[int] = []
    try:
        ready = harness.expect(lambda e: e["event"] == "ready")
        pids = ready_pids(ready)
        print(f"\nwsconsole harness ready in {ready['ready_s']:.2f} s (inside the process)")
        assert ready["url"].startswith("ws://127.0.0.1:")
        assert [n["id"] for n in ready["nodes"]] == ["n1", "n2", "n3"]
        assert all(n["metrics_url"].endswith("/metrics") for n in ready["nodes"])
        assert ready["broker"]["url"].startswith("redis://127.0.0.1:")
        assert all(pid_alive(pid) for pid in pids)
        # the token is a real one: the nodes accept it through the balancer
        with ws_connect(f"{ready['url']}/?token={ready['token']}", open_timeout=10) as ws:
            ws.send('{"type": "rpc", "id": "r1", "method": "echo", "params": 1}')
            assert json.loads(ws.recv(timeout=10))["type"] == "result"
        harness.expect(lambda e: e["event"] == "stats" and "total" in e["connections"])

        harness.send("frobnicate n2")
        error = harness.expect(lambda e: e["event"] == "error")
        assert "unknown command" in error["error"]
        harness.send("kill n9")
        assert "unknown node" in harness.expect(lambda e: e["event"] == "error")["error"]

        n2 = next(n for n in ready["nodes"] if n["id"] == "n2")
        harness.send("kill n2")
        killed = harness.expect(lambda e: e["event"] == "node" and e["id"] == "n2")
        assert killed["state"] == "killed" and killed["exit_code"] == -9
        assert not pid_alive(n2["pid"])
        harness.send("status")
        status = harness.expect(lambda e: e["event"] == "status")
        assert {n["id"]: n["state"] for n in status["nodes"]} == {
            "n1": "running",
            "n2": "killed",
            "n3": "running",
        }
        harness.send("quit")
        harness.expect(lambda e: e["event"] == "stopped")
        assert harness.proc.wait(timeout=60) == 0
        assert wait_for(lambda: not [p for p in pids if pid_alive(p)], timeout=5)
    finally:
        harness.stop(pids)


def test_harness_on_its_own_broker_cluster_fails_a_shard_over_and_stops_every_server(
    procs: ProcessRegistry,
) -> None:
    harness = HarnessProcess(procs, "--nodes", "1", "--broker-cluster", "2", "--demo-timings")
    pids: list[int] = []
    try:
        ready = harness.expect(lambda e: e["event"] == "ready")
        harness.send("status")
        shards = harness.expect(lambda e: e["event"] == "status")["shards"]
        assert [(s["name"], s["primary"], s["replicas"], s["state"]) for s in shards] == [
            ("s1", "s1a", ["s1b"], "ok"), ("s2", "s2a", ["s2b"], "ok")]
        assert sum(s["slot_count"] for s in shards) == 16384
        pids = [pid for s in shards for pid in s["pids"].values()]
        pids += [n["pid"] for n in ready["nodes"]] + [ready["balancer"]["pid"]]
        # the node publishes through the cluster: an echo round trip and a room message
        with ws_connect(f"{ready['url']}/?token={ready['token']}", open_timeout=10) as ws:
            ws.send('{"type": "join", "room": "lobby"}')
            ws.send('{"type": "publish", "room": "lobby", "id": "m1", "data": 1}')
            kinds: set[str] = set()
            while not {"ack", "message"} <= kinds:  # acknowledged after WAIT, then delivered
                kinds.add(json.loads(ws.recv(timeout=10))["type"])
        harness.send("shard failover s1")
        done = harness.expect(lambda e: e["event"] == "done")
        assert next(s for s in done["shards"] if s["name"] == "s1")["primary"] == "s1b"
        harness.send("shard kill s9z")
        assert "unknown cluster node" in harness.expect(lambda e: e["event"] == "error")["error"]
        harness.send("broker kill")
        assert "shard kill" in harness.expect(lambda e: e["event"] == "error")["error"]
        harness.send("quit")
        harness.expect(lambda e: e["event"] == "stopped")
        assert harness.proc.wait(timeout=60) == 0
        assert wait_for(lambda: not [p for p in pids if pid_alive(p)], timeout=5)
    finally:
        harness.stop(pids)


def test_stdin_eof_on_a_pipe_keeps_running_until_sigterm(procs: ProcessRegistry) -> None:
    harness = HarnessProcess(procs, "--nodes", "1", "--stats-interval", "0.25")
    pids: list[int] = []
    try:
        ready = harness.expect(lambda e: e["event"] == "ready")
        pids = ready_pids(ready)
        assert harness.proc.stdin is not None
        harness.proc.stdin.close()
        harness.expect(lambda e: e["event"] == "stdin_closed")
        for _ in range(2):  # still at work after the EOF: fresh stats lines keep coming
            harness.expect(lambda e: e["event"] == "stats")
        assert harness.proc.poll() is None and all(pid_alive(pid) for pid in pids)
        harness.proc.send_signal(signal.SIGTERM)
        harness.expect(lambda e: e["event"] == "stopped")
        assert harness.proc.wait(timeout=60) == 0
        assert wait_for(lambda: not [p for p in pids if pid_alive(p)], timeout=5)
        assert "Traceback" not in (
            harness.proc.stderr.read().decode() if harness.proc.stderr else ""
        )
    finally:
        if harness.proc.poll() is None:
            harness.proc.kill()
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_sigint_drains_and_stops_everything(procs: ProcessRegistry) -> None:
    harness = HarnessProcess(procs, "--nodes", "2", "--stats-interval", "0", "--exit-on-eof")
    pids: list[int] = []
    try:
        ready = harness.expect(lambda e: e["event"] == "ready")
        pids = ready_pids(ready)
        harness.send("pause n1")  # a paused node must still be stopped
        harness.expect(lambda e: e["event"] == "node" and e["state"] == "paused")
        harness.proc.send_signal(signal.SIGINT)
        harness.expect(lambda e: e["event"] == "stopped")
        assert harness.proc.wait(timeout=60) == 0
        assert wait_for(lambda: not [p for p in pids if pid_alive(p)], timeout=5)
    finally:
        if harness.proc.poll() is None:
            harness.proc.kill()
        for pid in pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)


def test_an_unreachable_redis_is_exit_1_with_a_plain_message(procs: ProcessRegistry) -> None:
    proc = procs.start(
        [
            sys.executable,
            "-m",
            "wsconsole",
            "harness",
            "--redis",
            f"redis://127.0.0.1:{free_port()}/0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert b"could not start the cluster" in err and b"PING" in err
    assert b"Traceback" not in err


def test_harness_tls_ready_event_names_the_ca(procs: ProcessRegistry, tmp_path: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))  # the child makes the CA there
    harness = HarnessProcess(procs, "--tls", "--nodes", "1")
    pids: list[int] = []
    try:
        ready = harness.expect(lambda e: e["event"] == "ready")
        pids = ready_pids(ready)
        assert ready["url"].startswith("wss://127.0.0.1:") and ready["tls"] is True
        assert ready["ca_file"] == str(tmp_path / "local-ca" / "ca-cert.pem")
        assert ready["nodes"][0]["metrics_url"].startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=ready["ca_file"])
        with ws_connect(f"{ready['url']}/?token={ready['token']}", ssl=trusting,
                        open_timeout=10) as ws:
            ws.send('{"type": "rpc", "id": "r1", "method": "echo", "params": 1}')
            assert json.loads(ws.recv(timeout=10))["type"] == "result"
        harness.send("quit")
        harness.expect(lambda e: e["event"] == "stopped")
        assert harness.proc.wait(timeout=60) == 0
    finally:
        harness.stop(pids)
