"""`wsconsole connect --socketio` (and HAR replay/export) as a real subprocess against real
servers: a python-socketio server killed and restarted, URL inference, protocol mismatch
both ways, and --replay / --har-out round-tripping through a real echo server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.socketiokit import python_argv, wait_listening
from tests.support import SCALE, ProcessRegistry, free_port
from tests.test_connect_cli import ENV, ROOT, WAIT, Lines, connect, start_server
from wsconsole.har import load_har

FIXTURE = Path(__file__).parent / "fixtures" / "chrome_websocket.har"


def sio_server(procs: ProcessRegistry, port: int | None = None) -> tuple[subprocess.Popen[bytes],
                                                                          int]:
    """The python-socketio test server as a child; returns it and its port once listening."""
    port = port or free_port()
    proc = procs.start(python_argv(port), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
    asyncio.run(wait_listening(port))
    return proc, port


def test_socketio_session_ack_broadcast_kill_restart(procs: ProcessRegistry) -> None:
    server, port = sio_server(procs)
    proc = connect(procs, "--socketio", f"http://127.0.0.1:{port}", "--json",
                   "--transport", "websocket", "--auth", '{"user": "ada"}',
                   "--send", '/call echo [1, "two"]', "--send", "/emit shout \"hi all\"",
                   "--backoff-initial", "0.1", "--backoff-jitter", "0", "--backoff-cap", "0.5")
    lines = Lines(proc)
    lines.expect(lambda e: e["event"] == "state" and e["state"] == "OPEN")
    ack = lines.expect(lambda e: e["event"] == "ack")
    assert ack["name"] == "echo" and ack["args"] == [1, "two"]
    news = lines.expect(lambda e: e["event"] == "message" and e["direction"] == "in"
                        and e["data"].startswith('2["news"'))
    assert news["data"] == '2["news","hi all"]'
    server.kill()
    server.wait(timeout=10 * SCALE)
    waiting = lines.expect(lambda e: e["event"] == "state" and e["state"] == "RECONNECTING")
    assert waiting["delay"] == pytest.approx(0.1) and waiting["attempt"] == 1
    sio_server(procs, port)
    lines.expect(lambda e: e["event"] == "state" and e["state"] == "OPEN")
    assert proc.stdin is not None
    proc.stdin.write(b"/call echo \"after restart\"\n")
    proc.stdin.flush()
    again = lines.expect(lambda e: e["event"] == "ack")
    assert again["args"] == ["after restart"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=WAIT) == 0
    rest = lines.rest()
    summary = rest[-1]
    assert summary["event"] == "summary" and summary["exit"] == 0
    assert summary["target"] == "socketio" and summary["reconnects"] == 1
    assert [e["state"] for e in rest if e["event"] == "state"][-1] == "CLOSED"


def test_socketio_inferred_from_url_path(procs: ProcessRegistry) -> None:
    _, port = sio_server(procs)
    proc = connect(procs, f"http://127.0.0.1:{port}/socket.io/", "--json", "--duration", "1.5",
                   "--send", "/call echo 7")
    lines = Lines(proc)
    lines.expect(lambda e: e["event"] == "state" and e["state"] == "OPEN")
    assert lines.expect(lambda e: e["event"] == "ack")["args"] == [7]
    assert proc.wait(timeout=WAIT) == 0


def test_socketio_url_answered_by_plain_websocket_is_a_mismatch(procs: ProcessRegistry) -> None:
    _, port = start_server(procs, "echo")
    proc = connect(procs, "--socketio", f"http://127.0.0.1:{port}", "--json",
                   "--transport", "websocket", "--connect-timeout", "1", "--max-attempts", "0")
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1, err
    events = [orjson.loads(line) for line in out.splitlines()]
    [mismatch] = [e for e in events if e.get("kind") == "protocol_mismatch"]
    assert "plain WebSocket" in mismatch["detail"]
    assert events[-1]["event"] == "summary" and "gave up" in events[-1]["error"]
    assert b"Traceback" not in err


def test_websocket_url_answered_by_socketio_is_a_mismatch(procs: ProcessRegistry) -> None:
    _, port = sio_server(procs)
    proc = connect(procs, f"ws://127.0.0.1:{port}/", "--json", "--max-attempts", "0")
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1, err
    events = [orjson.loads(line) for line in out.splitlines()]
    [mismatch] = [e for e in events if e.get("kind") == "protocol_mismatch"]
    assert "Socket.IO" in mismatch["detail"] and "--socketio" in mismatch["detail"]


@pytest.mark.parametrize(("args", "needle"), [
    (["http://127.0.0.1:1/"], "--socketio or --sse"),
    (["--socketio", "ftp://x/"], "http(s)"),
    (["--socketio", "http://127.0.0.1:1", "--auth", "{nope"], "--auth is not JSON"),
    (["--socketio", "http://127.0.0.1:1", "--auth", "[1]"], "--auth must be a JSON object"),
    (["--socketio", "--sse", "http://127.0.0.1:1"], "not allowed with"),
    (["ws://127.0.0.1:1", "--replay", "/nonexistent.har"], "cannot read"),
    (["ws://127.0.0.1:1", "--replay", str(FIXTURE), "--replay-entry", "5"], "numbered 0..1"),
    (["--sse", "http://127.0.0.1:1", "--replay", str(FIXTURE)], "can send"),
])
def test_bad_usage_exits_2(procs: ProcessRegistry, args: list[str], needle: str) -> None:
    proc = connect(procs, *args)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 2, (out, err)
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_bad_har_for_replay_names_the_problem(procs: ProcessRegistry, tmp_path: Path) -> None:
    bad = tmp_path / "cut.har"
    bad.write_text(FIXTURE.read_text()[:700])
    proc = connect(procs, "ws://127.0.0.1:1", "--replay", str(bad))
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 2 and b"truncated" in err


def test_replay_har_then_export_round_trip(procs: ProcessRegistry, tmp_path: Path) -> None:
    _, port = start_server(procs, "echo")
    out_har = tmp_path / "session.har"
    proc = connect(procs, f"ws://127.0.0.1:{port}", "--json", "--replay", str(FIXTURE),
                   "--replay-timing", "original", "--replay-speed", "8",
                   "--har-out", str(out_har), "--ping-interval", "0")
    lines = Lines(proc)
    done = lines.expect(lambda e: e["event"] == "replayed")
    assert done["count"] == 4

    def echoes() -> int:
        return sum(1 for line in lines.seen if '"direction":"in"' in line)

    while echoes() < 4:
        lines.expect(lambda e: e["event"] == "message" and e["direction"] == "in")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=WAIT) == 0
    summary = lines.rest()[-1]
    assert summary["har"] == 8
    [conn] = load_har(out_har)
    assert conn.url == f"ws://127.0.0.1:{port}"
    original = load_har(FIXTURE)[0]
    assert [m.data for m in conn.sent] == [m.data for m in original.sent]
    assert [m.data for m in conn.messages if m.direction.value == "in"] == [
        m.data for m in original.sent]


def test_replay_socketio_har_into_a_socketio_target(procs: ProcessRegistry) -> None:
    _, port = sio_server(procs)
    proc = connect(procs, "--socketio", f"http://127.0.0.1:{port}", "--json",
                   "--transport", "websocket", "--replay", str(FIXTURE), "--replay-entry", "1")
    lines = Lines(proc)
    assert lines.expect(lambda e: e["event"] == "replayed")["count"] == 2
    # the recorded `421["echo","hi"]` went out again as an event (the recorded "40" namespace
    # connect is the client's own business and is not re-sent)
    sent = [orjson.loads(line) for line in lines.seen if '"direction":"out"' in line]
    assert [e["data"] for e in sent] == ["0{}", '2["echo","hi"]']
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=WAIT) == 0
