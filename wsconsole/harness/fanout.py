"""A node's writes to its clients: fan-out frames encoded once, one write per connection.

Which members get a frame is `rooms.RoomTable`'s decision; this is the I/O after it. A
frame for many connections is framed once (`websockets.broadcast` builds it once per
connection) and queued; at the end of the loop iteration every connection gets one write
with all of its frames joined, so a burst costs one syscall per connection. Replies to
one client (`send`) flush the queued fan-out first, so order on the wire is kept.

With permessage-deflate every connection compresses its own frames, so fan-out goes
through `websockets.broadcast` at once instead.

Backpressure: a connection's send buffer (its transport's) holds at most `max_buffered`
bytes of fan-out. A client that does not read fast enough to stay under it is a slow
consumer: the frames that do not fit are not written, and `on_slow` gets the client with
the `Mark` (room, epoch, seq) of each frame it missed, so the node can tell it what to
recover from history (the `lagging` notice) and close it (1013). Nothing queues beyond the
limit: a stuck reader costs at most `max_buffered` bytes (plus the notice and the close).
`peak_buffered` is the largest send buffer a fan-out write left behind, for /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable
from typing import Generic, NamedTuple, Protocol, TypeVar

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


def cap_kernel_buffers(sockets: Iterable[socket.socket], limit: int | None) -> None:
    """Cap the kernel's send buffer of every connection accepted on `sockets` (listening;
    accepted sockets inherit it) at `limit` bytes (Linux doubles it for its bookkeeping).
    Left to autotuning, the kernel alone holds up to 4 MiB for a client that does not read:
    a backlog the node can neither see nor bound. Capped, what a slow reader has not taken
    stays in the transport, where the send limit (`max_buffered`) sees it."""
    for sock in sockets if limit else ():
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limit)


class Mark(NamedTuple):
    """Which message a fan-out frame is: its room, epoch and sequence number."""

    room: str
    epoch: str
    seq: int


class Client(Protocol):
    """What the writer needs of a connection record: its `websockets` connection."""

    ws: ServerConnection


C = TypeVar("C", bound=Client)


Entry = tuple[list[C], bytes, Mark]  # a queued fan-out frame: its targets, wire bytes, mark


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
        on_slow: Callable[[C, list[Mark]], None],
    ) -> None:
        self.counters = counters
        self.direct = not compression
        self.max_buffered = max_buffered
        self.on_slow = on_slow
        self.peak_buffered = 0
        self._outbox: list[Entry[C]] = []

    def _fits(self, client: C, mark: Mark) -> bool:
        """Whether a client may get one more frame (else it is a slow consumer)."""
        limit = self.max_buffered
        if limit is not None and client.ws.transport.get_write_buffer_size() > limit:
            self.on_slow(client, [mark])
            return False
        return True

    def queue(self, targets: list[C], frame: bytes, mark: Mark) -> None:
        """Send the text frame of message `mark` to every client in `targets` (written at
        the loop's turn)."""
        counters = self.counters
        counters.msgs_out += len(targets)
        counters.bytes_out += len(frame) * len(targets)
        if self.direct:
            if not self._outbox:
                asyncio.get_running_loop().call_soon(self.flush)
            self._outbox.append((targets, text_frame(frame), mark))
        else:
            broadcast([client.ws for client in targets if self._fits(client, mark)], frame,
                      text=True)  # fmt: skip

    def flush(self) -> None:
        """Write the fan-out queued in this loop iteration: one write per connection."""
        batch, self._outbox = self._outbox, []
        if len(batch) == 1:
            targets, wire, _ = batch[0]
            self._write((client, wire, batch) for client in targets)
            return
        per: dict[C, list[Entry[C]]] = {}
        for entry in batch:
            for client in entry[0]:
                queued = per.get(client)
                if queued is None:
                    per[client] = [entry]
                else:
                    queued.append(entry)
        self._write((client, b"".join([e[1] for e in entries]), entries)
                    for client, entries in per.items())  # fmt: skip

    def _write(self, writes: Iterable[tuple[C, bytes, list[Entry[C]]]]) -> None:
        """Write each (client, bytes, the queued entries they are): the checks of
        `websockets.broadcast` (open, not mid-fragment), then the send buffer limit: bytes
        that would take a client's buffer over it are not written (unless it is empty: one
        burst always goes), and the client is a slow consumer."""
        limit = self.max_buffered
        peak = self.peak_buffered
        for client, data, entries in writes:
            ws = client.ws
            if ws.protocol.state is WS_OPEN and ws.send_in_progress is None:
                transport = ws.transport
                if limit is None:
                    transport.write(data)
                    continue
                buffered = transport.get_write_buffer_size()
                if buffered and buffered + len(data) > limit:
                    self.on_slow(client, [entry[2] for entry in entries])
                    continue
                transport.write(data)
                if buffered + len(data) > peak:
                    peak = transport.get_write_buffer_size()
        self.peak_buffered = peak

    def send(self, client: C, frame: str | bytes) -> None:
        """Send one text frame to one client now (after the fan-out queued before it)."""
        if self._outbox:
            self.flush()
        broadcast([client.ws], frame, text=True)
        self.counters.msgs_out += 1
        self.counters.bytes_out += payload_size(frame)
