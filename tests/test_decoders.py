"""Decoders: the registry's choice of decoder, plug-ins through a real entry point, and the
general formats on bytes made by the real libraries (msgpack, cbor2), bad payloads included."""

from __future__ import annotations

import datetime
import importlib
import sys
import textwrap
from pathlib import Path
from typing import Any

import cbor2
import msgpack
import pytest

from wsconsole.decoders.base import Context, DecodeError, Decoder, EncodeError, Message
from wsconsole.decoders.formats import CborDecoder, MsgpackDecoder
from wsconsole.decoders.registry import ENTRY_POINT_GROUP, LEARN_FIRST, Registry
from wsconsole.decoders.tree import MAX_DEPTH, from_tree, pretty, to_tree

REGISTRY = Registry(plugins=False)


def binary(payload: bytes, ctx: Context | None = None, choice: str = "auto") -> Any:
    return REGISTRY.decode(Message(payload, text=False), ctx, choice)


def text(payload: str | bytes, ctx: Context | None = None, choice: str = "auto") -> Any:
    raw = payload.encode() if isinstance(payload, str) else payload
    return REGISTRY.decode(Message(raw, text=True), ctx, choice)


# ---------------------------------------------------------------- MessagePack


def test_msgpack_real_bytes_decode_to_a_tree_and_encode_back_identically() -> None:
    value = {"type": "tick", "price": 101.25, "seq": 2**40, "tags": ["a", "b"],
             "raw": b"\x00\xff", "nested": {"ok": True, "none": None}}
    payload = msgpack.packb(value, use_bin_type=True)
    decoded = binary(payload)
    assert decoded.ok and decoded.decoder == "msgpack" and decoded.title == "MessagePack"
    assert decoded.tree == {"type": "tick", "price": 101.25, "seq": 2**40, "tags": ["a", "b"],
                            "raw": {"$bytes": "AP8="}, "nested": {"ok": True, "none": None}}
    assert '"type":"tick"' in decoded.summary
    assert REGISTRY.encode("msgpack", decoded.tree) == payload


def test_msgpack_extension_types_timestamps_and_integer_keys_round_trip() -> None:
    stamp = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC)
    value = {1: "one", "ext": msgpack.ExtType(5, b"abc"), "at": stamp}
    payload = msgpack.packb(value, use_bin_type=True, datetime=True)
    decoded = binary(payload)
    assert decoded.tree == {"$map": [[1, "one"], ["ext", {"$ext": 5, "$data": "YWJj"}],
                                     ["at", {"$datetime": "2024-05-01T12:30:00+00:00"}]]}
    again = REGISTRY.encode("msgpack", decoded.tree)
    assert msgpack.unpackb(again, strict_map_key=False, timestamp=3) == value


@pytest.mark.parametrize(("payload", "message"), [
    (msgpack.packb([1, 2]) + b"\x01", "1 byte(s) left after the first value (at offset 3)"),
    (msgpack.packb([1, 2, 3])[:-1], "not MessagePack"),
    (b"\xc1", "reserved type byte 0xc1"),
    (b"\x91\xa2\xff\xfe", "a string is not UTF-8"),
    (b"", "empty payload"),
])
def test_msgpack_bad_payloads_give_the_decoders_error(payload: bytes, message: str) -> None:
    decoded = binary(payload, choice="msgpack")
    assert decoded.decoder == "msgpack" and not decoded.ok
    assert message in (decoded.error or "")


def test_msgpack_encode_refuses_what_it_cannot_write() -> None:
    with pytest.raises(EncodeError, match="base64"):
        REGISTRY.encode("msgpack", {"$bytes": "not base64!"})
    with pytest.raises(EncodeError, match=r"extension type 0\.\.127"):
        REGISTRY.encode("msgpack", {"$ext": 300, "$data": ""})
    with pytest.raises(EncodeError, match="no meaning in this format"):
        REGISTRY.encode("msgpack", {"$tag": 1, "$value": 2})


# ---------------------------------------------------------------- CBOR


def test_cbor_real_bytes_with_tags_round_trip() -> None:
    value = {"temp": 21.5, "id": cbor2.CBORTag(4242, [1, 2]), "blob": b"\x01\x02",
             "big": 2**70, "at": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
             "simple": cbor2.CBORSimpleValue(99)}
    payload = cbor2.dumps(value)
    decoded = binary(payload)
    assert decoded.ok and decoded.decoder == "cbor"
    assert decoded.tree == {"temp": 21.5, "id": {"$tag": 4242, "$value": [1, 2]},
                            "blob": {"$bytes": "AQI="}, "big": {"$bigint": str(2**70)},
                            "at": {"$datetime": "2024-01-02T03:04:05+00:00"},
                            "simple": {"$simple": 99}}
    assert REGISTRY.encode("cbor", decoded.tree) == payload  # the very same bytes


@pytest.mark.parametrize(("payload", "message"), [
    (cbor2.dumps([1, 2]) + b"\x00", "1 byte(s) left after the first data item (at offset 3)"),
    (cbor2.dumps({"a": "long string"})[:-3], "cut short"),
    (b"\x1f", "not CBOR"),
])
def test_cbor_bad_payloads_give_the_decoders_error(payload: bytes, message: str) -> None:
    decoded = binary(payload, choice="cbor")
    assert decoded.decoder == "cbor" and message in (decoded.error or "")


def test_msgpack_and_cbor_are_told_apart_by_content() -> None:
    # Both start with 0x8x for a small map/array: each decodes whole only in its own format.
    assert binary(msgpack.packb({"a": 1, "b": [1, 2]})).decoder == "msgpack"
    assert binary(cbor2.dumps({"a": 1, "b": [1, 2]})).decoder == "cbor"
    assert binary(cbor2.dumps([{"x": "y"}])).decoder == "cbor"
    assert binary(b"\x00\x01 raw bytes").decoder is None  # nothing applies: shown raw


