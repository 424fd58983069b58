"""The one place that builds a child process's command line (DESIGN.md: Processes).

From a source checkout a child is `python -m wsconsole <command> ...`; in a packaged bundle
(`sys.frozen`) the bundle's own executable runs the same sub-command.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable


def child_argv(command: str, *args: str) -> list[str]:
    """argv that runs `wsconsole <command> <args>` as a child of this process."""
    if getattr(sys, "frozen", False):
        return [sys.executable, command, *args]
    return [sys.executable, "-m", "wsconsole", command, *args]


def _die_with_parent() -> Callable[[], None] | None:
    """Linux: a pre-exec hook making the child get SIGKILL when its parent dies (PDEATHSIG).

    The net under `atexit`, which cannot run when the supervisor itself is SIGKILLed. Linux
    ties this to the thread that started the child, so start children from a long-lived
    thread (the loop's thread, or an executor's worker, which lives until shutdown).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    kill = int(signal.SIGKILL)

    def hook() -> None:
        prctl(pr_set_pdeathsig, kill)

    return hook


DIE_WITH_PARENT = _die_with_parent()
