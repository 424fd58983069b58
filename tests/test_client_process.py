"""ReconnectingClient against server subprocesses that are SIGKILLed and SIGSTOPped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from tests.support import MS, ProcessRegistry, free_port
from tests.test_client import Recorder
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.events import Direction, ErrorEvent, HeartbeatEvent
from wsconsole.core.lifecycle import State, Transition

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
WAIT = 10_000 * MS


def echo_server(procs: ProcessRegistry, port: int) -> subprocess.Popen[bytes]:
    """`python -m tests.servers echo --port PORT`, returned once it listens."""
    proc = procs.python("-m", "tests.servers", "echo", "--port", str(port),
                        stdout=subprocess.PIPE, cwd=ROOT, env=ENV)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline())["port"] == port
    return proc


async def test_sigkill_backoff_sequence_restart_and_exactly_once(procs: ProcessRegistry) -> None:
    """Server SIGKILLed: RECONNECTING with 100/200/400 ms (+ jitter <= 20 ms) waits, OPEN
    again after a restart on the same port, and messages queued meanwhile echo once each."""
    port = free_port()
    server = echo_server(procs, port)
    rec = Recorder()
    policy = BackoffPolicy(initial=100 * MS, factor=2.0, cap=800 * MS, jitter=20 * MS)
    client = ReconnectingClient(
        ClientOptions(f"ws://127.0.0.1:{port}", backoff=policy, ping_interval=None),
        observers=[rec],
    )
    await client.start()
    try:
        await client.wait_state(State.OPEN, WAIT)
        await client.send("before")
        await rec.until(lambda: rec.texts(Direction.IN) == ["before"])

        server.send_signal(signal.SIGKILL)
        server.wait(timeout=WAIT)
        waits: list[Transition] = []

        def retries() -> list[Transition]:
            return [t for t in rec.of(Transition) if t.state is State.RECONNECTING]

        await rec.until(lambda: len(retries()) >= 3)
        for i in range(5):
            await client.send(f"q{i}")
        assert client.stats.queued == 5
        waits = retries()[:3]
        assert [w.attempt for w in waits] == [1, 2, 3]
        for wait, base in zip(waits, (100 * MS, 200 * MS, 400 * MS), strict=True):
            assert base <= wait.delay <= base + 20 * MS, (wait.delay, base)
        assert "connection lost" in (waits[0].error or "")
        assert all(w.error == "refused: connection refused" for w in waits[1:])
        # each CONNECTING came no earlier than its chosen delay
        moves = rec.of(Transition)
        for wait in waits[:2]:
            after = next(t for t in moves if t.at > wait.at and t.state is State.CONNECTING)
            assert after.at - wait.at >= wait.delay - 0.005

        restarted_at = time.monotonic()
        echo_server(procs, port)
        await client.wait_state(State.OPEN, WAIT)
        assert time.monotonic() - restarted_at < 800 * MS + 20 * MS + WAIT / 10
        await rec.until(lambda: len(rec.texts(Direction.IN)) >= 6)
        await client.send("barrier")  # anything duplicated is echoed before the barrier
        await rec.until(lambda: "barrier" in rec.texts(Direction.IN))
        sent = Counter(rec.texts(Direction.OUT)[:-1])
        echoed = Counter(rec.texts(Direction.IN)[:-1])
        expected = Counter(["before"] + [f"q{i}" for i in range(5)])
        assert sent == expected and echoed == expected
        assert rec.texts(Direction.IN)[1:-1] == [f"q{i}" for i in range(5)]  # in order
        assert client.stats.queued == 0 and client.stats.reconnects == 1
        # the connection killed within a second was not stable: the delays kept growing
        assert (waits[0].decision or "").startswith("backoff grows: open only")
    finally:
        await client.stop()


async def test_sigstop_liveness_detected_then_reconnect(procs: ProcessRegistry) -> None:
    """Server SIGSTOPped: liveness lost within ping_interval + ping_timeout, RECONNECTING;
    after SIGCONT the client is OPEN again."""
    port = free_port()
    server = echo_server(procs, port)
    interval, timeout = 300 * MS, 300 * MS
    rec = Recorder()
    client = ReconnectingClient(
        ClientOptions(
            f"ws://127.0.0.1:{port}",
            ping_interval=interval,
            ping_timeout=timeout,
            close_timeout=200 * MS,
            connect_timeout=400 * MS,
            backoff=BackoffPolicy(initial=50 * MS, cap=400 * MS, jitter=10 * MS),
        ),
        observers=[rec],
    )
    await client.start()
    try:
        await client.wait_state(State.OPEN, WAIT)
        await rec.until(lambda: any(h.kind == "pong_received" for h in rec.of(HeartbeatEvent)))
        stopped_at = time.monotonic()
        server.send_signal(signal.SIGSTOP)
        await rec.until(lambda: any(h.kind == "liveness_lost" for h in rec.of(HeartbeatEvent)))
        lost = next(h for h in rec.of(HeartbeatEvent) if h.kind == "liveness_lost")
        detected = lost.at - stopped_at
        assert detected <= interval + timeout + 200 * MS, detected  # + watchdog step, load
        def retry_after_loss() -> Transition | None:
            return next((t for t in rec.of(Transition)
                         if t.state is State.RECONNECTING and t.at >= lost.at), None)

        await rec.until(lambda: retry_after_loss() is not None)
        waiting = retry_after_loss()
        assert waiting is not None and "liveness" in (waiting.error or "")
        assert "liveness" in [e.kind for e in rec.of(ErrorEvent)]
        # while paused, the kernel still accepts TCP but nobody answers: handshake timeouts
        await rec.until(lambda: "timeout" in [e.kind for e in rec.of(ErrorEvent)])
        server.send_signal(signal.SIGCONT)
        await client.wait_state(State.OPEN, WAIT)
        await client.send("alive again")
        await rec.until(lambda: "alive again" in rec.texts(Direction.IN))
    finally:
        await client.stop()
        server.send_signal(signal.SIGCONT)
