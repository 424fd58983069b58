"""The node's security checklist, each check's accepted and rejected side, on real processes."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from tests.nodekit import (
    TIMEOUT,
    NodeProc,
    RawClient,
    broker,
    client,
    http_get,
    join,
    module_procs,
    recv_json,
    recv_until,
    send_json,
    start_node,
)
from tests.support import SCALE, ProcessRegistry, until
from wsconsole.harness.auth import issue_token, new_secret
from wsconsole.harness.broker import Broker

__all__ = ["broker", "module_procs"]

SECRET = new_secret()
RATE = 20


def token(user: str | None = None, **kwargs: Any) -> str:
    return issue_token(SECRET, user or f"u-{uuid.uuid4().hex[:8]}", **kwargs)


@pytest.fixture(scope="module")
def nodes(broker: Broker, module_procs: ProcessRegistry) -> Iterator[list[NodeProc]]:
    """Two secured nodes: default limits except a 1 s auth deadline and a 20 msg/s rate."""
    extra = ("--auth-timeout", "1", "--rate", str(RATE), "--origin", "https://app.example")
    yield [start_node(module_procs, broker.url, n, *extra, secret=SECRET) for n in ("s1", "s2")]


class Pings(ClientConnection):
    """A client connection counting the pings it receives (and answers, as websockets does)."""

    pings = 0

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings += 1
        super().process_event(event)


async def closed_with(ws: Any) -> tuple[int | None, str | None]:
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return ws.close_code, ws.close_reason


async def works(ws: Any) -> bool:
    rid = uuid.uuid4().hex
    await send_json(ws, type="rpc", id=rid, method="echo", params="ping")
    frame, _ = await recv_until(ws, lambda f: f.get("id") == rid)
    return frame["type"] == "result"


def metric(port: int, name: str) -> float:
    _, body = http_get(port, "/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name + "{")
    )


# -- authentication --------------------------------------------------------------------
async def test_token_in_query_header_or_first_message_is_accepted(nodes: list[NodeProc]) -> None:
    url = nodes[0].url
    async with client(url, token("q-user")) as ws:
        assert await works(ws)
    async with client(url, additional_headers={"Authorization": f"Bearer {token()}"}) as ws:
        assert await works(ws)
    async with client(url) as ws:
        await send_json(ws, type="auth", token=token("msg-user"))
        await send_json(ws, type="rpc", id="w", method="whoami")
        assert (await recv_json(ws))["user"] == "msg-user"


@pytest.mark.parametrize(
    "bad",
    [
        issue_token(new_secret(), "mallory"),
        issue_token(SECRET, "late", ttl=10, now=time.time() - 60),
        "not.a.jwt",
    ],
    ids=["bad-signature", "expired", "malformed"],
)
async def test_bad_token_at_handshake_is_http_401(nodes: list[NodeProc], bad: str) -> None:
    before = metric(nodes[0].port, "wsconsole_auth_failures_total")
    with pytest.raises(InvalidStatus) as caught:
        async with client(nodes[0].url, bad):
            pass
    assert caught.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as caught:
        async with client(nodes[0].url, additional_headers={"Authorization": f"Bearer {bad}"}):
            pass
    assert caught.value.response.status_code == 401
    assert metric(nodes[0].port, "wsconsole_auth_failures_total") == before + 2


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        ({"type": "auth", "token": issue_token(new_secret(), "x")}, "bad signature"),
        ({"type": "auth", "token": issue_token(SECRET, "x", ttl=1, now=1.0)}, "expired"),
        ({"type": "join", "room": "r"}, "authentication required"),
        ({"type": "auth"}, "authentication required"),
    ],
)
async def test_bad_first_message_closes_1008(
    nodes: list[NodeProc], first: dict[str, Any], reason: str
) -> None:
    async with client(nodes[1].url) as ws:
        await ws.send(json.dumps(first))
        code, text = await closed_with(ws)
        if first["type"] == "join":
            assert (await recv_json(ws))["code"] == "auth_required"
    assert code == 1008 and reason in (text or "")


async def test_no_auth_within_the_deadline_closes_1008(nodes: list[NodeProc]) -> None:
    async with client(nodes[1].url) as ws:
        started = time.monotonic()
        code, text = await closed_with(ws)
    assert (code, text) == (1008, "authentication timeout")
    assert time.monotonic() - started >= 0.9


async def test_token_expiring_while_connected_closes_1008(nodes: list[NodeProc]) -> None:
    issued, ttl = time.time(), 1.5 * SCALE
    expires = issued + ttl
    async with client(nodes[0].url, token(ttl=ttl, now=issued)) as ws:
        assert await works(ws)
        await until(lambda: time.time() > expires, "the token's expiry", timeout=5)
        await send_json(ws, type="join", room="r")
        assert await closed_with(ws) == (1008, "token expired")


# -- origin ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "origin",
    [None, "http://localhost", "http://localhost:5173", "https://127.0.0.1:8443",
     "https://app.example"],
)  # fmt: skip
async def test_allowed_origins(nodes: list[NodeProc], origin: str | None) -> None:
    async with client(nodes[0].url, token(), origin=origin) as ws:
        assert await works(ws)


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://localhost.evil.example", "https://app.example.evil",
     "file://", "http://127.0.0.2"],
)  # fmt: skip
async def test_other_origins_get_403(nodes: list[NodeProc], origin: str) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with client(nodes[0].url, token(), origin=origin):
            pass
    assert caught.value.response.status_code == 403


# -- a handshake stricter than the library -------------------------------------------
def raw_handshake(port: int, *lines: str) -> tuple[int, dict[str, str], str]:
    """Send a request head of `lines` to a node; (status, headers, body) of its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
            data += chunk
        head, _, body = data.decode("latin-1").partition("\r\n\r\n")
        status_line, *header_lines = head.split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        while len(body) < int(headers.get("content-length", 0)) and (chunk := sock.recv(65536)):
            body += chunk.decode("latin-1")
    return int(status_line.split(" ")[1]), headers, body


