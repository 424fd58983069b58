"""The node's server connection (harness/serverconn.py) on real sockets: what the handshake
needed is let go of without losing a byte of what the client sends, whether the parser
waits between frames or is in the middle of one, and its list-based queues behave as the
library's deques."""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

from tests.nodekit import RawClient
from tests.support import until
from wsconsole.core.frames import encode_frame
from wsconsole.harness.serverconn import (
    HANDSHAKE_DONE,
    ShortQueue,
    StrictConnection,
    release_handshake,
)


@asynccontextmanager
async def echo_server() -> AsyncIterator[
    tuple[RawClient, ServerConnection, Request, asyncio.Event]
]:
    """A server that waits for an event, releases the handshake, then echoes messages back,
    and a raw client connected to it (the token in the path, as the node's clients); yields
    the client, the server's side of its connection, its request and the event."""
    ready = asyncio.Event()
    accepted: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        accepted.append(ws)
        await ready.wait()
        release_handshake(ws)
        async for message in ws:
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 0, create_connection=StrictConnection,
                     ping_interval=None) as server:  # fmt: skip
        port = server.sockets[0].getsockname()[1]
        raw = await asyncio.to_thread(RawClient, port, "/?token=secret-token")
        try:
            await until(lambda: accepted, "the connection")
            assert accepted[0].request is not None
            yield raw, accepted[0], accepted[0].request, ready
        finally:
            raw.close()


async def test_released_between_frames_the_parser_is_fresh_and_nothing_is_kept() -> None:
    async with echo_server() as (raw, ws, request, ready):
        old_parser = weakref.ref(ws.protocol.parser)
        kept = weakref.ref(request)
        del request
        ready.set()
        raw.send_frame(0x1, b"hello")
        assert await asyncio.to_thread(raw.recv_frame) == (0x1, b"hello")
        assert ws.request is HANDSHAKE_DONE and ws.response is None
        gc.collect()
        assert old_parser() is None and kept() is None, "the request is let go of"


async def test_released_in_the_middle_of_a_frame_the_frame_arrives_whole() -> None:
    async with echo_server() as (raw, ws, request, ready):
        frame = encode_frame(0x1, b"in two pieces", mask_key=os.urandom(4))
        raw.sock.sendall(frame[:4])  # the header and part of the mask: mid-frame
        # the parser took the 2-byte header and waits for the rest of the masking key
        await until(lambda: len(ws.protocol.reader.buffer) == 2, "the first 4 bytes")
        parser = ws.protocol.parser
        ready.set()
        await until(lambda: ws.request is HANDSHAKE_DONE, "released")
        assert ws.protocol.parser is parser, "a parser in the middle of a frame is kept"
        assert request.path == "" and not request.headers, "its request emptied"
        raw.sock.sendall(frame[4:])
        assert await asyncio.to_thread(raw.recv_frame) == (0x1, b"in two pieces")


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
