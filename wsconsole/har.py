"""HAR import and export for WebSocket traffic, in Chrome DevTools' format; and replay.

Chrome DevTools (since v76; the de-facto format that mitmproxy, HTTP Toolkit and Proxyman
also read and write) records each WebSocket as an entry with `_resourceType: "websocket"`,
the upgrade request/response, and `_webSocketMessages`: `{"type": "send"|"receive",
"time": <epoch seconds>, "opcode": 1|2, "data": ...}` where binary data (opcode 2) is
base64. Import turns every such entry into a `HarConnection` and its messages into
FrameRecords (the Frames view's input); export writes FrameRecords (or the Frames view's
rows) grouped by connection back into a HAR 1.2 log that DevTools-compatible tools open.
Import and export are plain functions (no event loop, no Qt). `replay()` is the one
coroutine: it re-sends a connection's sent messages through a send function the caller
gives (a client's `send`), as fast as possible or with the original spacing.

Bad input raises HarError with a message naming the problem (not JSON, truncated, not a
HAR log, no WebSocket entries, a malformed message at entry N).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from wsconsole import __version__
from wsconsole.core.events import Direction, FrameRecord, Opcode
from wsconsole.errors import WsconsoleError

WS_SCHEMES = ("ws", "wss")


class HarError(WsconsoleError, ValueError):
    """A HAR file that cannot be imported; the message names the problem."""


@dataclass(frozen=True, slots=True)
class HarMessage:
    """One WebSocket message of a HAR entry; data is bytes (binary decoded from base64)."""

    direction: Direction
    time: float  # wall-clock epoch seconds
    opcode: Opcode
    data: bytes


@dataclass
class HarConnection:
    """One WebSocket entry: where it went, when, and its messages in order."""

    url: str
    started: float  # epoch seconds
    messages: list[HarMessage] = field(default_factory=list)
    status: int | None = None
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    index: int = 0  # position among the HAR's entries

    @property
    def sent(self) -> list[HarMessage]:
        """The messages this side sent (what a replay re-sends)."""
        return [m for m in self.messages if m.direction is Direction.OUT]

    def label(self) -> str:
        """A short name: host + path and the entry number."""
        parts = urllib.parse.urlsplit(self.url)
        return f"har{self.index}:{parts.netloc}{parts.path or '/'}"


@dataclass(frozen=True, slots=True)
class HarHandshake:
    """A connection's opening handshake as a HAR entry records it (export)."""

    request_headers: list[tuple[str, str]]
    status: int = 101
    response_headers: list[tuple[str, str]] = field(default_factory=list)


class FrameLike(Protocol):
    """What export needs of a frame: FrameRecord and the Frames view's FrameRow both fit."""

    conn: str
    direction: Direction
    opcode: Opcode
    payload: bytes
    wall: float


def recorded(frames: Iterable[FrameLike], url: str,
             request_headers: Iterable[tuple[str, str]] = (), started: float | None = None,
             status: int | None = None) -> HarConnection:
    """One connection's frames as a HarConnection (its text and binary messages, in order):
    what a HAR export, a replay and a scenario export take, whatever recorded them."""
    messages = [HarMessage(f.direction, f.wall, f.opcode, f.payload) for f in frames
                if f.opcode in (Opcode.TEXT, Opcode.BINARY)]
    first = messages[0].time if messages else 0.0
    return HarConnection(url=url, started=first if started is None else started,
                         messages=messages, status=status,
                         request_headers=list(request_headers))


# -- import ---------------------------------------------------------------------------------


