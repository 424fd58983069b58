"""Every shipped scenario runs against the real harness (scaled schedule) and passes.

Each run starts a real broker, nodes and balancer (OS processes), a swarm of ReconnectingClients
and the scenario's faults; WSCONSOLE_SCENARIO_SCALE (default 0.8 here) shrinks the schedule.
"""

from __future__ import annotations

import pytest

from tests.support import SCALE, pid_alive
from wsconsole.scenarios.model import load_scenario, shipped_scenarios
from wsconsole.scenarios.runner import ScenarioRunner, scale_from_env

# How much the tests compress a shipped schedule; a slow machine's test timescale stretches
# it. Each shipped scenario leaves at least 5 s between its last node restart and the end of
# the load: 4 s here, while a restart took 1.2-2.9 s (once 4.5 s) at load averages of 7-9.
SCHEDULE_SCALE = scale_from_env(0.8 * SCALE)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(shipped_scenarios()))
async def test_shipped_scenario_passes(name: str) -> None:
    scenario = load_scenario(shipped_scenarios()[name])
    events: list[dict] = []
    runner = ScenarioRunner(scenario, scale=SCHEDULE_SCALE, on_event=events.append)
    result = await runner.run()
    failed = [a.as_dict() for a in result.assertions if not a.passed]
    bad_steps = [s.as_dict() for s in result.failed_steps]
    verdict = {"error": result.error, "failed": failed, "steps": bad_steps}
    assert result.passed, f"{name}: {verdict} summary={result.summary}"
    assert len(result.steps) == len(scenario.steps)
    assert len(result.assertions) == len(scenario.assertions)
    # progress reached the caller while it ran, and everything is gone afterwards
    kinds = {e["event"] for e in events}
    assert {"phase", "step", "stats", "assertion", "result"} <= kinds
    cluster = runner.cluster
    assert cluster is not None
    pids = [cluster.broker.pid, cluster.balancer.pid, *(n.pid for n in cluster.nodes.values())]
    assert all(pids), pids
    assert not [pid for pid in pids if pid_alive(pid)]
