"""Server-to-client injection: the request a node accepts and the verdict on a client's reaction.

A harness node writes a catalogue case's bytes (`Case.wire(SERVER_TO_CLIENT)`) raw on the
transport of chosen connections, bypassing `websockets`' own framing; then it watches each
connection for `wait` seconds and judges what the client did against the case's expectation.
This module is the pure part of that: `parse_request` validates the control command's fields
(shared by the node, `Cluster.inject`, the harness stdin and the GUI), `judge_reaction` turns
"closed with code X" or "still open" into a verdict with the probe's `Verdict` values.

What the node can see of a client is its close frame (or the lack of one): a client that
answers a ping with a pong, or that accepts a valid message, shows as "still open".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wsconsole.errors import WsconsoleError
from wsconsole.faults.catalogue import (
    DEFAULT_MAX_SIZE,
    NO_STATUS,
    Case,
    Direction,
    Expectation,
    Reaction,
    get_case,
)
from wsconsole.faults.probe import Verdict

ALL = "*"  # the target meaning every connection of the node
ALL_ALIASES = frozenset({"*", "all"})
MAX_REPEAT = 100
MAX_WAIT = 30.0
DEFAULT_WAIT = 1.0
ABNORMAL = 1006  # no close frame arrived: the TCP connection just ended (RFC 6455 7.1.5)
KEYS = frozenset({"case", "target", "count", "repeat", "wait", "max_size"})


class InjectError(WsconsoleError, ValueError):
    """A request that cannot be carried out: unknown case, wrong direction, bad field, no target."""


@dataclass(frozen=True)
class InjectRequest:
    """What to inject where: `target` is a connection id, a room, `conn:ID`, `room:NAME` or `*`.

    `count` caps the connections written to (None: all that match), `repeat` writes the bytes
    that many times back to back, `wait` is how long to watch for the clients' reactions,
    `max_size` the client size limit the over-limit cases are built against.
    """

    case: Case
    target: str = ALL
    count: int | None = None
    repeat: int = 1
    wait: float = DEFAULT_WAIT
    max_size: int = DEFAULT_MAX_SIZE

    def data(self) -> bytes:
        """The bytes written to each connection."""
        return self.case.wire(Direction.SERVER_TO_CLIENT, max_size=self.max_size) * self.repeat


def _int(fields: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = fields.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InjectError(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def parse_request(fields: dict[str, Any]) -> InjectRequest:
    """Validate the fields of an inject command (extra envelope keys are the caller's)."""
    case_id = fields.get("case")
    if not isinstance(case_id, str) or not case_id:
        raise InjectError("inject needs case=ID (see `wsconsole probe --list`)")
    try:
        case = get_case(case_id)
    except KeyError as exc:
        raise InjectError(str(exc)) from None
    if not case.applies_to(Direction.SERVER_TO_CLIENT):
        raise InjectError(
            f"case {case_id} is client-to-server only (a server cannot send it); "
            "run it with `wsconsole probe` instead"
        )
    target = fields.get("target", ALL)
    if target is None:
        target = ALL
    if not isinstance(target, str) or not target.strip():
        raise InjectError("target must be a connection id, a room name, or '*' for all")
    target = target.strip()
    if target in ALL_ALIASES:
        target = ALL
    count = _int(fields, "count", None, 1, 1_000_000)
    repeat = _int(fields, "repeat", 1, 1, MAX_REPEAT)
    max_size = _int(fields, "max_size", DEFAULT_MAX_SIZE, 1, 64 << 20)
    wait = fields.get("wait", DEFAULT_WAIT)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_WAIT:
        raise InjectError(f"wait must be a number of seconds from 0 to {MAX_WAIT:g}, got {wait!r}")
    assert repeat is not None and max_size is not None
    return InjectRequest(case, target, count, repeat, float(wait), max_size)


def split_target(target: str) -> tuple[str | None, str]:
    """('conn', ID), ('room', NAME) for an explicit prefix; (None, text) to resolve by lookup."""
    for kind in ("conn", "room"):
        prefix = kind + ":"
        if target.startswith(prefix) and len(target) > len(prefix):
            return kind, target[len(prefix):]
    return None, target


def describe_reaction(closed: bool, code: int | None, reason: str, waited: float) -> str:
    """What the node saw of the client, in words: 'closed 1002 'reason'' or 'still open'."""
    if not closed:
        return f"still open after {waited:.1f} s"
    if code is None or code == ABNORMAL:
        return "TCP closed without a close frame"
    text = "closed (no code)" if code == NO_STATUS else f"closed {code}"
    return text + (f" {reason!r}" if reason else "")


def judge_reaction(expected: Expectation, closed: bool, code: int | None) -> tuple[Verdict, str]:
    """Verdict on a client's reaction as the node sees it: a close code, or still open."""
    reaction = expected.reaction
    dropped = closed and (code is None or code == ABNORMAL)
    if reaction is Reaction.FAIL:
        if not closed:
            return Verdict.FAIL, "the client did not fail the connection"
        if dropped:
            return Verdict.LENIENT, "the client dropped TCP without a close frame"
        if code in expected.codes:
            return Verdict.PASS, "the client failed the connection with the expected code"
        if code in expected.lenient:
            return Verdict.LENIENT, f"the client closed with {code}, an accepted alternative"
        return Verdict.FAIL, f"the client closed with {code}, expected {expected.describe()}"
    if reaction is Reaction.CLOSE:
        if not closed:
            return Verdict.FAIL, "the client did not answer the close"
        if code in expected.codes:
            return Verdict.PASS, "the client completed the closing handshake"
        if dropped:
            return Verdict.LENIENT, "the client dropped TCP instead of answering the close"
        return Verdict.FAIL, f"the client answered with close {code}"
    if reaction is Reaction.WAIT:
        if closed:
            return Verdict.LENIENT, "the client closed while the frame was incomplete"
        return Verdict.PASS, "the client waited for the rest of the frame"
    if closed:
        return Verdict.FAIL, f"the client closed ({code}) a connection that should stay open"
    if reaction is Reaction.ECHO:
        return Verdict.PASS, "still open (its pong is not visible from the node)"
    return Verdict.PASS, "the client stayed open"


def reaction_record(
    conn: str, expected: Expectation, closed: bool, code: int | None, reason: str, waited: float
) -> dict[str, Any]:
    """One connection's line in the node's reply: observed, verdict, why."""
    verdict, why = judge_reaction(expected, closed, code)
    return {
        "conn": conn,
        "observed": describe_reaction(closed, code, reason, waited),
        "code": code if closed else None,
        "verdict": verdict.value,
        "reason": why,
    }
