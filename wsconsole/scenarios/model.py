"""The scenario file: TOML schema, loading and validation with line numbers.

A scenario names the cluster to start, the swarm to put on it, timed steps that break it,
and assertions that decide the verdict (docs/scenarios.md has the full reference); or, in
place of the swarm, a recorded connection to replay against `url`, the harness of its
[cluster] or the nodes of its stack (scenarios/replay.py).
Instead of [cluster], `stack = "my-app.toml"` runs the user's own nodes (a stack file,
docs/stacks.md, relative to the scenario) and the swarm follows the stack's client recipe:

    name = "node kill under load"
    [cluster]                       nodes, broker, sticky, timings, ping_*, tls, [cluster.limits]
    [swarm]                         clients, rooms, rate, duration, ramp, settle, backoff, ...
    [[steps]]  at = 3.0  action = "kill"  node = "n1"
    [[assertions]]  expect = "lost == 0"

Every mistake is reported as ScenarioError with the line it is on: TOML syntax errors carry
tomllib's position; for a wrong value we find the line of its key by scanning the text.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsconsole.core.errors import ClientOptionsError
from wsconsole.core.frames import MAX_CONTROL_PAYLOAD
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.harness import netfaults, routing
from wsconsole.harness.clusterconfig import (
    DEMO_BACKOFF_CAP,
    DEMO_BACKOFF_INITIAL,
    DEMO_BACKOFF_JITTER,
    DEMO_PING_INTERVAL,
    DEMO_PING_TIMEOUT,
)
from wsconsole.harness.stackfile import Stack, StackError, load_stack
from wsconsole.scenarios.assertions import Assertion, AssertionSyntaxError, parse_assertion
from wsconsole.scenarios.replay import ReplaySpec, parse_replay
from wsconsole.tomlcheck import TomlFileError, TomlReader, parse_toml, read_text

NODE_ACTIONS = frozenset({"kill", "pause", "resume", "drain", "restart"})
ACTIONS = NODE_ACTIONS | {
    "add",
    "broker_kill",
    "broker_restart",
    "net",
    "net_clear",
    "inject",
    "wait",
    "pongs",
    "ping",
    "pong",
}
HEARTBEAT_ACTIONS = ("pongs", "ping", "pong")  # the swarm's, against any server
NET_KINDS = frozenset(netfaults.KINDS)  # the balancer's fault kinds, named once there
STICKY_MODES = frozenset(routing.STICKY_MODES)
WAIT_UNTIL = frozenset({"connected"})
LIMIT_KEYS = frozenset(
    {"max_size", "rate", "per_user", "soft_limit", "history", "auth_timeout", "drain_deadline"}
)

_STEP_KEYS: dict[str, frozenset[str]] = {
    **{action: frozenset({"node"}) for action in NODE_ACTIONS},
    "add": frozenset(),
    "broker_kill": frozenset(),
    "broker_restart": frozenset({"fresh"}),  # fresh: without its state (a reset)
    "net": frozenset({"target", "kind", "params"}),
    "net_clear": frozenset({"target", "kind"}),
    "inject": frozenset({"case", "count", "direction", "node", "interval"}),
    "wait": frozenset({"seconds", "until", "timeout"}),
    "pongs": frozenset({"share", "pongs"}),
    "ping": frozenset({"share", "count", "payload"}),
    "pong": frozenset({"share", "payload"}),
}
_COMMON_STEP_KEYS = frozenset({"at", "action", "note"})


class ScenarioError(TomlFileError):
    """An invalid scenario file: `line` (1-based, when known) and `reason` in plain words."""

    default_name = "scenario"


@dataclass(slots=True)
class ClusterSpec:
    """[cluster]: what the harness should look like for this scenario."""

    nodes: int = 3
    broker: str | None = None  # None: the embedded broker; else a redis:// URL
    sticky: str = "ip"
    timings: str = "demo"  # "demo" (ping 2 s / 1 s) or "default" (25 s / 10 s)
    ping_interval: float | None = None
    ping_timeout: float | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    tls: bool = False  # wss:// (the harness's --tls)


@dataclass(slots=True)
class BackoffSpec:
    """[swarm.backoff]: the simulated clients' reconnect policy (demo preset by default)."""

    initial: float = DEMO_BACKOFF_INITIAL
    factor: float = 2.0
    cap: float = DEMO_BACKOFF_CAP
    jitter: float = DEMO_BACKOFF_JITTER
    max_attempts: int | None = None


