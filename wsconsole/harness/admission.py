"""Who may connect to a harness node: the handshake checks and the connection limits.

Pure decisions, shared by both node flavours: the node asks, `Admission` answers with the
`Claims` a token carries, nothing (come in), or a `Refusal` saying how to turn the client
away — an HTTP status at the handshake, or a close code once the connection is open.

At the handshake, in this order (the first that applies answers):
- draining: 503 "draining", so a balancer's next try goes to another node;
- no `Host` header: 400 (HTTP/1.1 requires it, RFC 9112 3.2; `websockets` accepts it);
- a `Sec-WebSocket-Version` other than 13: 426 with `Sec-WebSocket-Version: 13`, the
  version this server speaks (RFC 6455 4.2.2; `websockets` answers 400 without it);
- Origin allow-list: no Origin (non-browser clients) and http(s) on localhost / 127.0.0.1,
  plus the configured origins (`*` allows any); more than one Origin: 400, else 403;
- a token (query parameter `token`, else `Authorization: Bearer`) that does not verify:
  401. No token is no refusal: the client may authenticate with a first message.

Once open: beyond the node's soft limit, or one connection too many for a user across the
cluster, the connection closes with 1013 "try again later" — both limits free themselves as
other connections end, so a retry later can succeed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from websockets.datastructures import MultipleValuesError

from wsconsole.harness.auth import AuthError, Claims, token_from_request, verify_token
from wsconsole.harness.nodeconfig import NodeConfig

WEBSOCKET_VERSION = "13"
_LOCAL_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1)(:\d{1,5})?")


class HandshakeHeaders(Protocol):
    """The request headers as `websockets` gives them (`get` raises on repeated names)."""

    def get(self, key: str, default: str | None = None) -> str | None:
        """The one value of header `key` (MultipleValuesError if repeated), else `default`."""

    def get_all(self, key: str) -> list[str]:
        """Every value of header `key`, in order."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A client turned away: an HTTP status at the handshake, or a close code after it."""

    code: int
    reason: str  # plain words for the peer: the HTTP body or the close reason
    counts_as: str | None = None  # the node's error counter it counts under, if any
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def auth(self) -> bool:
        """Whether it is a refused authentication (counted as an auth failure too)."""
        return self.counts_as == "auth"


DRAINING = Refusal(503, "draining")


def origin_allowed(origin: str | None, extra: Sequence[str] = ()) -> bool:
    """DESIGN.md default allow-list: no Origin, http(s)://localhost|127.0.0.1[:port], extras."""
    if origin is None or "*" in extra:
        return True
    origin = origin.lower().rstrip("/")
    return bool(_LOCAL_ORIGIN.fullmatch(origin)) or origin in {o.lower() for o in extra}


class Admission:
    """The admission policy of one node; every limit `None` means "no limit"."""

    def __init__(
        self,
        *,
        auth: bool,
        secret: str | None,
        origins: Sequence[str] = (),
        soft_limit: int | None = None,
        per_user: int | None = None,
    ) -> None:
        self.auth = auth
        self.secret = secret or ""
        self.origins = tuple(origins)
        self.soft_limit = soft_limit
        self.per_user = per_user

    @classmethod
    def of(cls, config: NodeConfig) -> Admission:
        """The admission policy a node's settings describe (either flavour)."""
        return cls(
            auth=config.auth,
            secret=config.secret,
            origins=config.origins,
            soft_limit=config.soft_limit,
            per_user=config.per_user,
        )

    # -- at the handshake -----------------------------------------------------------------
    def handshake(
        self, path: str, headers: HandshakeHeaders, *, draining: bool = False
    ) -> Refusal | Claims | None:
        """Check an upgrade request: a Refusal, or the Claims of its token (None: no token)."""
        if draining:
            return DRAINING
        refusal = self._http_checks(headers)
        if refusal is not None:
            return refusal
        if not self.auth:
            return None
        try:
            token = token_from_request(path, headers)  # type: ignore[arg-type]
        except MultipleValuesError:
            token = ""
        return None if token is None else self._claims(token)

    def _http_checks(self, headers: HandshakeHeaders) -> Refusal | None:
        if not headers.get_all("Host"):
            return Refusal(400, "a request needs a Host header", "handshake")
        versions = headers.get_all("Sec-WebSocket-Version")
        if versions and versions != [WEBSOCKET_VERSION]:
            return Refusal(
                426,
                f"unsupported WebSocket version; this server speaks {WEBSOCKET_VERSION}",
                "handshake",
                (("Sec-WebSocket-Version", WEBSOCKET_VERSION),),
            )
        try:
            origin = headers.get("Origin")
        except MultipleValuesError:
            return Refusal(400, "more than one Origin header", "origin")
        if not self.origin_allowed(origin):
            return Refusal(403, "origin not allowed", "origin")
        return None

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a browser page from `origin` may connect."""
        return origin_allowed(origin, self.origins)

    def verify(self, token: str) -> Claims:
        """The verified claims of a token; AuthError (with a reason for the peer) if refused."""
        return verify_token(self.secret, token)

    def _claims(self, token: str) -> Claims | Refusal:
        try:
            return self.verify(token)
        except AuthError as exc:
            return Refusal(401, f"unauthorized: {exc.reason}", "auth")

    def token_of(self, query: str, headers: Mapping[str, str]) -> str | None:
        """The token of a request given its query string (without '?') and headers."""
        return token_from_request("?" + query, headers)

    # -- once open ------------------------------------------------------------------------
    def over_capacity(self, open_connections: int) -> Refusal | None:
        """A 1013 Refusal when the node already holds its soft limit of connections."""
        if self.soft_limit is not None and open_connections >= self.soft_limit:
            return Refusal(1013, f"node at capacity ({self.soft_limit} connections)", "soft_limit")
        return None

    def user_limit_reached(self) -> Refusal:
        """The 1013 Refusal for one connection too many for a user across the cluster."""
        reason = f"too many connections for this user ({self.per_user})"
        return Refusal(1013, reason, "per_user_limit")
