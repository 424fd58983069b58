"""MQTT 3.1.1 and 5.0 control packets over WebSocket (subprotocol `mqtt`; `mqttv3.1` for the
old 3.1), in binary messages that may hold several packets each (MQTT section 6).

Which version a packet is in cannot always be read from the packet itself (a v5 PUBLISH
has properties where v3 has payload), so the decoder learns it from the connection's
CONNECT (protocol level 3, 4 or 5) and assumes 3.1.1 until it has seen one.

The tree of a packet is an object with `type` (CONNECT, PUBLISH, ...) and its fields by
name: `topic`, `qos`, `retain`, `dup`, `packet_id`, `payload` (text, or `{"$bytes": ...}`),
`properties` (MQTT 5, names as in `mqttwire.PROPERTIES`), `reason_code` with `reason`,
`subscriptions`, ... Several packets give a list. The Composer writes the same objects
(`properties` or `"level": 5` select MQTT 5 when the connection's level is not known).
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
from wsconsole.decoders.mqttwire import CONNACK_V3, REASONS_V5, Reader, Writer, to_bytes, varint

TYPES = ("", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
         "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT",
         "AUTH")
_FLAGS_0010 = ("PUBREL", "SUBSCRIBE", "UNSUBSCRIBE")
_ACKS = ("PUBACK", "PUBREC", "PUBREL", "PUBCOMP")
LEVEL_HINT = "mqtt.level"
VERSIONS = {3: "3.1", 4: "3.1.1", 5: "5.0"}


class MqttDecoder(Decoder):
    """MQTT control packets."""

    name = "mqtt"
    title = "MQTT"
    subprotocols = ("mqtt", "mqttv3.1")
    text = False

    def claims(self, ctx: Context) -> bool:
        """The `mqtt` subprotocol, or a CONNECT seen on the connection."""
        return super().claims(ctx) or LEVEL_HINT in ctx.hints

    def sniff(self, msg: Message) -> bool:
        """A CONNECT packet naming the protocol."""
        return msg.payload[:1] == b"\x10" and (b"\x00\x04MQTT" in msg.payload[:12]
                                               or b"\x00\x06MQIsdp" in msg.payload[:12])

    def learn(self, msg: Message, ctx: Context) -> None:
        """The protocol level of a CONNECT."""
        if self.sniff(msg):
            try:
                packets = _split(msg.payload)
                level = _connect_level(Reader(packets[0][2], "CONNECT"))
            except DecodeError:
                return
            ctx.hints[LEVEL_HINT] = level

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """Every packet in the message."""
        level = ctx.hints.get(LEVEL_HINT, 4)
        trees = [_decode(kind, flags, body, level) for kind, flags, body in _split(msg.payload)]
        summary = "; ".join(_summary(t) for t in trees)
        return (trees[0] if len(trees) == 1 else trees), summary

    def encode(self, value: Any, ctx: Context) -> Payload:
        """The packet(s) of a tree."""
        packets = value if isinstance(value, list) else [value]
        return b"".join(_encode(p, ctx) for p in packets)


def _split(data: bytes) -> list[tuple[str, int, bytes]]:
    """(type name, flags, body) of each packet in a message."""
    if not data:
        raise DecodeError("empty message: no MQTT packet")
    packets = []
    reader = Reader(data, "MQTT")
    while reader.left:
        start = reader.pos
        first = reader.byte("fixed header")
        kind = TYPES[first >> 4]
        if not kind:
            raise DecodeError(f"packet type 0 is reserved (byte 0x{first:02x} at offset {start})")
        reader.packet = kind
        length = reader.varint("remaining length")
        body = reader.take(length, f"the {length}-byte body")
        packets.append((kind, first & 0x0F, body))
    return packets


def _connect_level(reader: Reader) -> int:
    name = reader.string("protocol name")
    level = reader.byte("protocol level")
    if (name, level) not in (("MQTT", 4), ("MQTT", 5), ("MQIsdp", 3)):
        raise DecodeError(f"CONNECT: unsupported protocol {name!r} level {level}")
    return level


def _decode(kind: str, flags: int, body: bytes, level: int) -> dict[str, Any]:
    reader = Reader(body, kind)
    if kind == "PUBLISH":
        tree = _publish(reader, flags, level)
    else:
        wanted = 0b0010 if kind in _FLAGS_0010 else 0
        if flags != wanted:
            raise DecodeError(f"{kind}: fixed-header flags must be {wanted:04b}, not {flags:04b}")
        tree = _DECODERS[kind](reader, level == 5)
    if reader.left:
        raise DecodeError(f"{kind}: {reader.left} byte(s) left over after the packet")
    return tree


def _publish(reader: Reader, flags: int, level: int) -> dict[str, Any]:
    qos = (flags >> 1) & 3
    if qos == 3:
        raise DecodeError("PUBLISH: QoS 3 is not allowed")
    tree: dict[str, Any] = {"type": "PUBLISH", "topic": reader.string("topic name"),
                            "qos": qos, "retain": bool(flags & 1), "dup": bool(flags & 8)}
    if qos:
        tree["packet_id"] = reader.u16("packet identifier")
    if level == 5:
        tree["properties"] = reader.properties()
    payload = reader.take(reader.left, "payload")
    try:
        tree["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        tree["payload"] = {"$bytes": base64.b64encode(payload).decode()}
    return tree


def _connect(reader: Reader, _v5: bool) -> dict[str, Any]:
    level = _connect_level(reader)
    v5 = level == 5
    flags = reader.byte("connect flags")
    if flags & 1:
        raise DecodeError("CONNECT: the reserved connect flag must be 0")
    tree: dict[str, Any] = {"type": "CONNECT", "level": level, "version": VERSIONS[level],
                            "clean_start": bool(flags & 2),
                            "keep_alive": reader.u16("keep alive")}
    if v5:
        tree["properties"] = reader.properties()
    tree["client_id"] = reader.string("client identifier")
    if flags & 4:
        will: dict[str, Any] = {"qos": (flags >> 3) & 3, "retain": bool(flags & 32)}
        if v5:
            will["properties"] = reader.properties()
        will["topic"] = reader.string("will topic")
        will["payload"] = _text_or_bytes(reader.binary("will payload"))
        tree["will"] = will
    if flags & 128:
        tree["username"] = reader.string("user name")
    if flags & 64:
        tree["password"] = _text_or_bytes(reader.binary("password"))
    return tree


def _connack(reader: Reader, v5: bool) -> dict[str, Any]:
    flags = reader.byte("acknowledge flags")
    code = reader.byte("return code")
    names = REASONS_V5 if v5 else CONNACK_V3
    tree: dict[str, Any] = {"type": "CONNACK", "session_present": bool(flags & 1),
                            "reason_code": code, "reason": names.get(code, "unknown")}
    if v5:
        tree["properties"] = reader.properties()
    return tree


def _ack(kind: str) -> Any:
    def read(reader: Reader, v5: bool) -> dict[str, Any]:
        tree: dict[str, Any] = {"type": kind, "packet_id": reader.u16("packet identifier")}
        if v5:
            _read_reason(reader, tree)
        return tree

    return read


def _read_reason(reader: Reader, tree: dict[str, Any]) -> None:
    """MQTT 5's optional reason code and properties at the end of a packet."""
    if reader.left:
        code = reader.byte("reason code")
        tree.update(reason_code=code, reason=REASONS_V5.get(code, "unknown"))
        if reader.left:
            tree["properties"] = reader.properties()


