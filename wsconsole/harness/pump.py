"""The balancer's byte pump: a client socket paired with a backend socket, bytes both ways.

Each direction is a `Pipe`: read up to `CHUNK` bytes, hand the chunk to `on_chunk`, write it
through the direction's `ShapedWriter` (network faults: `shaper.py`), wait for room. The
fast path (no fault on the backend, nothing queued) is: read, one call, write, drain.

`on_chunk` sees every byte of its direction, in order, exactly once, before it is written
(the backend's response head included): it counts bytes per backend. With `observe` on (a
stack of the user's own nodes, which report nothing themselves) the backend's response head
is read first: it gets an `X-Wsconsole-Node: <id>` header (so a client can tell which node
serves it), and a 101 attaches a `FrameCounter` to both directions (an event-stream
response, an `EventCounter` to the body): per-node messages in and out, on the wire
(wsframes.py). Each counter follows its direction across chunk boundaries.

Connection ends: a clean end of stream in one direction is passed on as a half-close and the
other direction gets up to `HALF_CLOSE_TIMEOUT` s to finish; a socket error ends both sides.
A connection whose peers both ended their sending side while a fault stalls it is closed (its
held bytes could never be read).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from wsconsole.harness.httphead import (
    MAX_HEAD,
    add_response_header,
    find_head_end,
    response_chunked,
)
from wsconsole.harness.netfaults import DOWN, UP, ActiveFaults
from wsconsole.harness.routing import inject_cookie
from wsconsole.harness.shaper import ShapedWriter
from wsconsole.harness.wsframes import Dechunker, EventCounter, FrameCounter, Tally

NODE_HEADER = "X-Wsconsole-Node"  # names the serving node in responses (observe mode)

log = logging.getLogger("wsconsole.balancer")

CHUNK = 64 * 1024
HALF_CLOSE_TIMEOUT = 30.0

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(eq=False)
class Backend:
    """One node behind the balancer, with its health, counters and effective faults."""

    id: str
    host: str
    port: int
    healthy: bool = False
    connections: int = 0
    total: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    faults: ActiveFaults | None = None
    open: set[Connection] = field(default_factory=set)
    health_path: str = "/healthz"  # what the health check GETs
    health_any: bool = False  # any HTTP answer is healthy (else only 2xx)
    up: Tally = field(default_factory=Tally)  # messages client -> backend
    down: Tally = field(default_factory=Tally)  # messages backend -> client

    def count_up(self, data: bytes) -> None:
        """Count a chunk going client -> backend."""
        self.bytes_up += len(data)

    def count_down(self, data: bytes) -> None:
        """Count a chunk going backend -> client."""
        self.bytes_down += len(data)

    def stats(self) -> dict[str, Any]:
        """This backend's stats entry."""
        return {
            "healthy": self.healthy,
            "connections": self.connections,
            "total": self.total,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "msgs_up": self.up.messages,
            "msgs_down": self.down.messages,
            "control_up": self.up.controls,
            "control_down": self.down.controls,
            "address": f"{self.host}:{self.port}",
        }


