"""The WebSocket steps of a diagnosis: the upgrade, ping round trips, a reconnect after a
dropped connection, and the production-safe security audit.

The handshake step upgrades once on its own to read the status and headers; latency and
reconnect use one `ReconnectingClient` the driver (checks.py) starts; the audit runs the
probe's safe checks (faults.audit). A bad endpoint is a finding, never an exception.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI

from wsconsole import __version__
from wsconsole.core.client import ReconnectingClient
from wsconsole.core.lifecycle import State, Transition
from wsconsole.diagnostics.model import DiagnoseOptions, StepResult, Verdict
from wsconsole.faults.audit import Status, run_audit
from wsconsole.faults.probe import ProbeConfig

SLOW_RTT = 0.3  # seconds: above this average round trip, users notice


_STATUS_WORDS = {
    400: "The server rejected the upgrade request as malformed (HTTP 400)",
    401: "The server refused the credentials (HTTP 401): the token is missing, wrong or "
         "expired",
    403: "The server refused the connection (HTTP 403): the token or the Origin is not "
         "allowed",
    404: "There is no WebSocket endpoint at this path (HTTP 404): check the URL's path",
    426: "The server wants a different protocol version (HTTP 426 Upgrade Required)",
    429: "The server is rate-limiting new connections (HTTP 429): try again later",
    502: "A proxy in front of the server could not reach it (HTTP 502)",
    503: "The server is unavailable or overloaded (HTTP 503)",
}


async def check_handshake(opts: DiagnoseOptions) -> StepResult:
    """The HTTP upgrade: status 101, response headers, the chosen subprotocol."""
    title = "WebSocket handshake"
    url, headers = opts.handshake_url_and_headers()
    began = time.monotonic()
    try:
        conn = await connect(
            url, additional_headers=headers or None, subprotocols=opts.subprotocols or None,  # type: ignore[arg-type]
            origin=opts.origin,  # type: ignore[arg-type]
            ssl=opts.ssl_context(), open_timeout=opts.timeout, ping_interval=None,
            close_timeout=1.0, compression=None, proxy=None,
            user_agent_header=f"wsconsole/{__version__} (diagnose)")
    except InvalidStatus as exc:
        response = exc.response
        status = response.status_code
        body = bytes(response.body or b"")[:500].decode("utf-8", "replace")
        words = _STATUS_WORDS.get(status)
        if words is None:
            words = (f"The server answered HTTP {status} {response.reason_phrase} instead of "
                     "switching to WebSocket: the URL points at an ordinary web page, or a "
                     "proxy in between does not pass WebSocket upgrades")
        return StepResult("handshake", title, Verdict.FAIL, words + ".", {
            "status": status, "reason": response.reason_phrase,
            "headers": list(response.headers.raw_items()), "body": body})
    except TimeoutError:
        return StepResult("handshake", title, Verdict.FAIL,
                          f"The server accepted the connection but did not answer the upgrade "
                          f"within {opts.timeout:g} s.", {"timeout": opts.timeout})
    except InvalidMessage as exc:
        cause = exc.__cause__
        return StepResult("handshake", title, Verdict.FAIL,
                          "The server did not answer with valid HTTP: this port may serve "
                          "another protocol.", {"error": str(exc), "cause": str(cause or "")})
    except (InvalidHandshake, InvalidURI) as exc:
        return StepResult("handshake", title, Verdict.FAIL,
                          f"The upgrade response broke the WebSocket rules: {exc}.",
                          {"error": str(exc)})
    except (OSError, ssl.SSLError) as exc:
        return StepResult("handshake", title, Verdict.FAIL,
                          f"The connection failed during the upgrade ({exc}).",
                          {"error": str(exc)})
    took = time.monotonic() - began
    response = conn.response
    detail = {"status": response.status_code if response else None,
              "headers": list(response.headers.raw_items()) if response else [],
              "subprotocol": conn.subprotocol, "handshake_ms": round(took * 1000, 1)}
    await conn.close()
    if opts.subprotocols and conn.subprotocol is None:
        return StepResult("handshake", title, Verdict.FAIL,
                          f"The server accepted the connection but none of the subprotocols "
                          f"{', '.join(opts.subprotocols)}.", detail)
    sub = f", subprotocol '{conn.subprotocol}'" if conn.subprotocol else ""
    return StepResult("handshake", title, Verdict.OK,
                      f"The server switched to WebSocket (HTTP 101{sub}) in "
                      f"{took * 1000:.0f} ms.", detail)


async def check_latency(opts: DiagnoseOptions, client: ReconnectingClient) -> StepResult:
    """N pings on an open connection; min / median / max round trip."""
    title = "Round-trip latency"
    if await _wait_open(client, opts.timeout) is None:
        return StepResult("latency", title, Verdict.FAIL,
                          "The client could not open a connection to measure latency "
                          f"({client.final_error or 'no detail'}).", {})
    rtts: list[float] = []
    lost = 0
    for n in range(opts.pings):
        try:
            rtts.append(await client.ping())
        except (TimeoutError, OSError, Exception) as exc:  # a closed connection raises too
            lost += 1
            if client.state is not State.OPEN:
                return StepResult("latency", title, Verdict.FAIL,
                                  f"The connection closed during the ping test ({exc}).",
                                  {"rtt_ms": [round(r * 1000, 2) for r in rtts], "lost": lost})
        if n + 1 < opts.pings:
            await asyncio.sleep(opts.ping_gap)
    detail: dict[str, Any] = {"pings": opts.pings, "lost": lost,
                              "rtt_ms": [round(r * 1000, 2) for r in rtts]}
    if not rtts:
        return StepResult("latency", title, Verdict.FAIL,
                          f"None of {opts.pings} pings was answered within {opts.timeout:g} s: "
                          "the server does not answer pings (its heartbeat will not work).",
                          detail)
    med = statistics.median(rtts)
    detail.update(min_ms=round(min(rtts) * 1000, 2), median_ms=round(med * 1000, 2),
                  max_ms=round(max(rtts) * 1000, 2))
    summary = (f"{len(rtts)} of {opts.pings} pings answered; round trip {med * 1000:.0f} ms "
               f"typical, {max(rtts) * 1000:.0f} ms worst.")
    verdict = Verdict.OK
    if lost:
        verdict = Verdict.WARN
        summary += f" {lost} ping(s) went unanswered: the connection is unreliable."
    elif med > SLOW_RTT:
        verdict = Verdict.WARN
        summary += " That is slow: users will notice delays."
    return StepResult("latency", title, verdict, summary, detail)


def _drop_connection(client: ReconnectingClient) -> bool:
    """Cut the client's TCP connection without a close handshake, as a network failure does."""
    conn = getattr(client, "_conn", None)  # the live websockets connection, if any
    transport = getattr(conn, "transport", None)
    if transport is None:
        return False
    transport.abort()
    return True