def _subscribe(reader: Reader, v5: bool) -> dict[str, Any]:
    tree: dict[str, Any] = {"type": "SUBSCRIBE", "packet_id": reader.u16("packet identifier")}
    if v5:
        tree["properties"] = reader.properties()
    subs = []
    while reader.left:
        topic = reader.string("topic filter")
        options = reader.byte("subscription options")
        sub: dict[str, Any] = {"topic": topic, "qos": options & 3}
        if v5:
            sub.update(no_local=bool(options & 4), retain_as_published=bool(options & 8),
                       retain_handling=(options >> 4) & 3)
        subs.append(sub)
    if not subs:
        raise DecodeError("SUBSCRIBE: no topic filter")
    tree["subscriptions"] = subs
    return tree


def _reason_list(kind: str, props: bool) -> Any:
    def read(reader: Reader, v5: bool) -> dict[str, Any]:
        tree: dict[str, Any] = {"type": kind, "packet_id": reader.u16("packet identifier")}
        if v5:
            tree["properties"] = reader.properties()
        if props or v5:
            codes = list(reader.take(reader.left, "reason codes"))
            tree["reason_codes"] = codes
        return tree

    return read


def _unsubscribe(reader: Reader, v5: bool) -> dict[str, Any]:
    tree: dict[str, Any] = {"type": "UNSUBSCRIBE", "packet_id": reader.u16("packet identifier")}
    if v5:
        tree["properties"] = reader.properties()
    tree["topics"] = []
    while reader.left:
        tree["topics"].append(reader.string("topic filter"))
    if not tree["topics"]:
        raise DecodeError("UNSUBSCRIBE: no topic filter")
    return tree


