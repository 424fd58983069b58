"""Malformed envelopes (hypothesis) against a real node: every input gets valid replies
(an error or a normal answer) or the right close code; the node keeps serving others."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from tests.nodekit import TIMEOUT, NodeProc, broker, module_procs, start_node
from tests.support import ProcessRegistry, pid_alive
from wsconsole.core.envelope import parse_server
from wsconsole.harness.broker import Broker

__all__ = ["broker", "module_procs"]

TYPES = ["auth", "join", "leave", "publish", "rpc", "joined", "message", "", "JOIN", "x" * 200]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.text(min_size=120, max_size=140),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
envelopes = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(TYPES), json_values)},
    optional={
        "room": st.one_of(st.sampled_from(["r1", "r2", "{r}", "ü"]), json_values),
        "since": st.one_of(st.integers(min_value=-5, max_value=2**64 - 1), json_values),
        "id": json_values,
        "data": json_values,
        "method": st.one_of(st.sampled_from(["echo", "time", "whoami", "nope"]), json_values),
        "params": json_values,
        "token": json_values,
    },
)
frames = st.one_of(
    envelopes.map(lambda e: orjson.dumps(e).decode()),
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.text(max_size=200),
    st.sampled_from(['{"type":', "{}", "[]", "null", '{"type":"join","room":"r1","since":1e999}']),
)


@pytest.fixture(scope="module")
def node(broker: Broker, module_procs: ProcessRegistry) -> NodeProc:
    """One node without auth or rate limit, so every example reaches the protocol layer."""
    return start_node(module_procs, broker.url, "fz", "--no-auth", "--rate", "0")


@pytest.fixture(scope="module")
def conn(node: NodeProc) -> Iterator[ClientConnection]:
    with connect(node.url, open_timeout=TIMEOUT, close_timeout=2, max_size=None) as ws:
        yield ws


def exchange(ws: ClientConnection, text: str) -> list[dict[str, Any]]:
    """Send one frame, then a sentinel rpc; return every frame the node sent before its result."""
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    ws.send(text)
    ws.send(json.dumps({"type": "rpc", "id": sentinel, "method": "echo"}))
    replies = []
    while True:
        frame = parse_server(ws.recv(timeout=TIMEOUT))  # raises on anything malformed
        if frame.get("id") == sentinel and frame["type"] == "result":
            return replies
        replies.append(frame)


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=frames)
def test_any_text_frame_gets_valid_replies_and_the_connection_stays(
    conn: ClientConnection, text: str
) -> None:
    replies = exchange(conn, text)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        assert [r["code"] for r in replies if r["type"] == "error"] in (
            ["bad_json"],
            ["bad_envelope"],
        ), (text, replies)
    elif value["type"] not in ("auth", "join", "leave", "publish", "rpc"):
        assert replies and replies[0]["type"] == "error", (text, replies)
    for reply in replies:
        if reply["type"] == "error":
            assert isinstance(reply["detail"], str) and reply["code"]


def test_node_keeps_serving_another_client_after_the_fuzz(
    node: NodeProc, conn: ClientConnection
) -> None:
    with connect(node.url, open_timeout=TIMEOUT) as other:
        other.send(json.dumps({"type": "join", "room": "after"}))
        assert json.loads(other.recv(timeout=TIMEOUT))["type"] == "joined"
        other.send(json.dumps({"type": "publish", "room": "after", "id": "1", "data": "ok"}))
        kinds = {json.loads(other.recv(timeout=TIMEOUT))["type"] for _ in range(2)}
        assert kinds == {"message", "ack"}
    assert exchange(conn, '{"type":"rpc","id":"last","method":"echo"}')[0]["id"] == "last"
    assert pid_alive(node.proc.pid) and node.proc.poll() is None


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x85" + b"\0\0\0\0" + b"\xff\xfe\xfd\xfc\xfb", 1007),  # invalid UTF-8
        (b"\x83\x80" + b"\0\0\0\0", 1002),  # reserved opcode
        (b"\xf1\x80" + b"\0\0\0\0", 1002),  # RSV bits without an extension
        (b"\x81\x01x", 1002),  # unmasked client frame
        (b"\x89\xfe\x00\x80" + b"\0\0\0\0" + b"p" * 128, 1002),  # control frame over 125 bytes
    ],
    ids=["utf8", "opcode", "rsv", "unmasked", "big-ping"],
)
def test_protocol_violations_get_the_rfc_close_code(
    node: NodeProc, frame: bytes, code: int
) -> None:
    from tests.nodekit import RawClient

    raw = RawClient(node.port)
    try:
        assert raw.status == 101
        raw.sock.sendall(frame)
        assert raw.recv_close() == code
    finally:
        raw.close()
    with connect(node.url, open_timeout=TIMEOUT) as other:
        other.send(json.dumps({"type": "rpc", "id": "a", "method": "time"}))
        assert json.loads(other.recv(timeout=TIMEOUT))["type"] == "result"
