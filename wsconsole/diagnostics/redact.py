"""Remove secrets from everything that goes into a support bundle.

Three nets, applied together by `Redactor`:
- by name: a query parameter, header, settings key or JSON key that names a secret (token,
  access_token, api_key, password, secret, authorization, cookie, ...) keeps its name and
  loses its value;
- by shape: anything that looks like a JWT, a `Bearer ...` credential or `user:password@`
  in a URL is replaced wherever it appears in free text (logs, frames, error messages);
- by value: every secret the run was given (the --token, header values) is replaced
  verbatim wherever it appears, so a token echoed by a server in a frame is caught too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

MASK = "[REDACTED]"
SECRET_WORDS = (
    "token", "password", "passwd", "pwd", "secret", "authorization", "auth", "cookie",
    "api_key", "apikey", "api-key", "access_key", "private_key", "credential", "session",
    "signature", "sig", "jwt", "bearer", "key",
)
# names that contain a secret word but are not secrets
NOT_SECRET = frozenset({
    "sec-websocket-key", "sec-websocket-accept", "keepalive", "keep-alive", "monkey",
    "token_mode", "token_via", "token-mode", "auth_timeout", "max_attempts",
})
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
_QUERY_PAIR = re.compile(r"(?i)([?&;]|\b)([a-z0-9_.-]*(?:token|key|secret|password|passwd|"
                         r"pwd|sig|signature|session|auth)[a-z0-9_.-]*)=([^&\s\"'#<>]+)")

_JSON_PAIR = re.compile(r'(\\?"([A-Za-z0-9_.-]+)\\?"\s*:\s*\\?")(.*?)(\\?")')


def _mask_json_pair(match: re.Match[str]) -> str:
    if not is_secret_name(match.group(2)) or not match.group(3):
        return match.group(0)
    return f"{match.group(1)}{MASK}{match.group(4)}"


def is_secret_name(name: str) -> bool:
    """True when a key, header or parameter name says its value is a secret."""
    lowered = name.strip().lower()
    if lowered in NOT_SECRET:
        return False
    parts = re.split(r"[^a-z0-9]+", lowered)
    joined = lowered.replace("-", "_")
    return any(word in parts or word in joined.split("_") for word in SECRET_WORDS) or any(
        word in lowered for word in ("token", "password", "secret", "apikey", "api_key",
                                      "authorization", "cookie", "passwd")
    )


class Redactor:
    """Redacts URLs, headers, mappings and free text; knows the run's own secret values."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets: set[str] = set()
        for value in secrets:
            self.add(value)

    def add(self, value: str | None) -> None:
        """Remember a secret value (and its URL-encoded form) to scrub verbatim."""
        if value and len(value) >= 4:
            self.secrets.add(value)
            self.secrets.add(quote(value, safe=""))
            if value.lower().startswith(("bearer ", "basic ")):
                self.add(value.split(" ", 1)[1])

    def learn_url(self, url: str) -> None:
        """Remember the secret query values and the password of a URL."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if is_secret_name(name):
                self.add(value)
        self.add(parts.password)

    def learn_headers(self, headers: Iterable[tuple[str, str]]) -> None:
        """Remember the values of secret headers."""
        for name, value in headers:
            if is_secret_name(name):
                self.add(value)

    def text(self, value: str) -> str:
        """Free text with every known secret, JWT, bearer credential and secret query value
        masked."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            value = value.replace(secret, MASK)
        value = _JSON_PAIR.sub(_mask_json_pair, value)
        value = _JWT.sub(MASK, value)
        value = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", value)
        value = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", value)
        return _QUERY_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}={MASK}", value)

    def url(self, url: str) -> str:
        """A URL with secret query values and any password masked (names kept)."""
        try:
            parts = urlsplit(url)
            pairs = parse_qsl(parts.query, keep_blank_values=True)
        except ValueError:
            return self.text(url)
        query = urlencode([(n, MASK if is_secret_name(n) else v) for n, v in pairs], safe="[]")
        netloc = parts.netloc
        if "@" in netloc:
            netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
        return self.text(urlunsplit((parts.scheme, netloc, parts.path, unquote(query) if
                                     MASK in unquote(query) else query, parts.fragment)))

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Header pairs with secret values masked (names kept)."""
        return [(n, MASK if is_secret_name(n) else self.text(v)) for n, v in headers]

    def value(self, data: Any, name: str = "") -> Any:
        """A JSON-like structure with secret keys masked and every string scrubbed."""
        if name and is_secret_name(name) and data not in (None, "", [], {}):
            return MASK
        if isinstance(data, Mapping):
            return {str(k): self.value(v, str(k)) for k, v in data.items()}
        if isinstance(data, list | tuple):
            if len(data) == 2 and isinstance(data[0], str) and isinstance(data[1], str) and \
                    is_secret_name(data[0]) and data[1]:
                return [data[0], MASK]  # a (name, value) pair such as a header
            return [self.value(v) for v in data]
        if isinstance(data, str):
            if data.startswith(("ws://", "wss://", "http://", "https://", "redis://")):
                return self.url(data)
            return self.text(data)
        return data


def redact_ini(text: str, redactor: Redactor) -> str:
    """An INI / QSettings file with secret keys masked and values scrubbed, line by line."""
    out = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith(("#", ";", "[")):
            leaf = key.strip().rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
            if is_secret_name(leaf) and value.strip() not in ("", '""', "@Invalid()"):
                out.append(f"{key}={MASK}")
                continue
            out.append(f"{key}={redactor.text(value)}")
        else:
            out.append(redactor.text(line))
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