# ---------------------------------------------------------------- choosing a decoder


def test_a_subprotocol_claims_the_connection_and_its_error_is_the_answer() -> None:
    ctx = Context(subprotocol="wamp.2.msgpack")
    bad = b"\x93\x01"  # an array of 3 with one element: cut short
    decoded = binary(bad, ctx)
    assert decoded.decoder == "msgpack" and "not MessagePack" in (decoded.error or "")
    assert binary(bad).decoder is None  # unclaimed, a failed sniff is just raw bytes


def test_a_chosen_decoder_reads_the_messages_it_can_and_auto_the_others() -> None:
    payload = cbor2.dumps([1, 2])
    assert binary(payload, choice="cbor").decoder == "cbor"
    assert text('{"a": 1}', choice="msgpack").decoder == "json"  # msgpack reads no text
    assert binary(payload, choice="no-such-decoder").decoder == "cbor"


def test_text_json_and_plain_text() -> None:
    decoded = text('{"type": "message", "room": "lobby"}')
    assert decoded.decoder == "json" and decoded.tree["room"] == "lobby"
    assert text("hello there").decoder is None
    assert text("{broken", choice="json").error is not None


def test_learning_is_bounded_to_the_first_messages_of_a_connection() -> None:
    ctx = Context()
    for _ in range(LEARN_FIRST):
        REGISTRY.learn(Message(b"noise", True), ctx)
    REGISTRY.learn(Message(b'{"protocol":"json","version":1}\x1e', True), ctx)
    assert "signalr" not in ctx.hints  # too late: no decoder looks any more
    fresh = Context()
    REGISTRY.learn(Message(b'{"protocol":"json","version":1}\x1e', True), fresh)
    assert REGISTRY.decode(Message(b'{"type":6}\x1e', True), fresh).decoder == "signalr"


class Exploding(Decoder):
    """A plug-in with bugs everywhere."""

    name = "exploding"
    title = "Exploding"

    def claims(self, ctx: Context) -> bool:
        return ctx.subprotocol == "boom"

    def sniff(self, msg: Message) -> bool:
        raise RuntimeError("sniff bug")

    def learn(self, msg: Message, ctx: Context) -> None:
        raise RuntimeError("learn bug")

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        raise ZeroDivisionError("decode bug")

    def encode(self, value: Any, ctx: Context) -> bytes:
        raise KeyError("encode bug")


def test_a_buggy_decoder_never_raises_into_the_caller() -> None:
    registry = Registry(plugins=False)
    registry.add(Exploding(), first=True)
    decoded = registry.decode(Message(b"x", True), Context(subprotocol="boom"))
    assert decoded.decoder == "exploding"
    assert decoded.error == "Exploding decoder failed: ZeroDivisionError: decode bug"
    assert registry.decode(Message(b'{"a":1}', True)).decoder == "json"  # sniff bug skipped
    registry.learn(Message(b"x", True), Context())
    with pytest.raises(EncodeError, match="Exploding encoder failed: KeyError"):
        registry.encode("exploding", {})
    with pytest.raises(EncodeError, match="no decoder named"):
        registry.encode("nope", {})


def test_plugins_load_from_the_entry_point_group(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A real distribution on sys.path declares two plug-ins: one works, one is broken."""
    (tmp_path / "shout_decoder.py").write_text(textwrap.dedent('''
        from wsconsole.decoders.base import Decoder

        class ShoutDecoder(Decoder):
            name = "shout"
            title = "Shout"
            binary = False

            def sniff(self, msg):
                return msg.payload.startswith(b"!")

            def decode(self, msg, ctx):
                return {"shout": msg.payload[1:].decode().upper()}, "shout"

            def encode(self, value, ctx):
                return "!" + value["shout"].lower()
    '''))
    info = tmp_path / "shout_decoder-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-decoder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nshout = shout_decoder:ShoutDecoder\n"
        "broken = shout_decoder:DoesNotExist\n"
    )
    # sys.path by hand: syspath_prepend calls into pkg_resources, which some
    # environments replace with a shim lacking fixup_namespace_packages.
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    importlib.invalidate_caches()
    registry = Registry()
    assert registry.names()[0] == "shout"  # plug-ins are tried before the built-ins
    assert len(registry.problems) == 1 and "broken" in registry.problems[0]
    decoded = registry.decode(Message(b"!hello", True))
    assert (decoded.decoder, decoded.tree) == ("shout", {"shout": "HELLO"})
    assert registry.encode("shout", {"shout": "HI"}) == "!hi"
    sys.modules.pop("shout_decoder", None)


# ---------------------------------------------------------------- trees


def test_trees_refuse_runaway_nesting_and_render_as_json() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(DecodeError, match="nested deeper"):
        to_tree(deep)
    assert from_tree({"$map": [[[1, 2], "pair"]]}) == {(1, 2): "pair"}
    with pytest.raises(EncodeError, match="pairs"):
        from_tree({"$map": [1]})
    assert pretty({"a": [1]}) == '{\n  "a": [\n    1\n  ]\n}'


def test_every_builtin_decoder_declares_what_it_is() -> None:
    for decoder in REGISTRY:
        assert decoder.name and decoder.title and (decoder.text or decoder.binary)
        assert type(decoder).__doc__
    assert isinstance(REGISTRY.get("msgpack"), MsgpackDecoder)
    assert isinstance(REGISTRY.get("cbor"), CborDecoder)
    with pytest.raises(KeyError, match="known: "):
        REGISTRY.get("nope")
