"""Launching the supervisor's node and balancer processes and knowing when each is ready.

A member is started through harness/procs.py (its own process group, PDEATHSIG, reaped by a
task) and a watch task reports its exit. One of ours (a harness node, the balancer) gets the
cluster's secrets in its environment (never on the command line, so `ps` does not show
them), its stderr appended to `<log dir>/<name>.log`, and is ready once it has printed its
`{"event": "listening", "port": N}` line; after that its stdout is read to the end so it
never blocks on a full pipe. A user's node (harness/stacknodes.py) is started by
`spawn_member` under a keeper and judged ready by its own rules.

With `ClusterConfig.tls` every member of ours is started with `tls_args()`: a certificate of
wsconsole's local CA (core/localca.py) for the loopback names, written once per cluster to
a private temporary folder (a stack's own nodes stay plain behind the balancer, which serves
wss:// to the clients).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from wsconsole.core.localca import CAError, LocalCA, ServerFiles
from wsconsole.core.tasks import Tasks
from wsconsole.harness import auth, procs
from wsconsole.harness.clusterconfig import (
    TLS_HOSTS,
    ClusterConfig,
    ClusterError,
    NodeState,
)
from wsconsole.harness.control import CONTROL_KEY_ENV
from wsconsole.logs import log_dir

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Member:
    """A node or balancer process the supervisor started, and why it may exit."""

    proc: procs.Child
    port: int = 0
    expected_exit: bool = False  # somebody asked it to go: its exit is no failure
    exit_state: NodeState = NodeState.STOPPED  # the node state its expected exit leads to

    @property
    def name(self) -> str:
        """The node id, or "balancer"."""
        return self.proc.name

    @property
    def pid(self) -> int:
        """The OS process id (and its process group's)."""
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """True until the process has been reaped."""
        return self.proc.alive


class Launcher:
    """Starts members, owns their log directory and TLS files, and remembers every one
    still alive."""

    def __init__(self, config: ClusterConfig, control_key: str, tasks: Tasks) -> None:
        self.config = config
        self.control_key = control_key
        self.tasks = tasks
        self.stopping = False  # set by the supervisor's stop(): a late launch is refused
        self.log_dir: Path | None = None
        self._own_log_dir: tempfile.TemporaryDirectory[str] | None = None
        self._spawned: list[Member] = []
        self.ca: LocalCA | None = None  # with config.tls: the CA the certificate comes from
        self.tls: ServerFiles | None = None
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None

    def open_log_dir(self) -> Path:
        """The configured log directory (created); else, for a stack, a folder of its own
        under the user log folder, kept after the run (its nodes' output is worth reading
        after a crash); else a fresh temporary one."""
        stack = self.config.stack
        if self.config.log_dir is not None:
            self.log_dir = Path(self.config.log_dir)
        elif stack is not None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.log_dir = log_dir() / "stacks" / f"{stack.name}-{stamp}-{os.getpid()}"
        else:
            self._own_log_dir = tempfile.TemporaryDirectory(prefix="wsconsole-harness-")
            self.log_dir = Path(self._own_log_dir.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir

    def open_tls(self) -> ServerFiles | None:
        """With `config.tls`: a certificate of the local CA (made on first use) for the
        loopback names, written to a private temporary folder for the members (None
        without TLS); ClusterError when the CA cannot be read or written."""
        if not self.config.tls:
            return None
        try:
            self.ca = LocalCA()
            self._tls_dir = tempfile.TemporaryDirectory(prefix="wsconsole-tls-")
            self.tls = self.ca.write_server_files(TLS_HOSTS, Path(self._tls_dir.name))
        except CAError as exc:
            raise ClusterError(str(exc)) from None
        return self.tls

    def tls_args(self, backends: bool = False) -> list[str]:
        """The flags that make a member serve TLS (with `backends`: and talk TLS to the
        nodes behind it, trusting the local CA); none without TLS."""
        if self.tls is None or self.ca is None:
            return []
        args = ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        return args + (["--backend-ca", str(self.ca.cert_path)] if backends else [])

    def close(self) -> None:
        """Remove the TLS files (the members that read them are gone)."""
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    def alive(self) -> list[Member]:
        """Every member started and not yet reaped (starting ones included)."""
        return [member for member in self._spawned if member.alive]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[auth.SECRET_ENV] = self.config.secret
        env[CONTROL_KEY_ENV] = self.control_key
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    async def spawn_member(
        self,
        name: str,
        argv: list[str],
        on_exit: Callable[[Member], None],
        *,
        env: dict[str, str],
        cwd: str | Path | None = None,
        keeper: bool = False,
        stderr_log: Path | None = None,
        stderr_pipe: bool = False,
    ) -> Member:
        """Start a member process (not waiting for anything); `on_exit(member)` after its
        exit. A user's node runs under a keeper (harness/keeper.py)."""
        proc = await procs.spawn(
            argv, name, stderr_log=stderr_log, stderr_pipe=stderr_pipe, env=env, cwd=cwd,
            keeper=keeper, tasks=self.tasks,
        )  # fmt: skip
        member = Member(proc)
        self._spawned = [*self.alive(), member]
        self.tasks.spawn(self._watch(member, on_exit), f"watch-{name}")
        if self.stopping:  # stop() began while this member was being created
            member.expected_exit = True
            await proc.stop(None)
            raise ClusterError(f"{name}: the cluster is stopping")
        return member

    async def launch(
        self, name: str, argv: list[str], on_exit: Callable[[Member], None]
    ) -> tuple[Member, dict[str, Any]]:
        """Start one of our members, wait for its `listening` line (the hello, returned with
        it); after its exit `on_exit(member)` is called."""
        assert self.log_dir is not None, "open_log_dir() first"
        member = await self.spawn_member(
            name, argv, on_exit, env=self._env(), stderr_log=self.log_dir / f"{name}.log"
        )
        hello = await self._hello(member)
        member.port = int(hello["port"])
        self.tasks.spawn(self._drain_stdout(member), f"stdout-{name}")
        return member, hello

    async def _hello(self, member: Member) -> dict[str, Any]:
        proc, timeout = member.proc, self.config.ready_timeout
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            proc.kill()
            raise ClusterError(
                f"{member.name} printed nothing within {timeout:.0f} s; "
                f"log {proc.log_path}: {proc.log_tail()}"
            ) from None
        try:
            hello = orjson.loads(line) if line else None
        except orjson.JSONDecodeError:
            hello = None
        if not isinstance(hello, dict) or hello.get("event") != "listening":
            await proc.stop(None)
            raise ClusterError(
                f"{member.name} failed to start (exit code {proc.returncode}); "
                f"log {proc.log_path}: {proc.log_tail()}"
            )
        return hello

    async def _drain_stdout(self, member: Member) -> None:
        """Keep reading a member's stdout so it never blocks on a full pipe."""
        async for line in member.proc.lines():
            log.debug("%s: %s", member.name, line.decode(errors="replace").rstrip())

    async def _watch(self, member: Member, on_exit: Callable[[Member], None]) -> None:
        await member.proc.wait()
        on_exit(member)
