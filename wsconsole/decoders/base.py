"""What a payload decoder is: the `Decoder` base, the connection `Context`, the `Decoded` result.

A decoder turns one WebSocket message (bytes, and whether it was a text or binary message)
into a JSON-like tree (dict / list / str / int / float / bool / None; see `tree.py` for how
bytes, tags and non-string keys are written) plus a one-line summary, and where the format
allows, turns such a tree back into a payload (the Composer's "encode JSON into the chosen
format"). Decoders raise `DecodeError` / `EncodeError` with a message for the user; the
registry catches everything else a plug-in might raise, so a bad payload or a buggy plug-in
never reaches the view as an exception.

A decoder says which connections it belongs to (`claims`: the subprotocol chosen in the
handshake, or the URL, e.g. Socket.IO's `EIO=` query) and, for auto-detection on connections
nobody claims, whether a payload looks like its format (`sniff`, cheap and specific).
Stateful protocols learn from earlier frames of the same connection through `learn` (MQTT's
protocol level from CONNECT), kept in the connection's `Context.hints`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from wsconsole.errors import WsconsoleError

Payload = bytes | str  # what an encoder returns: str for a text message, bytes for binary


class DecodeError(WsconsoleError, ValueError):
    """The payload is not valid in the decoder's format; the message says where and why."""


class EncodeError(WsconsoleError, ValueError):
    """The JSON value cannot be written in the decoder's format; the message says why."""


@dataclass
class Context:
    """What a decoder may know about the connection a payload travelled on.

    `subprotocol` is the one the server chose (Sec-WebSocket-Protocol of the 101 response),
    `url` the URL the client opened; `hints` collects what decoders learned from earlier
    frames of this connection (one dict per connection, owned by whoever keeps the frames).
    `target` is the kind of client that recorded them when it is not a plain WebSocket one:
    "socketio" (a Socket.IO client hands over Socket.IO packets, the Engine.IO layer and
    its type digit already taken off) or "sse".
    """

    subprotocol: str | None = None
    url: str | None = None
    target: str | None = None
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The URL's path ("" without a URL)."""
        return urlsplit(self.url).path if self.url else ""

    def query(self, name: str) -> str | None:
        """The last value of a query parameter of the URL, or None."""
        if not self.url:
            return None
        values = parse_qs(urlsplit(self.url).query).get(name)
        return values[-1] if values else None


@dataclass(frozen=True)
class Message:
    """One WebSocket message as a decoder sees it.

    `outgoing` is True for what the client side sent, False for what it received, None
    when unknown; a few formats lay out client and server messages differently.
    """

    payload: bytes
    text: bool
    outgoing: bool | None = None


@dataclass(frozen=True)
class Decoded:
    """A decoder's reading of one payload: the tree and summary, or the error.

    `decoder` is None when no decoder applied (the payload is shown raw).
    """

    decoder: str | None
    title: str = ""
    tree: Any = None
    summary: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when a decoder produced a tree."""
        return self.decoder is not None and self.error is None


class Decoder(ABC):
    """One payload format. Subclasses set `name` (stable id), `title` and the class flags."""

    name: ClassVar[str]
    title: ClassVar[str]
    subprotocols: ClassVar[tuple[str, ...]] = ()  # Sec-WebSocket-Protocol values it owns
    text: ClassVar[bool] = True  # it can read text messages
    binary: ClassVar[bool] = True  # it can read binary messages
    can_encode: ClassVar[bool] = True  # `encode` turns a JSON value into a payload

    def claims(self, ctx: Context) -> bool:
        """True if the connection speaks this format (by default: its chosen subprotocol)."""
        return ctx.subprotocol is not None and ctx.subprotocol.lower() in self.subprotocols

    def sniff(self, msg: Message) -> bool:
        """True if an unclaimed message looks like this format (auto-detection); cheap."""
        return False

    def learn(self, msg: Message, ctx: Context) -> None:
        """See one of a connection's first messages, in order, to keep state in `ctx.hints`.

        E.g. MQTT's protocol level from CONNECT, or a handshake message that marks the
        connection as this format's. Must be cheap and must not raise.
        """
        return None

    @abstractmethod
    def decode(self, msg: Message, ctx: Context) -> tuple[Any, str]:
        """(tree, one-line summary) of the message; DecodeError if it is not valid."""

    def encode(self, value: Any, ctx: Context) -> Payload:
        """The payload for a JSON value (str: send as text); EncodeError if it cannot be."""
        raise EncodeError(f"{self.title} payloads cannot be composed")

    def accepts(self, text: bool) -> bool:
        """True if the decoder reads this kind of message."""
        return self.text if text else self.binary


def as_text(payload: bytes, what: str) -> str:
    """The payload as UTF-8 text, or a DecodeError naming the first bad byte."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{what} is not UTF-8 text (byte {exc.start}: "
                          f"0x{payload[exc.start]:02x})") from None


def shorten(text: str, limit: int = 80) -> str:
    """One line of at most `limit` characters, for summaries."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"
