"""`wsconsole agent`: run processes on this host on the console's signed commands.

One agent per extra host. It shares nothing with the console but the broker (one server or
a cluster: brokeraddr.py) and a secret (agentwire.py):

- it reads its command stream (`XREAD BLOCK` from the last entry id it read, kept in its
  state file, so the commands sent while it was away are still read), opens each entry with
  the secret and acts on it; a refusal (bad signature, malformed, not for it, stale,
  replayed) is logged and reported as a signed `refused` report with the entry's id, and
  never acted on;
- every command carries an id; its outcome is a signed `result` report with that id, kept
  in memory (and in the state file) so the same id sent again is answered again, never run
  twice. The state file is written before a batch is acted on: a command is run at most
  once, even if the agent dies in between;
- `hello` when it starts and whenever the broker comes back (its full process table: the
  console reconciles), `state` every `heartbeat` seconds (the console marks an agent lost
  after a few seconds without one), `bye` when it stops;
- broker lost: its processes keep running, it retries with backoff (core/backoff.py), and
  results that could not be sent wait in a bounded outbox;
- killed (even SIGKILL) and started again with the same state dir: it re-adopts its live
  processes (agentprocs.py); SIGTERM or SIGINT: it stops its processes and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from wsconsole import __version__
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.tasks import Tasks, raise_if_cancelled
from wsconsole.harness.agentprocs import ProcError, ProcTable
from wsconsole.harness.agentwire import (
    CONSOLE,
    DEFAULT_WINDOW,
    REPORTS_MAXLEN,
    REPORTS_STREAM,
    WORKER_SECRET_ENV,
    Message,
    Refused,
    Signer,
    commands_stream,
)
from wsconsole.harness.brokeraddr import open_client

log = logging.getLogger(__name__)

HEARTBEAT = 1.0  # seconds between state reports
READ_BLOCK_MS = 1_000  # one XREAD waits at most this long
READ_COUNT = 100
BROKER_TIMEOUT = 3.0  # socket timeout of the broker connection (> the XREAD block)
OUTBOX = 1_000  # results and refusals kept while the broker is away
HANDLED = 500  # command outcomes remembered (answered again for the same id)
STATE_FILE = "agent.json"
COMMANDS = ("start", "stop", "kill", "pause", "resume", "restart", "status")


def reconnect_policy() -> BackoffPolicy:
    """How an agent retries the broker: 0.5 s doubling to 10 s, plus up to 0.5 s jitter."""
    return BackoffPolicy(initial=0.5, cap=10.0, jitter=0.5)


class Agent:
    """One agent (see the module docstring): `await run()` until `request_stop()`."""

    def __init__(self, broker_url: str, name: str, secret: str, state_dir: Path, *,
                 advertise: str | None = None, window: float = DEFAULT_WINDOW,
                 heartbeat: float = HEARTBEAT) -> None:
        self.broker_url = broker_url
        self.name = name
        self.signer = Signer(name, secret, window=window)
        self.state_dir = state_dir
        self.advertise = advertise or socket.gethostname()
        self.heartbeat = heartbeat
        self.tasks = Tasks(prefix=f"agent-{name}")
        self.table = ProcTable(state_dir, self.tasks, on_change=self.save,
                               worker_env={WORKER_SECRET_ENV: secret})
        self.last_id = ""
        self.handled: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._running: set[str] = set()
        self._outbox: deque[tuple[str, dict[str, Any]]] = deque(maxlen=OUTBOX)
        self._client: Any = None
        self._stopping = asyncio.Event()
        self._started = time.time()

    @property
    def state_path(self) -> Path:
        """The agent's state file."""
        return self.state_dir / STATE_FILE

    def request_stop(self) -> None:
        """Stop the agent (SIGTERM/SIGINT): its processes are stopped, `run` returns."""
        self._stopping.set()

    # ------------------------------------------------------------------ state file

    def load(self) -> None:
        """Read the state file of a previous run (if any) and re-adopt its processes."""
        try:
            saved = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            saved = {}
        except (OSError, ValueError) as exc:
            log.error("state file %s cannot be read (%s): starting afresh", self.state_path,
                      exc)
            saved = {}
        self.last_id = str(saved.get("last_id") or "")
        self.signer.nonces.restore(saved.get("nonces") or {})
        self.handled.update(saved.get("handled") or {})
        adopted = self.table.adopt(saved.get("procs") or [])
        if saved:
            log.info("state file read: %d processes re-adopted, reading commands after %s",
                     len(adopted), self.last_id or "the window")

    def save(self) -> None:
        """Write the state file (a temporary file renamed over it: never half written)."""
        state = {"name": self.name, "last_id": self.last_id, "procs": self.table.persisted(),
                 "nonces": self.signer.nonces.snapshot(), "handled": dict(self.handled)}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, self.state_path)

    # ------------------------------------------------------------------ the run

    async def run(self) -> int:
        """Serve commands until asked to stop; then stop every process. Returns 0."""
        self.load()
        self.save()
        self.tasks.spawn(self._beat(), "heartbeat")
        policy = reconnect_policy()
        try:
            while not self._stopping.is_set():
                try:
                    await self._serve(policy)
                    break  # asked to stop, still connected: _shutdown says bye
                except (RedisError, OSError) as exc:
                    if self._client is not None:
                        log.warning("broker lost (%s); processes keep running", exc)
                    else:
                        log.warning("broker unreachable at %s: %s", self.broker_url, exc)
                    await self._disconnect()
                delay = policy.next_delay() or policy.cap
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            await self._shutdown()
        return 0

    async def _serve(self, policy: BackoffPolicy) -> None:
        """Connect, say hello, then read commands until the broker fails or we stop."""
        client = await open_client(self.broker_url, timeout=BROKER_TIMEOUT)
        self._client = client
        await self._report("hello", self._hello())
        log.info("connected to the broker; hello sent with %d processes",
                 len(self.table.entries))
        policy.reset()
        while self._outbox:
            kind, body = self._outbox[0]
            await self._report(kind, body)
            self._outbox.popleft()
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                read = asyncio.ensure_future(self._read(client))
                await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await read
                    return
                self._take(read.result())
        finally:
            stop.cancel()

    async def _read(self, client: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
        start = self.last_id or f"{int((time.time() - self.signer.window) * 1000)}-0"
        answer = await client.xread({commands_stream(self.name): start}, count=READ_COUNT,
                                    block=READ_BLOCK_MS)
        raise_if_cancelled()  # the entries are read again next time (last_id is unchanged)
        return [entry for _, entries in answer or [] for entry in entries]

    def _take(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Open a batch, save the position and the nonces, then act (at most once)."""
        if not entries:
            return
        accepted: list[tuple[str, Message]] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            try:
                message = self.signer.open(fields)
                if message.kind not in COMMANDS or not isinstance(message.body.get("id"), str):
                    raise Refused("malformed", f"no command {message.kind!r} with an id")
            except Refused as refused:
                log.warning("refused entry %s: %s", entry_id, refused)
                self._send_later("refused", {"entry": entry_id, "reason": refused.reason,
                                             "detail": refused.detail})
                continue
            accepted.append((entry_id, message))
        self.last_id = entry_id
        self.save()
        for entry_id, message in accepted:
            self._dispatch(entry_id, message)

    def _dispatch(self, entry_id: str, message: Message) -> None:
        command_id = message.body["id"]
        if command_id in self.handled:
            log.info("command %s (%s) was already handled: answered again", command_id,
                     message.kind)
            self._send_later("result", self.handled[command_id])
            return
        if command_id in self._running:
            log.info("command %s (%s) is being handled: its result will follow", command_id,
                     message.kind)
            return
        self._running.add(command_id)
        self.tasks.spawn(self._execute(entry_id, message), f"command-{command_id}")

    async def _execute(self, entry_id: str, message: Message) -> None:
        body, kind = message.body, message.kind
        outcome: dict[str, Any] = {"id": body["id"], "command": kind, "entry": entry_id,
                                   "proc": body.get("proc"), "ok": True}
        try:
            if kind == "status":
                self.table.refresh()
                outcome["procs"] = self.table.rows()
            else:
                proc = body.get("proc")
                if not isinstance(proc, str):
                    raise ProcError(f"{kind} needs a process name ('proc')")
                async with self.table.lock(proc):
                    entry = await self._act(kind, proc, body)
                outcome["row"] = entry.row()
            log.info("command %s %s %s: done", body["id"], kind, body.get("proc") or "")
        except ProcError as exc:
            outcome.update(ok=False, error=str(exc))
            log.warning("command %s %s %s failed: %s", body["id"], kind, body.get("proc") or "",
                        exc)
        except Exception as exc:  # the console must get an answer, whatever went wrong
            outcome.update(ok=False, error=f"internal error: {exc!r}")
            log.exception("command %s %s failed", body["id"], kind)
        finally:
            self._running.discard(body["id"])
        self.handled[body["id"]] = outcome
        while len(self.handled) > HANDLED:
            self.handled.popitem(last=False)
        self.save()
        self._send_later("result", outcome)

    async def _act(self, kind: str, proc: str, body: dict[str, Any]) -> Any:
        table = self.table
        if kind == "start":
            return await table.start(proc, str(body.get("role")), body.get("args", []))
        if kind in ("stop", "kill"):
            return await table.stop(proc, graceful=kind == "stop")
        if kind == "restart":
            return await table.restart(proc)
        return table.pause(proc) if kind == "pause" else table.resume(proc)

    # ------------------------------------------------------------------ reports

    def _hello(self) -> dict[str, Any]:
        return {**self._identity(), "version": __version__, "started": self._started,
                "window": self.signer.window, "procs": self.table.rows()}

    def _identity(self) -> dict[str, Any]:
        return {"host": socket.gethostname(), "address": self.advertise, "pid": os.getpid()}

    async def _report(self, kind: str, body: dict[str, Any]) -> None:
        """Sign and add one report (RedisError/OSError when the broker fails)."""
        if self._client is None:
            raise ConnectionError("not connected to the broker")
        fields = self.signer.seal(CONSOLE, kind, body)
        await self._client.xadd(REPORTS_STREAM, fields, maxlen=REPORTS_MAXLEN,
                                approximate=True)

    def _send_later(self, kind: str, body: dict[str, Any]) -> None:
        """Send a result or refusal now in a task; kept in the outbox if the broker fails."""
        self.tasks.spawn(self._send_or_keep(kind, body), f"report-{kind}")

    async def _send_or_keep(self, kind: str, body: dict[str, Any]) -> None:
        try:
            await self._report(kind, body)
        except (RedisError, OSError) as exc:
            log.info("%s report kept until the broker is back: %s", kind, exc)
            self._outbox.append((kind, body))

    async def _beat(self) -> None:
        """Every `heartbeat` s: notice exits of adopted processes, send the state report."""
        while True:
            self.table.refresh()
            if self._client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._report("state", {**self._identity(),
                                                 "procs": self.table.rows()})
            await asyncio.sleep(self.heartbeat)

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _shutdown(self) -> None:
        """Stop every process, say bye if the broker is there, save the state."""
        log.info("stopping: %d processes to stop", len(self.table.entries))
        await self.table.stop_all()
        self.save()
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._report("bye", {**self._identity(),
                                                            "procs": self.table.rows()}), 2.0)
        await self._disconnect()
        await self.tasks.cancel_all()


__all__ = ["COMMANDS", "Agent", "reconnect_policy"]
