"""An agent's processes: started by role, signalled by name, re-adopted after a restart.

What an agent (harness/agent.py) runs on its host, one `ProcTable` of named entries:

- a role, never a command line: `node` (a demo node: `wsconsole node ARGS`), `worker`
  (`wsconsole swarm-worker ARGS`, with the agents' secret in its environment as
  agentwire.WORKER_SECRET_ENV: it reports over the same signed wire), `stack-node` (node
  `nN` of a stack file on this host, `{stack, node, port?, host?, redis_url?}`, its command
  built by stacknodes.node_launch);
- started through harness/procs.py in a process group of its own, its stdout and stderr
  appended to `<state dir>/logs/<proc>.log`, and NOT tied to the agent (`outlive=True`): an
  agent killed with SIGKILL leaves its processes running;
- signalled as a group: `stop` (SIGTERM, or the stack's stop signal, then SIGKILL after a
  deadline), `kill`, `pause` (SIGSTOP), `resume`, `restart` (stop, then start again);
- identified by PID *and* start time (psutil's `create_time`), which the agent keeps in its
  state file: a restarted agent re-adopts the entries whose PID still runs the same process
  and reports the others as exited while it was down; a PID the kernel gave to another
  process since is never signalled;
- reported with its state (running, paused, exited with a code or a signal), since when,
  restarts, CPU % and RSS (psutil).

A child started by this agent is reaped by procs.py's task and its exit code is known; an
adopted one is polled (`refresh`), and only that it ended is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from wsconsole.core.tasks import Tasks
from wsconsole.errors import WsconsoleError
from wsconsole.harness import procs
from wsconsole.harness.clusterconfig import LOOPBACK
from wsconsole.harness.stackfile import StackError, load_stack
from wsconsole.harness.stacknodes import free_port, node_launch

log = logging.getLogger(__name__)

ROLES = ("node", "worker", "stack-node")
ROLE_COMMANDS = {"node": "node", "worker": "swarm-worker"}
STOP_TIMEOUT = 5.0  # seconds a graceful stop waits before SIGKILL
POLL = 0.05  # seconds between checks that an adopted process is gone
PROC_NAME = re.compile(r"[A-Za-z0-9._-]{1,40}")
STACK_NODE = re.compile(r"n[0-9]{1,4}")
DOWN = "exited while the agent was down"


class ProcError(WsconsoleError, ValueError):
    """A command the table cannot carry out: unknown process, bad role or arguments, a
    process already running; the message says which."""


@dataclass(frozen=True)
class Launch:
    """What starting one role runs."""

    argv: list[str]
    env: dict[str, str] | None = None
    cwd: str | None = None
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float = STOP_TIMEOUT


def plan(role: str, args: Any, worker_env: Mapping[str, str] | None = None) -> Launch:
    """The command for `role` with `args` (a list of strings; a table for `stack-node`);
    a worker's environment gets `worker_env` too. ProcError saying what is wrong."""
    if role in ROLE_COMMANDS:
        if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
            raise ProcError(f"role {role!r} takes its arguments as a list of strings")
        env = {**os.environ, **worker_env} if role == "worker" and worker_env else None
        return Launch(procs.child_argv(ROLE_COMMANDS[role], *args), env)
    if role != "stack-node":
        raise ProcError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if not isinstance(args, dict) or not isinstance(args.get("stack"), str):
        raise ProcError("role 'stack-node' takes {stack: PATH, node: nN, port?, host?, "
                        "redis_url?}")
    node = str(args.get("node", "n1"))
    if not STACK_NODE.fullmatch(node):
        raise ProcError(f"stack node {node!r}: name it n1, n2, ...")
    try:
        stack = load_stack(args["stack"])
    except (StackError, OSError) as exc:
        raise ProcError(f"stack file {args['stack']}: {exc}") from None
    redis_url = args.get("redis_url") or stack.broker.url
    if stack.broker.kind == "harness" and redis_url is None:
        raise ProcError("the stack uses the harness's broker: give its redis_url")
    host = str(args.get("host", LOOPBACK))
    port = int(args.get("port") or free_port(host))
    launch = node_launch(stack, node, port, redis_url, host)
    return Launch(launch.argv, launch.env, launch.cwd, int(stack.node.stop_signal),
                  stack.node.drain_deadline)


