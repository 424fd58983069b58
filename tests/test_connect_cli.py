"""`wsconsole connect` driven as a real subprocess against real servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import MS, ProcessRegistry, free_port
from tests.test_client_reconnect import counter_command
from wsconsole.harness.procs import child_argv

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
WAIT = 10_000 * MS  # generous: the machine is shared


class Lines:
    """Collects a child's stdout lines in a thread; `expect` waits for a matching one."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for raw in stream:
                self.queue.put(raw.decode("utf-8", "replace").rstrip("\n"))
            self.queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def expect(self, predicate: Any, timeout: float = WAIT) -> dict[str, Any]:
        """The next JSON line satisfying `predicate` (AssertionError on timeout or EOF)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line; seen: {self.seen[-20:]}")
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stream ended; seen: {self.seen[-20:]}")
            self.seen.append(line)
            event = json.loads(line)
            if predicate(event):
                return event

    def rest(self, timeout: float = WAIT) -> list[dict[str, Any]]:
        """Every remaining JSON line until the stream ends."""
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.seen.append(line)
            out.append(json.loads(line))
        return out


def start_server(procs: ProcessRegistry, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """A tests.servers subprocess; returns it and its port once it listens."""
    proc = procs.python("-m", "tests.servers", *args, stdout=subprocess.PIPE, cwd=ROOT, env=ENV)
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    assert ready["event"] == "listening"
    return proc, int(ready["port"])


def connect(procs: ProcessRegistry, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """`wsconsole connect ARGS` as a child with piped stdin/stdout/stderr."""
    return procs.start(
        child_argv("connect", *args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=ROOT, env=ENV, **kwargs,
    )


def test_json_session_send_stdin_and_sigint(procs: ProcessRegistry) -> None:
    """--send goes out on open, stdin lines are sent, echoes come back, SIGINT exits 0."""
    _, port = start_server(procs, "echo")
    proc = connect(procs, f"ws://127.0.0.1:{port}", "--json", "--send", "first",
                   "--send", "second", "--ping-interval", "0.2", "--ping-timeout", "2")
    lines = Lines(proc)
    lines.expect(lambda e: e["event"] == "state" and e["state"] == "CONNECTING")
    lines.expect(lambda e: e["event"] == "state" and e["state"] == "OPEN")
    ins = []
    for _ in range(2):
        ins.append(lines.expect(lambda e: e["event"] == "message" and e["direction"] == "in"))
    assert [m["data"] for m in ins] == ["first", "second"]
    assert ins[0]["opcode"] == "text" and ins[0]["size"] == 5
    assert proc.stdin is not None
    proc.stdin.write(b"typed line\n")
    proc.stdin.flush()
    echo = lines.expect(lambda e: e["event"] == "message" and e["direction"] == "in")
    assert echo["data"] == "typed line"
    pong = lines.expect(lambda e: e["event"] == "pong")
    assert pong["rtt"] is not None and pong["rtt"] >= 0
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=WAIT) == 0
    rest = lines.rest()
    closes = [e for e in rest if e["event"] == "close"]
    assert closes and closes[0]["direction"] == "out" and closes[0]["code"] == 1000
    states = [e["state"] for e in rest if e["event"] == "state"]
    assert states[-2:] == ["CLOSING", "CLOSED"]
    summary = rest[-1]
    assert summary["event"] == "summary" and summary["exit"] == 0
    assert summary["sent"] == 3 and summary["received"] == 3
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


def test_human_output_is_readable(procs: ProcessRegistry) -> None:
    """Without --json: one readable line per event, arrows for direction."""
    _, port = start_server(procs, "echo")
    proc = connect(procs, f"ws://127.0.0.1:{port}", "--send", "hi there", "--duration", "1.5")
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    text = out.decode()
    assert "* OPEN" in text and "> hi there" in text and "< hi there" in text
    assert "summary" in text.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["http://127.0.0.1:1"], "ws:// or wss://"),
        (["ws://[::1"], "malformed URL"),
        (["ws://127.0.0.1:1", "-H", "no colon here"], "Name: value"),
        (["ws://127.0.0.1:1", "-H", "Bad Name: v"], "invalid header name"),
        (["ws://127.0.0.1:1", "--ping-timeout", "0"], "--ping-timeout"),
        (["ws://127.0.0.1:1", "--token-mode", "cookie"], "--token-mode"),
        (["wss://127.0.0.1:1", "--ca-file", "/nonexistent/ca.pem"], "CA file"),
        ([], "url"),
        (["http://127.0.0.1:1/events", "--sse", "--ping", "x"], "need a WebSocket target"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    procs: ProcessRegistry, args: list[str], needle: str
) -> None:
    """A malformed URL or option: exit code 2, one line on stderr, no traceback."""
    proc = connect(procs, *args)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert out == b""


def test_unreachable_retries_then_exits_1(procs: ProcessRegistry) -> None:
    """Nothing listening: refused errors, RECONNECTING per policy, exit 1 when exhausted."""
    port = free_port()
    proc = connect(procs, f"ws://127.0.0.1:{port}", "--json", "--max-attempts", "2",
                   "--backoff-initial", "0.05", "--backoff-jitter", "0.01")
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1, err
    assert b"Traceback" not in err
    events = [json.loads(line) for line in out.decode().splitlines()]
    errors = [e["kind"] for e in events if e["event"] == "error"]
    assert errors == ["refused", "refused", "refused", "gave_up"]
    waits = [e for e in events if e["event"] == "state" and e["state"] == "RECONNECTING"]
    assert [w["attempt"] for w in waits] == [1, 2]
    assert 0.05 <= waits[0]["delay"] <= 0.06 and 0.1 <= waits[1]["delay"] <= 0.11
    assert events[-1]["event"] == "summary" and events[-1]["exit"] == 1


def test_server_close_code_and_growing_backoff_reported(procs: ProcessRegistry) -> None:
    """A server closing with 1008 right after accepting: the code and reason are shown; no
    connection stays open --stable-after, so the delays grow (the state line says why) and
    --max-attempts ends the session with exit 1."""
    _, port = start_server(procs, "close", "--code", "1008", "--reason", "policy says no")
    proc = connect(procs, f"ws://127.0.0.1:{port}", "--json", "--max-attempts", "2",
                   "--backoff-initial", "0.05", "--backoff-jitter", "0")
    lines = Lines(proc)
    for attempt, delay in ((1, 0.05), (2, 0.1)):
        close = lines.expect(lambda e: e["event"] == "close" and e["direction"] == "in")
        assert close["code"] == 1008 and close["reason"] == "policy says no"
        error = lines.expect(lambda e: e["event"] == "error")
        assert error["kind"] == "closed" and error["detail"] == "1008 policy says no"
        waiting = lines.expect(lambda e: e["event"] == "state" and e["state"] == "RECONNECTING")
        assert waiting["code"] == 1008 and waiting["reason"] == "policy says no"
        assert waiting["attempt"] == attempt and waiting["delay"] == pytest.approx(delay)
        assert waiting["decision"].startswith("backoff grows: open only")
    gave_up = lines.expect(lambda e: e["event"] == "error" and e["kind"] == "gave_up")
    assert "gave up after 2 retries" in gave_up["detail"]
    assert lines.expect(lambda e: e["event"] == "summary")["exit"] == 1
    assert proc.wait(timeout=WAIT) == 1


def test_harness_commands_on_stdin(procs: ProcessRegistry) -> None:
    """--room joins; /publish is acked and delivered; /rpc returns the result."""
    _, port = start_server(procs, "harness", "--token", "s3cret")
    proc = connect(procs, f"ws://127.0.0.1:{port}", "--json", "--room", "lobby",
                   "--token", "s3cret", "--token-mode", "header")
    lines = Lines(proc)
    lines.expect(lambda e: e["event"] == "state" and e["state"] == "OPEN")
    lines.expect(lambda e: e["event"] == "message" and '"joined"' in e.get("data", ""))
    assert proc.stdin is not None
    proc.stdin.write(b"/publish lobby hello room\n/rpc echo {\"x\": 1}\n/nonsense\n")
    proc.stdin.flush()
    bad = lines.expect(lambda e: e["event"] == "error")  # the last line's answer
    assert bad["kind"] == "input" and "unknown command" in bad["detail"]
    events = [json.loads(line) for line in lines.seen]
    acks = [e for e in events if e["event"] == "delivery" and e["kind"] == "ack"]
    assert [a["seq"] for a in acks] == [1]
    delivered = [json.loads(e["data"]) for e in events
                 if e["event"] == "message" and e["direction"] == "in"
                 and '"message"' in e.get("data", "")]
    assert [(m["seq"], m["data"]) for m in delivered] == [(1, "hello room")]
    results = [e for e in events if e["event"] == "result"]
    assert results[0]["result"]["result"] == {"x": 1}
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=WAIT) == 0


def test_token_command_gives_a_fresh_token_after_a_1008(
        procs: ProcessRegistry, tmp_path: Path) -> None:
    """--token-command: the first token (sent as a message) is refused with 1008; the
    client runs the command again at once and stays open with the fresh token."""
    _, port = start_server(procs, "harness", "--token", "tok-2")
    proc = connect(procs, f"ws://127.0.0.1:{port}", "--json", "--harness", "--token-mode",
                   "message", "--token-command", counter_command(tmp_path / "n"))
    lines = Lines(proc)
    close = lines.expect(lambda e: e["event"] == "close" and e["direction"] == "in")
    assert (close["code"], close["reason"]) == (1008, "bad token")
    retry = lines.expect(lambda e: e["event"] == "state" and e["state"] == "RECONNECTING")
    assert retry["delay"] == 0 and "retrying once now with a fresh token" in retry["decision"]
    lines.expect(lambda e: e["event"] == "state" and e["state"] == "OPEN")
    events = [json.loads(line) for line in lines.seen]
    tokens = [json.loads(e["data"])["token"] for e in events
              if e["event"] == "message" and e["direction"] == "out"]
    assert tokens == ["tok-1", "tok-2"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=WAIT) == 0


def test_403_without_a_token_provider_exits_1_with_the_reason(procs: ProcessRegistry) -> None:
    """A refused handshake and no way to get a fresh token: one attempt, a plain message,
    exit 1 (no retries against a server that said no)."""
    _, port = start_server(procs, "refuse", "--status", "403")
    proc = connect(procs, f"ws://127.0.0.1:{port}", "--token", "stale")
    out, err = proc.communicate(timeout=WAIT)
    text = out.decode()
    assert proc.returncode == 1, (text, err)
    assert "! stopped: HTTP 403 Forbidden: the server refused access" in text
    assert "no token provider can give a fresh token" in text
    assert text.count("CONNECTING") == 1 and "RECONNECTING" not in text


def test_heartbeat_lab_on_the_command_line(procs: ProcessRegistry) -> None:
    """--pongs off plays dead until the server drops the client; /pongs, /ping bursts and
    /pong work in raw mode; the server's heartbeat is measured and summed up."""
    _, port = start_server(procs, "echo", "--ping-interval", "0.2", "--ping-timeout", "0.4")
    proc = connect(procs, f"ws://127.0.0.1:{port}/", "--json", "--pongs", "off",
                   "--ping-interval", "0", "--backoff-initial", "0.05", "--backoff-jitter", "0")
    lines = Lines(proc)
    assert proc.stdin is not None
    lines.expect(lambda e: e["event"] == "heartbeat" and e["kind"] == "pong_withheld")
    dropped = lines.expect(lambda e: e["event"] == "heartbeat"
                           and e["kind"] == "server_dropped")
    assert 0.3 <= dropped["delay"] < WAIT
    lines.expect(lambda e: e["event"] == "state" and e["state"] == "RECONNECTING"
                 and e.get("code") == 1011)
    proc.stdin.write(b"/pongs auto\n")
    proc.stdin.flush()
    lines.expect(lambda e: e["event"] == "pongs")
    # two answered pings on one connection: the interval is known and the connection stays
    told = lines.expect(lambda e: e["event"] == "server_heartbeat")
    assert 0.1 < told["interval"] < 1.0
    proc.stdin.write(b"/ping lab x2\n/pong hello\n//not a command\n")
    proc.stdin.flush()
    lines.expect(lambda e: e["event"] == "message" and e["direction"] == "in")  # the last
    proc.send_signal(signal.SIGINT)
    summary = lines.expect(lambda e: e["event"] == "summary")
    assert proc.wait(timeout=WAIT) == 0
    seen = [json.loads(line) for line in lines.seen]
    [burst] = [e for e in seen if e["event"] == "pong" and "rtts" in e]
    assert len(burst["rtts"]) == 2 and all(r is not None for r in burst["rtts"])
    assert any(e["event"] == "pong_sent" for e in seen)
    echoed = [e["data"] for e in seen if e["event"] == "message" and e["direction"] == "in"]
    assert echoed == ["/not a command"]
    assert "the server pings every" in summary["server_heartbeat"]
    assert "stopped answering" in summary["server_heartbeat"]


def test_ping_and_pong_flags(procs: ProcessRegistry) -> None:
    """--ping 'PAYLOAD xN' and --pong PAYLOAD go out in order once the connection opens:
    the burst's round trips are printed, the unsolicited pong is said, the server stays."""
    _, port = start_server(procs, "echo")
    proc = connect(procs, f"ws://127.0.0.1:{port}/", "--json", "--ping", "probe x3",
                   "--pong", "bye", "--ping", "once", "--duration", "2")
    lines = Lines(proc)
    lines.expect(lambda e: e["event"] == "summary")
    assert proc.wait(timeout=WAIT) == 0
    seen = [json.loads(line) for line in lines.seen]
    lab = [e for e in seen if e["event"] == "pong_sent" or "rtts" in e]  # not the heartbeat's
    assert [e["event"] for e in lab] == ["pong", "pong_sent", "pong"]
    assert len(lab[0]["rtts"]) == 3 and all(r is not None for r in lab[0]["rtts"])
    assert lab[1]["size"] == 3 and lab[2]["rtt"] is not None
    assert not any(e["event"] == "state" and e["state"] == "RECONNECTING" for e in seen)
