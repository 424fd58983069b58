"""A lean WebSocket client speaking the harness protocol, for the reconnect storm's clients.

An asyncio Protocol with a minimal RFC 6455 reader: it upgrades, joins a room, answers
pings and notices the close; `stormgen.py` holds thousands of them and reconnects them with
the product's BackoffPolicy.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct


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


class WsClient(asyncio.Protocol):
    """A WebSocket connection speaking the harness protocol: joins `room` once open."""

    def __init__(self, room: str = "bench") -> None:
        self.room = room
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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
        if payload.startswith(b'{"type":"joined"') and not self.joined.done():
            self.joined.set_result(None)

    def _on_open(self) -> None:
        self.send(b'{"type":"join","room":"' + self.room.encode() + b'"}')

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
    host: str, port: int, path: str, *, local_host: str | None = None, timeout: float = 30.0
) -> WsClient:
    """Connect, upgrade, wait until joined to the room."""
    loop = asyncio.get_running_loop()
    client = WsClient()
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
