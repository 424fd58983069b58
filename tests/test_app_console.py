"""The Console's demo (app/console.py) against the real harness: the console's own client
takes its tokens from the demo cluster, a fresh one signed for every connect, so it comes
back after the token it connected with expired, both when a reconnect's handshake would be
refused (HTTP 401 after a node kill) and when the node closes the connection (1008 at the
next message). With a fixed token the client would stop in either case.
"""

from __future__ import annotations

import time

import pytest

from tests.support import SCALE, pid_alive, until
from wsconsole.app.console import CONSOLE_CONN, DEMO_ROOM, Console
from wsconsole.app.profiles import Profile
from wsconsole.core.events import Direction, FrameBatch, FrameRecord, Opcode
from wsconsole.core.lifecycle import State

TTL = 2.0 * SCALE  # the lifetime of each token the demo signs for the console


async def test_the_console_reauthenticates_after_its_token_expired() -> None:
    console = Console(sample_interval=0.25, token_ttl=TTL)
    pids: set[int] = set()
    try:
        await console.start_demo(swarm_clients=0)
        pids = console.started_pids()
        session = console.sessions[CONSOLE_CONN]
        assert session.profile.token is None  # nothing fixed that could expire
        await until(lambda: session.state is State.OPEN, "the console's client to open", 30)

        def opens() -> int:
            return console.timeline.states(CONSOLE_CONN).count(State.OPEN)

        async def outlive_the_token() -> None:
            signed_before = time.time()  # the open connection's token is older than this
            await until(lambda: time.time() > signed_before + TTL + 0.2,
                        "the connection's token to expire", TTL / SCALE + 5)

        # a reconnect after expiry: the node serving it is killed
        await outlive_the_token()
        serving: str | None = None

        async def found_serving() -> bool:
            nonlocal serving
            serving = await console.serving_node()
            return serving is not None

        await until(found_serving, "the node serving the console's client", 15, interval=0.25)
        assert serving is not None
        before = opens()
        await console.cluster_action("kill", serving)
        await until(lambda: opens() > before and session.state is State.OPEN,
                    "the console's client back after the kill", 30,
                    detail=lambda: (console.timeline.states(CONSOLE_CONN), session.last_error))
        assert await console.serving_node() not in (None, serving)

        # an expired token on an open connection: the node closes it at the next message
        await outlive_the_token()
        before = opens()
        client = console.lab_client(CONSOLE_CONN)
        await client.publish(DEMO_ROOM, {"after": "expiry"})
        await until(lambda: opens() > before and session.state is State.OPEN,
                    "the console's client back after the node closed it", 30,
                    detail=lambda: (console.timeline.states(CONSOLE_CONN), session.last_error))
        assert session.last_error is not None and "token expired" in session.last_error
        # the message refused with the old token goes through with the fresh one
        await until(lambda: len(client.outbox) == 0, "the publish acknowledged", 15)
    finally:
        pids |= console.started_pids()
        await console.shutdown()
    assert not [pid for pid in pids if pid_alive(pid)]


def test_a_session_measures_delivery_latency_once_per_harness_message() -> None:
    """A session takes a node-to-client delay from each received message's `ts` (seconds,
    or milliseconds), from a batch as from single records, and skips what has none."""
    console = Console()
    session = console.add_session(Profile(name="lat", url="ws://127.0.0.1:9/"))
    batch = FrameBatch("lat")
    now = 1_765_000_000.0  # wall clock, seconds
    batch.wall = now + 0.5
    for value in ({"type": "message", "ts": now + 0.25}, {"type": "message", "ts": now * 1000},
                  {"ts": True}, {"ts": "1000"}, {"type": "joined"}, None):
        batch.payloads.append(b"{}")
        batch.opcodes.append(Opcode.TEXT)
        batch.values.append(value)
    session.take_frames(batch)
    session(FrameRecord("lat", Direction.IN, Opcode.TEXT, b'{"ts":%f}' % now, wall=now + 0.125))
    session(FrameRecord("lat", Direction.OUT, Opcode.TEXT, b'{"ts":%f}' % now, wall=now + 0.125))
    histogram = session.take_latencies()
    assert histogram.count == 3
    assert (session.frames_in, session.frames_out) == (7, 1)
    assert histogram.total == pytest.approx(0.25 + 0.5 + 0.125, abs=1e-5)  # 0.5: in ms
