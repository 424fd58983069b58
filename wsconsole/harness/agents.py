"""The console's side of the agents: command them and keep a current view of every one.

`AgentsClient(broker_url, secret)` is the plain asyncio API the CLI (`wsconsole agents`),
the window's Cluster panel and the swarm (`swarm --agents A,B`) use:

    async with AgentsClient("redis://10.0.0.5:6379", secret) as agents:
        await agents.wait_for_agent("host-b")
        row = await agents.start("host-b", "n1", "node", ["--redis", url, "--port", "8101"])
        await agents.pause("host-b", "n1")
        view = agents.agents()["host-b"]       # AgentView: host, address, lost, procs...

- A reader task follows the reports stream (agentwire.REPORTS_STREAM) from a few seconds
  back, verifies each report with the secret, and keeps one `AgentView` per agent: its
  `state` reports (about every second) carry its full process table; it is `lost` after
  `lost_after` seconds without one, `stopped` after its `bye`. Reports that fail
  verification are logged and ignored.
- A command is a signed entry on the agent's command stream with a fresh id; the call waits
  (at most `timeout` s) for the agent's `result` with that id, or its `refused` report for
  that entry. Failures are `AgentError`s naming the agent: `AgentTimeout` (no answer, with
  when it was last seen), `AgentRefused` (the agent refused the entry: bad signature, stale,
  ...), `AgentCommandFailed` (the agent tried: no such process, bad role, ...).
- The broker may come and go: the reader retries with backoff; a command sent while the
  broker is down fails at once with `AgentError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.tasks import Tasks, raise_if_cancelled
from wsconsole.errors import WsconsoleError
from wsconsole.harness.agentwire import (
    COMMANDS_MAXLEN,
    CONSOLE,
    DEFAULT_WINDOW,
    REPORTS_STREAM,
    Refused,
    Signer,
    check_name,
    commands_stream,
)
from wsconsole.harness.brokeraddr import open_client

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 10.0  # seconds a command waits for its result by default
LOST_AFTER = 3.0  # seconds without a state report before an agent is lost
HISTORY = 5.0  # seconds of reports read back at open (every live agent sent one since)
READ_BLOCK_MS = 1_000
READ_COUNT = 500
BROKER_TIMEOUT = 3.0
UNMATCHED = 100  # refusals kept for a command whose entry id is not known yet


class AgentError(WsconsoleError, RuntimeError):
    """A command to an agent did not succeed; the message names the agent."""

    def __init__(self, agent: str, message: str) -> None:
        super().__init__(message)
        self.agent = agent


class AgentTimeout(AgentError, TimeoutError):
    """The agent did not answer in time (down, lost, or not reading its commands)."""


class AgentRefused(AgentError):
    """The agent refused the command's entry (`reason`: bad_signature, stale, ...)."""

    def __init__(self, agent: str, message: str, reason: str) -> None:
        super().__init__(agent, message)
        self.reason = reason


class AgentCommandFailed(AgentError):
    """The agent took the command and could not carry it out."""


@dataclass(frozen=True)
class ProcView:
    """One process on an agent, as its last report said."""

    proc: str
    role: str
    pid: int
    state: str  # running | paused | exited
    exit: str  # how it ended, once exited
    since: float  # wall time of its last change of state
    restarts: int
    cpu: float  # percent of one core
    rss: int  # bytes
    args: Any

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ProcView:
        """From a report's process row."""
        return cls(str(row.get("proc", "?")), str(row.get("role", "?")), int(row.get("pid", 0)),
                   str(row.get("state", "?")), str(row.get("exit", "")),
                   float(row.get("since", 0.0)), int(row.get("restarts", 0)),
                   float(row.get("cpu", 0.0)), int(row.get("rss", 0)), row.get("args"))

    @property
    def describe_state(self) -> str:
        """`running`, `paused`, or `exited (code 0)`."""
        return f"exited ({self.exit})" if self.state == "exited" and self.exit else self.state

    def cells(self) -> tuple[str, ...]:
        """Its line as text, as the CLI and the window show it (PROC_COLUMNS)."""
        return (self.proc, self.describe_state, self.role, str(self.pid), clock(self.since),
                str(self.restarts), f"{self.cpu:.1f}", mib(self.rss))