def _bare(kind: str) -> Any:
    return lambda reader, v5: {"type": kind}


def _disconnect(kind: str) -> Any:
    def read(reader: Reader, v5: bool) -> dict[str, Any]:
        if kind == "AUTH" and not v5:
            raise DecodeError("AUTH packets exist only in MQTT 5")
        tree: dict[str, Any] = {"type": kind}
        if v5:
            _read_reason(reader, tree)
        return tree

    return read


_DECODERS: dict[str, Any] = {
    "CONNECT": _connect, "CONNACK": _connack, **{k: _ack(k) for k in _ACKS},
    "SUBSCRIBE": _subscribe, "SUBACK": _reason_list("SUBACK", True),
    "UNSUBSCRIBE": _unsubscribe, "UNSUBACK": _reason_list("UNSUBACK", False),
    "PINGREQ": _bare("PINGREQ"), "PINGRESP": _bare("PINGRESP"),
    "DISCONNECT": _disconnect("DISCONNECT"), "AUTH": _disconnect("AUTH"),
}


def _text_or_bytes(data: bytes) -> Any:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"$bytes": base64.b64encode(data).decode()}


# ---------------------------------------------------------------- encoding


def _encode(tree: Any, ctx: Context) -> bytes:
    if not isinstance(tree, dict) or tree.get("type") not in TYPES[1:]:
        raise EncodeError(f"an MQTT packet is an object with a type in {', '.join(TYPES[1:])}")
    kind = tree["type"]
    level = tree.get("level") or ctx.hints.get(LEVEL_HINT) or (5 if "properties" in tree else 4)
    v5 = level == 5
    out = Writer(kind)
    flags = 0b0010 if kind in _FLAGS_0010 else 0
    if kind == "CONNECT":
        _write_connect(out, tree, level)
    elif kind == "PUBLISH":
        flags = _write_publish(out, tree, v5)
    elif kind == "CONNACK":
        out.byte(1 if tree.get("session_present") else 0, "acknowledge flags")
        out.byte(int(tree.get("reason_code", 0)), "reason code")
        if v5:
            out.properties(tree.get("properties", {}))
    elif kind in _ACKS or kind in ("SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK"):
        out.u16(_packet_id(tree, kind), "packet identifier")
        _write_rest(out, tree, kind, v5)
    elif kind in ("DISCONNECT", "AUTH") and v5:
        _write_reason(out, tree)
    return bytes([TYPES.index(kind) << 4 | flags]) + varint(len(out.out), kind) + out.out


def _packet_id(tree: dict[str, Any], kind: str) -> int:
    ident = tree.get("packet_id")
    if not isinstance(ident, int) or not 1 <= ident <= 65535:
        raise EncodeError(f"{kind} needs a packet_id from 1 to 65535")
    return ident


