"""The probe's own WebSocket client on a raw socket: TCP (+TLS), the opening handshake,
frames in and out. `websockets` would refuse to send the catalogue's frames, so the probe
speaks HTTP/1.1 and RFC 6455 itself over an asyncio transport; every step is bounded by
`ProbeConfig.timeout`.

`connect` gives a byte pipe (handshake cases write their own request on it);
`read_response` reads an HTTP response head from it; `open_connection` does both with a
valid request and checks the 101 per RFC 6455 4.2.2, giving a `RawConnection`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import ssl
from dataclasses import dataclass
from typing import Literal

from wsconsole.core.envelope import encode
from wsconsole.core.frames import (
    FrameTooLarge,
    Opcode,
    ParsedFrame,
    close_payload,
    encode_frame,
    parse_frame,
)
from wsconsole.core.tls import client_context
from wsconsole.errors import WsconsoleError
from wsconsole.faults.case import DEFLATE, http_request
from wsconsole.faults.target import ProbeConfig, Target

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
MAX_RESPONSE_HEAD = 64 * 1024


class HandshakeError(WsconsoleError):
    """The opening handshake did not complete; `kind` says how, `status` the HTTP status."""

    def __init__(self, kind: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status


class Pipe(asyncio.Protocol):
    """Bytes in, bytes out: keeps everything received, even after a write error or reset."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self._changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._changed.set()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._changed.set()
        return None  # let the transport close its side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._changed.set()

    async def changed(self, deadline: float) -> bool:
        """Wait until new bytes / EOF / loss or `deadline` (loop time); False on timeout."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(self._changed.wait(), remaining)
        except TimeoutError:
            return False
        self._changed.clear()
        return True

    @property
    def ended(self) -> bool:
        """True once the peer closed its side or the connection is gone."""
        return self.eof or self.lost


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1((key + WS_GUID).encode()).digest()  # SHA-1 is mandated by the RFC
    return base64.b64encode(digest).decode()



def parse_response(head: bytes) -> tuple[int, str, dict[str, str]]:
    """Status, reason and lower-cased headers of an HTTP/1.1 response head."""
    text = head.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        shown = status_line[:60].encode("unicode_escape").decode()
        raise HandshakeError("not-http", f"not an HTTP response: {shown!r}")
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HandshakeError("not-http", f"malformed response header line {line[:60]!r}")
        key = name.strip().lower()
        headers[key] = (headers[key] + ", " if key in headers else "") + value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


class RawConnection:
    """An open WebSocket connection driven frame by frame; the probe's side is the client."""

    def __init__(self, pipe: Pipe, config: ProbeConfig, subprotocol: str | None,
                 extensions: str | None = None) -> None:
        self.pipe = pipe
        self.config = config
        self.subprotocol = subprotocol
        self.extensions = extensions  # the server's Sec-WebSocket-Extensions, when it took one
        self.close_sent = False

    @property
    def loop_time(self) -> float:
        """The event loop's clock (what deadlines are measured in)."""
        return asyncio.get_running_loop().time()

    def send(self, data: bytes) -> bool:
        """Queue bytes for the peer; False if the connection is already gone."""
        transport = self.pipe.transport
        if transport is None or self.pipe.lost or transport.is_closing():
            return False
        transport.write(data)
        return True

    def send_frame(self, opcode: int, payload: bytes = b"") -> bool:
        """A well-formed, masked client frame."""
        return self.send(encode_frame(opcode, payload, mask_key=os.urandom(4)))

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        """Our close frame, once."""
        if not self.close_sent:
            self.close_sent = True
            self.send_frame(Opcode.CLOSE, close_payload(code, reason))

    async def next_frame(self, deadline: float) -> ParsedFrame | Literal["end", "timeout"]:
        """The next frame from the peer, "end" when the stream ended, "timeout" at deadline."""
        while True:
            try:
                parsed = parse_frame(bytes(self.pipe.buffer), max_size=self.config.read_limit)
            except FrameTooLarge:
                return "end"
            if parsed is not None:
                frame, used = parsed
                del self.pipe.buffer[:used]
                return frame
            if self.pipe.ended:
                return "end"
            if not await self.pipe.changed(deadline):
                return "timeout"

    async def close(self) -> None:
        """Closing handshake best effort, then drop the transport (bounded, never raises)."""
        transport = self.pipe.transport
        if transport is None:
            return
        if not self.pipe.ended:
            self.send_close(1000)
            deadline = self.loop_time + min(self.config.timeout, self.config.close_timeout)
            # Until the peer's close frame or its end of stream: then our side may go.
            while not isinstance(item := await self.next_frame(deadline), str):
                if item.opcode == Opcode.CLOSE:
                    break
        if self.pipe.ended:
            transport.abort()
        else:
            transport.close()
        if not self.pipe.lost:
            deadline = self.loop_time + min(self.config.timeout, self.config.close_timeout)
            while not self.pipe.lost and await self.pipe.changed(deadline):
                pass
            if not self.pipe.lost:
                transport.abort()



