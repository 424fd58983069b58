"""The balancer's message counters (harness/wsframes.py): frames followed across any chunk
boundary, fragments and control frames told apart, SSE events and comments."""

from __future__ import annotations

import os
import random

from wsconsole.harness.wsframes import Dechunker, EventCounter, FrameCounter, Tally


def frame(opcode: int, data: bytes, fin: bool = True, mask: bool = False) -> bytes:
    """One RFC 6455 frame, written here from the RFC (not by the code under test)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if len(data) < 126:
        head += bytes([bit | len(data)])
    elif len(data) < 65536:
        head += bytes([bit | 126]) + len(data).to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + len(data).to_bytes(8, "big")
    return head + (os.urandom(4) if mask else b"") + data


def test_messages_and_controls_counted_across_random_chunk_boundaries() -> None:
    rng = random.Random(7)
    for _ in range(150):
        stream, sizes, controls = b"", [], 0
        for _ in range(rng.randint(1, 25)):
            mask = rng.random() < 0.5
            pick = rng.random()
            if pick < 0.1:
                stream += frame(0x9, b"ping", mask=mask)
                controls += 1
            elif pick < 0.25:  # a fragmented message with a pong in the middle
                first, rest = os.urandom(rng.randint(0, 200)), os.urandom(rng.randint(0, 70_000))
                stream += frame(0x1, first, fin=False, mask=mask) + frame(0xA, b"", mask=mask)
                stream += frame(0x0, rest, mask=mask)
                sizes.append(len(first) + len(rest))
                controls += 1
            else:
                data = os.urandom(rng.choice([0, 1, 125, 126, 127, 65535, 65536, 70_000]))
                stream += frame(0x2, data, mask=mask)
                sizes.append(len(data))
        tally = Tally()
        counter = FrameCounter(tally)
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 2, 3, 7, 100, 4096, 65536])
            counter.feed(stream[pos:pos + step])
            pos += step
        assert (tally.messages, tally.payload, tally.controls) == (len(sizes), sum(sizes),
                                                                   controls)


def test_server_sent_events_counted_byte_by_byte() -> None:
    stream = b": keep-alive\n\ndata: a\n\r\ndata: bb\ndata: c\r\n\r\nid: 3\ndata: x\n\n"
    tally = Tally()
    counter = EventCounter(tally)
    for index in range(len(stream)):
        counter.feed(stream[index:index + 1])
    assert tally.messages == 3  # the comment-only block is no event


def test_a_chunked_event_stream_counted_after_dechunking() -> None:
    """As aiohttp and most servers stream SSE: each write its own chunk (sizes in hex, an
    extension now and then), comments in chunks of their own, a last 0 chunk with a trailer.
    Counted on the chunk lines themselves, 40 events read as 49."""
    rng = random.Random(7)
    writes = []
    for n in range(1, 41):
        writes.append(f'id: {n}\nevent: tick\ndata: {{"n": {n}}}\n\n'.encode())
        if n % 5 == 0:
            writes.append(b": keep-alive\n\n")
    body = b"".join(f"{len(w):x}{';x=1' if i % 7 == 0 else ''}\r\n".encode() + w + b"\r\n"
                    for i, w in enumerate(writes)) + b"0\r\nX-Trailer: 1\r\n\r\n"
    for _ in range(20):
        tally = Tally()
        dechunker = Dechunker(EventCounter(tally).feed)
        at = 0
        while at < len(body):
            step = rng.randint(1, 40)
            dechunker(body[at:at + step])
            at += step
        assert tally.messages == 40
    tally = Tally()
    Dechunker(EventCounter(tally).feed)(b"zz\r\ndata: x\n\n")  # not chunked after all
    assert tally.messages == 0
