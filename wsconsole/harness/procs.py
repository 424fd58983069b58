"""The one place that builds a child process's command line (DESIGN.md: Processes).

From a source checkout a child is `python -m wsconsole <command> ...`; in a packaged bundle
(`sys.frozen`) the bundle's own executable runs the same sub-command.
"""

from __future__ import annotations

import sys


def child_argv(command: str, *args: str) -> list[str]:
    """argv that runs `wsconsole <command> <args>` as a child of this process."""
    if getattr(sys, "frozen", False):
        return [sys.executable, command, *args]
    return [sys.executable, "-m", "wsconsole", command, *args]
