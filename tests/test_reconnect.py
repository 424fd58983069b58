"""core.reconnect without a loop: failures classified, and the planner's decisions."""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidMessage, InvalidStatus
from websockets.http11 import Response

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.reconnect import Failure, ReconnectPlanner, classify_error, parse_retry_after


def test_classify_error_kinds() -> None:
    """Connect failures map to stable kinds; a refused handshake keeps its status."""
    assert classify_error(ConnectionRefusedError()).kind == "refused"
    assert classify_error(OSError("Multiple exceptions: Connect call failed, refused")).kind == (
        "refused"
    )
    assert classify_error(socket.gaierror(-2, "Name or service not known")).kind == "dns"
    assert classify_error(ssl.SSLCertVerificationError("bad cert")).kind == "tls"
    assert classify_error(TimeoutError()).kind == "timeout"
    assert classify_error(InvalidMessage("did not receive a valid HTTP response")).kind == (
        "protocol"
    )
    assert classify_error(OSError(113, "No route to host")).kind == "network"
    denied = classify_error(InvalidStatus(Response(401, "Unauthorized", Headers(), b"no\n")))
    assert (denied.kind, denied.detail, denied.status) == (
        "handshake_rejected", "HTTP 401 Unauthorized", 401)
    busy = classify_error(InvalidStatus(
        Response(429, "Too Many Requests", Headers({"Retry-After": "7"}), b"")))
    assert (busy.status, busy.retry_after, busy.refusal) == (429, 7.0, "later")
    proto = InvalidStatus(Response(400, "Bad Request", Headers(),
                                   b"Failed to open a WebSocket connection: invalid subprotocol"))
    assert classify_error(proto).kind == "subprotocol"


def test_retry_after_seconds_and_dates() -> None:
    """Delta-seconds or an HTTP date (relative to the injected wall clock); junk is None."""
    assert parse_retry_after("120") == 120.0
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(30.0)
    assert parse_retry_after(later, now=now + 60) == 0.0  # a date in the past: no wait
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(("failure", "refusal"), [
    (Failure("handshake_rejected", "HTTP 401", status=401), "auth"),
    (Failure("handshake_rejected", "HTTP 403", status=403), "auth"),
    (Failure("closed", "1008 unauthorized: bad signature", code=1008,
             reason="unauthorized: bad signature"), "auth"),
    (Failure("closed", "1008 rate limit exceeded", code=1008, reason="rate limit exceeded"), None),
    (Failure("handshake_rejected", "refused: bad token", auth=True), "auth"),
    (Failure("handshake_rejected", "HTTP 404", status=404), "final"),
    (Failure("handshake_rejected", "HTTP 408", status=408), None),
    (Failure("handshake_rejected", "HTTP 429", status=429), "later"),
    (Failure("handshake_rejected", "HTTP 503", status=503), "later"),
    (Failure("handshake_rejected", "HTTP 500", status=500), None),
    (Failure("closed", "1013 try again later", code=1013, reason="try again later"), None),
])
def test_refusals_are_classified(failure: Failure, refusal: str | None) -> None:
    assert failure.refusal == refusal


def planner(stable_after: float = 5.0, refreshable: bool = False,
            **backoff: float) -> ReconnectPlanner:
    params = {"initial": 1.0, "factor": 2.0, "cap": 30.0, "jitter": 0.0, **backoff}
    plan = ReconnectPlanner(BackoffPolicy(**params), stable_after, refreshable)  # type: ignore[arg-type]
    plan.start()
    return plan


DROPPED = Failure("closed", "1000", code=1000, reason="")


def test_backoff_grows_while_connections_are_short_and_resets_once_stable() -> None:
    """Accept-then-drop: each open lasts 0.1 s, so delays double and the reason says so;
    a connection that stayed open 5 s starts the backoff over."""
    plan = planner()
    delays, now = [], 0.0
    for _ in range(4):
        plan.opened(now)
        now += 0.1
        decision = plan.failed(DROPPED, now)
        assert decision.retry and decision.why == "backoff grows: open only 0.1 s (< 5 s)"
        delays.append(decision.delay)
        now += decision.delay
    assert delays == [1.0, 2.0, 4.0, 8.0]
    plan.opened(now)
    decision = plan.failed(DROPPED, now + 6.0)
    assert (decision.delay, decision.attempt) == (1.0, 1)
    assert decision.why == "backoff reset: open 6.0 s"


