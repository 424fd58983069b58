"""Scenario assertions: a tiny expression language over the swarm's summary figures.

An assertion is one line of text, checked when the file is loaded and evaluated against the
swarm summary (accounting.Accounting.summary) when the run ends:

    lost == 0                      any numeric summary figure, compared with a number
    p99_latency_ms < 500           operators: == != < <= > >=
    errors[broker_unavailable] <= 50
    order_kept                     no message arrived out of order
    reconnected_within 5           every client that dropped was back within 5 s
                                   (also "5s" or "800ms"), and none is still down
    dead_dropped_within 3s         the server dropped every client that stopped answering
                                   its pings ([swarm] pongs_share, or a `pongs` step) within
                                   3 s of going silent, and kept none longer

Evaluation is pure: a metric without data (no delivery, so no latency) fails with "no data"
rather than passing by default.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wsconsole.errors import WsconsoleError

# Summary figures an assertion may compare (see Accounting.summary).
METRICS: frozenset[str] = frozenset(
    {
        "clients",
        "connected",
        "never_connected",
        "disconnected_at_end",
        "subscriptions",
        "sent",
        "acknowledged",
        "unacknowledged",
        "expected",
        "delivered",
        "lost",
        "announced_lost",
        "duplicated",
        "out_of_order",
        "seq_mismatch",
        "seq_restarts",
        "reset_notices",
        "retried",
        "p50_latency_ms",
        "p95_latency_ms",
        "p99_latency_ms",
        "max_latency_ms",
        "reconnects",
        "reconnect_p50_ms",
        "reconnect_p90_ms",
        "reconnect_p99_ms",
        "reconnect_max_ms",
        "reconnect_spread_ms",
        "connect_max_ms",
        "errors_total",
        # a stack's swarm (swarm/appaccounting.py)
        "unsent",
        "undelivered",
        "missed",
        "foreign",
        "recovered_sessions",
        # replay scenarios (scenarios/replay.py)
        "received",
        "matched",
        "diverged",
        "first_divergence",
        "reply_p50_ms",
        "reply_max_ms",
        "reply_timeouts",
        # the heartbeat lab (swarm/fleet.py): clients whose pongs were withheld
        "pongs_off_clients",
        "dead_drops",
        "dead_drop_p50_ms",
        "dead_drop_max_ms",
        "dead_kept_max_ms",
    }
)

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_COMPARE = re.compile(
    rf"^\s*(?P<metric>[a-z_][a-z0-9_]*)(?:\[(?P<kind>[A-Za-z0-9_.:\-]+)\])?"
    rf"\s*(?P<op>==|!=|<=|>=|<|>)\s*(?P<value>{_NUMBER})\s*$"
)
_WITHIN = re.compile(rf"^\s*(?P<what>reconnected|dead_dropped)_within\s+(?P<value>{_NUMBER})"
                     rf"\s*(?P<unit>ms|s)?\s*$")
_ORDER = re.compile(r"^\s*order_kept\s*$")


class AssertionSyntaxError(WsconsoleError, ValueError):
    """An assertion text that is not in the language above."""


@dataclass(frozen=True, slots=True)
class Assertion:
    """One parsed assertion; `kind` is "compare", "order_kept", "reconnected_within" or
    "dead_dropped_within"."""

    expect: str
    kind: str
    metric: str | None = None
    error_kind: str | None = None
    op: str | None = None
    value: float | None = None
    name: str | None = None
    line: int | None = None

    @property
    def label(self) -> str:
        """The name given in the file, else the expression itself."""
        return self.name or self.expect

    def evaluate(self, summary: Mapping[str, Any]) -> AssertionResult:
        """Check this assertion against a swarm summary."""
        if self.kind == "order_kept":
            measured = summary.get("out_of_order")
            passed = measured == 0
            return AssertionResult(self, measured, passed, f"{measured} out of order")
        if self.kind == "dead_dropped_within":
            return self._dead_dropped(summary)
        if self.kind == "reconnected_within":
            assert self.value is not None
            down = int(summary.get("disconnected_at_end") or 0)
            never = int(summary.get("never_connected") or 0)
            worst_ms = summary.get("reconnect_max_ms") or 0.0
            worst = worst_ms / 1000.0
            if down or never:
                detail = f"{down} still disconnected, {never} never connected"
                return AssertionResult(self, None, False, detail)
            detail = f"slowest reconnect {worst:.3f} s of {summary.get('reconnects', 0)}"
            return AssertionResult(self, round(worst, 3), worst <= self.value, detail)
        assert self.metric is not None and self.op is not None
        if self.metric == "errors" and self.error_kind is not None:
            measured = (summary.get("errors") or {}).get(self.error_kind, 0)
        else:
            measured = summary.get(self.metric)
        if measured is None:
            return AssertionResult(self, None, False, "no data")
        passed = OPERATORS[self.op](measured, self.value)
        return AssertionResult(self, measured, bool(passed), f"measured {measured}")


    def _dead_dropped(self, summary: Mapping[str, Any]) -> AssertionResult:
        assert self.value is not None
        drops = int(summary.get("dead_drops") or 0)
        kept_ms = summary.get("dead_kept_max_ms")
        if kept_ms is None:
            return AssertionResult(self, None, False, "no client stopped answering pings "
                                   "(set [swarm] pongs_share or a pongs step)")
        kept = kept_ms / 1000.0
        detail = f"{drops} drop(s); the longest a silent client stayed connected: {kept:.3f} s"
        return AssertionResult(self, round(kept, 3), drops > 0 and kept <= self.value, detail)


@dataclass(frozen=True, slots=True)
class AssertionResult:
    """An assertion with the value measured and the verdict."""

    assertion: Assertion
    measured: Any
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "name": self.assertion.label,
            "expect": self.assertion.expect,
            "measured": self.measured,
            "passed": self.passed,
            "detail": self.detail,
        }


def parse_assertion(text: str, name: str | None = None, line: int | None = None) -> Assertion:
    """Parse one assertion expression; raises AssertionSyntaxError saying what is allowed."""
    if not isinstance(text, str) or not text.strip():
        raise AssertionSyntaxError("an assertion needs a non-empty expect string")
    if _ORDER.match(text):
        return Assertion(expect=text.strip(), kind="order_kept", name=name, line=line)
    within = _WITHIN.match(text)
    if within:
        value = float(within["value"])
        if within["unit"] == "ms":
            value /= 1000.0
        kind = f"{within['what']}_within"
        if value <= 0 or not math.isfinite(value):
            raise AssertionSyntaxError(f"{kind} needs a positive time")
        return Assertion(expect=text.strip(), kind=kind, value=value, name=name, line=line)
    match = _COMPARE.match(text)
    if not match:
        raise AssertionSyntaxError(
            f"cannot read {text.strip()!r}: expected 'METRIC OP NUMBER', 'errors[KIND] OP NUMBER',"
            " 'order_kept', 'reconnected_within SECONDS' or 'dead_dropped_within SECONDS'"
        )
    metric, kind = match["metric"], match["kind"]
    if kind is not None and metric != "errors":
        raise AssertionSyntaxError(f"only errors[...] takes a kind, not {metric}[...]")
    if kind is None and metric not in METRICS:
        known = ", ".join(sorted(METRICS))
        raise AssertionSyntaxError(f"unknown metric {metric!r}; known: {known}, errors[KIND]")
    value = float(match["value"])
    if not math.isfinite(value):
        raise AssertionSyntaxError("the number must be finite")
    return Assertion(
        expect=text.strip(),
        kind="compare",
        metric=metric,
        error_kind=kind,
        op=match["op"],
        value=value,
        name=name,
        line=line,
    )