@dataclass(frozen=True)
class Response:
    """An HTTP response head: status, reason, headers (names lower-cased, repeats joined)."""

    status: int
    reason: str
    headers: dict[str, str]


def new_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64 (RFC 6455 4.1)."""
    return base64.b64encode(os.urandom(16)).decode()


def _ssl_context(target: Target) -> ssl.SSLContext | None:
    return client_context(target.ca_file, target.insecure, target.host) if target.secure else None


async def connect(target: Target, config: ProbeConfig) -> Pipe:
    """TCP (+TLS) to the target; HandshakeError ("timeout", "tls", "unreachable") if not."""
    loop = asyncio.get_running_loop()
    context = _ssl_context(target)
    try:
        _, pipe = await asyncio.wait_for(
            loop.create_connection(
                Pipe,
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context else None,
                ssl_handshake_timeout=config.timeout if context else None,
            ),
            config.timeout,
        )
    except TimeoutError:
        raise HandshakeError(
            "timeout", f"no TCP/TLS connection within {config.timeout:g} s"
        ) from None
    except ssl.SSLError as exc:
        raise HandshakeError("tls", f"TLS failed: {exc.reason or exc}") from None
    except ConnectionRefusedError:
        raise HandshakeError("unreachable", "connection refused") from None
    except OSError as exc:
        raise HandshakeError("unreachable", exc.strerror or str(exc)) from None
    return pipe


async def read_response(pipe: Pipe, config: ProbeConfig) -> Response:
    """The next HTTP response head on the pipe (the bytes after it stay in the buffer).

    HandshakeError "closed" when the peer ended the connection without answering,
    "timeout" when it said nothing within the timeout, "not-http" for anything else.
    """
    deadline = asyncio.get_running_loop().time() + config.timeout
    while (end := pipe.buffer.find(b"\r\n\r\n")) < 0:
        if len(pipe.buffer) > MAX_RESPONSE_HEAD:
            raise HandshakeError("not-http", "response head over 64 KiB")
        if len(pipe.buffer) >= 5 and not pipe.buffer.startswith(b"HTTP/"):
            shown = bytes(pipe.buffer[:40])
            raise HandshakeError("not-http", f"not an HTTP response: {shown!r}")
        if pipe.ended:
            if pipe.buffer:
                raise HandshakeError("not-http", "connection closed inside the response head")
            raise HandshakeError("closed", "connection closed without an HTTP response")
        if not await pipe.changed(deadline):
            raise HandshakeError(
                "timeout", f"no handshake response within {config.timeout:g} s"
            )
    head = bytes(pipe.buffer[:end])
    del pipe.buffer[: end + 4]
    return Response(*parse_response(head))


async def open_connection(target: Target, config: ProbeConfig,
                          extensions: str | None = None) -> RawConnection:
    """Connect and complete a valid opening handshake, checked per RFC 6455 4.2.2.

    `extensions` is offered in Sec-WebSocket-Extensions (only permessage-deflate is
    understood); the connection's `extensions` says what the server accepted, if anything.
    """
    pipe = await connect(target, config)
    try:
        return await _handshake(pipe, target, config, extensions)
    except BaseException:
        if pipe.transport is not None:
            pipe.transport.abort()
        raise


async def _handshake(pipe: Pipe, target: Target, config: ProbeConfig,
                     extensions: str | None) -> RawConnection:
    key = new_key()
    assert pipe.transport is not None
    pipe.transport.write(http_request(target.request(key, extensions)))
    response = await read_response(pipe, config)
    status, reason, headers = response.status, response.reason, response.headers
    if status != 101:
        if status in (400, 401, 403, 404, 426, 429, 503):
            detail = f"the server refused the WebSocket upgrade: HTTP {status} {reason}"
        else:
            detail = f"not a WebSocket server: HTTP {status} {reason} instead of 101"
        raise HandshakeError("http-status", " ".join(detail.split()), status)
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("bad-upgrade", "101 response without 'Upgrade: websocket'", status)
    if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
        raise HandshakeError("bad-upgrade", "101 response without 'Connection: Upgrade'", status)
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("bad-accept", "Sec-WebSocket-Accept does not match the key", status)
    chosen = headers.get("sec-websocket-protocol")
    if chosen is not None and chosen not in target.subprotocols:
        raise HandshakeError("bad-subprotocol", f"server chose unoffered subprotocol {chosen!r}")
    accepted = headers.get("sec-websocket-extensions")
    if accepted and not (extensions and accepted.split(";")[0].strip().lower() == DEFLATE):
        raise HandshakeError("bad-extension", f"server enabled an extension the probe never "
                             f"offered: {accepted[:60]!r}")
    conn = RawConnection(pipe, config, chosen, accepted or None)
    if target.token is not None and target.token_via == "message":
        # The harness protocol's first-message authentication (DESIGN.md); no reply follows.
        conn.send_frame(Opcode.TEXT, encode("auth", token=target.token).encode())
    return conn
