"""The node's server connection (harness/serverconn.py) on real sockets: what the handshake
needed is let go of without losing a byte of what the client sends, whether the parser
waits between frames or is in the middle of one, and its list-based queues behave as the
library's deques."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

from tests.support import SCALE, until
from wsconsole.core.frames import encode_frame, parse_frame
from wsconsole.harness.serverconn import (
    HANDSHAKE_DONE,
    ShortQueue,
    StrictConnection,
    release_handshake,
)

WAIT = 5 * SCALE


@asynccontextmanager
async def echo_server(
    ready: asyncio.Event,
) -> AsyncIterator[tuple[int, list[ServerConnection], list[Request]]]:
    """A server that waits for `ready`, releases the handshake, then echoes messages back;
    yields its port, its connections and the requests they were opened with."""
    accepted: list[ServerConnection] = []
    requests: list[Request] = []

    async def handler(ws: ServerConnection) -> None:
        accepted.append(ws)
        assert ws.request is not None
        requests.append(ws.request)
        await ready.wait()
        release_handshake(ws)
        async for message in ws:
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 0, create_connection=StrictConnection,
                     ping_interval=None) as server:  # fmt: skip
        yield server.sockets[0].getsockname()[1], accepted, requests


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client past the handshake (the token in the path, as the node's clients)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /?token=secret-token HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .encode()
    )  # fmt: skip
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def read_text(reader: asyncio.StreamReader) -> bytes:
    """The payload of the next frame from the server."""
    buffer = b""
    while (parsed := parse_frame(buffer)) is None:
        buffer += await asyncio.wait_for(reader.read(4096), WAIT)
    return parsed[0].payload


async def test_released_between_frames_the_parser_is_fresh_and_nothing_is_kept() -> None:
    ready = asyncio.Event()
    async with echo_server(ready) as (port, accepted, requests):
        reader, writer = await open_raw(port)
        try:
            await until(lambda: accepted, "the connection")
            old_parser = weakref.ref(accepted[0].protocol.parser)
            request = weakref.ref(requests.pop())
            ready.set()
            writer.write(encode_frame(0x1, b"hello", mask_key=os.urandom(4)))
            assert await read_text(reader) == b"hello"
            ws = accepted[0]
            assert ws.request is HANDSHAKE_DONE and ws.response is None
            gc.collect()
            assert old_parser() is None and request() is None, "the request is let go of"
        finally:
            writer.close()


async def test_released_in_the_middle_of_a_frame_the_frame_arrives_whole() -> None:
    ready = asyncio.Event()
    async with echo_server(ready) as (port, accepted, requests):
        reader, writer = await open_raw(port)
        try:
            await until(lambda: accepted, "the connection")
            frame = encode_frame(0x1, b"in two pieces", mask_key=os.urandom(4))
            writer.write(frame[:4])  # the header and part of the mask: the parser is mid-frame
            await writer.drain()
            ws = accepted[0]
            # the parser took the 2-byte header and waits for the rest of the masking key
            await until(lambda: len(ws.protocol.reader.buffer) == 2, "the first 4 bytes")
            parser = ws.protocol.parser
            ready.set()
            await until(lambda: ws.request is HANDSHAKE_DONE, "released")
            assert ws.protocol.parser is parser, "a parser in the middle of a frame is kept"
            assert requests[0].path == "" and not requests[0].headers, "its request emptied"
            writer.write(frame[4:])
            assert await read_text(reader) == b"in two pieces"
        finally:
            writer.close()


def test_short_queue_takes_and_puts_back_as_a_deque_does() -> None:
    queue: ShortQueue[int] = ShortQueue()
    queue.extend([1, 2])
    queue.append(3)
    assert queue.popleft() == 1
    queue.extendleft(reversed([7, 8]))  # the library's put_back
    assert list(queue) == [7, 8, 2, 3]
    queue.extendleft([5, 6])
    assert list(queue) == [6, 5, 7, 8, 2, 3]
    queue.clear()
    try:
        queue.popleft()
    except IndexError:
        pass
    else:
        raise AssertionError("popleft of an empty queue raises IndexError, as a deque's")
