"""Running a scenario: start the cluster, put the swarm on it, break it on schedule, judge.

`ScenarioRunner(scenario, scale=..., on_event=...)` is what the CLI and the GUI's Scenarios
panel drive: `await run()` returns a `ScenarioResult`; `stop()` ends it early (the swarm stops,
its summary is still judged, the cluster is stopped); every step of the way is reported to
`on_event` as a dict (the same shapes `wsconsole scenario run --json` prints):

- {"event": "phase", "phase": "cluster"|"swarm"|"judging"|"done", ...}
- {"event": "step", "t", "action", "label", "ok", "detail", "duration"}
- {"event": "stats", ... the swarm's live snapshot ..., "assertions": [{name, state}]}
- {"event": "cluster_event", "t", "source": "node"|"broker"|..., ... the event's fields}
- {"event": "cluster_stats", "t", "nodes": {id: connections}} (twice a second)
- {"event": "summary", ... the swarm's final summary ...}
- {"event": "assertion", "name", "expect", "measured", "passed", "detail"}
- {"event": "result", "passed", ...}

Times `t` are seconds since the swarm started (the scenario's clock, as in `at = ...`).
`scale` multiplies every scheduled time (step `at`, swarm duration/ramp/settle, wait
seconds) so tests can shrink a scenario; heartbeat and backoff timings and assertion
thresholds are not scaled (they describe the system, not the schedule).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wsconsole.harness.stats import ClusterSample
from wsconsole.scenarios.assertions import AssertionResult
from wsconsole.scenarios.model import Scenario, Step
from wsconsole.scenarios.steps import StepPerformer, step_timeout

log = logging.getLogger(__name__)

SCALE_ENV = "WSCONSOLE_SCENARIO_SCALE"
SCENARIO_JWT_ENV = "WSCONSOLE_SCENARIO_JWT"  # the JWT secret, to a split swarm's workers

EventSink = Callable[[dict[str, Any]], None]


def scale_from_env(default: float = 1.0) -> float:
    """The time scale from WSCONSOLE_SCENARIO_SCALE (a positive number), else `default`."""
    raw = os.environ.get(SCALE_ENV)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV} must be a positive number, not {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{SCALE_ENV} must be a positive number, not {raw!r}")
    return value


@dataclass
class StepRecord:
    """What happened when a step ran: when (scenario seconds), whether it worked, why not."""

    step: Step
    t: float
    duration: float
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "t": round(self.t, 3),
            "at": self.step.at,
            "action": self.step.action,
            "label": self.step.describe(),
            "ok": self.ok,
            "detail": self.detail,
            "duration": round(self.duration, 3),
            "line": self.step.line,
        }


@dataclass
class ScenarioResult:
    """Everything a report needs: verdicts, measurements, the timeline and the series."""

    scenario: Scenario
    scale: float
    passed: bool = False
    error: str | None = None
    assertions: list[AssertionResult] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    series: list[dict[str, Any]] = field(default_factory=list)  # swarm stats, one per second
    cluster_series: list[dict[str, Any]] = field(default_factory=list)  # {t, nodes: {id: conns}}
    events: list[dict[str, Any]] = field(default_factory=list)  # cluster events with t
    reconnect_times: list[float] = field(default_factory=list)  # seconds, each reconnect
    conversation: list[Any] = field(default_factory=list)  # a replay's ConversationRows
    started_wall: float = 0.0
    elapsed: float = 0.0
    stopped: bool = False

    @property
    def failed_steps(self) -> list[StepRecord]:
        """Steps that could not be carried out."""
        return [s for s in self.steps if not s.ok]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready verdict and figures (without the series)."""
        return {
            "name": self.scenario.name,
            "passed": self.passed,
            "error": self.error,
            "stopped": self.stopped,
            "scale": self.scale,
            "elapsed": round(self.elapsed, 3),
            "assertions": [a.as_dict() for a in self.assertions],
            "not_measured": len(self.scenario.assertions) - len(self.assertions),
            "steps": [s.as_dict() for s in self.steps],
            "summary": self.summary,
        }