@dataclass
class Entry:
    """One named process of the agent and what is known of it."""

    proc: str
    role: str
    args: Any
    pid: int
    started_at: float  # the process's start time (psutil create_time): its identity
    since: float  # wall time of the last change of state
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float = STOP_TIMEOUT
    restarts: int = 0
    state: str = "running"  # running | paused | exited
    exit: str = ""  # how it ended: "code 0", "signal SIGKILL", DOWN, ...
    child: procs.Child | None = field(default=None, repr=False)
    handle: psutil.Process | None = field(default=None, repr=False)

    def persisted(self) -> dict[str, Any]:
        """What the state file keeps of it."""
        return {"proc": self.proc, "role": self.role, "args": self.args, "pid": self.pid,
                "started_at": self.started_at, "since": self.since, "state": self.state,
                "exit": self.exit, "restarts": self.restarts, "stop_signal": self.stop_signal,
                "stop_timeout": self.stop_timeout}

    def row(self) -> dict[str, Any]:
        """Its line of a report: the persisted fields with CPU % and RSS (0 once exited)."""
        cpu, rss = 0.0, 0
        if self.state != "exited" and self.handle is not None:
            with contextlib.suppress(psutil.Error):
                with self.handle.oneshot():
                    cpu = self.handle.cpu_percent(None)
                    rss = self.handle.memory_info().rss
        row = self.persisted()
        del row["stop_signal"], row["stop_timeout"], row["started_at"]
        return {**row, "cpu": round(cpu, 1), "rss": rss}


