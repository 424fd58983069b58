"""What a catalogue case is: its bytes, its direction(s), its group, the reaction expected.

Most cases are frames sent on an open connection (`Kind.FRAMES`); handshake cases
(`Kind.HANDSHAKE`) are whole HTTP upgrade requests, judged on the server's HTTP answer.
Frame cases that need permessage-deflate say so (`Case.extension`): the probe offers it in
its handshake and reports the case `n/a` when the server does not accept it.

Cases are plain data plus a pure builder: `case.wire(Direction.SERVER_TO_CLIENT)` gives the
bytes a node writes to a client (unmasked frames), `case.chunks(Direction.CLIENT_TO_SERVER,
mask_key=...)` the writes a probing client makes (masked frames, or the request).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from wsconsole.core.frames import encode_frame
from wsconsole.errors import WsconsoleError

DEFAULT_MAX_SIZE = 1024 * 1024  # DESIGN.md: max message size 1 MiB, larger closes with 1009
DEFAULT_MASK_KEY = b"\x37\xfa\x21\x3d"  # the key of RFC 6455's own examples (section 5.7)
NO_STATUS = 1005  # a close frame with an empty payload carries no code (RFC 6455 7.1.5)
DEFLATE = "permessage-deflate"  # RFC 7692 section 7


class Direction(enum.StrEnum):
    """Who sends the case's bytes: a client to a server (masked) or a server to a client."""

    CLIENT_TO_SERVER = "client-to-server"
    SERVER_TO_CLIENT = "server-to-client"


BOTH = (Direction.CLIENT_TO_SERVER, Direction.SERVER_TO_CLIENT)
C2S = (Direction.CLIENT_TO_SERVER,)
S2C = (Direction.SERVER_TO_CLIENT,)


class Kind(enum.StrEnum):
    """Frames on an open connection, or an opening handshake request."""

    FRAMES = "frames"
    HANDSHAKE = "handshake"


class Group(enum.StrEnum):
    """The catalogue's sections (docs/faults.md); `--suite` picks by group."""

    FRAMING = "framing"
    FRAGMENTS = "fragments"
    COMPRESSION = "compression"
    HANDSHAKE = "handshake"
    HARNESS = "harness"


class Layer(enum.StrEnum):
    """RFC cases (any server), or harness wire-protocol cases (DESIGN.md) in valid frames."""

    RFC = "rfc"
    HARNESS = "harness"


class Reaction(enum.StrEnum):
    """What a conforming peer does with the case's bytes."""

    FAIL = "fail"  # _Fail the WebSocket Connection_ with a close code (RFC 6455 7.1.7)
    ECHO = "echo"  # answer a ping with a pong carrying the same payload, stay open
    ACCEPT = "accept"  # take the message as valid, stay open
    IGNORE = "ignore"  # no reply at all, stay open
    CLOSE = "close"  # complete a normal closing handshake, process nothing after it
    WAIT = "wait"  # an incomplete frame: do nothing until the rest arrives
    APP_ERROR = "app-error"  # harness protocol: reply {"type": "error", "code": ...}, stay open
    # handshake cases: the HTTP answer to the request
    REFUSE = "refuse"  # an HTTP 4xx error instead of 101 (with `header` when one is due)
    NOT_UPGRADED = "not-upgraded"  # not a WebSocket request: anything but 101
    NO_UNOFFERED = "no-unoffered"  # 101 that names no subprotocol the client did not offer
    DECLINE = "decline"  # the extension offer is invalid: 101 without the extension
    WINDOW = "window"  # accept deflate only with server_max_window_bits <= `window`


@dataclass(frozen=True)
class Expectation:
    """A conforming peer's reaction; `lenient` codes are alternatives the RFC tolerates.

    `fast` (a FAIL case sent in two writes): the peer should fail after the first write
    already; failing only once the rest arrived is lenient. `header` (REFUSE): a response
    header (name, value) the refusal must carry. `window` (WINDOW): the largest
    server_max_window_bits the server may answer.
    """

    reaction: Reaction
    codes: tuple[int, ...] = ()
    lenient: tuple[int, ...] = ()
    echo: bytes | None = None
    error_code: str | None = None
    fast: bool = False
    header: tuple[str, str] | None = None
    window: int | None = None

    def describe(self) -> str:
        """Short human text, e.g. 'fail 1007 (or 1002)' or 'error reply bad_json, stay open'."""
        if self.reaction is Reaction.FAIL:
            text = "fail " + "/".join(map(str, self.codes))
            if self.lenient:
                text += " (or " + "/".join(map(str, self.lenient)) + ")"
            return text + (" before the last fragment" if self.fast else "")
        if self.reaction is Reaction.ECHO:
            return f"pong echoing {len(self.echo or b'')} payload bytes, stay open"
        if self.reaction is Reaction.CLOSE:
            codes = ["no code" if c == NO_STATUS else str(c) for c in self.codes]
            return "close " + "/".join(codes) + ", nothing processed after it"
        if self.reaction is Reaction.APP_ERROR:
            return f"error reply {self.error_code}, stay open"
        if self.reaction is Reaction.WAIT:
            return "wait: no reaction to an incomplete frame"
        if self.reaction is Reaction.IGNORE:
            return "ignore: no reply, stay open"
        if self.reaction is Reaction.REFUSE:
            text = "refuse: HTTP " + ("/".join(map(str, self.codes)) if self.codes else "4xx")
            return text + (f" with {self.header[0]}: {self.header[1]}" if self.header else "")
        if self.reaction is Reaction.NOT_UPGRADED:
            return "no upgrade (any answer but 101)"
        if self.reaction is Reaction.NO_UNOFFERED:
            return "no subprotocol the client did not offer"
        if self.reaction is Reaction.DECLINE:
            return f"decline the offer: no {DEFLATE} in the 101"
        if self.reaction is Reaction.WINDOW:
            return f"decline, or accept with server_max_window_bits <= {self.window}"
        return "accept, stay open"


