"""Socket.IO over Engine.IO on a WebSocket: the packet inside each message.

Recognised from the URL (`/socket.io/` path or an `EIO=` query, which also gives the Engine.IO
version: 4 today, 3 for older servers) or from an Engine.IO open packet (`0{"sid": ...`).

Engine.IO (one packet per WebSocket message): a type digit — 0 open, 1 close, 2 ping,
3 pong, 4 message, 5 upgrade, 6 noop — then its data. Binary messages carry binary data
as-is in version 4 and behind a type byte (4) in version 3 (Socket.IO binary attachments).
Socket.IO (inside an Engine.IO message): a type digit — 0 CONNECT, 1 DISCONNECT, 2 EVENT,
3 ACK, 4 CONNECT_ERROR, 5 BINARY_EVENT, 6 BINARY_ACK — then, optionally, the attachment
count and `-` (binary types only), the namespace and `,` (when it is not `/`), the ack id
(digits), and the JSON data.

The tree: `{"engineio": "message", "socketio": "EVENT", "namespace": "/chat", "id": 12,
"attachments": 1, "data": [...]}` with only the parts present; the Composer encodes the
same object back (default `engineio` "message", namespace "/").
"""

from __future__ import annotations

import base64
from typing import Any

from wsconsole.decoders.base import (
    Context,
    DecodeError,
    Decoder,
    EncodeError,
    Message,
    Payload,
    as_text,
    shorten,
)
from wsconsole.decoders.tree import b64, compact, parse_json

ENGINE_TYPES = ("open", "close", "ping", "pong", "message", "upgrade", "noop")
SOCKET_TYPES = ("CONNECT", "DISCONNECT", "EVENT", "ACK", "CONNECT_ERROR", "BINARY_EVENT",
                "BINARY_ACK")
_BINARY_TYPES = ("BINARY_EVENT", "BINARY_ACK")
_HINT = "socketio"


class SocketIODecoder(Decoder):
    """Engine.IO packets and the Socket.IO packets they carry."""

    name = "socketio"
    title = "Socket.IO"

    def claims(self, ctx: Context) -> bool:
        """A Socket.IO client's frames, a Socket.IO URL, or an open packet seen on the
        connection."""
        return (ctx.target == "socketio" or "/socket.io/" in ctx.path + "/"
                or ctx.query("EIO") is not None or bool(ctx.hints.get(_HINT)))

    def sniff(self, msg: Message) -> bool:
        """An Engine.IO open packet, or a Socket.IO event in a message packet."""
        return msg.text and msg.payload.startswith((b'0{"sid"', b'42["'))

    def learn(self, msg: Message, ctx: Context) -> None:
        """An open packet marks the connection as Socket.IO."""
        if msg.text and msg.payload.startswith(b'0{"sid"'):
            ctx.hints[_HINT] = True

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """The Engine.IO packet and, for a message, the Socket.IO packet in it; a Socket.IO
        client's frame is the Socket.IO packet alone (`ctx.target`)."""
        version = _engine_version(ctx)
        if not msg.text:
            return _binary(msg.payload, version)
        if ctx.target == "socketio":
            tree = parse_socket_packet(as_text(msg.payload, "a Socket.IO packet"))
            return tree, _summary(tree)
        text = as_text(msg.payload, "an Engine.IO packet")
        if not text or not text[0].isdigit() or int(text[0]) >= len(ENGINE_TYPES):
            raise DecodeError(f"not an Engine.IO packet: starts with {text[:1]!r}, "
                              "expected a type digit 0-6")
        kind = ENGINE_TYPES[int(text[0])]
        rest = text[1:]
        if kind == "message":
            tree = {"engineio": kind, **parse_socket_packet(rest)}
            return tree, _summary(tree)
        tree = {"engineio": kind}
        if kind == "open":
            tree["data"] = parse_json(rest, "the open packet's handshake")
        elif rest:
            tree["data"] = rest
        return tree, _summary(tree)

    def encode(self, value: Any, ctx: Context) -> Payload:
        """The Engine.IO text packet for a tree (binary data: `{"binary": {"$bytes": ...}}`)."""
        if not isinstance(value, dict):
            raise EncodeError("a Socket.IO packet is a JSON object like "
                              '{"socketio": "EVENT", "data": ["chat", "hi"]}')
        kind = value.get("engineio", "message")
        if kind not in ENGINE_TYPES:
            raise EncodeError(f"engineio is one of {', '.join(ENGINE_TYPES)}, not {kind!r}")
        if "binary" in value:
            data = value["binary"]
            raw = b64(data.get("$bytes"), "binary") if isinstance(data, dict) else None
            if raw is None:
                raise EncodeError('"binary" takes {"$bytes": "<base64>"}')
            return (b"\x04" + raw) if _engine_version(ctx) == 3 else raw
        if kind == "message":
            return "4" + encode_socket_packet(value)
        data = value.get("data")
        if data is None:
            body = ""
        else:
            body = data if isinstance(data, str) and kind != "open" else compact(data)
        return str(ENGINE_TYPES.index(kind)) + body