@dataclass(slots=True)
class SwarmSpec:
    """[swarm]: the simulated clients and their load."""

    clients: int = 20
    rooms: int = 2
    rate: float = 20.0
    duration: float = 10.0
    ramp: float = 0.0
    settle: float = 8.0
    token_user: str = "swarm"
    payload: int = 0
    distinct_addresses: bool = True
    ping_interval: float | None = DEMO_PING_INTERVAL
    ping_timeout: float = DEMO_PING_TIMEOUT
    backoff: BackoffSpec = field(default_factory=BackoffSpec)
    pongs_share: float = 0.0  # the heartbeat lab: this share of the clients ...
    pongs: PongPolicy = field(default_factory=lambda: PongPolicy("off"))  # ... answers so
    join_grace: float = 0.5  # a stack: a join counts after this (the app does not confirm)
    wait_joined: float | None = None  # hold the load until every client joined (at most S)
    workers: int | None = None  # split the clients over this many local worker processes


@dataclass(frozen=True, slots=True)
class Step:
    """One timed action; `params` holds the action's own keys."""

    at: float
    action: str
    params: Mapping[str, Any]
    line: int | None = None
    note: str | None = None

    def describe(self) -> str:
        """A short human label such as 'kill n1' or 'net all latency'."""
        parts = [self.action]
        for key in ("node", "target", "kind", "case", "seconds", "until", "pongs", "share"):
            if key in self.params:
                parts.append(str(self.params[key]))
        if self.params.get("count", 1) != 1:
            parts.append(f"x{self.params['count']}")
        return " ".join(parts)


@dataclass(slots=True)
class Scenario:
    """A validated scenario file."""

    name: str
    description: str
    cluster: ClusterSpec | None
    swarm: SwarmSpec | None  # None: a replay scenario
    steps: list[Step]
    assertions: list[Assertion]
    url: str | None = None
    path: str | None = None
    timeout: float | None = None
    replay: ReplaySpec | None = None
    stack: Stack | None = None

    @property
    def load_seconds(self) -> float:
        """How long the load runs (the swarm's duration, or the replay's sends)."""
        if self.replay is not None:
            return self.replay.duration
        assert self.swarm is not None
        return self.swarm.duration

    @property
    def settle_seconds(self) -> float:
        """How long the run may go on after the load (settle, or the replay's wait)."""
        if self.replay is not None:
            return self.replay.wait
        assert self.swarm is not None
        return self.swarm.settle

    def load_text(self) -> str:
        """The load in a few words, for lists and titles."""
        if self.replay is not None:
            target = self.url or "the harness"
            return f"replay of {len(self.replay.sends)} message(s) to {target}"
        assert self.swarm is not None
        return f"{self.swarm.clients} clients for {self.swarm.duration:g} s"


def shipped_dir() -> Path:
    """Where the scenarios shipped with wsconsole live: the top-level resources/ folder,
    installed as the package wsconsole.resources (source checkout, wheel or bundle)."""
    return Path(str(importlib.resources.files("wsconsole.resources") / "scenarios"))


