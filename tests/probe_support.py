"""Servers the probe tests run against: a `websockets` server made to follow RFC 6455 where
websockets 17 is lenient, and a deliberately broken tiny server that upgrades anything.

- `rfc_strict` is a `process_request` hook: 426 with `Sec-WebSocket-Version: 13` for an
  unsupported version (RFC 6455 4.4), 400 for a request without Host (RFC 9112 3.2);
- `accept_anything` answers 101 to every request whatever is wrong with it, names a
  subprotocol the client did not offer (when it offers any), accepts any permessage-deflate
  offer with the largest window, and afterwards ignores every frame but pings and closes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http
from collections.abc import AsyncIterator

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from wsconsole.core.frames import Opcode, ParsedFrame, encode_frame, parse_frame

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def echo(ws: ServerConnection) -> None:
    """The plain websockets echo handler: reads every message (so UTF-8 is checked)."""
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def read_frames(reader: asyncio.StreamReader) -> AsyncIterator[ParsedFrame]:
    """Every frame a client sends on a raw connection, until it closes the stream."""
    buffer = b""
    while data := await reader.read(65536):
        buffer += data
        while (parsed := parse_frame(buffer)) is not None:
            frame, used = parsed
            buffer = buffer[used:]
            yield frame


def rfc_strict(connection: ServerConnection, request: Request) -> Response | None:
    """Refuse what RFC 6455 refuses and websockets 17 lets through (before its own checks)."""
    version = request.headers.get("Sec-WebSocket-Version")
    if version is not None and version != "13":
        response = connection.respond(http.HTTPStatus.UPGRADE_REQUIRED, "version 13 only\n")
        response.headers["Sec-WebSocket-Version"] = "13"
        return response
    if "Host" not in request.headers:
        return connection.respond(http.HTTPStatus.BAD_REQUEST, "a Host header is required\n")
    return None


async def accept_anything(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The broken server's connection handler (see the module docstring)."""
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        key = headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Accept: {accept}"]
        if "sec-websocket-protocol" in headers:
            lines.append("Sec-WebSocket-Protocol: chat")
        if "permessage-deflate" in headers.get("sec-websocket-extensions", ""):
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=15")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async for frame in read_frames(reader):
            if frame.opcode == Opcode.PING:
                writer.write(encode_frame(Opcode.PONG, frame.payload))
            elif frame.opcode == Opcode.CLOSE:
                writer.write(encode_frame(Opcode.CLOSE, frame.payload[:2]))
                return
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def broken_server() -> asyncio.Server:
    """`accept_anything` on 127.0.0.1 (port 0), reading request heads of up to 1 MiB."""
    return await asyncio.start_server(accept_anything, "127.0.0.1", 0, limit=1024 * 1024)
