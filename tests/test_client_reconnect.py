"""ReconnectingClient's reconnect decisions against real servers on 127.0.0.1 (issue 13):
the backoff starts over only after a stable connection, refusals are classified (a fresh
token from a token command, Retry-After honoured, a 4xx stops), and a silent peer gets a
close frame 1011 while an empty close frame shows as "no status code"."""

from __future__ import annotations

import asyncio
import itertools
import shlex
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from tests.servers import server_port
from tests.support import MS, until
from tests.test_client import WAIT, client_factory, fast  # noqa: F401 - fixture
from wsconsole.core.events import Direction, ErrorEvent, FrameRecord, HeartbeatEvent
from wsconsole.core.events import Opcode as WsconsoleOpcode
from wsconsole.core.lifecycle import State, Transition
from wsconsole.core.tokens import CommandToken


def waits(rec: Any) -> list[Transition]:
    return [t for t in rec.of(Transition) if t.state is State.RECONNECTING]


async def _echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def query_token(request: Request) -> str | None:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query).get(
        "token", [None])[0]


async def test_accept_then_drop_grows_the_backoff_and_max_attempts_fires(
        client_factory: Callable[..., Any]) -> None:  # noqa: F811
    """A server that accepts and drops at once: every open is short, so the delays double
    (each RECONNECTING says why) and max_attempts=3 ends it after exactly 4 connects."""
    connects: list[float] = []

    async def drop(ws: ServerConnection) -> None:
        connects.append(time.monotonic())
        await ws.close(1011, "crashed")

    async with serve(drop, "127.0.0.1", 0) as server:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}",
                                     backoff=fast(max_attempts=3, jitter=0))
        await client.start()
        async with asyncio.timeout(WAIT):
            await client.wait_closed()
    assert len(connects) == 4
    assert [w.attempt for w in waits(rec)] == [1, 2, 3]
    assert [w.delay for w in waits(rec)] == pytest.approx([50 * MS, 100 * MS, 200 * MS])
    assert all((w.decision or "").startswith("backoff grows: open only") for w in waits(rec))
    for (before, after), w in zip(itertools.pairwise(connects), waits(rec), strict=True):
        assert after - before >= (w.delay or 0)
    assert rec.errors() == ["closed"] * 4 + ["gave_up"]
    assert client.final_error is not None and "gave up after 3 retries" in client.final_error


async def test_a_stable_connection_starts_the_backoff_over(
        client_factory: Callable[..., Any]) -> None:  # noqa: F811
    """Connections that stay open past stable_after: each drop waits the initial delay
    again, and max_attempts (2 here) never runs out."""
    connects = 0

    async def hold_then_drop(ws: ServerConnection) -> None:
        nonlocal connects
        connects += 1
        await asyncio.sleep(300 * MS)
        await ws.close(1001, "going away")

    async with serve(hold_then_drop, "127.0.0.1", 0) as server:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}",
                                     backoff=fast(max_attempts=2, jitter=0),
                                     stable_after=150 * MS)
        await client.start()
        await until(lambda: connects >= 4, "four connections", 10)
        await client.stop()
    assert [w.attempt for w in waits(rec)][:3] == [1, 1, 1]
    assert all((w.decision or "").startswith("backoff reset: open") for w in waits(rec))
    assert "gave_up" not in rec.errors()


def counter_command(path: Path) -> str:
    """A shell command printing tok-1, tok-2, ... (one more each run, kept in `path`)."""
    code = ("import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
            "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); "
            "print(f'tok-{n}')")
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {shlex.quote(str(path))}"


async def test_401_then_a_fresh_token_from_the_token_command(
        client_factory: Callable[..., Any], tmp_path: Path) -> None:  # noqa: F811
    """The command's first token is refused (401): the client runs it again at once (not
    after the 5 s backoff) and opens with the fresh one."""
    seen: list[str | None] = []

    def only_tok2(conn: ServerConnection, request: Request) -> Response | None:
        seen.append(query_token(request))
        return None if seen[-1] == "tok-2" else conn.respond(401, "token expired\n")

    async with serve(_echo, "127.0.0.1", 0, process_request=only_tok2) as server:
        client, rec = client_factory(
            f"ws://127.0.0.1:{server_port(server)}",
            token=CommandToken(counter_command(tmp_path / "n")),
            backoff=fast(initial=5.0, cap=5.0))
        started = time.monotonic()
        await client.start()
        await client.wait_state(State.OPEN, WAIT)
        assert time.monotonic() - started < 5.0
        await client.send("with a fresh token")
        await rec.until(lambda: rec.texts(Direction.IN) == ["with a fresh token"])
        [retry] = waits(rec)
        assert rec.errors() == ["handshake_rejected"]
    assert seen == ["tok-1", "tok-2"]
    assert retry.delay == 0.0 and "credentials refused, retrying once now" in (
        retry.decision or "")