def upgrade(*extra: str, version: str = "13", host: bool = True) -> list[str]:
    return [
        f"GET /?token={token()} HTTP/1.1",
        *(["Host: 127.0.0.1"] if host else []),
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        f"Sec-WebSocket-Version: {version}",
        *extra,
    ]


def test_another_websocket_version_gets_426_naming_13(nodes: list[NodeProc]) -> None:
    status, headers, _ = raw_handshake(nodes[0].port, *upgrade(version="8"))
    assert (status, headers.get("sec-websocket-version")) == (426, "13")


def test_a_handshake_without_host_gets_400(nodes: list[NodeProc]) -> None:
    status, _, body = raw_handshake(nodes[0].port, *upgrade(host=False))
    assert status == 400 and "Host" in body
    status, _, _ = raw_handshake(nodes[0].port, *upgrade())
    assert status == 101, "the same request with a Host is upgraded"


# -- limits ---------------------------------------------------------------------------
async def test_per_user_limit_is_cluster_wide(nodes: list[NodeProc]) -> None:
    user = f"heavy-{uuid.uuid4().hex[:6]}"
    held = []
    try:
        for i in range(5):
            ws = await client(nodes[i % 2].url, token(user)).__aenter__()
            held.append(ws)
            assert await works(ws)
        async with client(nodes[0].url, token(user)) as sixth:
            code, reason = await closed_with(sixth)
        assert code == 1013 and "too many connections" in (reason or "")
        async with client(nodes[1].url, token("someone-else")) as other:
            assert await works(other), "other users are not affected"
        await held.pop().close()
        deadline = time.monotonic() + TIMEOUT
        while True:  # the freed slot is released right after the close handshake
            async with client(nodes[0].url, token(user)) as again:
                try:
                    if await works(again):
                        break
                except ConnectionClosed:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
    finally:
        for ws in held:
            await ws.close()


