"""Where a split swarm's workers run, and the run itself (`SplitSwarm`).

`LocalLauncher` starts each worker as a child process of this one through harness/procs.py
(its own process group, killed with us, its stderr tail kept for the report): the way to use
several cores of one machine, and to test without agents. Without a shared broker the run
gets a private one (the bundled Valkey, in memory) and a secret of its own.
`AgentLauncher` starts them on agents' hosts instead, on the broker the agents share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable, Sequence

from wsconsole.harness import procs
from wsconsole.harness.agents import AgentError, AgentsClient, AgentTimeout
from wsconsole.harness.agentwire import WORKER_SECRET_ENV
from wsconsole.harness.broker import Broker
from wsconsole.harness.brokeraddr import open_client
from wsconsole.swarm.accounting import Accounting
from wsconsole.swarm.config import SwarmConfig, SwarmConfigError
from wsconsole.swarm.coordinator import Coordinator, Launcher
from wsconsole.swarm.parts import config_to_wire, split
from wsconsole.swarm.runwire import RunWire, new_run_id
from wsconsole.swarm.swarm import Stats

RUN_SECRET_ENV = "WSCONSOLE_SWARM_RUN_SECRET"  # a local run's own secret, to its children
AGENT_WAIT = 5.0  # seconds a named agent may take to show up


class LocalLauncher:
    """Workers as child processes of this one (one process group each)."""

    def __init__(self, secret_env: str, secret: str,
                 extra_env: dict[str, str] | None = None) -> None:
        self.secret_env = secret_env
        self.env = {**os.environ, **(extra_env or {}), secret_env: secret}
        self.children: dict[int, procs.Child] = {}

    async def start(self, part: int, args: Sequence[str]) -> str:
        """Start the worker of `part` here; returns "pid N"."""
        child = await procs.spawn(procs.child_argv("swarm-worker", *args),
                                  f"swarm-worker-{part}", stdout=False, stderr_lines=20,
                                  env=self.env)
        self.children[part] = child
        return f"pid {child.pid}"

    def context(self, part: int) -> str:
        """Nothing more to say of a local worker than its exit (`gone`)."""
        return ""

    def gone(self, part: int) -> str | None:
        """Why the worker's process is gone (its exit code or signal, its last words)."""
        child = self.children.get(part)
        if child is None or child.returncode is None:
            return None
        code = child.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        tail = child.log_tail(3)
        return f"its process {how}" + (f": {tail}" if tail else "")

    async def stop(self) -> None:
        """Stop every worker still running (SIGTERM, then SIGKILL after 5 s)."""
        await asyncio.gather(*(child.stop() for child in self.children.values()))


class AgentLauncher:
    """Workers on agents (`wsconsole agent` on other hosts), round-robin over `names`, each
    started with role `worker` through the console's AgentsClient (harness/agents.py)."""

    secret_env = WORKER_SECRET_ENV  # an agent gives its workers the secret under this name

    def __init__(self, agents: AgentsClient, names: Sequence[str]) -> None:
        self.agents = agents
        self.names = list(names)
        self.tag = secrets.token_hex(3)  # this run's processes among the agent's others
        self.started: dict[int, tuple[str, str]] = {}  # part -> (agent, process name)

    async def check(self, wait: float = AGENT_WAIT) -> None:
        """SwarmConfigError unless every named agent is up on the broker (each waited for
        up to `wait` seconds: agents started just before the swarm are still saying hello)."""
        await self.agents.caught_up()
        for name in self.names:
            try:
                await self.agents.wait_for_agent(name, timeout=wait)
            except AgentTimeout:
                views = self.agents.agents()
                live = sorted(n for n, view in views.items() if view.state == "up")
                state = views[name].state if name in views else "unknown"
                raise SwarmConfigError(
                    f"agent {name!r} is {state} on this broker (live agents: "
                    f"{', '.join(live) or 'none'})") from None

    async def start(self, part: int, args: Sequence[str]) -> str:
        """Start the worker of `part` on the next agent; returns "AGENT pid N"."""
        agent = self.names[part % len(self.names)]
        proc = f"swarm-{self.tag}-w{part}"
        self.started[part] = (agent, proc)
        row = await self.agents.start(agent, proc, "worker", list(args))
        return f"{agent} pid {row.pid}"

    def gone(self, part: int) -> str | None:
        """Why the worker is gone: its process exited, or its agent stopped (and stopped its
        processes). A lost agent is no proof: its processes run on without it, so the
        worker's own silence decides (`context` then says the agent is lost too)."""
        agent, proc = self.started.get(part, ("", ""))
        view = self.agents.agents().get(agent)
        if view is None:
            return None
        if view.state == "stopped":
            return f"its agent {agent} stopped"
        for row in view.procs:
            if row.proc == proc and row.state == "exited":
                return f"its process on {agent} {row.describe_state}"
        return None

    def context(self, part: int) -> str:
        """The state of the worker's agent, when it is not up."""
        agent, _ = self.started.get(part, ("", ""))
        view = self.agents.agents().get(agent)
        return "" if view is None or view.state == "up" else f"its agent {agent} is {view.state}"

    async def stop(self) -> None:
        """Stop every worker of this run still running on its agent (best effort: an agent
        that is gone cannot be told; its workers stop on their own without the beat)."""
        async def stop_one(agent: str, proc: str) -> None:
            with contextlib.suppress(AgentError):
                await self.agents.stop(agent, proc)

        await asyncio.gather(*(stop_one(*where) for where in self.started.values()))


