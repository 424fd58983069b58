"""Rails ActionCable (subprotocols `actioncable-v1-json`, `actioncable-v1-ext-json`).

The server sends `{"type": "welcome" | "ping" | "confirm_subscription" |
"reject_subscription" | "disconnect", ...}` and channel data as `{"identifier": ...,
"message": ...}`; the client sends `{"command": "subscribe" | "unsubscribe" | "message",
"identifier": ..., "data": ...}`. `identifier` and `data` are JSON documents inside JSON
strings (`"{\\"channel\\":\\"ChatChannel\\"}"`); the tree shows them parsed, and the Composer
turns objects given there back into those strings.
"""

from __future__ import annotations

from typing import Any

from wsconsole.decoders.base import (
    Context,
    DecodeError,
    Decoder,
    EncodeError,
    Message,
    Payload,
    shorten,
)
from wsconsole.decoders.tree import compact, parse_json

SERVER_TYPES = ("welcome", "ping", "confirm_subscription", "reject_subscription", "disconnect")
COMMANDS = ("subscribe", "unsubscribe", "message")
_NESTED = ("identifier", "data")


class ActionCableDecoder(Decoder):
    """ActionCable commands, server notices and channel messages."""

    name = "actioncable"
    title = "ActionCable"
    subprotocols = ("actioncable-v1-json", "actioncable-v1-ext-json", "actioncable-unsupported")
    binary = False

    def sniff(self, msg: Message) -> bool:
        """A command with an identifier, or a welcome / confirm / ping-with-time notice."""
        head = msg.payload[:300]
        return head[:1] == b"{" and (
            (b'"command"' in head and b'"identifier"' in head)
            or b'"type":"welcome"' in head or b'"type":"confirm_subscription"' in head
            or (b'"type":"ping"' in head and b'"message"' in head)
        )

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """The message with `identifier` and `data` parsed."""
        value = parse_json(msg.payload, "an ActionCable message")
        if not isinstance(value, dict):
            raise DecodeError("an ActionCable message is a JSON object")
        tree = dict(value)
        for key in _NESTED:
            raw = tree.get(key)
            if isinstance(raw, str):
                tree[key] = parse_json(raw, f"the {key} string")
        _check(tree, DecodeError)
        return tree, _summary(tree)

    def encode(self, value: Any, ctx: Context) -> Payload:
        """JSON with `identifier` / `data` objects written as JSON strings."""
        if not isinstance(value, dict):
            raise EncodeError("an ActionCable message is a JSON object")
        _check(value, EncodeError)
        out = dict(value)
        for key in _NESTED:
            if key in out and not isinstance(out[key], str):
                out[key] = compact(out[key])
        return compact(out)


def _check(tree: dict[str, Any], error: type[Exception]) -> None:
    if "command" in tree:
        if tree["command"] not in COMMANDS:
            raise error(f"unknown command {tree['command']!r} ({', '.join(COMMANDS)})")
        if "identifier" not in tree:
            raise error(f"{tree['command']} needs an identifier")
        if tree["command"] == "message" and "data" not in tree:
            raise error("message needs data")
    elif "type" in tree:
        if tree["type"] not in SERVER_TYPES:
            raise error(f"unknown type {tree['type']!r} ({', '.join(SERVER_TYPES)})")
    elif not ("identifier" in tree and "message" in tree):
        raise error('neither a "command", a "type", nor a channel message '
                    '("identifier" and "message")')


def _channel(tree: dict[str, Any]) -> str:
    ident = tree.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("channel"), str):
        return ident["channel"]
    return shorten(compact(ident), 40) if ident is not None else ""


def _summary(tree: dict[str, Any]) -> str:
    if "command" in tree:
        bits = [tree["command"], _channel(tree)]
        data = tree.get("data")
        if isinstance(data, dict) and isinstance(data.get("action"), str):
            bits.append(data["action"])
        return " ".join(b for b in bits if b)
    if "type" in tree:
        bits = [tree["type"], _channel(tree)]
        if tree["type"] == "disconnect" and "reason" in tree:
            bits.append(str(tree["reason"]))
        return " ".join(b for b in bits if b)
    return f"{_channel(tree)} {shorten(compact(tree['message']), 60)}"
