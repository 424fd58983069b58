"""The intercepting proxy with real sockets: a websockets upstream, the proxy, real clients.

Relaying (frames both ways in order, handshake headers, fragments), refusals and dead
upstreams, hold/edit/drop/delay/duplicate/rewrite, inject and close, pong shaping, network
faults per connection, plain HTTP passed through, and replay of a recorded connection.
TLS and forward mode are in test_proxy_tls.py, Chromium in test_proxy_browser.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from tests.support import MS, SCALE, until
from wsconsole.core.events import Direction, FrameRecord, HeartbeatEvent, Opcode
from wsconsole.core.lifecycle import State, Transition
from wsconsole.harness.netfaults import Latency
from wsconsole.proxy.hub import ProxyEvent, ProxyHub
from wsconsole.proxy.record import Recorder, replay_through
from wsconsole.proxy.relay import ProxiedConnection
from wsconsole.proxy.rules import Action, Rule
from wsconsole.proxy.server import ProxyConfig, ProxyServer

TIMEOUT = 5.0


@dataclass
class Upstream:
    """An in-process websockets server that records what reached it and echoes it back."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    connections: list[ServerConnection] = field(default_factory=list)

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if request.path == "/refuse":
            response = conn.respond(403, "no entry from this origin\n")
            response.headers["X-Why"] = "origin"
            return response
        if request.path == "/healthz":
            return conn.respond(200, "ok\n")
        return None

    @staticmethod
    def select_subprotocol(conn: ServerConnection, offered: list[str]) -> str | None:
        return next((p for p in ("chat", "v2") if p in offered), None)  # optional here

    @staticmethod
    def process_response(conn: ServerConnection, request: Request, response: Response) -> None:
        response.headers["Set-Cookie"] = "session=abc; Path=/"

    async def handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        try:
            async for message in ws:
                self.received.append(message)
                if isinstance(message, str) and message.startswith("close:"):
                    await ws.close(int(message[6:]), "asked to")
                    break
                await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.closes.append(ws.close_code)


@dataclass
class Rig:
    """The upstream, the proxy in front of it, and everything the proxy reported."""

    upstream: Upstream
    server: ProxyServer
    hub: ProxyHub
    recorder: Recorder
    events: list[Any]

    def frames(self, conn: str | None = None) -> list[FrameRecord]:
        return [e for e in self.events if isinstance(e, FrameRecord)
                and (conn is None or e.conn == conn)]

    def proxy_events(self, kind: str) -> list[ProxyEvent]:
        return [e for e in self.events if isinstance(e, ProxyEvent) and e.kind == kind]

    def only_connection(self) -> ProxiedConnection:
        [conn] = self.hub.connections.values()
        return conn

    def client(self, path: str = "/chat", **kwargs: Any) -> Any:
        return connect(self.server.url + path, ping_interval=None, open_timeout=TIMEOUT,
                       **kwargs)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    upstream = Upstream()
    async with serve(upstream.handler, "127.0.0.1", 0, ping_interval=None,
                     select_subprotocol=upstream.select_subprotocol,
                     process_request=upstream.process_request,
                     process_response=upstream.process_response) as server:
        upstream.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        hub = ProxyHub()
        events: list[Any] = []
        hub.subscribe(events.append)
        recorder = Recorder(hub)
        proxy = ProxyServer(ProxyConfig(port=0, upstream=upstream.url), hub)
        await proxy.start()
        try:
            yield Rig(upstream, proxy, hub, recorder, events)
        finally:
            await proxy.stop()


async def recv(ws: ClientConnection) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), TIMEOUT * SCALE)


async def test_frames_and_handshake_headers_pass_both_ways_in_order(rig: Rig) -> None:
    headers = {"Origin": "http://app.test", "Cookie": "a=1", "Authorization": "Bearer t0k",
               "X-Trace": "42"}
    async with rig.client("/chat?room=1", additional_headers=headers,
                          subprotocols=["v2", "chat"]) as ws:
        assert ws.subprotocol == "chat"  # the server chose, the proxy passed it back
        assert ws.response.headers["Set-Cookie"] == "session=abc; Path=/"
        for n in range(5):
            await ws.send(f"m{n}")
        await ws.send(b"\x00\xff")
        assert [await recv(ws) for _ in range(6)] == ["m0", "m1", "m2", "m3", "m4", b"\x00\xff"]
    await until(lambda: not rig.hub.connections, "the proxied connection to end")
    [request] = rig.upstream.requests
    assert request.path == "/chat?room=1"
    for name, value in headers.items():
        assert request.headers[name] == value  # Origin, cookies, auth: passed on unchanged
    assert request.headers["Sec-WebSocket-Protocol"] == "v2, chat"
    frames = [(f.direction, f.opcode, f.payload) for f in rig.frames()]
    sent = [(Direction.OUT, Opcode.TEXT, f"m{n}".encode()) for n in range(5)]
    assert [f for f in frames if f[0] is Direction.OUT][:6] == [
        *sent, (Direction.OUT, Opcode.BINARY, b"\x00\xff")]
    assert [f for f in frames if f[0] is Direction.IN][:6] == [
        (Direction.IN, op, data) for _, op, data in [*sent, (0, Opcode.BINARY, b"\x00\xff")]]
    closes = [(f.direction, f.close_code) for f in rig.frames() if f.opcode is Opcode.CLOSE]
    assert closes == [(Direction.OUT, 1000), (Direction.IN, 1000)]
    states = [e.state for e in rig.events if isinstance(e, Transition)]
    assert states == [State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED]
    info = rig.recorder.connections["proxy-1"].info
    assert info.status == 101 and info.subprotocol == "chat"
    assert ("Origin", "http://app.test") in info.request_headers
    assert info.client_close == (1000, "") and rig.hub.counters["frames_out"] == 7


