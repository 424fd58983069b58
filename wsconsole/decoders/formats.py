"""General data formats: JSON, MessagePack (msgpack) and CBOR (cbor2).

They are found by content when no subprotocol decoder claims a connection: JSON for payloads
that start like an object or array, MessagePack and CBOR for binary messages that start with
a map, array (or, for CBOR, a tag) and decode to exactly one value with no bytes left over.
MessagePack is tried before CBOR; their first bytes overlap only for small arrays and maps,
and a payload in one format rarely decodes whole in the other. The subprotocols that name
them (`msgpack`, `cbor`, WAMP's `wamp.2.msgpack` / `wamp.2.cbor` / `wamp.2.json`) claim the
connection outright.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import cbor2
import msgpack

from wsconsole.decoders.base import (
    Context,
    DecodeError,
    Decoder,
    EncodeError,
    Message,
    Payload,
    shorten,
)
from wsconsole.decoders.tree import b64, compact, from_tree, parse_json, to_tree


def _summary(tree: Any) -> str:
    return shorten(compact(tree), 120)


class JsonDecoder(Decoder):
    """JSON text (or JSON in a binary message): the tree is the value itself."""

    name = "json"
    title = "JSON"
    subprotocols = ("json", "wamp.2.json")

    def sniff(self, msg: Message) -> bool:
        """Starts like a JSON object or array."""
        return msg.payload.lstrip()[:1] in (b"{", b"[")

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """Parse the JSON."""
        value = parse_json(msg.payload, "the payload")
        return value, _summary(value)

    def encode(self, value: Any, ctx: Context) -> Payload:
        """Compact JSON text."""
        return compact(value)


class MsgpackDecoder(Decoder):
    """MessagePack: one value per message; extension types and timestamps kept (tree.py)."""

    name = "msgpack"
    title = "MessagePack"
    subprotocols = ("msgpack", "messagepack", "wamp.2.msgpack")
    text = False

    def sniff(self, msg: Message) -> bool:
        """A map or array first (fixmap, fixarray, array 16/32, map 16/32)."""
        first = msg.payload[:1]
        return bool(first) and (0x80 <= first[0] <= 0x9F or 0xDC <= first[0] <= 0xDF)

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """Unpack exactly one value."""
        payload = msg.payload
        if not payload:
            raise DecodeError("empty payload: MessagePack needs at least one byte")
        try:
            value = msgpack.unpackb(payload, raw=False, strict_map_key=False, timestamp=3)
        except msgpack.ExtraData as exc:
            left = len(exc.extra)
            raise DecodeError(f"{left} byte(s) left after the first value (at offset "
                              f"{len(payload) - left})") from None
        except UnicodeDecodeError as exc:
            raise DecodeError(f"a string is not UTF-8: {exc.reason}") from None
        except msgpack.FormatError:
            raise DecodeError("not MessagePack: reserved type byte 0xc1") from None
        except msgpack.StackError:
            raise DecodeError("nested too deeply") from None
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"not MessagePack: {exc}") from None
        tree = to_tree(value, _msgpack_convert)
        return tree, _summary(tree)

    def encode(self, value: Any, ctx: Context) -> Payload:
        """Pack the value (bin type for bytes, timestamps for $datetime)."""
        data = from_tree(value, _msgpack_restore)
        try:
            return msgpack.packb(data, use_bin_type=True, datetime=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"cannot write MessagePack: {exc}") from None


def _msgpack_convert(value: Any, walk: Any) -> Any:
    if isinstance(value, msgpack.ExtType):
        return {"$ext": value.code, "$data": base64.b64encode(value.data).decode()}
    return NotImplemented


def _msgpack_restore(item: dict[str, Any], walk: Any) -> Any:
    if set(item) == {"$ext", "$data"}:
        code = item["$ext"]
        if not isinstance(code, int) or not 0 <= code <= 127:
            raise EncodeError('"$ext" is an application extension type 0..127')
        return msgpack.ExtType(code, b64(item["$data"], "$data"))
    return NotImplemented


class CborDecoder(Decoder):
    """CBOR (RFC 8949): one data item per message; tags kept (tree.py)."""

    name = "cbor"
    title = "CBOR"
    subprotocols = ("cbor", "wamp.2.cbor")
    text = False

    def sniff(self, msg: Message) -> bool:
        """An array, map or tag first (major types 4, 5, 6)."""
        first = msg.payload[:1]
        return bool(first) and 0x80 <= first[0] <= 0xDB

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """Decode exactly one data item."""
        payload = msg.payload
        if not payload:
            raise DecodeError("empty payload: CBOR needs at least one byte")
        stream = io.BytesIO(payload)
        try:
            value = cbor2.CBORDecoder(stream).decode()
        except cbor2.CBORDecodeEOF:
            raise DecodeError(f"not CBOR: the data item is cut short ({len(payload)} "
                              "bytes)") from None
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
            raise DecodeError(f"not CBOR: {exc}") from None
        if stream.tell() != len(payload):
            left = len(payload) - stream.tell()
            raise DecodeError(f"{left} byte(s) left after the first data item (at offset "
                              f"{stream.tell()})")
        tree = to_tree(value, _cbor_convert)
        return tree, _summary(tree)

    def encode(self, value: Any, ctx: Context) -> Payload:
        """Encode the value (tags, simple values and undefined from their $ objects)."""
        data = from_tree(value, _cbor_restore)
        try:
            return cbor2.dumps(data)
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise EncodeError(f"cannot write CBOR: {exc}") from None


def _cbor_convert(value: Any, walk: Any) -> Any:
    if isinstance(value, cbor2.CBORTag):
        return {"$tag": value.tag, "$value": walk(value.value)}
    if isinstance(value, cbor2.CBORSimpleValue):
        return {"$simple": value.value}
    if value is cbor2.undefined:
        return {"$undefined": True}
    return NotImplemented


def _cbor_restore(item: dict[str, Any], walk: Any) -> Any:
    if set(item) == {"$tag", "$value"}:
        tag = item["$tag"]
        if not isinstance(tag, int) or tag < 0:
            raise EncodeError('"$tag" is a non-negative integer')
        return cbor2.CBORTag(tag, walk(item["$value"]))
    if set(item) == {"$simple"}:
        try:
            return cbor2.CBORSimpleValue(item["$simple"])
        except (TypeError, ValueError) as exc:
            raise EncodeError(f'"$simple": {exc}') from None
    if set(item) == {"$undefined"}:
        return cbor2.undefined
    return NotImplemented
