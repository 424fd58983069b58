"""The package's one exception base.

Every exception class wsconsole defines derives from `WsconsoleError` (tests/test_errors.py
walks the package to check it), so a front end (CLI, window, scenario runner) can tell what
wsconsole raised on purpose from an error of Python or a library. Almost all of them are
refusals with a message for the user; a few are internal signals that never reach the user
(a shell's `Quit`, the SSE driver's private ones, `IllegalTransition` guarding the state
machine). Subclasses keep a builtin base too where callers rely on it (`ValueError` for bad
input, `KeyError`, `LookupError`, `TimeoutError`).
"""

from __future__ import annotations


class WsconsoleError(Exception):
    """An error wsconsole raised on purpose, with a message in plain words."""
