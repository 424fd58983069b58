"""The frame store's decoded forms (app/decoding.py, no Qt): contexts from the connection,
learning from its first messages, "decode as", the filter on decoded trees, the export, and
frames kept only in part."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack

from wsconsole.app.framestore import FrameFilter, FrameStore
from wsconsole.core.events import Direction, FrameRecord, Opcode


def add(store: FrameStore, conn: str, payload: bytes, opcode: Opcode = Opcode.BINARY,
        direction: Direction = Direction.IN) -> int:
    return store.append(FrameRecord(conn, direction, opcode, payload))


def test_filter_and_export_see_decoded_binary_frames(tmp_path: Path) -> None:
    store = FrameStore(capacity=100)
    tick = add(store, "feed", msgpack.packb({"symbol": "ACME", "price": 101.25}))
    add(store, "feed", msgpack.packb({"symbol": "ACME", "price": 99.5}))
    bad = add(store, "feed", b"\xc1")  # not MessagePack, not anything: shown raw
    hits = store.match(FrameFilter.make(text='"price":101.25')).tolist()
    assert hits == [tick]  # the float is binary in the payload: only the tree says 101.25
    out = tmp_path / "frames.jsonl"
    store.export_jsonl(out)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["decoder"] == "msgpack"
    assert records[0]["decoded"] == {"symbol": "ACME", "price": 101.25}
    assert "decoder" not in records[bad] and records[bad]["base64"] == "wQ=="


def test_the_connections_subprotocol_claims_it_and_its_error_is_exported(tmp_path: Path) -> None:
    store = FrameStore(capacity=100)
    store.decoding.set_context("mq", url="ws://broker/mqtt", subprotocol="mqtt")
    bad = add(store, "mq", b"\x82\x02\x00\x01")  # SUBSCRIBE without a topic filter
    decoded = store.decoded(store.row(bad))
    assert decoded.decoder == "mqtt" and decoded.error == "SUBSCRIBE: no topic filter"
    out = tmp_path / "frames.jsonl"
    store.export_jsonl(out)
    record = json.loads(out.read_text())
    assert record["decoder"] == "mqtt" and record["decode_error"] == decoded.error


def test_learning_choosing_and_text_frames() -> None:
    store = FrameStore(capacity=100)
    handshake = add(store, "hub", b'{"protocol":"json","version":1}\x1e', Opcode.TEXT,
                    Direction.OUT)
    call = add(store, "hub", b'{"type":1,"target":"Send","arguments":["hi there"]}\x1e',
               Opcode.TEXT)
    plain = add(store, "other", b'{"text":"hi there"}', Opcode.TEXT)
    assert store.decoded(store.row(handshake)).summary == "handshake json v1"
    assert store.decoding.differs("hub", Opcode.TEXT)  # SignalR learned from its handshake
    assert not store.decoding.differs("other", Opcode.TEXT)  # plain JSON: search the text
    assert store.match(FrameFilter.make(text="Invocation")).tolist() == []  # not in the tree
    assert store.match(FrameFilter.make(text="hi there")).tolist() == [call, plain]
    store.decoding.choose("hub", "json")
    assert store.decoded(store.row(call)).error is not None  # the 0x1e is no JSON
    store.decoding.choose("hub", "auto")
    assert store.decoded(store.row(call)).decoder == "signalr"
    store.decoding.set_context("hub", url="ws://h/hub")  # reconnected: learning starts over
    assert store.decoded(store.row(call)).decoder == "signalr"  # content still says so
    assert not store.decoding.differs("hub", Opcode.TEXT)


def test_frames_kept_in_part_are_not_decoded() -> None:
    store = FrameStore(capacity=10, max_payload=8)
    ident = add(store, "feed", msgpack.packb({"long": "x" * 50}))
    decoded = store.decoded(store.row(ident))
    assert decoded.decoder is None and decoded.error is not None
    assert "only the first 8 bytes were kept" in decoded.error
