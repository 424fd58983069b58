"""The FrameStore's payload bytes, packed in compressed chunks instead of one object each.

A million frames held as a million `bytes` objects cost 41 bytes each beyond the payload
(a 33-byte object header and an 8-byte list slot), and JSON payloads that all look alike
are stored whole. Here payloads are appended to an open chunk (a `bytearray`); once it holds
`CHUNK` bytes it is sealed: compressed with zlib at level 1 (about 300 MB/s, harness JSON
frames shrink about 8x), or kept raw when that does not shrink it by a tenth (already
compressed or random binary payloads). A payload is addressed by (chunk, offset, length),
which the store keeps in its numeric columns; reading one from a sealed chunk decompresses
that chunk once (a few recently read chunks are cached, so a scan or a scroll in id order
costs one decompression per chunk). The store releases the chunks older than its oldest
frame as frames are dropped.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Sequence

CHUNK = 64 * 1024  # bytes of payload per chunk before it is sealed
_CACHED = 4  # decompressed sealed chunks kept for reading
_LEVEL = 1  # zlib: fastest; the ratio hardly improves at higher levels for JSON frames


class PayloadArena:
    """Payloads appended in order, each then read by the (chunk, offset) it was given."""

    def __init__(self) -> None:
        self._sealed: dict[int, tuple[bytes, bool]] = {}  # chunk -> (data, compressed)
        self._open = bytearray()
        self._open_index = 0  # the chunk being filled
        self._oldest = 0  # the oldest chunk that may still be held
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    @property
    def open_index(self) -> int:
        """The number of the chunk being filled (every lower one is sealed or released)."""
        return self._open_index

    @property
    def held_bytes(self) -> int:
        """Bytes the arena holds (sealed chunks as stored, plus the open chunk)."""
        return len(self._open) + sum(len(data) for data, _ in self._sealed.values())

    def add_many(self, payloads: Sequence[bytes]) -> tuple[list[int], list[int]]:
        """Append payloads in order; their chunk numbers and offsets."""
        chunks: list[int] = []
        offsets: list[int] = []
        add_chunk, add_offset = chunks.append, offsets.append
        opened = self._open
        position = len(opened)
        index = self._open_index
        for payload in payloads:
            add_chunk(index)
            add_offset(position)
            position += len(payload)
            opened += payload
            if position >= CHUNK:
                self._seal()
                opened = self._open
                position = 0
                index = self._open_index
        return chunks, offsets

    def _seal(self) -> None:
        raw = bytes(self._open)
        packed = zlib.compress(raw, _LEVEL)
        compressed = len(packed) < len(raw) * 0.9
        self._sealed[self._open_index] = (packed, True) if compressed else (raw, False)
        self._open = bytearray()
        self._open_index += 1

    def get(self, chunk: int, offset: int, length: int) -> bytes:
        """The payload stored at (chunk, offset), `length` bytes long."""
        if chunk == self._open_index:
            return bytes(self._open[offset : offset + length])
        return self._chunk(chunk)[offset : offset + length]

    def _chunk(self, chunk: int) -> bytes:
        cached = self._cache.get(chunk)
        if cached is not None:
            self._cache.move_to_end(chunk)
            return cached
        data, compressed = self._sealed[chunk]
        if compressed:
            data = zlib.decompress(data)
        self._cache[chunk] = data
        if len(self._cache) > _CACHED:
            self._cache.popitem(last=False)
        return data

    def release_before(self, chunk: int) -> None:
        """Forget the sealed chunks numbered below `chunk` (no kept frame refers to them)."""
        while self._oldest < min(chunk, self._open_index):
            self._sealed.pop(self._oldest, None)
            self._cache.pop(self._oldest, None)
            self._oldest += 1

    def clear(self) -> None:
        """Forget every payload (chunk numbers keep increasing)."""
        self._sealed.clear()
        self._cache.clear()
        self._open = bytearray()
        self._open_index += 1
        self._oldest = self._open_index
