"""The frame cases of the catalogue: RFC 6455 framing, fragments and UTF-8 across them,
and harness wire-protocol mistakes in valid frames (docs/faults.md lists them all).

Each case is data plus a pure builder (see `case.py`); `frame_cases()` and `harness_cases()`
give them in catalogue order.
"""

from __future__ import annotations

from dataclasses import replace

from wsconsole.core.envelope import MAX_NAME
from wsconsole.core.frames import Opcode, close_payload, encode_frame
from wsconsole.faults.case import (
    C2S,
    NO_STATUS,
    S2C,
    BuildContext,
    Builder,
    Case,
    Expectation,
    Group,
    Layer,
    Reaction,
)

# Payload a ping / pong carries when the case does not care; the probe recognises it.
PING_PAYLOAD = b"wsconsole-ping"

# ---------------------------------------------------------------- expectations

FAIL_1002 = Expectation(Reaction.FAIL, (1002,))
FAIL_1007 = Expectation(Reaction.FAIL, (1007,), lenient=(1002,))
FAIL_1009 = Expectation(Reaction.FAIL, (1009,))
ACCEPT = Expectation(Reaction.ACCEPT)


def _echo(payload: bytes) -> Expectation:
    return Expectation(Reaction.ECHO, echo=payload)


def _app_error(code: str) -> Expectation:
    return Expectation(Reaction.APP_ERROR, error_code=code)


# ---------------------------------------------------------------- builders


def _one(opcode: int, payload: bytes = b"", **kwargs: object) -> Builder:
    """A builder for a single frame correctly masked for its direction."""
    return lambda ctx: [ctx.frame(opcode, payload, **kwargs)]


def _seq(*parts: tuple[int, bytes, dict[str, object]]) -> Builder:
    """A builder for several frames sent back to back."""
    return lambda ctx: [b"".join(ctx.frame(op, data, **kw) for op, data, kw in parts)]


def _close(code: int | None, reason: bytes = b"") -> Builder:
    return _one(Opcode.CLOSE, close_payload(code, reason))


def _text(text: str | bytes) -> Builder:
    return _one(Opcode.TEXT, text.encode() if isinstance(text, str) else text)


def _unmasked_client(ctx: BuildContext) -> list[bytes]:
    return [encode_frame(Opcode.TEXT, b"unmasked", mask_key=None)]


def _masked_server(ctx: BuildContext) -> list[bytes]:
    return [encode_frame(Opcode.TEXT, b"masked", mask_key=ctx.mask_key)]


def _msb_length(ctx: BuildContext) -> list[bytes]:
    # 64-bit length 2**63 + 5; five payload bytes follow. A reader that honours section 5.2
    # refuses the header; one that does not waits for 2**63 bytes.
    return [ctx.frame(Opcode.BINARY, b"hello", length=(1 << 63) | 5, length_form="64")]


def _over_limit(ctx: BuildContext) -> list[bytes]:
    payload = b"x" * (ctx.max_size + 1)
    frame = ctx.frame(Opcode.BINARY, payload)
    header = len(frame) - len(payload)
    # Header first, as its own write: a reader that checks the declared length reacts to it.
    return [frame[:header], frame[header:]]


def _over_limit_fragmented(ctx: BuildContext) -> list[bytes]:
    half = ctx.max_size // 2 + 1
    first = ctx.frame(Opcode.BINARY, b"a" * half, fin=False)
    second = ctx.frame(Opcode.CONT, b"b" * half, fin=True)
    return [first, second]


def _truncated_header(ctx: BuildContext) -> list[bytes]:
    # The first byte of a FIN text frame and nothing else: the length byte never comes.
    return [bytes([0x81])]


def _truncated_payload(ctx: BuildContext) -> list[bytes]:
    frame = ctx.frame(Opcode.TEXT, b"0123456789")
    return [frame[:-5]]


# ---------------------------------------------------------------- the catalogue

_CONT = Opcode.CONT
_TEXT = Opcode.TEXT
_BIN = Opcode.BINARY
_PING = Opcode.PING
_PONG = Opcode.PONG
_CLOSE = Opcode.CLOSE
_LONG = b"p" * 126  # one byte over the control-frame payload limit
_MAX_CONTROL = b"c" * 125


