"""Diagnose a WebSocket endpoint step by step, in words a support engineer can read out.

`diagnose(options)` runs, in order and each bounded by `options.timeout`:

    dns        the host name resolves (addresses listed)
    tcp        a TCP connection opens to one of them (connect time)
    tls        wss:// only: certificate chain verified, expiry, protocol version, cipher
    handshake  the HTTP upgrade: status, response headers, subprotocol
    latency    round trip of N pings on a ReconnectingClient connection
    reconnect  the connection is dropped under the client; it must come back by itself
    audit      the production-safe subset of the security audit (faults.audit, no floods)

Each step gives a `StepResult`: verdict ok / warn / fail / skip, a plain-language summary,
and the technical detail as a JSON-ready dict. A step that cannot run because an earlier one
failed is "skip" with the reason. Nothing here raises for a bad endpoint: unreachable hosts,
refused ports, expired certificates and servers refusing the upgrade are findings.
The client's frames, state transitions, heartbeats and errors are captured (`Capture`) for
the support bundle.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable

from wsconsole.core.client import ReconnectingClient
from wsconsole.diagnostics.model import DiagnoseOptions, Diagnosis, Progress, StepResult, Verdict
from wsconsole.diagnostics.network import check_dns, check_tcp, check_tls
from wsconsole.diagnostics.websocket import (
    check_audit,
    check_handshake,
    check_latency,
    check_reconnect,
)
from wsconsole.faults.probe import TargetError


async def _timed(step_id: str, title: str, timeout: float,
                 make: Callable[[], Awaitable[StepResult]]) -> StepResult:
    """Run one step with an overall bound; an unexpected exception becomes a finding."""
    began = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            result = await make()
    except TimeoutError:
        result = StepResult(step_id, title, Verdict.FAIL,
                            f"This check did not finish within {timeout:g} s.", {})
    except (OSError, ssl.SSLError, ValueError, TargetError) as exc:
        result = StepResult(step_id, title, Verdict.FAIL, f"This check failed: {exc}.",
                            {"error": f"{type(exc).__name__}: {exc}"})
    result.seconds = time.monotonic() - began
    return result


async def diagnose(options: DiagnoseOptions, progress: Progress | None = None) -> Diagnosis:
    """Run every step in order and return the Diagnosis (never raises for a bad endpoint)."""
    options.validate()
    result = Diagnosis(options)
    budget = options.timeout * 4 + 5

    def add(step: StepResult) -> StepResult:
        result.steps.append(step)
        if progress is not None:
            progress(step)
        return step

    def skip(step_id: str, title: str, reason: str) -> None:
        add(StepResult(step_id, title, Verdict.SKIP, f"Not checked: {reason}."))

    dns = add(await _timed("dns", "Name lookup (DNS)", budget, lambda: check_dns(options)))
    addresses = dns.detail.get("addresses", [])
    if dns.verdict is Verdict.FAIL:
        tcp = None
        skip("tcp", "Network connection (TCP)", "the name did not resolve")
    else:
        tcp = add(await _timed("tcp", "Network connection (TCP)", budget * len(addresses[:4]),
                               lambda: check_tcp(options, addresses[:4])))
    reachable = tcp is not None and tcp.verdict is Verdict.OK
    if options.secure:
        if reachable:
            assert tcp is not None
            tls = add(await _timed("tls", "Secure connection (TLS)", budget,
                                   lambda: check_tls(options, tcp.detail["address"])))
            reachable = tls.verdict is not Verdict.FAIL
        else:
            skip("tls", "Secure connection (TLS)", "no network connection")
    if reachable:
        handshake = add(await _timed("handshake", "WebSocket handshake", budget,
                                     lambda: check_handshake(options)))
        upgraded = handshake.verdict is Verdict.OK
    else:
        skip("handshake", "WebSocket handshake", "no network or secure connection")
        upgraded = False
    if upgraded:
        client = ReconnectingClient(options.client_options(), name="diagnose",
                                    observers=[result.capture])
        await client.start()
        try:
            latency = add(await _timed("latency", "Round-trip latency",
                                       budget + options.pings * (options.ping_gap + 1),
                                       lambda: check_latency(options, client)))
            if options.reconnect and latency.verdict is not Verdict.FAIL:
                add(await _timed("reconnect", "Reconnect after a dropped connection",
                                 budget * 3, lambda: check_reconnect(options, client)))
            elif options.reconnect:
                skip("reconnect", "Reconnect after a dropped connection",
                     "the connection did not work")
        finally:
            await client.stop()
        if options.audit:
            add(await _timed("audit", "Security checks (production-safe)", budget * 10,
                             lambda: check_audit(options)))
    else:
        for step_id, title in (("latency", "Round-trip latency"),
                               ("reconnect", "Reconnect after a dropped connection"),
                               ("audit", "Security checks (production-safe)")):
            skip(step_id, title, "the WebSocket handshake did not succeed")
    result.finished = time.time()
    return result
