"""The probe: verdict rules (pure), its own handshake against real servers on 127.0.0.1, and
every catalogue case against a plain `websockets` server, whose documented behaviour it must
report (1002 on protocol errors, 1007 on invalid UTF-8, 1009 over max_size, pong echo)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.probe_support import read_frames
from tests.support import MS
from wsconsole.core.frames import Opcode, encode_frame
from wsconsole.faults.catalogue import (
    NO_STATUS,
    Expectation,
    Kind,
    Layer,
    Reaction,
    get_case,
    select,
)
from wsconsole.faults.observe import Observation, Verdict, Watcher, judge
from wsconsole.faults.probe import preflight, run_case, run_cases, speaks_harness
from wsconsole.faults.target import ProbeConfig, Target, TargetError
from wsconsole.faults.wire import HandshakeError, accept_key, open_connection

CONFIG = ProbeConfig(timeout=5000 * MS, silence=300 * MS)
MAX_SIZE = 1024 * 1024


# ---------------------------------------------------------------- verdict rules (pure)

FAIL_1002 = Expectation(Reaction.FAIL, (1002,))
FAIL_1007 = Expectation(Reaction.FAIL, (1007,), lenient=(1002,))
FAST_1007 = Expectation(Reaction.FAIL, (1007,), lenient=(1002,), fast=True)


@pytest.mark.parametrize(
    ("expected", "seen", "verdict"),
    [
        (FAIL_1002, Observation(closed=True, close_code=1002, ended="eof"), Verdict.PASS),
        (FAIL_1002, Observation(closed=True, close_code=1000, ended="eof"), Verdict.FAIL),
        (FAIL_1002, Observation(ended="reset"), Verdict.LENIENT),
        (FAIL_1002, Observation(timed_out=True), Verdict.FAIL),
        (FAIL_1002, Observation(data=[(1, b"x")], echoed=True, timed_out=True), Verdict.FAIL),
        (FAIL_1007, Observation(closed=True, close_code=1002), Verdict.LENIENT),
        (FAIL_1007, Observation(closed=True, close_code=1007), Verdict.PASS),
        (FAST_1007, Observation(closed=True, close_code=1007, fast=True), Verdict.PASS),
        (FAST_1007, Observation(closed=True, close_code=1007, fast=False), Verdict.LENIENT),
        (FAST_1007, Observation(timed_out=True, fast=False), Verdict.FAIL),
        (Expectation(Reaction.ECHO, echo=b"p"), Observation(pongs=[b"p"], alive=True),
         Verdict.PASS),
        (Expectation(Reaction.ECHO, echo=b"p"), Observation(pongs=[b"q"], alive=True),
         Verdict.FAIL),
        (Expectation(Reaction.ECHO, echo=b"p"), Observation(pongs=[b"p"], closed=True,
                                                             close_code=1000), Verdict.FAIL),
        (Expectation(Reaction.ACCEPT), Observation(alive=True), Verdict.PASS),
        (Expectation(Reaction.ACCEPT), Observation(alive=False, timed_out=True), Verdict.FAIL),
        (Expectation(Reaction.IGNORE), Observation(alive=True), Verdict.PASS),
        (Expectation(Reaction.IGNORE), Observation(alive=True, data=[(1, b"?")]), Verdict.FAIL),
        (Expectation(Reaction.CLOSE, (1000,)), Observation(closed=True, close_code=1000),
         Verdict.PASS),
        (Expectation(Reaction.CLOSE, (1000,)), Observation(closed=True, close_code=1000,
                                                            data=[(1, b"after")]), Verdict.FAIL),
        (Expectation(Reaction.CLOSE, (NO_STATUS, 1000)), Observation(ended="eof"), Verdict.FAIL),
        (Expectation(Reaction.WAIT), Observation(waited=1.0), Verdict.PASS),
        (Expectation(Reaction.WAIT), Observation(data=[(1, b"?")]), Verdict.FAIL),
        (Expectation(Reaction.WAIT), Observation(closed=True, close_code=1001), Verdict.LENIENT),
        (Expectation(Reaction.APP_ERROR, error_code="bad_json"),
         Observation(app_errors=["bad_json"], data=[(1, b"{}")], alive=True), Verdict.PASS),
        (Expectation(Reaction.APP_ERROR, error_code="bad_json"),
         Observation(app_errors=["bad_envelope"], data=[(1, b"{}")], alive=True),
         Verdict.LENIENT),
        (Expectation(Reaction.APP_ERROR, error_code="bad_json"),
         Observation(data=[(1, b"{")], echoed=True, alive=True), Verdict.FAIL),
        (Expectation(Reaction.APP_ERROR, error_code="bad_json"),
         Observation(closed=True, close_code=1002), Verdict.FAIL),
    ],
)
def test_judge(expected: Expectation, seen: Observation, verdict: Verdict) -> None:
    got, reason = judge(expected, seen)
    assert got is verdict, reason
    assert reason and seen.describe()


def test_target_parsing() -> None:
    for bad in ("http://x/", "x", "ws://", "ws://h:99999/", "ws://h:0/", "ftp://h/"):
        with pytest.raises(TargetError):
            Target(bad)
    with pytest.raises(TargetError, match="header"):
        Target("ws://h/", headers=(("Bad Name", "v"),))
    t = Target("wss://example.com/feed?x=1", token="a b&c")
    assert (t.host, t.port, t.secure, t.is_loopback) == ("example.com", 443, True, False)
    assert t.resource() == "/feed?x=1&token=a%20b%26c"
    assert t.host_header() == "example.com"
    assert Target("ws://127.0.0.3:81").resource() == "/"
    assert Target("ws://[::1]:81/").host_header() == "[::1]:81"
    assert Target("ws://localhost:8/").is_loopback
    plain = t.with_scheme("ws", 80)
    assert plain.url == "ws://example.com:80/feed?x=1" and plain.token == "a b&c"
    bare = Target("ws://h/", token="t", headers=(("Cookie", "s=1"), ("X-A", "b")))
    assert bare.has_credentials
    assert not bare.without_credentials().has_credentials
    assert bare.without_credentials().headers == (("X-A", "b"),)


def test_accept_key_rfc_example() -> None:
    # RFC 6455 section 1.3.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# ---------------------------------------------------------------- servers


RECEIVED: list[str | bytes] = []  # every message the echo servers read, for assertions


async def echo(ws: ServerConnection) -> None:
    """The plain websockets echo server: reads every message (so UTF-8 is checked) and echoes."""
    try:
        async for message in ws:
            RECEIVED.append(message)
            await ws.send(message)
    except ConnectionClosed:
        pass


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    RECEIVED.clear()
    async with serve(echo, "127.0.0.1", 0, max_size=MAX_SIZE) as server:
        yield server.sockets[0].getsockname()[1]


async def raw_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> asyncio.Server:
    """A TCP server on 127.0.0.1 running handler per connection."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(guarded, "127.0.0.1", 0)


