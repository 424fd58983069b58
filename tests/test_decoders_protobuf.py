"""Protocol Buffers with a user's schema: a .proto compiled by grpcio-tools' protoc, or a
FileDescriptorSet written by that protoc; payloads serialized by the real protobuf library
with the schema's own generated classes; bad schemas and bad payloads give clear errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from wsconsole.decoders.base import Context, DecodeError, EncodeError, Message
from wsconsole.decoders.protobuf import ProtobufDecoder, ProtoSchema, SchemaError
from wsconsole.decoders.registry import Registry

MARKET = textwrap.dedent("""
    syntax = "proto3";
    package market;
    import "google/protobuf/timestamp.proto";
    import "common.proto";

    message Envelope {
      oneof body { Tick tick = 1; common.Heartbeat heartbeat = 2; }
    }
    message Tick {
      string symbol = 1;
      double price = 2;
      int64 volume = 3;
      google.protobuf.Timestamp at = 4;
      Side side = 5;
      bytes raw = 6;
      map<string, string> labels = 7;
      message Level { double price = 1; }
      repeated Level book = 8;
    }
    enum Side { SIDE_UNSPECIFIED = 0; BUY = 1; SELL = 2; }
""")
COMMON = 'syntax = "proto3";\npackage common;\nmessage Heartbeat { uint32 seq = 1; }\n'


@pytest.fixture
def proto(tmp_path: Path) -> Path:
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "common.proto").write_text(COMMON)
    path = tmp_path / "market.proto"
    path.write_text(MARKET)
    return path


def schema_of(proto: Path) -> ProtoSchema:
    return ProtoSchema.from_proto(proto, include_paths=[proto.parent / "common"])


def test_a_proto_file_compiles_and_lists_its_messages(proto: Path) -> None:
    schema = schema_of(proto)
    assert sorted(schema.message_names()) == ["common.Heartbeat", "market.Envelope",
                                              "market.Tick", "market.Tick.Level"]


def test_real_protobuf_bytes_decode_and_encode_back(proto: Path) -> None:
    schema = schema_of(proto)
    envelope = schema.message_class("market.Envelope")()
    tick = envelope.tick
    tick.symbol, tick.price, tick.volume, tick.side = "ACME", 12.5, 2**40, 2
    tick.at.seconds = 1_700_000_000
    tick.raw = b"\x00\x01"
    tick.labels["venue"] = "X"
    tick.book.add(price=12.4)
    payload = envelope.SerializeToString()
    registry = Registry(plugins=False)
    registry.add(ProtobufDecoder(schema, "market.Envelope"))
    decoded = registry.decode(Message(payload, False), Context(), "protobuf:market.Envelope")
    assert decoded.ok and decoded.title == "Protobuf market.Envelope"
    assert decoded.tree == {"tick": {
        "symbol": "ACME", "price": 12.5, "volume": str(2**40), "at": "2023-11-14T22:13:20Z",
        "side": "SELL", "raw": "AAE=", "labels": {"venue": "X"}, "book": [{"price": 12.4}]}}
    assert registry.encode("protobuf:market.Envelope", decoded.tree) == payload


def test_a_descriptor_set_from_protoc_loads_too(proto: Path, tmp_path: Path) -> None:
    out = tmp_path / "market.pb"
    wkt = Path(protoc.__file__).parent / "_proto"
    assert protoc.main(["protoc", f"-I{proto.parent}", f"-I{proto.parent / 'common'}",
                        f"-I{wkt}", f"--descriptor_set_out={out}", "--include_imports",
                        str(proto)]) == 0
    schema = ProtoSchema.load(out)
    beat = schema.message_class("common.Heartbeat")(seq=7).SerializeToString()
    decoder = ProtobufDecoder(schema, "common.Heartbeat", subprotocols=["beats.v1"])
    registry = Registry([decoder], plugins=False)
    decoded = registry.decode(Message(beat, False), Context(subprotocol="beats.v1"))
    assert decoded.tree == {"seq": 7}


def test_the_wrong_message_type_shows_unknown_fields(proto: Path) -> None:
    schema = schema_of(proto)
    tick = schema.message_class("market.Tick")(symbol="ACME", volume=3).SerializeToString()
    decoder = ProtobufDecoder(schema, "common.Heartbeat")
    tree, summary = decoder.decode(Message(tick, False), Context())
    assert tree == {"$unknown_fields": [1, 3]}
    assert summary.startswith("2 field(s) unknown to common.Heartbeat (1, 3)")


def test_bad_payloads_and_bad_json(proto: Path) -> None:
    decoder = ProtobufDecoder(schema_of(proto), "market.Tick")
    with pytest.raises(DecodeError, match=r"not a market\.Tick"):
        decoder.decode(Message(b"\x0a\xff\xff\xff", False), Context())
    with pytest.raises(EncodeError, match=r"not a market\.Tick"):
        decoder.encode({"price": "cheap"}, Context())
    with pytest.raises(EncodeError, match="JSON object"):
        decoder.encode([1], Context())


def test_bad_schemas_say_where(proto: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.proto"
    bad.write_text('syntax = "proto3";\nmessage Tick { string symbol = 1 double price = 2; }\n')
    with pytest.raises(SchemaError, match=r'bad.proto:2:34: Expected ";"'):
        ProtoSchema.from_proto(bad)
    with pytest.raises(SchemaError, match=r"common\.proto: File not found"):
        ProtoSchema.from_proto(proto)  # without the include path
    with pytest.raises(SchemaError, match="no such file"):
        ProtoSchema.from_proto(tmp_path / "missing.proto")
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff\xff\xff")
    with pytest.raises(SchemaError, match="not a FileDescriptorSet"):
        ProtoSchema.load(junk)
    lonely = descriptor_pb2.FileDescriptorSet()
    lonely.file.add(name="a.proto", dependency=["missing.proto"])
    partial = tmp_path / "partial.pb"
    partial.write_bytes(lonely.SerializeToString())
    with pytest.raises(SchemaError, match=r"a\.proto"):
        ProtoSchema.load(partial)
    with pytest.raises(SchemaError, match=r"has no message .market\.Nope."):
        schema_of(proto).message_class("market.Nope")


def test_loading_the_same_schema_twice_does_not_clash(proto: Path) -> None:
    first, second = schema_of(proto), schema_of(proto)
    proto.write_text(MARKET.replace("double price = 2;", "double price = 2; string venue = 9;"))
    changed = schema_of(proto)
    assert first.pool is not second.pool
    assert "venue" in changed.message_class("market.Tick").DESCRIPTOR.fields_by_name
