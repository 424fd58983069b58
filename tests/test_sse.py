"""SSE target against a real aiohttp event-stream endpoint started in the test: fields shown,
reconnect honouring `retry` with Last-Event-ID, gaps on numeric ids, 204 stops, mismatch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web

from tests.support import MS
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


@contextlib.asynccontextmanager
async def serve(feed: Feed) -> AsyncIterator[str]:
    """An aiohttp SSE endpoint on a free loopback port; yields its URL."""
    app = web.Application()
    app[FEED] = feed
    app.router.add_get("/events", _stream)
    app.router.add_get("/plain", _plain)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `predicate` on the loop until true; TimeoutError names nothing, the assert does."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polling plain state owned by the test
            await asyncio.sleep(0.02)


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