async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  accept: str | None = None) -> None:
    """Answer a WebSocket upgrade by hand (accept: override the Sec-WebSocket-Accept)."""
    head = await reader.readuntil(b"\r\n\r\n")
    key = next(
        line.split(":", 1)[1].strip()
        for line in head.decode().split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    if accept is None:
        digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        accept = base64.b64encode(digest).decode()
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
    )
    await writer.drain()


def port_of(server: asyncio.Server) -> int:
    return server.sockets[0].getsockname()[1]


# ---------------------------------------------------------------- against websockets

# websockets' documented reactions (its protocol.py and frames.py): 1002 for protocol errors
# (reserved bits, opcodes, masking, control frame rules, fragmentation, close codes), 1007 for
# invalid UTF-8 (text read by the application, close reasons), 1009 over max_size - also for a
# 64-bit length with its top bit set, read as unsigned: the catalogue's lenient alternative.
# It also checks UTF-8 only once a message is complete: invalid bytes in a first fragment
# fail the connection after the last one (lenient; failing fast is best).
WEBSOCKETS_CODE = {"length-64bit-msb": 1009}


async def test_every_frame_case_against_websockets(echo_port: int) -> None:
    """Framing, fragments and compression (websockets accepts permessage-deflate)."""
    target = Target(f"ws://127.0.0.1:{echo_port}/")
    cases = [c for c in select(layers=[Layer.RFC]) if c.kind is Kind.FRAMES]
    results = await run_cases(cases, target, CONFIG)
    assert len(results) == len(cases) >= 55
    for result in results:
        case, seen = result.case, result.observation
        exp = case.expected
        if case.id == "masked-server-frame":
            assert result.verdict is Verdict.NOT_APPLICABLE and seen is None
            continue
        assert isinstance(seen, Observation), (case.id, result.reason)
        if case.id == "utf8-invalid-first-fragment":
            assert seen.fast is False and seen.close_code == 1007
            assert result.verdict is Verdict.LENIENT, result.reason
            continue
        if exp.reaction is Reaction.FAIL:
            code = WEBSOCKETS_CODE.get(case.id, exp.codes[0])
            assert seen.closed and seen.close_code == code, (case.id, result.observed)
            expected = Verdict.LENIENT if case.id in WEBSOCKETS_CODE else Verdict.PASS
            assert result.verdict is expected, (case.id, result.observed)
        else:
            assert result.verdict is Verdict.PASS, (case.id, result.observed, result.reason)
        if exp.reaction is Reaction.ECHO:
            assert exp.echo in seen.pongs and seen.alive
        if case.id == "close-empty":
            assert seen.close_code == NO_STATUS  # websockets echoes the empty payload
        if case.id == "data-after-close":
            assert seen.data == []  # the text after the close was never echoed
    # The fragmented messages were reassembled; nothing after a close was read.
    assert "café" in RECEIVED and "one two three" in RECEIVED and "" in RECEIVED
    assert "after close" not in RECEIVED
    # And the server still serves: a normal ping after all of that.
    assert (await run_case(get_case("ping-echo"), target, CONFIG)).verdict is Verdict.PASS


