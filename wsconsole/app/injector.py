"""What the Inject panel does, without Qt: run a catalogue case, keep a history of verdicts.

Two directions, both through the public APIs the CLI uses (DESIGN.md: the GUI never reaches
into a node):
- client to server: the probe (faults/probe.py) opens its own raw connection to a session's
  URL (with that session's credentials) or to the cluster's public URL, sends the case and
  judges the server's reaction;
- server to client: `Cluster.inject` has a node write the case raw to one of its connections,
  a room's members or all of them, and judge each client's reaction (faults/inject.py).
  The console's own connection is a target too: its Timeline lane shows the failure and the
  reconnect.
Every run marks the Timeline (and so the plots) with a fault marker.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wsconsole.app.targets import probe_target
from wsconsole.core.errors import TokenError
from wsconsole.faults.catalogue import Direction, get_case
from wsconsole.faults.probe import ProbeConfig, Target, TargetError, run_case

if TYPE_CHECKING:
    from wsconsole.app.console import Console

CLUSTER_VIA = "cluster (balancer)"
CONSOLE_TARGET = "session:"  # prefix of a server-to-client target naming a console session
_RANK = {"fail": 3, "error": 3, "pass (lenient)": 1, "pass": 0, "n/a": 0}


@dataclass(frozen=True)
class InjectRecord:
    """One run as the history table shows it."""

    wall: float
    direction: Direction
    case: str
    section: str
    target: str
    expected: str
    observed: str
    verdict: str
    reason: str

    @property
    def ok(self) -> bool:
        """The reaction conformed (pass or lenient)."""
        return _RANK.get(self.verdict, 3) < 3


def worst(verdicts: dict[str, int]) -> str:
    """The verdict that matters most in a tally (fail over lenient over pass)."""
    present = [v for v, n in verdicts.items() if n]
    return max(present, key=lambda v: _RANK.get(v, 3)) if present else "error"


class Injector:
    """Runs injections for the panel and keeps the last `limit` results; `version` bumps."""

    def __init__(self, console: Console, limit: int = 500, wait: float = 2.0) -> None:
        self.console = console
        self.history: deque[InjectRecord] = deque(maxlen=limit)
        self.version = 0
        self.wait = wait  # how long a node watches its clients react
        self.probe_config = ProbeConfig(timeout=5.0)

    # -- where to -------------------------------------------------------------------------
    def probe_vias(self) -> list[str]:
        """Client-to-server routes: each session by name, and the cluster's public URL."""
        vias = list(self.console.sessions)
        if self.console.cluster is not None and self.console.cluster_state == "ready":
            vias.append(CLUSTER_VIA)
        return vias

    def nodes(self) -> list[str]:
        """Running node ids (server-to-client sources)."""
        cluster = self.console.cluster
        if cluster is None:
            return []
        return [node_id for node_id, info in list(cluster.nodes.items())
                if str(getattr(info.state, "value", info.state)) == "running"]

    async def node_targets(self, node: str) -> list[tuple[str, str]]:
        """(target, label) for a node: all, its rooms, its connections, console sessions."""
        cluster = self.console.cluster
        if cluster is None:
            raise ValueError("no cluster is running")
        conns = await cluster.connections(node)
        targets = [("all", f"all connections on {node} ({len(conns)})")]
        rooms: dict[str, int] = {}
        for conn in conns:
            for room in conn.get("rooms", []):
                rooms[room] = rooms.get(room, 0) + 1
        targets += [(f"room:{room}", f"room {room} ({n} on {node})")
                    for room, n in sorted(rooms.items())]
        users = {conn.get("user") for conn in conns}
        targets += [(f"{CONSOLE_TARGET}{name}", f"the console's connection {name!r}")
                    for name in self.console.sessions if name in users]
        targets += [(conn["id"], f"{conn['id']}  {conn.get('user')}  "
                     f"{' '.join(conn.get('rooms', []))}".rstrip()) for conn in conns[:200]]
        return targets

    # -- running --------------------------------------------------------------------------
    async def _target_of(self, via: str) -> Target:
        if via == CLUSTER_VIA:
            cluster = self.console.cluster
            if cluster is None:
                raise ValueError("no cluster is running")
            return Target(cluster.url, token=cluster.token("console-probe"))
        session = self.console.sessions.get(via)
        if session is None:
            raise ValueError(f"no connection named {via!r}")
        try:  # the probe connects as the session does: same URL and credentials
            return probe_target(session.profile, await session.token())
        except (TargetError, TokenError) as exc:
            raise ValueError(f"{via}: {exc}") from None

    def _record(self, record: InjectRecord, where: str) -> InjectRecord:
        self.history.append(record)
        self.version += 1
        arrow = "→" if record.direction is Direction.CLIENT_TO_SERVER else "←"
        self.console.timeline.fault(f"inject {record.case} {arrow} {where}")
        return record

    async def client_to_server(self, case_id: str, via: str) -> InjectRecord:
        """Probe: a raw connection via a session's URL or the cluster sends the case."""
        case = get_case(case_id)
        target = await self._target_of(via)
        result = await run_case(case, target, self.probe_config)
        return self._record(InjectRecord(
            time.time(), Direction.CLIENT_TO_SERVER, case.id, case.section,
            f"{via} ({target.url})" if via != CLUSTER_VIA else via,
            case.expected.describe(), result.observed, result.verdict.value, result.reason,
        ), via.removesuffix(" (balancer)"))

    async def server_to_client(self, node: str, case_id: str, target: str) -> InjectRecord:
        """A node writes the case to a connection, room, all, or a console session's link."""
        case = get_case(case_id)
        cluster = self.console.cluster
        if cluster is None:
            raise ValueError("no cluster is running")
        shown = target
        if target.startswith(CONSOLE_TARGET):
            name = target.removeprefix(CONSOLE_TARGET)
            conns = await cluster.connections(node)
            found = [c["id"] for c in conns if c.get("user") == name]
            if not found:
                raise ValueError(f"the console's connection {name!r} is not on node {node}")
            target, shown = f"conn:{found[0]}", f"{name} ({found[0]})"
        reply = await cluster.inject(node, case.id, target, wait=self.wait)
        verdicts: dict[str, int] = reply.get("verdicts") or {}
        reactions = reply.get("reactions") or []
        sent = int(reply.get("sent", 0))
        if sent == 1 and reactions:
            observed, reason = reactions[0]["observed"], reactions[0]["reason"]
        else:
            observed = f"{sent} connections: " + ", ".join(
                f"{n} {v}" for v, n in sorted(verdicts.items()))
            bad = [r for r in reactions if r.get("verdict") == "fail"]
            reason = bad[0]["reason"] if bad else "every client reacted as expected"
        return self._record(InjectRecord(
            time.time(), Direction.SERVER_TO_CLIENT, case.id, case.section,
            f"{node} → {shown}", case.expected.describe(), observed, worst(verdicts), reason,
        ), node)