async def test_an_upstream_refusal_reaches_the_client_with_its_status_and_body(rig: Rig) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with rig.client("/refuse", additional_headers={"Origin": "http://evil.test"}):
            pass
    response = refused.value.response
    assert response.status_code == 403
    assert response.body == b"no entry from this origin\n"
    assert response.headers["X-Why"] == "origin"
    assert rig.upstream.requests[0].headers["Origin"] == "http://evil.test"
    [event] = rig.proxy_events("refused")
    assert event.detail.startswith("403")
    last = [e for e in rig.events if isinstance(e, Transition)][-1]
    assert last.state is State.CLOSED and last.error is not None and "403" in last.error


async def test_a_dead_upstream_gets_502_with_the_reason() -> None:
    hub = ProxyHub()
    proxy = ProxyServer(ProxyConfig(port=0, upstream="ws://127.0.0.1:9"), hub)
    await proxy.start()
    try:
        with pytest.raises(InvalidStatus) as failed:
            async with connect(proxy.url, open_timeout=TIMEOUT):
                pass
        assert failed.value.response.status_code == 502
        assert b"connection refused" in failed.value.response.body
        assert hub.counters["failed"] == 1 and not hub.connections
    finally:
        await proxy.stop()


async def test_plain_http_requests_pass_through_to_the_upstream(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok\n")
    assert rig.upstream.requests[0].path == "/healthz" and rig.hub.counters["http_passed"] == 1


async def test_a_held_frame_holds_the_frames_behind_it_and_goes_on_edited(rig: Rig) -> None:
    rig.hub.rules.replace([Rule("orders", Action.HOLD, direction="out", contains="order")])
    async with rig.client() as ws:
        for text in ("order 1", "after 1", "after 2"):
            await ws.send(text)
        await until(lambda: rig.hub.pending(), "the order to be held")
        conn = rig.only_connection()
        conn.inject("client", Opcode.TEXT, b"the other way still flows")
        assert await recv(ws) == "the other way still flows"
        assert rig.upstream.received == []  # the frames behind the held one wait too
        [held] = rig.hub.pending()
        assert (held.payload, held.direction, held.rule) == (b"order 1", Direction.OUT, "orders")
        rig.hub.resolve(held.id, True, b"order 1 (edited)")
        assert [await recv(ws) for _ in range(3)] == ["order 1 (edited)", "after 1", "after 2"]
    assert rig.upstream.received == ["order 1 (edited)", "after 1", "after 2"]
    [edited] = rig.proxy_events("edited")
    assert edited.payload == b"order 1" and rig.hub.counters["held"] == 1


async def test_drop_delay_duplicate_and_rewrite_rules(rig: Rig) -> None:
    rig.hub.rules.replace([
        Rule("no secrets", Action.DROP, direction="out", contains="secret"),
        Rule("slow", Action.DELAY, direction="out", contains="slow", delay_ms=200),
        Rule("twice", Action.DUPLICATE, direction="in", contains="twice"),
        Rule("price", Action.REWRITE, direction="out", json_path="$.price", set={"$.price": 0}),
    ])
    async with rig.client() as ws:
        started = time.monotonic()
        for text in ("secret 1", "slow 1", "right behind it", "twice", '{"price": 10}'):
            await ws.send(text)
        got = [await recv(ws) for _ in range(5)]
        elapsed = time.monotonic() - started
    assert rig.upstream.received == ["slow 1", "right behind it", "twice", '{"price":0}']
    assert got == ["slow 1", "right behind it", "twice", "twice", '{"price":0}']
    assert elapsed >= 0.2
    counters = rig.hub.counters
    assert (counters["dropped"], counters["delayed"], counters["duplicated"],
            counters["rewritten"]) == (1, 1, 1, 1)
    assert rig.proxy_events("dropped")[0].payload == b"secret 1"


async def test_inject_to_either_side_and_close_the_client_with_a_chosen_code(rig: Rig) -> None:
    async with rig.client() as ws:
        await ws.send("hello")
        assert await recv(ws) == "hello"
        conn = rig.only_connection()
        conn.inject("client", Opcode.TEXT, b"from the proxy")
        conn.inject("server", Opcode.TEXT, orjson.dumps({"injected": True}))
        assert await recv(ws) == "from the proxy"
        assert await recv(ws) == '{"injected":true}'  # the server echoed the injected frame
        conn.close("client", 4321, "chosen in the proxy")
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert (ws.close_code, ws.close_reason) == (4321, "chosen in the proxy")
    await until(lambda: rig.upstream.closes, "the upstream to see its close")
    assert rig.upstream.closes == [1001]
    injected = [f.payload for f in rig.frames() if f.injected and f.opcode is Opcode.TEXT]
    assert injected == [b"from the proxy", b'{"injected":true}']
    assert rig.hub.counters["injected"] == 2 and rig.hub.counters["closed"] == 1


async def test_a_server_close_code_reaches_the_client_unchanged(rig: Rig) -> None:
    async with rig.client() as ws:
        await ws.send("close:4403")
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert (ws.close_code, ws.close_reason) == (4403, "asked to")
    await until(lambda: not rig.hub.connections, "the proxied connection to end")
    assert rig.recorder.connections["proxy-1"].info.server_close == (4403, "asked to")


async def test_pongs_to_the_client_can_be_suppressed_and_let_through_again(rig: Rig) -> None:
    async with rig.client() as ws:
        rtt = await asyncio.wait_for(await ws.ping(b"one"), TIMEOUT)
        assert rtt >= 0
        await until(lambda: any(isinstance(e, HeartbeatEvent) for e in rig.events),
                    "the ping's round trip to be reported")
        conn = rig.only_connection()
        conn.shape_pongs("client", "drop")
        waiter = await ws.ping(b"two")
        await until(lambda: rig.proxy_events("dropped"), "the pong to be dropped")
        assert not waiter.done()
        assert rig.proxy_events("dropped")[0].rule == "pongs to the client"
        conn.shape_pongs("client", "pass")
        await asyncio.wait_for(await ws.ping(b"three"), TIMEOUT)
    pings = [f.payload for f in rig.frames() if f.opcode is Opcode.PING]
    assert pings == [b"one", b"two", b"three"]  # pings are relayed, not answered by the proxy


async def test_a_latency_fault_slows_only_the_connection_it_is_set_on(rig: Rig) -> None:
    async def round_trip(ws: ClientConnection) -> float:
        started = time.monotonic()
        await ws.send("x")
        await recv(ws)
        return time.monotonic() - started

    async with rig.client() as slow, rig.client() as fast:
        await round_trip(slow)
        await round_trip(fast)
        rig.hub.set_fault("proxy-1", Latency(ms=150))
        assert await round_trip(slow) >= 0.3  # 150 ms on the way up and on the way down
        assert await round_trip(fast) < 0.3 * SCALE
        rig.hub.clear_fault("proxy-1")
        assert await round_trip(slow) < 0.3 * SCALE
    assert [e.detail for e in rig.proxy_events("fault")] == ["latency"]


async def test_a_fragmented_message_keeps_its_fragments(rig: Rig) -> None:
    async with rig.client() as ws:
        await ws.send(["frag", "ment", "ed"])
        assert await recv(ws) == "fragmented"
    out = [(f.opcode, f.payload, f.fin) for f in rig.frames() if f.direction is Direction.OUT]
    assert out[:4] == [(Opcode.TEXT, b"frag", False), (Opcode.CONTINUATION, b"ment", False),
                       (Opcode.CONTINUATION, b"ed", False), (Opcode.CONTINUATION, b"", True)]
    assert rig.upstream.received == ["fragmented"]


async def test_a_client_breaking_the_protocol_is_closed_and_the_server_cut_off(rig: Rig) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.server.port)
    writer.write(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101")
    writer.write(bytes([0x81, 0x02]) + b"hi")  # a client must mask its frames
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert answer[:2] == bytes([0x88, len(answer) - 2]) and answer[2:4] == (1002).to_bytes(2, "big")
    await until(lambda: rig.upstream.closes, "the upstream to be cut off")
    assert rig.upstream.closes == [1006]
    assert any("broke the protocol" in e.detail for e in rig.proxy_events("error"))


async def test_a_recorded_connection_is_replayed_with_its_headers(rig: Rig) -> None:
    async with rig.client(additional_headers={"Origin": "http://app.test"}) as ws:
        for text in ("one", "two"):
            await ws.send(text)
            await recv(ws)
    await until(lambda: not rig.hub.connections, "the first connection to end")
    recorded = rig.recorder.har_connection("proxy-1")
    assert [m.data for m in recorded.sent] == [b"one", b"two"]
    result = await replay_through(recorded, rig.server.url + "/chat", timing="original",
                                  wait=200 * MS)
    assert result.error is None and result.sent == 2
    assert [data for _, _, data in result.received] == [b"one", b"two"]
    assert rig.upstream.received == ["one", "two", "one", "two"]
    assert rig.upstream.requests[-1].headers["Origin"] == "http://app.test"
    assert "proxy-2" in rig.recorder.connections  # the replay went through the proxy too
