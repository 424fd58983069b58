"""The WebSocket client's options, validated once on creation, and the header checks every
target shares (RFC 7230 names; no line break or NUL in a value)."""

from __future__ import annotations

import re
import ssl
import urllib.parse
from dataclasses import dataclass, field

from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from wsconsole.core import envelope
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.errors import ClientOptionsError
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.tls import url_context
from wsconsole.core.tokens import TOKEN_MODES, TokenMode, TokenProvider, check_provider
from wsconsole.core.urls import url_problem

_TOKEN_CHARS = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 tchar
# RFC 9110 section 5.5: no control character in a field value, except the tab
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def is_token(text: str) -> bool:
    """True for an HTTP token (RFC 9110 tchar): header names, subprotocol names."""
    return bool(_TOKEN_CHARS.match(text))


def check_stable_after(value: object) -> None:
    """Raise ClientOptionsError unless `value` is a number of seconds >= 0."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ClientOptionsError(f"stable after must be a number of seconds >= 0, got {value!r}")


def parse_header(line: str) -> tuple[str, str]:
    """Split "Name: value" into a validated pair (raises ClientOptionsError)."""
    name, sep, value = line.partition(":")
    if not sep:
        raise ClientOptionsError(f"header {line!r} has no ':' (expected 'Name: value')")
    return check_header(name.strip(), value.strip())


def check_header(name: str, value: str) -> tuple[str, str]:
    """The pair itself when `name` is a token and `value` a valid field value: no control
    character but the tab. Stricter than "no CR, LF or NUL" on purpose: a server (and h11,
    which the SSE client sends with) refuses the others anyway, later and less clearly."""
    if not name or not is_token(name):
        raise ClientOptionsError(f"invalid header name {name!r}")
    found = _CONTROL.search(value)
    if found:
        char = found.group()
        what = ("a line break" if char in "\r\n" else "a NUL" if char == "\0"
                else f"a control character ({ord(char):#04x})")
        raise ClientOptionsError(f"header {name} has {what} in its value (of the control "
                                 "characters only the tab is allowed)")
    return name, value


@dataclass
class ClientOptions:
    """Everything needed to (re)connect; validated on creation (ClientOptionsError).

    `token`: a string, or a provider asked before every connect (a callback,
    `tokens.CommandToken`, `tokens.UrlToken`), which can also give a fresh token when the
    server refuses the credentials. `stable_after`: seconds a connection must stay open
    before the backoff starts over (0: every open resets it). `pongs`: how the server's pings
    are answered (core/heartbeat.py; the heartbeat lab can change it while connected).
    `read_size`: the most bytes taken from the socket in one read (None: the event loop's
    own, 256 KiB for asyncio). Every frame of a read is handled in one loop callback, so a
    smaller read keeps a flood from holding the loop (the window's timers and paint) for
    long (the window's lag at a flood is measured in docs/benchmarks.md).
    """

    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    subprotocols: list[str] = field(default_factory=list)
    origin: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    connect_timeout: float = 10.0
    max_size: int | None = 2**20
    token: TokenProvider | None = None
    token_mode: TokenMode = "query"
    harness: bool = False
    rooms: list[str] = field(default_factory=list)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    stable_after: float = 5.0
    ping_interval: float | None = 25.0
    ping_timeout: float = 10.0
    close_timeout: float = 2.0
    queue_limit: int | None = 10_000
    local_addr: tuple[str, int] | None = None
    compression: bool = True
    rpc_timeout: float = 10.0
    pongs: PongPolicy = field(default_factory=PongPolicy)
    read_size: int | None = 16 * 1024

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ClientOptionsError naming the first option that cannot work."""
        problem = url_problem(self.url)
        if problem is not None:
            raise ClientOptionsError(problem)
        try:
            parse_uri(self.url)
        except InvalidURI as exc:
            raise ClientOptionsError(f"malformed URL {self.url!r}: {exc}") from None
        self.headers = [check_header(str(k), str(v)) for k, v in self.headers]
        for proto in self.subprotocols:
            if not proto or not is_token(proto):
                raise ClientOptionsError(f"invalid subprotocol {proto!r}")
        if self.origin is not None:
            parts = urllib.parse.urlsplit(self.origin)
            if not parts.scheme or not parts.netloc:
                raise ClientOptionsError(f"origin {self.origin!r} is not like https://host")
        if self.ca_file is not None:
            try:
                with open(self.ca_file, "rb"):
                    pass
            except OSError as exc:
                raise ClientOptionsError(f"cannot read CA file {self.ca_file}: {exc}") from None
        if self.token_mode not in TOKEN_MODES:
            raise ClientOptionsError(
                f"token mode must be query, header or message, got {self.token_mode!r}"
            )
        check_provider(self.token)
        self._check_numbers()
        for room in self.rooms:
            if not isinstance(room, str) or not room or len(room) > envelope.MAX_NAME:
                raise ClientOptionsError(f"invalid room name {room!r}")

    def _check_numbers(self) -> None:
        for name in ("connect_timeout", "ping_timeout", "close_timeout", "rpc_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ClientOptionsError(f"{name.replace('_', ' ')} must be > 0, got {value}")
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise ClientOptionsError(f"ping interval must be > 0, got {self.ping_interval}")
        if self.max_size is not None and self.max_size < 1:
            raise ClientOptionsError(f"max size must be >= 1 or None, got {self.max_size}")
        if self.read_size is not None and self.read_size < 1024:
            raise ClientOptionsError(f"read size must be >= 1024 or None, got {self.read_size}")
        if self.queue_limit is not None and self.queue_limit < 0:
            raise ClientOptionsError(f"queue limit must be >= 0 or None, got {self.queue_limit}")
        if not isinstance(self.backoff, BackoffPolicy):
            raise ClientOptionsError("backoff must be a BackoffPolicy")
        if not isinstance(self.pongs, PongPolicy):
            raise ClientOptionsError("pongs must be a PongPolicy")
        check_stable_after(self.stable_after)

    @property
    def secure(self) -> bool:
        """True for wss:// URLs."""
        return self.url.lower().startswith("wss:")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for wss:// (custom CA file or insecure; the local CA for a
        loopback host), None for ws://."""
        return url_context(self.url, self.ca_file, self.insecure) if self.secure else None
