"""GUI test fixtures: a qasync loop on pytest-qt's QApplication, temp settings, child servers.

pytest-qt's qtbot.waitUntil does not run asyncio tasks, so each GUI test drives one
coroutine on a qasync QEventLoop with `run(qloop, coro, timeout)`; awaiting inside it keeps
both Qt events and asyncio tasks moving.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from tests.support import SCALE, ProcessRegistry, free_port


@pytest.fixture
def qloop(qapp: Any) -> Iterator[asyncio.AbstractEventLoop]:
    """A qasync event loop made after the QApplication (DESIGN.md: on 3.11 that order)."""
    import qasync

    qapp.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture(autouse=True)
def _collect_between_events(qapp: Any) -> Iterator[None]:
    """As the window does (gui/app.py): no cycle collection in the middle of a paint."""
    from wsconsole.gui.app import collect_garbage_between_events

    with collect_garbage_between_events():
        yield


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
        timeout: float = 60.0) -> Any:
    """Run `coro` to completion on the qasync loop, bounded by `timeout` (scaled)."""

    async def bounded() -> Any:
        async with asyncio.timeout(timeout * SCALE):
            return await coro

    return loop.run_until_complete(bounded())


@pytest.fixture
def settings_path(tmp_path: Path) -> str:
    """A throw-away QSettings .ini file (never the user's settings)."""
    return str(tmp_path / "settings" / "wsconsole.ini")


def start_server(procs: ProcessRegistry, argv: list[str], timeout: float = 20.0) -> int:
    """Start a test server script that prints a JSON "listening" line; returns its port."""
    proc = procs.start([sys.executable, *argv], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, cwd=str(Path(__file__).parents[2]))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    event = json.loads(line)
    assert event["event"] == "listening", line
    return int(event["port"])


@pytest.fixture
def echo_port(procs: ProcessRegistry) -> int:
    """A real websockets echo server in its own process."""
    port = free_port()
    return start_server(procs, ["-m", "tests.servers", "echo", "--port", str(port)])