async def _wait_open(client: ReconnectingClient, timeout: float) -> Transition | None:
    try:
        return await client.wait_state(State.OPEN, timeout)
    except TimeoutError:
        return None


async def check_reconnect(opts: DiagnoseOptions, client: ReconnectingClient) -> StepResult:
    """Drop the connection under the client; it must reconnect by itself, promptly."""
    title = "Reconnect after a dropped connection"
    if client.state is not State.OPEN and await _wait_open(client, opts.timeout) is None:
        return StepResult("reconnect", title, Verdict.SKIP, "No open connection to drop.", {})
    began = time.monotonic()
    start_index = len(client.lifecycle.history)
    if not _drop_connection(client):
        return StepResult("reconnect", title, Verdict.SKIP,
                          "The connection could not be dropped from this side.", {})
    budget = opts.timeout * 2 + client.options.backoff.cap * 2
    try:
        await client.wait_state(State.RECONNECTING, budget)
        reopened = await client.wait_state(State.OPEN, budget)
    except TimeoutError:
        reopened = None
    history = list(client.lifecycle.history)[start_index:]
    states = [t.state.value for t in history]
    errors = [t.error for t in history if t.error]
    detail = {"states": states, "errors": errors, "attempts": max(
        (t.attempt for t in history), default=0)}
    if reopened is None:
        return StepResult("reconnect", title, Verdict.FAIL,
                          "After a dropped connection the client could not get back in"
                          + (f" ({errors[-1]})" if errors else "")
                          + ": reconnecting users will be locked out.", detail)
    took = time.monotonic() - began
    detail["reconnect_ms"] = round(took * 1000, 1)
    attempts = detail["attempts"]
    verdict = Verdict.OK if attempts <= 1 else Verdict.WARN
    summary = (f"After a dropped connection the client was back in {took:.1f} s "
               f"({attempts} attempt{'s' if attempts != 1 else ''}).")
    if verdict is Verdict.WARN:
        summary += " Some attempts were refused: the server may hold on to old sessions."
    return StepResult("reconnect", title, verdict, summary, detail)


async def check_audit(opts: DiagnoseOptions) -> StepResult:
    """The security checks that are safe against production (no floods)."""
    title = "Security checks (production-safe)"
    findings = await run_audit(opts.target(), ProbeConfig(timeout=opts.timeout),
                               safe_only=True)
    ran = [f for f in findings if f.safe_for_production and f.status is not Status.NOT_APPLICABLE]
    failed = [f for f in ran if f.status is Status.FAIL]
    detail = {"findings": [f.as_dict() for f in findings]}
    if not ran:
        return StepResult("audit", title, Verdict.SKIP, "No security check applied.", detail)
    if failed:
        return StepResult("audit", title, Verdict.WARN,
                          f"{len(failed)} of {len(ran)} security checks failed: "
                          + "; ".join(f"{f.title} - {f.detail}" for f in failed) + ".", detail)
    return StepResult("audit", title, Verdict.OK,
                      f"All {len(ran)} production-safe security checks passed.", detail)