def frame_cases() -> list[Case]:
    """RFC 6455 framing and fragment cases (any server), in catalogue order."""
    cases = [
        Case("rsv1-set", "5.2", "RSV1 set without a negotiated extension",
             "FIN text frame 'hello' with RSV1 = 1, no extension offered in the handshake",
             FAIL_1002, _one(_TEXT, b"hello", rsv1=True), group=Group.COMPRESSION),
        Case("rsv2-set", "5.2", "RSV2 set", "FIN text frame 'hello' with RSV2 = 1",
             FAIL_1002, _one(_TEXT, b"hello", rsv2=True)),
        Case("rsv3-set", "5.2", "RSV3 set", "FIN text frame 'hello' with RSV3 = 1",
             FAIL_1002, _one(_TEXT, b"hello", rsv3=True)),
        Case("rsv-on-ping", "5.2", "reserved bit on a control frame",
             "ping 'wsconsole-ping' with RSV1 = 1",
             FAIL_1002, _one(_PING, PING_PAYLOAD, rsv1=True)),
        Case("opcode-3", "5.2", "reserved data opcode 0x3",
             "FIN frame, opcode 0x3, payload 'x'", FAIL_1002, _one(0x3, b"x")),
        Case("opcode-7", "5.2", "reserved data opcode 0x7",
             "FIN frame, opcode 0x7, payload 'x'", FAIL_1002, _one(0x7, b"x")),
        Case("opcode-b", "5.2", "reserved control opcode 0xB",
             "FIN frame, opcode 0xB, payload 'x'", FAIL_1002, _one(0xB, b"x")),
        Case("opcode-f", "5.2", "reserved control opcode 0xF",
             "FIN frame, opcode 0xF, empty payload", FAIL_1002, _one(0xF)),
        Case("unmasked-client-frame", "5.1", "a client frame without a mask",
             "FIN text frame 'unmasked' with MASK = 0, sent by a client",
             FAIL_1002, _unmasked_client, directions=C2S),
        Case("masked-server-frame", "5.1", "a server frame with a mask",
             "FIN text frame 'masked' with MASK = 1 and a masking key, sent by a server",
             FAIL_1002, _masked_server, directions=S2C),
        Case("ping-too-long", "5.5", "control frame payload over 125 bytes",
             "ping with a 126-byte payload (16-bit length form)",
             FAIL_1002, _one(_PING, _LONG)),
        Case("pong-too-long", "5.5", "pong payload over 125 bytes",
             "pong with a 126-byte payload", FAIL_1002, _one(_PONG, _LONG)),
        Case("close-too-long", "5.5", "close payload over 125 bytes",
             "close 1000 with a 124-byte reason (126-byte payload)",
             FAIL_1002, _close(1000, b"r" * 124)),
        Case("fragmented-ping", "5.5", "fragmented control frame",
             "ping 'wsconsole-ping' with FIN = 0", FAIL_1002, _one(_PING, PING_PAYLOAD, fin=False)),
        Case("fragmented-close", "5.5", "fragmented close frame",
             "close 1000 with FIN = 0", FAIL_1002, _one(_CLOSE, close_payload(1000), fin=False)),
        Case("continuation-first", "5.4", "continuation frame with nothing to continue",
             "FIN continuation frame 'orphan' as the first frame of the connection",
             FAIL_1002, _one(_CONT, b"orphan")),
        Case("continuation-after-final", "5.4", "continuation after a complete message",
             "FIN text 'done', then FIN continuation 'late'",
             FAIL_1002, _seq((_TEXT, b"done", {}), (_CONT, b"late", {}))),
        Case("data-inside-fragmented", "5.4", "new data frame inside a fragmented message",
             "text 'part' with FIN = 0, then a FIN text 'new' (a continuation was due)",
             FAIL_1002, _seq((_TEXT, b"part", {"fin": False}), (_TEXT, b"new", {}))),
        Case("binary-inside-fragmented", "5.4", "binary frame inside a fragmented text message",
             "text 'part' with FIN = 0, then a FIN binary frame",
             FAIL_1002, _seq((_TEXT, b"part", {"fin": False}), (_BIN, b"\x00\x01", {}))),
        Case("invalid-utf8-text", "8.1", "text message that is not UTF-8",
             "FIN text frame b'bad \\xff\\xfe text'", FAIL_1007, _text(b"bad \xff\xfe text")),
        Case("invalid-utf8-fragmented", "8.1", "invalid UTF-8 split across fragments",
             "text b'caf\\xc3' with FIN = 0 (a valid prefix), then FIN continuation b'\\x28 ok'"
             " (0x28 cannot continue the 2-byte sequence)",
             FAIL_1007, _seq((_TEXT, b"caf\xc3", {"fin": False}), (_CONT, b"\x28 ok", {}))),
        Case("utf8-overlong", "8.1", "overlong UTF-8 encoding",
             "FIN text frame b'\\xc0\\xaf' (an overlong '/')", FAIL_1007, _text(b"\xc0\xaf")),
        Case("utf8-surrogate", "8.1", "UTF-8-encoded UTF-16 surrogate",
             "FIN text frame b'\\xed\\xa0\\x80' (U+D800)", FAIL_1007, _text(b"\xed\xa0\x80")),
        Case("valid-utf8-fragmented", "5.4", "a code point split across fragments",
             "text b'caf\\xc3' with FIN = 0, then FIN continuation b'\\xa9' ('cafe' with an"
             " acute e, complete only once joined)",
             ACCEPT, _seq((_TEXT, b"caf\xc3", {"fin": False}), (_CONT, b"\xa9", {}))),
        Case("text-in-three-fragments", "5.4", "a message in three fragments",
             "text 'one ' FIN = 0, continuation 'two ' FIN = 0, continuation 'three' FIN = 1",
             ACCEPT, _seq((_TEXT, b"one ", {"fin": False}), (_CONT, b"two ", {"fin": False}),
                          (_CONT, b"three", {}))),
        Case("empty-text", "5.6", "an empty text message",
             "FIN text frame with a zero-length payload", ACCEPT, _one(_TEXT)),
        Case("length-64bit-msb", "5.2", "64-bit length with its most significant bit set",
             "FIN binary frame, length field 127 then 0x8000000000000005, 5 payload bytes",
             Expectation(Reaction.FAIL, (1002,), lenient=(1009,)), _msb_length),
        Case("payload-over-limit", "10.4", "a frame over the size limit",
             "FIN binary frame of max_size + 1 bytes (default 1 MiB + 1), header written first",
             FAIL_1009, _over_limit),
        Case("message-over-limit-fragmented", "10.4", "fragments adding up over the size limit",
             "binary FIN = 0 then continuation FIN = 1, each max_size / 2 + 1 bytes",
             FAIL_1009, _over_limit_fragmented),
        Case("truncated-header", "5.2", "a truncated frame header, then silence",
             "the single byte 0x81 (FIN text) and nothing more",
             Expectation(Reaction.WAIT), _truncated_header),
        Case("truncated-payload", "5.2", "a payload shorter than declared, then silence",
             "text frame declaring 10 bytes, only the first 5 sent",
             Expectation(Reaction.WAIT), _truncated_payload),
        Case("ping-echo", "5.5.2", "ping whose payload must be echoed",
             "ping 'wsconsole-ping'", _echo(PING_PAYLOAD), _one(_PING, PING_PAYLOAD)),
        Case("ping-empty", "5.5.2", "ping without payload",
             "ping with a zero-length payload", _echo(b""), _one(_PING)),
        Case("ping-125", "5.5.2", "ping with the largest control payload",
             "ping with a 125-byte payload", _echo(_MAX_CONTROL), _one(_PING, _MAX_CONTROL)),
        Case("ping-between-fragments", "5.4", "control frame inside a fragmented message",
             "text 'frag' FIN = 0, ping 'wsconsole-ping', FIN continuation 'ment'",
             _echo(PING_PAYLOAD),
             _seq((_TEXT, b"frag", {"fin": False}), (_PING, PING_PAYLOAD, {}),
                  (_CONT, b"ment", {}))),
        Case("unsolicited-pong", "5.5.3", "a pong nobody asked for",
             "pong 'unsolicited'", Expectation(Reaction.IGNORE), _one(_PONG, b"unsolicited")),
        Case("close-length-1", "5.5.1", "close payload of one byte",
             "close frame with the single payload byte 0x03",
             FAIL_1002, _one(_CLOSE, b"\x03")),
        Case("close-reason-invalid-utf8", "7.1.6", "close reason that is not UTF-8",
             "close 1000 with reason b'\\xff\\xfe'", FAIL_1007, _close(1000, b"\xff\xfe")),
        Case("close-empty", "5.5.1", "close without code",
             "close frame with an empty payload",
             Expectation(Reaction.CLOSE, (NO_STATUS, 1000)), _close(None)),
        Case("close-normal", "7.4.1", "normal close",
             "close 1000 'bye'", Expectation(Reaction.CLOSE, (1000,)), _close(1000, b"bye")),
        Case("close-code-4000", "7.4.2", "close with an application code",
             "close 4000 'app'", Expectation(Reaction.CLOSE, (4000, 1000)), _close(4000, b"app")),
        Case("data-after-close", "5.5.1", "data frame after a close frame",
             "close 1000, then FIN text 'after close' in the same write",
             Expectation(Reaction.CLOSE, (1000,)),
             _seq((_CLOSE, close_payload(1000), {}), (_TEXT, b"after close", {}))),
    ]
    invalid_codes = {
        999: "below the range of defined codes (0-999 are unused)",
        1004: "reserved",
        1005: "reserved for 'no status', never sent",
        1006: "reserved for 'abnormal closure', never sent",
        1015: "reserved for 'TLS failure', never sent",
        2999: "reserved for future protocol use",
        5000: "above the 4999 end of the application range",
    }
    for code, why in invalid_codes.items():
        cases.append(Case(
            f"close-code-{code}", "7.4.1", f"close code {code} ({why})",
            f"close frame with code {code} and no reason", FAIL_1002, _close(code),
        ))
    cases += _utf8_fragment_cases()
    return [replace(c, group=Group.FRAGMENTS) if c.id in FRAGMENT_CASES else c for c in cases]


