"""Where wsconsole writes its own log: the platform's user log folder, rotated by size.

`log_dir()` is platformdirs' user log directory for wsconsole (~/.local/state/wsconsole/log
on Linux, ~/Library/Logs/wsconsole on macOS, %LOCALAPPDATA%\\wsconsole\\Logs on Windows);
the environment variable WSCONSOLE_LOG_DIR overrides it (tests, portable installs).
`setup_logging()` adds one RotatingFileHandler (1 MiB x 5 files by default) to the root
logger, once per process; the support bundle collects these files.
"""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path

import platformdirs

LOG_DIR_ENV = "WSCONSOLE_LOG_DIR"
LOG_FILE = "wsconsole.log"
FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
MAX_BYTES = 1 << 20
BACKUPS = 5

_handler: RotatingFileHandler | None = None
_previous_level: int | None = None


def log_dir() -> Path:
    """The folder holding wsconsole's log files (not created here)."""
    override = os.environ.get(LOG_DIR_ENV)
    if override:
        return Path(override)
    return Path(platformdirs.user_log_dir("wsconsole", appauthor=False))


def log_files(folder: Path | None = None) -> list[Path]:
    """The current log file and its rotated predecessors, newest first."""
    folder = folder or log_dir()
    if not folder.is_dir():
        return []
    return sorted(folder.glob(LOG_FILE + "*"), key=lambda p: (len(p.name), p.name))


def setup_logging(level: int = logging.INFO, max_bytes: int = MAX_BYTES,
                  backups: int = BACKUPS) -> Path | None:
    """Log to the user log folder with rotation; returns the file, None if it cannot be made."""
    global _handler, _previous_level
    if _handler is not None:
        return Path(_handler.baseFilename)
    folder = log_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(folder / LOG_FILE, maxBytes=max_bytes,
                                      backupCount=backups, encoding="utf-8")
    except OSError as exc:
        logging.getLogger(__name__).warning("no log file in %s: %s", folder, exc)
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(level)
    root = logging.getLogger()
    root.addHandler(handler)
    _previous_level = root.level
    if root.level > level or root.level == logging.NOTSET:
        root.setLevel(level)
    _handler = handler
    return Path(handler.baseFilename)


def stop_logging() -> None:
    """Remove and close the file handler (tests; a process normally keeps it to the end)."""
    global _handler, _previous_level
    if _handler is not None:
        root = logging.getLogger()
        root.removeHandler(_handler)
        _handler.close()
        _handler = None
        if _previous_level is not None:
            root.setLevel(_previous_level)
            _previous_level = None
