"""Connection states and the record of every transition between them.

A plain state machine (no I/O): the client feeds it causes, it checks the move is legal,
stamps it with monotonic and wall-clock time and keeps a bounded history for the views.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from wsconsole.errors import WsconsoleError


class State(StrEnum):
    """Where a connection is; RECONNECTING means waiting out a backoff delay."""

    CONNECTING = "CONNECTING"
    OPEN = "OPEN"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    RECONNECTING = "RECONNECTING"


ALLOWED: dict[State, frozenset[State]] = {
    State.CLOSED: frozenset({State.CONNECTING}),
    State.CONNECTING: frozenset({State.OPEN, State.RECONNECTING, State.CLOSED, State.CLOSING}),
    State.OPEN: frozenset({State.CLOSING, State.RECONNECTING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED, State.RECONNECTING}),
    State.RECONNECTING: frozenset({State.CONNECTING, State.CLOSED}),
}


class IllegalTransition(WsconsoleError, RuntimeError):
    """A move the state machine does not allow (a bug in the driver, never user input)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change: when, why (close code and reason, or the error), attempt and delay;
    `decision` says why the driver chose this move (why a delay grew or reset, a
    Retry-After honoured, a retry with a fresh token)."""

    conn: str
    previous: State
    state: State
    at: float
    wall: float
    attempt: int = 0
    delay: float | None = None
    code: int | None = None
    reason: str | None = None
    error: str | None = None
    decision: str | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields, None values left out."""
        fields = {
            "conn": self.conn,
            "state": self.state.value,
            "previous": self.previous.value,
            "at": self.at,
            "wall": self.wall,
            "attempt": self.attempt,
            "delay": self.delay,
            "code": self.code,
            "reason": self.reason,
            "error": self.error,
            "decision": self.decision,
        }
        return {k: v for k, v in fields.items() if v is not None}


class Lifecycle:
    """The current state of one connection plus its last `max_history` transitions."""

    def __init__(self, conn: str, max_history: int | None = 10_000) -> None:
        self.conn = conn
        self.state = State.CLOSED
        self.history: deque[Transition] = deque(maxlen=max_history)

    def move(
        self,
        state: State,
        *,
        attempt: int = 0,
        delay: float | None = None,
        code: int | None = None,
        reason: str | None = None,
        error: str | None = None,
        decision: str | None = None,
        at: float | None = None,
    ) -> Transition:
        """Record a legal transition and return it; raise IllegalTransition otherwise."""
        if state not in ALLOWED[self.state]:
            raise IllegalTransition(f"{self.conn}: {self.state} -> {state} is not allowed")
        record = Transition(
            conn=self.conn,
            previous=self.state,
            state=state,
            at=time.monotonic() if at is None else at,
            wall=time.time(),
            attempt=attempt,
            delay=delay,
            code=code,
            reason=reason,
            error=error,
            decision=decision,
        )
        self.state = state
        self.history.append(record)
        return record
