"""The strict incoming-frame checks (core/framecheck.py), fed frames without a loop."""

from __future__ import annotations

import pytest
from websockets.frames import Opcode

from wsconsole.core.framecheck import TextFragments

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT


def feed_all(frames: list[tuple[Opcode, bool, bytes]]) -> int | None:
    """Feed frames in order; the index of the one refused, or None."""
    fragments = TextFragments()
    for index, (opcode, fin, data) in enumerate(frames):
        try:
            fragments.feed(opcode, fin, data)
        except UnicodeDecodeError:
            return index
    return None


@pytest.mark.parametrize(
    ("frames", "refused_at"),
    [
        # code points split across fragments are fine once joined
        ([(TEXT, False, b"caf\xc3"), (CONT, True, b"\xa9")], None),
        ([(TEXT, False, b"\xf0"), (CONT, False, b"\x9f\x98"), (CONT, True, b"\x80")], None),
        # refused at the first fragment that cannot be UTF-8 (Autobahn 6.4.1 / 6.4.2)
        ([(TEXT, False, b"ok \xff"), (CONT, True, b" end")], 0),
        ([(TEXT, False, b"\xce\xba\xf4"), (CONT, False, b"\x90"), (CONT, True, b"x")], 1),
        # an encoded UTF-16 surrogate is refused at its second byte, not its third
        ([(TEXT, False, b"a\xed"), (CONT, False, b"\xa0"), (CONT, True, b"\x80")], 1),
        # a message that ends inside a code point is refused with its last fragment
        ([(TEXT, False, b"caf\xc3"), (CONT, True, b"")], 1),
        # binary messages and whole text messages are not this check's business
        ([(BINARY, False, b"\xff"), (CONT, True, b"\xfe")], None),
        ([(TEXT, True, b"\xff")], None),
    ],
    ids=["split-2-byte", "split-4-byte", "first-fragment", "second-fragment", "surrogate",
         "truncated", "binary", "whole-message"],
)
def test_fragmented_text_is_refused_at_the_first_impossible_byte(
    frames: list[tuple[Opcode, bool, bytes]], refused_at: int | None
) -> None:
    assert feed_all(frames) == refused_at


def test_a_reset_forgets_the_message_in_progress() -> None:
    fragments = TextFragments()
    fragments.feed(TEXT, False, b"caf\xc3")
    assert fragments.in_text
    fragments.reset()  # a close frame ended the message
    assert not fragments.in_text
    fragments.feed(CONT, True, b"\xa9")  # no text message in progress: nothing to check
    fragments.feed(TEXT, False, b"ok")  # a new message starts with nothing pending
    assert fragments.in_text
