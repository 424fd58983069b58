"""ReconnectingClient against real in-process websockets servers on 127.0.0.1."""

from __future__ import annotations

import json
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from tests.servers import server_port, start
from tests.support import MS, SCALE, free_port, until
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import (
    ClientError,
    ClientOptions,
    ClientOptionsError,
    QueueFull,
    ReconnectingClient,
    RpcError,
)
from wsconsole.core.events import (
    DeliveryEvent,
    Direction,
    ErrorEvent,
    FrameBatch,
    FrameRecord,
    HeartbeatEvent,
    Opcode,
)
from wsconsole.core.lifecycle import State, Transition

WAIT = 10_000 * MS


def fast(**kwargs: Any) -> BackoffPolicy:
    """A backoff scaled down for tests (50 ms base, 10 ms jitter)."""
    params = {"initial": 50 * MS, "factor": 2.0, "cap": 400 * MS, "jitter": 10 * MS}
    params.update(kwargs)
    return BackoffPolicy(**params)


class Recorder:
    """Observer keeping every event, with typed views and an awaitable condition."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def errors(self) -> list[str]:
        return [e.kind for e in self.of(ErrorEvent)]

    def states(self) -> list[State]:
        return [t.state for t in self.of(Transition)]

    def texts(self, direction: Direction) -> list[str]:
        return [
            f.payload.decode()
            for f in self.of(FrameRecord)
            if f.direction is direction and f.opcode is Opcode.TEXT
        ]

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        """tests.support.until on this recorder's events (`timeout` is already scaled)."""
        await until(predicate, "the recorded events", timeout / SCALE,
                    detail=lambda: self.events[-5:])


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[..., tuple[ReconnectingClient, Recorder]]]:
    """Make clients with a Recorder attached; all are stopped at teardown."""
    made: list[ReconnectingClient] = []

    def make(url: str, **kwargs: Any) -> tuple[ReconnectingClient, Recorder]:
        kwargs.setdefault("backoff", fast())
        kwargs.setdefault("ping_interval", None)
        recorder = Recorder()
        client = ReconnectingClient(ClientOptions(url, **kwargs), observers=[recorder])
        made.append(client)
        return client, recorder

    yield make
    for client in made:
        await client.stop()


async def test_echo_frames_states_and_normal_close(client_factory: Any) -> None:
    """Frames in and out are observed with opcode and size; stop() closes with 1000."""
    server, _ = await start("echo")
    try:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}")
        await client.start()
        await client.wait_state(State.OPEN, WAIT)
        await client.send("hello")
        await client.send(b"\x00\x01binary")
        await rec.until(lambda: len(rec.of(FrameRecord)) >= 4)
        frames = [(f.direction, f.opcode, f.size) for f in rec.of(FrameRecord)]
        assert frames == [
            (Direction.OUT, Opcode.TEXT, 5),
            (Direction.OUT, Opcode.BINARY, 8),
            (Direction.IN, Opcode.TEXT, 5),
            (Direction.IN, Opcode.BINARY, 8),
        ]
        await client.stop(1000, "bye")
        assert rec.states() == [State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED]
        closes = [f for f in rec.of(FrameRecord) if f.opcode is Opcode.CLOSE]
        assert (closes[0].direction, closes[0].close_code, closes[0].close_reason) == (
            Direction.OUT,
            1000,
            "bye",
        )
        assert closes[1].direction is Direction.IN
        assert client.stats.sent == 2 and client.stats.received == 2
        assert rec.errors() == []
    finally:
        server.close()