PROC_COLUMNS = ("Process", "State", "Role", "PID", "Since", "Restarts", "CPU %", "RSS")


def mib(size: int) -> str:
    """A size in MiB with one decimal; `-` for none."""
    return f"{size / (1 << 20):.1f} MiB" if size else "-"


def clock(stamp: float) -> str:
    """A wall time as HH:MM:SS (local); `-` for none."""
    return datetime.datetime.fromtimestamp(stamp).strftime("%H:%M:%S") if stamp else "-"


@dataclass(frozen=True)
class AgentView:
    """One agent as its reports describe it; `state` is up, lost or stopped."""

    name: str
    host: str
    address: str
    pid: int
    version: str
    last_seen: float  # wall time of its last report (on the console's clock)
    state: str
    procs: tuple[ProcView, ...]

    @property
    def lost(self) -> bool:
        """No state report for `lost_after` seconds (and it did not say bye)."""
        return self.state == "lost"

    def cells(self, now: float) -> tuple[str, ...]:
        """Its line as text, in PROC_COLUMNS' places: name and address, state, how many
        processes run, its PID, how long ago it reported, -, and its processes' CPU and RSS."""
        live = [proc for proc in self.procs if proc.state != "exited"]
        return (f"{self.name}  {self.address}", self.state, f"{len(live)} running",
                str(self.pid), f"seen {max(0.0, now - self.last_seen):.1f} s ago", "",
                f"{sum(p.cpu for p in live):.1f}", mib(sum(p.rss for p in live)))


@dataclass
class _Known:
    """What the reader keeps of one agent."""

    host: str = ""
    address: str = ""
    pid: int = 0
    version: str = ""
    last_seen: float = 0.0
    bye: bool = False
    procs: tuple[ProcView, ...] = ()


