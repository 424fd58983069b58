"""Decoded trees are JSON: how the values JSON lacks are written, and how they come back.

Binary formats carry values JSON has no word for. A tree writes each as a one-key (or
two-key) object whose keys start with `$`, and the encoders read the same objects back, so a
decoded MessagePack or CBOR frame pasted into the Composer encodes to the same bytes:

| value | in the tree |
|---|---|
| bytes | `{"$bytes": "<base64>"}` |
| a map with a key that is not a string | `{"$map": [[key, value], ...]}` |
| an integer outside 64 bits | `{"$bigint": "<decimal digits>"}` |
| a date-time (MessagePack timestamp, CBOR tags 0/1) | `{"$datetime": "<ISO 8601>"}` |
| a CBOR tag the library does not interpret | `{"$tag": n, "$value": tree}` |
| a MessagePack extension type | `{"$ext": n, "$data": "<base64>"}` |
| a CBOR simple value / undefined | `{"$simple": n}` / `{"$undefined": true}` |

Other rich values a library hands back (decimal, UUID, IP address, regular expression) are
shown as their text. Nesting deeper than `MAX_DEPTH` is refused with a DecodeError.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Callable
from typing import Any

import orjson

from wsconsole.decoders.base import DecodeError, EncodeError

MAX_DEPTH = 200
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1

Convert = Callable[[Any, Callable[[Any], Any]], Any]  # (value, recurse) -> tree or NotImplemented
Restore = Callable[[dict[str, Any], Callable[[Any], Any]], Any]


def to_tree(value: Any, convert: Convert | None = None) -> Any:
    """The JSON tree of a value a binary decoder returned (see the table above)."""

    def walk(item: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise DecodeError(f"nested deeper than {MAX_DEPTH} levels")
        if item is None or isinstance(item, bool | str | float):
            return item
        if isinstance(item, int):
            return item if _INT_MIN <= item <= _INT_MAX else {"$bigint": str(item)}
        if isinstance(item, bytes | bytearray | memoryview):
            return {"$bytes": base64.b64encode(bytes(item)).decode()}
        if convert is not None and not isinstance(item, list | dict):
            done = convert(item, lambda inner: walk(inner, depth + 1))
            if done is not NotImplemented:
                return done
        if isinstance(item, list | tuple | set | frozenset):
            return [walk(x, depth + 1) for x in item]
        if isinstance(item, dict):
            if all(isinstance(k, str) for k in item):
                return {k: walk(v, depth + 1) for k, v in item.items()}
            return {"$map": [[walk(k, depth + 1), walk(v, depth + 1)] for k, v in item.items()]}
        if isinstance(item, datetime.datetime):
            return {"$datetime": item.isoformat()}
        return str(item)

    return walk(value, 0)


def from_tree(value: Any, restore: Restore | None = None) -> Any:
    """The Python value a binary encoder writes for a tree (the inverse of `to_tree`)."""

    def walk(item: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise EncodeError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, list):
            return [walk(x, depth + 1) for x in item]
        if not isinstance(item, dict):
            return item
        marker = _marker(item)
        if marker is None:
            return {k: walk(v, depth + 1) for k, v in item.items()}
        return _restore(marker, item, lambda inner: walk(inner, depth + 1), restore)

    return walk(value, 0)


def _marker(item: dict[str, Any]) -> str | None:
    keys = [k for k in item if k.startswith("$")]
    return keys[0] if keys and len(keys) == len(item) else None


def _restore(marker: str, item: dict[str, Any], walk: Callable[[Any], Any],
             restore: Restore | None) -> Any:
    if marker == "$bytes":
        return b64(item["$bytes"], "$bytes")
    if marker == "$map":
        pairs = item["$map"]
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2
                                                  for p in pairs):
            raise EncodeError('"$map" takes a list of [key, value] pairs')
        try:
            return {_hashable(walk(k)): walk(v) for k, v in pairs}
        except TypeError as exc:
            raise EncodeError(f'"$map" key cannot be a map key: {exc}') from None
    if marker == "$bigint":
        try:
            return int(str(item["$bigint"]))
        except ValueError:
            raise EncodeError('"$bigint" takes a string of decimal digits') from None
    if marker == "$datetime":
        try:
            stamp = datetime.datetime.fromisoformat(str(item["$datetime"]))
        except ValueError as exc:
            raise EncodeError(f'"$datetime": {exc}') from None
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.UTC)
    if restore is not None:
        done = restore(item, walk)
        if done is not NotImplemented:
            return done
    raise EncodeError(f"{marker!r} has no meaning in this format")


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    if isinstance(key, dict):
        raise TypeError("a map")
    return key


def b64(text: Any, where: str) -> bytes:
    """Base64 text to bytes, or an EncodeError naming the field."""
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise EncodeError(f'"{where}" is not valid base64') from None


def pretty(tree: Any) -> str:
    """The tree as indented JSON, for the detail pane."""
    return orjson.dumps(tree, default=str, option=orjson.OPT_INDENT_2).decode()


def compact(tree: Any) -> str:
    """The tree as one line of JSON (no spaces), for search and export."""
    return orjson.dumps(tree, default=str).decode()


def parse_json(text: str | bytes, what: str = "payload") -> Any:
    """JSON text to a value, or a DecodeError with the parser's position."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{what} is not JSON: {exc}") from None
