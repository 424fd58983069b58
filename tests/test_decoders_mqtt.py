"""MQTT over WebSocket against a real peer: paho-mqtt connects over WebSocket (subprotocol
`mqtt`) to a tiny broker on 127.0.0.1 whose every answer is written by our encoder and
whose every reading is done by our decoder. paho accepting the CONNACK, SUBACK, PUBACK and
PUBLISH we wrote, and our decoder reading what paho sent, cross-checks both directions, for
MQTT 3.1.1 and 5.0. Hand-built packets cover what paho does not send, and bad bytes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support import until
from wsconsole.decoders.base import Context, EncodeError, Message
from wsconsole.decoders.mqtt import LEVEL_HINT
from wsconsole.decoders.registry import Registry

REGISTRY = Registry(plugins=False)


class Broker:
    """Answers a client with packets from our encoder; keeps every decoded packet."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.ctx = Context(subprotocol="mqtt")

    def answer(self, tree: dict[str, Any]) -> list[dict[str, Any]]:
        kind = tree["type"]
        if kind == "CONNECT":
            return [{"type": "CONNACK", "reason_code": 0}]
        if kind == "SUBSCRIBE":
            return [{"type": "SUBACK", "packet_id": tree["packet_id"],
                     "reason_codes": [s["qos"] for s in tree["subscriptions"]]},
                    {"type": "PUBLISH", "topic": "sensors/t2", "qos": 0,
                     "payload": "from the broker",
                     **({"properties": {"user_property": [["origin", "wsconsole"]]}}
                        if self.ctx.hints.get(LEVEL_HINT) == 5 else {})}]
        if kind == "PUBLISH" and tree["qos"] == 1:
            return [{"type": "PUBACK", "packet_id": tree["packet_id"]}]
        if kind == "PINGREQ":
            return [{"type": "PINGRESP"}]
        return []

    async def handler(self, ws: ServerConnection) -> None:
        try:
            async for data in ws:
                msg = Message(data if isinstance(data, bytes) else data.encode(),
                              isinstance(data, str), outgoing=True)
                REGISTRY.learn(msg, self.ctx)
                decoded = REGISTRY.decode(msg, self.ctx)
                if not decoded.ok:
                    self.errors.append(decoded.error or "not decoded")
                    continue
                trees = decoded.tree if isinstance(decoded.tree, list) else [decoded.tree]
                for tree in trees:
                    self.seen.append(tree)
                    for reply in self.answer(tree):
                        await ws.send(REGISTRY.encode("mqtt", reply, self.ctx))
        except ConnectionClosed:
            pass


@pytest.fixture
async def broker() -> AsyncIterator[tuple[Broker, int]]:
    state = Broker()
    async with serve(state.handler, "127.0.0.1", 0, subprotocols=["mqtt"]) as server:
        yield state, server.sockets[0].getsockname()[1]


