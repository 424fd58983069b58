"""FrameStore: bounded ring, harness fields, filters, export, memory for 1M frames."""

from __future__ import annotations

import json
import os
import random
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsconsole.app import framestore, payloads
from wsconsole.app.framestore import FrameFilter, FrameStore
from wsconsole.core.events import Direction, FrameBatch, FrameRecord, Opcode, read_text


def _frame(i: int, direction: Direction = Direction.IN, **kw: object) -> FrameRecord:
    payload = kw.pop("payload", None)
    if payload is None:
        payload = json.dumps({"type": "message", "room": f"r{i % 3}", "seq": i, "node": "n1",
                              "data": f"hello {i}"}).encode()
    return FrameRecord(conn="c1", direction=direction, opcode=kw.pop("opcode", Opcode.TEXT),
                       payload=payload, **kw)  # type: ignore[arg-type]


def test_ring_drops_oldest_and_counts() -> None:
    store = FrameStore(capacity=10)
    for i in range(25):
        store.append(_frame(i))
    assert len(store) == 10
    assert store.dropped == 15
    assert store.first_id == 15
    assert store.row(15).seq == 15
    assert store.row(24).seq == 24
    with pytest.raises(IndexError):
        store.row(14)


def test_harness_fields_and_close_frames() -> None:
    store = FrameStore(capacity=100)
    a = store.append(_frame(7))
    b = store.append(_frame(0, opcode=Opcode.CLOSE, payload=b"\x03\xe9bye",
                            close_code=1001, close_reason="bye"))
    c = store.append(_frame(0, payload=b"not json {"))
    row = store.row(a)
    assert (row.room, row.seq, row.node) == ("r1", 7, "n1")
    assert store.row(b).close_code == 1001 and store.row(b).close_reason == "bye"
    assert store.row(c).room is None and store.row(c).seq is None
    assert not row.notice


def test_notices_that_messages_will_not_come_are_flagged() -> None:
    store = FrameStore(capacity=10)
    frames = [
        b'{"type":"joined","room":"r","epoch":"e2","seq":4,"reset":true}',
        b'{"type":"error","code":"recovery_window_exceeded","room":"r","first":3,"seq":9}',
        b'{"type":"joined","room":"r","epoch":"e2","seq":4}',
        b'{"type":"error","code":"rate_limited"}',
    ]
    ids = [store.append(_frame(0, payload=payload)) for payload in frames]
    assert [store.row(i).notice for i in ids] == [True, True, False, False]


def test_names_beyond_the_cap_read_as_other() -> None:
    """Room and node names are interned into 16-bit columns: past the cap, a new name reads
    as "(other)" (text filters find it so) and earlier ones keep theirs."""
    store = FrameStore(capacity=70_000)
    for i in range(framestore._MAX_NAMES + 10):
        store.append(_frame(i, payload=b'{"type":"message","room":"r%d","seq":%d}' % (i, i)))
    last = store.next_id - 1
    assert store.row(5).room == "r5"
    assert (store.row(last).room, store.row(last).seq) == ("(other)", last)
    assert last in store.match(FrameFilter.make(text="(other)")).tolist()


def test_payload_budget_bounds_memory() -> None:
    store = FrameStore(capacity=1000, max_payload=100, max_payload_bytes=1000)
    for i in range(50):
        store.append(_frame(i, payload=b"x" * 500))
    assert store.payload_bytes <= 1000
    assert len(store) == 10  # 100 bytes kept per frame
    row = store.row(store.next_id - 1)
    assert row.size == 500 and len(row.payload) == 100 and row.truncated


