"""The supervisor's events: what happened to the cluster, handed to every subscriber.

Events are dicts with an "event" key, the shapes `wsconsole harness --json` prints (see the
list in cluster.py's docstring). A subscriber that raises is logged and the others still
hear the event: a failing view must not break the supervisor.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Event = dict[str, Any]
Subscriber = Callable[[Event], None]


class EventHub:
    """Subscribers and the one `emit` every part of the supervisor reports through."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` for every event; returns the function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> None:
        """Hand `event` to every subscriber, in subscription order."""
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("a cluster event subscriber failed")
