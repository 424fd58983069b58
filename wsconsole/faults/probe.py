"""The probe: its own opening handshake on a raw socket, one catalogue case, a verdict.

`websockets` would refuse to send the catalogue's frames, so the probe speaks HTTP/1.1 and
RFC 6455 itself over an asyncio transport (TLS for wss://). Every step is bounded by
`ProbeConfig.timeout`: connecting, the handshake, and each wait for a reaction.

Verdicts (docs/faults.md):
- `pass`: the peer reacted as the catalogue expects (e.g. closed with 1002);
- `pass (lenient)`: a reaction the RFC tolerates but that is not the best one: a TCP drop
  without a close frame where a failure was due (RFC 6455 7.1.7 says SHOULD send a close
  frame), a documented alternative close code (1002 for invalid UTF-8, 1009 for a 64-bit
  length with its top bit set), a different `error` code for a harness-protocol mistake, or a
  close (e.g. an idle timeout) while the probe waited on an incomplete frame;
- `fail`: anything else (an echo of a malformed frame, silence where a failure was due, the
  wrong close code, a connection that died where it should have stayed open);
- `error`: the case could not be run (the handshake failed);
- `n/a`: the case does not apply (a server-to-client case, seen from a client).

`judge` is a pure function of an `Observation`, so the rules are tested without sockets.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import ipaddress
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from wsconsole.core.envelope import EnvelopeError, encode, parse_server
from wsconsole.core.frames import (
    FrameTooLarge,
    Opcode,
    ParsedFrame,
    close_payload,
    encode_frame,
    parse_frame,
)
from wsconsole.core.tls import client_context
from wsconsole.core.urls import url_problem
from wsconsole.faults.catalogue import (
    DEFAULT_MAX_SIZE,
    NO_STATUS,
    Case,
    Direction,
    Expectation,
    Reaction,
)

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
MAX_RESPONSE_HEAD = 64 * 1024
ALIVE_PREFIX = b"wsconsole-alive-"
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "sec-websocket-protocol"})

TokenVia = Literal["query", "header", "message"]


class TargetError(ValueError):
    """A URL or option that cannot name a WebSocket endpoint (bad usage: exit 2)."""


class HandshakeError(Exception):
    """The opening handshake did not complete; `kind` says how, `status` the HTTP status."""

    def __init__(self, kind: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where and how to connect; the options mean what they mean for `wsconsole connect`.

    The token goes in the query (`?token=`), an `Authorization: Bearer` header, or a first
    `{"type": "auth"}` message (`token_via`, connect's --token-mode).
    """

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    subprotocols: tuple[str, ...] = ()
    token: str | None = None
    token_via: TokenVia = "query"
    origin: str | None = None
    ca_file: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        problem = url_problem(self.url)
        if problem is not None:
            raise TargetError(problem)
        if self.token_via not in ("query", "header", "message"):
            raise TargetError("token_via is 'query', 'header' or 'message'")
        for name, value in self.headers:
            if not name or any(c in name for c in " :\r\n") or any(c in value for c in "\r\n"):
                raise TargetError(f"invalid header {name!r}")

    @property
    def secure(self) -> bool:
        """True for wss://."""
        return urlsplit(self.url).scheme == "wss"

    @property
    def host(self) -> str:
        """Host name or address, without brackets."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """Port, defaulting to 80 / 443."""
        return urlsplit(self.url).port or (443 if self.secure else 80)

    @property
    def is_loopback(self) -> bool:
        """True when the host is this machine (plain ws:// is expected there)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def has_credentials(self) -> bool:
        """True if a token or an Authorization / Cookie header identifies a user."""
        return self.token is not None or any(
            name.lower() in ("authorization", "cookie") for name, _ in self.headers
        )

    def resource(self) -> str:
        """The request target: path plus query, with the token appended when sent in the query."""
        parts = urlsplit(self.url)
        path = parts.path or "/"
        query = parts.query
        if self.token is not None and self.token_via == "query":
            query = (query + "&" if query else "") + "token=" + quote(self.token, safe="")
        return path + ("?" + query if query else "")

    def host_header(self) -> str:
        """The Host header value (port left out when it is the scheme's default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    def without_credentials(self) -> Target:
        """The same target with no token, no Authorization and no Cookie header."""
        kept = tuple(
            (n, v) for n, v in self.headers if n.lower() not in ("authorization", "cookie")
        )
        return replace(self, token=None, headers=kept)

    def with_origin(self, origin: str | None) -> Target:
        """The same target sending another Origin header (None: none at all)."""
        return replace(self, origin=origin)

    def with_scheme(self, scheme: str, port: int | None = None) -> Target:
        """The same target over another scheme (and optionally port)."""
        parts = urlsplit(self.url)
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = f"{host}:{port if port is not None else self.port}"
        if "@" in parts.netloc:
            netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
        url = urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))
        return replace(self, url=url)


@dataclass(frozen=True)
class ProbeConfig:
    """Limits of one probe run; every wait is bounded by `timeout` seconds."""

    timeout: float = 5.0  # connect, handshake, and each wait for a reaction
    silence: float = 1.0  # how long a peer must stay quiet on an incomplete frame
    max_size: int = DEFAULT_MAX_SIZE  # the size limit the peer is assumed to enforce
    read_limit: int = 16 * 1024 * 1024  # the largest frame the probe buffers from the peer
    close_timeout: float = 1.0  # after a close frame, how long the peer may take to end TCP


class _Pipe(asyncio.Protocol):
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


def build_request(target: Target, key: str) -> bytes:
    """The opening handshake request, headers in a fixed order."""
    lines = [
        f"GET {target.resource()} HTTP/1.1",
        f"Host: {target.host_header()}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "User-Agent: wsconsole-probe",
    ]
    if target.origin is not None:
        lines.append(f"Origin: {target.origin}")
    if target.subprotocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(target.subprotocols))
    if target.token is not None and target.token_via == "header":
        lines.append(f"Authorization: Bearer {target.token}")
    lines.extend(f"{name}: {value}" for name, value in target.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_response(head: bytes) -> tuple[int, str, dict[str, str]]:
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


def _ssl_context(target: Target) -> ssl.SSLContext | None:
    return client_context(target.ca_file, target.insecure) if target.secure else None


class RawConnection:
    """An open WebSocket connection driven frame by frame; the probe's side is the client."""

    def __init__(self, pipe: _Pipe, config: ProbeConfig, subprotocol: str | None) -> None:
        self.pipe = pipe
        self.config = config
        self.subprotocol = subprotocol
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


async def open_connection(target: Target, config: ProbeConfig) -> RawConnection:
    """TCP (+TLS) connect and the opening handshake, checked per RFC 6455 section 4.2.2."""
    loop = asyncio.get_running_loop()
    context = _ssl_context(target)
    try:
        _, pipe = await asyncio.wait_for(
            loop.create_connection(
                _Pipe,
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
    try:
        return await _handshake(pipe, target, config)
    except BaseException:
        if pipe.transport is not None:
            pipe.transport.abort()
        raise


async def _handshake(pipe: _Pipe, target: Target, config: ProbeConfig) -> RawConnection:
    key = base64.b64encode(os.urandom(16)).decode()
    assert pipe.transport is not None
    pipe.transport.write(build_request(target, key))
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
    status, reason, headers = _parse_response(head)
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
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("bad-extension", "server enabled an extension the probe never offered")
    conn = RawConnection(pipe, config, chosen)
    if target.token is not None and target.token_via == "message":
        # The harness protocol's first-message authentication (DESIGN.md); no reply follows.
        conn.send_frame(Opcode.TEXT, encode("auth", token=target.token).encode())
    return conn


# ---------------------------------------------------------------- observation and verdict


class Verdict(enum.StrEnum):
    """Outcome of one case."""

    PASS = "pass"
    LENIENT = "pass (lenient)"
    FAIL = "fail"
    ERROR = "error"
    NOT_APPLICABLE = "n/a"

    @property
    def ok(self) -> bool:
        """True for outcomes that do not fail a run."""
        return self in (Verdict.PASS, Verdict.LENIENT, Verdict.NOT_APPLICABLE)


@dataclass
class Observation:
    """What the peer did after the case was sent."""

    close_code: int | None = None  # NO_STATUS (1005) for an empty close frame
    close_reason: str = ""
    closed: bool = False  # a close frame arrived
    ended: str | None = None  # "eof", "reset" or None (still open)
    data: list[tuple[int, bytes]] = field(default_factory=list)  # data frames (opcode, payload)
    pongs: list[bytes] = field(default_factory=list)
    app_errors: list[str] = field(default_factory=list)  # `error` envelope codes received
    alive: bool | None = None  # answered a follow-up ping (None: not asked)
    waited: float = 0.0  # seconds spent waiting on a WAIT case
    timed_out: bool = False  # the primary wait reached its deadline
    write_error: str | None = None
    peer_violation: str | None = None  # the peer sent a frame a client must reject
    echoed: bool = False  # a data frame came back identical to the one sent

    def describe(self) -> str:
        """One line, e.g. "close 1002 'reserved bits must be 0'" or 'no reaction in 5 s'."""
        parts = []
        if self.closed:
            code = "no code" if self.close_code == NO_STATUS else str(self.close_code)
            parts.append(f"close {code}" + (f" {self.close_reason!r}" if self.close_reason else ""))
        if self.app_errors:
            parts.append("error reply " + ", ".join(self.app_errors))
        others = len(self.data) - len(self.app_errors) - int(self.echoed)
        if self.echoed:
            parts.append("echoed the frame back")
        if others > 0:
            parts.append(f"{others} data frame(s)")
        if self.pongs:
            shown = [p[:20] for p in self.pongs if not p.startswith(ALIVE_PREFIX)]
            if shown:
                parts.append("pong " + ", ".join(repr(p) for p in shown))
        if self.peer_violation:
            parts.append(f"peer sent {self.peer_violation}")
        if self.ended and not self.closed:
            parts.append("TCP dropped without a close frame" if self.ended == "reset"
                         else "TCP closed without a close frame")
        if self.alive:
            parts.append("still open")
        elif self.alive is False and not self.ended and not self.closed:
            parts.append("no answer to a ping")
        if self.timed_out and not parts:
            parts.append("no reaction")
        if self.waited and not (self.closed or self.ended or self.data):
            parts.append(f"silent for {self.waited:.1f} s")
        if self.write_error:
            parts.append(f"write failed ({self.write_error})")
        return "; ".join(parts) or "nothing"


def judge(expected: Expectation, seen: Observation) -> tuple[Verdict, str]:
    """Verdict of an observation against an expectation, with the reason in plain words."""
    reaction = expected.reaction
    if seen.peer_violation:
        return Verdict.FAIL, f"the peer itself sent {seen.peer_violation}"
    if reaction is Reaction.FAIL:
        if seen.closed:
            if seen.close_code in expected.codes:
                return Verdict.PASS, "failed the connection with the expected code"
            if seen.close_code in expected.lenient:
                return Verdict.LENIENT, f"closed with {seen.close_code}, an accepted alternative"
            return Verdict.FAIL, f"closed with {seen.close_code}, expected {expected.describe()}"
        if seen.ended:
            return Verdict.LENIENT, "dropped TCP without a close frame"
        return Verdict.FAIL, "did not fail the connection"
    if reaction is Reaction.CLOSE:
        if not seen.closed:
            return Verdict.FAIL, "no close frame in reply"
        if seen.data:
            return Verdict.FAIL, "sent data after the close"
        if seen.close_code in expected.codes:
            return Verdict.PASS, "completed the closing handshake"
        return Verdict.FAIL, f"answered with close {seen.close_code}"
    if reaction is Reaction.WAIT:
        if seen.data:
            return Verdict.FAIL, "acted on an incomplete frame"
        if seen.closed or seen.ended:
            return Verdict.LENIENT, "closed the connection while the frame was incomplete"
        return Verdict.PASS, "waited for the rest of the frame"
    if seen.closed or seen.ended:
        return Verdict.FAIL, "closed a connection that should have stayed open"
    if reaction is Reaction.ECHO:
        if expected.echo not in seen.pongs:
            wrong = [p for p in seen.pongs if not p.startswith(ALIVE_PREFIX)]
            return Verdict.FAIL, "pong payload differs" if wrong else "no pong"
        if not seen.alive:
            return Verdict.FAIL, "stopped answering after the pong"
        return Verdict.PASS, "echoed the ping payload"
    if not seen.alive:
        return Verdict.FAIL, "stopped answering pings"
    if reaction is Reaction.IGNORE:
        if seen.data:
            return Verdict.FAIL, "replied to a frame it should ignore"
        return Verdict.PASS, "ignored it and stayed open"
    if reaction is Reaction.APP_ERROR:
        if expected.error_code in seen.app_errors:
            return Verdict.PASS, "error reply with the expected code"
        if seen.app_errors:
            return Verdict.LENIENT, f"error reply {seen.app_errors[0]}, not {expected.error_code}"
        if seen.echoed:
            return Verdict.FAIL, "echoed invalid input instead of an error reply"
        return Verdict.FAIL, "no error reply"
    return Verdict.PASS, "accepted it and stayed open"


def _error_code(frame: ParsedFrame) -> str | None:
    """The code of an `error` envelope in a text frame, else None."""
    if frame.opcode != Opcode.TEXT:
        return None
    try:
        envelope = parse_server(frame.payload)
    except EnvelopeError:
        return None
    return str(envelope["code"]) if envelope["type"] == "error" else None


class Watcher:
    """Reads the peer's frames into an Observation, answering the peer's own pings."""

    def __init__(self, conn: RawConnection, seen: Observation, answer_pings: bool = True) -> None:
        self.conn = conn
        self.seen = seen
        # False while the peer is inside an incomplete frame: a pong would become its payload.
        self.answer_pings = answer_pings

    def _take(self, frame: ParsedFrame) -> None:
        seen = self.seen
        if frame.masked and seen.peer_violation is None:
            seen.peer_violation = "a masked frame"
        if frame.opcode == Opcode.CLOSE:
            if not seen.closed:
                seen.closed = True
                seen.close_code = frame.close_code if frame.payload else NO_STATUS
                seen.close_reason = frame.close_reason
                # Complete the closing handshake as a client does (RFC 6455 5.5.1).
                if len(frame.payload) >= 2:
                    self.conn.send_close(frame.close_code, "")
                else:
                    self.conn.send_close(None)
        elif frame.opcode == Opcode.PING:
            if self.answer_pings and not self.conn.close_sent:
                self.conn.send_frame(Opcode.PONG, frame.payload)
        elif frame.opcode == Opcode.PONG:
            seen.pongs.append(frame.payload)
        else:  # data frames count even after a close: a peer must not send them then either
            seen.data.append((frame.opcode, frame.payload))
            code = _error_code(frame)
            if code is not None:
                seen.app_errors.append(code)

    async def until(self, stop: Callable[[], bool], deadline: float) -> bool:
        """Read frames until `stop()` holds, the stream ends, or the deadline; True if stopped.

        A peer caught sending a frame no server may send ends the wait too: the verdict is
        already a failure.
        """
        while not stop():
            if self.seen.peer_violation:
                return False
            item = await self.conn.next_frame(deadline)
            if item == "timeout":
                self.seen.timed_out = True
                return False
            if item == "end":
                if self.seen.ended is None:
                    self.seen.ended = "reset" if self.conn.pipe.error else "eof"
                return stop()
            self._take(item)
        return True

    async def ping_alive(self, timeout: float) -> bool:
        """Send a marked ping and wait for its pong: proof the peer still serves us."""
        marker = ALIVE_PREFIX + os.urandom(4).hex().encode()
        if self.seen.closed or self.seen.ended or not self.conn.send_frame(Opcode.PING, marker):
            self.seen.alive = False
            return False
        deadline = self.conn.loop_time + timeout
        await self.until(lambda: marker in self.seen.pongs or self.seen.closed, deadline)
        self.seen.alive = marker in self.seen.pongs and not self.seen.closed
        return self.seen.alive


@dataclass
class CaseResult:
    """One case's outcome, ready for --json, JUnit and the GUI's history."""

    case: Case
    verdict: Verdict
    observed: str
    reason: str
    duration: float
    observation: Observation | None = None  # None when the case did not run

    def as_dict(self) -> dict[str, object]:
        """The --json record of the case."""
        return {
            "id": self.case.id,
            "rfc": self.case.section,
            "expected": self.case.expected.describe(),
            "observed": self.observed,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "duration_ms": round(self.duration * 1000, 1),
        }


async def observe(conn: RawConnection, case: Case, config: ProbeConfig) -> Observation:
    """Send the case's bytes and watch the peer react, each wait bounded by the config."""
    seen = Observation()
    expected = case.expected
    reaction = expected.reaction
    watcher = Watcher(conn, seen, answer_pings=reaction is not Reaction.WAIT)
    chunks = case.chunks(Direction.CLIENT_TO_SERVER, mask_key=os.urandom(4),
                         max_size=config.max_size)
    for chunk in chunks:
        if not conn.send(chunk):
            seen.write_error = "connection already closed"
            break
        await asyncio.sleep(0)  # let a reaction to an earlier chunk arrive in between
    loop_time = conn.loop_time
    deadline = loop_time + config.timeout

    def ended() -> bool:
        return seen.closed or seen.ended is not None

    if reaction in (Reaction.FAIL, Reaction.CLOSE):
        await watcher.until(ended, deadline)
        if seen.closed and not seen.ended:
            # Give the peer a moment to close TCP after its close frame (and catch late data).
            await watcher.until(lambda: seen.ended is not None,
                                conn.loop_time + min(config.timeout, config.close_timeout))
            seen.timed_out = False
    elif reaction is Reaction.WAIT:
        start = conn.loop_time
        await watcher.until(lambda: ended() or bool(seen.data),
                            start + min(config.silence, config.timeout))
        seen.waited = conn.loop_time - start
        seen.timed_out = False
    elif reaction is Reaction.ECHO:
        await watcher.until(lambda: ended() or expected.echo in seen.pongs, deadline)
    elif reaction is Reaction.APP_ERROR:
        first = parse_frame(b"".join(chunks))
        sent = first[0].payload if first else None

        def answered() -> bool:
            seen.echoed = any(payload == sent for _, payload in seen.data)
            return ended() or bool(seen.app_errors) or seen.echoed

        await watcher.until(answered, deadline)
    if reaction in (Reaction.ECHO, Reaction.ACCEPT, Reaction.IGNORE, Reaction.APP_ERROR):
        await watcher.ping_alive(config.timeout)
    return seen


async def run_case(case: Case, target: Target, config: ProbeConfig | None = None) -> CaseResult:
    """Open a fresh connection, run one case, judge it; never raises for a peer's behaviour."""
    config = config or ProbeConfig()
    started = time.monotonic()
    if not case.applies_to(Direction.CLIENT_TO_SERVER):
        return CaseResult(case, Verdict.NOT_APPLICABLE, "not run",
                          "a server-to-client case: inject it from a harness node", 0.0)
    try:
        conn = await open_connection(target, config)
    except HandshakeError as exc:
        return CaseResult(case, Verdict.ERROR, f"handshake failed: {exc.detail}",
                          "could not open a connection", time.monotonic() - started)
    try:
        seen = await observe(conn, case, config)
    finally:
        await conn.close()
    verdict, reason = judge(case.expected, seen)
    return CaseResult(case, verdict, seen.describe(), reason, time.monotonic() - started, seen)


async def run_cases(
    cases: Iterable[Case],
    target: Target,
    config: ProbeConfig | None = None,
    on_result: Callable[[CaseResult], Awaitable[None] | None] | None = None,
) -> list[CaseResult]:
    """Run cases one after another (one connection each); `on_result` sees each as it ends."""
    results = []
    for case in cases:
        result = await run_case(case, target, config)
        results.append(result)
        if on_result is not None:
            maybe = on_result(result)
            if asyncio.iscoroutine(maybe):
                await maybe
    return results


async def preflight(target: Target, config: ProbeConfig | None = None) -> str | None:
    """Check that the target speaks WebSocket at all: None if it does, else why not."""
    config = config or ProbeConfig()
    try:
        conn = await open_connection(target, config)
    except HandshakeError as exc:
        return exc.detail
    await conn.close()
    return None


def summarize(results: Iterable[CaseResult]) -> dict[str, int]:
    """Counts per outcome, the --json summary line's fields."""
    counts = {"total": 0, "passed": 0, "lenient": 0, "failed": 0, "errors": 0, "skipped": 0}
    key = {
        Verdict.PASS: "passed",
        Verdict.LENIENT: "lenient",
        Verdict.FAIL: "failed",
        Verdict.ERROR: "errors",
        Verdict.NOT_APPLICABLE: "skipped",
    }
    for result in results:
        counts["total"] += 1
        counts[key[result.verdict]] += 1
    return counts