def _write_connect(out: Writer, tree: dict[str, Any], level: int) -> None:
    if level not in VERSIONS:
        raise EncodeError("CONNECT level is 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0)")
    will = tree.get("will")
    flags = (2 if tree.get("clean_start", True) else 0)
    if isinstance(will, dict):
        flags |= 4 | (int(will.get("qos", 0)) & 3) << 3 | (32 if will.get("retain") else 0)
    flags |= (128 if "username" in tree else 0) | (64 if "password" in tree else 0)
    out.string("MQIsdp" if level == 3 else "MQTT", "protocol name")
    out.byte(level, "protocol level")
    out.byte(flags, "connect flags")
    out.u16(int(tree.get("keep_alive", 60)), "keep alive")
    if level == 5:
        out.properties(tree.get("properties", {}))
    out.string(tree.get("client_id", ""), "client identifier")
    if isinstance(will, dict):
        if level == 5:
            out.properties(will.get("properties", {}))
        out.string(will.get("topic"), "will topic")
        out.data(will.get("payload", ""), "will payload")
    if "username" in tree:
        out.string(tree["username"], "user name")
    if "password" in tree:
        out.data(tree["password"], "password")


def _write_publish(out: Writer, tree: dict[str, Any], v5: bool) -> int:
    qos = tree.get("qos", 0)
    if qos not in (0, 1, 2):
        raise EncodeError("PUBLISH qos is 0, 1 or 2")
    out.string(tree.get("topic"), "topic name")
    if qos:
        out.u16(_packet_id(tree, "PUBLISH"), "packet identifier")
    if v5:
        out.properties(tree.get("properties", {}))
    out.out += to_bytes(tree.get("payload", ""), "payload")
    return (8 if tree.get("dup") else 0) | qos << 1 | (1 if tree.get("retain") else 0)


def _write_reason(out: Writer, tree: dict[str, Any]) -> None:
    """MQTT 5's reason code and properties, when the tree has either."""
    if "reason_code" in tree or "properties" in tree:
        out.byte(int(tree.get("reason_code", 0)), "reason code")
        out.properties(tree.get("properties", {}))


def _write_rest(out: Writer, tree: dict[str, Any], kind: str, v5: bool) -> None:
    if kind in _ACKS:
        if v5:
            _write_reason(out, tree)
        return
    if v5:
        out.properties(tree.get("properties", {}))
    if kind == "SUBSCRIBE":
        subs = tree.get("subscriptions")
        if not isinstance(subs, list) or not subs:
            raise EncodeError('SUBSCRIBE needs "subscriptions": [{"topic": ..., "qos": ...}]')
        for sub in subs:
            if not isinstance(sub, dict):
                raise EncodeError("each subscription is an object with topic and qos")
            out.string(sub.get("topic"), "topic filter")
            options = int(sub.get("qos", 0)) & 3
            if v5:
                options |= (4 if sub.get("no_local") else 0) | (
                    8 if sub.get("retain_as_published") else 0) | (
                    (int(sub.get("retain_handling", 0)) & 3) << 4)
            out.byte(options, "subscription options")
    elif kind == "UNSUBSCRIBE":
        topics = tree.get("topics")
        if not isinstance(topics, list) or not topics:
            raise EncodeError('UNSUBSCRIBE needs "topics": ["a/b", ...]')
        for topic in topics:
            out.string(topic, "topic filter")
    elif kind == "SUBACK" or v5:
        for code in tree.get("reason_codes", []):
            out.byte(int(code), "reason code")


def _summary(tree: dict[str, Any]) -> str:
    kind = tree["type"]
    bits = [kind]
    if kind == "CONNECT":
        bits.append(f"MQTT {tree['version']} client {tree['client_id'] or '(empty)'}")
    elif kind == "PUBLISH":
        bits.append(f"{tree['topic']} qos {tree['qos']}")
        payload = tree["payload"]
        bits.append(shorten(payload, 50) if isinstance(payload, str) else "(binary)")
    elif kind == "SUBSCRIBE":
        bits.append(", ".join(s["topic"] for s in tree["subscriptions"]))
    elif kind == "UNSUBSCRIBE":
        bits.append(", ".join(tree["topics"]))
    elif "packet_id" in tree:
        bits.append(f"id {tree['packet_id']}")
    if "reason" in tree:
        bits.append(tree["reason"])
    return " ".join(bits)
