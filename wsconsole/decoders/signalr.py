"""ASP.NET Core SignalR's JSON hub protocol: JSON records, each ended by the record
separator 0x1e, one or more per message.

SignalR negotiates no WebSocket subprotocol: a connection is recognised by its first
message, the handshake request `{"protocol":"json","version":1}` + 0x1e (or, unclaimed, by
any message that ends with 0x1e and decodes). Message types (the `type` field): 1
Invocation, 2 StreamItem, 3 Completion, 4 StreamInvocation, 5 CancelInvocation, 6 Ping,
7 Close, 8 Ack, 9 Sequence; the handshake and its response have no type.

The tree is the record (a list for several records) as sent; the summary names the type
and target ("Invocation SendMessage"). The Composer takes the same and adds the separators.
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
    as_text,
)
from wsconsole.decoders.tree import compact, parse_json

RS = "\x1e"
# type -> (name, fields it must have)
TYPES: dict[int, tuple[str, tuple[str, ...]]] = {
    1: ("Invocation", ("target", "arguments")),
    2: ("StreamItem", ("invocationId", "item")),
    3: ("Completion", ("invocationId",)),
    4: ("StreamInvocation", ("invocationId", "target", "arguments")),
    5: ("CancelInvocation", ("invocationId",)),
    6: ("Ping", ()),
    7: ("Close", ()),
    8: ("Ack", ("sequenceId",)),
    9: ("Sequence", ("sequenceId",)),
}
_HINT = "signalr"


class SignalRDecoder(Decoder):
    """SignalR JSON hub protocol records."""

    name = "signalr"
    title = "SignalR JSON"

    def claims(self, ctx: Context) -> bool:
        """A SignalR handshake was seen on the connection."""
        return bool(ctx.hints.get(_HINT))

    def sniff(self, msg: Message) -> bool:
        """A JSON object ended by the record separator."""
        return msg.payload[:1] == b"{" and msg.payload.endswith(b"\x1e")

    def learn(self, msg: Message, ctx: Context) -> None:
        """The handshake request marks the connection as SignalR."""
        if msg.payload.startswith(b'{"protocol":') and msg.payload.endswith(b"\x1e"):
            ctx.hints[_HINT] = True

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """Every record in the message."""
        text = as_text(msg.payload, "a SignalR message")
        if not text.endswith(RS):
            raise DecodeError("a SignalR JSON message ends with the record separator 0x1e")
        records = []
        for index, raw in enumerate(text[:-1].split(RS)):
            value = parse_json(raw, f"record {index + 1}")
            _check(value, DecodeError)
            records.append(value)
        summary = "; ".join(_summary(r) for r in records)
        return (records[0] if len(records) == 1 else records), summary

    def encode(self, value: Any, ctx: Context) -> Payload:
        """Each record as JSON followed by 0x1e."""
        records = value if isinstance(value, list) else [value]
        for record in records:
            _check(record, EncodeError)
        return "".join(compact(r) + RS for r in records)


def _check(record: Any, error: type[Exception]) -> None:
    if not isinstance(record, dict):
        raise error("a SignalR record is a JSON object")
    if "type" not in record:
        if "protocol" in record and "version" not in record:
            raise error('the handshake request needs "protocol" and "version"')
        return  # a handshake request or response
    kind = record["type"]
    if kind not in TYPES:
        raise error(f"unknown SignalR message type {kind!r} (1-9)")
    name, needed = TYPES[kind]
    missing = [f for f in needed if f not in record]
    if missing:
        raise error(f"{name} (type {kind}) needs {', '.join(missing)}")
    if "arguments" in needed and not isinstance(record["arguments"], list):
        raise error(f"{name} arguments must be a list")


def _summary(record: dict[str, Any]) -> str:
    if "type" not in record:
        if "protocol" in record:
            return f"handshake {record['protocol']} v{record.get('version')}"
        if "error" in record:
            return f"handshake refused: {record['error']}"
        return "handshake accepted"
    name = TYPES[record["type"]][0]
    bits = [name]
    if "target" in record:
        bits.append(str(record["target"]))
    if "invocationId" in record:
        bits.append(f"#{record['invocationId']}")
    if "error" in record:
        bits.append(f"error: {record['error']}")
    return " ".join(bits)