class AgentsClient:
    """The console's view of the agents and its way to command them (module docstring).
    `await open()` (or `async with`) first, `await close()` at the end."""

    def __init__(self, broker_url: str, secret: str, *, timeout: float = COMMAND_TIMEOUT,
                 lost_after: float = LOST_AFTER, window: float = DEFAULT_WINDOW) -> None:
        self.broker_url = broker_url
        self.signer = Signer(CONSOLE, secret, window=window)
        self.timeout = timeout
        self.lost_after = lost_after
        self.connected = False
        self._known: dict[str, _Known] = {}
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._entries: dict[str, str] = {}  # entry id -> command id
        self._unmatched: OrderedDict[str, dict[str, Any]] = OrderedDict()  # refusals
        self._client: Any = None
        self._tasks = Tasks(prefix="agents-client")
        self._caught_up = asyncio.Event()

    async def __aenter__(self) -> AgentsClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self, timeout: float = BROKER_TIMEOUT, wait: bool = True) -> None:
        """Start following the reports. `wait`: connect first (OSError/RedisError, ValueError
        for a bad URL, when the broker cannot be reached now); otherwise the reader connects
        by itself, retrying (the window: agents show up once the broker answers). Later
        losses are retried either way."""
        if wait:
            self._client = await open_client(self.broker_url, timeout=timeout)
            await self._client.ping()
            self.connected = True
        self._tasks.spawn(self._follow(), "reports")

    async def close(self) -> None:
        """Stop following, fail what still waits, close the connection."""
        await self._tasks.cancel_all()
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        client, self._client = self._client, None
        self.connected = False
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    # ------------------------------------------------------------------ the view

    def agents(self) -> dict[str, AgentView]:
        """Every agent heard of, by name, as of now (cheap: a copy of the current table)."""
        now = time.time()
        views = {}
        for name, known in sorted(self._known.items()):
            state = "stopped" if known.bye else (
                "lost" if now - known.last_seen > self.lost_after else "up")
            views[name] = AgentView(name, known.host, known.address, known.pid, known.version,
                                    known.last_seen, state, known.procs)
        return views

    async def caught_up(self, timeout: float = BROKER_TIMEOUT) -> None:
        """Wait until the recent reports were read once (so `agents()` lists every live
        agent); TimeoutError if the broker does not answer in time."""
        await asyncio.wait_for(self._caught_up.wait(), timeout)

    async def wait_for_agent(self, agent: str, timeout: float | None = None) -> AgentView:
        """Wait until `agent` reports and is up; AgentTimeout after `timeout` s."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            view = self.agents().get(agent)
            if view is not None and view.state == "up":
                return view
            if time.monotonic() > deadline:
                raise AgentTimeout(agent, f"agent {agent!r} {self._seen(agent)}")
            await asyncio.sleep(0.05)

    def _seen(self, agent: str) -> str:
        known = self._known.get(agent)
        if known is None:
            return "was never seen on this broker (is it running, with the same secret?)"
        return f"was last seen {time.time() - known.last_seen:.1f} s ago"

    # ------------------------------------------------------------------ commands

    async def command(self, agent: str, kind: str, body: dict[str, Any] | None = None,
                      timeout: float | None = None) -> dict[str, Any]:
        """Send one command and return its successful result (AgentError otherwise)."""
        check_name(agent)
        if not self._tasks:
            raise AgentError(agent, "the agents client is not open: call open() first")
        if self._client is None:
            raise AgentError(agent, f"cannot send {kind} to agent {agent!r}: the broker at "
                                    f"{self.broker_url} is not reachable now")
        command_id = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        wait = self.timeout if timeout is None else timeout
        try:
            fields = self.signer.seal(agent, kind, {**(body or {}), "id": command_id})
            try:
                raw = await self._client.xadd(commands_stream(agent), fields,
                                              maxlen=COMMANDS_MAXLEN, approximate=True)
            except (RedisError, OSError) as exc:
                raise AgentError(agent, f"cannot send {kind} to agent {agent!r}: the broker "
                                        f"failed ({exc})") from None
            entry_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            self._entries[entry_id] = command_id
            if entry_id in self._unmatched:
                self._fail(future, agent, self._unmatched.pop(entry_id))
            try:
                result = await asyncio.wait_for(future, wait)
            except TimeoutError:
                raise AgentTimeout(agent, f"agent {agent!r} did not answer {kind} within "
                                          f"{wait:g} s: it {self._seen(agent)}") from None
            finally:
                self._entries.pop(entry_id, None)
        finally:
            self._waiting.pop(command_id, None)
        if not result.get("ok"):
            raise AgentCommandFailed(agent, f"agent {agent!r}: {kind} "
                                            f"{result.get('proc') or ''}: {result.get('error')}")
        return result

    async def start(self, agent: str, proc: str, role: str, args: Any,
                    timeout: float | None = None) -> ProcView:
        """Start process `proc` on `agent` in `role` ("node", "worker", "stack-node") with
        `args` (a list of strings; {stack, node, ...} for a stack node)."""
        result = await self.command(agent, "start", {"proc": proc, "role": role, "args": args},
                                    timeout)
        return ProcView.from_row(result["row"])

    async def stop(self, agent: str, proc: str, timeout: float | None = None) -> ProcView:
        """Stop it gracefully (its stop signal, SIGKILL after the deadline); returns once it
        is gone."""
        return await self._on_proc(agent, "stop", proc, timeout)

    async def kill(self, agent: str, proc: str, timeout: float | None = None) -> ProcView:
        """SIGKILL its process group."""
        return await self._on_proc(agent, "kill", proc, timeout)

    async def pause(self, agent: str, proc: str, timeout: float | None = None) -> ProcView:
        """SIGSTOP its process group."""
        return await self._on_proc(agent, "pause", proc, timeout)

    async def resume(self, agent: str, proc: str, timeout: float | None = None) -> ProcView:
        """SIGCONT its process group."""
        return await self._on_proc(agent, "resume", proc, timeout)

    async def restart(self, agent: str, proc: str, timeout: float | None = None) -> ProcView:
        """Stop it (if running) and start it again with the same role and arguments."""
        return await self._on_proc(agent, "restart", proc, timeout)

    async def status(self, agent: str, timeout: float | None = None) -> list[ProcView]:
        """The agent's full process table, asked now."""
        result = await self.command(agent, "status", {}, timeout)
        return [ProcView.from_row(row) for row in result.get("procs", [])]

    async def _on_proc(self, agent: str, kind: str, proc: str,
                       timeout: float | None) -> ProcView:
        result = await self.command(agent, kind, {"proc": proc}, timeout)
        return ProcView.from_row(result["row"])

    # ------------------------------------------------------------------ the reports

    async def _follow(self) -> None:
        """Read the reports stream for good, reconnecting with backoff when it fails."""
        last = f"{int((time.time() - HISTORY) * 1000)}-0"
        policy = BackoffPolicy(initial=0.5, cap=5.0, jitter=0.5)
        while True:
            try:
                if self._client is None:
                    self._client = await open_client(self.broker_url, timeout=BROKER_TIMEOUT)
                answer = await self._client.xread({REPORTS_STREAM: last}, block=READ_BLOCK_MS,
                                                  count=READ_COUNT)
                raise_if_cancelled()
                if not self.connected:
                    log.info("agents: the broker is back")
                self.connected = True
                policy.reset()
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("agents: the broker is lost (%s); retrying", exc)
                self.connected = False
                client, self._client = self._client, None
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.aclose()
                await asyncio.sleep(policy.next_delay() or policy.cap)
                continue
            read = 0
            for _, entries in answer or []:
                for raw_id, fields in entries:
                    last = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                    self._take(last, fields)
                    read += 1
            if read < READ_COUNT:
                self._caught_up.set()

    def _take(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            message = self.signer.open(fields)
        except Refused as refused:
            if refused.reason != "not_for_me":
                log.warning("agents: report %s ignored: %s", entry_id, refused)
            return
        agent, body = message.sender, message.body
        if message.kind in ("hello", "state", "bye"):
            known = self._known.setdefault(agent, _Known())
            if message.kind == "hello":
                log.info("agent %s (%s, pid %s, version %s) says hello with %d processes",
                         agent, body.get("address"), body.get("pid"), body.get("version"),
                         len(body.get("procs", [])))
                known.version = str(body.get("version", ""))
            known.host = str(body.get("host", known.host))
            known.address = str(body.get("address", known.address))
            known.pid = int(body.get("pid", known.pid))
            # live: when it arrived; read back at open: when it was sent (an agent that died
            # a moment before must not look alive for another `lost_after` seconds)
            now = time.time()
            known.last_seen = now if self._caught_up.is_set() else min(now, message.ts)
            known.bye = message.kind == "bye"
            known.procs = tuple(ProcView.from_row(row) for row in body.get("procs", []))
        elif message.kind == "result":
            self._result(agent, body)
        elif message.kind == "refused":
            self._refused(body, agent)

    def _result(self, agent: str, body: dict[str, Any]) -> None:
        level = logging.INFO if body.get("ok") else logging.WARNING
        log.log(level, "agent %s: %s %s -> %s", agent, body.get("command"),
                body.get("proc") or "", "ok" if body.get("ok") else body.get("error"))
        future = self._waiting.get(str(body.get("id")))
        if future is not None and not future.done():
            future.set_result(body)

    def _refused(self, body: dict[str, Any], agent: str) -> None:
        entry_id = str(body.get("entry"))
        log.warning("agent %s refused entry %s: %s (%s)", agent, entry_id, body.get("reason"),
                    body.get("detail"))
        command_id = self._entries.get(entry_id)
        future = self._waiting.get(command_id) if command_id is not None else None
        if future is None:
            self._unmatched[entry_id] = body
            while len(self._unmatched) > UNMATCHED:
                self._unmatched.popitem(last=False)
            return
        self._fail(future, agent, body)

    @staticmethod
    def _fail(future: asyncio.Future[dict[str, Any]], agent: str, body: dict[str, Any]) -> None:
        if not future.done():
            future.set_exception(AgentRefused(
                agent, f"agent {agent!r} refused the command: {body.get('reason')} "
                       f"({body.get('detail')})", str(body.get("reason"))))


__all__ = [
    "PROC_COLUMNS",
    "AgentCommandFailed",
    "AgentError",
    "AgentRefused",
    "AgentTimeout",
    "AgentView",
    "AgentsClient",
    "ProcView",
    "clock",
    "mib",
]
