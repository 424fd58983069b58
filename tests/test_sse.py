"""SSE target against a real aiohttp event-stream endpoint started in the test: fields shown,
reconnect honouring `retry` with Last-Event-ID, gaps on numeric ids, 204 stops, mismatch."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

from tests.servers import aiohttp_site
from tests.support import MS, SCALE, until
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptionsError
from wsconsole.core.events import DeliveryEvent, Direction, ErrorEvent, FrameRecord
from wsconsole.core.lifecycle import State, Transition
from wsconsole.core.targets.sse import IdTracker, SSEClient, SSEOptions, SSEParser


@dataclass
class Feed:
    """The endpoint's behaviour and what it saw."""

    per_connection: int = 3  # events sent before ending the stream
    retry_ms: int = 150
    skip: set[int] = field(default_factory=set)  # ids never sent (a gap)
    last_ids: list[str | None] = field(default_factory=list)
    status: int = 200
    connections: int = 0


FEED = web.AppKey("feed", Feed)


async def _plain(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def _stream(request: web.Request) -> web.StreamResponse:
    feed = request.app[FEED]
    feed.connections += 1
    last = request.headers.get("Last-Event-ID")
    feed.last_ids.append(last)
    if feed.status != 200:
        return web.Response(status=feed.status)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(f"retry: {feed.retry_ms}\n: keep-alive comment\n\n".encode())
    start = int(last) + 1 if last and last.isdigit() else 1
    sent, ident = 0, start
    while sent < feed.per_connection:
        if ident not in feed.skip:
            body = f"id: {ident}\nevent: tick\ndata: line one {ident}\ndata: line two\n\n"
            await resp.write(body.encode())
            sent += 1
        ident += 1
    await resp.write_eof()
    return resp


@dataclass
class Gate:
    """An endpoint answering with the next status of `statuses` (200: a one-event stream),
    Retry-After on refusals when set, recording the token and time of each request."""

    statuses: list[int] = field(default_factory=list)
    retry_after: str | None = None
    accept: str | None = None  # the only token answered with 200 (None: any)
    tokens: list[str | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


GATE = web.AppKey("gate", Gate)


async def _gated(request: web.Request) -> web.StreamResponse:
    gate = request.app[GATE]
    token = request.query.get("token")
    gate.tokens.append(token)
    gate.times.append(time.monotonic())
    status = gate.statuses.pop(0) if gate.statuses else 200
    if status == 200 and gate.accept is not None and token != gate.accept:
        status = 401
    if status != 200:
        headers = {"Retry-After": gate.retry_after} if gate.retry_after else {}
        return web.Response(status=status, text="refused", headers=headers)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: hello\n\n")
    await resp.write_eof()
    return resp


@contextlib.asynccontextmanager
async def serve(feed: Feed, gate: Gate | None = None) -> AsyncIterator[str]:
    """aiohttp SSE endpoints on a free loopback port (/events, /plain, and /gated with a
    `gate`); yields the base URL."""
    app = web.Application()
    app[FEED] = feed
    app.router.add_get("/events", _stream)
    app.router.add_get("/plain", _plain)
    if gate is not None:
        app[GATE] = gate
        app.router.add_get("/gated", _gated)
    async with aiohttp_site(app) as base:
        yield base


def quick() -> BackoffPolicy:
    return BackoffPolicy(initial=50 * MS, cap=200 * MS, jitter=0)


def test_parser_fields_multiline_and_retry() -> None:
    parser = SSEParser()
    events = parser.feed("retry: 2500\nid: 7\nevent: up\ndata: a\ndata: b\n\n: c\ndata: x\n\n")
    assert [(e.event, e.data, e.id, e.retry, e.id_set) for e in events] == [
        ("up", "a\nb", "7", 2500, True),
        ("message", "x", "7", None, False),  # the last id carries over, not re-set
    ]
    # lines split across chunks, CRLF endings
    assert parser.feed("id: 8\r\ndata: sp") == []
    [event] = parser.feed("lit\r\n\r\n")
    assert (event.id, event.data) == ("8", "split")


def test_id_tracker_gap_duplicate_out_of_order() -> None:
    ids = IdTracker()
    assert ids.seen("1") == []
    assert ids.seen("2") == []
    assert ids.seen("5") == [("gap", "missing 3..4 (2)")]
    assert ids.seen("5") == [("duplicate", "id 5 again")]
    assert ids.seen("4") == [("out_of_order", "id 4 after 5")]
    assert ids.seen("abc") == []
    assert (ids.gaps, ids.missing, ids.last) == (1, 2, 5)


def test_bad_options() -> None:
    with pytest.raises(ClientOptionsError, match="http"):
        SSEOptions(url="ws://127.0.0.1:1/x")
    with pytest.raises(ClientOptionsError, match="header"):
        SSEOptions(url="http://127.0.0.1:1/x", headers=[("Bad Name", "v")])


async def test_events_fields_reconnect_with_last_event_id_and_retry() -> None:
    feed = Feed(per_connection=3, retry_ms=150)
    events: list[object] = []
    async with serve(feed) as base:
        client = SSEClient(SSEOptions(url=base + "/events", headers=[("X-Test", "1")],
                                      backoff=BackoffPolicy(initial=5, cap=5, jitter=0)),
                           observers=[events.append])
        await client.start()
        try:
            await until(lambda: feed.connections >= 3)
        finally:
            await client.stop()
    frames = [e for e in events if isinstance(e, FrameRecord)]
    payloads = [orjson.loads(f.payload) for f in frames]
    assert all(f.direction is Direction.IN for f in frames)
    assert payloads[0] == {"event": "message", "data": "", "retry": 150}
    ticks = [p for p in payloads if p["event"] == "tick"]
    assert [p["id"] for p in ticks[:6]] == ["1", "2", "3", "4", "5", "6"]
    assert ticks[0]["data"] == "line one 1\nline two"
    # each reconnect resumed after the last id seen
    assert feed.last_ids[:3] == [None, "3", "6"]
    # and waited the server's retry (0.15 s), not our 5 s backoff
    waits = [t for t in events if isinstance(t, Transition) and t.state is State.RECONNECTING]
    assert waits and all(t.delay == pytest.approx(0.15) for t in waits)
    assert not [e for e in events if isinstance(e, DeliveryEvent)]
    assert client.state is State.CLOSED


async def test_gap_reported_on_numeric_ids() -> None:
    feed = Feed(per_connection=4, skip={3, 4})
    events: list[object] = []
    async with serve(feed) as base:
        client = SSEClient(SSEOptions(url=base + "/events", backoff=quick()),
                           observers=[events.append])
        await client.start()
        try:
            await until(lambda: any(isinstance(e, DeliveryEvent) for e in events))
        finally:
            await client.stop()
    [gap] = [e for e in events if isinstance(e, DeliveryEvent)][:1]
    assert (gap.kind, gap.id, gap.detail) == ("gap", "5", "missing 3..4 (2)")
    assert client.stats.gaps >= 1 and client.stats.missing >= 2


async def test_server_down_then_back_reconnects_with_last_id() -> None:
    feed = Feed(per_connection=2, retry_ms=100)
    events: list[object] = []
    async with serve(feed) as base:
        url = base + "/events"
        client = SSEClient(SSEOptions(url=url, backoff=quick()), observers=[events.append])
        await client.start()
        await until(lambda: feed.connections >= 1 and client.last_event_id == "2")
    # server gone: refusals, then we bring it back on the same port
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        await until(lambda: any(isinstance(e, ErrorEvent) and e.kind == "refused" for e in events))
        app = web.Application()
        again = Feed(per_connection=2)
        app[FEED] = again
        app.router.add_get("/events", _stream)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await until(lambda: again.connections >= 1)
        finally:
            await client.stop()
            await runner.cleanup()
    finally:
        await client.stop()
    assert again.last_ids[0] is not None and int(again.last_ids[0]) >= 2
    states = [e.state for e in events if isinstance(e, Transition)]
    assert State.RECONNECTING in states and states[-1] is State.CLOSED


async def test_204_stops_and_plain_http_is_not_a_stream() -> None:
    feed = Feed(status=204)
    events: list[object] = []
    async with serve(feed) as base:
        client = SSEClient(SSEOptions(url=base + "/events", backoff=quick()),
                           observers=[events.append])
        await client.start()
        async with asyncio.timeout(10):
            await client.wait_closed()
        assert client.state is State.CLOSED and feed.connections == 1
        assert "204" in (client.final_error or "")

        plain: list[object] = []
        other = SSEClient(SSEOptions(url=base + "/plain",
                                     backoff=BackoffPolicy(initial=0, jitter=0, max_attempts=1)),
                          observers=[plain.append])
        await other.start()
        async with asyncio.timeout(15):
            await other.wait_closed()
    kinds = [(e.kind, e.detail) for e in plain if isinstance(e, ErrorEvent)]
    assert kinds[0][0] == "handshake_rejected" and "not an event stream" in kinds[0][1]
    assert kinds[-1][0] == "gave_up"


@contextlib.asynccontextmanager
async def gated(gate: Gate) -> AsyncIterator[str]:
    """The Gate endpoint on a free loopback port; yields its URL."""
    async with serve(Feed(), gate) as base:
        yield base + "/gated"


async def run_until_closed(options: SSEOptions) -> tuple[SSEClient, list[object]]:
    """Run a client until it ends by itself (bounded); its events."""
    events: list[object] = []
    client = SSEClient(options, observers=[events.append])
    await client.start()
    try:
        async with asyncio.timeout(10 * SCALE):
            await client.wait_closed()
    finally:
        await client.stop()
    return client, events


def errors(events: list[object]) -> list[str]:
    return [e.kind for e in events if isinstance(e, ErrorEvent)]


async def test_streams_that_end_at_once_grow_the_backoff_until_max_attempts() -> None:
    """Each stream ends right after one event: not stable, so max_attempts=2 ends the
    client after three requests (with stable_after=0, the old rule, it would never end)."""
    gate = Gate()
    async with gated(gate) as url:
        _, events = await run_until_closed(SSEOptions(
            url=url, backoff=BackoffPolicy(initial=20 * MS, jitter=0, max_attempts=2)))
    assert len(gate.tokens) == 3 and errors(events)[-1] == "gave_up"
    waits = [t for t in events if isinstance(t, Transition) and t.state is State.RECONNECTING]
    assert [w.delay for w in waits] == pytest.approx([20 * MS, 40 * MS])
    assert all((w.decision or "").startswith("backoff grows") for w in waits)


async def test_sse_refusals_fresh_token_403_and_retry_after() -> None:
    """401 with a token provider: one immediate retry with a fresh token, then the stream;
    403 without a provider: stopped after one request; 503 Retry-After: 1 waited out."""
    tokens = iter(["old", "new"])
    gate = Gate(accept="new")
    async with gated(gate) as url:
        events: list[object] = []
        client = SSEClient(SSEOptions(url=url, token=lambda: next(tokens),
                                      backoff=BackoffPolicy(initial=5, jitter=0)),
                           observers=[events.append])
        await client.start()
        try:
            await until(lambda: client.stats.received >= 1, "the stream with the new token")
        finally:
            await client.stop()
    assert gate.tokens[:2] == ["old", "new"]
    retry = next(t for t in events if isinstance(t, Transition) and t.state is State.RECONNECTING)
    assert retry.delay == 0.0 and "fresh token" in (retry.decision or "")

    gate = Gate(statuses=[403])
    async with gated(gate) as url:
        client, events = await run_until_closed(SSEOptions(url=url, token="fixed"))
    assert len(gate.tokens) == 1 and errors(events) == ["handshake_rejected", "stopped"]
    assert "HTTP 403" in (client.final_error or "")

    gate = Gate(statuses=[503], retry_after="1")
    async with gated(gate) as url:
        events = []
        client = SSEClient(SSEOptions(url=url, backoff=quick()), observers=[events.append])
        await client.start()
        try:
            await until(lambda: len(gate.times) >= 2, "the request after Retry-After")
        finally:
            await client.stop()
    assert gate.times[1] - gate.times[0] >= 1.0
    retry = next(t for t in events if isinstance(t, Transition) and t.state is State.RECONNECTING)
    assert retry.delay == 1.0 and retry.decision == "HTTP 503 asked to wait (Retry-After 1 s)"
