"""The harness wire protocol (DESIGN.md): JSON text frames with a "type" field.

Pure functions: `parse_client` / `parse_server` turn a text frame into a validated dict or
raise `EnvelopeError` carrying the `error` code to reply with (`check_server` validates an
envelope already decoded, e.g. by `FrameRecord.json`); `encode` builds a frame.
The core client uses this only when the harness protocol is switched on.
"""

from __future__ import annotations

from typing import Any

import orjson

from wsconsole.errors import WsconsoleError

MAX_NAME = 128  # room names, message ids, rpc methods: longer is refused as oversized

CLIENT_TYPES = frozenset({"auth", "join", "leave", "publish", "rpc"})
SERVER_TYPES = frozenset({"joined", "left", "message", "ack", "result", "error", "lagging"})


class EnvelopeError(WsconsoleError, ValueError):
    """An envelope that cannot be accepted; `code` is the `error` reply's code."""

    def __init__(self, code: str, detail: str, id: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.id = id


def encode(type_: str, **fields: Any) -> str:
    """One envelope as a JSON text frame; None-valued fields are left out."""
    body = {"type": type_, **{k: v for k, v in fields.items() if v is not None}}
    return orjson.dumps(body).decode()


def _load(text: str | bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError("bad_json", f"not JSON: {exc}") from None
    return _envelope(value)


def _envelope(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EnvelopeError("bad_envelope", "an envelope is a JSON object")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise EnvelopeError("bad_envelope", 'missing string field "type"', _id_of(value))
    return value


def _id_of(value: dict[str, Any]) -> str | None:
    ident = value.get("id")
    return ident if isinstance(ident, str) and len(ident) <= MAX_NAME else None


def _name(value: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    field = value.get(key)
    if field is None and not required:
        return None
    if not isinstance(field, str) or not field:
        raise EnvelopeError("bad_envelope", f'"{key}" must be a non-empty string', _id_of(value))
    if len(field) > MAX_NAME:
        raise EnvelopeError("oversized_field", f'"{key}" is over {MAX_NAME} characters', None)
    return field


def _seq(value: dict[str, Any], key: str, *, required: bool) -> int | None:
    field = value.get(key)
    if field is None and not required:
        return None
    if not isinstance(field, int) or isinstance(field, bool) or field < 0:
        raise EnvelopeError("bad_envelope", f'"{key}" must be an integer >= 0', _id_of(value))
    return field


def _epoch(value: dict[str, Any]) -> str | int | None:
    """The optional `epoch`: an opaque id of a room's sequence space (string or integer)."""
    field = value.get("epoch")
    if field is None:
        return None
    if isinstance(field, str) and field and len(field) <= MAX_NAME:
        return field
    if isinstance(field, int) and not isinstance(field, bool) and field >= 0:
        return field
    raise EnvelopeError("bad_envelope", f'"epoch" must be a string of 1..{MAX_NAME} characters '
                        "or an integer >= 0", _id_of(value))


def parse_client(text: str | bytes) -> dict[str, Any]:
    """Validate a client-to-node envelope; returns it with only the known fields."""
    value = _load(text)
    kind = value["type"]
    if kind == "auth":
        token = value.get("token")
        if not isinstance(token, str) or not token:
            raise EnvelopeError("bad_envelope", '"token" must be a non-empty string')
        return {"type": kind, "token": token}
    if kind == "join":
        room = _name(value, "room")
        join = {"type": kind, "room": room, "since": _seq(value, "since", required=False)}
        epoch = _epoch(value)
        if epoch is not None:
            join["epoch"] = epoch  # the sequence space `since` belongs to
        return join
    if kind == "leave":
        return {"type": kind, "room": _name(value, "room")}
    if kind == "publish":
        ident = _name(value, "id")
        room = _name(value, "room")
        if "data" not in value:
            raise EnvelopeError("bad_envelope", 'publish needs "data"', ident)
        return {"type": kind, "room": room, "id": ident, "data": value["data"]}
    if kind == "rpc":
        ident = _name(value, "id")
        method = _name(value, "method")
        return {"type": kind, "id": ident, "method": method, "params": value.get("params")}
    raise EnvelopeError("unknown_type", f"unknown type {kind[:MAX_NAME]!r}", _id_of(value))


def parse_server(text: str | bytes) -> dict[str, Any]:
    """Read a node-to-client envelope; unknown types are refused, extra fields kept."""
    return check_server(_load(text))


def check_server(decoded: Any) -> dict[str, Any]:
    """Validate a node-to-client envelope already decoded from JSON (see parse_server)."""
    value = _envelope(decoded)
    kind = value["type"]
    if kind not in SERVER_TYPES:
        raise EnvelopeError("unknown_type", f"unknown type {kind[:MAX_NAME]!r}")
    if kind in ("message", "joined", "lagging"):
        _name(value, "room")
        _seq(value, "seq", required=True)
    if kind == "lagging":
        _seq(value, "first", required=True)
    if kind == "ack":
        _name(value, "id")
        _seq(value, "seq", required=True)
    if kind in ("message", "joined", "ack", "lagging"):
        _epoch(value)
    if kind == "error" and not isinstance(value.get("code"), str):
        raise EnvelopeError("bad_envelope", 'error needs a string "code"')
    return value
