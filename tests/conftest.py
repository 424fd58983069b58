"""Shared test fixtures: scaled time, loopback ports, and child processes killed by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from tests.support import SCALE, ProcessRegistry

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# wsconsole's own log folder (and the stack runs' logs kept under it): one per test session,
# never the user's
os.environ.setdefault("WSCONSOLE_LOG_DIR", tempfile.mkdtemp(prefix="wsconsole-test-logs-"))


@pytest.fixture
def procs() -> Iterator[ProcessRegistry]:
    """Start child processes through this; each is SIGKILLed by PID at teardown if alive."""
    registry = ProcessRegistry()
    try:
        yield registry
    finally:
        registry.kill_all()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Per-test time limits (the `timeout` setting and timeout marks) stretch with SCALE too."""
    if SCALE == 1:
        return
    default = config.getoption("timeout", None) or config.getini("timeout")
    for item in items:
        mark = item.get_closest_marker("timeout")
        limit = (mark.args[0] if mark.args else mark.kwargs.get("timeout")) if mark else default
        if limit:
            item.add_marker(pytest.mark.timeout(float(limit) * SCALE), append=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Last resort: no child started by the suite outlives it (by PID, never by name)."""
    for pid in ProcessRegistry.every_pid():
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


__all__ = ["procs", "subprocess", "sys"]
