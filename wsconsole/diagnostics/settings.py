"""Find the app's saved settings for a support bundle, without loading Qt.

The window keeps its settings in QSettings("wsconsole", "wsconsole"): an INI file on Linux
($XDG_CONFIG_HOME/wsconsole/wsconsole.conf) and macOS' plist elsewhere, so only INI files
are collected here; the GUI's Diagnose dialog passes its live settings in directly.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_settings_file() -> Path | None:
    """The window's QSettings INI file on this platform, if it is one and exists."""
    if os.name == "nt" or os.uname().sysname == "Darwin":
        return None  # registry / plist: the GUI passes its settings in itself
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base / "wsconsole" / "wsconsole.conf"
    return path if path.is_file() else None


def app_settings_files(explicit: str | None = None) -> dict[str, str]:
    """name -> text of the settings files to include (explicit file, else the default one)."""
    path = Path(explicit) if explicit else default_settings_file()
    if path is None:
        return {}
    try:
        return {path.name: path.read_text(encoding="utf-8", errors="replace")}
    except OSError:
        return {}
