"""The backends of one of our proxies and the network faults on them, live and reversible.

The balancer (HTTP-upgrade routing) and the relay (raw TCP, one listening port per backend)
both pipe bytes through `pump.Connection`, which asks its backend's `faults` at every chunk
and waits on `changed()` while a stall holds it. `FaultRoutes` keeps those up to date: a fault
set or cleared on a backend id or "all" (netfaults.py) is merged into each backend's effective
faults at once, and every stalled pipe is woken to look again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from wsconsole.harness.netfaults import ALL, FaultBoard, Reset, parse_fault
from wsconsole.harness.pump import Backend

log = logging.getLogger(__name__)


class FaultRoutes:
    """Backends by id with their effective network faults; see the module docstring."""

    def __init__(self) -> None:
        self.backends: dict[str, Backend] = {}
        self.board = FaultBoard()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Wait until the faults change (stalled pipes wake up and re-check)."""
        await self._changed.wait()

    def _refresh(self) -> None:
        for backend in self.backends.values():
            backend.faults = self.board.effective(backend.id)
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _check(self, target: str) -> None:
        if target != ALL and target not in self.backends:
            raise KeyError(f"unknown backend {target!r}")

    def add(self, backend: Backend) -> None:
        """Route to one more backend (the faults set on "all" apply to it at once)."""
        if not backend.id or backend.id == ALL or backend.id in self.backends:
            raise ValueError(f"backend id {backend.id!r} is empty, reserved or taken")
        self.backends[backend.id] = backend
        backend.faults = self.board.effective(backend.id)

    def remove(self, backend_id: str) -> Backend:
        """Stop routing to a backend and forget its faults; its open connections end by
        themselves. KeyError for an unknown id."""
        backend = self.backends.pop(backend_id, None)
        if backend is None:
            raise KeyError(f"unknown backend {backend_id!r}")
        self.board.forget(backend_id)
        return backend

    def apply_fault(self, target: str, kind: object, params: dict[str, Any]) -> None:
        """Activate a fault on a backend id or "all" (raises FaultError / KeyError); a
        reset also resets every connection open now."""
        self._check(target)
        fault = parse_fault(kind, params)
        if isinstance(fault, Reset):
            victims = self.backends.values() if target == ALL else [self.backends[target]]
            for backend in victims:
                for conn in list(backend.open):
                    conn.reset()
        self.board.set(target, fault)
        self._refresh()
        log.info("fault %s on %s: %s", fault.kind, target, fault.to_dict())

    def clear_fault(self, target: str, kind: str | None = None) -> int:
        """Clear one kind (None: all kinds) on a target; returns how many were removed."""
        self._check(target)
        removed = self.board.clear(target, kind)
        self._refresh()
        log.info("fault %s cleared on %s (%d removed)", kind or "*", target, removed)
        return removed