async def test_burst_over_the_rate_is_refused_then_abuse_closes_1008(
    nodes: list[NodeProc],
) -> None:
    async with client(nodes[0].url, token()) as ws:
        for i in range(RATE):
            await send_json(ws, type="rpc", id=f"ok{i}", method="echo", params=i)
        replies = [await recv_json(ws) for _ in range(RATE)]
        assert all(r["type"] == "result" for r in replies), "the burst itself is accepted"
        for i in range(10):
            await send_json(ws, type="publish", room="r", id=f"over{i}", data=i)
        replies = [await recv_json(ws) for _ in range(10)]
        limited = [r for r in replies if r.get("code") == "rate_limited"]
        assert len(limited) >= 5
        assert {r["id"] for r in limited} <= {f"over{i}" for i in range(10)}, "ids are returned"
        for i in range(RATE * 5):
            try:
                await send_json(ws, type="rpc", id=f"x{i}", method="echo")
            except ConnectionClosed:
                break
        code, reason = await closed_with(ws)
    assert (code, reason) == (1008, "rate limit exceeded")
    assert metric(nodes[0].port, "wsconsole_rate_limited_total") >= 5


async def test_one_mebibyte_passes_and_one_more_byte_closes_1009(nodes: list[NodeProc]) -> None:
    head = json.dumps({"type": "rpc", "id": "big", "method": "echo", "params": ""})
    exact = head[:-2] + "x" * ((1 << 20) - len(head)) + '"}'
    assert len(exact.encode()) == 1 << 20
    async with client(nodes[0].url, token(), max_size=None) as ws:
        await ws.send(exact)
        reply = await recv_json(ws)
        assert reply["type"] == "result" and len(reply["data"]) == (1 << 20) - len(head)
        await ws.send(exact[:-2] + 'x"}')
        code, _ = await closed_with(ws)
    assert code == 1009
    async with client(nodes[0].url, token()) as other:
        assert await works(other)


async def test_rooms_outside_the_token_claims_are_unauthorized(nodes: list[NodeProc]) -> None:
    async with client(nodes[0].url, token(rooms=["public-*"])) as ws:
        assert (await join(ws, "public-1"))["seq"] >= 0
        await send_json(ws, type="join", room="secret")
        err = await recv_json(ws)
        assert (err["type"], err["code"], err["room"]) == ("error", "unauthorized", "secret")
        await send_json(ws, type="publish", room="secret", id="p1", data=1)
        err = await recv_json(ws)
        assert (err["code"], err["id"]) == ("unauthorized", "p1")
        await send_json(ws, type="publish", room="public-1", id="p2", data=2)
        ack, _ = await recv_until(ws, lambda f: f["type"] == "ack")
        assert ack["id"] == "p2"


async def test_soft_limit_refuses_with_1013(broker: Broker, procs: ProcessRegistry) -> None:
    node = start_node(procs, broker.url, "cap", "--soft-limit", "2", secret=SECRET)
    async with client(node.url, token()) as a, client(node.url, token()) as b:
        assert await works(a) and await works(b)
        async with client(node.url, token()) as c:
            code, reason = await closed_with(c)
        assert code == 1013 and "capacity" in (reason or "")
    async with client(node.url, token()) as d:
        assert await works(d), "room again once others left"


async def test_heartbeat_drops_a_silent_peer_and_keeps_a_live_one(
    broker: Broker, procs: ProcessRegistry
) -> None:
    node = start_node(
        procs, broker.url, "hb", "--ping-interval", "0.3", "--ping-timeout", "0.3", secret=SECRET
    )
    silent = RawClient(node.port, f"/?token={token()}")
    try:
        assert silent.status == 101
        opcode, _ = await asyncio.to_thread(silent.recv_frame)
        assert opcode == 0x9, "the node pings"
        code = await asyncio.to_thread(silent.recv_close)
        assert code in (1011, None), "no pong: closed (keepalive ping timeout)"
    finally:
        silent.close()
    async with client(node.url, token(), ping_interval=None, create_connection=Pings) as live:
        await until(lambda: live.pings >= 3, "three pings from the node", detail=lambda: live.pings)
        assert await works(live), "websockets answers pings: still connected"