async def test_frame_level_reading_joins_fragments_and_refuses_bad_utf8(
    client_factory: Any,
) -> None:
    """Messages read frame by frame (no on_message): a fragmented text message counts once,
    with each fragment's record observed, and a text frame that is not UTF-8 closes 1007."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send(['{"type":', '"note",', '"n":1}'])
        await ws.send("whole")
        await ws.send(b"\xff\xfe not utf-8", text=True)
        await ws.wait_closed()

    server = await serve(handler, "127.0.0.1", 0, compression=None)
    try:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}")
        await client.start()
        await rec.until(lambda: any(f.opcode is Opcode.CLOSE and f.direction is Direction.OUT
                                    for f in rec.of(FrameRecord)))  # fmt: skip
        inbound = [(f.opcode, f.fin) for f in rec.of(FrameRecord)
                   if f.direction is Direction.IN and f.opcode is not Opcode.CLOSE]  # fmt: skip
        # websockets ends an iterable with an empty final continuation frame
        assert inbound[:5] == [(Opcode.TEXT, False), (Opcode.CONTINUATION, False),
                               (Opcode.CONTINUATION, False), (Opcode.CONTINUATION, True),
                               (Opcode.TEXT, True)]  # fmt: skip
        assert client.stats.received == 2
        close = next(f for f in rec.of(FrameRecord)
                     if f.opcode is Opcode.CLOSE and f.direction is Direction.OUT)  # fmt: skip
        assert close.close_code == 1007
    finally:
        server.close()


class BatchRecorder(Recorder):
    """A Recorder that also takes batches: every FrameBatch it was handed, whole."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[FrameBatch] = []

    def take_frames(self, batch: FrameBatch) -> None:
        self.batches.append(batch)


async def test_one_read_is_one_batch_and_every_observer_sees_wire_order(
    client_factory: Any,
) -> None:
    """Frames that arrive in one read go to a batch-taking observer as one FrameBatch per
    run of data frames (a ping in between ends a run) and to a plain observer as records,
    both in wire order with the pong the ping got; each text frame's JSON is parsed once
    and shared; the client reads every message (the error envelope is reported)."""
    sent = [(0x81, b'{"type":"note","n":1}'), (0x81, b"abc"), (0x89, b"hi"),
            (0x82, b"\x00\x01"), (0x81, b'{"type":"error","code":"x","id":"9"}')]
    raw = [bytes([head, len(payload)]) + payload for head, payload in sent]

    async def handler(ws: ServerConnection) -> None:
        ws.transport.write(b"".join(raw))  # one write: one read on the client, on loopback
        await ws.wait_closed()

    server = await serve(handler, "127.0.0.1", 0, compression=None)
    try:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}", harness=True)
        batches = BatchRecorder()
        client.subscribe(batches)
        await client.start()
        await rec.until(lambda: client.stats.received == 4)
        frames = [(f.direction, f.opcode, f.payload) for f in rec.of(FrameRecord)]
        assert frames == [
            (Direction.IN, Opcode.TEXT, b'{"type":"note","n":1}'),
            (Direction.IN, Opcode.TEXT, b"abc"),
            (Direction.IN, Opcode.PING, b"hi"),
            (Direction.OUT, Opcode.PONG, b"hi"),
            (Direction.IN, Opcode.BINARY, b"\x00\x01"),
            (Direction.IN, Opcode.TEXT, b'{"type":"error","code":"x","id":"9"}'),
        ]
        assert [b.payloads for b in batches.batches] == [
            [b'{"type":"note","n":1}', b"abc"],
            [b"\x00\x01", b'{"type":"error","code":"x","id":"9"}'],
        ]
        first, second = batches.batches
        assert first.values == [{"type": "note", "n": 1}, None]
        assert first.opcodes == [Opcode.TEXT, Opcode.TEXT]
        assert second.opcodes == [Opcode.BINARY, Opcode.TEXT]
        assert rec.of(FrameRecord)[0].json() is first.values[0]  # one parse, shared
        assert [e.kind for e in batches.of(HeartbeatEvent)] == ["ping_received"]
        assert client.stats.bytes_in == sum(len(p) for _, p in sent)  # the ping's counts too
        await rec.until(lambda: "server" in rec.errors())  # the error envelope, read
    finally:
        server.close()


