"""Opening a proxied WebSocket: the client's request passed on, the upstream's answer passed back.

Both ends are websockets' sans-I/O protocol objects (`ClientFacing` speaks to the app's
client, `ServerFacing` to the upstream server), with one change: a ping is not answered by
the proxy but relayed, so each peer's pong comes from the other peer and "suppress pongs"
means what it says.

What crosses the proxy (a transparent proxy must not weaken the server's checks):
- client -> upstream: every request header except the hop-by-hop ones and those of the
  WebSocket key exchange, so Origin, Cookie, Authorization, User-Agent and custom headers
  arrive unchanged; the subprotocols the client offered, offered again; permessage-deflate
  offered if the client offered it (the proxy compresses and decompresses each side itself,
  so rules see plain payloads); Host becomes the upstream's.
- upstream -> client: on 101, the chosen subprotocol, whether deflate was agreed, and the
  response headers (Set-Cookie, custom ones); on a refusal, the same status, reason, headers
  and body. An upstream that cannot be reached is answered 502 (504 on a timeout) with the
  reason in the body.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from wsconsole.errors import WsconsoleError
from wsconsole.harness.httphead import HeadError, parse_request_head

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024

# Never passed on: they describe one hop, or the WebSocket key exchange each hop does itself.
_REQUEST_SKIP = frozenset({
    "host", "connection", "upgrade", "keep-alive", "proxy-connection", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "content-length", "sec-websocket-key",
    "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol",
})
_RESPONSE_SKIP = frozenset({
    "connection", "upgrade", "keep-alive", "proxy-connection", "transfer-encoding",
    "content-length", "date", "sec-websocket-accept", "sec-websocket-extensions",
    "sec-websocket-protocol",
})


class UpstreamError(WsconsoleError):
    """The upstream could not be reached or answered wrongly: `status` for the client."""

    def __init__(self, kind: str, detail: str, status: int = 502) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status


class _RelayPings:
    """Let pings through to the relay instead of answering them here."""

    events: list[Any]

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            self.events.append(frame)
            return
        super().recv_frame(frame)  # type: ignore[misc]


class ClientFacing(_RelayPings, ServerProtocol):
    """The proxy's end of the app client's connection."""


class ServerFacing(_RelayPings, ClientProtocol):
    """The proxy's end of the upstream connection."""


# -- the client's request ---------------------------------------------------------------------


