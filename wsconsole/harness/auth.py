"""Harness authentication: HS256 JWTs signed with a per-cluster secret, per-room claims.

A token carries `sub` (the user), `rooms` (fnmatch patterns the user may join and publish
to, default `["*"]`), `iat` and `exp`. Nodes get the secret through the environment
(`SECRET_ENV`), never their command line, so `ps` does not show it.
"""

from __future__ import annotations

import base64
import functools
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import parse_qs, urlsplit

import jwt

from wsconsole.errors import WsconsoleError

SECRET_ENV = "WSCONSOLE_JWT_SECRET"
ALGORITHM = "HS256"
MAX_TOKEN = 8192  # a longer "token" is refused before any parsing


class AuthError(WsconsoleError):
    """A token was refused; `reason` is a short plain-words cause safe to show the peer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: who the user is, which rooms, until when (epoch seconds)."""

    user: str
    rooms: tuple[str, ...]
    exp: float

    def expired(self, now: float | None = None) -> bool:
        """True once the token's expiry has passed (long-lived connections re-check it)."""
        return (time.time() if now is None else now) >= self.exp


def new_secret() -> str:
    """A fresh random per-cluster secret (256 bits, the HS256 recommended minimum)."""
    return secrets.token_urlsafe(32)


def issue_token(
    secret: str,
    user: str,
    rooms: Iterable[str] = ("*",),
    ttl: float = 3600.0,
    now: float | None = None,
) -> str:
    """Sign a token for `user` allowed into `rooms` (fnmatch patterns) for `ttl` seconds."""
    if not user:
        raise ValueError("a token needs a non-empty user")
    issued = time.time() if now is None else now
    payload = {"sub": user, "rooms": list(rooms), "iat": int(issued), "exp": issued + ttl}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


@functools.lru_cache(maxsize=16)
def _verifying_key(secret: str) -> jwt.PyJWK:
    """The HS256 key of `secret`, prepared once: given the secret itself, PyJWT prepares
    the key again on every decode (a node verifies a token per handshake)."""
    encoded = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
    return jwt.PyJWK({"kty": "oct", "k": encoded, "alg": ALGORITHM})


VERIFIED_TOKENS = 1024  # the most recent good tokens kept verified (about 400 bytes each)


def verify_token(secret: str, token: str, now: float | None = None) -> Claims:
    """Check signature, expiry and shape of a token; raise AuthError(reason) if refused.

    A token seen before (the last `VERIFIED_TOKENS` good ones, keyed by the secret and
    the raw token: a client reconnecting, a refreshed `auth`) is not verified again, only
    its expiry is checked (the one claim that changes with time once a token verified:
    `nbf` and `iat` only refuse a token until a moment, and a refused token is never
    kept). A changed secret verifies everything again."""
    if not isinstance(token, str) or not token:
        raise AuthError("missing token")
    if len(token) > MAX_TOKEN:
        raise AuthError("malformed token")
    claims = _verified(secret, token)
    if claims.expired(now):
        raise AuthError("token expired")
    return claims


@functools.lru_cache(maxsize=VERIFIED_TOKENS)
def _verified(secret: str, token: str) -> Claims:
    """The claims of a token whose signature and shape are good (PyJWT's checks, about
    30 µs); AuthError, never cached, when they are not."""
    try:
        payload = jwt.decode(token, _verifying_key(secret), algorithms=[ALGORITHM],
                             options={"require": ["exp", "sub"]})  # fmt: skip
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError("bad signature") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"malformed token: missing claim {exc.claim}") from None
    except jwt.InvalidTokenError:
        raise AuthError("malformed token") from None
    user = payload.get("sub")
    rooms = payload.get("rooms", ["*"])
    if not isinstance(user, str) or not user:
        raise AuthError("malformed token: bad sub")
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise AuthError("malformed token: rooms must be a list of strings")
    return Claims(user=user, rooms=_shared(tuple(rooms)), exp=float(payload["exp"]))


@functools.lru_cache(maxsize=256)
def _shared(rooms: tuple[str, ...]) -> tuple[str, ...]:
    """One tuple for equal room patterns: most tokens of a deployment carry the same few,
    and every connection keeps its token's claims."""
    return rooms


def room_allowed(claims: Claims, room: str) -> bool:
    """Whether the token's `rooms` patterns (case-sensitive fnmatch) admit `room`."""
    return any(fnmatchcase(room, pattern) for pattern in claims.rooms)


def token_from_request(path: str, headers: Mapping[str, str]) -> str | None:
    """The token a handshake carries: query parameter `token`, else `Authorization: Bearer`."""
    query = parse_qs(urlsplit(path).query)
    values = query.get("token")
    if values:
        return values[0]
    header = headers.get("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
