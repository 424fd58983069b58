"""The raw frame encoder: lengths, masking and deliberate violations, checked byte by byte
and against the `websockets` parser (an independent RFC 6455 implementation)."""

from __future__ import annotations

import struct
from collections.abc import Generator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import Frame
from websockets.streams import StreamReader

from wsconsole.core.frames import (
    FrameTooLarge,
    Opcode,
    apply_mask,
    close_payload,
    encode_frame,
    encode_header,
    is_control,
    parse_frame,
)

KEY = b"\x37\xfa\x21\x3d"


def ws_parse(data: bytes, *, mask: bool, max_size: int | None = None) -> Frame:
    """Parse one frame with websockets' own (validating) parser."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser: Generator[None, None, Frame] = Frame.parse(
        reader.read_exact, mask=mask, max_size=max_size
    )
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("websockets wanted more data")


def test_rfc_examples_byte_for_byte() -> None:
    # RFC 6455 section 5.7: unmasked and masked "Hello", an unmasked ping.
    assert encode_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert encode_frame(Opcode.TEXT, b"Hello", mask_key=KEY) == bytes.fromhex(
        "818537fa213d7f9f4d5158"
    )
    assert encode_frame(Opcode.PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    # 256 bytes binary: 16-bit length; 64 KiB binary: 64-bit length (section 5.7 examples).
    assert encode_frame(Opcode.BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert encode_frame(Opcode.BINARY, bytes(65536))[:10] == bytes.fromhex(
        "827f0000000000010000"
    )


@pytest.mark.parametrize(
    ("size", "header_size", "marker"),
    [(0, 2, 0), (125, 2, 125), (126, 4, 126), (65535, 4, 126), (65536, 10, 127)],
)
def test_length_forms_at_the_boundaries(size: int, header_size: int, marker: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    unmasked = encode_frame(Opcode.BINARY, payload)
    assert len(unmasked) == header_size + size
    assert unmasked[1] == marker
    masked = encode_frame(Opcode.BINARY, payload, mask_key=KEY)
    assert len(masked) == header_size + 4 + size
    assert masked[1] == 0x80 | marker
    assert masked[header_size : header_size + 4] == KEY
    # websockets reads both as the same frame.
    assert ws_parse(unmasked, mask=False).data == payload
    assert ws_parse(masked, mask=True).data == payload
    parsed, used = parse_frame(masked)  # type: ignore[misc]
    assert used == len(masked) and parsed.payload == payload and parsed.masked


def test_masking_is_an_involution_and_matches_websockets() -> None:
    from websockets.utils import apply_mask as ws_apply_mask

    data = bytes(range(256)) * 41 + b"tail"
    masked = apply_mask(data, KEY)
    assert masked != data
    assert masked == ws_apply_mask(data, KEY)
    assert apply_mask(masked, KEY) == data
    assert apply_mask(b"", KEY) == b""
    with pytest.raises(ValueError, match="4 bytes"):
        apply_mask(b"x", b"abc")


@given(
    opcode=st.sampled_from([Opcode.TEXT, Opcode.BINARY, Opcode.CONT]),
    payload=st.binary(max_size=70_000),
    fin=st.booleans(),
    key=st.none() | st.binary(min_size=4, max_size=4),
)
def test_encode_parse_round_trip(opcode: int, payload: bytes, fin: bool, key: bytes | None) -> None:
    wire = encode_frame(opcode, payload, fin=fin, mask_key=key)
    parsed, used = parse_frame(wire + b"next")  # type: ignore[misc]
    assert used == len(wire)
    assert (parsed.opcode, parsed.fin, parsed.masked, parsed.payload) == (
        opcode, fin, key is not None, payload,
    )
    # Incomplete input is never mistaken for a frame.
    assert parse_frame(wire[:-1]) is None


def test_reserved_bits_are_set_and_refused_by_websockets() -> None:
    for flag, bit in (("rsv1", 0x40), ("rsv2", 0x20), ("rsv3", 0x10)):
        wire = encode_frame(Opcode.TEXT, b"x", mask_key=KEY, **{flag: True})
        assert wire[0] == 0x80 | bit | 0x1
        parsed, _ = parse_frame(wire)  # type: ignore[misc]
        assert getattr(parsed, flag)
        with pytest.raises(ProtocolError, match="reserved bits"):
            ws_parse(wire, mask=True)


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes(opcode: int) -> None:
    wire = encode_frame(opcode, b"", mask_key=KEY)
    assert wire[0] & 0x0F == opcode
    assert is_control(opcode) == (opcode >= 0x8)
    with pytest.raises(ProtocolError, match="invalid opcode"):
        ws_parse(wire, mask=True)


def test_opcode_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="4 bits"):
        encode_frame(16)


def test_wrong_mask_bit_is_refused_by_websockets() -> None:
    with pytest.raises(ProtocolError, match="incorrect masking"):
        ws_parse(encode_frame(Opcode.TEXT, b"x"), mask=True)  # unmasked client frame
    with pytest.raises(ProtocolError, match="incorrect masking"):
        ws_parse(encode_frame(Opcode.TEXT, b"x", mask_key=KEY), mask=False)  # masked server


def test_control_frame_violations_are_refused_by_websockets() -> None:
    with pytest.raises(ProtocolError, match="control frame too long"):
        ws_parse(encode_frame(Opcode.PING, b"p" * 126), mask=False)
    with pytest.raises(ProtocolError, match="fragmented control frame"):
        ws_parse(encode_frame(Opcode.PING, b"p", fin=False), mask=False)
    assert ws_parse(encode_frame(Opcode.PING, b"p" * 125), mask=False).data == b"p" * 125


def test_declared_length_can_lie() -> None:
    # A 64-bit length with the most significant bit set, five bytes actually following.
    wire = encode_frame(Opcode.BINARY, b"hello", length=(1 << 63) | 5, length_form="64")
    assert wire[1] == 127
    assert struct.unpack("!Q", wire[2:10])[0] == (1 << 63) | 5
    assert wire[10:] == b"hello"
    with pytest.raises(PayloadTooBig):
        ws_parse(wire, mask=False, max_size=1 << 20)
    with pytest.raises(FrameTooLarge):
        parse_frame(wire, max_size=1 << 20)
    # A header promising 10 bytes with only 5 present is incomplete, not a frame.
    short = encode_frame(Opcode.TEXT, b"01234", length=10)
    assert short[1] == 10 and parse_frame(short) is None


def test_non_minimal_length_forms() -> None:
    wire = encode_frame(Opcode.TEXT, b"hi", length_form="64")
    assert wire[1] == 127 and len(wire) == 2 + 8 + 2
    assert parse_frame(wire)[0].payload == b"hi"  # type: ignore[index]
    assert encode_frame(Opcode.TEXT, b"hi", length_form="16")[1] == 126
    with pytest.raises(ValueError, match="7-bit"):
        encode_header(Opcode.TEXT, 126, length_form="7")
    with pytest.raises(ValueError, match="16-bit"):
        encode_header(Opcode.TEXT, 65536, length_form="16")
    with pytest.raises(ValueError, match="negative"):
        encode_header(Opcode.TEXT, -1)


def test_close_payloads() -> None:
    assert close_payload(None) == b""
    assert close_payload(1000) == b"\x03\xe8"
    assert close_payload(1001, "bye") == b"\x03\xe9bye"
    assert close_payload(1000, b"\xff") == b"\x03\xe8\xff"  # invalid UTF-8 on purpose
    with pytest.raises(ValueError, match="needs a code"):
        close_payload(None, "reason")
    with pytest.raises(ValueError, match="16 bits"):
        close_payload(70000)
    frame, _ = parse_frame(encode_frame(Opcode.CLOSE, close_payload(4000, "app")))  # type: ignore[misc]
    assert (frame.close_code, frame.close_reason) == (4000, "app")


def test_parse_needs_complete_headers() -> None:
    wire = encode_frame(Opcode.BINARY, bytes(70000), mask_key=KEY)
    for cut in (0, 1, 2, 9, 10, 13, len(wire) - 1):
        assert parse_frame(wire[:cut]) is None
    assert parse_frame(wire) is not None
