"""The decoded form of stored frames: which decoder reads each connection, and a bounded
cache of what it made of each frame (no Qt here).

Each connection has a `Context` (the URL it opened and the subprotocol the server chose,
set when it opens; what decoders learned from its first messages) and a choice: "auto" or a
decoder's name (the detail pane's "decode as"). Frames are decoded on demand — the detail
pane, the preview column, the filter and the export ask — and the answers are cached by
frame id, so scrolling and re-filtering do not decode twice. A change of context, choice
or decoders empties the cache.

The filter searches a frame's decoded JSON only where it differs from the raw payload:
binary frames, and text frames of a connection a subprotocol decoder claims (or one the
user chose); other text frames are searched as they are.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from wsconsole.core.events import Direction, Opcode
from wsconsole.decoders.base import Context, Decoded, Message
from wsconsole.decoders.protobuf import ProtobufDecoder, ProtoSchema
from wsconsole.decoders.registry import AUTO, Registry
from wsconsole.decoders.tree import compact

DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY)


class Decoding:
    """Contexts and choices per connection, and decoded frames cached by id (`cache` max)."""

    def __init__(self, registry: Registry | None = None, cache: int = 4096) -> None:
        self.registry = registry if registry is not None else Registry()
        self.cache_size = cache
        self._contexts: dict[str, Context] = {}
        self._choices: dict[str, str] = {}
        self.default_choice = AUTO  # for connections nobody chose a decoder for
        self._cache: OrderedDict[int, Decoded] = OrderedDict()
        self._claimed: dict[tuple[str, bool], bool] = {}
        self.learned: set[str] = set()  # connections past their first messages (a fast check)

    # -- what the connections are ----------------------------------------------------------

    def context(self, conn: str) -> Context:
        """The connection's context (an empty one until it is set)."""
        ctx = self._contexts.get(conn)
        if ctx is None:
            ctx = self._contexts[conn] = Context()
        return ctx

    def set_context(self, conn: str, *, url: str | None = None,
                    subprotocol: str | None = None, target: str | None = None,
                    fresh: bool = True) -> None:
        """A connection (re)opened: its URL, chosen subprotocol and the kind of client that
        records its frames (`target`: "socketio", "sse" or None for WebSocket); what was
        learned resets (`fresh`) or stays (False: the same connection, now known better)."""
        hints = {} if fresh else self.context(conn).hints
        self._contexts[conn] = Context(subprotocol=subprotocol, url=url, target=target,
                                       hints=hints)
        if fresh:
            self.learned.discard(conn)
        self._changed(conn)

    def choice(self, conn: str) -> str:
        """"auto" or the name of the decoder chosen for the connection."""
        return self._choices.get(conn, self.default_choice)

    def choose(self, conn: str, name: str) -> None:
        """Decode the connection's frames with `name` ("auto": let the registry pick)."""
        if name != AUTO:
            self.registry.get(name)  # KeyError with the known names
            self._choices[conn] = name
        else:
            self._choices.pop(conn, None)
        self._changed(conn)

    def load_schema(self, path: str | Path, message: str,
                    include_paths: Iterable[str | Path] = ()) -> str:
        """Add a Protocol Buffers decoder for `message` of a .proto / descriptor set; its name.

        SchemaError (a ValueError) with protoc's message when the schema cannot be loaded.
        """
        schema = ProtoSchema.load(path, include_paths)
        decoder = ProtobufDecoder(schema, message)
        self.registry.add(decoder)
        self._changed(None)
        return decoder.name

    def _changed(self, conn: str | None) -> None:
        """Forget decoded frames, and what decoders claim (of `conn`, or of all: None)."""
        self._cache.clear()
        self._claimed = {k: v for k, v in self._claimed.items()
                         if conn is not None and k[0] != conn}

    # -- frames ------------------------------------------------------------------------------

    def learn(self, conn: str, direction: Direction, opcode: Opcode, payload: bytes) -> None:
        """A frame was stored: decoders look at a connection's first messages (cheap after)."""
        if conn in self.learned or opcode not in DATA_OPCODES:
            return  # the hot path: one set lookup per stored frame once a connection is known
        if self.registry.learn(_message(direction, opcode, payload), self.context(conn)):
            self._claimed = {k: v for k, v in self._claimed.items() if k[0] != conn}
        else:
            self.learned.add(conn)

    def decode(self, ident: int, conn: str, direction: Direction, opcode: Opcode,
               payload: bytes, truncated: bool = False) -> Decoded:
        """The decoded form of a stored frame (cached by id); never raises."""
        cached = self._cache.get(ident)
        if cached is not None:
            self._cache.move_to_end(ident)
            return cached
        if truncated:
            result = Decoded(None, error=f"only the first {len(payload)} bytes were kept: "
                                         "not decoded")
        else:
            result = self.decode_message(conn, direction, opcode, payload)
        self._cache[ident] = result
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def decode_message(self, conn: str, direction: Direction, opcode: Opcode,
                       payload: bytes) -> Decoded:
        """The decoded form of one message of a connection (not cached); never raises."""
        if opcode not in DATA_OPCODES:
            return Decoded(None)
        return self.registry.decode(_message(direction, opcode, payload), self.context(conn),
                                    self.choice(conn))

    def differs(self, conn: str, opcode: Opcode) -> bool:
        """True if a frame's decoded form can say more than its raw payload (see above)."""
        if opcode is Opcode.BINARY:
            return True
        if opcode is not Opcode.TEXT:
            return False
        key = (conn, True)
        claimed = self._claimed.get(key)
        if claimed is None:
            decoder = self.registry.choose(Message(b"", True), self.context(conn),
                                           self.choice(conn))
            claimed = self._claimed[key] = decoder is not None and decoder.name != "json"
        return claimed

    def searchable(self, ident: int, conn: str, direction: Direction, opcode: Opcode,
                   payload: bytes, truncated: bool = False) -> str | None:
        """The decoded tree as one line of JSON where it differs from the payload, else None."""
        if not self.differs(conn, opcode):
            return None
        decoded = self.decode(ident, conn, direction, opcode, payload, truncated)
        return compact(decoded.tree) if decoded.ok else None


def _message(direction: Direction, opcode: Opcode, payload: bytes) -> Message:
    return Message(payload, opcode is Opcode.TEXT, direction is Direction.OUT)
