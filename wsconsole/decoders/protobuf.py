"""Protocol Buffers with the user's schema: a `.proto` file compiled by the protoc that ships
in grpcio-tools (no protoc install needed), or a FileDescriptorSet made by
`protoc --descriptor_set_out=FILE --include_imports`.

Each schema gets its own descriptor pool, so loading a changed `.proto` again, or two
schemas that define the same names, never clashes. A `ProtobufDecoder` reads one message
type (the connection's top-level message, often a wrapper with a `oneof`); its name is
`protobuf:<full message name>`, so several can be in use at once. Protobuf has no marker a
sniffer could trust, so it decodes only connections it is chosen for (or that chose one of
the subprotocols it was given).

The tree is the message in the canonical proto3 JSON mapping (field names as in the
`.proto`, bytes as base64, 64-bit integers as strings, enums by name); fields the schema
does not know are listed under `$unknown_fields` by number, which usually means the wrong
message type was chosen. The Composer parses the same JSON back (`json_format.ParseDict`).
"""

from __future__ import annotations

import importlib.resources
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf import message as pb_message
from google.protobuf.descriptor import Descriptor
from google.protobuf.unknown_fields import UnknownFieldSet

from wsconsole.decoders.base import (
    Context,
    DecodeError,
    Decoder,
    EncodeError,
    Message,
    Payload,
    shorten,
)
from wsconsole.decoders.tree import compact
from wsconsole.errors import WsconsoleError


class SchemaError(WsconsoleError, ValueError):
    """A .proto file or descriptor set that cannot be loaded; the message says why."""


class ProtoSchema:
    """The message types of one compiled schema, in a descriptor pool of their own."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet, source: str) -> None:
        self.source = source
        self.pool = descriptor_pool.DescriptorPool()
        for proto in files.file:
            try:
                self.pool.Add(proto)
            except (TypeError, ValueError) as exc:
                raise SchemaError(f"{source}: {proto.name}: {exc}") from None
        self.files = [proto.name for proto in files.file]

    @classmethod
    def from_proto(cls, path: str | Path, include_paths: Iterable[str | Path] = ()) -> ProtoSchema:
        """Compile a .proto file (its folder, `include_paths` and the well-known types)."""
        proto = Path(path)
        if not proto.is_file():
            raise SchemaError(f"{proto}: no such file")
        includes = [str(proto.parent.resolve()), *(str(Path(p).resolve()) for p in include_paths)]
        return cls(_compile(proto.name, includes), str(proto))

    @classmethod
    def from_descriptor_set(cls, path: str | Path) -> ProtoSchema:
        """Load a FileDescriptorSet (protoc --descriptor_set_out ... --include_imports)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SchemaError(f"{path}: {exc.strerror or exc}") from None
        files = descriptor_pb2.FileDescriptorSet()
        try:
            files.ParseFromString(data)
        except pb_message.DecodeError:
            raise SchemaError(f"{path}: not a FileDescriptorSet") from None
        if not files.file:
            raise SchemaError(f"{path}: the descriptor set holds no file")
        return cls(files, str(path))

    @classmethod
    def load(cls, path: str | Path, include_paths: Iterable[str | Path] = ()) -> ProtoSchema:
        """A .proto file by its extension, anything else as a descriptor set."""
        if str(path).endswith(".proto"):
            return cls.from_proto(path, include_paths)
        return cls.from_descriptor_set(path)

    def message_names(self) -> list[str]:
        """Full names of every message type the schema's own files define (nested too)."""
        names: list[str] = []

        def walk(desc: Descriptor) -> None:
            if not desc.GetOptions().map_entry:
                names.append(desc.full_name)
            for nested in desc.nested_types:
                walk(nested)

        for file_name in self.files:
            if file_name.startswith("google/protobuf/"):
                continue
            for desc in self.pool.FindFileByName(file_name).message_types_by_name.values():
                walk(desc)
        return names

    def message_class(self, name: str) -> type[pb_message.Message]:
        """The generated class of a message type; SchemaError if the schema lacks it."""
        try:
            desc = self.pool.FindMessageTypeByName(name)
        except KeyError:
            known = ", ".join(self.message_names()) or "none"
            raise SchemaError(f"{self.source} has no message {name!r} (it has: {known})"
                              ) from None
        return message_factory.GetMessageClass(desc)


def _compile(name: str, includes: list[str]) -> descriptor_pb2.FileDescriptorSet:
    """Compile with grpcio-tools' protoc, imported here: only a .proto needs it."""
    try:
        from grpc_tools import _protoc_compiler, protoc
    except ImportError as exc:
        raise SchemaError(f"protoc (grpcio-tools) cannot be loaded here ({exc}): load a "
                          "FileDescriptorSet instead (protoc --descriptor_set_out=FILE "
                          "--include_imports)") from None
    includes = [*includes, str(importlib.resources.files("grpc_tools") / "_proto")]
    try:  # parse first: errors come back as data (file, line, column) instead of on stderr
        _protoc_compiler.get_protos(name.encode(), [p.encode() for p in includes])
    except _protoc_compiler.ProtocErrors as exc:
        raise SchemaError("protoc: " + "; ".join(_where(e) for e in exc.errors())) from None
    with tempfile.TemporaryDirectory(prefix="wsconsole-proto-") as tmp:
        out = os.path.join(tmp, "set.pb")
        args = ["protoc", *(f"-I{p}" for p in includes), f"--descriptor_set_out={out}",
                "--include_imports", name]
        if protoc.main(args) != 0 or not os.path.exists(out):
            raise SchemaError(f"protoc could not compile {name}")
        files = descriptor_pb2.FileDescriptorSet()
        files.ParseFromString(Path(out).read_bytes())
    return files


def _where(error: Any) -> str:
    """'file:line:column: message' (1-based, as protoc prints it; no position for a file)."""
    place = error.filename.decode()
    if error.line >= 0:
        place += f":{error.line + 1}:{error.column + 1}"
    return f"{place}: {error.message.decode()}"


class ProtobufDecoder(Decoder):
    """One message type of a schema."""

    title = "Protobuf"
    text = False

    def __init__(self, schema: ProtoSchema, message: str,
                 subprotocols: Iterable[str] = ()) -> None:
        self.schema = schema
        self.message = message
        self.cls = schema.message_class(message)
        self.name = f"protobuf:{message}"  # type: ignore[misc]
        self.title = f"Protobuf {message}"  # type: ignore[misc]
        self.subprotocols = tuple(s.lower() for s in subprotocols)  # type: ignore[misc]

    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """Parse the message; unknown fields listed by number."""
        parsed = self.cls()
        try:
            parsed.ParseFromString(msg.payload)
        except pb_message.DecodeError as exc:
            raise DecodeError(f"not a {self.message}: {exc}") from None
        tree: dict[str, Any] = json_format.MessageToDict(parsed,
                                                         preserving_proto_field_name=True)
        unknown = sorted({field.field_number for field in UnknownFieldSet(parsed)})
        summary = shorten(compact(tree), 100)
        if unknown:
            tree["$unknown_fields"] = unknown
            summary = (f"{len(unknown)} field(s) unknown to {self.message} "
                       f"({', '.join(map(str, unknown[:5]))}); " + summary)
        return tree, summary

    def encode(self, value: Any, ctx: Context) -> Payload:
        """The message for its proto3 JSON form."""
        if not isinstance(value, dict):
            raise EncodeError(f"a {self.message} is written as a JSON object")
        try:
            parsed = json_format.ParseDict(value, self.cls())
        except json_format.ParseError as exc:
            raise EncodeError(f"not a {self.message}: {exc}") from None
        return parsed.SerializeToString()
