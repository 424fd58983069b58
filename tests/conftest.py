"""Shared test fixtures: scaled time, loopback ports, and child processes killed by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import ProcessRegistry

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def procs() -> Iterator[ProcessRegistry]:
    """Start child processes through this; each is SIGKILLed by PID at teardown if alive."""
    registry = ProcessRegistry()
    try:
        yield registry
    finally:
        registry.kill_all()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Last resort: no child started by the suite outlives it (by PID, never by name)."""
    for pid in ProcessRegistry.every_pid():
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


__all__ = ["procs", "subprocess", "sys"]
