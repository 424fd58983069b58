"""A Socket.IO (protocol v5 / Engine.IO v4) target on python-socketio's AsyncClient.

Every Socket.IO packet the client sends or receives is reported as a FrameRecord whose
payload is the packet exactly as encoded on the wire (`42/chat,7["event",...]`, as DevTools
shows it; binary attachments as BINARY records); Engine.IO pings from the server are
HeartbeatEvents; `latency` is the last emit-to-ack round trip. python-socketio's own
reconnection is switched off: its delays are not ours and its attempts are invisible until
one succeeds. Our loop drives reconnection with
`BackoffPolicy`, so every drop shows as OPEN > RECONNECTING (attempt, delay) > CONNECTING,
exactly like the WebSocket client, and rooms joined with `join()` are joined again.

A connect that gets no Engine.IO open packet within `connect_timeout` (for instance a plain
WebSocket server accepting the upgrade and then saying nothing) ends in an ErrorEvent of
kind "protocol_mismatch" when `detect.sniff` finds another protocol there, "timeout" else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import engineio
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.driver import ConnectionDriver
from wsconsole.core.errors import ClientOptionsError, NotConnected, TokenError
from wsconsole.core.events import (
    Direction,
    FrameRecord,
    HeartbeatEvent,
    Observer,
    Opcode,
)
from wsconsole.core.lifecycle import State
from wsconsole.core.options import check_header, check_stable_after
from wsconsole.core.reconnect import AUTH_WORDS, Failure, parse_retry_after
from wsconsole.core.targets.detect import engineio_handshake, mismatch_text, sniff
from wsconsole.core.tasks import spawn
from wsconsole.core.tls import url_context
from wsconsole.core.tokens import TokenProvider, can_refresh, check_provider, fetch_token
from wsconsole.errors import WsconsoleError

log = logging.getLogger(__name__)

TRANSPORTS = ("websocket", "polling")
EventListener = Callable[[str, str, tuple[Any, ...]], None]  # (namespace, event, args)


class AckTimeout(WsconsoleError, TimeoutError):
    """The server did not acknowledge an emit within its timeout."""


@dataclass
class SocketIOOptions:
    """Where and how to connect; validated on creation (ClientOptionsError).

    `token` (a string or a provider, see core/tokens.py) is added to the CONNECT payload as
    `{"token": ...}` (with `auth`'s other fields); `stable_after` as for the WebSocket
    client (seconds open before the backoff starts over).
    """

    url: str
    path: str = "socket.io"
    namespaces: list[str] = field(default_factory=lambda: ["/"])
    auth: dict[str, Any] | None = None
    token: TokenProvider | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    transports: list[str] = field(default_factory=lambda: ["polling", "websocket"])
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    stable_after: float = 5.0
    connect_timeout: float = 10.0
    ack_timeout: float = 10.0
    insecure: bool = False
    rooms: list[str] = field(default_factory=list)
    join_event: str = "join"
    leave_event: str = "leave"
    local_addr: tuple[str, int] | None = None  # the source address to connect from

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ClientOptionsError naming the first option that cannot work."""
        try:
            parts = urllib.parse.urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except (ValueError, AttributeError) as exc:
            raise ClientOptionsError(f"malformed URL {self.url!r}: {exc}") from None
        if parts.scheme.lower() not in ("http", "https", "ws", "wss"):
            raise ClientOptionsError(
                f"a Socket.IO URL is http(s):// or ws(s)://, got {self.url!r}")
        if not parts.hostname:
            raise ClientOptionsError(f"no host in {self.url!r}")
        if parts.port == 0:
            raise ClientOptionsError("port 0 is not a port to connect to")
        if not self.path.strip("/"):
            raise ClientOptionsError("the Socket.IO path is empty")
        if not self.namespaces:
            self.namespaces = ["/"]
        self.namespaces = ["/" + ns.strip("/") if ns.strip("/") else "/"
                           for ns in self.namespaces]
        self.headers = [check_header(str(k), str(v)) for k, v in self.headers]
        if not self.transports or any(t not in TRANSPORTS for t in self.transports):
            raise ClientOptionsError(
                f"transports must be websocket and/or polling, got {self.transports}")
        if self.auth is not None and not isinstance(self.auth, dict):
            raise ClientOptionsError("the auth payload must be a JSON object")
        check_provider(self.token)
        check_stable_after(self.stable_after)
        for name in ("connect_timeout", "ack_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ClientOptionsError(f"{name.replace('_', ' ')} must be > 0, got {value}")

    @property
    def harness(self) -> bool:
        """Never the harness protocol (views ask ClientOptions-like objects this)."""
        return False

    @property
    def base_url(self) -> str:
        """The server's http(s) origin (python-socketio ignores the URL's path)."""
        parts = urllib.parse.urlsplit(self.url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
        return urllib.parse.urlunsplit((scheme, parts.netloc, "", parts.query, ""))


def options_from_url(url: str, **kwargs: Any) -> SocketIOOptions:
    """Options for a URL written the socket.io-client way: the path is the namespace,
    except a path ending in /socket.io, which is the Engine.IO path."""
    path = urllib.parse.urlsplit(url).path.strip("/")
    if path and "namespaces" not in kwargs and "path" not in kwargs:
        if path.split("/")[-1] == "socket.io":
            kwargs["path"] = path
        else:
            kwargs["namespaces"] = ["/" + path]
    return SocketIOOptions(url=url, **kwargs)


class _EngineIO(engineio.AsyncClient):
    """Engine.IO client that reports server pings as heartbeats."""

    on_ping: Callable[[], None] | None = None

    async def _receive_packet(self, pkt: Any) -> None:
        if pkt.packet_type == eio_packet.PING and self.on_ping is not None:
            self.on_ping()
        await super()._receive_packet(pkt)


class _TappedClient(socketio.AsyncClient):
    """AsyncClient that shows every packet to the driver and says when the link dropped."""

    _wsc_sessions: list[aiohttp.ClientSession]

    def __init__(self, driver: SocketIOClient, **kwargs: Any) -> None:
        self._driver = driver
        super().__init__(**kwargs)
        self.eio.on_ping = driver._on_ping

    def _engineio_client_class(self) -> type:
        return _EngineIO

    async def _send_packet(self, pkt: Any) -> None:
        encoded = pkt.encode()
        for part in encoded if isinstance(encoded, list) else [encoded]:
            self._driver._frame(Direction.OUT, part)
        await super()._send_packet(pkt)

    async def _handle_eio_message(self, data: Any) -> None:
        self._driver._frame(Direction.IN, data)
        await super()._handle_eio_message(data)

    async def _handle_error(self, namespace: Any, data: Any) -> None:
        self._driver._refused(namespace, data)
        await super()._handle_error(namespace, data)

    async def _handle_eio_disconnect(self, reason: Any) -> None:
        await super()._handle_eio_disconnect(reason)
        self._driver._dropped(str(reason) if reason else "transport closed")


class SocketIOClient(ConnectionDriver):
    """A Socket.IO client that reconnects per our backoff policy and reports every packet."""

    label = "socketio"
    closing_reason = "client disconnect"

    def __init__(self, options: SocketIOOptions, name: str = "socketio",
                 observers: Iterable[Observer] = ()) -> None:
        super().__init__(name, options.backoff, observers, grace=options.connect_timeout + 1,
                         stable_after=options.stable_after,
                         refreshable=can_refresh(options.token))
        self.options = options
        self.rooms: list[str] = list(dict.fromkeys(options.rooms))
        self.sid: str | None = None
        self.transport: str | None = None
        self._sio: _TappedClient | None = None
        self._gone: asyncio.Future[str] | None = None
        self._listeners: list[EventListener] = []
        self._refusals: list[str] = []  # CONNECT_ERROR reasons of the current attempt
        # the latest HTTP answer's (or upgrade's) headers, names in lower case
        self.response_headers: dict[str, str] = {}

    # -- listening

    def on_event(self, listener: EventListener) -> None:
        """Call `listener(namespace, event, args)` for every event the server emits."""
        self._listeners.append(listener)

    def _frame(self, direction: Direction, data: str | bytes) -> None:
        payload = data.encode() if isinstance(data, str) else bytes(data)
        opcode = Opcode.TEXT if isinstance(data, str) else Opcode.BINARY
        if direction is Direction.IN:
            self.stats.received += 1
            self.stats.bytes_in += len(payload)
        else:
            self.stats.sent += 1
            self.stats.bytes_out += len(payload)
        self._emit(FrameRecord(self.name, direction, opcode, payload))

    def _on_ping(self) -> None:
        self._emit(HeartbeatEvent(self.name, "ping_received"))

    def _dropped(self, reason: str) -> None:
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(reason)

    def _make_client(self) -> _TappedClient:
        sessions: list[aiohttp.ClientSession] = []

        async def answered(_session: Any, _context: Any, params: Any) -> None:
            self.response_headers = {k.lower(): v for k, v in params.response.headers.items()}

        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(answered)

        def http_session() -> aiohttp.ClientSession:
            # Like a browser, keep cookies set by an IP-address host (aiohttp refuses them by
            # default): a cookie-sticky balancer in front of 127.0.0.1 depends on it.
            # the connector's context trusts the local CA on loopback (core/tls.py)
            connector = aiohttp.TCPConnector(ssl=url_context(self.options.url),
                                             local_addr=self.options.local_addr)
            session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                            trace_configs=[trace], connector=connector)
            sessions.append(session)
            return session

        sio = _TappedClient(self, reconnection=False, handle_sigint=False,
                            ssl_verify=not self.options.insecure,
                            request_timeout=self.options.connect_timeout,
                            http_session=http_session)
        sio._wsc_sessions = sessions
        for ns in self.options.namespaces:
            sio.on("*", self._catch_all(ns), namespace=ns)
        self._refusals = []
        return sio

    def _refused(self, namespace: str | None, data: Any) -> None:
        """A CONNECT_ERROR packet: the server refused the namespace (auth, origin...)."""
        message = data.get("message") if isinstance(data, dict) else data
        namespace = namespace or "/"
        self._refusals.append(f"{namespace}: {message}" if message else namespace)

    def _catch_all(self, namespace: str) -> Callable[..., None]:
        def handler(event: str, *args: Any) -> None:
            for listener in list(self._listeners):
                try:
                    listener(namespace, event, args)
                except Exception:
                    log.exception("event listener %r failed", listener)
        return handler

    # -- the driver's hooks

    async def _goodbye(self, code: int, reason: str) -> bool:
        sio = self._sio
        if sio is None:
            return False
        # a task of its own: the driver abandons the client (cancelling its transport
        # tasks) as soon as the disconnect is seen, which must not cancel stop() itself
        bye = spawn(_quietly(sio.disconnect()), f"wsconsole-socketio-{self.name}-disconnect")
        await asyncio.wait([bye], timeout=self.options.connect_timeout)
        self._dropped("client disconnect")
        return True

    async def _release(self) -> None:
        sio, self._sio = self._sio, None
        if sio is not None:
            await _abandon(sio)

    async def _attempt(self) -> Failure:
        sio = self._make_client()
        self._gone = asyncio.get_running_loop().create_future()
        try:
            await self._open(sio)
        except BaseException:
            await _abandon(sio)
            raise
        self._sio = sio
        self.sid = sio.sid
        self.transport = sio.transport()
        self._opened(attempt=self.policy.attempt, reason=f"sid {sio.sid} via {self.transport}")
        for room in self.rooms:
            with contextlib.suppress(Exception):
                await sio.emit(self.options.join_event, room,
                               namespace=self.options.namespaces[0])
        reason = await self._gone
        self._sio = None
        self.sid = None
        await _abandon(sio)
        return Failure("closed", f"disconnected: {reason}", reason=reason)

    async def _open(self, sio: _TappedClient) -> None:
        opts = self.options
        timeout = opts.connect_timeout
        async with asyncio.timeout(timeout + 1):
            token = await fetch_token(opts.token)
            auth = opts.auth if token is None else {**(opts.auth or {}), "token": token}
            await sio.connect(
                opts.base_url,
                headers=dict(opts.headers),
                auth=auth,
                transports=list(opts.transports),
                namespaces=list(opts.namespaces),
                socketio_path=opts.path,
                wait_timeout=timeout,
            )

    async def _classify(self, exc: BaseException) -> Failure:
        """A failed connect as a Failure: the server's CONNECT_ERROR (about the credentials
        or not), its HTTP status, a protocol mismatch (sniffed), or the transport's error."""
        if isinstance(exc, TokenError):
            return Failure("auth", str(exc))
        text = " ".join(str(a) for a in getattr(exc, "args", ()) if a) or type(exc).__name__
        if self._refusals:  # the server answered CONNECT with CONNECT_ERROR and its reason
            return Failure("handshake_rejected", "connection refused by the server: "
                           + "; ".join(self._refusals),
                           auth=any(AUTH_WORDS.search(r) for r in self._refusals))
        if "namespaces failed" in text:
            return Failure("handshake_rejected", text)
        with contextlib.suppress(Exception):
            found = await self._sniff()
            if found is not None:
                return found
        if isinstance(exc, TimeoutError):
            return Failure("timeout", "timed out opening the connection")
        return Failure("protocol", text)

    async def _sniff(self) -> Failure | None:
        """What plain HTTP says is at the URL, when that explains the failure."""
        opts = self.options
        wait = min(3.0, opts.connect_timeout)
        verify = url_context(opts.url, insecure=opts.insecure)
        seen = await sniff(opts.url, socketio_path=opts.path, timeout=wait, verify=verify)
        if seen.kind == "unreachable":
            return Failure("refused", seen.detail)
        mismatch = mismatch_text("socketio", seen)
        if mismatch:
            return Failure("protocol_mismatch", mismatch)
        if seen.kind == "http":
            return Failure("handshake_rejected",
                           f"no Socket.IO server at /{opts.path}: {seen.detail}")
        if seen.kind == "socketio":  # it answers others: what does it say to us?
            status, body, retry_after = await engineio_handshake(
                opts.url, path=opts.path, headers=opts.headers, timeout=wait, verify=verify)
            if status != 200:
                return Failure("handshake_rejected", f"HTTP {status}: {body}".rstrip(": "),
                               status=status, retry_after=parse_retry_after(retry_after))
        return None

    # -- talking

    def _need_open(self) -> _TappedClient:
        sio = self._sio
        if sio is None or self.state is not State.OPEN:
            raise NotConnected(f"{self.name} is not connected (state {self.state.value})")
        return sio

    async def emit(self, event: str, *args: Any, namespace: str | None = None,
                   ack: bool = False, timeout: float | None = None) -> list[Any] | None:
        """Emit `event` with any number of args; with ack=True wait for and return the ack's
        arguments (AckTimeout after `timeout`, default options.ack_timeout)."""
        sio = self._need_open()
        ns = namespace or self.options.namespaces[0]
        data: Any = None
        if len(args) == 1 and not isinstance(args[0], tuple):
            data = args[0]
        elif args:
            data = tuple(args)  # python-socketio expands a tuple into separate arguments
        if not ack:
            await sio.emit(event, data, namespace=ns)
            return None
        reply: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def on_ack(*values: Any) -> None:
            if not reply.done():
                reply.set_result(list(values))

        await sio.emit(event, data, namespace=ns, callback=on_ack)
        wait = self.options.ack_timeout if timeout is None else timeout
        sent = time.monotonic()
        try:
            async with asyncio.timeout(wait):
                values = await reply
            self.latency = time.monotonic() - sent  # Socket.IO's round trip: emit to ack
            self.stats.acked += 1
            return values
        except TimeoutError:
            raise AckTimeout(f"no ack for {event!r} within {wait:g} s") from None

    async def send(self, data: str | bytes) -> None:
        """What socket.send() does in socket.io-client: emit a "message" event."""
        await self.emit("message", data)

    async def send_recorded(self, data: str | bytes) -> None:
        """Replay one recorded packet (as a HAR holds it, `42["ev",...]`): EVENT packets
        are emitted again on this connection; the rest (connect, pings, acks) belongs to
        the connection that recorded it and is skipped."""
        if isinstance(data, bytes):
            return
        text = data[1:] if data[:1] == "4" else data  # the Engine.IO "message" prefix
        try:
            pkt = sio_packet.Packet(encoded_packet=text)
        except Exception:
            return
        if pkt.packet_type == sio_packet.EVENT and pkt.data:
            await self.emit(pkt.data[0], *pkt.data[1:], namespace=pkt.namespace)

    async def join(self, room: str, ack: bool = False) -> list[Any] | None:
        """Emit the server's join event (options.join_event); re-joined after reconnects."""
        if room not in self.rooms:
            self.rooms.append(room)
        if self.state is not State.OPEN:
            return None
        return await self.emit(self.options.join_event, room, ack=ack)

    async def leave(self, room: str, ack: bool = False) -> list[Any] | None:
        """Emit the server's leave event and stop re-joining `room`."""
        with contextlib.suppress(ValueError):
            self.rooms.remove(room)
        if self.state is not State.OPEN:
            return None
        return await self.emit(self.options.leave_event, room, ack=ack)


async def _quietly(goodbye: Any) -> None:
    """Await a disconnect whose failure changes nothing (the client is dropped anyway)."""
    with contextlib.suppress(Exception):
        await goodbye


async def _abandon(sio: _TappedClient) -> None:
    """Drop a client, its transport tasks and every HTTP session it made, without waiting
    on a dead peer (a polling loop left running would open a fresh session later)."""
    eio = sio.eio
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            await eio.disconnect(abort=True)
    for task in (eio.read_loop_task, eio.write_loop_task):
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    for session in getattr(sio, "_wsc_sessions", []):
        if not session.closed:
            with contextlib.suppress(Exception):
                await session.close()
