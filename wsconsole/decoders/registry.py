"""The decoders in use: built-ins, plug-ins from the `wsconsole.decoders` entry-point group,
and schemas the user loaded (Protocol Buffers); which one reads a message; never raising.

Choosing a decoder for a message ("auto"):
1. a decoder that claims the connection (its subprotocol, its URL, or what it learned from
   the connection's first messages) and reads this kind of message decodes it; if the
   payload is bad, its error is the answer (the connection speaks that format);
2. otherwise every decoder whose `sniff` recognises the payload tries, in order (plug-ins
   first, then the specific protocols, then JSON, MessagePack, CBOR); the first that
   decodes it wins, failures are skipped;
3. otherwise nothing applies and the payload is shown raw.
A decoder chosen by name is used for the messages it reads (text or binary); the others of
the connection are read in auto mode.

A plug-in is an entry point in the group `wsconsole.decoders` naming a `Decoder` subclass
(or a callable returning a `Decoder`), e.g. in the plug-in's pyproject.toml:

    [project.entry-points."wsconsole.decoders"]
    myformat = "mypackage.decoders:MyFormatDecoder"

A plug-in that fails to load is listed in `Registry.problems` instead of stopping the app;
one named like a built-in replaces it. Whatever a decoder raises while claiming, sniffing,
learning or decoding becomes a message in the `Decoded` result or is logged; the caller
never sees an exception (encoding raises `EncodeError`, which the Composer shows).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from wsconsole.decoders.actioncable import ActionCableDecoder
from wsconsole.decoders.base import (
    Context,
    Decoded,
    DecodeError,
    Decoder,
    EncodeError,
    Message,
    Payload,
)
from wsconsole.decoders.formats import CborDecoder, JsonDecoder, MsgpackDecoder
from wsconsole.decoders.graphql import GraphqlTransportWsDecoder, GraphqlWsDecoder
from wsconsole.decoders.mqtt import MqttDecoder
from wsconsole.decoders.phoenix import PhoenixDecoder
from wsconsole.decoders.signalr import SignalRDecoder
from wsconsole.decoders.socketio import SocketIODecoder
from wsconsole.decoders.stomp import StompDecoder
from wsconsole.decoders.tree import compact

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "wsconsole.decoders"
AUTO = "auto"
LEARN_FIRST = 8  # decoders learn from this many first messages of each connection
_LEARNED = "registry.learned"  # the hint counting them

# Specific protocols before the general formats: their sniffing is narrower.
BUILTIN: tuple[type[Decoder], ...] = (
    SignalRDecoder, SocketIODecoder, ActionCableDecoder, PhoenixDecoder,
    GraphqlTransportWsDecoder, GraphqlWsDecoder, StompDecoder, MqttDecoder,
    JsonDecoder, MsgpackDecoder, CborDecoder,
)


class Registry:
    """An ordered set of decoders by name; `decode` picks one per message and never raises."""

    def __init__(self, decoders: Iterable[Decoder] | None = None, *,
                 plugins: bool = True) -> None:
        self._decoders: dict[str, Decoder] = {}
        self.problems: list[str] = []  # plug-ins that could not be loaded, in plain words
        for decoder in decoders if decoders is not None else (cls() for cls in BUILTIN):
            self._decoders[decoder.name] = decoder
        if plugins:
            self.load_plugins()

    # -- membership ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Decoder]:
        """The decoders in the order auto-detection tries them (a snapshot)."""
        return iter(list(self._decoders.values()))

    def names(self) -> list[str]:
        """Decoder names in the order auto-detection tries them."""
        return list(self._decoders)

    def get(self, name: str) -> Decoder:
        """The decoder with this name; KeyError with the known names if there is none."""
        try:
            return self._decoders[name]
        except KeyError:
            raise KeyError(f"no decoder named {name!r} (known: {', '.join(self._decoders)})"
                           ) from None

    def add(self, decoder: Decoder, *, first: bool = False) -> None:
        """Use a decoder (replacing one of the same name); `first`: try it before the others."""
        if not isinstance(decoder, Decoder):
            raise TypeError(f"{decoder!r} is not a wsconsole Decoder")
        self._decoders.pop(decoder.name, None)
        if first:
            self._decoders = {decoder.name: decoder, **self._decoders}
        else:
            self._decoders[decoder.name] = decoder

    def remove(self, name: str) -> None:
        """Stop using a decoder (nothing happens if it is not there)."""
        self._decoders.pop(name, None)

    def encoders(self) -> list[Decoder]:
        """The decoders that can also encode (the Composer's formats)."""
        return [d for d in self._decoders.values() if d.can_encode]

    def load_plugins(self) -> None:
        """Add every decoder of the entry-point group, in front of the built-ins."""
        for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name,
                            reverse=True):
            try:
                decoder = _instantiate(entry)
            except Exception as exc:  # a broken plug-in must not stop the app
                problem = f"decoder plug-in {entry.name} ({entry.value}): {exc}"
                log.warning("%s", problem)
                self.problems.append(problem)
                continue
            self.add(decoder, first=True)

    # -- reading ---------------------------------------------------------------------------

    def choose(self, msg: Message, ctx: Context, choice: str = AUTO) -> Decoder | None:
        """The decoder that claims this message's connection, by name or by `claims`."""
        if choice != AUTO:
            chosen = self._decoders.get(choice)
            if chosen is not None and chosen.accepts(msg.text):
                return chosen
        for decoder in self._decoders.values():
            if decoder.accepts(msg.text) and _safely(decoder, "claims", decoder.claims, ctx):
                return decoder
        return None

    def decode(self, msg: Message, ctx: Context | None = None, choice: str = AUTO) -> Decoded:
        """The decoded form of a message (see the module docstring); never raises."""
        ctx = ctx if ctx is not None else Context()
        claimed = self.choose(msg, ctx, choice)
        if claimed is not None:
            return _run(claimed, msg, ctx)
        for decoder in self._decoders.values():
            if decoder.accepts(msg.text) and _safely(decoder, "sniff", decoder.sniff, msg):
                result = _run(decoder, msg, ctx)
                if result.ok:
                    return result
        return Decoded(None)

    def learn(self, msg: Message, ctx: Context) -> bool:
        """Let every decoder see one of a connection's first `LEARN_FIRST` messages.

        False (at once) for later messages: nothing more is learned from them.
        """
        seen = ctx.hints.get(_LEARNED, 0)
        if seen >= LEARN_FIRST:
            return False
        ctx.hints[_LEARNED] = seen + 1
        for decoder in self._decoders.values():
            if decoder.accepts(msg.text):
                _safely(decoder, "learn", decoder.learn, msg, ctx)
        return True

    # -- writing ---------------------------------------------------------------------------

    def encode(self, name: str, value: Any, ctx: Context | None = None) -> Payload:
        """The payload for a JSON value in the named format; EncodeError if it cannot be."""
        decoder = self._decoders.get(name)
        if decoder is None:
            raise EncodeError(f"no decoder named {name!r}")
        if not decoder.can_encode:
            raise EncodeError(f"{decoder.title} payloads cannot be composed")
        try:
            payload = decoder.encode(value, ctx if ctx is not None else Context())
        except EncodeError:
            raise
        except Exception as exc:  # a plug-in's bug becomes a message, not a crash
            log.warning("decoder %s failed to encode", name, exc_info=True)
            raise EncodeError(f"{decoder.title} encoder failed: {type(exc).__name__}: "
                              f"{exc}") from None
        if not isinstance(payload, bytes | str):
            raise EncodeError(f"{decoder.title} encoder returned {type(payload).__name__}, "
                              "not bytes or text")
        return payload


def _instantiate(entry: EntryPoint) -> Decoder:
    target = entry.load()
    decoder = target() if callable(target) else target
    if not isinstance(decoder, Decoder):
        raise TypeError(f"{entry.value} gives {type(decoder).__name__}, not a Decoder")
    return decoder


def _safely(decoder: Decoder, what: str, method: Any, *args: Any) -> Any:
    try:
        return method(*args)
    except Exception:  # a plug-in's bug must not reach the view
        log.warning("decoder %s failed in %s", decoder.name, what, exc_info=True)
        return False


def _run(decoder: Decoder, msg: Message, ctx: Context) -> Decoded:
    try:
        tree, summary = decoder.decode(msg, ctx)
        compact(tree)  # the tree must be JSON (plug-ins may return anything)
    except DecodeError as exc:
        return Decoded(decoder.name, decoder.title, error=str(exc))
    except Exception as exc:  # a plug-in's bug becomes a message, not a crash
        log.warning("decoder %s failed", decoder.name, exc_info=True)
        return Decoded(decoder.name, decoder.title,
                       error=f"{decoder.title} decoder failed: {type(exc).__name__}: {exc}")
    return Decoded(decoder.name, decoder.title, tree, str(summary))
