"""The payload-decoding options of terminal clients (`wsconsole connect`): `--decode`,
`--proto` / `--proto-message` / `--proto-include` (docs/decoders.md), and what a printed
frame gains from them: its decoded tree in the JSON line, its summary in the human line.

The decoding itself is app/decoding.py, the same object the window uses: the connection's
context (URL, chosen subprotocol, what its first messages taught) and the choice.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from wsconsole.app.decoding import Decoding
from wsconsole.core.events import FrameRecord
from wsconsole.core.lifecycle import State, Transition
from wsconsole.decoders.registry import AUTO


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare --decode and the Protocol Buffers schema options."""
    group = parser.add_argument_group("Decoding (docs/decoders.md)")
    group.add_argument("--decode", nargs="?", const=AUTO, metavar="DECODER",
                       help="show payloads decoded: auto (found by subprotocol, URL or"
                       " content) or a decoder name (msgpack, cbor, stomp, mqtt, socketio,"
                       " signalr, phoenix, actioncable, graphql-transport-ws, ...)")
    group.add_argument("--proto", metavar="FILE",
                       help="decode binary messages with this .proto file or descriptor set"
                       " (needs --proto-message; implies --decode)")
    group.add_argument("--proto-message", metavar="NAME",
                       help="the message type of --proto, e.g. market.Envelope")
    group.add_argument("--proto-include", action="append", default=[], metavar="DIR",
                       help="a folder the .proto's imports are found in (repeatable)")


def decoding_from(args: argparse.Namespace) -> Decoding | None:
    """The decoding the options ask for, None without --decode / --proto.

    ValueError with a one-line message for an unknown decoder or a schema that cannot be
    loaded (bad usage: exit 2).
    """
    if args.proto_message and not args.proto:
        raise ValueError("--proto-message needs --proto FILE")
    if not (args.decode or args.proto):
        return None
    decoding = Decoding()
    choice = args.decode or AUTO
    if args.proto:
        if not args.proto_message:
            raise ValueError("--proto needs --proto-message NAME (the connection's message type)")
        name = decoding.load_schema(args.proto, args.proto_message, args.proto_include)
        choice = choice if choice != AUTO else name
    if choice != AUTO:
        try:
            decoding.registry.get(choice)
        except KeyError as exc:
            raise ValueError(f"--decode: {exc.args[0]}") from None
    decoding.default_choice = choice
    return decoding


class FrameDecoder:
    """What a printer adds to a data frame: "[MessagePack] summary" and JSON fields."""

    def __init__(self, decoding: Decoding, url: str,
                 subprotocol_of: Callable[[], str | None] = lambda: None,
                 target: str | None = None) -> None:
        self.decoding = decoding
        self.url = url
        self.target = target  # the kind of client: "socketio", "sse" or None (WebSocket)
        self.subprotocol_of = subprotocol_of  # the client's chosen subprotocol, once open
        self._current: set[str] = set()  # connections whose context is this attempt's

    def transition(self, tr: Transition) -> None:
        """A new attempt forgets the context; its first frame sets it, OPEN completes it.

        A server may send in the same read as its 101, before the client reports OPEN and
        knows the subprotocol: such frames are decoded by their content only.
        """
        if tr.state in (State.CONNECTING, State.RECONNECTING):
            self._current.discard(tr.conn)
        elif tr.state is State.OPEN:
            self._open(tr.conn, opened=True)

    def _open(self, conn: str, opened: bool = False) -> None:
        if conn in self._current and not opened:
            return
        self.decoding.set_context(conn, url=self.url, subprotocol=self.subprotocol_of(),
                                  target=self.target, fresh=conn not in self._current)
        self._current.add(conn)

    def describe(self, fr: FrameRecord) -> tuple[str | None, dict[str, Any]]:
        """(the human preview, or None to keep the raw one; the JSON fields to add)."""
        self._open(fr.conn)
        self.decoding.learn(fr.conn, fr.direction, fr.opcode, fr.payload)
        decoded = self.decoding.decode_message(fr.conn, fr.direction, fr.opcode, fr.payload)
        if decoded.decoder is None:
            return None, {}
        if decoded.ok:
            return (f"[{decoded.title}] {decoded.summary}",
                    {"decoder": decoded.decoder, "decoded": decoded.tree})
        return (f"[{decoded.title}] error: {decoded.error}",
                {"decoder": decoded.decoder, "decode_error": decoded.error})
