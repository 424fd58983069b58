"""The node's writer on real sockets: frames encoded once, order kept, slow consumers refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from tests.support import until
from wsconsole.core.frames import parse_frame
from wsconsole.harness.fanout import Fanout, Mark, payload_size, text_frame


class Member:
    """A connection record as the node keeps them (the writer only needs `ws`)."""

    __slots__ = ("ws",)

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws


class Counters:
    msgs_out = 0
    bytes_out = 0


@pytest.fixture
async def pair() -> AsyncIterator[tuple[list[Member], list[ClientConnection]]]:
    """Two clients connected to a local server; the server side as Members, in order."""
    accepted: list[Member] = []

    async def handler(ws: ServerConnection) -> None:
        accepted.append(Member(ws))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with connect(url, compression=None) as first:
            await until(lambda: len(accepted) == 1, "the first connection accepted")
            async with connect(url, compression=None) as second:
                await until(lambda: len(accepted) == 2, "the second connection accepted")
                yield accepted, [first, second]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frame_is_a_final_unmasked_text_frame(size: int) -> None:
    payload = b"x" * size
    frame = text_frame(payload)
    parsed, used = parse_frame(frame)  # type: ignore[misc]
    assert used == len(frame)
    assert (parsed.fin, parsed.opcode, parsed.masked, parsed.payload) == (True, 1, False, payload)


def test_payload_size_counts_utf8_bytes() -> None:
    assert payload_size("abc") == 3 and payload_size("é") == 2 and payload_size(b"\xff") == 1


@pytest.mark.parametrize("compression", [False, True])
async def test_frames_of_one_turn_keep_their_order_and_a_reply_comes_after_them(
    pair: tuple[list[Member], list[ClientConnection]], compression: bool
) -> None:
    members, (first, second) = pair
    counters = Counters()
    slow: list[Member] = []
    fanout: Fanout[Member] = Fanout(
        counters, compression=compression, max_buffered=None,
        on_slow=lambda member, missed: slow.append(member),
    )  # fmt: skip
    fanout.queue(members, b'"one"', Mark("r", "e", 1))
    fanout.queue(members[:1], b'"two"', Mark("r", "e", 2))
    fanout.send(members[0], '"reply"')
    fanout.queue(members, b'"three"', Mark("r", "e", 3))
    assert [await first.recv() for _ in range(4)] == ['"one"', '"two"', '"reply"', '"three"']
    assert [await second.recv() for _ in range(2)] == ['"one"', '"three"']
    assert (counters.msgs_out, counters.bytes_out) == (6, 5 * 2 + 5 + 7 + 7 * 2)
    assert not slow


async def test_a_client_that_does_not_read_is_refused_with_what_it_missed(
    pair: tuple[list[Member], list[ClientConnection]],
) -> None:
    """Nothing is written beyond the limit; on_slow names the messages not written."""
    members, (first, second) = pair
    slow: list[tuple[Member, list[Mark]]] = []
    limit = 1 << 20
    fanout: Fanout[Member] = Fanout(
        Counters(), compression=False, max_buffered=limit,
        on_slow=lambda member, missed: slow.append((member, missed)),
    )  # fmt: skip
    first.transport.pause_reading()
    chunk = b'"' + b"x" * (64 << 10) + b'"'
    for seq in range(1, 401):  # 26 MB: more than the kernel's socket buffers hold
        fanout.queue(members[:1], chunk, Mark("r", "e", seq))
        await asyncio.sleep(0)
        if slow:
            break
    member, missed = slow[0]
    assert member is members[0] and missed == [Mark("r", "e", seq)]
    assert members[0].ws.transport.get_write_buffer_size() <= limit
    assert 0 < fanout.peak_buffered <= limit
    fanout.queue(members, chunk, Mark("r", "e", seq + 1))
    await until(lambda: len(slow) > 1, "the slow client refused again")
    assert slow[1][1] == [Mark("r", "e", seq + 1)]
    assert await second.recv() == chunk.decode(), "the other client is not held back"
    first.transport.abort()  # (it would take close_timeout to say goodbye through 26 MB)