# Cases about messages in several frames: the "fragments" group of docs/faults.md.
FRAGMENT_CASES = frozenset({
    "continuation-first", "continuation-after-final", "data-inside-fragmented",
    "binary-inside-fragmented", "invalid-utf8-fragmented", "valid-utf8-fragmented",
    "text-in-three-fragments", "ping-between-fragments", "message-over-limit-fragmented",
    "utf8-code-point-in-three-fragments", "utf8-truncated-at-end", "utf8-invalid-first-fragment",
})


def _utf8_fragment_cases() -> list[Case]:
    return [
        Case("utf8-code-point-in-three-fragments", "5.4",
             "a 4-byte code point split over three fragments",
             "text b'\\xf0' FIN = 0, continuation b'\\x9f\\x98' FIN = 0, FIN continuation"
             " b'\\x80' (U+1F600, valid only once joined)",
             ACCEPT, _seq((_TEXT, b"\xf0", {"fin": False}), (_CONT, b"\x9f\x98", {"fin": False}),
                          (_CONT, b"\x80", {}))),
        Case("utf8-truncated-at-end", "8.1", "a text message that ends inside a code point",
             "text b'caf\\xc3' FIN = 0, then an empty FIN continuation (the 2-byte sequence"
             " never completes)",
             FAIL_1007, _seq((_TEXT, b"caf\xc3", {"fin": False}), (_CONT, b"", {}))),
        Case("utf8-invalid-first-fragment", "8.1", "invalid UTF-8 in the first fragment",
             "text b'ok \\xff' with FIN = 0 (0xff is never UTF-8), a pause of --silence, then"
             " FIN continuation ' end'; failing before the last fragment is best (Autobahn 6.4)",
             Expectation(Reaction.FAIL, (1007,), lenient=(1002,), fast=True),
             lambda ctx: [ctx.frame(_TEXT, b"ok \xff", fin=False), ctx.frame(_CONT, b" end")]),
    ]


