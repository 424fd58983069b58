"""A lean WebSocket client for the load generator: counts frames, samples latency.

The same client drives every contender (wsconsole's harness protocol, Socket.IO over its
WebSocket transport, a plain broadcast server), so differences come from the servers, not
from the clients. It is an asyncio Protocol with a minimal RFC 6455 reader: server frames
are walked header by header without decoding every payload, so the load generator stays
far from being the bottleneck (its CPU is reported next to every figure).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import struct
import time
from collections.abc import Callable

_TS = re.compile(rb'"t":([0-9]+\.[0-9]+)')


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked, as RFC 6455 requires of clients)."""
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    if n:
        repeated = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            n, "big"
        )
    else:
        masked = b""
    return head + key + masked


class Counters:
    """What every client of one load-generator process adds to."""

    __slots__ = ("_tick", "latencies", "received", "sample_every")

    def __init__(self) -> None:
        self.received = 0
        self.latencies: list[float] = []
        self.sample_every = 1
        self._tick = 0

    def reset(self, sample_every: int) -> None:
        """Start a new measurement window."""
        self.received = 0
        self.latencies = []
        self.sample_every = max(1, sample_every)

    def sample(self, payload: bytes) -> None:
        """Record the publish-to-deliver latency of every `sample_every`-th message."""
        self._tick += 1
        if self._tick % self.sample_every:
            return
        match = _TS.search(payload)
        if match is not None and len(self.latencies) < 200_000:
            self.latencies.append((time.time() - float(match.group(1))) * 1000.0)


class WsClient(asyncio.Protocol):
    """A WebSocket connection speaking one of the contenders' protocols.

    kind "harness": wsconsole (join on open, messages are `{"type":"message",...}`);
    kind "sio": Socket.IO v4 over the websocket transport (Engine.IO pings answered);
    kind "plain": every text frame is a message.
    """

    def __init__(
        self, kind: str, counters: Counters | None, room: str = "bench", join: bool = True
    ) -> None:
        self.kind = kind
        self.join = join
        self.counters = counters
        self.room = room
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_text: Callable[[bytes], None] | None = None
        self._buf = bytearray()
        self._handshaken = False
        self._request = b""

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the HTTP upgrade request."""
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        """Resolve every waiter so nobody hangs on a dead connection."""
        error = ConnectionError(f"connection lost: {exc!r}")
        for future in (self.opened, self.joined):
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Complete the handshake, then walk the frames."""
        buf = self._buf
        buf += data
        if not self._handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(status.decode("latin-1")))
                assert self.transport is not None
                self.transport.close()
                return
            self._handshaken = True
            self.opened.set_result(None)
            self._on_open()
        self._walk()

    # -- frames ------------------------------------------------------------------------
    def _walk(self) -> None:
        buf = self._buf
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            end = pos + head + n
            if end > size:
                break
            opcode = b0 & 0x0F
            if opcode == 1 or opcode == 0:
                self._text(bytes(buf[pos + head : end]))
            elif opcode == 9:
                self.send(bytes(buf[pos + head : end]), opcode=0xA)
            elif opcode == 8:
                if self.transport is not None:
                    self.transport.close()
            pos = end
        if pos:
            del buf[:pos]

    def _text(self, payload: bytes) -> None:
        kind = self.kind
        if kind == "harness":
            if payload.startswith(b'{"type":"message"'):
                self._message(payload)
            elif payload.startswith(b'{"type":"joined"') and not self.joined.done():
                self.joined.set_result(None)
        elif kind == "sio":
            if payload.startswith(b'42["msg"'):
                self._message(payload)
            elif payload == b"2":
                self.send(b"3")
            elif payload.startswith(b"0{"):
                self.send(b"40")
            elif payload.startswith(b"40"):
                if self.join:
                    self.send(b'42["join","' + self.room.encode() + b'"]')
                elif not self.joined.done():
                    self.joined.set_result(None)
            elif payload.startswith(b'42["joined"') and not self.joined.done():
                self.joined.set_result(None)
        else:
            if payload.startswith(b"{\"t\""):
                self._message(payload)
            elif payload == b"welcome" and not self.joined.done():
                self.joined.set_result(None)
        if self.on_text is not None:
            self.on_text(payload)

    def _message(self, payload: bytes) -> None:
        counters = self.counters
        if counters is not None:
            counters.received += 1
            counters.sample(payload)

    def _on_open(self) -> None:
        if self.kind == "harness" and self.join:
            self.send(b'{"type":"join","room":"' + self.room.encode() + b'"}')
        elif self.kind != "sio" and not self.join and not self.joined.done():
            self.joined.set_result(None)  # publishers are ready once open

    # -- sending ---------------------------------------------------------------------
    def send(self, payload: bytes, opcode: int = 1) -> None:
        """Send one masked frame (text by default)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(mask_frame(opcode, payload))

    def close(self) -> None:
        """Drop the connection (benchmarks do not need a closing handshake)."""
        if self.transport is not None:
            self.transport.close()


async def open_client(
    kind: str,
    host: str,
    port: int,
    path: str,
    counters: Counters | None,
    *,
    local_host: str | None = None,
    timeout: float = 30.0,
    join: bool = True,
) -> WsClient:
    """Connect, upgrade, wait until joined to the room (subscribers) or ready (publishers)."""
    loop = asyncio.get_running_loop()
    client = WsClient(kind, counters, join=join)
    key = base64.b64encode(os.urandom(16)).decode()
    client._request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    local = (local_host, 0) if local_host else None
    async with asyncio.timeout(timeout):
        await loop.create_connection(lambda: client, host, port, local_addr=local)
        await client.opened
        await client.joined
    return client
