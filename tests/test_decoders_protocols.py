"""Subprotocol decoders on frames built per their specs and cross-checked with real peer
libraries from PyPI where one exists: python-socketio (Socket.IO), stomp.py (STOMP),
signalrcore (SignalR). GraphQL, Phoenix and ActionCable frames are built from their specs.
Every decoder is also given bad payloads and must answer with its own error."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import stomp.utils
from signalrcore.messages.completion_message import CompletionMessage
from signalrcore.messages.invocation_message import InvocationMessage
from signalrcore.messages.ping_message import PingMessage
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol
from socketio import packet as sio_packet

from wsconsole.decoders.base import Context, EncodeError, Message
from wsconsole.decoders.registry import Registry

REGISTRY = Registry(plugins=False)


def decode(payload: str | bytes, ctx: Context | None = None, *, text: bool | None = None,
           outgoing: bool | None = None) -> Any:
    raw = payload.encode() if isinstance(payload, str) else payload
    is_text = isinstance(payload, str) if text is None else text
    return REGISTRY.decode(Message(raw, is_text, outgoing), ctx)


# ---------------------------------------------------------------- Socket.IO / Engine.IO

SIO = Context(url="ws://h/socket.io/?EIO=4&transport=websocket")


@pytest.mark.parametrize("pkt", [
    sio_packet.Packet(sio_packet.EVENT, data=["chat", {"text": "hi"}], id=12,
                      namespace="/chat"),
    sio_packet.Packet(sio_packet.CONNECT, data={"token": "t"}, namespace="/admin"),
    sio_packet.Packet(sio_packet.ACK, data=["ok"], id=3),
    sio_packet.Packet(sio_packet.DISCONNECT, namespace="/chat"),
    sio_packet.Packet(sio_packet.CONNECT_ERROR, data={"message": "nope"}),
])
def test_socketio_packets_from_python_socketio(pkt: sio_packet.Packet) -> None:
    wire = "4" + pkt.encode()  # the Engine.IO message packet around it
    decoded = decode(wire, SIO)
    assert decoded.ok and decoded.decoder == "socketio", decoded.error
    tree = decoded.tree
    assert tree["engineio"] == "message"
    assert tree["socketio"] == sio_packet.packet_names[pkt.packet_type]
    assert tree.get("namespace", "/") == (pkt.namespace or "/")
    assert tree.get("id") == pkt.id and tree.get("data") == pkt.data
    again = REGISTRY.encode("socketio", tree, SIO)
    back = sio_packet.Packet(encoded_packet=again[1:])
    assert (back.packet_type, back.namespace or "/", back.id, back.data) == (
        pkt.packet_type, pkt.namespace or "/", pkt.id, pkt.data)


def test_socketio_binary_event_with_its_attachment() -> None:
    pkt = sio_packet.Packet(sio_packet.EVENT, data=["upload", b"\x01\x02\x03"])
    header, attachment = pkt.encode()
    tree = decode("4" + header, SIO).tree
    assert tree["socketio"] == "BINARY_EVENT" and tree["attachments"] == 1
    assert tree["data"] == ["upload", {"_placeholder": True, "num": 0}]
    binary = decode(attachment, SIO, text=False)
    assert binary.tree == {"engineio": "message", "binary": {"$bytes": "AQID"}}
    assert binary.summary == "binary attachment, 3 bytes"
    eio3 = Context(url="ws://h/socket.io/?EIO=3&transport=websocket")
    assert decode(b"\x04" + attachment, eio3, text=False).tree == binary.tree
    assert "type byte 4" in decode(attachment, eio3, text=False).error


def test_engineio_control_packets_and_detection_without_a_url() -> None:
    opened = decode('0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000}')
    assert opened.decoder == "socketio" and opened.tree["data"]["sid"] == "abc"
    assert decode("2", SIO).tree == {"engineio": "ping"}
    assert decode("3probe", SIO).tree == {"engineio": "pong", "data": "probe"}
    assert REGISTRY.encode("socketio", {"engineio": "ping"}, SIO) == "2"
    ctx = Context()
    REGISTRY.learn(Message(b'0{"sid":"x"}', True), ctx)  # the open packet marks it
    assert decode("40", ctx).tree == {"engineio": "message", "socketio": "CONNECT"}


@pytest.mark.parametrize(("wire", "error"), [
    ("9", "expected a type digit 0-6"),
    ("42{bad", "not JSON"),
    ('42{"not": "an array"}', "array starting with the event name"),
    ("45", "attachment count"),
    ("0{not json", "handshake"),
])
def test_socketio_bad_packets(wire: str, error: str) -> None:
    decoded = decode(wire, SIO)
    assert decoded.decoder == "socketio" and error in (decoded.error or ""), decoded


def test_socketio_encode_refuses_bad_trees() -> None:
    with pytest.raises(EncodeError, match="event name"):
        REGISTRY.encode("socketio", {"socketio": "EVENT", "data": {"x": 1}}, SIO)
    with pytest.raises(EncodeError, match="namespace"):
        REGISTRY.encode("socketio", {"socketio": "CONNECT", "namespace": "chat"}, SIO)


# ---------------------------------------------------------------- GraphQL over WebSocket

GTW = Context(subprotocol="graphql-transport-ws")
GWS = Context(subprotocol="graphql-ws")
QUERY = {"query": "subscription OnMessage { message { text } }", "operationName": "OnMessage"}


@pytest.mark.parametrize(("ctx", "message", "summary"), [
    (GTW, {"type": "connection_init", "payload": {"token": "t"}}, "connection_init"),
    (GTW, {"type": "subscribe", "id": "1", "payload": QUERY}, "subscribe #1 OnMessage"),
    (GTW, {"type": "next", "id": "1", "payload": {"data": {"message": {"text": "hi"}}}},
     "next #1"),
    (GTW, {"type": "error", "id": "1", "payload": [{"message": "boom"}]}, "error #1"),
    (GTW, {"type": "complete", "id": "1"}, "complete #1"),
    (GTW, {"type": "ping"}, "ping"),
    (GWS, {"type": "start", "id": "7", "payload": QUERY}, "start #7 OnMessage"),
    (GWS, {"type": "data", "id": "7", "payload": {"data": {}}}, "data #7"),
    (GWS, {"type": "ka"}, "ka"),
    (GWS, {"type": "stop", "id": "7"}, "stop #7"),
])
def test_graphql_messages(ctx: Context, message: dict[str, Any], summary: str) -> None:
    decoded = decode(orjson.dumps(message).decode(), ctx)
    assert decoded.ok and decoded.decoder == ctx.subprotocol
    assert decoded.tree == message and decoded.summary.startswith(summary)
    assert orjson.loads(REGISTRY.encode(ctx.subprotocol or "", message, ctx)) == message


@pytest.mark.parametrize(("ctx", "message", "error"), [
    (GTW, {"type": "start", "id": "1", "payload": QUERY}, "(it is a graphql-ws message)"),
    (GWS, {"type": "subscribe", "id": "1", "payload": QUERY},
     "(it is a graphql-transport-ws message)"),
    (GTW, {"type": "subscribe", "payload": QUERY}, 'needs a string "id"'),
    (GTW, {"type": "subscribe", "id": "1", "payload": {}}, 'string "query"'),
    (GTW, {"type": "error", "id": "1", "payload": {"message": "x"}}, "list of errors"),
    (GTW, ["not", "an", "object"], 'string "type"'),
])
def test_graphql_bad_messages(ctx: Context, message: Any, error: str) -> None:
    decoded = decode(orjson.dumps(message).decode(), ctx)
    assert decoded.decoder == ctx.subprotocol and error in (decoded.error or "")
    with pytest.raises(EncodeError):
        REGISTRY.encode(ctx.subprotocol or "", message, ctx)


# ---------------------------------------------------------------- STOMP

STOMP = Context(subprotocol="v12.stomp")


def test_stomp_frames_from_stomp_py_decode() -> None:
    frame = stomp.utils.Frame("SEND", {"destination": "/queue/a", "content-type":
                                       "application/json", "content-length": 0}, '{"x":1}')
    wire = b"".join(stomp.utils.convert_frame(frame))
    decoded = decode(wire.decode(), STOMP)
    assert decoded.ok, decoded.error
    assert decoded.tree == {"command": "SEND", "headers": {
        "content-length": "7", "content-type": "application/json", "destination": "/queue/a"},
        "body": {"x": 1}}
    assert decoded.summary == "SEND /queue/a (7 bytes)"


def test_stomp_encoded_frames_parse_in_stomp_py() -> None:
    tree = {"command": "MESSAGE", "headers": {"destination": "/topic/x", "message-id": "9",
                                              "subscription": "0", "note": "a:b\nc"},
            "body": "hello\x00world"}
    wire = REGISTRY.encode("stomp", tree, STOMP)
    assert isinstance(wire, str) and wire.endswith("\x00")
    parsed = stomp.utils.parse_frame(wire.encode()[:-1])  # stomp.py gets frames without NUL
    assert parsed.cmd == "MESSAGE"
    assert parsed.headers["note"] == "a:b\nc"  # escaped as a\cb\nc and unescaped by stomp.py
    assert parsed.body == b"hello\x00world"  # content-length lets the body hold a NUL
    assert decode(wire, STOMP).tree["body"] == "hello\x00world"


def test_stomp_several_frames_heartbeats_and_versions() -> None:
    two = "CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00\nRECEIPT\nreceipt-id:77\n\n\x00"
    decoded = decode(two, STOMP)
    assert [f["command"] for f in decoded.tree] == ["CONNECTED", "RECEIPT"]
    assert decoded.summary == "CONNECTED; RECEIPT 77"
    assert decode("\n", STOMP).tree == {"heartbeat": True}
    v10 = Context(subprotocol="v10.stomp")  # 1.0 has no escapes: backslashes are literal
    assert decode("MESSAGE\nx:a\\cb\n\n\x00", v10).tree["headers"] == {"x": "a\\cb"}
    assert decode("MESSAGE\nx:a\\cb\n\n\x00", STOMP).tree["headers"] == {"x": "a:b"}
    assert decode(b"SEND\ndestination:/q\n\n\xff\x00", STOMP, text=False).tree["body"] == {
        "$bytes": "/w=="}


@pytest.mark.parametrize(("wire", "error"), [
    ("FROB\n\n\x00", "unknown STOMP command 'FROB'"),
    ("SEND\ndestination:/q\n\nno terminator", "does not end with a NUL"),
    ("SEND\nbroken header\n\n\x00", "has no ':'"),
    ("SEND\ncontent-length:99\n\nshort\x00", "no NUL after the 99-byte body"),
    ("SEND\nx:bad\\tescape\n\n\x00", "undefined escape"),
    ("SEND", "no empty line after the headers"),
])
def test_stomp_bad_frames(wire: str, error: str) -> None:
    decoded = decode(wire, STOMP)
    assert decoded.decoder == "stomp" and error in (decoded.error or ""), decoded


# ---------------------------------------------------------------- SignalR JSON

SIGNALR = JsonHubProtocol()


def test_signalr_records_from_signalrcore() -> None:
    wire = (SIGNALR.encode(InvocationMessage("1", "SendMessage", ["ann", "hi"], headers={}))
            + SIGNALR.encode(PingMessage()))
    decoded = decode(wire)  # no subprotocol: found by the record separator
    assert decoded.ok and decoded.decoder == "signalr"
    assert decoded.tree[0]["target"] == "SendMessage" and decoded.tree[1] == {"type": 6}
    assert decoded.summary == "Invocation SendMessage #1; Ping"


def test_signalr_encoded_records_parse_in_signalrcore() -> None:
    tree = [{"type": 3, "invocationId": "5", "result": 42}, {"type": 6}]
    wire = REGISTRY.encode("signalr", tree)
    assert wire.count("\x1e") == 2 and wire.endswith("\x1e")
    completion, ping = SIGNALR.parse_messages(wire)
    assert isinstance(completion, CompletionMessage) and completion.result == 42
    assert isinstance(ping, PingMessage)


def test_signalr_handshake_marks_the_connection() -> None:
    ctx = Context()
    request = '{"protocol":"json","version":1}\x1e'
    REGISTRY.learn(Message(request.encode(), True), ctx)
    assert decode(request, ctx).summary == "handshake json v1"
    assert decode("{}\x1e", ctx).summary == "handshake accepted"
    bad = decode('{"type":1,"arguments":[]}\x1e', ctx)  # claimed: its error is the answer
    assert bad.decoder == "signalr" and bad.error == "Invocation (type 1) needs target"
    assert "ends with the record separator" in decode('{"type":6}', ctx).error
    assert "unknown SignalR message type 42" in decode('{"type":42}\x1e', ctx).error


# ---------------------------------------------------------------- Phoenix channels

PHOENIX = Context(url="ws://h/socket/websocket?vsn=2.0.0&token=x")


def test_phoenix_v2_text_messages() -> None:
    join = '["3","3","room:lobby","phx_join",{"user":"ann"}]'
    decoded = decode(join, PHOENIX)
    assert decoded.tree == {"join_ref": "3", "ref": "3", "topic": "room:lobby",
                            "event": "phx_join", "payload": {"user": "ann"}}
    assert decoded.summary == 'room:lobby phx_join {"user":"ann"} ref 3'
    assert REGISTRY.encode("phoenix", decoded.tree, PHOENIX) == join
    reply = decode('["3","3","room:lobby","phx_reply",{"status":"ok","response":{}}]')
    assert reply.decoder == "phoenix" and reply.summary == "room:lobby phx_reply ok ref 3"
    v1 = Context(url="ws://h/socket/websocket?vsn=1.0.0")
    assert orjson.loads(REGISTRY.encode("phoenix", decoded.tree, v1))["topic"] == "room:lobby"


def test_phoenix_v2_binary_messages_per_the_serializer() -> None:
    # a client push: kind 0, sizes of join_ref, ref, topic, event, then the payload
    push = bytes([0, 1, 1, 4, 6]) + b"12roomupload" + b"\x00\x01"
    tree = decode(push, PHOENIX, text=False, outgoing=True).tree
    assert tree == {"join_ref": "1", "ref": "2", "topic": "room", "event": "upload",
                    "payload": {"$bytes": "AAE="}}
    assert REGISTRY.encode("phoenix", tree, PHOENIX) == push
    # a server push has no ref; a reply carries its status; a broadcast only topic and event
    server_push = bytes([0, 1, 4, 3]) + b"1roomnew" + b"\xff"
    assert decode(server_push, PHOENIX, text=False, outgoing=False).tree["event"] == "new"
    reply = bytes([1, 1, 1, 4, 2]) + b"12roomok" + b"\x07"
    assert decode(reply, PHOENIX, text=False).tree["payload"] == {
        "status": "ok", "response": {"$bytes": "Bw=="}}
    cast = bytes([2, 4, 4]) + b"roomping"
    assert decode(cast, PHOENIX, text=False).tree["event"] == "ping"


@pytest.mark.parametrize(("wire", "text", "error"), [
    ('["1","1","room"]', True, "array of 5"),
    ('[null,null,42,"ev",{}]', True, "topic must be a non-empty string"),
    (bytes([7, 1]), False, "kind 0, 1 or 2"),
    (bytes([2, 9, 1]) + b"abc", False, "runs past the end"),
])
def test_phoenix_bad_messages(wire: Any, text: bool, error: str) -> None:
    raw = wire.encode() if isinstance(wire, str) else wire
    decoded = REGISTRY.decode(Message(raw, text), PHOENIX)
    assert decoded.decoder == "phoenix" and error in (decoded.error or ""), decoded


# ---------------------------------------------------------------- ActionCable

CABLE = Context(subprotocol="actioncable-v1-json")


def test_actioncable_nested_identifier_and_data() -> None:
    wire = orjson.dumps({"command": "message",
                         "identifier": '{"channel":"ChatChannel","room":"1"}',
                         "data": '{"action":"speak","text":"hi"}'}).decode()
    decoded = decode(wire, CABLE)
    assert decoded.tree["identifier"] == {"channel": "ChatChannel", "room": "1"}
    assert decoded.tree["data"]["text"] == "hi"
    assert decoded.summary == "message ChatChannel speak"
    assert orjson.loads(REGISTRY.encode("actioncable", decoded.tree, CABLE)) == orjson.loads(wire)
    assert decode('{"type":"welcome"}').decoder == "actioncable"  # found without subprotocol
    assert decode('{"type":"ping","message":1700000000}').summary == "ping"
    confirm = '{"identifier":"{\\"channel\\":\\"ChatChannel\\"}","type":"confirm_subscription"}'
    assert decode(confirm, CABLE).summary == "confirm_subscription ChatChannel"
    data = '{"identifier":"{\\"channel\\":\\"ChatChannel\\"}","message":{"text":"hi"}}'
    assert decode(data, CABLE).summary == 'ChatChannel {"text":"hi"}'


@pytest.mark.parametrize(("wire", "error"), [
    ('{"command":"jump","identifier":"{}"}', "unknown command 'jump'"),
    ('{"command":"message","identifier":"{}"}', "message needs data"),
    ('{"command":"subscribe","identifier":"{not json"}', "the identifier string is not JSON"),
    ('{"hello":"world"}', 'neither a "command"'),
])
def test_actioncable_bad_messages(wire: str, error: str) -> None:
    decoded = decode(wire, CABLE)
    assert decoded.decoder == "actioncable" and error in (decoded.error or ""), decoded
