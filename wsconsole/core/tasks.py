"""Named asyncio tasks that are kept alive and whose failures are logged, never dropped.

`asyncio.create_task` keeps only a weak reference and an exception nobody awaits is lost
(mitmproxy bans the bare call for this reason). `TaskGroup`-like ownership without its
"one failure cancels all" rule: an owner keeps a `Tasks`, spawns into it, and cancels the
lot on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)


class Tasks:
    """A set of named tasks with strong references; failures go to `on_error` or the log."""

    def __init__(
        self,
        prefix: str = "wsconsole",
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.prefix = prefix
        self.on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        """The tasks still held (a copy: spawning or ending while iterating is safe)."""
        return iter(list(self._tasks))

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` as the task `<prefix>-<name>`, kept here until it ends."""
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.prefix}-{name}" if self.prefix else name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if self.on_error is not None:
            self.on_error(task.get_name(), exc)
        else:
            log.error("task %s failed", task.get_name(), exc_info=exc)

    async def cancel_all(self, timeout: float = 5.0) -> None:
        """Cancel every task still running and wait (at most `timeout` s) for them to end."""
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=timeout)


def raise_if_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop. A cancel landing inside
    some library calls (redis-py's reads and pipelines) is swallowed there and the call
    returns normally: a loop around such a call checks this once per turn."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def spawn(coro: Awaitable[Any], name: str, owner: Tasks | None = None) -> asyncio.Task[Any]:
    """A named task whose failure is logged; held by `owner`, or by a module-wide set."""
    return (owner or _DEFAULT).spawn(coro, name)


_DEFAULT = Tasks(prefix="")
