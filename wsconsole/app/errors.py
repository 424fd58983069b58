"""Where errors go in the console: logged AND shown in the window, never lost (no Qt).

One hub per console. `sys.excepthook` (which qasync's asyncSlot calls on a failed slot),
the asyncio loop's exception handler and every task the console spawns report here; the
window subscribes and shows each message in its Log dock and status bar.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

log = logging.getLogger("wsconsole.gui")


@dataclass(frozen=True, slots=True)
class Report:
    """One reported problem: a one-line summary plus the traceback text if there was one."""

    summary: str
    details: str = ""
    level: str = "error"
    wall: float = field(default=0.0)


class ErrorHub:
    """Collects reports (the last `limit`), logs them and calls the listeners."""

    def __init__(self, limit: int = 1000) -> None:
        self.reports: deque[Report] = deque(maxlen=limit)
        self.listeners: list[Callable[[Report], None]] = []

    def report(self, summary: str, exc: BaseException | None = None, level: str = "error") -> None:
        """Record, log and show a problem; listeners that fail are logged, not re-raised."""
        import time

        details = ""
        if exc is not None:
            details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            log.error("%s", summary, exc_info=(type(exc), exc, exc.__traceback__))
        elif level == "error":
            log.error("%s", summary)
        else:
            log.info("%s", summary)
        record = Report(summary, details, level, time.time())
        self.reports.append(record)
        for listener in list(self.listeners):
            try:
                listener(record)
            except Exception:  # a broken view must not hide the error it was showing
                log.exception("error listener failed")

    def info(self, summary: str) -> None:
        """A notice for the status bar (not an error)."""
        self.report(summary, level="info")

    def excepthook(
        self, kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        """sys.excepthook: asyncSlot failures and uncaught slot exceptions land here."""
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        exc.__traceback__ = tb
        self.report(f"{kind.__name__}: {exc}", exc)

    def loop_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio exception handler: unretrieved task errors and callback failures."""
        exc = context.get("exception")
        message = context.get("message", "asyncio error")
        if isinstance(exc, asyncio.CancelledError):
            return
        summary = f"{message}: {type(exc).__name__}: {exc}" if exc else message
        self.report(summary, exc if isinstance(exc, BaseException) else None)
