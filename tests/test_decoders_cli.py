"""`wsconsole connect --decode` as a user runs it: a real subprocess against a server on
127.0.0.1 that chose the `msgpack` subprotocol and pushes MessagePack, CBOR and bad bytes;
a .proto given on the command line; bad decoder options exit 2 with one line."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import cbor2
import msgpack
import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from tests.support import SCALE
from wsconsole.decoders.protobuf import ProtoSchema

RUN_TIMEOUT = 60.0
PUSHED: list[bytes] = []


async def pusher(ws: ServerConnection) -> None:
    """Once the client says hello (it knows its subprotocol then), sends every payload of
    PUSHED as a binary message, then waits for the client to go."""
    await ws.recv()
    for payload in PUSHED:
        await ws.send(payload)
    await ws.wait_closed()


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with serve(pusher, "127.0.0.1", 0, subprotocols=["msgpack", "other"]) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/feed"


async def connect(*args: str) -> tuple[int, list[dict], str, str]:
    """`python -m wsconsole connect ARGS`; exit code, JSON lines, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsconsole", "connect", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT * SCALE)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [orjson.loads(line) for line in out.splitlines() if line.startswith(b"{")]
    assert proc.returncode is not None
    return proc.returncode, lines, out.decode(), err.decode()


async def test_decoded_frames_in_json_and_human_lines(url: str) -> None:
    PUSHED[:] = [msgpack.packb({"symbol": "ACME", "price": 101.25}), b"\x93\x01"]
    code, lines, _, err = await connect(url, "-s", "msgpack", "--decode", "--json",
                                        "--send", "hello", "--duration", "1.5")
    assert code == 0, err
    messages = [line for line in lines
                if line["event"] == "message" and line["direction"] == "in"]
    assert messages[0]["decoder"] == "msgpack"
    assert messages[0]["decoded"] == {"symbol": "ACME", "price": 101.25}
    assert messages[0]["b64"]  # the raw payload stays
    assert messages[1]["decoder"] == "msgpack" and "not MessagePack" in messages[1][
        "decode_error"]  # the subprotocol claims the connection: its error is the answer
    code, _, text, _ = await connect(url, "-s", "msgpack", "--decode", "--send", "hello",
                                     "--duration", "1.5")
    assert code == 0
    assert '< [MessagePack] {"symbol":"ACME","price":101.25}' in text
    assert "< [MessagePack] error: not MessagePack" in text


async def test_a_chosen_decoder_and_a_proto(url: str, tmp_path: Path) -> None:
    PUSHED[:] = [cbor2.dumps({"t": 1})]
    code, lines, _, err = await connect(url, "-s", "other", "--decode", "cbor", "--json",
                                        "--send", "hello", "--duration", "1")
    assert code == 0, err
    received = [m for m in lines if m["event"] == "message" and m["direction"] == "in"]
    assert [m["decoded"] for m in received] == [{"t": 1}]
    proto = tmp_path / "tick.proto"
    proto.write_text(textwrap.dedent("""
        syntax = "proto3";
        package market;
        message Tick { string symbol = 1; double price = 2; }
    """))
    tick = ProtoSchema.load(proto).message_class("market.Tick")(symbol="ACME", price=9.5)
    PUSHED[:] = [tick.SerializeToString()]
    code, lines, _, err = await connect(url, "-s", "other", "--proto", str(proto),
                                        "--proto-message", "market.Tick", "--json",
                                        "--send", "hello", "--duration", "1")
    assert code == 0, err
    message = next(m for m in lines if m["event"] == "message" and m["direction"] == "in")
    assert message["decoder"] == "protobuf:market.Tick"
    assert message["decoded"] == {"symbol": "ACME", "price": 9.5}


@pytest.mark.parametrize(("args", "error"), [
    (["--decode", "nope"], "--decode: no decoder named 'nope'"),
    (["--proto-message", "a.B"], "--proto-message needs --proto FILE"),
    (["--proto", "missing.proto", "--proto-message", "a.B"], "missing.proto: no such file"),
    (["--proto", "PROTO", "--proto-message", "a.B"], "has no message 'a.B'"),
])
async def test_bad_decoder_options_exit_2(url: str, tmp_path: Path, args: list[str],
                                          error: str) -> None:
    proto = tmp_path / "x.proto"
    proto.write_text('syntax = "proto3";\npackage x;\nmessage Y { int32 n = 1; }\n')
    args = [str(proto) if a == "PROTO" else a for a in args]
    code, _, _, err = await connect(url, *args, "--duration", "1")
    assert code == 2 and error in err and err.count("\n") == 1, err