def harness_cases() -> list[Case]:
    """Harness wire-protocol mistakes in valid text frames (client to node only)."""
    long_name = "r" * (MAX_NAME * 4)
    raw: list[tuple[str, str, str, str]] = [
        ("app-bad-json", "a text frame that is not JSON", '{"type": "join", "room": ',
         "bad_json"),
        ("app-not-object", "JSON that is not an object", "[1, 2, 3]", "bad_envelope"),
        ("app-missing-type", 'an envelope without "type"', '{"room": "lobby"}', "bad_envelope"),
        ("app-type-not-string", '"type" that is not a string', '{"type": 5}', "bad_envelope"),
        ("app-unknown-type", "an unknown envelope type", '{"type": "explode"}', "unknown_type"),
        ("app-join-room-number", "join with a number as room", '{"type": "join", "room": 42}',
         "bad_envelope"),
        ("app-join-since-string", "join with a non-integer since",
         '{"type": "join", "room": "lobby", "since": "yesterday"}', "bad_envelope"),
        ("app-publish-no-data", "publish without data",
         '{"type": "publish", "room": "lobby", "id": "m1"}', "bad_envelope"),
        ("app-rpc-empty-method", "rpc with an empty method",
         '{"type": "rpc", "id": "r1", "method": ""}', "bad_envelope"),
        ("app-oversized-room", f"join with a room name over {MAX_NAME} characters",
         '{"type": "join", "room": "' + long_name + '"}', "oversized_field"),
        ("app-oversized-id", f"publish with an id over {MAX_NAME} characters",
         '{"type": "publish", "room": "lobby", "id": "' + long_name + '", "data": 1}',
         "oversized_field"),
    ]
    cases = []
    for case_id, title, text, code in raw:
        shown = text if len(text) <= 60 else text[:40] + f"... ({len(text)} chars)"
        cases.append(Case(
            case_id, "harness", title, f"FIN text frame {shown}", _app_error(code),
            _text(text), directions=C2S, layer=Layer.HARNESS, group=Group.HARNESS,
        ))
    return cases