async def test_heartbeat_ping_pong_with_rtt(client_factory: Any) -> None:
    """Client pings are visible, each pong carries its RTT, and latency is kept."""
    server, _ = await start("echo")
    try:
        client, rec = client_factory(
            f"ws://127.0.0.1:{server_port(server)}", ping_interval=50 * MS, ping_timeout=WAIT
        )
        await client.start()
        await rec.until(
            lambda: len([h for h in rec.of(HeartbeatEvent) if h.kind == "pong_received"]) >= 2
        )
        kinds = [h.kind for h in rec.of(HeartbeatEvent)]
        assert kinds[:4] == ["ping_sent", "pong_received", "ping_sent", "pong_received"]
        pong = next(h for h in rec.of(HeartbeatEvent) if h.kind == "pong_received")
        assert pong.rtt is not None and 0 <= pong.rtt < 1
        assert client.latency is not None
        assert await client.ping() >= 0
    finally:
        server.close()


async def test_server_pings_are_reported(client_factory: Any) -> None:
    """A ping from the server shows as ping_received, with the auto-pong logged after it."""
    server, _ = await start("echo", ping_interval=50 * MS)
    try:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}")
        await client.start()
        await rec.until(lambda: any(h.kind == "ping_received" for h in rec.of(HeartbeatEvent)))
        await rec.until(lambda: any(f.opcode is Opcode.PONG for f in rec.of(FrameRecord)))
        ops = [(f.direction, f.opcode) for f in rec.of(FrameRecord)]
        assert ops.index((Direction.IN, Opcode.PING)) < ops.index((Direction.OUT, Opcode.PONG))
    finally:
        server.close()


@pytest.mark.parametrize(
    ("code", "reason"), [(1001, "going away"), (1008, "policy violation"), (1011, "oops")]
)
async def test_server_close_codes_are_reported(client_factory: Any, code: int, reason: str) -> None:
    """The server's close code and reason reach the error event and the transition."""
    server, _ = await start("close", code=code, reason=reason)
    try:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}")
        await client.start()
        waiting = await client.wait_state(State.RECONNECTING, WAIT)
        assert waiting is not None
        assert (waiting.code, waiting.reason) == (code, reason)
        closed = [e for e in rec.of(ErrorEvent) if e.kind == "closed"]
        assert closed[0].detail == f"{code} {reason}"
        await client.wait_state(State.OPEN, WAIT)  # retried per policy
        assert client.stats.reconnects >= 1
    finally:
        server.close()


async def test_refused_retries_with_backoff_then_gives_up(client_factory: Any) -> None:
    """Refused: one error per attempt, delays following the policy, CLOSED after max."""
    client, rec = client_factory(f"ws://127.0.0.1:{free_port()}", backoff=fast(max_attempts=3))
    await client.start()
    await client.wait_closed()
    assert rec.errors() == ["refused"] * 4 + ["gave_up"]
    waits = [t for t in rec.of(Transition) if t.state is State.RECONNECTING]
    assert [w.attempt for w in waits] == [1, 2, 3]
    for w, base in zip(waits, (50 * MS, 100 * MS, 200 * MS), strict=True):
        assert base <= w.delay <= base + 10 * MS
        assert w.error == "refused: connection refused"
    assert client.state is State.CLOSED
    assert client.final_error is not None and "gave up after 3" in client.final_error


async def test_unknown_host_is_a_dns_error(client_factory: Any) -> None:
    """A name under .invalid never resolves: kind "dns", then retried."""
    client, rec = client_factory("ws://no-such-host.invalid:80/", backoff=fast(max_attempts=1))
    await client.start()
    await client.wait_closed()
    assert rec.errors() == ["dns", "dns", "gave_up"]


