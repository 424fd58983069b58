"""Carrying out a scenario's steps on the live cluster and swarm.

`StepPerformer.perform(step)` does one timed step (kill, pause, drain, add a node, break
or bring back the broker, a network fault, an inject, the heartbeat lab on the swarm, a
wait) and returns the line the report shows for it; StepError says why it could not be
done. The runner (scenarios/runner.py) schedules the steps, bounds each by `step_timeout`
and records the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from wsconsole.core.metrics import percentile
from wsconsole.errors import WsconsoleError
from wsconsole.scenarios.model import Scenario, Step

STEP_TIMEOUT = 30.0


class StepError(WsconsoleError, RuntimeError):
    """A step could not be carried out (unknown node, feature not available, ...)."""


def step_timeout(step: Step, scale: float) -> float:
    """How long `step` may take: a wait its own time (scaled) plus 5 s, any other 30 s."""
    if step.action != "wait":
        return STEP_TIMEOUT
    if "seconds" in step.params:
        return float(step.params["seconds"]) * scale + 5.0
    return float(step.params.get("timeout", STEP_TIMEOUT)) * scale + 5.0


class StepPerformer:
    """Does the steps of one run on its cluster (None against a URL) and swarm."""

    def __init__(self, scenario: Scenario, scale: float, cluster: Any, swarm: Any,
                 stopped: asyncio.Event, token: str | None, secret: str | None) -> None:
        self.scenario = scenario
        self.scale = scale
        self.cluster = cluster
        self.swarm = swarm
        self.stopped = stopped  # the run was stopped: a wait ends early
        self.token = token
        self.secret = secret
        self._injections = 0

    async def perform(self, step: Step) -> str:
        """Carry out `step`; the line saying what it did, or StepError saying why not."""
        action, params = step.action, step.params
        cluster = self.cluster
        if action == "wait":
            return await self._wait(params)
        if action == "inject":
            return await self._inject(params)
        if action in ("pongs", "ping", "pong"):
            return await self._heartbeat(action, params)
        if cluster is None:
            raise StepError(f"{action} needs a cluster")
        if action in ("kill", "pause", "resume", "restart"):
            await getattr(cluster, action)(params["node"])
            return f"node {params['node']} {action}"
        if action == "drain":
            await cluster.drain(params["node"])
            return f"node {params['node']} drained"
        if action == "add":
            node_id = await cluster.add()
            return f"node {node_id} added"
        if action == "broker_kill":
            await cluster.broker_kill()
            return "broker killed"
        if action == "broker_restart":
            fresh = bool(params.get("fresh", False))
            await cluster.broker_restart(fresh=fresh)
            return "broker restarted without its state" if fresh else "broker restarted"
        if action == "net":
            extra = dict(params.get("params", {}))
            reply = await cluster.net_fault(params["target"], params["kind"], **extra)
            return f"{params['kind']} on {params['target']} {_brief(reply)}".strip()
        if action == "net_clear":
            reply = await cluster.net_clear(params["target"], params.get("kind"))
            return f"cleared {params.get('kind') or 'all faults'} on {params['target']}"
        raise StepError(f"unknown action {action!r}")

    async def _heartbeat(self, action: str, params: dict[str, Any]) -> str:
        """The heartbeat lab on the swarm: a share runs a pong policy, sends pings (every
        one must get its pong, RFC 6455 5.5.2) or unsolicited pongs (to be ignored: the
        assertions on reconnects say whether they were)."""
        swarm = self.swarm
        if swarm is None:
            raise StepError(f"{action} needs the swarm")
        share = params["share"]
        payload = params.get("payload", "").encode()
        if action == "pongs":
            chosen = swarm.set_pongs(share, params["policy"])
            return f"{chosen} client(s): {params['policy'].describe()}"
        if action == "pong":
            sent, offline = await swarm.pong(share, payload)
            return f"{sent} unsolicited pong(s) sent ({offline} client(s) offline)"
        clients, offline, rtts = await swarm.ping(share, params["count"], payload or None)
        answered = sorted(r for r in rtts if r is not None)
        said = (f"{len(rtts)} ping(s) from {clients} client(s) ({offline} offline), "
                f"{len(answered)} answered")
        if answered:
            median = percentile(answered, 50) or 0.0
            said += (f", round trips p50 {median * 1000:.1f} ms, "
                     f"max {answered[-1] * 1000:.1f} ms")
        if len(answered) < len(rtts):
            raise StepError(f"{said}: {len(rtts) - len(answered)} got no pong in time")
        return said

    async def _wait(self, params: Any) -> str:
        if "seconds" in params:
            seconds = float(params["seconds"]) * self.scale
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self.stopped.wait()
            return f"waited {seconds:.2f} s"
        limit = float(params.get("timeout", STEP_TIMEOUT)) * self.scale
        began = time.monotonic()
        while True:
            acc = self.swarm.accounting if self.swarm is not None else None
            if acc is not None and acc.connected == len(acc.clients) and acc.clients:
                return f"all {len(acc.clients)} clients connected"
            if time.monotonic() - began > limit:
                connected = acc.connected if acc is not None else 0
                total = len(acc.clients) if acc is not None else 0
                raise StepError(
                    f"only {connected} of {total} clients connected after {limit:.1f} s"
                )
            await asyncio.sleep(0.05)

    async def _inject(self, params: Any) -> str:
        from wsconsole.scenarios.inject import inject_client, inject_server

        case, count = params["case"], int(params.get("count", 1))
        interval = float(params.get("interval", 0.0)) * self.scale
        if params.get("direction", "client") == "server":
            if self.cluster is None:
                raise StepError("a server-side inject needs the cluster")
            return await inject_server(self.cluster, case, count, params.get("node"))
        url = self.cluster.app_url if self.cluster is not None else self.scenario.url
        assert url is not None
        self._injections += 1
        prefix = f"scenario-injector-{self._injections}"
        token_for: Callable[[int], str] | None = None
        if self.cluster is not None and self.scenario.stack is None:
            cluster = self.cluster
            token_for = lambda n: cluster.token(f"{prefix}-{n}")  # noqa: E731
        elif self.secret is not None:
            from wsconsole.harness.auth import issue_token

            secret = self.secret
            token_for = lambda n: issue_token(secret, f"{prefix}-{n}")  # noqa: E731
        return await inject_client(url, case, count, interval, self.token, token_for)


def _brief(reply: Any) -> str:
    if isinstance(reply, dict):
        fields = {k: v for k, v in reply.items() if k not in ("type", "rid", "ok")}
        return str(fields) if fields else ""
    return ""