def same_process(pid: int, started_at: float) -> psutil.Process | None:
    """The live process `pid` if it is still the one that started at `started_at` (not a
    zombie, not a reused PID), else None."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started_at) > 0.05:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return process


def _ended(code: int | None) -> str:
    if code is None:
        return "ended"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


class ProcTable:
    """The agent's named processes (see the module docstring). `on_change` is called after
    every change worth saving (a start, an exit, a pause...)."""

    def __init__(self, state_dir: Path, tasks: Tasks,
                 on_change: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time,
                 worker_env: Mapping[str, str] | None = None) -> None:
        self.log_dir = state_dir / "logs"
        self.worker_env = dict(worker_env or {})
        self.tasks = tasks
        self.on_change = on_change
        self.clock = clock
        self.entries: dict[str, Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, proc: str) -> asyncio.Lock:
        """The lock serialising the commands on one process (a stop waits, a status not)."""
        return self._locks.setdefault(proc, asyncio.Lock())

    def get(self, proc: str) -> Entry:
        """The entry named `proc`; ProcError if there is none."""
        entry = self.entries.get(proc)
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ProcError(f"no process named {proc!r} on this agent (known: {known})")
        return entry

    def rows(self) -> list[dict[str, Any]]:
        """Every process's report line, by name."""
        return [self.entries[name].row() for name in sorted(self.entries)]

    def persisted(self) -> list[dict[str, Any]]:
        """What the state file keeps: every entry."""
        return [entry.persisted() for entry in self.entries.values()]

    def _set(self, entry: Entry, state: str, exit: str = "") -> None:
        entry.state, entry.exit, entry.since = state, exit, self.clock()
        self.on_change()

    async def start(self, proc: str, role: str, args: Any, restarts: int = 0) -> Entry:
        """Start `proc` in `role` (ProcError: bad name, role or arguments, already running,
        or the command cannot be started)."""
        if not PROC_NAME.fullmatch(proc):
            raise ProcError(f"process name {proc!r}: use 1-40 letters, digits, '.', '_', '-'")
        old = self.entries.get(proc)
        if old is not None and old.state != "exited":
            raise ProcError(f"{proc} is already {old.state} (pid {old.pid}): stop or restart it")
        launch = plan(role, args, self.worker_env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        output = self.log_dir / f"{proc}.log"
        with output.open("a") as file:
            file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {role}: "
                       f"{' '.join(launch.argv)}\n")
        try:
            child = await procs.spawn(
                launch.argv, proc, stdout=False, output_log=output, env=launch.env,
                cwd=launch.cwd, tasks=self.tasks, outlive=True,
            )  # fmt: skip
        except OSError as exc:
            raise ProcError(f"cannot start {proc}: {exc}") from None
        try:
            handle = psutil.Process(child.pid)
            started_at = handle.create_time()
        except psutil.Error:  # it died already: the watcher reports how
            handle, started_at = None, 0.0
        entry = Entry(proc, role, args, child.pid, started_at, self.clock(), launch.stop_signal,
                      launch.stop_timeout, restarts, child=child, handle=handle)
        self.entries[proc] = entry
        self.tasks.spawn(self._watch(entry, child), f"watch-{proc}")
        log.info("started %s (%s) pid %s", proc, role, child.pid)
        self.on_change()
        return entry

    async def _watch(self, entry: Entry, child: procs.Child) -> None:
        await child.exited.wait()
        if entry.child is child and entry.state != "exited":
            self._set(entry, "exited", _ended(child.returncode))
            log.info("%s (pid %s) exited: %s", entry.proc, entry.pid, entry.exit)

    def _live(self, entry: Entry) -> bool:
        """Signalling `entry` is safe and useful: ours and not reaped, or an adopted process
        that is still the same one."""
        if entry.state == "exited":
            return False
        if entry.child is not None:
            return entry.child.alive
        return same_process(entry.pid, entry.started_at) is not None

    def _live_entry(self, proc: str) -> Entry:
        entry = self.get(proc)
        if not self._live(entry):
            raise ProcError(f"{proc} is not running ({entry.exit or entry.state})")
        return entry

    async def stop(self, proc: str, graceful: bool = True) -> Entry:
        """Stop `proc`: its stop signal, SIGKILL after its deadline (graceful), or SIGKILL at
        once; returns once it is gone."""
        entry = self._live_entry(proc)
        sig = entry.stop_signal if graceful else None
        if entry.child is not None:
            code = await entry.child.stop(sig, entry.stop_timeout)
            if entry.state != "exited":
                self._set(entry, "exited", _ended(code))
            return entry
        await self._stop_adopted(entry, sig)
        return entry

    async def _stop_adopted(self, entry: Entry, sig: int | None) -> None:
        """Stop a process this agent did not start (no exit code to wait for: poll)."""
        if sig is None:
            procs.kill_group(entry.pid)
        else:
            procs.signal_group(entry.pid, signal.SIGCONT)
            procs.signal_group(entry.pid, sig)
        deadline = time.monotonic() + entry.stop_timeout
        while same_process(entry.pid, entry.started_at) is not None:
            if time.monotonic() > deadline:
                log.warning("%s (pid %s) outlived its stop deadline: SIGKILL", entry.proc,
                            entry.pid)
                procs.kill_group(entry.pid)
                deadline = float("inf")
            await asyncio.sleep(POLL)
        name = signal.Signals(sig).name if sig is not None else "SIGKILL"
        self._set(entry, "exited", f"stopped by {name}")

    def pause(self, proc: str) -> Entry:
        """SIGSTOP the process group."""
        entry = self._live_entry(proc)
        procs.signal_group(entry.pid, signal.SIGSTOP)
        self._set(entry, "paused")
        return entry

    def resume(self, proc: str) -> Entry:
        """SIGCONT the process group."""
        entry = self._live_entry(proc)
        procs.signal_group(entry.pid, signal.SIGCONT)
        self._set(entry, "running")
        return entry

    async def restart(self, proc: str) -> Entry:
        """Stop it (if it runs) and start it again with the same role and arguments."""
        entry = self.get(proc)
        if self._live(entry):
            await self.stop(proc)
        return await self.start(proc, entry.role, entry.args, entry.restarts + 1)

    def refresh(self) -> None:
        """Notice what signals did not tell us: an adopted process that ended, a process
        paused or resumed by someone else."""
        for entry in list(self.entries.values()):
            if entry.state == "exited" or (entry.child is not None and not entry.child.alive):
                continue
            if entry.child is not None:
                process = entry.handle
                if process is None:
                    continue  # it died at once: its watcher reports how
            else:
                process = same_process(entry.pid, entry.started_at)
            if process is None:
                self._set(entry, "exited", "ended (not started by this agent: no exit code)")
                continue
            with contextlib.suppress(psutil.Error):
                stopped = process.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
                if stopped != (entry.state == "paused"):
                    self._set(entry, "paused" if stopped else "running")

    def adopt(self, saved: Iterable[Mapping[str, Any]]) -> list[str]:
        """Take over the entries of a previous run of this agent (its state file): the live
        ones with the same PID and start time are re-adopted, the others reported exited.
        Returns the names re-adopted."""
        adopted = []
        for item in saved:
            try:
                entry = Entry(str(item["proc"]), str(item["role"]), item["args"],
                              int(item["pid"]), float(item["started_at"]), float(item["since"]),
                              int(item["stop_signal"]), float(item["stop_timeout"]),
                              int(item["restarts"]), str(item["state"]), str(item["exit"]))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("state file: an entry that cannot be read (%r): %s", exc, item)
                continue
            self.entries[entry.proc] = entry
            if entry.state == "exited":
                continue
            entry.handle = same_process(entry.pid, entry.started_at)
            if entry.handle is None:
                self._set(entry, "exited", DOWN)
                log.warning("%s (pid %s) %s", entry.proc, entry.pid, DOWN)
                continue
            adopted.append(entry.proc)
            log.info("re-adopted %s (%s) pid %s", entry.proc, entry.role, entry.pid)
        self.refresh()
        return adopted

    async def stop_all(self) -> None:
        """Stop every live process (the agent is stopping)."""
        live = [name for name, entry in self.entries.items() if self._live(entry)]
        results = await asyncio.gather(*(self.stop(name) for name in live),
                                       return_exceptions=True)
        for name, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                log.error("stopping %s failed: %r", name, result)