async def test_handshake_rejected_reports_http_status(client_factory: Any) -> None:
    """An HTTP 403 at the handshake is "handshake_rejected" with the status; without a
    token provider to ask for a fresh token the client stops (retrying cannot help)."""

    def deny(conn: ServerConnection, request: Request) -> Response:
        return conn.respond(403, "Forbidden\n")

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, process_request=deny) as server:
        client, rec = client_factory(
            f"ws://127.0.0.1:{server_port(server)}", backoff=fast(max_attempts=1)
        )
        await client.start()
        await client.wait_closed()
    assert rec.errors() == ["handshake_rejected", "stopped"]
    assert rec.of(ErrorEvent)[0].detail.startswith("HTTP 403")
    assert "no token provider" in (client.final_error or "")
    assert rec.states()[-1] is State.CLOSED and rec.of(Transition)[-1].error == client.final_error


async def test_bad_subprotocol(client_factory: Any) -> None:
    """The server refuses our subprotocol: kind "subprotocol"; the right one is negotiated."""
    server, _ = await start("echo", subprotocols=["chat.v2"])
    try:
        url = f"ws://127.0.0.1:{server_port(server)}"
        client, rec = client_factory(url, subprotocols=["chat.v1"], backoff=fast(max_attempts=1))
        await client.start()
        await client.wait_closed()
        assert rec.errors() == ["subprotocol", "stopped"]  # a 400: the same offer fails again
        good, _ = client_factory(url, subprotocols=["chat.v1", "chat.v2"])
        await good.start()
        await good.wait_state(State.OPEN, WAIT)
        assert good.subprotocol == "chat.v2"
    finally:
        server.close()


async def test_subprotocol_ignored_by_server_is_an_error(client_factory: Any) -> None:
    """Asked for a subprotocol, the server picked none: reported rather than ignored."""
    server, _ = await start("echo")
    try:
        client, rec = client_factory(
            f"ws://127.0.0.1:{server_port(server)}",
            subprotocols=["mqtt"],
            backoff=fast(max_attempts=0),
        )
        await client.start()
        await client.wait_closed()
        assert rec.errors() == ["subprotocol", "gave_up"]
    finally:
        server.close()