async def test_invalid_utf8_closes_1007_binary_is_an_error(nodes: list[NodeProc]) -> None:
    raw = RawClient(nodes[1].port, f"/?token={token()}")
    try:
        raw.send_frame(0x2, b'{"type":"rpc"}')
        opcode, payload = raw.recv_frame()
        assert opcode == 0x1 and json.loads(payload)["code"] == "bad_envelope"
        raw.send_frame(0x1, b'{"type":"join","room":"\xff\xfe"}')
        assert raw.recv_close() == 1007
    finally:
        raw.close()
    async with client(nodes[1].url, token()) as other:
        assert await works(other)


async def test_invalid_utf8_in_a_first_fragment_fails_before_the_last(
    nodes: list[NodeProc],
) -> None:
    """Autobahn 6.4.x: the node fails at the fragment that cannot be UTF-8 (websockets
    alone waits for the final fragment, which this client never sends)."""
    raw = RawClient(nodes[1].port, f"/?token={token()}")
    try:
        raw.send_frame(0x1, b'{"type":"join","room":"ok', fin=False)
        raw.send_frame(0x0, b"\xce\xba\xf4", fin=False)  # still a valid prefix
        raw.send_frame(0x0, b"\x90", fin=False)  # F4 90: beyond U+10FFFF, never UTF-8
        assert raw.recv_close() == 1007
    finally:
        raw.close()


async def test_a_close_between_fragments_is_answered_with_its_code(
    nodes: list[NodeProc],
) -> None:
    """Autobahn 7.1.5: a close frame may come between two fragments (RFC 6455 5.4); the
    node answers it (websockets alone fails the connection with 1002)."""
    raw = RawClient(nodes[1].port, f"/?token={token()}")
    try:
        raw.send_frame(0x1, b"frag", fin=False)
        raw.send_frame(0x8, b"\x03\xe8bye")
        assert raw.recv_close() == 1000
    finally:
        raw.close()


async def test_echo_endpoint_sends_every_message_back_under_the_same_admission(
    nodes: list[NodeProc],
) -> None:
    url = nodes[0].url.rstrip("/") + "/echo"
    async with client(url, token()) as ws:
        await ws.send("caf\u00e9 {not json")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "caf\u00e9 {not json"
        await ws.send(b"\x00\xffbinary")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x00\xffbinary"
        burst = RATE + 5  # over the node's 20 msg/s: refused as on the protocol path
        for n in range(burst):
            await ws.send(f"m{n}")
        replies = [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in range(burst)]
        refused = [r for r in replies if "rate_limited" in r]
        assert refused and len(refused) < burst, replies
    with pytest.raises(InvalidStatus) as refused_token:
        async with client(url, "not-a-token"):
            pass
    assert refused_token.value.response.status_code == 401
    async with client(url) as anonymous:  # no token: a first auth message is required
        await anonymous.send("hello")
        code, _ = await closed_with(anonymous)
        assert code == 1008


async def test_ghost_connections_of_a_killed_node_expire(
    broker: Broker, procs: ProcessRegistry
) -> None:
    extra = ("--per-user", "1", "--presence-ttl", "3")
    k1 = start_node(procs, broker.url, "k1", *extra, secret=SECRET)
    k2 = start_node(procs, broker.url, "k2", *extra, secret=SECRET)
    user = f"ghost-{uuid.uuid4().hex[:6]}"
    ws = await client(k1.url, token(user)).__aenter__()
    assert await works(ws)
    k1.proc.kill()
    killed = time.monotonic()
    async with client(k2.url, token(user)) as refused:
        code, _ = await closed_with(refused)
    if time.monotonic() - killed < 1.5:  # the ghost entry lives 2-3 s after the kill
        assert code == 1013
    while True:
        async with client(k2.url, token(user)) as retry:
            try:
                if await works(retry):
                    break
            except ConnectionClosed:
                assert time.monotonic() - killed < TIMEOUT
                await asyncio.sleep(0.2)
    assert time.monotonic() - killed >= 1.5
    ws.transport.abort()
