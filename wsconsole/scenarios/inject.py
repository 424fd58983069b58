"""The scenario's `inject` step: malformed-frame cases from the fault catalogue.

direction "client": the case is sent `count` times, each on a fresh raw connection made by
the probe (faults/probe.py) through the cluster's public URL, a few at a time, and each
reaction is judged against the catalogue's expectation. direction "server": a node (`node`, or
the first running one) writes the case's bytes raw to up to `count` of its own clients
(`Cluster.inject`, faults/inject.py) and judges each client's reaction (its close code, or
staying open); any client reacting against the expectation fails the step.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from wsconsole.errors import WsconsoleError

CONCURRENCY = 4  # raw connections open at once during a storm


class InjectUnavailable(WsconsoleError, RuntimeError):
    """The running harness cannot carry out this inject (a missing feature, said plainly)."""


async def inject_client(
    url: str,
    case_id: str,
    count: int,
    interval: float = 0.0,
    token: str | None = None,
    token_for: Callable[[int], str] | None = None,
) -> str:
    """Send a catalogue case `count` times from raw clients; raises if any reaction is wrong.

    `token_for(n)` gives injection n its own token (its own user, so the per-user connection
    limit never turns a storm into refused handshakes); else `token` is used for all."""
    from wsconsole.faults.catalogue import Direction, get_case
    from wsconsole.faults.probe import ProbeConfig, Target, run_case

    case = get_case(case_id)
    if not case.applies_to(Direction.CLIENT_TO_SERVER):
        raise InjectUnavailable(
            f'case {case_id} is server-to-client only: use direction = "server"'
        )
    config = ProbeConfig(timeout=5.0)
    gate = asyncio.Semaphore(CONCURRENCY)
    verdicts: Counter[str] = Counter()
    observed: list[str] = []

    async def one(index: int) -> None:
        if interval > 0:
            await asyncio.sleep(interval * index)
        target = Target(url, token=token_for(index) if token_for is not None else token)
        async with gate:
            result = await run_case(case, target, config)
        verdicts[result.verdict.value] += 1
        if not result.verdict.ok:
            observed.append(f"{result.verdict.value}: {result.observed} ({result.reason})")

    await asyncio.gather(*(one(i) for i in range(count)))
    tally = ", ".join(f"{n} {verdict}" for verdict, n in sorted(verdicts.items()))
    if observed:
        raise RuntimeError(f"{case_id} x{count}: {tally}; first: {observed[0]}")
    return f"{case_id} x{count} from clients: {tally} (expected {case.expected.describe()})"


async def inject_server(cluster: Any, case_id: str, count: int, node: str | None = None) -> str:
    """Ask a node to write a catalogue case to its clients; InjectUnavailable if it cannot."""
    from wsconsole.faults.catalogue import Direction, get_case

    case = get_case(case_id)
    if not case.applies_to(Direction.SERVER_TO_CLIENT):
        raise InjectUnavailable(
            f'case {case_id} is client-to-server only: use direction = "client"'
        )
    if node is None:
        running = [n.id for n in cluster.nodes.values() if str(n.state) == "running"]
        if not running:
            raise InjectUnavailable("no running node to inject from")
        node = running[0]
    try:
        reply = await cluster.inject(node, case_id, "*", count=count)
    except Exception as exc:
        text = str(exc)
        if "unknown command" in text.lower() or "not supported" in text.lower():
            raise InjectUnavailable(
                f"server-side inject is not available on node {node}: {text}"
            ) from None
        raise
    sent = int(reply.get("sent", 0))
    verdicts: dict[str, int] = reply.get("verdicts") or {}
    tally = ", ".join(f"{n} {verdict}" for verdict, n in sorted(verdicts.items())) or "none"
    failed = [r for r in reply.get("reactions", []) if r.get("verdict") == "fail"]
    if failed:
        first = failed[0]
        raise RuntimeError(
            f"{case_id} from node {node} to {sent} clients: {tally}; first: "
            f"{first.get('observed')} ({first.get('reason')})"
        )
    return (
        f"{case_id} from node {node} to {sent} of its clients: {tally} "
        f"(expected {case.expected.describe()})"
    )
