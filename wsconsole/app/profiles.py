"""Connection profiles as the Connection panel edits them, validated in one place (no Qt).

A profile is plain data (saved to QSettings as JSON); `validate()` returns the messages to
show next to the offending fields, `to_options()` builds the client's ClientOptions.
"""

from __future__ import annotations

import math
import os
import string
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from wsconsole.core.urls import url_problem

TOKEN_MODES = ("query", "header", "message")
_HEADER_NAME_OK = set("!#$%&'*+-.^_`|~0123456789" + string.ascii_letters)




def parse_headers(text: str) -> list[tuple[str, str]]:
    """Header lines "Name: value" (blank lines ignored); ValueError says which line is bad."""
    headers = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep:
            raise ValueError(f"header line {number} has no ':' (expected 'Name: value')")
        if not name or not set(name) <= _HEADER_NAME_OK:
            raise ValueError(f"header line {number}: {name!r} is not a valid header name")
        value = value.strip()
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"header line {number}: the value contains control characters")
        headers.append((name, value))
    return headers


def parse_list(text: str) -> list[str]:
    """Comma- or whitespace-separated names (subprotocols, rooms)."""
    return [item for item in text.replace(",", " ").split() if item]


@dataclass
class Profile:
    """Everything the Connection panel lets the user set for one named connection."""

    name: str = "conn"
    url: str = "ws://127.0.0.1:8765/"
    headers: str = ""
    subprotocols: str = ""
    token: str = ""
    token_mode: str = "query"
    origin: str = ""
    ca_file: str = ""
    insecure: bool = False
    harness: bool = False
    rooms: str = ""
    backoff_initial: float = 1.0
    backoff_factor: float = 2.0
    backoff_cap: float = 30.0
    backoff_jitter: float = 1.0
    max_attempts: int = 0  # 0 = unlimited
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    # the kind of target (app/targets.py): "ws", "socketio" or "sse"; sio_* for Socket.IO
    kind: str = "ws"
    sio_path: str = "socket.io"
    sio_namespaces: str = ""
    sio_auth: str = ""
    sio_transport: str = "upgrade"
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> dict[str, str]:
        """Field name -> message for every field that is wrong (empty when all is fine)."""
        problems: dict[str, str] = {}
        if not self.name.strip():
            problems["name"] = "a connection needs a name"
        if self.kind == "ws":
            wrong = url_problem(self.url)
            if wrong:
                problems["url"] = wrong
        else:
            from wsconsole.app.targets import problems as target_problems

            problems.update(target_problems(self))
        try:
            parse_headers(self.headers)
        except ValueError as exc:
            problems["headers"] = str(exc)
        if self.origin.strip():
            parts = urlsplit(self.origin.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                problems["origin"] = "Origin must look like http(s)://host[:port]"
        if self.ca_file.strip():
            path = os.path.expanduser(self.ca_file.strip())
            if not os.path.isfile(path):
                problems["ca_file"] = f"CA file {path} does not exist"
            else:
                problem = _check_pem(path)
                if problem:
                    problems["ca_file"] = problem
        if self.token_mode not in TOKEN_MODES:
            problems["token_mode"] = f"token mode must be one of {', '.join(TOKEN_MODES)}"
        for key in ("backoff_initial", "backoff_factor", "backoff_cap", "backoff_jitter",
                    "ping_interval", "ping_timeout"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                problems[key] = f"{key.replace('_', ' ')} must be a number >= 0"
        if "ping_timeout" not in problems and self.ping_timeout <= 0:
            problems["ping_timeout"] = "ping timeout must be above 0"
        if "backoff_cap" not in problems and self.backoff_cap < self.backoff_initial:
            problems["backoff_cap"] = "backoff cap must not be below the initial delay"
        if "backoff_factor" not in problems and self.backoff_factor < 1:
            problems["backoff_factor"] = "backoff factor must be at least 1"
        return problems

    def to_options(self) -> Any:
        """ClientOptions for the core client; call validate() first (ValueError otherwise)."""
        problems = self.validate()
        if problems:
            raise ValueError("; ".join(problems.values()))
        from wsconsole.core.backoff import BackoffPolicy
        from wsconsole.core.client import ClientOptions

        backoff = BackoffPolicy(
            initial=self.backoff_initial,
            factor=self.backoff_factor,
            cap=self.backoff_cap,
            jitter=self.backoff_jitter,
            max_attempts=self.max_attempts or None,
        )
        return ClientOptions(
            url=self.url.strip(),
            headers=parse_headers(self.headers),
            subprotocols=parse_list(self.subprotocols),
            origin=self.origin.strip() or None,
            ca_file=os.path.expanduser(self.ca_file.strip()) or None,
            insecure=self.insecure,
            token=self.token or None,
            token_mode=self.token_mode,
            harness=self.harness,
            rooms=parse_list(self.rooms),
            backoff=backoff,
            ping_interval=self.ping_interval or None,
            ping_timeout=self.ping_timeout,
            **self.extra,
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for QSettings (JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """Rebuild from saved data, ignoring unknown keys and wrongly typed values."""
        known = {f.name: f for f in fields(cls)}
        default = cls()
        values = {}
        for key, value in data.items():
            if key in known and type(value) is type(getattr(default, key)):
                values[key] = value
            elif key in known and isinstance(getattr(default, key), float) and isinstance(
                value, int
            ):
                values[key] = float(value)
        return cls(**values)


def _check_pem(path: str) -> str | None:
    """None if the file looks like a PEM certificate bundle, else what is wrong."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
    except OSError as exc:
        return f"CA file cannot be read: {exc.strerror}"
    if b"-----BEGIN CERTIFICATE-----" not in head:
        return "CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    import ssl

    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        return f"CA file is not a valid certificate bundle: {exc}"
    return None
