"""The package's one exception base.

Every error wsconsole raises on purpose derives from `WsconsoleError`, so a front end (CLI,
window, scenario runner) can tell "the tool refused this, with a message for the user" from a
bug. Subclasses keep a builtin base too where callers rely on it (`ValueError` for bad input).
"""

from __future__ import annotations


class WsconsoleError(Exception):
    """A failure wsconsole reports to its user in plain words (never a bug)."""