@dataclass(frozen=True)
class Request:
    """The parts of a handshake request a case keeps valid while it breaks another."""

    resource: str = "/"
    host: str = "example.com"
    key: str = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's sample
    extra: tuple[str, ...] = ()  # further header lines (credentials, Origin, ...)


@dataclass(frozen=True)
class BuildContext:
    """What a builder needs: who sends, with which masking key, against which size limit,
    and for handshake cases the request's parts."""

    direction: Direction
    mask_key: bytes = DEFAULT_MASK_KEY
    max_size: int = DEFAULT_MAX_SIZE
    request: Request = field(default_factory=Request)

    @property
    def key(self) -> bytes | None:
        """The masking key a correct sender in this direction uses (None: servers never mask)."""
        return self.mask_key if self.direction is Direction.CLIENT_TO_SERVER else None

    def frame(self, opcode: int, payload: bytes = b"", **kwargs: object) -> bytes:
        """A frame masked as this direction requires, with any header override in kwargs."""
        return encode_frame(opcode, payload, mask_key=self.key, **kwargs)  # type: ignore[arg-type]


def http_request(
    request: Request,
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    drop: Iterable[str] = (),
    add: Iterable[str] = (),
) -> bytes:
    """An opening handshake (RFC 6455 4.1) with headers in a fixed order.

    `drop` removes headers by name (standard ones and those in `request.extra`), `add`
    appends header lines; everything else is a valid request.
    """
    dropped = {name.lower() for name in drop}
    lines = [
        f"Host: {request.host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {request.key}",
        "Sec-WebSocket-Version: 13",
        *request.extra,
    ]
    kept = [line for line in lines if line.split(":", 1)[0].strip().lower() not in dropped]
    head = [f"{method} {request.resource} {version}", *kept, *add]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


Builder = Callable[[BuildContext], list[bytes]]


@dataclass(frozen=True)
class Case:
    """One catalogue entry: bytes to send and the reaction a conforming peer shows.

    `rfc` is the document `section` belongs to (6455 unless said); `extension` an extension
    the probe must negotiate first (then `n/a` when the server does not accept it).
    """

    id: str
    section: str
    title: str
    construction: str
    expected: Expectation
    build: Builder = field(repr=False, compare=False)
    directions: tuple[Direction, ...] = BOTH
    layer: Layer = Layer.RFC
    group: Group = Group.FRAMING
    kind: Kind = Kind.FRAMES
    rfc: int = 6455
    extension: str | None = None

    @property
    def reference(self) -> str:
        """Where the rule is: '5.2' for RFC 6455, 'RFC 7692 6' for another document."""
        if self.layer is Layer.HARNESS:
            return "harness"
        return self.section if self.rfc == 6455 else f"RFC {self.rfc} {self.section}"

    def applies_to(self, direction: Direction) -> bool:
        """True if the case makes sense sent in this direction."""
        return direction in self.directions

    def chunks(
        self,
        direction: Direction = Direction.SERVER_TO_CLIENT,
        *,
        mask_key: bytes = DEFAULT_MASK_KEY,
        max_size: int = DEFAULT_MAX_SIZE,
        request: Request | None = None,
    ) -> list[bytes]:
        """The case's writes, in order (a sender may pause between them)."""
        if not self.applies_to(direction):
            raise ValueError(f"case {self.id} is not defined for {direction.value}")
        return self.build(BuildContext(direction, mask_key, max_size, request or Request()))

    def wire(
        self,
        direction: Direction = Direction.SERVER_TO_CLIENT,
        *,
        mask_key: bytes = DEFAULT_MASK_KEY,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> bytes:
        """All the case's bytes in one string; the default is what a server sends a client."""
        return b"".join(self.chunks(direction, mask_key=mask_key, max_size=max_size))


class UnknownCase(WsconsoleError, KeyError):
    """A case id that is not in the catalogue."""

    def __str__(self) -> str:
        return f"unknown case id {self.args[0]!r} (see `wsconsole probe --list`)"
