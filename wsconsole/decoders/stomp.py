"""STOMP 1.0 / 1.1 / 1.2 frames over WebSocket (subprotocols `v10.stomp`, `v11.stomp`,
`v12.stomp`), as STOMP.js and Spring's broker relay send them.

A frame is a command line, header lines `name:value`, an empty line, the body, and a NUL
byte; end-of-line is LF or CR LF. A body runs to the NUL unless `content-length` gives its
size in bytes (then it may contain NULs). Since 1.1, header names and values escape `\\r`,
`\\n`, `:` and `\\` as `\\r`, `\\n`, `\\c`, `\\\\` (not in CONNECT / CONNECTED frames); a repeated
header keeps its first value. A message that is only an end-of-line is a heart-beat.
Several frames may share one WebSocket message.

The tree of a frame: `{"command": "SEND", "headers": {"destination": "/queue/a"},
"body": "..."}`; a JSON body (content-type containing `json`) is shown parsed, a body that
is not UTF-8 as `{"$bytes": ...}`. Several frames give a list; a heart-beat
`{"heartbeat": true}`. The Composer takes the same shapes (a non-string body is written as
JSON with `content-type: application/json`, `content-length` is added).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from wsconsole.decoders.base import (
    Context,
    DecodeError,
    Decoder,
    EncodeError,
    Message,
    Payload,
)
from wsconsole.decoders.tree import b64, compact

CLIENT_COMMANDS = ("CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK",
                   "BEGIN", "COMMIT", "ABORT", "DISCONNECT")
SERVER_COMMANDS = ("CONNECTED", "MESSAGE", "RECEIPT", "ERROR")
COMMANDS = CLIENT_COMMANDS + SERVER_COMMANDS
_NO_ESCAPES = ("CONNECT", "CONNECTED")
_UNESCAPE = {"r": "\r", "n": "\n", "c": ":", "\\": "\\"}
_ESCAPE = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"})


class StompDecoder(Decoder):
    """STOMP frames (one or more per message) and heart-beats."""

    name = "stomp"
    title = "STOMP"
    subprotocols = ("v10.stomp", "v11.stomp", "v12.stomp", "stomp")

    def sniff(self, msg: Message) -> bool:
        """Starts with a STOMP command and an end-of-line."""
        head = msg.payload[:12].split(b"\n", 1)
        return len(head) == 2 and head[0].rstrip(b"\r").decode("ascii", "replace") in COMMANDS

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """Every frame in the message."""
        payload = msg.payload
        if payload in (b"\n", b"\r\n"):
            return {"heartbeat": True}, "heart-beat"
        escapes = _version(ctx) != "1.0"
        frames = []
        pos = 0
        while pos < len(payload):
            frame, pos = _parse_frame(payload, pos, escapes)
            frames.append(frame)
            while payload[pos:pos + 1] in (b"\n", b"\r"):  # EOLs may follow a frame's NUL
                pos += 1
        if not frames:
            raise DecodeError("empty payload: no STOMP frame")
        summary = "; ".join(_summary(f) for f in frames)
        return (frames[0] if len(frames) == 1 else frames), summary

    def encode(self, value: Any, ctx: Context) -> Payload:
        """The frame(s) for a tree; text when every body is text."""
        frames = value if isinstance(value, list) else [value]
        escapes = _version(ctx) != "1.0"
        out = b"".join(_encode_frame(f, escapes) for f in frames)
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError:
            return out


def _version(ctx: Context) -> str:
    sub = (ctx.subprotocol or "").lower()
    return {"v10.stomp": "1.0", "v11.stomp": "1.1"}.get(sub, "1.2")


def _parse_frame(data: bytes, pos: int, escapes: bool) -> tuple[dict[str, Any], int]:
    head_end = data.find(b"\n\n", pos)
    crlf_end = data.find(b"\r\n\r\n", pos)
    if crlf_end >= 0 and (head_end < 0 or crlf_end < head_end):
        head_end, body_start = crlf_end, crlf_end + 4
    elif head_end >= 0:
        body_start = head_end + 2
    else:
        raise DecodeError(f"no empty line after the headers (frame at offset {pos})")
    try:
        lines = data[pos:head_end].decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"headers are not UTF-8 (byte {pos + exc.start})") from None
    lines = [line.removesuffix("\r") for line in lines]
    command = lines[0]
    if command not in COMMANDS:
        raise DecodeError(f"unknown STOMP command {command[:30]!r} at offset {pos}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise DecodeError(f"{command}: header line {line[:40]!r} has no ':'")
        if escapes and command not in _NO_ESCAPES:
            name, value = _unescape(name, command), _unescape(value, command)
        headers.setdefault(name, value)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise DecodeError(f"{command}: content-length {length[:20]!r} is not a number")
        end = body_start + int(length)
        if data[end:end + 1] != b"\x00":
            raise DecodeError(f"{command}: no NUL after the {length}-byte body "
                              f"(content-length {length}, {len(data) - body_start} bytes left)")
    else:
        end = data.find(b"\x00", body_start)
        if end < 0:
            raise DecodeError(f"{command}: the frame does not end with a NUL byte")
    frame = {"command": command, "headers": headers}
    body = data[body_start:end]
    if body:
        frame["body"] = _body(body, headers.get("content-type", ""))
    return frame, end + 1


def _unescape(text: str, command: str) -> str:
    if "\\" not in text:
        return text
    out = []
    chars = iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        nxt = next(chars, "")
        if nxt not in _UNESCAPE:
            raise DecodeError(f"{command}: undefined escape '\\{nxt}' in a header")
        out.append(_UNESCAPE[nxt])
    return "".join(out)


def _body(body: bytes, content_type: str) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {"$bytes": base64.b64encode(body).decode()}
    if "json" in content_type.lower():
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return text


def _encode_frame(frame: Any, escapes: bool) -> bytes:
    if not isinstance(frame, dict):
        raise EncodeError('a STOMP frame is an object like {"command": "SEND", "headers": '
                          '{"destination": "/queue/a"}, "body": "hi"}')
    if frame.get("heartbeat") is True:
        return b"\n"
    command = frame.get("command")
    if command not in COMMANDS:
        raise EncodeError(f"command is one of {', '.join(COMMANDS)}, not {command!r}")
    headers = frame.get("headers", {})
    if not isinstance(headers, dict):
        raise EncodeError("headers is an object of names to values")
    headers = {str(k): str(v) for k, v in headers.items()}
    body = frame.get("body", "")
    if isinstance(body, dict) and set(body) == {"$bytes"}:
        raw = b64(body["$bytes"], "body")
    elif isinstance(body, str):
        raw = body.encode("utf-8")
    else:
        raw = compact(body).encode("utf-8")
        headers.setdefault("content-type", "application/json")
    if raw:
        headers["content-length"] = str(len(raw))
    escape = escapes and command not in _NO_ESCAPES
    lines = [command]
    for name, value in headers.items():
        if escape:
            name, value = name.translate(_ESCAPE), value.translate(_ESCAPE)
        elif any(c in name + value for c in "\r\n") or ":" in name:
            raise EncodeError(f"{command} headers cannot contain line breaks (or ':' in names)")
        lines.append(f"{name}:{value}")
    return ("\n".join(lines) + "\n\n").encode("utf-8") + raw + b"\x00"


def _summary(frame: dict[str, Any]) -> str:
    headers = frame["headers"]
    bits = [frame["command"]]
    for key in ("destination", "subscription", "id", "receipt-id", "message"):
        if key in headers:
            bits.append(headers[key][:60])
            break
    body = frame.get("body")
    if body is not None:
        size = headers.get("content-length")
        bits.append(f"({size} bytes)" if size else "(body)")
    return " ".join(bits)
