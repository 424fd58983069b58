"""Writing one direction of a proxied byte stream under live network faults.

`ShapedWriter` is the I/O half of `netfaults` (which stays pure): it delivers chunks to one
socket in order, asking for the direction's current `ActiveFaults` at each step, so a fault
switched on or off takes effect mid-stream. With no fault and nothing queued a chunk is
written straight away (the fast path costs one call); otherwise chunks are queued with a due
time (latency plus jitter, never earlier than the chunk before), held while a stall
(blackhole, half_open) applies, and written in pieces for slice and bandwidth faults.

Writes are synchronous (a sans-I/O protocol hands over bytes from plain calls); `drain()` is
the back-pressure point: it waits while more than `HOLD_LIMIT` bytes are queued or the socket's
own buffer is full. `stuck()` tells the writer that held bytes can never be read (both peers
ended), and `abort()` is called then or when the socket fails.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable

from wsconsole.core.tasks import Tasks
from wsconsole.harness.limits import TokenBucket
from wsconsole.harness.netfaults import HOLD_LIMIT, ActiveFaults, bandwidth_piece

log = logging.getLogger(__name__)

_EOF = b""


class ShapedWriter:
    """Delivers byte chunks to one socket in order, under one direction's live faults."""

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        direction: str,
        faults: Callable[[], ActiveFaults | None],
        changed: Callable[[], Awaitable[None]],
        stuck: Callable[[], bool],
        abort: Callable[[], None],
        name: str,
        tasks: Tasks | None = None,
    ) -> None:
        self.writer = writer
        self.direction = direction
        self.name = name
        self._faults = faults
        self._changed = changed
        self._stuck = stuck
        self._abort = abort
        self._tasks = tasks or Tasks(prefix="")
        self._queue: deque[tuple[float, bytes]] = deque()
        self._queued = 0
        self._last_due = 0.0
        self._sender: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._bucket: TokenBucket | None = None
        self._rng = random.Random()

    @property
    def pending(self) -> int:
        """Bytes queued and not yet written to the socket."""
        return self._queued

    def write(self, data: bytes) -> None:
        """Send `data` after everything written before it (b"" is not allowed: use write_eof)."""
        if data and self._sender is None and self._faults() is None:
            self.writer.write(data)
        elif data:
            self._enqueue(data)

    def write_eof(self) -> None:
        """Half-close the socket once everything written before has gone out (TLS: close)."""
        if self._sender is None and self._faults() is None:
            self._write_eof()
        else:
            self._enqueue(_EOF)

    async def drain(self) -> None:
        """Wait while too much is queued here or in the socket's buffer (back-pressure)."""
        while self._queued > HOLD_LIMIT:
            self._room.clear()
            await self._room.wait()
        if not self.writer.is_closing():
            await self.writer.drain()

    async def flushed(self) -> None:
        """Wait until every queued chunk has been written."""
        await self._empty.wait()

    def cancel(self) -> None:
        """Stop delivering (the connection is ending)."""
        if self._sender is not None:
            self._sender.cancel()

    def _write_eof(self) -> None:
        if self.writer.is_closing():
            return
        if self.writer.can_write_eof():
            self.writer.write_eof()
        else:  # TLS cannot half-close: close (close_notify, then FIN) once the data is out
            self.writer.close()

    def _enqueue(self, data: bytes) -> None:
        faults = self._faults()
        loop = asyncio.get_running_loop()
        delay = faults.delay(self._rng) if faults is not None and data else 0.0
        due = max(loop.time() + delay, self._last_due)
        self._last_due = due
        self._queue.append((due, data))
        self._queued += len(data)
        self._empty.clear()
        if self._sender is None:
            self._sender = self._tasks.spawn(self._send_loop(), f"{self.name}-{self.direction}")

    async def _send_loop(self) -> None:
        """Deliver queued chunks in order, honouring stalls, delays and shaping live."""
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                faults = self._faults()
                if faults is not None and faults.stalls(self.direction):
                    if self._stuck():  # held bytes nobody will ever read
                        self._abort()
                        return
                    await self._changed()
                    continue
                due, data = self._queue[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue  # re-check stalls after sleeping
                self._queue.popleft()
                self._queued -= len(data)
                if self._queued <= HOLD_LIMIT:
                    self._room.set()
                if not data:
                    self._write_eof()
                elif faults is not None and faults.shapes():
                    await self._send_shaped(data)
                else:
                    self.writer.write(data)
                    await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("%s %s sender: %r", self.name, self.direction, exc)
            self._abort()
        finally:
            self._sender = None
            if not self._queue:
                self._empty.set()
                self._room.set()

    async def _send_shaped(self, data: bytes) -> None:
        """Write `data` in pieces for slice and bandwidth faults (re-read live between pieces)."""
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            faults = self._faults()
            if faults is not None and faults.stalls(self.direction):
                if self._stuck():
                    self._abort()
                    return
                await self._changed()
                continue
            size = len(view)
            slicing = faults.slice if faults is not None else None
            bandwidth = faults.bandwidth if faults is not None else None
            if slicing is not None:
                size = min(size, slicing.size)
            if bandwidth is not None:
                size = min(size, bandwidth_piece(bandwidth.bytes_per_s))
                bucket = self._bucket
                if bucket is None or bucket.rate != bandwidth.bytes_per_s:
                    bucket = self._bucket = TokenBucket(
                        bandwidth.bytes_per_s, bandwidth_piece(bandwidth.bytes_per_s), loop.time()
                    )
                wait = bucket.reserve(size, loop.time())
                if wait > 0:
                    await asyncio.sleep(wait)
            self.writer.write(bytes(view[:size]))
            await self.writer.drain()
            view = view[size:]
            if slicing is not None and slicing.delay_ms and view:
                await asyncio.sleep(slicing.delay_ms / 1000.0)
