"""Socket.IO target against real peers: a python-socketio server and a Node.js socket.io
server, each a child process killed by PID. Connect (auth payload, namespaces, both
transports), emit with ack and several args, broadcasts, rooms, the server SIGKILLed and
restarted with the reconnect visible as transitions; protocol mismatch is bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests import servers
from tests.socketiokit import (  # noqa: F401 - fixture
    node_argv,
    node_socketio,
    python_argv,
    wait_listening,
)
from tests.support import MS, SCALE, ProcessRegistry, free_port, until
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptionsError, NotConnected
from wsconsole.core.events import Direction, ErrorEvent, FrameRecord, HeartbeatEvent, Opcode
from wsconsole.core.lifecycle import State, Transition
from wsconsole.core.targets.socketio import (
    AckTimeout,
    SocketIOClient,
    SocketIOOptions,
    options_from_url,
)

WAIT = 20.0 * SCALE


def quick(**kw: Any) -> BackoffPolicy:
    return BackoffPolicy(initial=100 * MS, cap=500 * MS, jitter=0, **kw)


class Peer:
    """A Socket.IO server child process that can be killed and started again on its port."""

    def __init__(self, procs: ProcessRegistry, argv: Callable[[int], list[str]]) -> None:
        self.procs = procs
        self.argv = argv
        self.port = free_port()
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = self.procs.start(self.argv(self.port))
        await wait_listening(self.port)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def running(options: SocketIOOptions, name: str = "sio") -> AsyncIterator[
        tuple[SocketIOClient, list[Any], list[tuple[str, str, tuple[Any, ...]]]]]:
    """A started client with its event log and its received Socket.IO events; stopped after."""
    log: list[Any] = []
    got: list[tuple[str, str, tuple[Any, ...]]] = []
    client = SocketIOClient(options, name=name, observers=[log.append])
    client.on_event(lambda ns, ev, args: got.append((ns, ev, args)))
    await client.start()
    try:
        yield client, log, got
    finally:
        await client.stop()


@pytest.fixture(params=["python", "node"])
async def peer(request: pytest.FixtureRequest, procs: ProcessRegistry) -> Peer:
    """A running python-socketio or Node socket.io server."""
    if request.param == "node":
        request.getfixturevalue("node_socketio")
        server = Peer(procs, node_argv)
    else:
        server = Peer(procs, python_argv)
    await server.start()
    return server


def test_options_validation_and_url_forms() -> None:
    with pytest.raises(ClientOptionsError, match="http"):
        SocketIOOptions(url="ftp://host/")
    with pytest.raises(ClientOptionsError, match="transports"):
        SocketIOOptions(url="http://h:1", transports=["carrier-pigeon"])
    with pytest.raises(ClientOptionsError, match="auth"):
        SocketIOOptions(url="http://h:1", auth="token")  # type: ignore[arg-type]
    assert options_from_url("http://h:1/chat").namespaces == ["/chat"]
    assert options_from_url("ws://h:1/socket.io/").path == "socket.io"
    assert options_from_url("wss://h:1/x").base_url == "https://h:1"


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"], ["polling"]])
async def test_connect_emit_ack_broadcast_rooms(peer: Peer, transports: list[str]) -> None:
    opts = dict(auth={"user": "ada"}, transports=transports, backoff=quick(),
                connect_timeout=5.0, ack_timeout=5.0)
    async with running(SocketIOOptions(url=peer.url, **opts), "a") as (a, log_a, got_a), \
            running(SocketIOOptions(url=peer.url, **opts), "b") as (b, _log_b, got_b):
        await a.wait_state(State.OPEN, WAIT)
        await b.wait_state(State.OPEN, WAIT)
        assert a.transport == ("polling" if transports == ["polling"] else "websocket")
        # the server saw our auth payload
        await until(lambda: ("/", "welcome", ({"user": "ada"},)) in got_a)
        # ack with any number of arguments, and with none
        assert await a.emit("echo", 1, "two", {"three": [3]}, ack=True) == [1, "two",
                                                                            {"three": [3]}]
        assert await a.emit("echo", ack=True) == []
        # a broadcast reaches the other client
        await a.emit("shout", "hello all")
        await until(lambda: ("/", "news", ("hello all",)) in got_b)
        # rooms: only members get the room message
        assert await b.join("r1", ack=True) == ["joined", "r1"]
        await a.emit("to_room", "r1", {"n": 1})
        await until(lambda: ("/", "room_message", ({"n": 1},)) in got_b)
        assert await b.leave("r1", ack=True) == ["left", "r1"]
        await a.emit("to_room", "r1", {"n": 2})
        await a.emit("echo", ack=True)  # a round-trip after, so a stray delivery had time
        assert ("/", "room_message", ({"n": 2},)) not in got_b
    frames = [e for e in log_a if isinstance(e, FrameRecord)]
    out = [f.payload for f in frames if f.direction is Direction.OUT]
    assert b'0{"user":"ada"}' in out  # the CONNECT packet with the auth payload
    assert any(p.startswith(b'2') and b'["echo",1,"two"' in p for p in out)
    assert any(f.direction is Direction.IN and f.payload.startswith(b'3') for f in frames)
    assert all(f.opcode is Opcode.TEXT for f in frames)
    assert a.stats.sent >= 5 and a.stats.received >= 4
    states = [e.state for e in log_a if isinstance(e, Transition)]
    assert states == [State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED]


async def test_namespace_and_ack_timeout(peer: Peer) -> None:
    options = options_from_url(peer.url + "/chat", transports=["websocket"], backoff=quick(),
                               ack_timeout=0.3)
    async with running(options) as (client, log, got):
        await client.wait_state(State.OPEN, WAIT)
        assert await client.emit("echo", "x", ack=True) == ["x"]
        await until(lambda: any(ns == "/chat" and ev == "welcome" for ns, ev, _ in got))
        with pytest.raises(AckTimeout):
            await client.emit("unheard", "nobody handles this", ack=True)
    sent = [e.payload for e in log if isinstance(e, FrameRecord) and e.direction is Direction.OUT]
    assert sent[0].startswith(b"0/chat,")
    with pytest.raises(NotConnected):
        await client.emit("echo")


async def test_server_killed_and_restarted_reconnect_shown(peer: Peer) -> None:
    options = SocketIOOptions(url=peer.url, transports=["websocket"], backoff=quick(),
                              connect_timeout=3.0, rooms=["lobby"])
    async with running(options) as (client, log, got):
        await client.wait_state(State.OPEN, WAIT)
        first_sid = client.sid
        peer.kill()
        await client.wait_state(State.RECONNECTING, WAIT)
        # while it is down, the retries are refused and each wait is our backoff's delay
        await until(lambda: any(isinstance(e, ErrorEvent) and e.kind == "refused"
                                for e in log))
        await peer.start()
        await client.wait_state(State.OPEN, WAIT)
        assert client.sid != first_sid
        # the room was joined again on the new connection: the restarted server routes to it
        await until(lambda: sum(1 for e in log if isinstance(e, FrameRecord)
                                and b'["join","lobby"]' in e.payload) == 2)
        await client.emit("to_room", "lobby", "back")
        await until(lambda: ("/", "room_message", ("back",)) in got)
    waits = [e for e in log if isinstance(e, Transition) and e.state is State.RECONNECTING]
    assert waits[0].previous is State.OPEN and waits[0].delay == pytest.approx(0.1)
    assert [w.attempt for w in waits[:2]] == [1, 2]
    assert waits[1].delay == pytest.approx(0.2)  # doubling, per our policy
    assert client.stats.reconnects == 1


async def test_engineio_pings_are_heartbeats(peer: Peer) -> None:
    # both test servers ping every second
    async with running(SocketIOOptions(url=peer.url, transports=["websocket"])) as (c, log, _):
        await c.wait_state(State.OPEN, WAIT)
        await until(lambda: any(isinstance(e, HeartbeatEvent) for e in log), timeout=10)
    [beat, *_] = [e for e in log if isinstance(e, HeartbeatEvent)]
    assert beat.kind == "ping_received"


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]])
async def test_plain_websocket_server_is_a_protocol_mismatch(transports: list[str]) -> None:
    server, _ = await servers.start("echo")
    port = servers.server_port(server)
    try:
        options = SocketIOOptions(url=f"http://127.0.0.1:{port}", transports=transports,
                                  connect_timeout=1.0,
                                  backoff=BackoffPolicy(initial=0, jitter=0, max_attempts=0))
        async with running(options) as (client, log, _):
            async with asyncio.timeout(WAIT):
                await client.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    [error, gave_up] = [e for e in log if isinstance(e, ErrorEvent)]
    assert error.kind == "protocol_mismatch", error
    assert "plain WebSocket" in error.detail
    assert gave_up.kind == "gave_up"
    assert client.state is State.CLOSED


async def test_event_stream_at_a_socketio_url_is_a_protocol_mismatch() -> None:
    from tests.test_sse import Feed, serve

    async with serve(Feed()) as base:
        options = options_from_url(
            base + "/events", transports=["polling", "websocket"], connect_timeout=2.0,
            backoff=BackoffPolicy(initial=0, jitter=0, max_attempts=0))
        log: list[Any] = []
        c = SocketIOClient(options, observers=[log.append])
        await c.start()
        async with asyncio.timeout(WAIT):
            await c.wait_closed()
    [error, _gave_up] = [e for e in log if isinstance(e, ErrorEvent)]
    assert error.kind == "protocol_mismatch", error
    assert "Server-Sent Events (use --sse)" in error.detail


@contextlib.asynccontextmanager
async def gatekeeper(on_connect: Callable[..., Any]) -> AsyncIterator[str]:
    """An in-process python-socketio server on aiohttp (127.0.0.1, free port) whose connect
    handler is `on_connect(server, sid, auth)`; yields its URL."""
    import socketio
    from aiohttp import web

    server = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    server.attach(app)

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await on_connect(server, sid, auth)

    server.on("connect", connect)
    async with servers.aiohttp_site(app) as base:
        yield base


async def run_to_end(options: SocketIOOptions) -> tuple[SocketIOClient, list[Any]]:
    """Run a client until it ends by itself (stopped or given up, bounded); its events."""
    async with running(options) as (client, log, _):
        async with asyncio.timeout(WAIT):
            await client.wait_closed()
    return client, log


async def test_connect_error_for_auth_gets_one_fresh_token() -> None:
    """CONNECT_ERROR "bad token": with a provider, one immediate retry carrying a fresh
    token in the CONNECT payload; with a fixed token, stopped; a refusal that is not about
    the credentials ("try again later") is retried with the backoff as before."""
    import socketio

    seen: list[Any] = []

    async def only_new(server: Any, sid: str, auth: Any) -> None:
        seen.append(auth)
        if not isinstance(auth, dict) or auth.get("token") != "new":
            raise socketio.exceptions.ConnectionRefusedError("bad token")

    tokens = iter(["old", "new"])
    async with gatekeeper(only_new) as url:
        options = SocketIOOptions(url=url, transports=["websocket"], auth={"user": "ada"},
                                  token=lambda: next(tokens), backoff=BackoffPolicy(initial=5.0),
                                  connect_timeout=3.0)
        async with running(options) as (client, log, _):
            await client.wait_state(State.OPEN, WAIT)
        assert seen == [{"user": "ada", "token": "old"}, {"user": "ada", "token": "new"}]
        [retry] = [e for e in log if isinstance(e, Transition) and e.state is State.RECONNECTING]
        assert retry.delay == 0.0 and "fresh token" in (retry.decision or "")

        seen.clear()
        client, log = await run_to_end(SocketIOOptions(
            url=url, transports=["websocket"], auth={"token": "old"}, backoff=quick(),
            connect_timeout=3.0))
        assert len(seen) == 1
        assert [e.kind for e in log if isinstance(e, ErrorEvent)] == [
            "handshake_rejected", "stopped"]
        assert "bad token" in (client.final_error or "")

    async def busy(server: Any, sid: str, auth: Any) -> None:
        raise socketio.exceptions.ConnectionRefusedError("try again later")

    async with gatekeeper(busy) as url:
        client, log = await run_to_end(SocketIOOptions(
            url=url, transports=["websocket"], connect_timeout=3.0,
            backoff=quick(max_attempts=1)))
    assert [e.kind for e in log if isinstance(e, ErrorEvent)] == [
        "handshake_rejected", "handshake_rejected", "gave_up"]


async def test_accept_then_disconnect_grows_the_backoff() -> None:
    """A server that disconnects every client right after connecting: the delays double
    and max_attempts=2 ends it after three connects (each open was short)."""
    connects = 0

    async def kick(server: Any, sid: str, auth: Any) -> None:
        nonlocal connects
        connects += 1
        server.start_background_task(server.disconnect, sid)

    async with gatekeeper(kick) as url:
        _, log = await run_to_end(SocketIOOptions(
            url=url, transports=["websocket"], connect_timeout=3.0,
            backoff=quick(max_attempts=2)))
    assert connects == 3
    waits = [e for e in log if isinstance(e, Transition) and e.state is State.RECONNECTING]
    assert [w.delay for w in waits] == pytest.approx([100 * MS, 200 * MS])
    assert all((w.decision or "").startswith("backoff grows") for w in waits)
    assert [e.kind for e in log if isinstance(e, ErrorEvent)][-1] == "gave_up"
