"""Raw RFC 6455 frames, built byte by byte, including deliberate violations.

Pure functions, no I/O: `encode_frame` writes any header a peer might ever see (reserved
bits, reserved opcodes, a wrong mask bit, a declared length that lies about the payload,
a non-minimal or out-of-range length) and `parse_frame` reads one frame back without
judging it, so the probe can report what a peer actually sent. `websockets` refuses to
build most of these frames, which is why this module exists.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Literal

from wsconsole.errors import WsconsoleError

LengthForm = Literal["auto", "7", "16", "64"]

MAX_CONTROL_PAYLOAD = 125  # RFC 6455 section 5.5
MASK_KEY_SIZE = 4


class Opcode(enum.IntEnum):
    """The opcodes RFC 6455 section 5.2 defines; 3-7 and 0xB-0xF are reserved."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})


def is_control(opcode: int) -> bool:
    """True for control opcodes (high bit of the 4-bit opcode set), reserved ones included."""
    return bool(opcode & 0x8)


def apply_mask(data: bytes, mask_key: bytes) -> bytes:
    """XOR `data` with the repeating 4-byte key (masking and unmasking are the same)."""
    if len(mask_key) != MASK_KEY_SIZE:
        raise ValueError(f"a mask key is {MASK_KEY_SIZE} bytes, got {len(mask_key)}")
    size = len(data)
    if size == 0:
        return b""
    repeated = (mask_key * (size // MASK_KEY_SIZE + 1))[:size]
    # One big-integer XOR: about a millisecond for 1 MiB, no per-byte Python loop.
    value = int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(size, "big")


def encode_header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    masked: bool = False,
    length_form: LengthForm = "auto",
) -> bytes:
    """The frame header up to (not including) the masking key.

    `length` is what the header declares; it may be any value that fits the chosen form,
    including 64-bit values with the most significant bit set (a violation of section 5.2).
    """
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"an opcode is 4 bits (0-15), got {opcode}")
    if length < 0:
        raise ValueError("a length cannot be negative")
    form = length_form
    if form == "auto":
        form = "7" if length <= 125 else "16" if length <= 0xFFFF else "64"
    head1 = (fin << 7) | (rsv1 << 6) | (rsv2 << 5) | (rsv3 << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if form == "7":
        if length > 125:
            raise ValueError("the 7-bit length form holds 0-125")
        return bytes([head1, mask_bit | length])
    if form == "16":
        if length > 0xFFFF:
            raise ValueError("the 16-bit length form holds 0-65535")
        return bytes([head1, mask_bit | 126]) + struct.pack("!H", length)
    if form == "64":
        if length > 0xFFFF_FFFF_FFFF_FFFF:
            raise ValueError("the 64-bit length form holds at most 2**64 - 1")
        return bytes([head1, mask_bit | 127]) + struct.pack("!Q", length)
    raise ValueError(f"unknown length form {length_form!r}")


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask_key: bytes | None = None,
    length: int | None = None,
    length_form: LengthForm = "auto",
) -> bytes:
    """One frame on the wire: header, masking key when `mask_key` is given, payload.

    Clients mask (give a 4-byte `mask_key`), servers do not (None). `length` overrides the
    declared length (default: the payload's), so a header can promise more than follows.
    """
    declared = len(payload) if length is None else length
    header = encode_header(
        opcode,
        declared,
        fin=fin,
        rsv1=rsv1,
        rsv2=rsv2,
        rsv3=rsv3,
        masked=mask_key is not None,
        length_form=length_form,
    )
    if mask_key is None:
        return header + payload
    return header + mask_key + apply_mask(payload, mask_key)


def close_payload(code: int | None, reason: bytes | str = b"") -> bytes:
    """A close frame's payload: 2-byte code then reason bytes; empty when `code` is None."""
    raw_reason = reason.encode() if isinstance(reason, str) else reason
    if code is None:
        if raw_reason:
            raise ValueError("a close reason needs a code")
        return b""
    if not 0 <= code <= 0xFFFF:
        raise ValueError("a close code is 16 bits")
    return struct.pack("!H", code) + raw_reason


@dataclass(frozen=True)
class ParsedFrame:
    """One frame as read off the wire, payload already unmasked; nothing is validated."""

    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    masked: bool
    payload: bytes

    @property
    def close_code(self) -> int | None:
        """The code of a close frame (None when its payload is empty or too short)."""
        if self.opcode != Opcode.CLOSE or len(self.payload) < 2:
            return None
        return struct.unpack("!H", self.payload[:2])[0]

    @property
    def close_reason(self) -> str:
        """The reason of a close frame, decoded leniently for display."""
        if self.opcode != Opcode.CLOSE or len(self.payload) < 2:
            return ""
        return self.payload[2:].decode("utf-8", "replace")


class FrameTooLarge(WsconsoleError, ValueError):
    """A frame header declares more than the reader is willing to buffer."""


def parse_frame(buffer: bytes, *, max_size: int | None = None) -> tuple[ParsedFrame, int] | None:
    """Read one frame from the start of `buffer`: (frame, bytes consumed) or None if incomplete.

    Raises FrameTooLarge when the declared length exceeds `max_size`, so a reader never waits
    for (or buffers) an absurd payload.
    """
    if len(buffer) < 2:
        return None
    head1, head2 = buffer[0], buffer[1]
    masked = bool(head2 & 0x80)
    length = head2 & 0x7F
    offset = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length = struct.unpack("!H", buffer[2:4])[0]
        offset = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length = struct.unpack("!Q", buffer[2:10])[0]
        offset = 10
    if max_size is not None and length > max_size:
        raise FrameTooLarge(f"frame declares {length} bytes, over the limit of {max_size}")
    mask_key = b""
    if masked:
        if len(buffer) < offset + MASK_KEY_SIZE:
            return None
        mask_key = buffer[offset : offset + MASK_KEY_SIZE]
        offset += MASK_KEY_SIZE
    end = offset + length
    if len(buffer) < end:
        return None
    payload = bytes(buffer[offset:end])
    if masked:
        payload = apply_mask(payload, bytes(mask_key))
    frame = ParsedFrame(
        fin=bool(head1 & 0x80),
        rsv1=bool(head1 & 0x40),
        rsv2=bool(head1 & 0x20),
        rsv3=bool(head1 & 0x10),
        opcode=head1 & 0x0F,
        masked=masked,
        payload=payload,
    )
    return frame, end