def rewrite_head(head: bytes, target: str, host: str, close: bool = True) -> bytes:
    """`head` for a plain HTTP hop: origin-form target, the upstream's Host, no proxy headers."""
    parsed = parse_request_head(head)
    lines = [f"{parsed.method} {target} {parsed.version}", f"Host: {host}"]
    for name, value in parsed.headers:
        lowered = name.lower()
        if lowered in ("host", "proxy-connection", "proxy-authorization", "keep-alive") or (
            close and lowered == "connection"
        ):
            continue
        lines.append(f"{name}: {value}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upstream_url(base: str, target: str) -> str:
    """Where a request for `target` goes: `base`'s own path if it has one, else `target`'s.

    The query string comes from `base` when it has one, else from the client's request.
    """
    parts = urllib.parse.urlsplit(base)
    asked = urllib.parse.urlsplit(target)
    if parts.path not in ("", "/"):
        path, query = parts.path, parts.query or asked.query
    else:
        path, query = asked.path or "/", asked.query
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def client_request(head: bytes, rest: bytes) -> tuple[ClientFacing, Request, list[Frame]]:
    """Parse the client's upgrade request; HeadError if it is not a valid WebSocket request.

    Returns the client-facing protocol (still CONNECTING), the request and any frames the
    client sent right behind it.
    """
    protocol = ClientFacing(max_size=None)
    protocol.receive_data(head + rest)
    events = protocol.events_received()
    if protocol.handshake_exc is not None or not events or not isinstance(events[0], Request):
        raise HeadError(f"not a valid WebSocket request: {protocol.handshake_exc}")
    request = events[0]
    try:  # check it the way accept() will, before an upstream connection is made for it
        ServerProtocol().process_request(request)
    except InvalidHandshake as exc:
        raise HeadError(f"not a valid WebSocket request: {exc}") from None
    return protocol, request, [e for e in events[1:] if isinstance(e, Frame)]


# -- the upstream -----------------------------------------------------------------------------


@dataclass
class Upstream:
    """An open upstream connection after a successful handshake."""

    protocol: ServerFacing
    request: Request
    response: Response
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    early: list[Frame] = field(default_factory=list)  # frames that came with the 101


def _offered(headers: Headers) -> list[str]:
    return [part.strip() for value in headers.get_all("Sec-WebSocket-Protocol")
            for part in value.split(",") if part.strip()]


def _wants_deflate(headers: Headers) -> bool:
    return any("permessage-deflate" in value for value in
               headers.get_all("Sec-WebSocket-Extensions"))


def upstream_request(url: str, client: Request,
                     max_size: int | None) -> tuple[ServerFacing, Request]:
    """The protocol for the upstream and its request, carrying the client's headers."""
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise UpstreamError("invalid", str(exc), 502) from None
    offered = _offered(client.headers)
    protocol = ServerFacing(
        uri, subprotocols=offered or None, max_size=max_size,
        extensions=[ClientPerMessageDeflateFactory()] if _wants_deflate(client.headers) else None)
    request = protocol.connect()
    if "Authorization" in client.headers and "Authorization" in request.headers:
        del request.headers["Authorization"]  # the client's own wins over the URL's user:pass
    for name, value in client.headers.raw_items():
        if name.lower() not in _REQUEST_SKIP:
            request.headers[name] = value
    return protocol, request


def _dial_error(url: str, exc: BaseException) -> UpstreamError:
    if isinstance(exc, TimeoutError):
        return UpstreamError("timeout", f"no answer from {url}", 504)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UpstreamError("tls", f"{url}: {exc.verify_message or exc} (--ca-file or "
                             "--insecure)")
    if isinstance(exc, ssl.SSLError):
        return UpstreamError("tls", f"{url}: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return UpstreamError("refused", f"{url}: connection refused (is the server running?)")
    return UpstreamError("unreachable", f"{url}: {getattr(exc, 'strerror', None) or exc}")


async def open_upstream(url: str, client: Request, *, tls: ssl.SSLContext | None,
                        timeout: float, max_size: int | None) -> Upstream | Response:
    """Dial `url` and hand it the client's request; the Upstream, or the refusal to pass back.

    UpstreamError when it cannot be reached or its answer is not HTTP.
    """
    protocol, request = upstream_request(url, client, max_size)
    uri = protocol.uri
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                uri.host, uri.port, ssl=(tls or ssl.create_default_context()) if uri.secure
                else None, server_hostname=uri.host if uri.secure else None, limit=CHUNK)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise _dial_error(url, exc) from None
    try:
        protocol.send_request(request)
        for data in protocol.data_to_send():
            writer.write(data)
        async with asyncio.timeout(timeout):
            response, early = await _read_response(protocol, reader)
    except BaseException as exc:
        writer.close()
        if isinstance(exc, TimeoutError | OSError):
            raise _dial_error(url, exc) from None
        raise
    if isinstance(protocol.handshake_exc, InvalidStatus):
        writer.close()
        return response
    if protocol.handshake_exc is not None:
        writer.close()
        raise UpstreamError("invalid", f"{url} answered a WebSocket request wrongly: "
                            f"{protocol.handshake_exc}")
    return Upstream(protocol, request, response, reader, writer, early)


async def _read_response(protocol: ServerFacing,
                         reader: asyncio.StreamReader) -> tuple[Response, list[Frame]]:
    while True:
        data = await reader.read(CHUNK)
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        events = protocol.events_received()
        if events and isinstance(events[0], Response):
            return events[0], [e for e in events[1:] if isinstance(e, Frame)]
        if protocol.handshake_exc is not None:
            raise UpstreamError("invalid", f"no valid HTTP response: {protocol.handshake_exc}")
        if not data:
            raise UpstreamError("closed", "the upstream closed the connection without answering")


# -- answers to the client --------------------------------------------------------------------


def accept_client(protocol: ClientFacing, request: Request, upstream: Upstream) -> Response:
    """The 101 for the client: the upstream's choices and its other response headers."""
    chosen = upstream.protocol.subprotocol
    protocol.available_subprotocols = [chosen] if chosen else None
    if upstream.protocol.extensions:
        protocol.available_extensions = [ServerPerMessageDeflateFactory()]
    response = protocol.accept(request)
    for name, value in upstream.response.headers.raw_items():
        if name.lower() not in _RESPONSE_SKIP:
            response.headers[name] = value
    return response


def passed_refusal(refusal: Response) -> Response:
    """The upstream's refusal as the client should get it (same status, headers and body)."""
    headers = Headers([(name, value) for name, value in refusal.headers.raw_items()
                       if name.lower() not in _RESPONSE_SKIP | {"date"}])
    headers["Content-Length"] = str(len(refusal.body))
    headers["Connection"] = "close"
    return Response(refusal.status_code, refusal.reason_phrase, headers, bytes(refusal.body))


def error_response(status: int, text: str) -> Response:
    """A plain-text error answer from the proxy itself."""
    return ServerProtocol().reject(status, text.rstrip("\n") + "\n")


def header_list(headers: Headers) -> list[tuple[str, str]]:
    """Headers as (name, value) pairs in their order, for records and views."""
    return list(headers.raw_items())
