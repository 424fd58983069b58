"""The handshake and compression cases of the catalogue (client to server only).

Handshake cases send one opening-handshake request with one thing wrong (RFC 6455 4.2.1
lists what a server must check) and are judged on the HTTP answer. Compression cases
(RFC 7692) negotiate permessage-deflate first and then send compressed frames with one
thing wrong, or offer deflate with parameters a server must decline.

Every request comes from `case.http_request`, the one builder the probe's own connections
use too, so the only difference between a case and a valid handshake is what it breaks.
"""

from __future__ import annotations

import zlib

from wsconsole.core.frames import Opcode
from wsconsole.faults.case import (
    C2S,
    DEFLATE,
    BuildContext,
    Builder,
    Case,
    Expectation,
    Group,
    Kind,
    Reaction,
    http_request,
)

FOREIGN_ORIGIN = "https://wsconsole-probe.example"
UNOFFERED_SUBPROTOCOL = "x-wsconsole-unoffered"
HEADER_PADDING = 64 * 1024  # one header line over every common limit (8-16 KiB)


def _request(**kwargs: object) -> Builder:
    return lambda ctx: [http_request(ctx.request, **kwargs)]  # type: ignore[arg-type]


def _offer(params: str) -> Builder:
    return _request(drop=["sec-websocket-extensions"],
                    add=[f"Sec-WebSocket-Extensions: {DEFLATE}; {params}"])


REFUSE = Expectation(Reaction.REFUSE)
REFUSE_400 = Expectation(Reaction.REFUSE, (400,))
NOT_UPGRADED = Expectation(Reaction.NOT_UPGRADED)
DECLINE = Expectation(Reaction.DECLINE)


def handshake_cases() -> list[Case]:
    """One request each with one thing wrong, judged on the HTTP answer."""
    raw = [
        ("hs-no-key", "4.2.1", "no Sec-WebSocket-Key", "a valid request without the key header",
         REFUSE, _request(drop=["sec-websocket-key"])),
        ("hs-duplicate-key", "11.3.1", "Sec-WebSocket-Key twice",
         "a valid request with a second, different Sec-WebSocket-Key header",
         REFUSE, _request(add=["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="])),
        ("hs-key-short", "4.2.1", "a key of 8 bytes",
         "Sec-WebSocket-Key: c2hvcnRrZXk= (base64 of 8 bytes; 16 are required)",
         REFUSE, _request(drop=["sec-websocket-key"], add=["Sec-WebSocket-Key: c2hvcnRrZXk="])),
        ("hs-key-long", "4.2.1", "a key of 20 bytes",
         "Sec-WebSocket-Key: base64 of 20 bytes (16 are required)", REFUSE,
         _request(drop=["sec-websocket-key"],
                  add=["Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODxAREhM="])),
        ("hs-key-not-base64", "4.2.1", "a key that is not base64",
         "Sec-WebSocket-Key: !!not*base64!!", REFUSE,
         _request(drop=["sec-websocket-key"], add=["Sec-WebSocket-Key: !!not*base64!!"])),
        ("hs-version-wrong", "4.4", "an unsupported protocol version",
         "Sec-WebSocket-Version: 8; the answer must name the supported version",
         Expectation(Reaction.REFUSE, (426,), header=("sec-websocket-version", "13")),
         _request(drop=["sec-websocket-version"], add=["Sec-WebSocket-Version: 8"])),
        ("hs-version-missing", "4.2.1", "no Sec-WebSocket-Version",
         "a valid request without the version header", REFUSE,
         _request(drop=["sec-websocket-version"])),
        ("hs-no-upgrade", "4.2.1", "no Upgrade header",
         "the request without Upgrade: websocket (plain HTTP: anything but 101 will do)",
         NOT_UPGRADED, _request(drop=["upgrade"])),
        ("hs-upgrade-not-websocket", "4.2.1", "an upgrade to another protocol",
         "Upgrade: h2c instead of websocket", REFUSE,
         _request(drop=["upgrade"], add=["Upgrade: h2c"])),
        ("hs-no-connection", "4.2.1", "no Connection: Upgrade",
         "the request without the Connection header (plain HTTP: anything but 101 will do)",
         NOT_UPGRADED, _request(drop=["connection"])),
        ("hs-no-host", "4.2.1", "no Host header",
         "a valid request without Host (HTTP/1.1 requires 400: RFC 9112 3.2)",
         REFUSE_400, _request(drop=["host"])),
        ("hs-post", "4.2.1", "POST instead of GET", "POST with every upgrade header",
         REFUSE, _request(method="POST")),
        ("hs-http10", "4.2.1", "HTTP/1.0", "the valid request line with HTTP/1.0",
         Expectation(Reaction.REFUSE, (400, 426, 505)), _request(version="HTTP/1.0")),
        ("hs-oversized-headers", "10.4", "a 64 KiB header line",
         "X-Wsconsole-Padding with 65,536 bytes (the best answer is 431: RFC 6585 5)",
         REFUSE, _request(add=["X-Wsconsole-Padding: " + "a" * HEADER_PADDING])),
        ("hs-foreign-origin", "10.2", "a foreign Origin",
         f"Origin: {FOREIGN_ORIGIN}; a server that checks origins answers 403 (accepting is"
         " tolerated: the check is the server's choice, see the audit's foreign-origin)",
         Expectation(Reaction.REFUSE, (403,), lenient=(101,)),
         _request(drop=["origin"], add=[f"Origin: {FOREIGN_ORIGIN}"])),
        ("hs-unoffered-subprotocol", "4.2.2", "a subprotocol the client did not offer",
         f"Sec-WebSocket-Protocol: {UNOFFERED_SUBPROTOCOL} only; the 101 must not name another",
         Expectation(Reaction.NO_UNOFFERED),
         _request(drop=["sec-websocket-protocol"],
                  add=[f"Sec-WebSocket-Protocol: {UNOFFERED_SUBPROTOCOL}"])),
    ]
    return [Case(case_id, section, title, construction, expected, build, directions=C2S,
                 group=Group.HANDSHAKE, kind=Kind.HANDSHAKE)
            for case_id, section, title, construction, expected, build in raw]