class Pipe:
    """One direction of a proxied connection: read, observe, hand to the shaped writer."""

    def __init__(
        self,
        conn: Connection,
        direction: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_chunk: Callable[[bytes], None],
        initial: bytes = b"",
        edit_head: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.conn = conn
        self.direction = direction
        self.reader = reader
        self.on_chunk = on_chunk
        self.observer: Callable[[bytes], None] | None = None  # set once the head says what
        self.initial = initial
        self.edit_head = edit_head  # rewrite the backend's response head (cookie, node tag)
        self.reader_done = False
        self.out = ShapedWriter(
            writer,
            direction,
            faults=lambda: conn.backend.faults,
            changed=conn.changed,
            stuck=conn.sources_ended,
            abort=conn.abort,
            name=conn.name,
        )

    async def run(self) -> bool:
        """Pump until the source ends and all it sent was delivered, then half-close the sink.

        Returns True for that clean end, False when a socket failed.
        """
        out = self.out
        on_chunk = self.on_chunk
        try:
            if self.initial:
                out.write(self.initial)
            if self.edit_head is not None:
                await self._read_response_head()
            read = self.reader.read
            while data := await read(CHUNK):
                on_chunk(data)
                if self.observer is not None:
                    self.observer(data)
                out.write(data)
                await out.drain()
            self.reader_done = True
            self.conn.reader_finished()
            out.write_eof()
            await out.flushed()
            return True
        except (ConnectionError, OSError) as exc:
            log.debug("%s %s: %r", self.conn.name, self.direction, exc)
            return False

    async def _read_response_head(self) -> None:
        """Read the backend's response head (bounded), have it edited, pass the rest on."""
        edit, self.edit_head = self.edit_head, None
        buffer = b""
        while (end := find_head_end(buffer)) < 0 and len(buffer) < MAX_HEAD:
            data = await self.reader.read(CHUNK)
            if not data:
                break
            self.on_chunk(data)
            buffer += data
        if end >= 0 and edit is not None:
            head, body = buffer[:end], buffer[end:]
            buffer = edit(head) + body
            if body and self.observer is not None:
                self.observer(body)
        if buffer:
            self.out.write(buffer)


def _clean(task: asyncio.Task[bool]) -> bool:
    """Whether a finished pipe task ended cleanly (delivered its end of stream)."""
    return not task.cancelled() and task.exception() is None and task.result()


class Connection:
    """A client socket paired with a backend socket, and its two pipes.

    `head` is the client's request head (and whatever followed it), sent first; with
    `cookie_for` the backend's response head gets the affinity cookie; `changed` waits
    until the faults change, so stalled pipes wake up and re-check.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        backend: Backend,
        client: Streams,
        server: Streams,
        head: bytes,
        cookie_for: str | None,
        changed: Callable[[], Awaitable[None]],
        observe: bool = False,
    ) -> None:
        self.name = f"c{next(self._ids)}"
        self.backend = backend
        self.changed = changed
        self.cookie_for = cookie_for  # put the affinity cookie in the response head
        self.observe = observe
        self.client_writer = client[1]
        self.server_writer = server[1]
        self.up = Pipe(self, UP, client[0], server[1], backend.count_up, initial=head)
        edit = self._edit_head if cookie_for is not None or observe else None
        self.down = Pipe(self, DOWN, server[0], client[1], backend.count_down, edit_head=edit)
        self._done = asyncio.Event()

    def _edit_head(self, head: bytes) -> bytes:
        """The backend's response head as the client gets it; in observe mode, what follows
        it decides which counters watch the connection."""
        if self.cookie_for is not None:
            head = inject_cookie(head, self.cookie_for)
        if not self.observe:
            return head
        head = add_response_header(head, NODE_HEADER, self.backend.id)
        status = head.split(b" ", 2)[1:2]
        if status == [b"101"]:
            self.up.observer = FrameCounter(self.backend.up).feed
            self.down.observer = FrameCounter(self.backend.down).feed
        elif b"text/event-stream" in head.lower():
            events = EventCounter(self.backend.down).feed
            self.down.observer = Dechunker(events) if response_chunked(head) else events
        return head

    def reader_finished(self) -> None:
        """End the connection if both peers left while held bytes can never flow (a stall)."""
        faults = self.backend.faults
        if (
            self.sources_ended()
            and faults is not None
            and (faults.stalls(UP) or faults.stalls(DOWN))
        ):
            self._done.set()

    def sources_ended(self) -> bool:
        """Whether both peers have ended their sending side."""
        return self.up.reader_done and self.down.reader_done

    def abort(self) -> None:
        """End now, without flushing."""
        self._done.set()
        for writer in (self.client_writer, self.server_writer):
            writer.transport.abort()

    async def carry(self) -> None:
        """Run this connection counted in its backend's figures while it lasts; a reset
        fault on the backend ends it at once (the balancer's and the relay's one way)."""
        backend = self.backend
        backend.connections += 1
        backend.total += 1
        backend.open.add(self)
        try:
            if backend.faults is not None and backend.faults.reset:
                self.reset()
                return
            await self.run()
        finally:
            backend.open.discard(self)
            backend.connections -= 1

    def reset(self) -> None:
        """Reset both sides: SO_LINGER 0 then close, so each peer sees an RST."""
        for writer in (self.client_writer, self.server_writer):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()

    async def run(self) -> None:
        """Pipe both ways until both directions ended, a socket failed, or abort.

        A clean end of one direction is passed on as a half-close; the other direction then gets
        at most HALF_CLOSE_TIMEOUT seconds to end too (a paused peer cannot pin a connection).
        """
        up = asyncio.create_task(self.up.run(), name=f"{self.name}-up")
        down = asyncio.create_task(self.down.run(), name=f"{self.name}-down")
        done = asyncio.create_task(self._done.wait(), name=f"{self.name}-done")
        tasks = [up, down, done]
        try:
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            ended = [task for task in (up, down) if task in finished]
            if done not in finished and len(ended) == 1 and _clean(ended[0]):
                rest = [task for task in tasks if task not in finished]
                await asyncio.wait(
                    rest, timeout=HALF_CLOSE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for task in tasks:
                task.cancel()
            for writer in (self.client_writer, self.server_writer):
                writer.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            for pipe in (self.up, self.down):
                pipe.out.cancel()