def shipped_scenarios() -> dict[str, Path]:
    """Shipped scenario files by name (the file stem, e.g. "node-kill")."""
    folder = shipped_dir()
    if not folder.is_dir():
        return {}
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raises ScenarioError (with a line) if it is invalid."""
    return parse_scenario(read_text(path, ScenarioError), str(path))


def parse_scenario(text: str, path: str | None = None) -> Scenario:
    """Validate scenario TOML text; raises ScenarioError (with a line) if it is invalid."""
    data = parse_toml(text, path, ScenarioError)
    r = TomlReader(text, path, ScenarioError)
    r.check_keys(
        data,
        frozenset(
            {"name", "description", "url", "timeout", "cluster", "swarm", "steps", "assertions",
             "replay", "stack"}
        ),
    )
    url = r.string(data, "url", None)
    if url is not None and not re.match(r"^wss?://", url):
        raise r.fail(f"url must start with ws:// or wss://, not {url!r}", "url")
    if url is not None and "cluster" in data:
        raise r.fail("give either url (an external server) or [cluster], not both", "cluster")
    stack = _stack(r, data, path, swarm="replay" not in data)
    if stack is not None and "replay" in data and stack.protocol.kind != "websocket":
        raise r.fail(f"a replay plays WebSocket messages; the stack {stack.name} speaks "
                     f"{stack.protocol.kind}", "replay")
    cluster = None if url is not None or stack is not None else \
        _cluster(r, r.table(data, "cluster"))
    replay, swarm, steps = None, None, []
    if "replay" in data:
        if url is None and "cluster" not in data and stack is None:
            raise r.fail("a [replay] needs url = the server to replay against, a [cluster] "
                         "(the demo harness, started for the run) or stack = (your nodes)",
                         "replay")
        if "swarm" in data or "steps" in data:
            raise r.fail("a [replay] scenario has no [swarm] and no steps: the recording is "
                         "its load", "swarm" if "swarm" in data else "steps")
        replay = parse_replay(r, r.table(data, "replay"))
    elif "swarm" not in data:
        raise r.fail("a [swarm] table is required (at least its duration), or a [replay]")
    else:
        swarm = _swarm(r, r.table(data, "swarm"))
        if swarm.workers and stack is not None:
            raise r.fail("workers run harness-protocol clients; a stack's swarm runs in one "
                         "process", "swarm", "workers")
        steps = _steps(r, data.get("steps", []), swarm, cluster, stack)
    assertions = _assertions(r, data.get("assertions", []))
    timeout = r.number(data, "timeout", None, positive=True)
    return Scenario(
        name=r.string(data, "name", Path(path).stem if path else "scenario"),
        description=data.get("description", "") if isinstance(data.get("description"), str) else "",
        cluster=cluster,
        swarm=swarm,
        steps=steps,
        assertions=assertions,
        url=url,
        path=path,
        timeout=timeout,
        replay=replay,
        stack=stack,
    )


def _stack(r: TomlReader, data: dict[str, Any], path: str | None,
           swarm: bool = True) -> Stack | None:
    """The stack file the scenario names (relative to the scenario's folder), validated;
    with `swarm`, it must have the [client] recipe the swarm follows."""
    if "stack" not in data:
        return None
    name = r.string(data, "stack", None)
    for other in ("url", "cluster"):
        if other in data:
            raise r.fail(f"give either stack = (your own nodes) or {other}, not both", other)
    stack_path = Path(name)
    if not stack_path.is_absolute():
        stack_path = (Path(path).resolve().parent if path else Path.cwd()) / stack_path
    try:
        stack = load_stack(stack_path)
    except StackError as exc:
        raise r.fail(f"stack: {exc}", "stack") from None
    if swarm and stack.client is None:
        raise r.fail(f"the stack {stack_path} has no [client] recipe for the swarm", "stack")
    return stack


def _cluster(r: TomlReader, table: dict[str, Any]) -> ClusterSpec:
    where = ("cluster",)
    r.check_keys(
        table,
        frozenset(
            {"nodes", "broker", "sticky", "timings", "ping_interval", "ping_timeout", "limits",
             "tls"}
        ),
        *where,
    )
    broker = r.string(table, "broker", "embedded", *where)
    if broker != "embedded" and not re.match(r"^(redis|rediss|unix)://", broker):
        raise r.fail(
            f'broker must be "embedded" or a redis:// URL, not {broker!r}', *where, "broker"
        )
    limits = r.table(table, "limits", *where)
    r.check_keys(limits, LIMIT_KEYS, *where, "limits")
    for key in limits:
        r.number(limits, key, None, *where, "limits", positive=True)
    return ClusterSpec(
        nodes=r.number(table, "nodes", 3, *where, minimum=1, maximum=32, integer=True),
        broker=None if broker == "embedded" else broker,
        sticky=r.string(table, "sticky", "ip", *where, choices=STICKY_MODES),
        timings=r.string(table, "timings", "demo", *where, choices=frozenset({"demo", "default"})),
        ping_interval=r.number(table, "ping_interval", None, *where, positive=True),
        ping_timeout=r.number(table, "ping_timeout", None, *where, positive=True),
        limits=dict(limits),
        tls=r.boolean(table, "tls", False, *where),
    )


def _swarm(r: TomlReader, table: dict[str, Any]) -> SwarmSpec:
    where = ("swarm",)
    allowed = frozenset(
        {
            "clients",
            "rooms",
            "rate",
            "duration",
            "ramp",
            "settle",
            "token_user",
            "payload",
            "distinct_addresses",
            "ping_interval",
            "ping_timeout",
            "backoff",
            "pongs_share",
            "pongs",
            "join_grace",
            "wait_joined",
            "workers",
        }
    )
    r.check_keys(table, allowed, *where)
    if "duration" not in table:
        raise r.fail("[swarm] needs a duration (seconds)", *where)
    clients = r.number(table, "clients", 20, *where, minimum=1, maximum=20_000, integer=True)
    rooms = r.number(table, "rooms", 2, *where, minimum=1, integer=True)
    if rooms > clients:
        raise r.fail(f"rooms ({rooms}) cannot exceed clients ({clients})", *where, "rooms")
    backoff_table = r.table(table, "backoff", *where)
    bw = (*where, "backoff")
    r.check_keys(
        backoff_table, frozenset({"initial", "factor", "cap", "jitter", "max_attempts"}), *bw
    )
    backoff = BackoffSpec(
        initial=r.number(backoff_table, "initial", 0.5, *bw, positive=True),
        factor=r.number(backoff_table, "factor", 2.0, *bw, minimum=1.0),
        cap=r.number(backoff_table, "cap", 5.0, *bw, positive=True),
        jitter=r.number(backoff_table, "jitter", 0.5, *bw, minimum=0.0),
        max_attempts=r.number(backoff_table, "max_attempts", None, *bw, minimum=1, integer=True),
    )
    if backoff.cap < backoff.initial:
        raise r.fail(
            f"backoff cap ({backoff.cap}) is below initial ({backoff.initial})", *bw, "cap"
        )
    ping_interval = table.get("ping_interval", 2.0)
    if ping_interval is not False:
        ping_interval = r.number(table, "ping_interval", 2.0, *where, positive=True)
    return SwarmSpec(
        clients=clients,
        rooms=rooms,
        rate=r.number(table, "rate", 20.0, *where, minimum=0.0),
        duration=r.number(table, "duration", 10.0, *where, positive=True),
        ramp=r.number(table, "ramp", 0.0, *where, minimum=0.0),
        settle=r.number(table, "settle", 8.0, *where, minimum=0.0),
        token_user=r.string(table, "token_user", "swarm", *where),
        payload=r.number(table, "payload", 0, *where, minimum=0, maximum=1 << 20, integer=True),
        distinct_addresses=r.boolean(table, "distinct_addresses", True, *where),
        ping_interval=None if ping_interval is False else ping_interval,
        ping_timeout=r.number(table, "ping_timeout", 1.0, *where, positive=True),
        backoff=backoff,
        pongs_share=r.number(table, "pongs_share", 0.0, *where, minimum=0.0, maximum=1.0),
        pongs=_pongs(r, table, *where),
        join_grace=r.number(table, "join_grace", 0.5, *where, minimum=0.0),
        wait_joined=r.number(table, "wait_joined", None, *where, positive=True),
        workers=_workers(r, table, clients, *where),
    )


def _workers(r: TomlReader, table: dict[str, Any], clients: int, *where: Any) -> int | None:
    """[swarm] workers: 1 to `clients` local worker processes (docs/scale-out.md)."""
    workers = r.number(table, "workers", None, *where, minimum=1, integer=True)
    if workers is not None and workers > clients:
        raise r.fail(f"{workers} workers for {clients} clients: every worker needs one",
                     *where, "workers")
    return workers


def _pongs(r: TomlReader, table: dict[str, Any], *where: Any) -> PongPolicy:
    """A pong policy ("off", "delay:MS", "wrong[:TEXT]", "auto"), checked where it is."""
    text = r.string(table, "pongs", "off", *where)
    try:
        return PongPolicy.parse(text)
    except ClientOptionsError as exc:
        raise r.fail(str(exc), *where, "pongs") from None


def _steps(r: TomlReader, steps: Any, swarm: SwarmSpec, cluster: ClusterSpec | None,
           stack: Stack | None) -> list[Step]:
    if not isinstance(steps, list):
        raise r.fail("steps must be an array of tables ([[steps]])", "steps")
    result: list[Step] = []
    for index, step in enumerate(steps):
        where = ("steps", index)
        if not isinstance(step, dict):
            raise r.fail(f"step {index + 1} must be a table", *where)
        if "action" not in step:
            raise r.fail(f"step {index + 1} has no action", *where)
        action = r.string(step, "action", None, *where, choices=ACTIONS)
        if "at" not in step:
            raise r.fail(
                f"step {index + 1} ({action}) has no 'at' (seconds from the start)", *where
            )
        at = r.number(step, "at", 0.0, *where, minimum=0.0)
        if at > swarm.duration:
            raise r.fail(
                f"step {index + 1} at {at} s is after the swarm ends (duration {swarm.duration} s)",
                *where,
                "at",
            )
        r.check_keys(step, _COMMON_STEP_KEYS | _STEP_KEYS[action], *where)
        if cluster is None and stack is None and \
                action not in ("wait", "inject", *HEARTBEAT_ACTIONS):
            raise r.fail(
                f"{action} needs a [cluster] (this scenario targets a url)", *where, "action"
            )
        if swarm.workers and action in HEARTBEAT_ACTIONS:
            raise r.fail(f"{action} acts on the swarm's clients in this process: not with "
                         "[swarm] workers", *where, "action")
        if stack is not None and action.startswith("broker_") and stack.broker.kind != "harness":
            raise r.fail(f"{action} needs the harness's own broker (the stack's broker is "
                         f"{stack.broker.kind})", *where, "action")
        params = {k: v for k, v in step.items() if k not in _COMMON_STEP_KEYS}
        _check_step(r, action, params, where)
        if cluster is None and action == "inject" and params.get("direction") == "server":
            raise r.fail("a server-side inject needs a [cluster] of harness nodes", *where,
                         "direction")
        if stack is not None and action == "inject" and stack.protocol.kind != "websocket":
            raise r.fail("inject writes raw WebSocket frames: not for a "
                         f"{stack.protocol.kind} stack", *where, "action")
        note = step.get("note") if isinstance(step.get("note"), str) else None
        result.append(
            Step(at=float(at), action=action, params=params, line=r.keys.find(*where), note=note)
        )
    result.sort(key=lambda s: s.at)
    return result


def _check_step(r: TomlReader, action: str, params: dict[str, Any], where: tuple[Any, ...]) -> None:
    if action in NODE_ACTIONS:
        if "node" not in params:
            raise r.fail(f'{action} needs node = "ID" (e.g. "n1")', *where)
        r.string(params, "node", None, *where)
    elif action == "broker_restart":
        r.boolean(params, "fresh", False, *where)
    elif action in ("net", "net_clear"):
        params.setdefault("target", "all")
        r.string(params, "target", "all", *where)
        if action == "net" and "kind" not in params:
            raise r.fail(f"net needs kind = one of {', '.join(sorted(NET_KINDS))}", *where)
        r.string(params, "kind", None, *where, choices=NET_KINDS)
        if action == "net":
            net_params = r.table(params, "params", *where)
            try:
                netfaults.parse_fault(params["kind"], net_params)
            except netfaults.FaultError as exc:
                raise r.fail(f"net {params['kind']}: {exc}", *where, "params") from None
    elif action == "inject":
        if "case" not in params:
            raise r.fail('inject needs case = "ID" (a fault catalogue case)', *where)
        r.string(params, "case", None, *where)
        params["count"] = r.number(
            params, "count", 1, *where, minimum=1, maximum=100_000, integer=True
        )
        params["direction"] = r.string(
            params, "direction", "client", *where, choices=frozenset({"client", "server"})
        )
        params["interval"] = r.number(params, "interval", 0.0, *where, minimum=0.0)
        if "node" in params:
            r.string(params, "node", None, *where)
        from wsconsole.faults.catalogue import Direction, UnknownCase, get_case

        try:
            case = get_case(params["case"])
        except UnknownCase:
            raise r.fail(f"unknown fault case {params['case']!r}", *where, "case") from None
        wanted = (
            Direction.SERVER_TO_CLIENT
            if params["direction"] == "server"
            else Direction.CLIENT_TO_SERVER
        )
        if not case.applies_to(wanted):
            raise r.fail(
                f"case {case.id} does not apply in the {params['direction']} direction",
                *where,
                "direction" if "direction" in params else "case",
            )
    elif action == "pongs":
        if "share" not in params:
            raise r.fail('pongs needs share = 0..1 (the share of the swarm\'s clients)', *where)
        params["share"] = r.number(params, "share", 0.0, *where, minimum=0.0, maximum=1.0)
        params["policy"] = _pongs(r, params, *where)
        params["pongs"] = params["policy"].text()
    elif action in ("ping", "pong"):
        params["share"] = r.number(params, "share", 1.0, *where, minimum=0.0, maximum=1.0)
        if action == "ping":
            params["count"] = r.number(params, "count", 1, *where, minimum=1, maximum=1000,
                                       integer=True)
        payload = r.string(params, "payload", "", *where)
        if len(payload.encode()) > MAX_CONTROL_PAYLOAD:
            raise r.fail(f"a {action} payload holds at most {MAX_CONTROL_PAYLOAD} bytes",
                         *where, "payload")
    elif action == "wait":
        if ("seconds" in params) == ("until" in params):
            raise r.fail('wait needs either seconds = N or until = "connected"', *where)
        r.number(params, "seconds", None, *where, minimum=0.0)
        r.string(params, "until", None, *where, choices=WAIT_UNTIL)
        params["timeout"] = r.number(params, "timeout", 30.0, *where, positive=True)


def _assertions(r: TomlReader, items: Any) -> list[Assertion]:
    if not isinstance(items, list):
        raise r.fail("assertions must be an array of tables ([[assertions]])", "assertions")
    result = []
    for index, item in enumerate(items):
        where = ("assertions", index)
        if not isinstance(item, dict):
            raise r.fail(f"assertion {index + 1} must be a table", *where)
        r.check_keys(item, frozenset({"expect", "name"}), *where)
        if "expect" not in item:
            raise r.fail(f'assertion {index + 1} has no expect = "..."', *where)
        name = r.string(item, "name", None, *where)
        line = r.keys.find(*where, "expect")
        try:
            result.append(parse_assertion(item["expect"], name=name, line=line))
        except AssertionSyntaxError as exc:
            raise ScenarioError(str(exc), line, r.path) from None
    return result
