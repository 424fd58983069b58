"""A node's writes to its clients: fan-out frames encoded once, one write per connection.

Which members get a frame is `rooms.RoomTable`'s decision; this is the I/O after it. A
frame for many connections is framed once (`websockets.broadcast` builds it once per
connection) and queued; at the end of the loop iteration every connection gets one write
with all of its frames joined, so a burst costs one syscall per connection. Replies to
one client (`send`) flush the queued fan-out first, so order on the wire is kept.

With permessage-deflate every connection compresses its own frames, so fan-out goes
through `websockets.broadcast` at once instead.

A client that does not read (more than `max_buffered` bytes waiting in its transport) is
a slow consumer: it gets no more frames and `on_slow` closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Generic, Protocol, TypeVar

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.protocol import State

WS_OPEN = State.OPEN


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked, uncompressed text frame (server to client), RFC 6455 5.2."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


def payload_size(payload: str | bytes) -> int:
    """Payload bytes on the wire (UTF-8 for text; str.isascii is O(1) in CPython)."""
    if isinstance(payload, str) and not payload.isascii():
        return len(payload.encode("utf-8", "surrogatepass"))
    return len(payload)


class Client(Protocol):
    """What the writer needs of a connection record: its `websockets` connection."""

    ws: ServerConnection


C = TypeVar("C", bound=Client)


class Counters(Protocol):
    """Where the writer counts what it sends (the node's stats)."""

    msgs_out: int
    bytes_out: int


class Fanout(Generic[C]):
    """Frames queued for clients, written at the end of the loop iteration."""

    def __init__(
        self,
        counters: Counters,
        *,
        compression: bool,
        max_buffered: int | None,
        on_slow: Callable[[C], None],
    ) -> None:
        self.counters = counters
        self.direct = not compression
        self.max_buffered = max_buffered
        self.on_slow = on_slow
        self._outbox: list[tuple[list[C], bytes]] = []

    def _fits(self, client: C) -> bool:
        """Whether a client may get more frames (else it is a slow consumer, closed)."""
        limit = self.max_buffered
        if limit is not None and client.ws.transport.get_write_buffer_size() > limit:
            self.on_slow(client)
            return False
        return True

    def queue(self, targets: list[C], frame: bytes) -> None:
        """Send one text frame to every client in `targets` (written at the loop's turn)."""
        counters = self.counters
        counters.msgs_out += len(targets)
        counters.bytes_out += len(frame) * len(targets)
        if self.direct:
            if not self._outbox:
                asyncio.get_running_loop().call_soon(self.flush)
            self._outbox.append((targets, text_frame(frame)))
        else:
            broadcast([client.ws for client in targets if self._fits(client)], frame, text=True)

    def flush(self) -> None:
        """Write the fan-out queued in this loop iteration: one write per connection."""
        batch, self._outbox = self._outbox, []
        if len(batch) == 1:
            targets, wire = batch[0]
            self._write(zip(targets, repeat(wire)))
            return
        per: dict[C, list[bytes]] = {}
        for targets, wire in batch:
            for client in targets:
                queued = per.get(client)
                if queued is None:
                    per[client] = [wire]
                else:
                    queued.append(wire)
        self._write((client, b"".join(wires)) for client, wires in per.items())

    def _write(self, writes: Iterable[tuple[C, bytes]]) -> None:
        """Write each (client, bytes); the checks of `websockets.broadcast` (open, not
        mid-fragment), then the slow-consumer limit."""
        limit = self.max_buffered
        for client, data in writes:
            ws = client.ws
            if ws.protocol.state is WS_OPEN and ws.send_in_progress is None:
                transport = ws.transport
                if limit is not None and transport.get_write_buffer_size() > limit:
                    self.on_slow(client)
                else:
                    transport.write(data)

    def send(self, client: C, frame: str | bytes) -> None:
        """Send one text frame to one client now (after the fan-out queued before it)."""
        if self._outbox:
            self.flush()
        broadcast([client.ws], frame, text=True)
        self.counters.msgs_out += 1
        self.counters.bytes_out += payload_size(frame)
