"""The node's heartbeat sweep (harness/heartbeat.py) on real sockets, beside the library's
own keepalive: a peer that never answers is closed the same way, a live one is pinged at
the same pace, and a closed connection is let go of at once."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from tests.nodekit import RawClient
from tests.support import SCALE, until
from wsconsole.core.tasks import Tasks
from wsconsole.harness.heartbeat import Heartbeat

INTERVAL = 0.2 * SCALE
TIMEOUT = 0.3 * SCALE
Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def server(
    mode: str, timeout: float | None = TIMEOUT
) -> AsyncIterator[tuple[int, list[ServerConnection], Heartbeat]]:
    """A server whose heartbeat is the library's keepalive ("library") or one Heartbeat
    sweep ("sweep"); yields its port, the connections it accepted and the sweep."""
    tasks = Tasks(prefix="test-")
    beat = Heartbeat(INTERVAL, timeout, tasks)
    accepted: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        accepted.append(ws)
        if mode == "sweep":
            beat.watch(ws)
        try:
            await ws.wait_closed()
        finally:
            beat.forget(ws)

    pings = {"ping_interval": INTERVAL, "ping_timeout": timeout} if mode == "library" else {
        "ping_interval": None}  # fmt: skip
    try:
        async with serve(handler, "127.0.0.1", 0, **pings) as srv:
            yield srv.sockets[0].getsockname()[1], accepted, beat
    finally:
        beat.close()
        await tasks.cancel_all()


async def frames_until_eof(raw: RawClient) -> list[tuple[float, int, bytes]]:
    """Every frame the server sends until it closes the TCP connection: (when, opcode,
    payload)."""
    frames = []
    while True:
        try:
            opcode, payload = await asyncio.to_thread(raw.recv_frame)
        except ConnectionError:
            return frames
        frames.append((time.monotonic(), opcode, payload))


@pytest.mark.parametrize("mode", ["library", "sweep"])
async def test_a_peer_that_never_answers_is_closed_with_1011(mode: str) -> None:
    async with server(mode) as (port, _, beat):
        raw = await asyncio.to_thread(RawClient, port)  # it never answers anything
        opened = time.monotonic()
        try:
            assert raw.status == 101
            frames = await frames_until_eof(raw)
        finally:
            raw.close()
        assert [opcode for _, opcode, _ in frames] == [Opcode.PING.value, Opcode.CLOSE.value]
        (pinged, _, ping), (closed, _, close) = frames
        assert len(ping) == 4, "a random 4-byte payload, as the library's"
        assert int.from_bytes(close[:2], "big") == 1011
        assert close[2:] == b"keepalive ping timeout"
        assert INTERVAL * 0.8 <= pinged - opened <= INTERVAL + 0.5 * SCALE
        assert TIMEOUT * 0.8 <= closed - pinged <= TIMEOUT + 0.5 * SCALE
        await until(lambda: len(beat) == 0, "the sweep lets go of the closed connection")


class Pings(ClientConnection):
    """A client counting the pings it receives, and when (it answers them, as websockets
    does)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.pinged: list[float] = []

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pinged.append(time.monotonic())
        super().process_event(event)


async def test_a_live_peer_is_pinged_every_interval_and_stays() -> None:
    async with server("sweep") as (port, accepted, beat):
        async with connect(f"ws://127.0.0.1:{port}", ping_interval=None,
                           create_connection=Pings) as client:  # fmt: skip
            assert isinstance(client, Pings)
            await until(lambda: len(client.pinged) >= 4, "four pings", timeout=10)
            gaps = [b - a for a, b in zip(client.pinged, client.pinged[1:], strict=False)]
            assert all(INTERVAL * 0.8 <= gap <= INTERVAL + 0.5 * SCALE for gap in gaps), gaps
            assert accepted[0].latency > 0, "the pongs are acknowledged by the library"
            assert not accepted[0].pending_pings or len(accepted[0].pending_pings) == 1
            await client.send("still here")
            assert len(beat) == 1


async def test_without_a_timeout_a_silent_peer_gets_one_ping_and_stays_open() -> None:
    async with server("sweep", timeout=None) as (port, accepted, beat):
        raw = await asyncio.to_thread(RawClient, port)
        try:
            await until(lambda: len(accepted) == 1, "the connection")
            await until(lambda: accepted[0].pending_pings, "a ping")
            await asyncio.sleep(INTERVAL * 3)
            assert len(accepted[0].pending_pings) == 1, "the next ping waits for the pong"
            assert accepted[0].close_code is None and len(beat) == 1
        finally:
            raw.close()


async def test_a_closed_connection_is_let_go_of_at_once() -> None:
    """The heap keeps an entry until its time; the entry must not keep the connection."""
    async with server("sweep") as (port, accepted, beat):
        async with connect(f"ws://127.0.0.1:{port}", ping_interval=None):
            await until(lambda: len(beat) == 1, "watched")
        gone = weakref.ref(accepted.pop())
        await until(lambda: len(beat) == 0, "forgotten")
        gc.collect()
        assert gone() is None, "nothing holds a closed connection"


async def test_after_close_nothing_is_pinged_even_when_a_pong_comes() -> None:
    async with server("sweep") as (port, _, beat):
        async with connect(f"ws://127.0.0.1:{port}", ping_interval=None,
                           create_connection=Pings) as client:  # fmt: skip
            assert isinstance(client, Pings)
            await until(lambda: len(client.pinged) >= 1, "a ping")
            beat.close()  # its pong is on the way or back: no next ping follows it
            pinged = len(client.pinged)
            await asyncio.sleep(INTERVAL * 3)
            assert len(client.pinged) == pinged and len(beat) == 0