def deflate(data: bytes) -> bytes:
    """A message payload compressed as RFC 7692 7.2.1 says (raw DEFLATE, no final 00 00 ff ff)."""
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


_HELLO = deflate(b"hello, compressed world")


def _split_rsv1(ctx: BuildContext) -> list[bytes]:
    return [ctx.frame(Opcode.TEXT, _HELLO[:4], fin=False, rsv1=True)
            + ctx.frame(Opcode.CONT, _HELLO[4:], rsv1=True)]


def compression_cases() -> list[Case]:
    """permessage-deflate: frames on a connection that negotiated it, and invalid offers."""
    frames = [
        ("deflate-valid-message", "7.2.1", "a compressed text message",
         "FIN text frame, RSV1 = 1, 'hello, compressed world' compressed (the control case)",
         Expectation(Reaction.ACCEPT),
         lambda ctx: [ctx.frame(Opcode.TEXT, _HELLO, rsv1=True)]),
        ("deflate-corrupt-data", "7.2.2", "compressed data that does not inflate",
         "FIN text frame, RSV1 = 1, payload ff ff ff ff (a reserved DEFLATE block type)",
         Expectation(Reaction.FAIL, (1002, 1007)),
         lambda ctx: [ctx.frame(Opcode.TEXT, b"\xff\xff\xff\xff", rsv1=True)]),
        ("deflate-compressed-ping", "6", "a compressed control frame",
         "ping with RSV1 = 1 and a compressed payload (control frames are never compressed)",
         Expectation(Reaction.FAIL, (1002,)),
         lambda ctx: [ctx.frame(Opcode.PING, deflate(b"ping"), rsv1=True)]),
        ("deflate-rsv1-continuation", "6", "RSV1 on a continuation frame",
         "a compressed text message in two fragments, RSV1 = 1 on both (only the first may)",
         Expectation(Reaction.FAIL, (1002,)), _split_rsv1),
    ]
    offers = [
        ("deflate-server-window-invalid", "7.1.2.1", "server_max_window_bits out of range",
         f"offer '{DEFLATE}; server_max_window_bits=7' (valid: 8-15)",
         DECLINE, _offer("server_max_window_bits=7")),
        ("deflate-client-window-invalid", "7.1.2.2", "client_max_window_bits out of range",
         f"offer '{DEFLATE}; client_max_window_bits=16' (valid: 8-15)",
         DECLINE, _offer("client_max_window_bits=16")),
        ("deflate-unknown-parameter", "7", "an unknown deflate parameter",
         f"offer '{DEFLATE}; x_wsconsole_unknown'", DECLINE, _offer("x_wsconsole_unknown")),
        ("deflate-server-window-9", "7.1.2.1", "a smaller server window asked for",
         f"offer '{DEFLATE}; server_max_window_bits=9'; an accepting server answers with"
         " server_max_window_bits of 9 or less",
         Expectation(Reaction.WINDOW, window=9), _offer("server_max_window_bits=9")),
    ]
    cases = [Case(case_id, section, title, construction, expected, build, directions=C2S,
                  group=Group.COMPRESSION, rfc=7692, extension=DEFLATE)
             for case_id, section, title, construction, expected, build in frames]
    cases += [Case(case_id, section, title, construction, expected, build, directions=C2S,
                   group=Group.COMPRESSION, rfc=7692, kind=Kind.HANDSHAKE)
              for case_id, section, title, construction, expected, build in offers]
    return cases
