"""What a swarm tells the window: batched fleet events, kept frames on request, and the
heartbeat lab's share of silent clients dropped by a real server that pings."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.servers import server_port, start
from tests.support import SCALE, ProcessRegistry, until
from wsconsole.core.events import Direction, FrameRecord, HeartbeatEvent, Opcode
from wsconsole.core.lifecycle import State, Transition
from wsconsole.harness.procs import child_argv
from wsconsole.swarm.config import SwarmConfig, SwarmConfigError
from wsconsole.swarm.fleet import (
    MAX_FRAMES_REPLY,
    MAX_REPLY_BYTES,
    FleetBatch,
    FleetWatch,
    frame_records,
)
from wsconsole.swarm.swarm import Swarm

ROOT = Path(__file__).resolve().parent.parent


def _transition(conn: str, state: State, wall: float, **fields: Any) -> Transition:
    previous = State.CONNECTING if state is not State.CONNECTING else State.CLOSED
    return Transition(conn, previous, state, at=wall, wall=wall, **fields)


def test_a_batch_carries_every_event_once_and_reads_back() -> None:
    watch = FleetWatch(clock=lambda: 100.0)
    observe = watch.observer("c0001")
    observe(_transition("c0001", State.CONNECTING, 1.0))
    observe(_transition("c0001", State.RECONNECTING, 2.0, attempt=3, delay=1.5, code=1001,
                        decision="backoff grows"))
    observe(HeartbeatEvent("c0001", "pong_received", rtt=0.012, at=3.0, wall=3.0))
    observe(HeartbeatEvent("c0001", "ping_received", at=3.1, wall=3.1))  # not marked
    observe(HeartbeatEvent("c0001", "server_dropped", at=4.0, wall=4.0, delay=0.9))
    watch.node("c0001", "n2")
    watch.node("c0001", "n2")  # unchanged: no second entry
    raw = watch.batch()
    assert raw is not None and watch.batch() is None  # handed over once
    batch = FleetBatch.parse(json.loads(json.dumps(raw)))
    assert [(s.client, s.state, s.attempt, s.delay, s.code, s.why) for s in batch.states] == [
        ("c0001", State.CONNECTING, 0, None, None, None),
        ("c0001", State.RECONNECTING, 3, 1.5, 1001, "backoff grows")]
    assert [(m.kind, m.value) for m in batch.marks] == [("pong_received", 0.012),
                                                        ("server_dropped", 0.9)]
    assert batch.nodes == {"c0001": "n2"} and batch.malformed == 0
    assert watch.drops == [0.9]


def test_a_flood_is_bounded_and_bad_rows_are_counted() -> None:
    watch = FleetWatch(max_events=10)
    observe = watch.observer("c1")
    for i in range(25):
        observe(_transition("c1", State.OPEN, float(i)))
    raw = watch.batch()
    assert raw is not None and len(raw["states"]) == 10 and raw["dropped"] == 15
    parsed = FleetBatch.parse({"states": [["c1", "x", "O", 0, None, None, None],
                                          ["c1", 1.0, "?", 0, None, None, None]],
                               "marks": [["c1", 1.0, "bogus", None]]})
    assert parsed.malformed == 3 and not parsed.states and not parsed.marks


def test_kept_frames_by_client_and_time() -> None:
    watch = FleetWatch(ring=100)
    for name in ("c1", "c2"):
        observe = watch.observer(name)
        for i in range(10):
            observe(FrameRecord(name, Direction.IN, Opcode.TEXT, f"{name}-{i}".encode(),
                                at=float(i), wall=1000.0 + i))
    observe(FrameRecord("c2", Direction.OUT, Opcode.BINARY, b"\x00\x01", wall=1020.0))
    reply = watch.frames(["c2"], 1003.0, 1020.0)
    got = list(frame_records(reply["frames"], prefix="swarm/"))
    assert [f.payload for _, f in got] == [b"c2-3", b"c2-4", b"c2-5", b"c2-6", b"c2-7",
                                           b"c2-8", b"c2-9", b"\x00\x01"]
    assert {f.conn for _, f in got} == {"swarm/c2"} and got[-1][1].opcode is Opcode.BINARY
    last = got[-1][0]
    assert watch.frames(["c2"], 0, 2000, after=last)["frames"] == []  # nothing twice
    assert reply["kept_since"] == 1000.0 and not reply["more"]
    many = FleetWatch(ring=None)
    observe = many.observer("c3")
    for i in range(MAX_FRAMES_REPLY + 5):
        observe(FrameRecord("c3", Direction.IN, Opcode.TEXT, b"x", wall=float(i)))
    assert many.frames(["c3"], 0, 1e9)["more"] is True
    # big frames: a reply holds about MAX_REPLY_BYTES of them (one line the window can
    # read); asking again after the last number gets the rest, each frame once
    big = FleetWatch(ring=None)
    observe = big.observer("c4")
    for i in range(40):
        observe(FrameRecord("c4", Direction.IN, Opcode.TEXT, b"%02d" % i + b"y" * 65534,
                            wall=float(i)))
    numbers: list[int] = []
    after, replies = -1, 0
    while True:
        page = big.frames(["c4"], 0, 1e9, after)
        replies += 1
        assert len(json.dumps(page)) < 2 * MAX_REPLY_BYTES
        numbers += [row[0] for row in page["frames"]]
        if not page["more"]:
            break
        after = numbers[-1]
    assert replies > 1 and len(numbers) == len(set(numbers)) == 40


async def test_a_silent_share_is_dropped_by_a_pinging_server() -> None:
    """A fifth of the clients withhold their pongs: the server (ping 0.1 s, timeout 0.3 s)
    drops them, the fleet batches show it, and the live `pongs` control ends it."""
    server, _ = await start("harness", ping_interval=0.1, ping_timeout=0.3)
    batches: list[dict[str, Any]] = []
    stats: list[dict[str, Any]] = []
    try:
        config = SwarmConfig(url=f"ws://127.0.0.1:{server_port(server)}/", clients=10,
                             rooms=1, rate=20, duration=None, settle=0,
                             ping_interval=None, pongs_share=0.2, stats_interval=0.2,
                             fleet_interval=0.1)
        swarm = Swarm(config, on_stats=stats.append, on_fleet=batches.append)
        task = asyncio.ensure_future(swarm.run())
        await until(lambda: swarm.fleet.drops and len(swarm.fleet.drops) >= 2,
                    "two drops of silent clients", 20)
        silent = {c.name for c in swarm.clients if not c.pongs.answers}
        assert silent == {"c0005", "c0010"} == swarm.fleet.silent_clients
        reply = swarm.control({"cmd": "pongs", "share": 0.0, "pongs": "off"})
        assert reply["clients"] == 0 and all(c.pongs.answers for c in swarm.clients)
        with pytest.raises(SwarmConfigError, match="unknown command"):
            swarm.control({"cmd": "explode"})
        frames = swarm.control({"cmd": "frames", "clients": ["c0001"], "since": 0})
        assert frames["frames"] and {row[1] for row in frames["frames"]} == {"c0001"}
        await until(lambda: any(s.get("dead_drops", 0) >= 2 for s in stats), "stats", 10)
        swarm.stop()
        swarm.stop()
        summary = await task
    finally:
        server.close()
    parsed = [FleetBatch.parse(b) for b in batches]
    dropped = Counter(m.client for b in parsed for m in b.marks if m.kind == "server_dropped")
    assert set(dropped) <= silent and dropped
    assert {m.client for b in parsed for m in b.marks if m.kind == "pong_withheld"} <= silent
    leaving = [s for b in parsed for s in b.states
               if s.state is State.RECONNECTING and s.client in dropped]
    assert leaving and all(s.code == 1011 for s in leaving)
    assert {s.client for b in parsed for s in b.states} == {f"c{i:04d}" for i in range(1, 11)}
    assert {n for b in parsed for n in b.nodes.values()} == {"t1"}  # the node serving them
    assert summary["pongs_off_clients"] == 0 and summary["dead_drops"] >= 2
    assert 200 <= summary["dead_drop_p50_ms"] <= 300 + 2000 * SCALE
    assert summary["dead_kept_max_ms"] >= summary["dead_drop_max_ms"]


def test_the_command_line_streams_fleet_lines_and_answers_controls(
        procs: ProcessRegistry) -> None:
    from tests.test_connect_cli import Lines, start_server

    _, port = start_server(procs, "harness", "--ping-interval", "0.1", "--ping-timeout", "0.3")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = procs.start(child_argv("swarm", f"ws://127.0.0.1:{port}/", "--clients", "4",
                                  "--rate", "10", "--duration", "30", "--settle", "0",
                                  "--ping-interval", "0", "--pongs-share", "0.5",
                                  "--json", "--fleet", "--control"),
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env)
    lines = Lines(proc)
    assert proc.stdin is not None
    lines.expect(lambda e: e["event"] == "fleet" and any(
        m[2] == "server_dropped" for m in e["marks"]), timeout=20 * SCALE)
    proc.stdin.write(b'{"cmd": "pongs", "share": 0, "id": 7}\n{"cmd": "frames", '
                     b'"clients": ["c0001"], "since": 0, "id": 8}\nnot json\n')
    proc.stdin.flush()
    pongs = lines.expect(lambda e: e["event"] == "control" and e["id"] == 7)
    assert pongs["ok"] and pongs["clients"] == 0 and pongs["pongs"] == "off"
    frames = lines.expect(lambda e: e["event"] == "control" and e["id"] == 8)
    assert frames["ok"] and frames["frames"]
    bad = lines.expect(lambda e: e["event"] == "control" and not e["ok"])
    assert bad["id"] is None and bad["error"]
    # Ctrl-C twice: the first ends the load, the second skips the settle or, landing after the
    # clients stopped, is ignored; either way the summary is written and the exit says what
    # it says (never killed by the second signal, exit -2).
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    summary = lines.expect(lambda e: e["event"] == "summary")
    assert summary["dead_drops"] >= 1 and summary["pongs_off_clients"] == 0
    assert proc.wait(timeout=30 * SCALE) == (0 if summary["ok"] else 1)


def test_a_share_out_of_range_is_bad_usage() -> None:
    result = subprocess.run([sys.executable, "-m", "wsconsole", "swarm", "ws://127.0.0.1:1/",
                             "--pongs-share", "2"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60 * SCALE)
    assert result.returncode == 2 and "0 to 1" in result.stderr
    result = subprocess.run([sys.executable, "-m", "wsconsole", "swarm", "ws://127.0.0.1:1/",
                             "--pongs", "sometimes"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60 * SCALE)
    assert result.returncode == 2 and "--pongs" in result.stderr


async def test_scenario_ping_and_pong_steps_against_a_url() -> None:
    """The heartbeat lab's `ping` and `pong` steps on a scenario's swarm against any server:
    half the clients send bursts of pings with a payload, each answered with its round trip;
    every client sends an unsolicited pong, which the server ignores (no one reconnects)."""
    from wsconsole.scenarios.model import parse_scenario
    from wsconsole.scenarios.runner import ScenarioRunner

    server, _ = await start("harness")
    text = f"""\
name = "heartbeat probes"
url = "ws://127.0.0.1:{server_port(server)}/"
[swarm]
clients = 4
rooms = 1
rate = 4
duration = 2
settle = 1
[[steps]]
at = 0.5
action = "ping"
share = 0.5
count = 3
payload = "probe"
[[steps]]
at = 1
action = "pong"
payload = "unasked"
[[assertions]]
expect = "reconnects == 0"
"""
    try:
        result = await ScenarioRunner(parse_scenario(text, "probes.toml")).run()
    finally:
        server.close()
    ping, pong = result.steps
    assert ping.ok and ping.detail.startswith(
        "6 ping(s) from 2 client(s) (0 offline), 6 answered, round trips p50 "), ping.detail
    assert pong.ok and pong.detail == "4 unsolicited pong(s) sent (0 client(s) offline)"
    assert result.passed, [a.as_dict() for a in result.assertions]
