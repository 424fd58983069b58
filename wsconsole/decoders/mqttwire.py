"""MQTT's wire primitives: variable byte integers, strings, binary data, v5 properties, and
the reason-code names (MQTT 3.1.1 sections 1.5, 2.2.3; MQTT 5.0 sections 1.5, 2.2.2, 2.4).

`Reader` and `Writer` are the two directions of the same primitives, so the packet decoder
and encoder in `mqtt.py` read and write exactly what the other expects.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from wsconsole.decoders.base import DecodeError, EncodeError
from wsconsole.decoders.tree import b64

BYTE, U16, U32, VARINT, STRING, BINARY, PAIR = "byte", "u16", "u32", "varint", "str", "bin", "pair"

# MQTT 5.0 section 2.2.2.2: identifier -> (name in the tree, type)
PROPERTIES: dict[int, tuple[str, str]] = {
    0x01: ("payload_format_indicator", BYTE), 0x02: ("message_expiry_interval", U32),
    0x03: ("content_type", STRING), 0x08: ("response_topic", STRING),
    0x09: ("correlation_data", BINARY), 0x0B: ("subscription_identifier", VARINT),
    0x11: ("session_expiry_interval", U32), 0x12: ("assigned_client_identifier", STRING),
    0x13: ("server_keep_alive", U16), 0x15: ("authentication_method", STRING),
    0x16: ("authentication_data", BINARY), 0x17: ("request_problem_information", BYTE),
    0x18: ("will_delay_interval", U32), 0x19: ("request_response_information", BYTE),
    0x1A: ("response_information", STRING), 0x1C: ("server_reference", STRING),
    0x1F: ("reason_string", STRING), 0x21: ("receive_maximum", U16),
    0x22: ("topic_alias_maximum", U16), 0x23: ("topic_alias", U16),
    0x24: ("maximum_qos", BYTE), 0x25: ("retain_available", BYTE),
    0x26: ("user_property", PAIR), 0x27: ("maximum_packet_size", U32),
    0x28: ("wildcard_subscription_available", BYTE),
    0x29: ("subscription_identifier_available", BYTE),
    0x2A: ("shared_subscription_available", BYTE),
}
_BY_NAME = {name: (ident, kind) for ident, (name, kind) in PROPERTIES.items()}
_REPEATABLE = ("user_property", "subscription_identifier")

# MQTT 5.0 section 2.4 (the common names; a few codes mean "granted QoS n" in SUBACK)
REASONS_V5 = {
    0x00: "success", 0x01: "granted QoS 1", 0x02: "granted QoS 2",
    0x04: "disconnect with will message", 0x10: "no matching subscribers",
    0x11: "no subscription existed", 0x18: "continue authentication", 0x19: "re-authenticate",
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password",
    0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned",
    0x8B: "server shutting down", 0x8C: "bad authentication method",
    0x8D: "keep alive timeout", 0x8E: "session taken over", 0x8F: "topic filter invalid",
    0x90: "topic name invalid", 0x91: "packet identifier in use",
    0x92: "packet identifier not found", 0x93: "receive maximum exceeded",
    0x94: "topic alias invalid", 0x95: "packet too large", 0x96: "message rate too high",
    0x97: "quota exceeded", 0x98: "administrative action", 0x99: "payload format invalid",
    0x9A: "retain not supported", 0x9B: "QoS not supported", 0x9C: "use another server",
    0x9D: "server moved", 0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded", 0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}
# MQTT 3.1.1 section 3.2.2.3
CONNACK_V3 = {0: "connection accepted", 1: "unacceptable protocol version",
              2: "identifier rejected", 3: "server unavailable",
              4: "bad user name or password", 5: "not authorized"}


class Reader:
    """Reads MQTT primitives from a packet body, with errors naming the field."""

    def __init__(self, data: bytes, packet: str) -> None:
        self.data = data
        self.pos = 0
        self.packet = packet

    @property
    def left(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.pos

    def take(self, count: int, what: str) -> bytes:
        """The next `count` bytes."""
        if count > self.left:
            raise DecodeError(f"{self.packet}: {what} needs {count} byte(s), "
                              f"{self.left} left")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def byte(self, what: str) -> int:
        """One byte."""
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        """A two-byte big-endian integer."""
        return int(struct.unpack(">H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        """A four-byte big-endian integer."""
        return int(struct.unpack(">I", self.take(4, what))[0])

    def varint(self, what: str) -> int:
        """A variable byte integer (at most four bytes)."""
        value = 0
        for shift in range(0, 28, 7):
            byte = self.byte(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise DecodeError(f"{self.packet}: {what} is longer than four bytes")

    def binary(self, what: str) -> bytes:
        """Two-byte length, then that many bytes."""
        return self.take(self.u16(what), what)

    def string(self, what: str) -> str:
        """A UTF-8 encoded string."""
        raw = self.binary(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"{self.packet}: {what} is not UTF-8") from None

    def properties(self) -> dict[str, Any]:
        """An MQTT 5 property list; repeatable ones as lists."""
        length = self.varint("property length")
        inner = Reader(self.take(length, "properties"), self.packet)
        out: dict[str, Any] = {}
        while inner.left:
            ident = inner.varint("property identifier")
            if ident not in PROPERTIES:
                raise DecodeError(f"{self.packet}: unknown property identifier 0x{ident:02x}")
            name, kind = PROPERTIES[ident]
            value = inner.value(kind, name)
            if name in _REPEATABLE:
                out.setdefault(name, []).append(value)
            elif name in out:
                raise DecodeError(f"{self.packet}: property {name} appears twice")
            else:
                out[name] = value
        return out

    def value(self, kind: str, what: str) -> Any:
        """One value of a property type."""
        if kind == BYTE:
            return self.byte(what)
        if kind == U16:
            return self.u16(what)
        if kind == U32:
            return self.u32(what)
        if kind == VARINT:
            return self.varint(what)
        if kind == STRING:
            return self.string(what)
        if kind == BINARY:
            return {"$bytes": base64.b64encode(self.binary(what)).decode()}
        return [self.string(what + " name"), self.string(what + " value")]


class Writer:
    """Writes MQTT primitives; the inverse of `Reader`."""

    def __init__(self, packet: str) -> None:
        self.out = bytearray()
        self.packet = packet

    def byte(self, value: int, what: str) -> None:
        """One byte."""
        self.out += _pack(">B", value, what, self.packet)

    def u16(self, value: int, what: str) -> None:
        """A two-byte big-endian integer."""
        self.out += _pack(">H", value, what, self.packet)

    def u32(self, value: int, what: str) -> None:
        """A four-byte big-endian integer."""
        self.out += _pack(">I", value, what, self.packet)

    def varint(self, value: int, what: str) -> None:
        """A variable byte integer."""
        self.out += varint(value, f"{self.packet}: {what}")

    def binary(self, value: bytes, what: str) -> None:
        """Two-byte length, then the bytes."""
        self.u16(len(value), what + " length")
        self.out += value

    def string(self, value: Any, what: str) -> None:
        """A UTF-8 encoded string."""
        if not isinstance(value, str):
            raise EncodeError(f"{self.packet}: {what} must be a string")
        self.binary(value.encode("utf-8"), what)

    def data(self, value: Any, what: str) -> None:
        """Binary data given as text (UTF-8) or {"$bytes": base64}."""
        self.binary(to_bytes(value, what), what)

    def properties(self, props: Any) -> None:
        """An MQTT 5 property list from its tree."""
        if not isinstance(props, dict):
            raise EncodeError(f"{self.packet}: properties is an object")
        inner = Writer(self.packet)
        for name, value in props.items():
            if name not in _BY_NAME:
                raise EncodeError(f"{self.packet}: unknown property {name!r}")
            ident, kind = _BY_NAME[name]
            values = value if name in _REPEATABLE and isinstance(value, list) else [value]
            if name == "user_property" and value and not isinstance(value[0], list):
                values = [value]
            for item in values:
                inner.varint(ident, "property identifier")
                inner.value(kind, item, name)
        self.varint(len(inner.out), "property length")
        self.out += inner.out

    def value(self, kind: str, value: Any, what: str) -> None:
        """One value of a property type."""
        if kind in (BYTE, U16, U32, VARINT):
            if not isinstance(value, int) or isinstance(value, bool):
                raise EncodeError(f"{self.packet}: {what} must be an integer")
            {BYTE: self.byte, U16: self.u16, U32: self.u32, VARINT: self.varint}[kind](
                value, what)
        elif kind == STRING:
            self.string(value, what)
        elif kind == BINARY:
            self.data(value, what)
        else:
            if not (isinstance(value, list) and len(value) == 2):
                raise EncodeError(f"{self.packet}: {what} is a [name, value] pair")
            self.string(value[0], what + " name")
            self.string(value[1], what + " value")


def varint(value: int, what: str) -> bytes:
    """The variable byte integer encoding of `value` (0 .. 268,435,455)."""
    if not 0 <= value <= 268_435_455:
        raise EncodeError(f"{what} {value} is outside 0..268435455")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def to_bytes(value: Any, what: str) -> bytes:
    """Text as UTF-8, {"$bytes": base64} as its bytes, anything else as compact JSON."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"$bytes"}:
        return b64(value["$bytes"], what)
    raise EncodeError(f"{what} is text or {{\"$bytes\": \"<base64>\"}}")


def _pack(fmt: str, value: int, what: str, packet: str) -> bytes:
    try:
        return struct.pack(fmt, value)
    except struct.error:
        raise EncodeError(f"{packet}: {what} {value!r} does not fit") from None