class SplitSwarm:
    """A swarm run over workers with the interface of a one-process `Swarm` where it can
    have one (`await run()` -> the merged summary, `stop()`, `phase`, `accounting`), for the
    CLI and the scenario runner: through `launcher` on the broker `broker_url` with the
    agents' secret in `secret_env`, or (no launcher) as local processes, on a private broker
    unless `broker_url` is given. `worker_env` is added to local workers' environment (a
    JWT secret's variable). SwarmConfigError for what cannot be split."""

    def __init__(self, config: SwarmConfig, workers: int, *, jwt_secret_env: str | None,
                 broker_url: str | None = None, secret_env: str | None = None,
                 launcher: Launcher | None = None,
                 on_stats: Callable[[Stats], None] | None = None,
                 worker_env: dict[str, str] | None = None) -> None:
        self.config = config
        self.parts = split(config.clients, workers)
        self.wire_config = config_to_wire(config, jwt_secret_env)
        self.broker_url = broker_url
        self.secret_env = secret_env
        self.launcher = launcher
        self.on_stats = on_stats
        self.worker_env = worker_env or {}
        self.coordinator: Coordinator | None = None
        self.accounting = Accounting()
        self.ready = asyncio.Event()  # every worker is up: the clients start now
        self._stops = 0

    @property
    def phase(self) -> str:
        """The workers' phases ("load", "load/settle", ...), "idle" before, "done" after."""
        return "idle" if self.coordinator is None else self.coordinator.phase

    def stop(self) -> None:
        """End the load now; a second call also skips the settle phase."""
        self._stops += 1
        if self.coordinator is not None:
            self.coordinator.stop()

    async def run(self) -> Stats:
        """Start the broker if needed, the workers, merge until every part finished."""
        own_broker = Broker(persist=False) if self.broker_url is None else None
        broker_url = self.broker_url
        if own_broker is not None:
            broker_url = await asyncio.to_thread(own_broker.start)
        try:
            return await self._run(str(broker_url))
        finally:
            if own_broker is not None:
                await asyncio.to_thread(own_broker.stop)

    async def _run(self, broker_url: str) -> Stats:
        if self.secret_env is None:
            secret_env, secret = RUN_SECRET_ENV, secrets.token_hex(16)
        else:
            secret_env, secret = self.secret_env, os.environ.get(self.secret_env, "")
            if not secret:
                raise SwarmConfigError(f"environment variable {secret_env} is not set")
        launcher = self.launcher or LocalLauncher(secret_env, secret, self.worker_env)
        client = await open_client(broker_url)
        run = new_run_id()

        def worker_args(part: int) -> list[str]:
            return ["--broker", broker_url, "--secret-env", launcher.secret_env,
                    "--run", run, "--part", str(part)]

        try:
            self.coordinator = Coordinator(
                self.config, self.wire_config, self.parts,
                RunWire(client, secret, run, coordinator=True), launcher, worker_args,
                self.on_stats, self.ready)
            self.accounting = self.coordinator.accounting
            for _ in range(self._stops):
                self.coordinator.stop()
            summary = await self.coordinator.run()
        finally:
            await client.aclose()
        summary["run"] = run
        return summary