def test_filters_narrow_across_the_wrap() -> None:
    store = FrameStore(capacity=64)
    for i in range(100):
        store.append(_frame(i, Direction.OUT if i % 2 else Direction.IN))
    store.append(_frame(0, opcode=Opcode.PING, payload=b""))
    everything = store.match(FrameFilter.make())
    assert everything.tolist() == list(range(store.first_id, store.next_id))
    outs = store.match(FrameFilter.make(directions=[Direction.OUT]))
    assert all(store.row(i).direction == Direction.OUT for i in outs)
    assert len(outs) == 32
    text = store.match(FrameFilter.make(text="HELLO 9"))
    assert {store.row(i).seq for i in text} == {90, 91, 92, 93, 94, 95, 96, 97, 98, 99}
    rx = store.match(FrameFilter.make(text=r'"seq": 4\d,', regex=True))
    assert {store.row(i).seq for i in rx} == {40 + k for k in range(10)}
    pings = store.match(FrameFilter.make(opcodes=[Opcode.PING]))
    assert len(pings) == 1
    with pytest.raises(ValueError, match="invalid regular expression"):
        FrameFilter.make(text="(", regex=True)
    for evil in ("(a+)+$", r"(\w*)*x", "(x+x+)+y", "(a{1,5})*b"):
        with pytest.raises(ValueError, match="nested quantifiers"):
            FrameFilter.make(text=evil, regex=True)
    for fine in (r"(ab)+", r"a+b*", r"\(a+\)+", "(a|b)*c"):
        FrameFilter.make(text=fine, regex=True)
    FrameFilter.make(text="(a+)+", regex=False)  # plain text is escaped, never a pattern


def test_a_scope_narrows_to_connections_and_a_time_range() -> None:
    """What clicking a Timeline lane or fault asks for: some connections, some seconds."""
    store = FrameStore(capacity=64)
    for i in range(100):
        conn = "swarm/c0001" if i % 4 == 0 else "console"
        store.append(FrameRecord(conn, Direction.IN, Opcode.TEXT, b"x", wall=1000.0 + i))
    scope = FrameFilter.make(conns=["swarm/c0001"], since=1050.0, until=1070.0)
    assert not scope.is_all
    assert [store.row(i).wall for i in store.match(scope)] == [1052.0, 1056.0, 1060.0,
                                                               1064.0, 1068.0]
    assert len(store.match(FrameFilter.make(since=1090.0))) == 10
    assert len(store.match(FrameFilter.make(conns=["nobody"]))) == 0