async def test_harness_cases_apply_only_to_harness_targets(echo_port: int) -> None:
    target = Target(f"ws://127.0.0.1:{echo_port}/")
    assert not await speaks_harness(target, CONFIG)  # it echoes the rpc: no envelope
    skipped = await run_case(get_case("app-bad-json"), target, CONFIG)
    assert skipped.verdict is Verdict.NOT_APPLICABLE and skipped.verdict.ok
    assert "does not speak the harness protocol" in skipped.reason
    forced = await run_case(get_case("app-bad-json"), target, CONFIG, harness=True)
    assert forced.verdict is Verdict.FAIL
    assert isinstance(forced.observation, Observation) and forced.observation.echoed
    assert "echoed" in forced.observed


async def test_smaller_size_limit_is_configurable() -> None:
    async with serve(echo, "127.0.0.1", 0, max_size=1000) as server:
        target = Target(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
        config = ProbeConfig(timeout=CONFIG.timeout, max_size=1000)
        over = await run_case(get_case("message-over-limit-fragmented"), target, config)
        assert over.verdict is Verdict.PASS and over.observation.close_code == 1009  # type: ignore[union-attr]
        # With the default 1 MiB assumption the same case overshoots too: still 1009.
        assert (await run_case(get_case("payload-over-limit"), target, CONFIG)).verdict.ok


# ---------------------------------------------------------------- non-conforming peers


async def test_a_parrot_server_fails_the_probe() -> None:
    """A server that completes the handshake, then sends back every byte it gets."""

    async def parrot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)
        while data := await reader.read(65536):
            writer.write(data)

    server = await raw_server(parrot)
    async with server:
        target = Target(f"ws://127.0.0.1:{port_of(server)}/")
        results = {r.case.id: r for r in await run_cases(
            select(["rsv1-set", "ping-echo", "close-normal", "truncated-header"]), target, CONFIG
        )}
    assert results["rsv1-set"].verdict is Verdict.FAIL  # it echoed instead of failing
    assert "masked frame" in results["rsv1-set"].observed
    assert results["ping-echo"].verdict is Verdict.FAIL  # a (masked) ping back, not a pong
    # Its close 1000 comes back masked: a server must never mask, so this is no pass either.
    assert results["close-normal"].observation.close_code == 1000  # type: ignore[union-attr]
    assert results["close-normal"].verdict is Verdict.FAIL
    # One byte echoed is not a frame: the probe still sees silence on an incomplete frame.
    assert results["truncated-header"].verdict is Verdict.PASS


