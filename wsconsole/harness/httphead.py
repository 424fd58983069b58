"""HTTP/1.x request heads as the balancer and the proxy read them before an upgrade.

Bounded, strict, pure apart from the read. Neither parses a body: they read the client's
request head (at most `max_head` bytes within `timeout` seconds) and parse it strictly
enough to route it (method, target — origin-form, absolute-form, or host:port for CONNECT —
version, headers, cookies, query); the balancer adds `X-Forwarded-For`. Anything malformed
raises `HeadError`, answered with 400 (`http_response`).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from wsconsole.errors import WsconsoleError

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 5.0
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_AUTHORITY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):\d{1,5}$")


class HeadError(WsconsoleError, ValueError):
    """The client's request head is not valid HTTP/1.x (answered with 400)."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed HTTP/1.x request head."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def cookie(self, name: str) -> str | None:
        """Value of cookie `name` across every Cookie header, or None."""
        for key, value in self.headers:
            if key.lower() != "cookie":
                continue
            for part in value.split(";"):
                cookie_name, sep, cookie_value = part.strip().partition("=")
                if sep and cookie_name == name:
                    return cookie_value.strip().strip('"')
        return None

    def query(self, name: str) -> str | None:
        """First value of query parameter `name` in the target, or None."""
        values = parse_qs(urlsplit(self.target).query).get(name)
        return values[0] if values else None

    @property
    def upgrade(self) -> bool:
        """Whether the request asks for a WebSocket."""
        return "websocket" in (self.header("Upgrade") or "").lower()


def find_head_end(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending an HTTP head, or -1 if not there yet."""
    index = buffer.find(b"\r\n\r\n")
    return -1 if index < 0 else index + 4


def parse_request_head(head: bytes) -> RequestHead:
    """Parse a request head ending with CRLF CRLF; raises HeadError on anything malformed."""
    if not head.endswith(b"\r\n\r\n"):
        raise HeadError("request head is not terminated by an empty line")
    lines = head[:-4].decode("latin-1").split("\r\n")
    if any(_CONTROL.search(line) for line in lines):
        raise HeadError("control characters in request head")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HeadError("malformed request line")
    method, target, version = parts
    if not method or not set(method) <= _TOKEN:
        raise HeadError("malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HeadError(f"unsupported HTTP version {version[:16]!r}")
    if method == "CONNECT":
        if not _AUTHORITY.match(target):
            raise HeadError("CONNECT needs host:port")
    elif not (target.startswith("/") or target.startswith(("http://", "https://"))):
        raise HeadError("malformed request target")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or not set(name) <= _TOKEN:
            raise HeadError("malformed header line")
        headers.append((name, value.strip(" \t")))
    return RequestHead(method, target, version, tuple(headers))


async def read_head(
    reader: asyncio.StreamReader, max_head: int = MAX_HEAD, timeout: float = HEAD_TIMEOUT,
    initial: bytes = b"",
) -> tuple[bytes, bytes]:
    """The request head and any bytes after it (`initial`: what was read of it already);
    raises HeadError or TimeoutError."""
    buffer = initial
    async with asyncio.timeout(timeout):
        while (end := find_head_end(buffer)) < 0:
            if len(buffer) > max_head:
                raise HeadError("request head too large")
            data = await reader.read(4096)
            if not data:
                raise HeadError("connection closed before the request head ended")
            buffer += data
    if end > max_head:
        raise HeadError("request head too large")
    return buffer[:end], buffer[end:]


def with_header(head: bytes, name: str, value: str) -> bytes:
    """`head` (ending CRLF CRLF) with one more header line before the blank line."""
    return head[:-2] + f"{name}: {value}\r\n\r\n".encode("latin-1")


def http_response(status: int, body: str) -> bytes:
    """A complete, closing plain-text HTTP/1.1 response."""
    payload = (body.rstrip("\n") + "\n").encode()
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload


def add_response_header(head: bytes, name: str, value: str) -> bytes:
    """A response head with `name: value` added right after its status line (a head that is
    not HTTP/1.x is returned as it is)."""
    if not head.startswith(b"HTTP/1."):
        return head
    line_end = head.find(b"\r\n")
    if line_end < 0:
        return head
    field = f"{name}: {value}\r\n".encode("latin-1")
    return head[: line_end + 2] + field + head[line_end + 2 :]


def response_chunked(head: bytes) -> bool:
    """Whether a response head says its body comes with Transfer-Encoding: chunked (the
    balancer then undoes the chunking before it counts the events of an SSE stream)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            return True
    return False