def test_max_attempts_fires_against_a_server_that_accepts_then_drops() -> None:
    """Every open resetting the count would retry forever; stable-only resets give up."""
    plan = planner(max_attempts=3)
    outcomes = []
    for i in range(5):
        plan.opened(float(i))
        outcomes.append(plan.failed(DROPPED, i + 0.05))
        if not outcomes[-1].retry:
            break
    assert [d.retry for d in outcomes] == [True, True, True, False]
    assert outcomes[-1].kind == "gave_up" and "gave up after 3 retries" in outcomes[-1].why
    assert planner(stable_after=0).failed(DROPPED, 1.0).retry  # 0: every open resets


def test_refused_credentials_retry_once_with_a_fresh_token_then_stop() -> None:
    """401 with a provider: one immediate retry; refused again: stop with the reason.
    Without a provider: stop at once. An open in between makes the retry available again."""
    denied = Failure("handshake_rejected", "HTTP 401 Unauthorized", status=401)
    plan = planner(refreshable=True)
    first = plan.failed(denied, 0.0)
    assert first.retry and first.delay == 0.0 and "fresh token" in first.why
    second = plan.failed(denied, 0.1)
    assert not second.retry and second.kind == "stopped" and "refused again" in second.why
    plan = planner(refreshable=True)
    assert plan.failed(denied, 0.0).retry
    plan.opened(0.1)  # the fresh token was accepted
    assert plan.failed(denied, 0.2).retry  # a later refusal gets its own fresh token
    none = planner().failed(Failure("handshake_rejected", "HTTP 403 Forbidden", status=403), 0)
    assert not none.retry and "no token provider" in none.why


def test_close_1008_for_auth_needs_a_stable_connection_to_earn_another_refresh() -> None:
    """Token sent as a first message, refused with 1008 right after each open: one fresh
    token, then stop (an open alone does not prove the credentials were accepted)."""
    refused = Failure("closed", "1008 bad token", code=1008, reason="bad token")
    plan = planner(refreshable=True)
    plan.opened(0.0)
    assert plan.failed(refused, 0.05).retry
    plan.opened(0.1)
    assert not plan.failed(refused, 0.15).retry
    plan = planner(refreshable=True)
    plan.opened(0.0)
    assert plan.failed(refused, 0.05).retry
    plan.opened(0.1)
    assert plan.failed(refused, 3600.0).retry  # expired after an hour: refresh again


def test_final_refusals_and_retry_after() -> None:
    """404 stops; 429/503 wait at least Retry-After (never less than the backoff); 408 and
    a 5xx are ordinary failures; the server's own retry replaces the backoff."""
    gone = planner().failed(Failure("handshake_rejected", "HTTP 404 Not Found", status=404), 0)
    assert not gone.retry and gone.kind == "stopped" and "HTTP 404" in gone.why
    busy = Failure("handshake_rejected", "HTTP 429", status=429, retry_after=7.0)
    decision = planner().failed(busy, 0)
    assert decision.delay == 7.0 and decision.why == "HTTP 429 asked to wait (Retry-After 7 s)"
    short = Failure("handshake_rejected", "HTTP 503", status=503, retry_after=0.5)
    assert planner(initial=2.0).failed(short, 0).delay == 2.0
    timeout = Failure("handshake_rejected", "HTTP 408", status=408)
    assert planner().failed(timeout, 0).retry
    assert planner().failed(DROPPED, 0, server_delay=0.15).delay == 0.15
    final = planner().failed(Failure("stopped", "HTTP 204: do not reconnect", final=True), 0)
    assert not final.retry and final.why == "HTTP 204: do not reconnect"