async def test_a_dropping_server_is_lenient() -> None:
    """A server that drops TCP on any frame: a failure without a close frame."""

    async def dropper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)
        await reader.read(1)

    server = await raw_server(dropper)
    async with server:
        target = Target(f"ws://127.0.0.1:{port_of(server)}/")
        fail = await run_case(get_case("opcode-3"), target, CONFIG)
        accept = await run_case(get_case("empty-text"), target, CONFIG)
    assert fail.verdict is Verdict.LENIENT and "without a close frame" in fail.observed
    assert accept.verdict is Verdict.FAIL


# ---------------------------------------------------------------- handshake


async def expect_handshake_error(target: Target, config: ProbeConfig = CONFIG) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        conn = await open_connection(target, config)
        await conn.close()
    return info.value


async def test_unreachable_target() -> None:
    server = await raw_server(upgrade)
    port = port_of(server)
    server.close()
    await server.wait_closed()
    err = await expect_handshake_error(Target(f"ws://127.0.0.1:{port}/"))
    assert err.kind == "unreachable" and "refused" in err.detail
    assert await preflight(Target(f"ws://127.0.0.1:{port}/"), CONFIG) == "connection refused"


async def test_plain_http_server() -> None:
    async def http_200(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        await writer.drain()

    async with await raw_server(http_200) as server:
        err = await expect_handshake_error(Target(f"ws://127.0.0.1:{port_of(server)}/"))
    assert err.kind == "http-status" and err.status == 200
    assert "not a WebSocket server" in err.detail


async def test_silent_tcp_service_is_bounded() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers, waits for the client to go

    config = ProbeConfig(timeout=300 * MS)
    async with await raw_server(silent) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        err = await expect_handshake_error(Target(f"ws://127.0.0.1:{port_of(server)}/"), config)
        assert loop.time() - started < 300 * MS + 5.0  # bounded by the timeout, not hung
    assert err.kind == "timeout"


async def test_non_http_banner() -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        await reader.read()

    async with await raw_server(banner) as server:
        err = await expect_handshake_error(Target(f"ws://127.0.0.1:{port_of(server)}/"))
    assert err.kind == "not-http" and "SSH-2.0" in err.detail


async def test_wrong_accept_key_is_refused() -> None:
    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer, accept="AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        await reader.read()

    async with await raw_server(liar) as server:
        err = await expect_handshake_error(Target(f"ws://127.0.0.1:{port_of(server)}/"))
    assert err.kind == "bad-accept"


async def test_headers_token_origin_and_subprotocol_reach_the_server() -> None:
    seen: list[tuple[str, dict[str, str]]] = []
    messages: list[str] = []

    def record(conn: ServerConnection, request):  # type: ignore[no-untyped-def]
        seen.append((request.path, {k.lower(): v for k, v in request.headers.raw_items()}))
        if request.headers.get("X-Deny"):
            return conn.respond(http.HTTPStatus.FORBIDDEN, "no\n")
        return None

    async def keep(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                messages.append(message)  # type: ignore[arg-type]
        except ConnectionClosed:
            pass

    async with serve(keep, "127.0.0.1", 0, process_request=record,
                     subprotocols=["chat.v2"]) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/feed?room=a"
        conn = await open_connection(
            Target(url, token="t1", headers=(("X-Trace", "42"),), origin="http://localhost",
                   subprotocols=("chat.v1", "chat.v2")),
            CONFIG,
        )
        assert conn.subprotocol == "chat.v2"
        await conn.close()
        proto = ("chat.v2",)  # this server insists on a subprotocol
        conn = await open_connection(
            Target(url, token="t2", token_via="header", subprotocols=proto), CONFIG
        )
        await conn.close()
        conn = await open_connection(
            Target(url, token="t3", token_via="message", subprotocols=proto), CONFIG
        )
        await conn.close()
        err = await expect_handshake_error(Target(url, headers=(("X-Deny", "1"),)))
        assert err.status == 403 and "refused" in err.detail
        err = await expect_handshake_error(Target(url))
        assert err.status == 400  # no subprotocol offered
    (path1, h1), (path2, h2), (path3, h3) = seen[:3]
    assert path1 == "/feed?room=a&token=t1"
    assert h1["x-trace"] == "42" and h1["origin"] == "http://localhost"
    assert h1["sec-websocket-protocol"] == "chat.v1, chat.v2"
    assert "authorization" not in h1
    assert path2 == "/feed?room=a" and h2["authorization"] == "Bearer t2"
    assert path3 == "/feed?room=a" and "authorization" not in h3
    assert messages == ['{"type":"auth","token":"t3"}']


async def test_wss_with_ca_file_and_insecure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with serve(echo, "127.0.0.1", 0, ssl=server_ctx) as server:
        url = f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        ok = await run_case(get_case("rsv1-set"), Target(url, ca_file=str(ca_file)), CONFIG)
        assert ok.verdict is Verdict.PASS
        insecure = await run_case(get_case("ping-echo"), Target(url, insecure=True), CONFIG)
        assert insecure.verdict is Verdict.PASS
        err = await expect_handshake_error(Target(url))  # unknown CA
        assert err.kind == "tls"
        plain = await expect_handshake_error(Target(url.replace("wss", "ws")))
        assert plain.kind in ("closed", "not-http", "http-status")


async def test_case_error_when_the_server_is_gone() -> None:
    server = await raw_server(upgrade)
    port = port_of(server)
    server.close()
    await server.wait_closed()
    result = await run_case(get_case("ping-echo"), Target(f"ws://127.0.0.1:{port}/"), CONFIG)
    assert result.verdict is Verdict.ERROR and not result.verdict.ok
    assert "connection refused" in result.observed


async def test_raw_connection_reads_server_frames(echo_port: int) -> None:
    conn = await open_connection(Target(f"ws://127.0.0.1:{echo_port}/"), CONFIG)
    try:
        conn.send(encode_frame(Opcode.PING, b"x", mask_key=b"abcd"))
        frame = await conn.next_frame(conn.loop_time + CONFIG.timeout)
        assert not isinstance(frame, str) and frame.opcode == Opcode.PONG
        assert frame.payload == b"x" and not frame.masked
        assert await conn.next_frame(conn.loop_time + 50 * MS) == "timeout"
    finally:
        await conn.close()


async def test_probe_answers_the_servers_keepalive_pings() -> None:
    # The server pings every 100 ms and closes (1011) after 500 ms without a pong.
    async with serve(echo, "127.0.0.1", 0, ping_interval=100 * MS, ping_timeout=500 * MS) as srv:
        target = Target(f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}/")
        conn = await open_connection(target, CONFIG)
        seen = Observation()
        try:
            await Watcher(conn, seen).until(lambda: seen.closed, conn.loop_time + 1500 * MS)
            assert not seen.closed and seen.ended is None
            await Watcher(conn, seen, answer_pings=False).until(
                lambda: seen.closed, conn.loop_time + CONFIG.timeout
            )
            assert seen.closed and seen.close_code == 1011  # no pongs: keepalive timeout
        finally:
            await conn.close()


async def test_a_sloppy_server_that_reads_past_the_close() -> None:
    """Answers a close with a close but goes on echoing text; accepts any close code."""
    async def sloppy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)
        async for frame in read_frames(reader):
            if frame.opcode in (Opcode.CLOSE, Opcode.TEXT):
                writer.write(encode_frame(frame.opcode, frame.payload))

    config = ProbeConfig(timeout=CONFIG.timeout, close_timeout=200 * MS)  # it never hangs up
    async with await raw_server(sloppy) as server:
        target = Target(f"ws://127.0.0.1:{port_of(server)}/")
        after = await run_case(get_case("data-after-close"), target, config)
        code = await run_case(get_case("close-code-1005"), target, config)
        normal = await run_case(get_case("close-normal"), target, config)
    assert after.verdict is Verdict.FAIL and after.reason == "sent data after the close"
    assert code.verdict is Verdict.FAIL and "closed with 1005" in code.reason
    assert normal.verdict is Verdict.PASS  # a plain close is answered correctly