class PahoEvents:
    """What paho's callbacks reported (they run on paho's own thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connected: list[Any] = []
        self.subscribed: list[Any] = []
        self.published: list[int] = []
        self.messages: list[paho.MQTTMessage] = []

    def attach(self, client: paho.Client) -> None:
        client.on_connect = lambda c, u, flags, code, props: self.connected.append(code)
        client.on_subscribe = lambda c, u, mid, codes, props: self.subscribed.append(codes)
        client.on_publish = lambda c, u, mid, code, props: self.published.append(mid)
        client.on_message = lambda c, u, message: self.messages.append(message)


@pytest.mark.parametrize("version", [paho.MQTTv311, paho.MQTTv5])
async def test_paho_client_against_our_encoder_and_decoder(
    broker: tuple[Broker, int], version: int,
) -> None:
    state, port = broker
    v5 = version == paho.MQTTv5
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="sensor-7",
                         transport="websockets", protocol=version)
    events = PahoEvents()
    events.attach(client)
    client.ws_set_options(path="/mqtt")
    client.username_pw_set("ann", "s3cret")
    client.will_set("sensors/status", "offline", qos=1, retain=True)
    publish_props = None
    if v5:
        publish_props = Properties(PacketTypes.PUBLISH)
        publish_props.ContentType = "application/json"
        publish_props.UserProperty = [("unit", "C")]
    await asyncio.to_thread(client.connect, "127.0.0.1", port, 30)
    client.loop_start()
    try:
        await until(lambda: events.connected, "paho's CONNACK callback")
        client.subscribe("sensors/#", qos=1)
        info = client.publish("sensors/t1", '{"t": 21.5}', qos=1, properties=publish_props)
        await until(lambda: events.subscribed and events.messages and events.published,
                    "SUBACK, the broker's PUBLISH and the PUBACK in paho",
                    detail=lambda: (state.seen, state.errors))
        client.disconnect()
        await until(lambda: state.seen and state.seen[-1]["type"] == "DISCONNECT",
                    "DISCONNECT at the broker")
    finally:
        client.loop_stop()
    assert not state.errors
    # paho accepted what our encoder wrote
    assert not events.connected[0].is_failure
    assert [int(c.value) if hasattr(c, "value") else int(c) for c in events.subscribed[0]] == [1]
    assert events.published == [info.mid]
    received = events.messages[0]
    assert (received.topic, received.payload) == ("sensors/t2", b"from the broker")
    if v5:
        assert received.properties.UserProperty == [("origin", "wsconsole")]
    # our decoder read what paho sent
    connect, subscribe, publish = state.seen[0], state.seen[1], state.seen[2]
    assert connect["type"] == "CONNECT" and connect["level"] == (5 if v5 else 4)
    assert (connect["client_id"], connect["username"], connect["password"]) == (
        "sensor-7", "ann", "s3cret")
    assert connect["will"]["topic"] == "sensors/status"
    assert connect["will"]["payload"] == "offline" and connect["will"]["retain"] is True
    assert subscribe["subscriptions"][0]["topic"] == "sensors/#"
    assert subscribe["subscriptions"][0]["qos"] == 1
    assert (publish["topic"], publish["payload"], publish["qos"]) == (
        "sensors/t1", '{"t": 21.5}', 1)
    if v5:
        assert publish["properties"] == {"content_type": "application/json",
                                         "user_property": [["unit", "C"]]}
    assert state.ctx.hints[LEVEL_HINT] == (5 if v5 else 4)


V5 = Context(subprotocol="mqtt", hints={LEVEL_HINT: 5})
V3 = Context(subprotocol="mqtt")


def decode(payload: bytes, ctx: Context) -> Any:
    return REGISTRY.decode(Message(payload, False), ctx)


def test_hand_built_packets_per_the_spec() -> None:
    # MQTT 3.1.1 section 3.2: CONNACK, session present, return code 5 (not authorized)
    assert decode(bytes([0x20, 2, 1, 5]), V3).tree == {
        "type": "CONNACK", "session_present": True, "reason_code": 5,
        "reason": "not authorized"}
    # two packets in one message: PINGRESP and a v5 DISCONNECT with reason 0x8E
    decoded = decode(bytes([0xD0, 0, 0xE0, 2, 0x8E, 0]), V5)
    assert decoded.tree == [{"type": "PINGRESP"}, {"type": "DISCONNECT", "reason_code": 0x8E,
                                                   "reason": "session taken over",
                                                   "properties": {}}]
    assert decoded.summary == "PINGRESP; DISCONNECT session taken over"
    # a v5 PUBLISH QoS 2 with a binary payload and a topic alias
    publish = bytes([0x34, 10, 0, 1, ord("t"), 0, 9, 3, 0x23, 0, 4, 0xFF])
    tree = decode(publish, V5).tree
    assert tree["packet_id"] == 9 and tree["properties"] == {"topic_alias": 4}
    assert tree["payload"] == {"$bytes": "/w=="}
    assert REGISTRY.encode("mqtt", tree, V5) == publish


@pytest.mark.parametrize(("payload", "ctx", "error"), [
    (bytes([0x82, 5, 0, 1, 0, 1, ord("a")]), V3,
     "SUBSCRIBE: subscription options needs 1 byte(s), 0 left"),
    (bytes([0x80, 2, 0, 1]), V3, "flags must be 0010"),
    (bytes([0x36, 3, 0, 1, ord("t")]), V3, "QoS 3 is not allowed"),
    (bytes([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]), V3, "longer than four bytes"),
    (bytes([0x00, 0]), V3, "packet type 0 is reserved"),
    (bytes([0xF0, 0]), V3, "AUTH packets exist only in MQTT 5"),
    (bytes([0x40, 4, 0, 1, 0, 0]), V3, "2 byte(s) left over"),
    (bytes([0x30, 6, 0, 1, ord("t"), 2, 0x7F, 0]), V5, "unknown property identifier 0x7f"),
    (bytes([0x10, 7, 0, 4]) + b"MQTT\x09", V3, "unsupported protocol 'MQTT' level 9"),
    (b"", V3, "empty message"),
])
def test_bad_packets_give_the_decoders_error(payload: bytes, ctx: Context, error: str) -> None:
    decoded = decode(payload, ctx)
    assert decoded.decoder == "mqtt" and error in (decoded.error or ""), decoded


def test_encoder_refuses_bad_trees() -> None:
    with pytest.raises(EncodeError, match="packet_id from 1 to 65535"):
        REGISTRY.encode("mqtt", {"type": "PUBLISH", "topic": "t", "qos": 1}, V3)
    with pytest.raises(EncodeError, match="unknown property 'colour'"):
        REGISTRY.encode("mqtt", {"type": "PUBLISH", "topic": "t",
                                 "properties": {"colour": "red"}}, V5)
    with pytest.raises(EncodeError, match="an MQTT packet is an object"):
        REGISTRY.encode("mqtt", {"type": "HELLO"}, V3)
