"""A user node's output, line by line with time stamps: kept for the window, written to disk.

A stack node (harness/stacknodes.py) writes whatever it likes to stdout and stderr. Each line
is stamped with the wall time it was read, kept in a bounded ring per node id (the window's
log viewer and `Cluster.node_log` read it; restarts of the node append to the same ring, after
a marker line) and appended to `<log dir>/<id>.log` as `2026-01-02T03:04:05.678 out | text`.
A readiness check can wait for a line matching a pattern (`wait_for`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LOG_LINES = 5_000  # lines kept in memory per node (the file keeps everything)
MAX_LINE = 8_192  # characters kept of one line


def stamped(wall: float, stream: str, text: str, date: bool = True) -> str:
    """`2026-01-02T03:04:05.678 out | text` (the log file's form), or without the date
    (`date=False`: the window's and the harness prompt's)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S" if date else "%H:%M:%S", time.localtime(wall))
    return f"{stamp}.{int(wall % 1 * 1000):03d} {stream:3} | {text}"


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a node's output: when it was read, from which stream, what it said."""

    wall: float
    stream: str  # "out", "err", or "harness" for the supervisor's own markers
    text: str
    index: int  # position in the node's whole output (0-based, across restarts)

    def stamped(self) -> str:
        """`2026-01-02T03:04:05.678 out | text`, as the log file has it."""
        return stamped(self.wall, self.stream, self.text)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return {"wall": round(self.wall, 3), "stream": self.stream, "text": self.text}


class NodeLog:
    """The output of one node id: a ring of `LogLine`s and its file."""

    def __init__(self, path: Path | None, limit: int = LOG_LINES,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.lines: deque[LogLine] = deque(maxlen=limit)
        self.count = 0
        self.clock = clock
        self._file: IO[str] | None = None
        self._waiters: list[tuple[re.Pattern[str], int, asyncio.Future[LogLine]]] = []

    def add(self, stream: str, text: str) -> LogLine:
        """Record one line (trailing whitespace dropped, overlong lines cut)."""
        text = text.rstrip()
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + " [cut]"
        line = LogLine(self.clock(), stream, text, self.count)
        self.count += 1
        self.lines.append(line)
        self._write(line)
        for waiter in list(self._waiters):
            pattern, since, future = waiter
            if line.index >= since and stream != "harness" and pattern.search(text):
                self._waiters.remove(waiter)
                if not future.done():
                    future.set_result(line)
        return line

    def _write(self, line: LogLine) -> None:
        if self.path is None:
            return
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8", errors="replace")
        self._file.write(line.stamped() + "\n")
        self._file.flush()

    def tail(self, count: int | None = None) -> list[LogLine]:
        """The last `count` lines kept (all of them with None)."""
        lines = list(self.lines)
        return lines if count is None else lines[-count:]

    def text_tail(self, count: int = 3) -> str:
        """The last lines the node printed, on one line (for error messages)."""
        return " | ".join(line.text for line in self.tail(count * 4)
                          if line.stream != "harness")[-600:]

    async def wait_for(self, pattern: re.Pattern[str], since: int) -> LogLine:
        """The first line from index `since` on that matches `pattern` (waits for it)."""
        for line in self.lines:
            if line.index >= since and line.stream != "harness" and pattern.search(line.text):
                return line
        future: asyncio.Future[LogLine] = asyncio.get_running_loop().create_future()
        waiter = (pattern, since, future)
        self._waiters.append(waiter)
        try:
            return await future
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def close(self) -> None:
        """Close the file (a later line opens it again)."""
        if self._file is not None:
            self._file.close()
            self._file = None