async def test_refused_again_with_a_fresh_token_stops(
        client_factory: Callable[..., Any]) -> None:  # noqa: F811
    """A callback provider whose every token is refused: two handshakes, then CLOSED with
    the reason (no blind retries)."""
    handshakes = 0
    calls = 0

    def deny(conn: ServerConnection, request: Request) -> Response:
        nonlocal handshakes
        handshakes += 1
        return conn.respond(401, "no\n")

    def provider() -> str:
        nonlocal calls
        calls += 1
        return f"t{calls}"

    async with serve(_echo, "127.0.0.1", 0, process_request=deny) as server:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}", token=provider)
        await client.start()
        async with asyncio.timeout(WAIT):
            await client.wait_closed()
    assert (handshakes, calls) == (2, 2)
    assert rec.errors() == ["handshake_rejected", "handshake_rejected", "stopped"]
    assert "refused again with a fresh token" in (client.final_error or "")


async def test_429_retry_after_is_honoured_and_404_stops(
        client_factory: Callable[..., Any]) -> None:  # noqa: F811
    """429 with Retry-After: 1 waits a whole second although the backoff says 50 ms; a 404
    stops at once, retrying the same request cannot succeed."""
    handshakes: list[float] = []

    def busy_once(conn: ServerConnection, request: Request) -> Response | None:
        handshakes.append(time.monotonic())
        if len(handshakes) > 1:
            return None
        response = conn.respond(429, "slow down\n")
        response.headers["Retry-After"] = "1"
        return response

    async with serve(_echo, "127.0.0.1", 0, process_request=busy_once) as server:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}")
        await client.start()
        await client.wait_state(State.OPEN, WAIT)
        [wait] = waits(rec)
    assert handshakes[1] - handshakes[0] >= 1.0
    assert wait.delay == 1.0 and wait.decision == "HTTP 429 asked to wait (Retry-After 1 s)"

    def gone(conn: ServerConnection, request: Request) -> Response:
        return conn.respond(404, "no such endpoint\n")

    async with serve(_echo, "127.0.0.1", 0, process_request=gone) as server:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}")
        await client.start()
        async with asyncio.timeout(WAIT):
            await client.wait_closed()
    assert rec.errors() == ["handshake_rejected", "stopped"]
    assert (client.final_error or "").startswith("HTTP 404 Not Found: the server refuses")


async def silent_peer(seen: list[Close], empty_close: bool = False) -> asyncio.Server:
    """A WebSocket server on websockets' sans-I/O protocol that completes the handshake and
    then never writes again (no pong, no close reply), recording the close frame it gets
    before it closes the TCP connection; with `empty_close` it first sends a close frame
    without a payload."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        protocol = ServerProtocol()
        opened = False
        try:
            while data := await reader.read(65536):
                protocol.receive_data(data)
                for event in protocol.events_received():
                    if isinstance(event, Request):
                        protocol.send_response(protocol.accept(event))
                    elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                        seen.append(Close.parse(event.data))
                        return
                pending = protocol.data_to_send()
                if not opened:  # the handshake response only: pings go unanswered
                    opened = True
                    writer.writelines(pending)
                    if empty_close:
                        writer.write(b"\x88\x00")
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_keepalive_timeout_closes_with_1011(
        client_factory: Callable[..., Any]) -> None:  # noqa: F811
    """A peer that stops answering: after ping_interval + ping_timeout the client sends a
    close frame 1011 (the server receives it), then reconnects."""
    seen: list[Close] = []
    server = await silent_peer(seen)
    try:
        port = server.sockets[0].getsockname()[1]
        client, rec = client_factory(f"ws://127.0.0.1:{port}", ping_interval=100 * MS,
                                     ping_timeout=100 * MS, close_timeout=200 * MS)
        await client.start()
        await until(lambda: seen, "a close frame at the server", 10)
        await until(lambda: State.RECONNECTING in rec.states(), "RECONNECTING", 10)
    finally:
        server.close()
    assert (seen[0].code, seen[0].reason) == (1011, "keepalive timeout")
    assert any(h.kind == "liveness_lost" for h in rec.of(HeartbeatEvent))
    sent = [f for f in rec.of(FrameRecord)
            if f.opcode is WsconsoleOpcode.CLOSE and f.direction is Direction.OUT]
    assert sent[0].close_code == 1011
    assert "liveness" in rec.errors() and waits(rec)[0].error is not None
    assert "liveness" in (waits(rec)[0].error or "")


async def test_an_empty_close_frame_is_no_status_code(
        client_factory: Callable[..., Any]) -> None:  # noqa: F811
    """A close frame without a payload is 1005: reported as "no status code", never None."""
    server = await silent_peer([], empty_close=True)
    try:
        port = server.sockets[0].getsockname()[1]
        client, rec = client_factory(f"ws://127.0.0.1:{port}", close_timeout=200 * MS)
        await client.start()
        await until(lambda: State.RECONNECTING in rec.states(), "RECONNECTING", 10)
    finally:
        server.close()
    closed = next(e for e in rec.of(ErrorEvent) if e.kind == "closed")
    assert closed.detail == "1005 (no status code)"
    assert waits(rec)[0].code == 1005
