"""What the probe talks to and within which limits: `Target` (URL, credentials, headers,
TLS trust; the options mean what they mean for `wsconsole connect`) and `ProbeConfig`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from wsconsole.core.errors import ClientOptionsError
from wsconsole.core.options import check_header
from wsconsole.core.urls import is_loopback, url_problem
from wsconsole.errors import WsconsoleError
from wsconsole.faults.case import DEFAULT_MAX_SIZE, Request

TokenVia = Literal["query", "header", "message"]


class TargetError(WsconsoleError, ValueError):
    """A URL or option that cannot name a WebSocket endpoint (bad usage: exit 2)."""



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
            try:
                check_header(name, value)  # the one header rule of every client
            except ClientOptionsError as exc:
                raise TargetError(str(exc)) from None

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
        return is_loopback(self.host)

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

    def request(self, key: str, extensions: str | None = None) -> Request:
        """The handshake request's parts for this target (headers in a fixed order)."""
        extra = ["User-Agent: wsconsole-probe"]
        if self.origin is not None:
            extra.append(f"Origin: {self.origin}")
        if self.subprotocols:
            extra.append("Sec-WebSocket-Protocol: " + ", ".join(self.subprotocols))
        if extensions:
            extra.append(f"Sec-WebSocket-Extensions: {extensions}")
        if self.token is not None and self.token_via == "header":
            extra.append(f"Authorization: Bearer {self.token}")
        extra.extend(f"{name}: {value}" for name, value in self.headers)
        return Request(self.resource(), self.host_header(), key, tuple(extra))

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