def test_export_jsonl(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = FrameStore(capacity=100)
    for i in range(5):
        store.append(_frame(i))
    store.append(_frame(0, opcode=Opcode.BINARY, payload=b"\x00\xff"))
    out = tmp_path / "frames.jsonl"
    assert store.export_jsonl(out) == 6
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["room"] == "r0" and lines[0]["opcode"] == "text"
    assert lines[-1]["base64"] == "AP8="


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_one_million_frames_bounded_memory() -> None:
    """1,000,000 frames fit, the 1,000,001st drops the oldest; memory per frame reported."""
    before = _rss_mib()
    store = FrameStore()
    frames = [_frame(i) for i in range(1000)]
    for i in range(1_000_000):
        store.append(frames[i % 1000])
    grown = _rss_mib() - before
    assert len(store) == 1_000_000 and store.dropped == 0
    store.append(frames[0])
    assert len(store) == 1_000_000 and store.dropped == 1
    assert store.first_id == 1
    column_bytes = sum(a.nbytes for a in store._column_arrays())
    held = store._arena.held_bytes  # the payloads, in compressed chunks
    per_frame = (column_bytes + held) / 1_000_000
    print(f"\n1M frames: {per_frame:.0f} B/frame ({column_bytes / 2**20:.1f} MiB of columns, "
          f"{held / 2**20:.1f} MiB of payload chunks for {store.payload_bytes / 2**20:.1f} MiB "
          f"of payloads); RSS grew {grown:.0f} MiB")
    assert per_frame < 64
    assert held < store.payload_bytes / 4  # alike JSON frames compress
    # a flood of new frames does not grow it further: the ring is full and reuses slots
    again = _rss_mib()
    for i in range(200_000):
        store.append(frames[i % 1000])
    assert _rss_mib() - again < 32


@settings(max_examples=150, deadline=None)
@given(
    frames=st.lists(st.tuples(st.integers(0, 300), st.booleans()), max_size=120),
    capacity=st.integers(1, 12),
    budget=st.integers(40, 1500),
    max_payload=st.sampled_from([None, 100]),
    stage=st.integers(1, 6),
)
def test_staged_appends_keep_what_appending_one_by_one_keeps(
    frames: list[tuple[int, bool]], capacity: int, budget: int, max_payload: int | None,
    stage: int,
) -> None:
    """`append` stages and `flush` writes in batches (readers in between, or STAGE_LIMIT
    frames): the store keeps exactly the frames a one-by-one ring would, with their ids,
    payloads, sizes, close reasons and the dropped count. Tiny arena chunks, so payloads are
    read back from compressed chunks (alike bytes), raw ones (random bytes) and the open one,
    and chunks no kept frame uses are released."""
    store = FrameStore(capacity=capacity, max_payload=max_payload, max_payload_bytes=budget)
    kept: list[tuple[int, bytes, int, str | None]] = []  # id, kept payload, size, reason
    with patch.object(framestore, "STAGE_LIMIT", stage), patch.object(payloads, "CHUNK", 64):
        for i, (size, read) in enumerate(frames):
            alike = bytes([65 + i % 26]) * size
            payload = random.Random(i).randbytes(size) if i % 3 == 0 else alike
            reason = f"bye {i}" if size % 7 == 0 else None
            record = (FrameRecord("c", Direction.IN, Opcode.CLOSE, payload, close_code=1000,
                                  close_reason=reason)
                      if reason else FrameRecord("c", Direction.IN, Opcode.BINARY, payload))
            assert store.append(record) == i
            kept.append((i, payload if max_payload is None else payload[:max_payload], size,
                         reason))
            if len(kept) > capacity:
                kept.pop(0)
            while sum(len(k[1]) for k in kept) > budget and len(kept) > 1:
                kept.pop(0)
            if read:
                assert store.match(FrameFilter.make()).tolist() == [k[0] for k in kept]
    rows = list(store.rows(range(store.first_id, store.next_id)))
    assert [(r.id, r.payload, r.size, r.close_reason) for r in rows] == kept
    assert len(store) == len(kept)
    assert store.dropped == len(frames) - len(kept)
    assert store.payload_bytes == sum(len(k[1]) for k in kept)
    if kept:
        assert store.first_id == kept[0][0]
    assert store._arena.held_bytes <= store.payload_bytes + 2 * (64 + 300)


def test_a_batch_is_stored_as_its_records_appended_one_by_one() -> None:
    """`take_frames` (a read's frames at once, their JSON parsed by the batch) keeps what
    appending the same frames as records keeps: ids, harness fields, notices, truncation,
    sizes and payloads, alongside frames appended one by one."""
    payloads_in = [
        json.dumps({"type": "message", "room": "r1", "seq": 7, "node": "n2"}).encode(),
        json.dumps({"type": "joined", "room": "r1", "seq": 0, "reset": True}).encode(),
        b"plain text",
        json.dumps({"type": "message", "room": "r2", "seq": 1, "pad": "x" * 200}).encode(),
        b"\x00\x01\x02",
        b"[1, 2]",
    ]
    opcodes = [Opcode.TEXT] * 4 + [Opcode.BINARY, Opcode.TEXT]
    batch = FrameBatch("c1")
    for payload, opcode in zip(payloads_in, opcodes, strict=True):
        batch.payloads.append(payload)
        batch.opcodes.append(opcode)
        batch.values.append(read_text(payload) if opcode is Opcode.TEXT else None)
    by_batch, one_by_one = FrameStore(max_payload=100), FrameStore(max_payload=100)
    first = _frame(0, Direction.OUT)
    for store in (by_batch, one_by_one):
        store.append(first)
    by_batch.take_frames(batch)
    for record in batch.records():
        one_by_one.append(FrameRecord(record.conn, record.direction, record.opcode,
                                      record.payload, wall=record.wall))  # parsed afresh
    rows = [list(s.rows(range(s.first_id, s.next_id))) for s in (by_batch, one_by_one)]
    assert rows[0] == rows[1]
    assert [(r.room, r.seq, r.node, r.notice, r.truncated) for r in rows[0][1:]] == [
        ("r1", 7, "n2", False, False), ("r1", 0, None, True, False),
        (None, None, None, False, False), (None, None, None, False, True),
        (None, None, None, False, False), (None, None, None, False, False),
    ]
    assert by_batch.decoding.learned == one_by_one.decoding.learned
