"""The probe: run catalogue cases against an endpoint, one fresh connection each, and judge.

This module is the probe's public face (`run_case`, `run_cases`, `preflight`,
`speaks_harness`, `summarize`, and the types callers need). The work is split by job:
`target.py` (what to connect to, the limits), `wire.py` (the raw client: TCP/TLS, the
opening handshake, frames), `observe.py` (frame cases: what the peer did, the verdict) and
`handshake.py` (handshake cases: the HTTP answer, the verdict).

Which cases apply: server-to-client cases are `n/a` from a client; harness-protocol cases
run only on a target that speaks the harness protocol (`speaks_harness` asks it with one
rpc, or the caller says so) and are `n/a` elsewhere; compression cases are `n/a` when the
server does not accept permessage-deflate. A run passes when every case that applies passed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from wsconsole.core.envelope import EnvelopeError, encode, parse_server
from wsconsole.core.frames import Opcode
from wsconsole.faults.case import Case, Direction, Kind, Layer
from wsconsole.faults.handshake import HandshakeObservation, judge_handshake, observe_handshake
from wsconsole.faults.observe import Observation, Verdict, judge, observe
from wsconsole.faults.target import ProbeConfig, Target, TargetError
from wsconsole.faults.wire import HandshakeError, open_connection

DETECT_ID = "wsconsole-probe-detect"
NOT_HARNESS = ("the target does not speak the harness protocol (no envelope answered an rpc);"
               " --harness runs these cases anyway")


@dataclass
class CaseResult:
    """One case's outcome, ready for --json, JUnit and the GUI's history."""

    case: Case
    verdict: Verdict
    observed: str
    reason: str
    duration: float
    observation: Observation | HandshakeObservation | None = None  # None: the case did not run

    def as_dict(self) -> dict[str, object]:
        """The --json record of the case."""
        return {
            "id": self.case.id,
            "group": self.case.group.value,
            "rfc": self.case.reference,
            "expected": self.case.expected.describe(),
            "observed": self.observed,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "duration_ms": round(self.duration * 1000, 1),
        }

    @property
    def close_code(self) -> int | None:
        """The peer's close code, when a frame case saw one."""
        return self.observation.close_code if isinstance(self.observation, Observation) else None


def _skipped(case: Case, reason: str) -> CaseResult:
    return CaseResult(case, Verdict.NOT_APPLICABLE, "not run", reason, 0.0)


async def run_case(case: Case, target: Target, config: ProbeConfig | None = None, *,
                   harness: bool | None = None) -> CaseResult:
    """Run one case on a fresh connection and judge it; never raises for a peer's behaviour.

    `harness`: whether the target speaks the harness protocol (None: ask it, when the case
    is a harness-protocol case).
    """
    config = config or ProbeConfig()
    started = time.monotonic()
    if not case.applies_to(Direction.CLIENT_TO_SERVER):
        return _skipped(case, "a server-to-client case: inject it from a harness node")
    if case.layer is Layer.HARNESS:
        if harness is None:
            harness = await speaks_harness(target, config)
        if not harness:
            return _skipped(case, NOT_HARNESS)
    if case.kind is Kind.HANDSHAKE:
        try:
            answer = await observe_handshake(case, target, config)
        except HandshakeError as exc:
            return CaseResult(case, Verdict.ERROR, f"could not connect: {exc.detail}",
                              "could not open a connection", time.monotonic() - started)
        verdict, reason = judge_handshake(case.expected, answer)
        return CaseResult(case, verdict, answer.describe(), reason,
                          time.monotonic() - started, answer)
    try:
        conn = await open_connection(target, config, case.extension)
    except HandshakeError as exc:
        return CaseResult(case, Verdict.ERROR, f"handshake failed: {exc.detail}",
                          "could not open a connection", time.monotonic() - started)
    try:
        if case.extension is not None and conn.extensions is None:
            return _skipped(case, f"the server did not accept {case.extension}")
        seen = await observe(conn, case, config)
    finally:
        await conn.close()
    verdict, reason = judge(case.expected, seen)
    return CaseResult(case, verdict, seen.describe(), reason, time.monotonic() - started, seen)


async def run_cases(
    cases: Iterable[Case],
    target: Target,
    config: ProbeConfig | None = None,
    on_result: Callable[[CaseResult], Awaitable[None] | None] | None = None,
    *,
    harness: bool | None = None,
) -> list[CaseResult]:
    """Run cases one after another (one connection each); `on_result` sees each as it ends.

    Harness-protocol cases run when `harness` is True, or when it is None and the target
    answers the harness protocol (asked once, before the first such case).
    """
    config = config or ProbeConfig()
    results = []
    for case in cases:
        if case.layer is Layer.HARNESS and harness is None:
            harness = await speaks_harness(target, config)
        result = await run_case(case, target, config, harness=harness)
        results.append(result)
        if on_result is not None:
            maybe = on_result(result)
            if asyncio.iscoroutine(maybe):
                await maybe
    return results


async def speaks_harness(target: Target, config: ProbeConfig | None = None) -> bool:
    """True if the target answers an rpc with a harness-protocol envelope (DESIGN.md).

    The rpc names a method no node has, so a node answers `error unknown_method` (or asks
    for authentication); an echo server sends the rpc back, which is no server envelope.
    """
    config = config or ProbeConfig()
    try:
        conn = await open_connection(target, config)
    except HandshakeError:
        return False
    try:
        conn.send_frame(Opcode.TEXT,
                        encode("rpc", id=DETECT_ID, method="wsconsole.probe.detect").encode())
        deadline = conn.loop_time + config.timeout
        while not isinstance(frame := await conn.next_frame(deadline), str):
            if frame.opcode == Opcode.PING:
                conn.send_frame(Opcode.PONG, frame.payload)
            elif frame.opcode == Opcode.CLOSE:
                return False
            elif frame.opcode == Opcode.TEXT:
                try:
                    parse_server(frame.payload)
                except EnvelopeError:
                    return False
                return True
        return False
    finally:
        await conn.close()


async def preflight(target: Target, config: ProbeConfig | None = None) -> str | None:
    """Check that the target speaks WebSocket at all: None if it does, else why not."""
    config = config or ProbeConfig()
    try:
        conn = await open_connection(target, config)
    except HandshakeError as exc:
        return exc.detail
    await conn.close()
    return None


def summarize(results: Iterable[CaseResult]) -> dict[str, int]:
    """Counts per outcome, the --json summary line's fields."""
    counts = {"total": 0, "passed": 0, "lenient": 0, "failed": 0, "errors": 0, "skipped": 0}
    key = {
        Verdict.PASS: "passed",
        Verdict.LENIENT: "lenient",
        Verdict.FAIL: "failed",
        Verdict.ERROR: "errors",
        Verdict.NOT_APPLICABLE: "skipped",
    }
    for result in results:
        counts["total"] += 1
        counts[key[result.verdict]] += 1
    return counts


__all__ = [
    "CaseResult", "HandshakeError", "ProbeConfig", "Target", "TargetError", "Verdict",
    "preflight", "run_case", "run_cases", "speaks_harness", "summarize",
]
