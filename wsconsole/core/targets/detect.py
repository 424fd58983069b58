"""Which protocol does an endpoint speak? Used to turn a wrong-kind target into a clear
"protocol mismatch" instead of a hang or a bare HTTP status.

`sniff()` asks two cheap, bounded questions over plain HTTP: does `<path>/?EIO=4&transport=
polling` answer an Engine.IO open packet (Socket.IO), and what does a GET of the URL itself
answer (an event stream means SSE; 426 Upgrade Required or a WebSocket complaint means a
plain WebSocket server)?
"""

from __future__ import annotations

import ssl
import urllib.parse
from dataclasses import dataclass

import httpx

KINDS = ("socketio", "sse", "websocket", "http", "unreachable")


@dataclass(frozen=True, slots=True)
class Sniff:
    """kind is one of KINDS; detail says what was seen."""

    kind: str
    detail: str


def http_url(url: str) -> str:
    """The same address with an http(s) scheme (ws -> http, wss -> https)."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def engineio_url(url: str, path: str = "socket.io") -> str:
    """The Engine.IO v4 polling handshake URL for a Socket.IO server at `url`."""
    parts = urllib.parse.urlsplit(http_url(url))
    query = "EIO=4&transport=polling" + (f"&{parts.query}" if parts.query else "")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + path.strip("/") + "/",
                                    query, ""))


def looks_like_engineio_open(body: str) -> bool:
    """True for an Engine.IO v4 open packet: `0{"sid": ...}`."""
    return body.startswith("0{") and '"sid"' in body[:400]


async def sniff(url: str, *, socketio_path: str = "socket.io", timeout: float = 3.0,
                verify: bool | ssl.SSLContext = True) -> Sniff:
    """Probe `url` over HTTP and say what it speaks (bounded by `timeout` per request)."""
    async with httpx.AsyncClient(timeout=timeout, verify=verify) as http:
        try:
            reply = await http.get(engineio_url(url, socketio_path))
            if reply.status_code == 200 and looks_like_engineio_open(reply.text):
                return Sniff("socketio", "Engine.IO open packet at /" + socketio_path.strip("/"))
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.ConnectError):
                return Sniff("unreachable", str(exc) or "connection refused")
        try:
            async with http.stream("GET", http_url(url),
                                   headers={"Accept": "text/event-stream"}) as reply:
                ctype = reply.headers.get("content-type", "")
                if "text/event-stream" in ctype:
                    return Sniff("sse", f"HTTP {reply.status_code} {ctype}")
                body = (await _head_of(reply)).lower()
                if reply.status_code == 426 or "websocket" in body or (
                    reply.headers.get("upgrade", "").lower() == "websocket"
                ):
                    return Sniff("websocket", f"HTTP {reply.status_code}: asks for a "
                                              "WebSocket upgrade")
                return Sniff("http", f"HTTP {reply.status_code} {ctype}".rstrip())
        except httpx.HTTPError as exc:
            return Sniff("unreachable", f"{type(exc).__name__}: {exc}")


async def engineio_handshake(url: str, *, path: str = "socket.io",
                             headers: list[tuple[str, str]] | None = None,
                             timeout: float = 3.0,
                             verify: bool | ssl.SSLContext = True) -> tuple[int, str, str | None]:
    """Status, (start of the) body and Retry-After of an Engine.IO polling handshake sent
    with `headers`: says why a Socket.IO server that works for others refuses this client."""
    async with httpx.AsyncClient(timeout=timeout, verify=verify) as http:
        reply = await http.get(engineio_url(url, path), headers=headers or [])
        return reply.status_code, reply.text[:300].strip(), reply.headers.get("retry-after")


async def _head_of(reply: httpx.Response, limit: int = 2048) -> str:
    data = b""
    async for chunk in reply.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit].decode("utf-8", "replace")


NAMES = {"socketio": "Socket.IO", "sse": "Server-Sent Events", "websocket": "plain WebSocket",
         "http": "plain HTTP"}


def mismatch_text(expected: str, seen: Sniff) -> str | None:
    """A "protocol mismatch" sentence when `seen` is another protocol than `expected`."""
    if seen.kind in ("unreachable", "http", expected) or seen.kind not in NAMES:
        return None
    flag = {"socketio": " (use --socketio)", "sse": " (use --sse)",
            "websocket": " (use a ws:// URL without --socketio/--sse)"}.get(seen.kind, "")
    return (f"protocol mismatch: expected {NAMES[expected]}, the server speaks "
            f"{NAMES[seen.kind]}{flag}; {seen.detail}")