def _cluster_config(scenario: Scenario) -> Any:
    from wsconsole.harness.cluster import ClusterConfig, Limits

    if scenario.stack is not None:
        return ClusterConfig.for_stack(scenario.stack)
    spec = scenario.cluster
    assert spec is not None
    overrides: dict[str, Any] = {
        "nodes": spec.nodes,
        "redis_url": spec.broker,
        "sticky": spec.sticky,
        "limits": Limits(**spec.limits),
        "tls": spec.tls,
    }
    if spec.ping_interval is not None:
        overrides["ping_interval"] = spec.ping_interval
    if spec.ping_timeout is not None:
        overrides["ping_timeout"] = spec.ping_timeout
    if spec.timings == "demo":
        return ClusterConfig.demo(**overrides)
    return ClusterConfig(**overrides)


def _swarm_config(scenario: Scenario, scale: float, url: str, token_factory: Any) -> Any:
    from wsconsole.core.backoff import BackoffPolicy
    from wsconsole.swarm.config import SwarmConfig

    spec = scenario.swarm
    assert spec is not None, "a swarm scenario"
    b = spec.backoff
    return SwarmConfig(
        url=url,
        clients=spec.clients,
        rooms=spec.rooms,
        rate=spec.rate,
        duration=spec.duration * scale,
        ramp=spec.ramp * scale,
        settle=spec.settle * scale,
        token_user=spec.token_user,
        token_factory=token_factory,
        payload=spec.payload,
        distinct_addresses=spec.distinct_addresses,
        backoff=BackoffPolicy(
            initial=b.initial,
            factor=b.factor,
            cap=b.cap,
            jitter=b.jitter,
            max_attempts=b.max_attempts,
        ),
        ping_interval=spec.ping_interval,
        ping_timeout=spec.ping_timeout,
        pongs_share=spec.pongs_share,
        pongs=spec.pongs,
        stack=scenario.stack,
        join_grace=spec.join_grace,
        wait_joined=spec.wait_joined,
    )


def _live_state(result: AssertionResult) -> str:
    return "holding" if result.passed else "violated"