def _iso_to_epoch(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_har(data: str | bytes, source: str = "the HAR") -> list[HarConnection]:
    """Every WebSocket connection in a HAR document (HarError when there is none)."""
    if isinstance(data, str):
        data = data.encode()
    if not data.strip():
        raise HarError(f"{source} is empty")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        stripped = data.rstrip()
        if stripped[:1] in (b"{", b"[") and not stripped.endswith((b"}", b"]")):
            raise HarError(f"{source} is truncated: the JSON ends early ({exc})") from None
        raise HarError(f"{source} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("log"), dict):
        raise HarError(f"{source} is JSON but not a HAR file (no top-level \"log\" object)")
    entries = doc["log"].get("entries")
    if not isinstance(entries, list):
        raise HarError(f"{source} has no \"log.entries\" list")
    found = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not _is_websocket(entry):
            continue
        found.append(_connection(entry, index, source))
    if not found:
        raise HarError(f"{source} has {len(entries)} entries but no WebSocket entries "
                       "(_resourceType \"websocket\" with _webSocketMessages)")
    return found


def _is_websocket(entry: dict[str, Any]) -> bool:
    if entry.get("_resourceType") == "websocket" or "_webSocketMessages" in entry:
        return True
    url = (entry.get("request") or {}).get("url", "")
    return isinstance(url, str) and urllib.parse.urlsplit(url).scheme in WS_SCHEMES


def _connection(entry: dict[str, Any], index: int, source: str) -> HarConnection:
    request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
    response = entry.get("response") if isinstance(entry.get("response"), dict) else {}
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise HarError(f"{source}: WebSocket entry {index} has no request URL")
    headers = [(str(h.get("name", "")), str(h.get("value", "")))
               for h in request.get("headers") or [] if isinstance(h, dict)]
    raw = entry.get("_webSocketMessages") or []
    if not isinstance(raw, list):
        raise HarError(f"{source}: entry {index} has _webSocketMessages that is not a list")
    messages = [_message(m, index, n, source) for n, m in enumerate(raw)]
    started = _iso_to_epoch(entry.get("startedDateTime"))
    if started is None:
        started = messages[0].time if messages else 0.0
    status = response.get("status")
    return HarConnection(url=url, started=started, messages=messages,
                         status=status if isinstance(status, int) else None,
                         request_headers=headers, index=index)


def _message(raw: Any, entry: int, n: int, source: str) -> HarMessage:
    where = f"{source}: entry {entry}, message {n}"
    if not isinstance(raw, dict):
        raise HarError(f"{where} is not an object")
    kind = raw.get("type")
    if kind not in ("send", "receive"):
        raise HarError(f"{where} has type {kind!r} (expected \"send\" or \"receive\")")
    when = raw.get("time")
    if not isinstance(when, int | float) or isinstance(when, bool):
        raise HarError(f"{where} has no numeric time")
    try:
        opcode = Opcode(int(raw.get("opcode", 1)))
    except (TypeError, ValueError):
        raise HarError(f"{where} has an unknown opcode {raw.get('opcode')!r}") from None
    data = raw.get("data", "")
    if not isinstance(data, str):
        raise HarError(f"{where} has data that is not a string")
    if opcode is Opcode.TEXT:
        payload = data.encode()
    else:
        try:
            payload = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise HarError(f"{where}: binary data is not valid base64") from None
    direction = Direction.OUT if kind == "send" else Direction.IN
    return HarMessage(direction, float(when), opcode, payload)


def load_har(path: str | Path) -> list[HarConnection]:
    """Read and parse a HAR file (HarError for unreadable files too)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise HarError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_har(data, source=str(path))


def to_records(conn: HarConnection, name: str | None = None) -> list[FrameRecord]:
    """The connection's messages as FrameRecords (wall = the recorded time)."""
    label = name or conn.label()
    now_mono, now_wall = time.monotonic(), time.time()
    return [
        FrameRecord(conn=label, direction=m.direction, opcode=m.opcode, payload=m.data,
                    at=now_mono - (now_wall - m.time), wall=m.time)
        for m in conn.messages
    ]


# -- export ---------------------------------------------------------------------------------


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _har_headers(headers: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in headers]


def export_har(frames: Iterable[FrameLike], urls: dict[str, str] | None = None,
               handshakes: dict[str, HarHandshake] | None = None) -> dict[str, Any]:
    """A HAR 1.2 document with one websocket entry per connection name, in first-seen order.

    Only data frames (text, binary) are messages, as in DevTools; `urls` maps a connection
    name to its URL (default `ws://<name>/`), `handshakes` to its handshake headers.
    """
    urls = urls or {}
    handshakes = handshakes or {}
    grouped: dict[str, list[FrameLike]] = {}
    for frame in frames:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            grouped.setdefault(frame.conn, []).append(frame)
    entries = []
    for conn, items in grouped.items():
        messages = []
        for f in items:
            data = (f.payload.decode("utf-8", "replace") if f.opcode is Opcode.TEXT
                    else base64.b64encode(f.payload).decode())
            messages.append({"type": "send" if f.direction is Direction.OUT else "receive",
                             "time": f.wall, "opcode": int(f.opcode), "data": data})
        url = urls.get(conn) or f"ws://{conn}/"
        shake = handshakes.get(conn) or HarHandshake([])
        started = items[0].wall
        duration_ms = max(0.0, (items[-1].wall - started) * 1000)
        entries.append({
            "startedDateTime": _iso(started),
            "time": duration_ms,
            "request": {
                "method": "GET", "url": url, "httpVersion": "HTTP/1.1",
                "headers": _har_headers(shake.request_headers), "queryString": [],
                "cookies": [],
                "headersSize": -1, "bodySize": 0,
            },
            "response": {
                "status": shake.status, "statusText": "Switching Protocols",
                "httpVersion": "HTTP/1.1", "headers": _har_headers(shake.response_headers),
                "cookies": [], "content": {"size": 0, "mimeType": "x-unknown"},
                "redirectURL": "", "headersSize": -1, "bodySize": 0,
            },
            "cache": {},
            "timings": {"blocked": -1, "dns": -1, "connect": -1, "send": 0,
                        "wait": duration_ms, "receive": 0, "ssl": -1},
            "_resourceType": "websocket",
            "_wsconsoleConnection": conn,
            "_webSocketMessages": messages,
        })
    return {"log": {"version": "1.2",
                    "creator": {"name": "wsconsole", "version": __version__},
                    "pages": [], "entries": entries}}


def dump_har(frames: Iterable[FrameLike], path: str | Path,
             urls: dict[str, str] | None = None,
             handshakes: dict[str, HarHandshake] | None = None) -> int:
    """Write the HAR to `path`; returns the number of messages written."""
    doc = export_har(frames, urls, handshakes)
    Path(path).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return sum(len(e["_webSocketMessages"]) for e in doc["log"]["entries"])


# -- replay ---------------------------------------------------------------------------------


Send = Callable[[str | bytes], Awaitable[None]]


async def replay(conn: HarConnection, send: Send, *, timing: str = "fast",
                 speed: float = 1.0) -> int:
    """Re-send `conn`'s sent messages through `send`, in order; returns how many.

    timing "fast" sends back to back; "original" keeps the recorded spacing divided by
    `speed` (2.0 = twice as fast).
    """
    if timing not in ("fast", "original"):
        raise ValueError(f"timing must be fast or original, got {timing!r}")
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    messages = conn.sent
    if not messages:
        return 0
    loop = asyncio.get_running_loop()
    start, first = loop.time(), messages[0].time
    for message in messages:
        if timing == "original":
            due = start + max(0.0, message.time - first) / speed
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        payload: str | bytes = (message.data.decode("utf-8", "replace")
                                if message.opcode is Opcode.TEXT else message.data)
        await send(payload)
    return len(messages)
