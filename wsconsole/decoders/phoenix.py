"""Phoenix channels (Elixir) over WebSocket, as phoenix.js speaks them.

Recognised from the URL (`.../websocket?vsn=2.0.0`, the socket path Phoenix mounts) or by
content. Serializer 2.0 sends text messages as JSON arrays `[join_ref, ref, topic, event,
payload]` and binary payloads in binary messages: a kind byte (0 push, 1 reply,
2 broadcast), one-byte sizes, the ASCII join_ref / ref / topic / event, then the payload.
A push from the client carries a ref (four sizes); from the server it has none (three);
a reply's event is its status. Serializer 1.0 (`vsn=1.0.0`) sends JSON objects with the
same names.

The tree is always the object form `{"join_ref", "ref", "topic", "event", "payload"}`
(binary payloads as `{"$bytes": ...}`); the Composer writes it in the connection's
serializer version (2.0 unless the URL says 1).
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
    shorten,
)
from wsconsole.decoders.tree import b64, compact, parse_json

FIELDS = ("join_ref", "ref", "topic", "event", "payload")
KINDS = ("push", "reply", "broadcast")


class PhoenixDecoder(Decoder):
    """Phoenix channel messages (serializer 1.0 and 2.0, text and binary)."""

    name = "phoenix"
    title = "Phoenix channels"

    def claims(self, ctx: Context) -> bool:
        """A Phoenix socket URL: path ending in /websocket with a `vsn` query."""
        return ctx.path.endswith("/websocket") and ctx.query("vsn") is not None

    def sniff(self, msg: Message) -> bool:
        """A five-element array or topic/event object naming a phx_ event or "phoenix"."""
        head = msg.payload[:200]
        return msg.text and head[:1] in (b"[", b"{") and (b'"phx_' in head
                                                          or b'"phoenix"' in head)

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """The message as an object."""
        if not msg.text:
            tree = _binary(msg.payload, outgoing=msg.outgoing is True)
        else:
            value = parse_json(msg.payload, "a Phoenix message")
            if isinstance(value, list):
                if len(value) != 5:
                    raise DecodeError(f"a Phoenix 2.0 message is an array of 5 "
                                      f"(join_ref, ref, topic, event, payload), not "
                                      f"{len(value)}")
                tree = dict(zip(FIELDS, value, strict=True))
            elif isinstance(value, dict):
                tree = {k: value.get(k) for k in FIELDS}
            else:
                raise DecodeError("a Phoenix message is a JSON array or object")
            _check(tree, DecodeError)
        return tree, _summary(tree)

    def encode(self, value: Any, ctx: Context) -> Payload:
        """A JSON array (2.0), object (1.0), or a binary push for a {"$bytes"} payload."""
        if not isinstance(value, dict):
            raise EncodeError('a Phoenix message is an object with "topic", "event", '
                              '"payload" (and "join_ref", "ref")')
        tree = {k: value.get(k) for k in FIELDS}
        _check(tree, EncodeError)
        payload = tree["payload"]
        if isinstance(payload, dict) and set(payload) == {"$bytes"}:
            return _binary_push(tree, b64(payload["$bytes"], "payload"))
        if (ctx.query("vsn") or "2").startswith("1"):
            return compact({k: v for k, v in tree.items() if k != "join_ref" or v is not None})
        return compact([tree[k] for k in FIELDS])


def _check(tree: dict[str, Any], error: type[Exception]) -> None:
    for key in ("topic", "event"):
        if not isinstance(tree[key], str) or not tree[key]:
            raise error(f"{key} must be a non-empty string")
    for key in ("join_ref", "ref"):
        if tree[key] is not None and not isinstance(tree[key], str):
            raise error(f"{key} must be a string or null")


def _binary(data: bytes, outgoing: bool) -> dict[str, Any]:
    if not data or data[0] >= len(KINDS):
        raise DecodeError(f"a Phoenix binary message starts with kind 0, 1 or 2, not "
                          f"{data[:1].hex() or 'nothing'}")
    kind = KINDS[data[0]]
    names = {"push": ("join_ref", "ref", "topic", "event") if outgoing
             else ("join_ref", "topic", "event"),
             "reply": ("join_ref", "ref", "topic", "status"),
             "broadcast": ("topic", "event")}[kind]
    if len(data) < 1 + len(names):
        raise DecodeError(f"binary {kind}: header cut short")
    sizes = data[1:1 + len(names)]
    pos = 1 + len(names)
    fields: dict[str, str] = {}
    for name, size in zip(names, sizes, strict=True):
        if pos + size > len(data):
            raise DecodeError(f"binary {kind}: {name} ({size} bytes) runs past the end")
        try:
            fields[name] = data[pos:pos + size].decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"binary {kind}: {name} is not text") from None
        pos += size
    body = {"$bytes": base64.b64encode(data[pos:]).decode()}
    if kind == "reply":
        return {"join_ref": fields["join_ref"], "ref": fields["ref"], "topic": fields["topic"],
                "event": "phx_reply", "payload": {"status": fields["status"], "response": body}}
    return {"join_ref": fields.get("join_ref"), "ref": fields.get("ref"),
            "topic": fields["topic"], "event": fields["event"], "payload": body}


def _binary_push(tree: dict[str, Any], payload: bytes) -> bytes:
    parts = [(tree[k] or "").encode("utf-8") for k in ("join_ref", "ref", "topic", "event")]
    if any(len(p) > 255 for p in parts):
        raise EncodeError("join_ref, ref, topic and event must each fit in 255 bytes")
    return bytes([0, *(len(p) for p in parts)]) + b"".join(parts) + payload


def _summary(tree: dict[str, Any]) -> str:
    bits = [tree["topic"], tree["event"]]
    payload = tree["payload"]
    if tree["event"] == "phx_reply" and isinstance(payload, dict):
        bits.append(str(payload.get("status")))
    elif payload not in (None, {}):
        bits.append(shorten(compact(payload), 60))
    if tree["ref"] is not None:
        bits.append(f"ref {tree['ref']}")
    return " ".join(bits)