@pytest.fixture(scope="module")
def tls() -> tuple[trustme.CA, str, ssl.SSLContext]:
    """A throwaway CA, its PEM file path, and a server context for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    handle = tempfile.NamedTemporaryFile(suffix=".pem", delete=False)
    ca.cert_pem.write_to_path(handle.name)
    return ca, handle.name, context


async def test_tls_failure_then_ca_file_and_insecure(client_factory: Any, tls: Any) -> None:
    """Untrusted certificate: "tls" errors; with the CA file or --insecure: OPEN."""
    _, ca_path, context = tls
    server, _ = await start("echo", tls=context)
    try:
        url = f"wss://127.0.0.1:{server_port(server)}"
        client, rec = client_factory(url, backoff=fast(max_attempts=1))
        await client.start()
        await client.wait_closed()
        assert rec.errors() == ["tls", "tls", "gave_up"]
        assert "certificate" in rec.of(ErrorEvent)[0].detail.lower()
        for kwargs in ({"ca_file": ca_path}, {"insecure": True}):
            ok, ok_rec = client_factory(url, **kwargs)
            await ok.start()
            await ok.wait_state(State.OPEN, WAIT)
            await ok.send("over tls")
            await ok_rec.until(lambda r=ok_rec: r.texts(Direction.IN) == ["over tls"])
    finally:
        server.close()


async def test_offline_queue_replayed_in_order_and_bounded(client_factory: Any) -> None:
    """Sent before the server exists: queued (bounded), replayed in order once open."""
    port = free_port()
    client, rec = client_factory(f"ws://127.0.0.1:{port}", queue_limit=5)
    await client.start()
    await client.wait_state(State.RECONNECTING, WAIT)
    for i in range(5):
        await client.send(f"m{i}")
    with pytest.raises(QueueFull):
        await client.send("one too many")
    assert client.stats.queued == 5
    server, _ = await start("echo", port)
    try:
        await rec.until(lambda: len(rec.texts(Direction.IN)) == 5)
        assert rec.texts(Direction.OUT) == [f"m{i}" for i in range(5)]
        assert rec.texts(Direction.IN) == [f"m{i}" for i in range(5)]
        replayed = [d for d in rec.of(DeliveryEvent) if d.kind == "replayed"]
        assert replayed[0].detail == "5 messages"
        assert client.stats.queued == 0
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["query", "header", "message"])
async def test_token_provider_called_on_every_connect(client_factory: Any, mode: str) -> None:
    """The provider (async here) runs again on each reconnect; every mode authenticates."""
    server, _state = await start("harness", token="tok-1")
    calls = []

    async def provider() -> str:
        calls.append(mode)
        return "tok-1"

    try:
        port = server_port(server)
        client, rec = client_factory(
            f"ws://127.0.0.1:{port}/?x=1", token=provider, token_mode=mode, harness=True
        )
        await client.start()
        await client.wait_state(State.OPEN, WAIT)
        reply = await client.rpc("echo", {"n": 1})
        assert reply == {"type": "result", "id": rec_id(rec), "result": {"n": 1}}
        server.close()  # every connection gets 1001, then the listener is gone
        await server.wait_closed()
        await client.wait_state(State.RECONNECTING, WAIT)
        server, _ = await start("harness", port, token="tok-1")
        await client.wait_state(State.OPEN, WAIT)
        assert (await client.rpc("echo", 2))["result"] == 2
        assert len(calls) >= 2
    finally:
        server.close()


def rec_id(rec: Recorder) -> str:
    """The id of the last rpc sent (read back from the frame log)."""
    sent = [json.loads(t) for t in rec.texts(Direction.OUT) if '"rpc"' in t]
    return sent[-1]["id"]


async def test_wrong_token_is_closed_with_1008(client_factory: Any) -> None:
    """A bad token sent as a first message: the server's 1008 and reason are reported, and
    a fixed token would be refused again: the client stops instead of retrying blindly."""
    server, _ = await start("harness", token="right")
    try:
        client, rec = client_factory(
            f"ws://127.0.0.1:{server_port(server)}",
            token="wrong",
            token_mode="message",
            harness=True,
        )
        await client.start()
        await client.wait_closed()
        assert rec.errors() == ["closed", "stopped"]
        assert rec.of(ErrorEvent)[0].detail == "1008 bad token"
        assert (client.final_error or "").startswith("1008 bad token: the server refused")
        assert State.RECONNECTING not in rec.states()
    finally:
        server.close()


async def test_harness_publish_ack_rpc_and_errors(client_factory: Any) -> None:
    """Publish is acked and delivered; rpc returns results, errors and timeouts."""
    server, _state = await start("harness")
    try:
        url = f"ws://127.0.0.1:{server_port(server)}"
        alice, a_rec = client_factory(url, harness=True, rooms=["r1"])
        bob, b_rec = client_factory(url, harness=True, rooms=["r1"])
        for c in (alice, bob):
            await c.start()
            await c.wait_state(State.OPEN, WAIT)
        await b_rec.until(lambda: any('"joined"' in t for t in b_rec.texts(Direction.IN)))
        ident = await alice.publish("r1", {"hello": "bob"})
        await a_rec.until(lambda: any(d.kind == "ack" for d in a_rec.of(DeliveryEvent)))
        await b_rec.until(lambda: any('"message"' in t for t in b_rec.texts(Direction.IN)))
        assert alice.stats.acked == 1 and alice.outbox.unacked == []
        assert [d.id for d in a_rec.of(DeliveryEvent) if d.kind == "ack"] == [ident]
        assert (await alice.rpc("echo", [1, 2]))["result"] == [1, 2]
        with pytest.raises(RpcError) as info:
            await alice.rpc("nope")
        assert info.value.code == "unknown_method"
        with pytest.raises(TimeoutError):
            await alice.rpc("sleep", 5, timeout=100 * MS)
        assert alice._rpc == {}
        assert bob.stats.gaps == bob.stats.duplicates == 0
    finally:
        server.close()


async def test_raw_mode_refuses_harness_operations(client_factory: Any) -> None:
    """Raw mode sends frames untouched; join/publish/rpc say they need the harness."""
    client, _ = client_factory("ws://127.0.0.1:9")
    for call in (client.join("r"), client.publish("r", 1), client.rpc("echo")):
        with pytest.raises(ClientError, match="harness"):
            await call


async def test_rejoin_recovers_missed_messages(client_factory: Any) -> None:
    """After a drop, the client re-joins with since=<last seq> and gets exactly what it missed."""
    server, _state = await start("harness")
    port = server_port(server)
    url = f"ws://127.0.0.1:{port}"
    try:
        reader, rec = client_factory(url, harness=True, rooms=["news"])
        writer, w_rec = client_factory(url, harness=True)
        await reader.start()
        await writer.start()
        await writer.wait_state(State.OPEN, WAIT)
        await rec.until(lambda: any('"joined"' in t for t in rec.texts(Direction.IN)))
        for i in range(3):
            await writer.publish("news", i)
        await rec.until(lambda: reader.rooms_tracker.since("news") == 3)
        # drop only the reader's connection; publish while it is away
        reader._conn.transport.abort()  # type: ignore[union-attr]
        await reader.wait_state(State.RECONNECTING, WAIT)
        for i in range(3, 7):
            await writer.publish("news", i)
        await w_rec.until(lambda: writer.stats.acked == 7)
        await reader.wait_state(State.OPEN, WAIT)
        await rec.until(lambda: any(d.kind == "recovered" for d in rec.of(DeliveryEvent)))
        joins = [t for t in rec.texts(Direction.OUT) if '"join"' in t]
        assert joins == ['{"type":"join","room":"news"}', '{"type":"join","room":"news","since":3}']
        recovered = [d for d in rec.of(DeliveryEvent) if d.kind == "recovered"]
        assert recovered[0].room == "news" and recovered[0].detail == "4 missed"
        assert reader.rooms_tracker.since("news") == 7
        assert reader.stats.gaps == reader.stats.duplicates == reader.stats.out_of_order == 0
    finally:
        server.close()


async def test_recovery_window_exceeded_is_reported(client_factory: Any) -> None:
    """Away longer than the history keeps: told so, never silently."""
    server, _ = await start("harness", history=2)
    url = f"ws://127.0.0.1:{server_port(server)}"
    try:
        reader, rec = client_factory(url, harness=True, rooms=["r"])
        writer, w_rec = client_factory(url, harness=True)
        await reader.start()
        await writer.start()
        await writer.wait_state(State.OPEN, WAIT)
        await rec.until(lambda: any('"joined"' in t for t in rec.texts(Direction.IN)))
        await writer.publish("r", "first")
        await rec.until(lambda: reader.rooms_tracker.since("r") == 1)
        reader._conn.transport.abort()  # type: ignore[union-attr]
        await reader.wait_state(State.RECONNECTING, WAIT)
        for i in range(5):
            await writer.publish("r", i)
        await w_rec.until(lambda: writer.stats.acked == 6)
        await reader.wait_state(State.OPEN, WAIT)
        await rec.until(
            lambda: any(d.kind == "recovery_window_exceeded" for d in rec.of(DeliveryEvent))
        )
        event = next(d for d in rec.of(DeliveryEvent) if d.kind == "recovery_window_exceeded")
        assert event.room == "r" and "oldest" in (event.detail or "")
        await writer.publish("r", "after")
        await rec.until(lambda: reader.rooms_tracker.since("r") == 7)
        assert reader.stats.duplicates == 0
    finally:
        server.close()


async def test_publish_while_offline_is_resent_and_delivered_once(client_factory: Any) -> None:
    """Publishes queued offline go out after the rejoin, keep their ids, are acked once."""
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    pub, p_rec = client_factory(url, harness=True, rooms=["q"])
    await pub.start()
    await pub.wait_state(State.RECONNECTING, WAIT)
    ids = [await pub.publish("q", n, id=f"id-{n}") for n in range(3)]
    assert pub.outbox.unacked == ids
    server, state = await start("harness", port)
    try:
        await p_rec.until(lambda: pub.stats.acked == 3)
        out = p_rec.texts(Direction.OUT)
        assert '"join"' in out[0]
        assert [json.loads(t)["id"] for t in out[1:]] == ids  # once each, in order
        assert state is not None and state.seq["q"] == 3 and state.deliveries == 3
        assert pub.outbox.unacked == [] and pub.stats.queued == 0
    finally:
        server.close()


def test_options_validation() -> None:
    """Bad options fail early with a ClientOptionsError naming the problem."""
    cases = [
        ({"url": "http://x"}, "ws:// or wss://"),
        ({"url": "ws://"}, "malformed"),
        ({"url": "ws://h", "headers": [("Bad Name", "v")]}, "header name"),
        ({"url": "ws://h", "headers": [("X-A", "v\r\nInjected: 1")]}, "line break"),
        ({"url": "ws://h", "subprotocols": ["a b"]}, "subprotocol"),
        ({"url": "ws://h", "origin": "nope"}, "origin"),
        ({"url": "ws://h", "token_mode": "cookie"}, "token mode"),
        ({"url": "ws://h", "connect_timeout": 0}, "connect timeout"),
        ({"url": "ws://h", "queue_limit": -1}, "queue limit"),
        ({"url": "ws://h", "rooms": [""]}, "room"),
        ({"url": "wss://h", "ca_file": "/nonexistent.pem"}, "CA file"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(ClientOptionsError, match=needle):
            ClientOptions(**kwargs)
    assert isinstance(ClientOptionsError("x"), ValueError)
    ok = ClientOptions("wss://example.test/path?q=1", headers=[("X-Trace", "1")])
    assert ok.secure and ok.ssl_context() is not None
    assert ClientOptions("ws://h").ssl_context() is None


async def test_headers_origin_and_local_addr_reach_the_server(client_factory: Any) -> None:
    """Custom headers, Origin and the source address are applied to the handshake."""
    seen: list[tuple[Headers, Any]] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append((ws.request.headers, ws.remote_address))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        client, _ = client_factory(
            f"ws://127.0.0.1:{server_port(server)}",
            headers=[("X-Trace", "abc")],
            origin="http://localhost",
            local_addr=("127.0.0.7", 0),
        )
        await client.start()
        await client.wait_state(State.OPEN, WAIT)
        await client.stop()
    headers, remote = seen[0]
    assert headers["X-Trace"] == "abc" and headers["Origin"] == "http://localhost"
    assert headers["User-Agent"].startswith("wsconsole/")
    assert remote[0] == "127.0.0.7"


async def test_oversized_message_closes_with_1009(client_factory: Any) -> None:
    """A message over max_size: the client closes with 1009 and reconnects."""

    async def big(ws: ServerConnection) -> None:
        await ws.send("x" * 2048)
        await ws.wait_closed()

    async with serve(big, "127.0.0.1", 0) as server:
        client, rec = client_factory(f"ws://127.0.0.1:{server_port(server)}", max_size=1024)
        await client.start()
        await rec.until(lambda: any(f.close_code == 1009 for f in rec.of(FrameRecord)))
        close = next(f for f in rec.of(FrameRecord) if f.close_code == 1009)
        assert close.direction is Direction.OUT
        await rec.until(lambda: State.RECONNECTING in rec.states())
        assert client.stats.received == 0


async def test_countdown_and_observer_isolation(client_factory: Any) -> None:
    """next_attempt gives the pending retry's time and delay; a failing observer is contained;
    unsubscribe stops delivery."""
    client, rec = client_factory(f"ws://127.0.0.1:{free_port()}",
                                 backoff=fast(initial=300 * MS, cap=300 * MS, jitter=0))

    def broken(event: Any) -> None:
        raise RuntimeError("observer bug")

    client.subscribe(broken)
    await client.start()
    waiting = await client.wait_state(State.RECONNECTING, WAIT)
    assert waiting is not None and client.next_attempt is not None
    due, delay = client.next_attempt
    assert delay == pytest.approx(300 * MS) and due == pytest.approx(waiting.at + delay)
    await client.wait_state(State.CONNECTING, WAIT)
    assert client.next_attempt is None
    client.unsubscribe(broken)
    client.unsubscribe(rec)
    seen = len(rec.events)
    await client.wait_state(State.RECONNECTING, WAIT)
    assert len(rec.events) == seen
    await client.stop()
    assert client.state is State.CLOSED


async def test_lost_ack_resent_with_same_id_delivered_once(client_factory: Any) -> None:
    """The connection drops after the server took a publish but before its ack: the client
    re-sends it with the same id after reconnecting; subscribers get it exactly once."""
    server, state = await start("harness", ack_delay=300 * MS)
    assert state is not None
    url = f"ws://127.0.0.1:{server_port(server)}"
    try:
        sub, s_rec = client_factory(url, harness=True, rooms=["x"])
        pub, p_rec = client_factory(url, harness=True)
        for c in (sub, pub):
            await c.start()
            await c.wait_state(State.OPEN, WAIT)
        await s_rec.until(lambda: sub.rooms_tracker.since("x") == 0)
        ident = await pub.publish("x", "once")
        await s_rec.until(lambda: sub.rooms_tracker.since("x") == 1)  # delivered, not acked
        assert pub.outbox.unacked == [ident]
        pub._conn.transport.abort()  # type: ignore[union-attr]
        await pub.wait_state(State.RECONNECTING, WAIT)
        await p_rec.until(lambda: pub.stats.acked == 1)
        publishes = [json.loads(t) for t in p_rec.texts(Direction.OUT) if '"publish"' in t]
        assert [p["id"] for p in publishes] == [ident, ident]
        acks = [d for d in p_rec.of(DeliveryEvent) if d.kind == "ack"]
        assert [(a.id, a.seq) for a in acks] == [(ident, 1)]
        await pub.publish("x", "after", id="after")  # a duplicate would arrive before it
        await s_rec.until(lambda: sub.rooms_tracker.since("x") == 2)
        got = [json.loads(t) for t in s_rec.texts(Direction.IN) if '"message"' in t]
        assert [(m["seq"], m["id"]) for m in got] == [(1, ident), (2, "after")]
        assert state.deliveries == 2 and sub.stats.duplicates == 0
    finally:
        server.close()


async def test_bad_envelopes_reported_in_harness_mode_untouched_in_raw(
    client_factory: Any,
) -> None:
    """Harness mode: junk from the server is a "protocol" error and the connection stays.
    Raw mode: the same frames are just frames."""
    junk = ["not json", '{"type": "bogus"}', '{"type": "message", "room": "r"}', "[1]"]

    async def sender(ws: ServerConnection) -> None:
        for frame in junk:
            await ws.send(frame)
        await ws.wait_closed()

    async with serve(sender, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server_port(server)}"
        harness, h_rec = client_factory(url, harness=True)
        raw, r_rec = client_factory(url)
        await harness.start()
        await raw.start()
        await h_rec.until(lambda: h_rec.errors().count("protocol") == len(junk))
        await r_rec.until(lambda: len(r_rec.texts(Direction.IN)) == len(junk))
        assert r_rec.texts(Direction.IN) == junk and r_rec.errors() == []
        assert harness.state is State.OPEN and raw.state is State.OPEN