def _engine_version(ctx: Context) -> int:
    value = ctx.query("EIO")
    return 3 if value == "3" else 4


def _binary(payload: bytes, version: int) -> tuple[Any, str]:
    if version == 3:
        if not payload or payload[0] != 4:
            raise DecodeError("an Engine.IO 3 binary message starts with type byte 4 "
                              f"(message), not {payload[:1].hex() or 'nothing'}")
        payload = payload[1:]
    tree = {"engineio": "message", "binary": {"$bytes": base64.b64encode(payload).decode()}}
    return tree, f"binary attachment, {len(payload)} bytes"


def parse_socket_packet(text: str) -> dict[str, Any]:
    """The fields of a Socket.IO packet's text encoding (without the Engine.IO type)."""
    if not text or not text[0].isdigit() or int(text[0]) >= len(SOCKET_TYPES):
        raise DecodeError(f"not a Socket.IO packet: starts with {text[:1]!r}, expected a "
                          "type digit 0-6")
    kind = SOCKET_TYPES[int(text[0])]
    out: dict[str, Any] = {"socketio": kind}
    pos = 1
    if kind in _BINARY_TYPES:
        dash = text.find("-", pos)
        if dash < 0 or not text[pos:dash].isdigit():
            raise DecodeError(f"{kind} needs its attachment count and '-' after the type")
        out["attachments"] = int(text[pos:dash])
        pos = dash + 1
    if text.startswith("/", pos):
        comma = text.find(",", pos)
        end = comma if comma >= 0 else len(text)
        out["namespace"] = text[pos:end]
        pos = end + 1 if comma >= 0 else end
    digits = pos
    while digits < len(text) and text[digits].isdigit():
        digits += 1
    if digits > pos:
        out["id"] = int(text[pos:digits])
        pos = digits
    if pos < len(text):
        out["data"] = parse_json(text[pos:], f"the {kind} packet's data")
    _check(out)
    return out


def _check(packet: dict[str, Any]) -> None:
    kind = packet["socketio"]
    data = packet.get("data")
    if kind in ("EVENT", "BINARY_EVENT") and not (
        isinstance(data, list) and data and isinstance(data[0], str)
    ):
        raise DecodeError(f"{kind} data must be an array starting with the event name")
    if kind in ("ACK", "BINARY_ACK") and ("id" not in packet or not isinstance(data, list)):
        raise DecodeError(f"{kind} needs an ack id and an array of arguments")


def encode_socket_packet(value: dict[str, Any]) -> str:
    """The text encoding of a Socket.IO packet tree (inverse of `parse_socket_packet`)."""
    kind = value.get("socketio", "EVENT")
    if kind not in SOCKET_TYPES:
        raise EncodeError(f"socketio is one of {', '.join(SOCKET_TYPES)}, not {kind!r}")
    packet = {k: v for k, v in value.items() if k != "engineio"}
    packet["socketio"] = kind
    try:
        _check(packet)
    except DecodeError as exc:
        raise EncodeError(str(exc)) from None
    out = str(SOCKET_TYPES.index(kind))
    if kind in _BINARY_TYPES:
        out += f"{int(value.get('attachments', 0))}-"
    namespace = value.get("namespace", "/")
    if not isinstance(namespace, str) or not namespace.startswith("/"):
        raise EncodeError("namespace is a string starting with '/'")
    if namespace != "/":
        out += namespace + ","
    if "id" in value:
        if not isinstance(value["id"], int) or value["id"] < 0:
            raise EncodeError("id is a non-negative integer")
        out += str(value["id"])
    if "data" in value:
        out += compact(value["data"])
    return out


def _summary(tree: dict[str, Any]) -> str:
    if "socketio" not in tree:
        data = tree.get("data")
        return tree["engineio"] + (f" {shorten(compact(data), 60)}" if data else "")
    bits = [tree["socketio"]]
    data = tree.get("data")
    if tree["socketio"] in ("EVENT", "BINARY_EVENT"):
        bits.append(data[0])
    if tree.get("namespace", "/") != "/":
        bits.append(tree["namespace"])
    if "id" in tree:
        bits.append(f"id={tree['id']}")
    if tree["socketio"] in ("EVENT", "BINARY_EVENT") and len(data) > 1:
        bits.append(shorten(compact(data[1:]), 60))
    return " ".join(bits)
