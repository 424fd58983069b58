"""The proxy's listener: reverse mode (one upstream) and forward mode (a browser's HTTP proxy).

Reverse (`upstream` set): the app's WebSocket URL points at the proxy; each upgrade request
is passed to `upstream_url(upstream, request target)`. With `tls` the proxy serves wss://
with a certificate from the local CA for the listen host, localhost and 127.0.0.1 (plus
`tls_hosts`).

Forward (`forward`): a browser (or any client) uses the proxy as its HTTP proxy.
- `CONNECT host:port` is answered 200; the first byte the client then sends tells TLS from
  plain: a TLS tunnel is intercepted with a certificate the local CA issues for `host`
  (the browser must trust the CA) and the upstream is dialled with TLS; a plain one is read
  as HTTP. Either way an upgrade request in the tunnel becomes a proxied WebSocket to
  ws(s)://host:port/path, and anything else is passed through byte for byte.
- `GET http://host:port/path` (absolute form): an upgrade is proxied to ws://host:port/path;
  another request is passed on in origin form with `Connection: close`.

In both modes a request that is not an upgrade is passed through to its server unchanged
(Socket.IO's long-polling requests, the page itself), so an app works through the proxy as
it does without it. Bad requests get 400, slow ones 408, never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.http11 import Response

from wsconsole.core.lifecycle import State
from wsconsole.core.tls import client_context
from wsconsole.harness.httphead import HeadError, RequestHead, parse_request_head, read_head
from wsconsole.proxy.handshake import (
    CHUNK,
    MAX_HEAD,
    UpstreamError,
    accept_client,
    client_request,
    error_response,
    header_list,
    open_upstream,
    passed_refusal,
    rewrite_head,
    upstream_url,
)
from wsconsole.proxy.hub import ConnectionInfo, ProxyHub
from wsconsole.proxy.relay import ProxiedConnection, Side

if TYPE_CHECKING:
    from wsconsole.core.localca import LocalCA

log = logging.getLogger(__name__)

TLS_RECORD = b"\x16"  # the first byte of a TLS handshake record


@dataclass
class ProxyConfig:
    """How the proxy listens and where it sends connections."""

    host: str = "127.0.0.1"
    port: int = 8080  # 0: a free port (see ProxyServer.port)
    upstream: str | None = None  # reverse mode: ws(s)://host:port[/path]
    forward: bool = False  # forward mode: an HTTP proxy for browsers
    tls: bool = False  # reverse mode: serve wss:// with the local CA
    tls_hosts: list[str] = field(default_factory=list)  # more names for that certificate
    ca_file: str | None = None  # trust this CA bundle for wss:// upstreams
    insecure: bool = False  # do not verify upstream certificates
    ca_dir: Path | None = None  # where the local CA lives (default: the user data folder)

    def check(self) -> None:
        """Refuse settings that cannot work together (ValueError with the reason)."""
        if self.forward == (self.upstream is not None):
            raise ValueError("give either --upstream URL (reverse mode) or --forward")
        if self.forward and self.tls:
            raise ValueError("--tls serves wss:// in reverse mode; in forward mode wss:// "
                             "tunnels are intercepted with the local CA anyway")
        if self.upstream is not None:
            scheme = urllib.parse.urlsplit(self.upstream).scheme
            if scheme not in ("ws", "wss") or not urllib.parse.urlsplit(self.upstream).hostname:
                raise ValueError(f"--upstream must be a ws:// or wss:// URL, not "
                                 f"{self.upstream!r}")


class ProxyServer:
    """Accepts connections and runs each through a ProxiedConnection of `hub`."""

    def __init__(self, config: ProxyConfig, hub: ProxyHub | None = None) -> None:
        config.check()
        self.config = config
        self.hub = hub or ProxyHub()
        self.upstream_tls = client_context(config.ca_file, config.insecure)
        self._ca: LocalCA | None = None
        self._server: asyncio.Server | None = None
        self.port = config.port

    @property
    def ca(self) -> LocalCA:
        """The local CA (created on first use)."""
        if self._ca is None:
            from wsconsole.core.localca import LocalCA  # cryptography: only when TLS is used

            self._ca = LocalCA(self.config.ca_dir)
        return self._ca

    @property
    def url(self) -> str:
        """Where clients connect: ws(s)://host:port (reverse) or http://host:port (forward)."""
        scheme = "http" if self.config.forward else ("wss" if self.config.tls else "ws")
        host = self.config.host
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> int:
        """Listen; returns the port."""
        tls = None
        if self.config.tls:
            hosts = [self.config.host, "localhost", "127.0.0.1", *self.config.tls_hosts]
            tls = self.ca.server_context([h for h in hosts if h not in ("0.0.0.0", "::")])
        self._server = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, ssl=tls, limit=CHUNK)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and end every connection."""
        if self._server is not None:
            self._server.close()
        await self.hub.stop()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # -- routing ----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.set_name("proxy-accept")
        try:
            await self._route(reader, writer)
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            log.debug("proxy client %s: %r", writer.get_extra_info("peername"), exc)
        except Exception:  # a bug: keep serving the other connections, and say where
            log.exception("proxy: connection from %s failed", writer.get_extra_info("peername"))
        finally:
            writer.close()

    async def _route(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        timeout = self.hub.limits.handshake_timeout
        try:
            head, rest = await read_head(reader, MAX_HEAD, timeout)
            parsed = parse_request_head(head)
        except TimeoutError:
            await _answer(writer, error_response(408, "no request head in time"))
            return
        except HeadError as exc:
            await _answer(writer, error_response(400, str(exc)))
            return
        if not self.config.forward:
            if parsed.method == "CONNECT":
                await _answer(writer, error_response(400, "this proxy runs in reverse mode "
                              "(--upstream); start it with --forward to use it as an HTTP proxy"))
                return
            assert self.config.upstream is not None
            url = upstream_url(self.config.upstream, parsed.target)
            await self._dispatch(head, rest, parsed, url, reader, writer, "reverse")
        elif parsed.method == "CONNECT":
            await self._tunnel(parsed, rest, reader, writer)
        else:
            target = urllib.parse.urlsplit(parsed.target)
            if target.scheme != "http" or not target.hostname:
                await _answer(writer, error_response(400, "a forward proxy needs CONNECT or an "
                              "absolute http:// request target"))
                return
            path = urllib.parse.urlunsplit(("", "", target.path or "/", target.query, ""))
            url = urllib.parse.urlunsplit(("ws", target.netloc, target.path or "/",
                                           target.query, ""))
            if not parsed.upgrade:
                head = rewrite_head(head, path, target.netloc)
            await self._dispatch(head, rest, parsed, url, reader, writer, "forward")

    async def _dispatch(self, head: bytes, rest: bytes, parsed: RequestHead, url: str,
                        reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        mode: str) -> None:
        if parsed.upgrade:
            await self._websocket(head, rest, url, reader, writer, mode)
        else:
            parts = urllib.parse.urlsplit(url)
            if mode == "reverse":
                head = rewrite_head(head, parsed.target, parts.netloc, close=False)
            await self._pipe(head + rest, parts.hostname or "", parts.port or (
                443 if parts.scheme == "wss" else 80), parts.scheme == "wss", reader, writer)

    async def _tunnel(self, parsed: RequestHead, rest: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """CONNECT: answer 200, tell TLS from plain, then route what comes through the tunnel."""
        host, _, port_text = parsed.target.rpartition(":")  # host:port (checked by the parser)
        host = host.strip("[]")
        writer.transport.pause_reading()
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        first = rest[:1] or await _peek(writer, self.hub.limits.handshake_timeout)
        secure = first == TLS_RECORD
        if secure:
            if rest:
                return  # TLS bytes were already consumed: the tunnel cannot be intercepted
            await writer.start_tls(self.ca.server_context([host]))
        else:
            writer.transport.resume_reading()
        if not first:
            return
        try:
            inner, more = await read_head(reader, MAX_HEAD, self.hub.limits.handshake_timeout,
                                          rest)
            inner_head = parse_request_head(inner)
        except (TimeoutError, HeadError):
            return
        scheme = "wss" if secure else "ws"
        netloc = f"[{host}]:{port_text}" if ":" in host else f"{host}:{port_text}"
        url = f"{scheme}://{netloc}{inner_head.target}"
        if inner_head.upgrade:
            await self._websocket(inner, more, url, reader, writer, "forward")
        else:
            await self._pipe(inner + more, host, int(port_text), secure, reader, writer)

    # -- WebSocket --------------------------------------------------------------------------

    async def _websocket(self, head: bytes, rest: bytes, url: str, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter, mode: str) -> None:
        """Open `url` for the client's upgrade request and relay until both are done."""
        hub = self.hub
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        info = ConnectionInfo(hub.new_id(), client, url, mode)
        conn = ProxiedConnection(hub, info)
        hub.connections[info.id] = conn
        conn.move(State.CONNECTING)
        try:
            protocol, request, early = client_request(head, rest)
        except HeadError as exc:
            await self._fail(conn, writer, error_response(400, str(exc)), "failed", str(exc))
            return
        protocol.max_message_size = hub.limits.max_message
        info.request_headers = header_list(request.headers)
        try:
            result = await open_upstream(url, request, tls=self.upstream_tls,
                                         timeout=hub.limits.handshake_timeout,
                                         max_size=hub.limits.max_message)
        except UpstreamError as exc:
            answer = error_response(exc.status, f"wsconsole proxy: {exc}")
            await self._fail(conn, writer, answer, "failed", str(exc))
            return
        if isinstance(result, Response):
            info.status = result.status_code
            info.response_headers = header_list(result.headers)
            await self._fail(conn, writer, passed_refusal(result), "refused",
                             f"{result.status_code} {result.reason_phrase}")
            return
        info.status = result.response.status_code
        info.upstream_headers = header_list(result.request.headers)
        info.response_headers = header_list(result.response.headers)
        info.subprotocol = result.protocol.subprotocol
        info.compression = bool(result.protocol.extensions)
        response = accept_client(protocol, request, result)
        protocol.send_response(response)
        for data in protocol.data_to_send():
            writer.write(data)
        if response.status_code != 101:
            result.writer.close()
            await self._fail(conn, writer, None, "failed", f"client handshake: "
                             f"{protocol.handshake_exc}")
            return
        conn.attach(Side.CLIENT, protocol, reader, writer)
        conn.attach(Side.SERVER, result.protocol, result.reader, result.writer)
        await conn.run(early, result.early)

    async def _fail(self, conn: ProxiedConnection, writer: asyncio.StreamWriter,
                    answer: Response | None, kind: str, detail: str) -> None:
        """The handshake did not get through: answer the client, record why."""
        if answer is not None:
            await _answer(writer, answer)
        conn.info.error = detail
        self.hub.event(conn.id, kind, detail=detail)
        conn.move(State.CLOSED, error=detail)
        self.hub.connections.pop(conn.id, None)

    # -- plain HTTP -------------------------------------------------------------------------

    async def _pipe(self, first: bytes, host: str, port: int, secure: bool,
                    reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pass a request that is not an upgrade through to its server, byte for byte."""
        self.hub.counters["http_passed"] += 1
        try:
            async with asyncio.timeout(self.hub.limits.handshake_timeout):
                up_reader, up_writer = await asyncio.open_connection(
                    host, port, ssl=self.upstream_tls if secure else None,
                    server_hostname=host if secure else None, limit=CHUNK)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            await _answer(writer, error_response(502, f"wsconsole proxy: {host}:{port}: {exc}"))
            return
        up_writer.write(first)

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(CHUNK):
                    sink.write(data)
                    await sink.drain()
                if sink.can_write_eof():
                    sink.write_eof()

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        finally:
            up_writer.close()


async def _answer(writer: asyncio.StreamWriter, response: Response) -> None:
    """Write an HTTP response and half-close."""
    with contextlib.suppress(ConnectionError, OSError):
        writer.write(response.serialize())
        await writer.drain()


async def _peek(writer: asyncio.StreamWriter, timeout: float) -> bytes:
    """The first byte waiting on the client's socket, left unread (b"" at EOF or timeout)."""
    original = writer.get_extra_info("socket")
    if original is None:
        return b""
    sock = original.dup()

    def peek() -> bytes:
        sock.settimeout(timeout)
        try:
            return sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return b""
        finally:
            sock.close()

    return await asyncio.to_thread(peek)