class ScenarioRunner:
    """Runs one scenario; see the module docstring for the events it reports."""

    def __init__(
        self,
        scenario: Scenario,
        scale: float = 1.0,
        on_event: EventSink | None = None,
        token: str | None = None,
        secret: str | None = None,
    ) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be positive, not {scale}")
        self.scenario = scenario
        self.scale = scale
        self.on_event = on_event
        self.token = token  # for a scenario against an external url: one token for all
        self.secret = secret  # or the server's JWT secret: one token per simulated user
        self.result = ScenarioResult(scenario=scenario, scale=scale)
        self.cluster: Any = None
        self.swarm: Any = None
        self._t0: float | None = None
        self._stop = asyncio.Event()

    # ---- public ---------------------------------------------------------------------------

    def stop(self) -> None:
        """End the run early: no more steps, the swarm stops, the verdict is still given."""
        self.result.stopped = True
        self._stop.set()
        if self.swarm is not None:
            self.swarm.stop()

    def now(self) -> float:
        """Seconds on the scenario clock (0 = the swarm started)."""
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    async def run(self) -> ScenarioResult:
        """Run the scenario to its end and judge it; never raises for a failed run."""
        result = self.result
        result.started_wall = time.time()
        began = time.monotonic()
        sc = self.scenario
        self._emit("phase", phase="starting", name=sc.name, scale=self.scale, path=sc.path)
        unsubscribe: Callable[[], None] | None = None
        try:
            if sc.cluster is not None or sc.stack is not None:
                from wsconsole.harness.cluster import Cluster

                config = _cluster_config(sc)
                self._emit("phase", phase="cluster", nodes=config.nodes,
                           stack=sc.stack.name if sc.stack is not None else None)
                self.cluster = Cluster(config)
                unsubscribe = self.cluster.subscribe(self._on_cluster_event)
                await self.cluster.start()
                url = self.cluster.app_url
                factory = self.cluster.token if sc.stack is None else None
                self._emit(
                    "phase", phase="cluster_ready", url=url, ready_s=self.cluster.ready_seconds
                )
            else:
                assert sc.url is not None
                url, factory = sc.url, None
                if self.secret is not None:
                    from wsconsole.harness.auth import issue_token

                    secret = self.secret
                    factory = lambda user: issue_token(secret, user)  # noqa: E731
            if not self._stop.is_set() and sc.replay is not None:
                await self._run_replay(url)
            elif not self._stop.is_set():
                await self._run_load(url, factory)
        except Exception as exc:
            log.debug("scenario failed", exc_info=True)
            result.error = f"{type(exc).__name__}: {exc}"
            self._emit("error", detail=result.error)
        finally:
            if self.swarm is not None and self.swarm.phase not in ("done", "idle"):
                self.swarm.stop()
                self.swarm.stop()
            if self.cluster is not None:
                self._emit("phase", phase="cluster_stopping")
                try:
                    await self.cluster.stop()
                except Exception as exc:  # stopping must never hide the verdict
                    log.warning("cluster stop failed: %r", exc)
                if unsubscribe is not None:
                    unsubscribe()
        self._judge()
        result.elapsed = time.monotonic() - began
        self._emit("result", **result.as_dict())
        return result

    # ---- the load and the steps -----------------------------------------------------------

    async def _run_replay(self, url: str) -> None:
        """A replay scenario: the recorded messages are the load (scenarios/replay.py)."""
        from wsconsole.scenarios.replay import run_replay

        replay = self.scenario.replay
        assert replay is not None
        self._t0 = time.monotonic()
        limit = self.scenario.timeout or (
            (replay.duration + replay.wait + replay.reply_timeout * len(replay.sends))
            * self.scale + 30.0)
        token = self.token  # the harness's own, or one signed with the server's secret
        if self.cluster is not None and self.scenario.stack is None:
            token = self.cluster.token("replay")  # a stack's app: the recording's own auth
        elif self.secret is not None:
            from wsconsole.harness.auth import issue_token

            token = issue_token(self.secret, "replay")
        try:
            async with asyncio.timeout(limit):
                summary, self.result.conversation = await run_replay(
                    replay, url, self.scale, self._emit, token)
        except TimeoutError:
            self.result.error = f"the replay did not finish within {limit:.0f} s"
            return
        self.result.summary = summary
        self._emit("summary", **summary)

    async def _run_load(self, url: str, token_factory: Any) -> None:
        from wsconsole.swarm.appswarm import AppSwarm
        from wsconsole.swarm.swarm import Swarm

        config = _swarm_config(self.scenario, self.scale, url, token_factory)
        if token_factory is None and self.token is not None:
            config.token = self.token
        workers = self.scenario.swarm.workers if self.scenario.swarm else None
        if workers:
            self.swarm = self._split(config, workers)
        else:
            kind = Swarm if config.stack is None else AppSwarm
            self.swarm = kind(config, on_stats=self._on_stats)
        self._emit(
            "phase",
            phase="swarm",
            clients=config.clients,
            rooms=config.rooms,
            rate=config.rate,
            duration=config.duration,
        )
        self._t0 = time.monotonic()
        swarm_task = asyncio.get_running_loop().create_task(self.swarm.run(), name="scenario-swarm")
        if workers:  # the workers take a moment to start: the scenario's clock starts with them
            await self._until_ready(swarm_task)
            self._t0 = time.monotonic()
        steps_task = asyncio.get_running_loop().create_task(
            self._run_steps(), name="scenario-steps"
        )
        limit = self.scenario.timeout or (
            (self.scenario.load_seconds + self.scenario.settle_seconds) * self.scale + 60.0
        )
        try:
            async with asyncio.timeout(limit):
                summary = await asyncio.shield(swarm_task)
        except TimeoutError:
            self.result.error = f"the scenario did not finish within {limit:.0f} s"
            self.swarm.stop()
            self.swarm.stop()
            summary = await swarm_task
        finally:
            steps_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await steps_task
            self._record_unfinished_steps()
            if not swarm_task.done():  # we were cancelled: still close every client
                self.swarm.stop()
                self.swarm.stop()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await swarm_task
        self.result.summary = summary
        self.result.reconnect_times = self.swarm.accounting.reconnect_times()
        self._emit("summary", **summary)

    async def _until_ready(self, swarm_task: asyncio.Task[Any]) -> None:
        """Wait until a split swarm's workers are all up (or the run ended before)."""
        ready = asyncio.get_running_loop().create_task(self.swarm.ready.wait(),
                                                       name="scenario-workers-ready")
        try:
            await asyncio.wait({swarm_task, ready}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()

    def _split(self, config: Any, workers: int) -> Any:
        """The swarm over local worker processes: tokens from the JWT secret (the cluster's
        or the one given), which the workers get in their environment, never on the wire."""
        from wsconsole.swarm.launchers import SplitSwarm

        secret = self.cluster.config.secret if self.cluster is not None else self.secret
        env: dict[str, str] = {}
        if config.token_factory is not None and secret is not None:
            config.token_factory, config.secret = None, secret
            env[SCENARIO_JWT_ENV] = secret
        return SplitSwarm(config, workers, jwt_secret_env=SCENARIO_JWT_ENV if env else None,
                          on_stats=self._on_stats, worker_env=env)

    def _record_unfinished_steps(self) -> None:
        """A step the load outlived never passes silently: it is recorded as failed."""
        for step in self.scenario.steps[len(self.result.steps) :]:
            record = StepRecord(
                step, self.now(), 0.0, False, "not run to the end: the load finished first"
            )
            self.result.steps.append(record)
            self._emit("step", **record.as_dict())

    async def _run_steps(self) -> None:
        steps = StepPerformer(self.scenario, self.scale, self.cluster, self.swarm, self._stop,
                              self.token, self.secret)
        for step in self.scenario.steps:
            due = step.at * self.scale
            delay = due - self.now()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
            if self._stop.is_set():
                return
            await self._run_step(steps, step)

    async def _run_step(self, steps: StepPerformer, step: Step) -> None:
        started = self.now()
        from wsconsole.swarm.appswarm import AppSwarm

        if isinstance(self.swarm, AppSwarm) and step.action != "wait":
            self.swarm.fault(step.describe())  # the figures of a stack swarm, per window
        timeout = step_timeout(step, self.scale)
        try:
            async with asyncio.timeout(timeout):
                detail = await steps.perform(step)
            ok = True
        except TimeoutError:
            ok, detail = False, f"did not finish within {timeout:.0f} s"
        except Exception as exc:
            ok, detail = False, str(exc) or type(exc).__name__
        record = StepRecord(step, started, self.now() - started, ok, detail)
        self.result.steps.append(record)
        self._emit("step", **record.as_dict())

    # ---- observing ------------------------------------------------------------------------

    def _on_stats(self, stats: dict[str, Any]) -> None:
        self.result.series.append(stats)
        live = [
            {"name": r.assertion.label, "state": _live_state(r)}
            for r in (a.evaluate(stats) for a in self.scenario.assertions if _judgeable_live(a))
        ]
        self._emit("stats", **stats, assertions=live)

    def _on_cluster_event(self, event: dict[str, Any]) -> None:
        t = round(self.now(), 3) if self._t0 is not None else 0.0
        if event.get("event") == "stats":
            if self._t0 is None:  # before the swarm: no time axis yet
                return
            merged: ClusterSample = event["sample"]
            sample = {
                "t": t,
                "nodes": {
                    node_id: float(figures.connections)
                    for node_id, figures in merged.nodes.items()
                },
            }
            self.result.cluster_series.append(sample)
            self._send({"event": "cluster_stats", **sample})
            return
        fields = {k: v for k, v in event.items() if k not in ("event", "t")}
        if "t" in event:
            fields["wall"] = event["t"]
        self.result.events.append({"event": event.get("event"), "t": t, **fields})
        self._send({"event": "cluster_event", "t": t, "source": event.get("event"), **fields})

    def _emit(self, event: str, **fields: Any) -> None:
        self._send({"event": event, **fields})

    def _send(self, record: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(record)
        except Exception:
            log.exception("scenario event sink failed")

    # ---- the verdict ----------------------------------------------------------------------

    def _judge(self) -> None:
        result = self.result
        self._emit("phase", phase="judging")
        if result.summary:
            result.assertions = [a.evaluate(result.summary) for a in self.scenario.assertions]
        for outcome in result.assertions:
            self._emit("assertion", **outcome.as_dict())
        result.passed = (
            result.error is None
            and bool(result.summary)
            and all(a.passed for a in result.assertions)
            and not result.failed_steps
            and not result.stopped
        )


_LIVE_METRICS = frozenset({"duplicated", "out_of_order", "reconnects", "errors"})


def _judgeable_live(assertion: Any) -> bool:
    """Assertions on counters that only grow can be shown as holding/violated while running."""
    return assertion.kind == "order_kept" or (
        assertion.kind == "compare"
        and assertion.metric in _LIVE_METRICS
        and assertion.op in ("<", "<=", "==")
    )
