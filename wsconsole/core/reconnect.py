"""Reconnection as policy, not a loop body: failures in, decisions out. No I/O here.

`Failure` is what every driver (WebSocket, Socket.IO, SSE) hands its reconnect loop;
`classify_error` turns a `websockets` connect/handshake exception into one.
`ReconnectPlanner` turns each failure into a `Decision` (retry after a delay, or stop),
each with its reason in plain words, which the driver puts on the RECONNECTING or CLOSED
transition so the timeline and the CLI show why:

- the backoff starts over only after a connection stayed open `stable_after` seconds, so
  a server that accepts and then drops is re-dialled with growing delays and
  `max_attempts` still applies;
- refused credentials (HTTP 401/403 at the handshake, close 1008 for auth, a Socket.IO
  CONNECT_ERROR about auth) get one immediate retry when the token provider can hand out
  a fresh token, else the client stops: the same token would be refused again;
- another 4xx but 408 and 429 stops (retrying the same request cannot succeed);
- 429 and 503 wait at least the server's Retry-After;
- a delay the server chose for every reconnect (SSE's `retry`) replaces the backoff delay.
"""

from __future__ import annotations

import email.utils
import re
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC

from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    NegotiationError,
)

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.events import describe_close

# words that make a close 1008 (or a Socket.IO refusal) a refusal of the credentials
AUTH_WORDS = re.compile(
    r"auth|token|credential|unauthori[sz]|forbidden|login|password|jwt|signature|permission",
    re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed or a connection ended.

    kind: a stable word ("refused", "dns", "tls", "timeout", "handshake_rejected",
    "subprotocol", "protocol", "protocol_mismatch", "network", "closed", "liveness",
    "auth", "stopped"); detail: plain words; code / reason: the close frame received (or
    why a stream ended); status: the HTTP status of a refused handshake; retry_after: the
    seconds its Retry-After asked for; auth: the target saw a refusal of the credentials
    in its own protocol (a Socket.IO CONNECT_ERROR); final: the server said "do not
    reconnect" (SSE's 204).
    """

    kind: str
    detail: str
    code: int | None = None
    reason: str | None = None
    status: int | None = None
    retry_after: float | None = None
    auth: bool = False
    final: bool = False

    @property
    def refusal(self) -> str | None:
        """How the server refused: "auth" (the credentials), "final" (a 4xx but 408/429:
        the same request will be refused again), "later" (429/503: come back later), or
        None for an ordinary failure (backed off and retried)."""
        if self.auth or self.status in (401, 403):
            return "auth"
        if self.code == 1008 and AUTH_WORDS.search(self.reason or ""):
            return "auth"
        if self.status in (429, 503):
            return "later"
        if self.status is not None and 400 <= self.status < 500 and self.status != 408:
            return "final"
        return None

    @property
    def error(self) -> str | None:
        """The transition's `error` text: None when a close code or reason says it all."""
        if self.code is not None or self.reason is not None:
            return None
        return f"{self.kind}: {self.detail}"

    @property
    def summary(self) -> str:
        """One line naming the failure, for messages that end a session."""
        return f"{self.kind}: {self.detail}"


def classify_error(exc: BaseException) -> Failure:
    """Map a `websockets` connect/handshake exception to a stable Failure."""
    if isinstance(exc, InvalidStatus):
        response = exc.response
        status = response.status_code
        body = bytes(response.body or b"").decode("utf-8", "replace").strip()
        if "subprotocol" in body.lower():
            return Failure("subprotocol", f"HTTP {status}: {body[:200]}", status=status)
        return Failure("handshake_rejected", f"HTTP {status} {response.reason_phrase}",
                       status=status,
                       retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if isinstance(exc, NegotiationError) and "subprotocol" in str(exc).lower():
        return Failure("subprotocol", str(exc))
    if isinstance(exc, InvalidMessage):
        cause = exc.__cause__
        return Failure("protocol", f"{exc}" + (f" ({cause})" if cause else ""))
    if isinstance(exc, InvalidHandshake):
        if "subprotocol" in str(exc).lower():
            return Failure("subprotocol", str(exc))
        return Failure("protocol", str(exc))
    if isinstance(exc, ssl.SSLCertVerificationError):  # expired, wrong host, unknown issuer
        return Failure("tls", f"certificate refused: {getattr(exc, 'verify_message', None) or exc}")
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return Failure("tls", str(exc))
    if isinstance(exc, socket.gaierror):
        return Failure("dns", f"cannot resolve host: {exc.strerror or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return Failure("refused", "connection refused")
    if isinstance(exc, TimeoutError):
        return Failure("timeout", "timed out opening the connection")
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        if rcvd is None:
            return Failure("closed", "connection lost without a close frame")
        return Failure("closed", describe_close(rcvd.code, rcvd.reason), code=rcvd.code,
                       reason=rcvd.reason)
    if isinstance(exc, OSError):
        # multiple addresses each refused give a generic OSError with this text
        if "refused" in str(exc).lower():
            return Failure("refused", "connection refused")
        return Failure("network", exc.strerror or str(exc))
    return Failure("protocol", f"{type(exc).__name__}: {exc}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date, RFC 9110
    10.2.3); None when absent or unreadable. `now` is the wall clock (injectable)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class Decision:
    """After a failure: retry after `delay` s as attempt `attempt`, or stop (`retry` False,
    `kind` the error kind to report: "gave_up" or "stopped"); `why` says it in plain words."""

    retry: bool
    why: str
    delay: float = 0.0
    attempt: int = 0
    kind: str = ""


class ReconnectPlanner:
    """Decides after each failure whether and when to reconnect (see the module docstring).

    Fed with `opened(at)` when a connection opens and `failed(failure, now)` when an
    attempt fails or a connection ends; `refreshable` says the token provider can give a
    fresh token. Times are monotonic seconds, so tests drive it without a clock or a loop.
    """

    def __init__(self, policy: BackoffPolicy, stable_after: float = 5.0,
                 refreshable: bool = False) -> None:
        self.policy = policy
        self.stable_after = stable_after
        self.refreshable = refreshable
        self._opened_at: float | None = None
        self._refreshed: str | None = None  # where the fresh-token retry went: handshake/close

    def start(self) -> None:
        """A fresh start: no attempt counted, the fresh-token retry available again."""
        self.policy.reset()
        self._opened_at = None
        self._refreshed = None

    def opened(self, at: float) -> None:
        """A connection opened at `at`; it resets the backoff once it lasts `stable_after`.
        An open answers a fresh token sent at the handshake: that retry is available again."""
        self._opened_at = at
        if self._refreshed == "handshake":
            self._refreshed = None

    def failed(self, failure: Failure, now: float,
               server_delay: float | None = None) -> Decision:
        """The decision after `failure` at `now`; `server_delay` is a delay the server chose
        for every reconnect (SSE `retry`), used instead of the backoff delay."""
        lasted = self._lasted(now)
        if failure.final:
            return Decision(False, failure.detail, kind="stopped")
        refusal = failure.refusal
        if refusal == "auth":
            return self._refused_credentials(failure)
        if refusal == "final":
            return Decision(False, f"{failure.detail}: the server refuses this request, "
                                   "retrying it would not change that", kind="stopped")
        delay = self.policy.next_delay()
        attempt = self.policy.attempt
        if delay is None:
            return Decision(False, f"gave up after {attempt} retries; last failure: "
                                   f"{failure.summary}", kind="gave_up")
        chosen = None
        if server_delay is not None:
            delay, chosen = server_delay, "the server's retry delay"
        if refusal == "later" and failure.retry_after is not None and failure.retry_after > delay:
            delay = failure.retry_after
            chosen = f"HTTP {failure.status} asked to wait (Retry-After {failure.retry_after:g} s)"
        why = "; ".join(part for part in (chosen, lasted) if part) or "backoff"
        return Decision(True, why, delay, attempt)

    def _lasted(self, now: float) -> str:
        """Start the backoff over after a stable connection; say how long it lasted."""
        if self._opened_at is None:
            return ""
        lasted, self._opened_at = now - self._opened_at, None
        if lasted >= self.stable_after:
            self.policy.reset()
            self._refreshed = None
            return f"backoff reset: open {lasted:.1f} s"
        return f"backoff grows: open only {lasted:.1f} s (< {self.stable_after:g} s)"

    def _refused_credentials(self, failure: Failure) -> Decision:
        where = "close" if failure.code is not None else "handshake"
        if not self.refreshable:
            what = ("refused access (the credentials, or a policy such as Origin)"
                    if failure.status == 403 else "refused the credentials")
            return Decision(False, f"{failure.detail}: the server {what} and no token "
                                   "provider can give a fresh token", kind="stopped")
        if self._refreshed is not None:
            return Decision(False, f"{failure.detail}: refused again with a fresh token from "
                                   "the token provider", kind="stopped")
        self._refreshed = where
        return Decision(True, f"{failure.detail}: credentials refused, retrying once now "
                              "with a fresh token", 0.0, self.policy.attempt)
