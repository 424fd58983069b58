"""HAR import (Chrome DevTools format), export, round-trip through the Frames store, bad
input, and replay of a connection's sent messages against a real WebSocket server."""

from __future__ import annotations

import asyncio
import base64
import itertools
from pathlib import Path

import orjson
import pytest

from tests import servers
from tests.support import MS, SCALE, until
from wsconsole.app.framestore import FrameStore
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.events import Direction, FrameRecord, Opcode
from wsconsole.core.lifecycle import State
from wsconsole.har import HarError, dump_har, export_har, load_har, parse_har, replay, to_records

FIXTURE = Path(__file__).parent / "fixtures" / "chrome_websocket.har"


def test_chrome_fixture_imports_with_counts_and_directions() -> None:
    conns = load_har(FIXTURE)
    assert [c.url for c in conns] == [
        "ws://localhost:8080/chat?room=lobby",
        "ws://localhost:8080/socket.io/?EIO=4&transport=websocket",
    ]
    chat, sio = conns
    assert len(chat.messages) == 8 and len(sio.messages) == 5
    assert [m.direction.value for m in chat.messages] == [
        "out", "in", "out", "in", "in", "out", "in", "out"]
    assert [m.opcode for m in chat.messages].count(Opcode.BINARY) == 2
    assert chat.messages[5].data == bytes([0, 1, 2, 3, 4, 5, 255])
    assert chat.messages[6].data == bytes.fromhex("deadbeef")
    assert chat.status == 101 and ("Origin", "http://localhost:8080") in chat.request_headers
    assert chat.started == pytest.approx(1796030102.290)
    assert len(chat.sent) == 4 and chat.index == 1 and sio.index == 3
    records = to_records(chat)
    assert [r.wall for r in records] == [m.time for m in chat.messages]
    assert {r.conn for r in records} == {"har1:localhost:8080/chat"}
    assert records[0].payload == b'{"type":"join","room":"lobby"}'


def test_export_then_import_round_trips_through_the_frame_store(tmp_path: Path) -> None:
    store = FrameStore()
    for conn in load_har(FIXTURE):
        for record in to_records(conn):
            store.append(record)
    # control frames are not HAR messages; they must not break the export
    store.append(FrameRecord("har1:localhost:8080/chat", Direction.IN, Opcode.PING, b"x"))
    rows = list(store.rows(range(store.first_id, store.next_id)))
    out = tmp_path / "session.har"
    written = dump_har(rows, out, urls={"har1:localhost:8080/chat": "ws://localhost:8080/chat"})
    assert written == 13
    doc = orjson.loads(out.read_bytes())
    assert doc["log"]["version"] == "1.2" and doc["log"]["creator"]["name"] == "wsconsole"
    entry = doc["log"]["entries"][0]
    assert entry["_resourceType"] == "websocket" and entry["response"]["status"] == 101
    assert entry["startedDateTime"].endswith("Z")
    back = parse_har(out.read_bytes())
    original = load_har(FIXTURE)
    assert [len(c.messages) for c in back] == [8, 5]
    assert back[0].url == "ws://localhost:8080/chat"
    for got, want in zip(back, original, strict=True):
        assert [(m.direction, m.opcode, m.data) for m in got.messages] == [
            (m.direction, m.opcode, m.data) for m in want.messages]
        assert [m.time for m in got.messages] == pytest.approx([m.time for m in want.messages])


def test_export_of_live_records_encodes_binary_as_base64() -> None:
    frames = [FrameRecord("c", Direction.OUT, Opcode.TEXT, "héllo".encode()),
              FrameRecord("c", Direction.IN, Opcode.BINARY, b"\x00\xff")]
    [entry] = export_har(frames)["log"]["entries"]
    assert entry["request"]["url"] == "ws://c/"
    assert [(m["type"], m["opcode"], m["data"]) for m in entry["_webSocketMessages"]] == [
        ("send", 1, "héllo"), ("receive", 2, base64.b64encode(b"\x00\xff").decode())]


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty"),
    ("this is not json", "not JSON"),
    (FIXTURE.read_text()[:900], "truncated"),
    ('{"entries": []}', "not a HAR file"),
    ('{"log": {"entries": {}}}', "log.entries"),
    ('{"log": {"entries": [{"request": {"url": "https://x/"}, "_resourceType": "xhr"}]}}',
     "no WebSocket entries"),
    ('{"log": {"entries": [{"_resourceType": "websocket", "request": {"url": "ws://x/"},'
     ' "_webSocketMessages": [{"type": "sent", "time": 1, "opcode": 1, "data": ""}]}]}}',
     "entry 0, message 0 has type 'sent'"),
    ('{"log": {"entries": [{"_resourceType": "websocket", "request": {"url": "ws://x/"},'
     ' "_webSocketMessages": [{"type": "send", "time": 1, "opcode": 2, "data": "%%%"}]}]}}',
     "not valid base64"),
])
def test_bad_input_names_the_problem(text: str, problem: str) -> None:
    with pytest.raises(HarError, match=problem.replace("(", r"\(")):
        parse_har(text)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(HarError, match="cannot read"):
        load_har(tmp_path / "missing.har")


async def _echo_client(port: int, log: list[object]) -> ReconnectingClient:
    client = ReconnectingClient(
        ClientOptions(url=f"ws://127.0.0.1:{port}", backoff=BackoffPolicy(initial=0.1, jitter=0),
                      ping_interval=None),
        name="replay", observers=[log.append])
    await client.start()
    assert await client.wait_state(State.OPEN, 10 * SCALE) is not None
    return client


@pytest.mark.parametrize("timing", ["fast", "original"])
async def test_replay_sent_messages_against_a_real_server(timing: str) -> None:
    [chat, _sio] = load_har(FIXTURE)
    server, _ = await servers.start("echo")
    log: list[object] = []
    try:
        client = await _echo_client(servers.server_port(server), log)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            # the recording spans 2.04 s between first and last send; 4x faster ~ 0.51 s
            count = await replay(chat, client.send, timing=timing, speed=4.0)
            took = loop.time() - started
            await until(lambda: sum(1 for e in log if isinstance(e, FrameRecord)
                                    and e.direction is Direction.IN) >= 4,
                        "the four replayed messages echoed back", 10)
        finally:
            await client.stop()
    finally:
        server.close()
        await server.wait_closed()
    assert count == 4
    sent = [e for e in log if isinstance(e, FrameRecord) and e.direction is Direction.OUT
            and e.opcode in (Opcode.TEXT, Opcode.BINARY)]
    assert [(f.opcode, f.payload) for f in sent] == [(m.opcode, m.data) for m in chat.sent]
    echoed = [e.payload for e in log if isinstance(e, FrameRecord)
              and e.direction is Direction.IN and e.opcode in (Opcode.TEXT, Opcode.BINARY)]
    assert echoed == [m.data for m in chat.sent]
    if timing == "original":
        assert took >= (2.039 / 4.0) - 20 * MS
        gaps = [b.wall - a.wall for a, b in itertools.pairwise(sent)]
        assert gaps[0] == pytest.approx((1796030102.810 - 1796030102.301) / 4, abs=0.1)
    with pytest.raises(ValueError, match="timing"):
        await replay(chat, client.send, timing="slow")
