"""`wsconsole connect --sse` as a real subprocess against an aiohttp event stream started in
the test: id/event/data/retry lines, reconnect with Last-Event-ID, and a ws:// URL pointed
at the stream reported as a protocol mismatch."""

from __future__ import annotations

import asyncio

import orjson

from tests.test_connect_cli import ENV, ROOT, WAIT
from tests.test_sse import Feed, serve
from wsconsole.harness.procs import child_argv


async def run_connect(*args: str) -> tuple[int, list[dict]]:
    """Run `wsconsole connect ARGS` to its end; (exit code, JSON lines)."""
    proc = await asyncio.create_subprocess_exec(
        *child_argv("connect", *args), cwd=ROOT, env=ENV, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(WAIT * 2):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert b"Traceback" not in err, err
    return proc.returncode or 0, [orjson.loads(line) for line in out.splitlines()]


async def test_sse_json_fields_and_reconnect_with_last_event_id() -> None:
    feed = Feed(per_connection=2, retry_ms=100)
    async with serve(feed) as base:
        code, events = await run_connect("--sse", base + "/events", "--json",
                                         "--duration", "2", "-H", "X-Who: test")
    assert code == 0
    ticks = [e for e in events if e["event"] == "sse"]
    data = [e for e in ticks if e["type"] == "tick"]
    assert [e["id"] for e in data[:4]] == ["1", "2", "3", "4"]
    assert data[0]["data"] == "line one 1\nline two"
    assert any(e.get("retry") == 100 for e in ticks)
    assert feed.last_ids[:3] == [None, "2", "4"]
    waits = [e for e in events if e["event"] == "state" and e["state"] == "RECONNECTING"]
    assert waits and waits[0]["delay"] == 0.1
    summary = events[-1]
    assert summary["event"] == "summary" and summary["target"] == "sse"
    assert summary["received"] >= 6 and summary["reconnects"] >= 2


async def test_sse_gap_is_reported() -> None:
    feed = Feed(per_connection=3, skip={2})
    async with serve(feed) as base:
        _code, events = await run_connect("--sse", base + "/events", "--json", "--duration", "1")
    gaps = [e for e in events if e["event"] == "delivery" and e["kind"] == "gap"]
    assert gaps and gaps[0]["id"] == "3" and "missing 2" in gaps[0]["detail"]


async def test_websocket_url_at_an_event_stream_is_a_mismatch() -> None:
    async with serve(Feed()) as base:
        code, events = await run_connect(base.replace("http", "ws") + "/events", "--json",
                                         "--max-attempts", "0")
    assert code == 1
    [mismatch] = [e for e in events if e.get("kind") == "protocol_mismatch"]
    assert "Server-Sent Events" in mismatch["detail"] and "--sse" in mismatch["detail"]


async def test_stdout_closed_by_the_reader_ends_quietly() -> None:
    """`wsconsole connect --sse URL | head -2`: exit 0 soon, no traceback."""
    async with serve(Feed(per_connection=2, retry_ms=50)) as base:
        proc = await asyncio.create_subprocess_exec(
            *child_argv("connect", "--sse", base + "/events"), cwd=ROOT, env=ENV,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stderr is not None
            first = await asyncio.wait_for(proc.stdout.readline(), WAIT)
            assert b"CONNECTING" in first
            proc.stdout.feed_eof()
            transport = proc._transport  # type: ignore[attr-defined]
            transport.get_pipe_transport(1).close()  # the reader goes away, like `head`
            async with asyncio.timeout(WAIT):
                err = await proc.stderr.read()
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0 and b"Traceback" not in err, err
