"""The coordinator of a swarm split over workers (`wsconsole swarm --workers N / --agents`).

It sends the run's config on the control stream (runwire.py), has a `Launcher` start one
worker per part (local processes through harness/procs.py, or agents on other hosts), and
replays every journal batch into ONE Accounting (journal.py) as it arrives: the live figures
and the summary are that Accounting's, the same code and the same output as a one-process
swarm, plus a table of the workers (where, clients, sent, delivered, state).

Nothing is lost silently: batches are numbered per worker, so a gap is seen; a worker that
exits without its `done`, or goes silent for `LOST_AFTER` seconds (its process died, its
agent or host was lost), is reported by name, its records up to then still count, and the
summary lists it under `incomplete`. The coordinator beats every second on the control
stream (workers stop on their own without it), says `stop` at the end of the planned run or
on SIGINT (a second one: `abort`, no settle), and deletes the run's streams at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import RedisError

from wsconsole.core.metrics import percentile
from wsconsole.errors import WsconsoleError
from wsconsole.swarm.accounting import Accounting
from wsconsole.swarm.config import SwarmConfig
from wsconsole.swarm.connbook import ms
from wsconsole.swarm.journal import JournalError, WallClock, replay
from wsconsole.swarm.runwire import RunWire
from wsconsole.swarm.swarm import Stats

LOST_AFTER = 10.0  # seconds without a message from a running worker: lost
START_TIMEOUT = 30.0  # seconds for a worker to start and say hello
EXIT_GRACE = 2.0  # seconds to read a worker's last entries after its process ended
STOP_GRACE = 20.0  # seconds after `stop` and the settle phase before a part counts as lost
BEAT = 1.0
FINISHED = ("done", "lost", "failed")
LOAD_OVER = ("settle", "stopping", "done")  # a part's phases once it publishes no more


class Launcher(Protocol):
    """Starts the workers of a run somewhere and says when one is known to be gone."""

    secret_env: str  # the variable holding the run's secret in a worker's environment

    async def start(self, part: int, args: Sequence[str]) -> str:
        """Start `wsconsole swarm-worker <args>` for `part`; returns where it runs."""
        ...

    def gone(self, part: int) -> str | None:
        """Why the worker of `part` is known to be gone (its process ended, its agent was
        lost), None while it may be running."""
        ...

    def context(self, part: int) -> str:
        """What else is known of a silent worker's whereabouts ("its agent B is lost")."""
        ...

    async def stop(self) -> None:
        """Stop every worker this launcher started that still runs."""
        ...


@dataclass
class Part:
    """One worker's part of the run, as the coordinator sees it."""

    index: int
    clients: range
    where: str = "-"
    state: str = "starting"  # starting, running, done, lost, failed
    host: str | None = None
    batches: int = 0
    missing: int = 0  # batches that never arrived (a gap in the numbering)
    heard: float = field(default_factory=time.monotonic)
    gone_since: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def name(self) -> str:
        """How the summary names this worker."""
        return f"worker {self.index} ({self.where})"

    @property
    def complete(self) -> bool:
        """Every record of this part arrived."""
        return self.state == "done" and not self.missing

    def row(self) -> dict[str, Any]:
        """This worker's line of the workers table (JSON-ready)."""
        figures = self.summary or self.stats
        return {"part": self.index, "where": self.where, "host": self.host,
                "clients": len(self.clients), "first": self.clients.start,
                "sent": figures.get("sent"), "acknowledged": figures.get("acknowledged"),
                "delivered": figures.get("delivered"),
                "state": self.state, "batches": self.batches, "missing_batches": self.missing,
                "problem": self.problem}


class Coordinator:
    """Runs a swarm over workers; `await run()` returns the merged summary."""

    def __init__(self, config: SwarmConfig, wire_config: dict[str, Any], parts: list[range],
                 wire: RunWire, launcher: Launcher, worker_args: Callable[[int], list[str]],
                 on_stats: Callable[[Stats], None] | None = None,
                 ready: asyncio.Event | None = None) -> None:
        self.config = config
        self.wire_config = wire_config
        self.parts = [Part(k, clients) for k, clients in enumerate(parts)]
        self.wire = wire
        self.launcher = launcher
        self.worker_args = worker_args
        self.on_stats = on_stats
        self.clock = WallClock()
        self.accounting = Accounting(started_at=time.monotonic())
        for index in range(config.clients):  # every client is known before any batch
            self.accounting.client_added(config.client_name(index))
        self._stops = 0
        self._stop_sent = 0
        self._stop_at: float | None = None
        self._began = time.monotonic()
        self._ready_at: float | None = None  # every worker said hello (or the start timed out)
        self.ready = ready or asyncio.Event()  # set then: the swarm's clock starts there
        self._load_from: float | None = None
        self._settled_sent = False

    def stop(self) -> None:
        """End the load now (SIGINT); a second call also skips the settle phase."""
        self._stops += 1

    async def run(self) -> Stats:
        """Configure, launch, merge until every part finished; the merged summary."""
        cfg = self.config
        await self.wire.send("config", {"config": self.wire_config,
                                        "parts": [[p.clients.start, len(p.clients)]
                                                  for p in self.parts]})
        for part in self.parts:
            try:
                part.where = await self.launcher.start(part.index, self.worker_args(part.index))
            except (WsconsoleError, OSError) as exc:  # the others run; this part is missing
                part.state, part.problem = "failed", f"not started: {exc}"
            part.heard = time.monotonic()
        self._began = next_beat = next_stats = time.monotonic()
        try:
            while not all(p.state in FINISHED for p in self.parts):
                await self._read()
                now = time.monotonic()
                await self._drive(now)
                if now >= next_beat:
                    next_beat = now + BEAT
                    await self._quietly("beat")
                if now >= next_stats and self.ready.is_set():
                    next_stats = now + cfg.stats_interval
                    self._emit_stats()
                self._check_liveness(now)
        finally:
            await self._quietly("stop", abort=True)
            await self.launcher.stop()
            await self._delete_streams()
        return self.summary()

    async def _read(self) -> None:
        try:
            messages = await self.wire.read(block_ms=200)
        except (RedisError, OSError):
            await asyncio.sleep(0.2)  # the broker is away: the liveness check decides
            return
        for message in messages:
            body = message.body
            index = body.get("part")
            if not isinstance(index, int) or not 0 <= index < len(self.parts):
                continue
            self._on_message(self.parts[index], message.kind, body)

    def _on_message(self, part: Part, kind: str, body: dict[str, Any]) -> None:
        part.heard = time.monotonic()
        if part.state in ("done", "failed"):
            return
        if part.state == "lost":  # it comes back (a network cut healed): its records count
            part.state, part.problem = "running", None
        if kind == "hello":
            part.state, part.host = "running", str(body.get("host"))
        elif kind == "journal":
            self._journal(part, body)
        elif kind == "done":
            part.state, part.summary = "done", body.get("summary")
            part.missing += max(0, int(body.get("batches", 0)) - part.batches)
            if body.get("orphaned"):
                part.problem = "stopped on its own: it lost the coordinator"
        elif kind == "failed":
            part.state, part.problem = "failed", str(body.get("error"))

    def _journal(self, part: Part, body: dict[str, Any]) -> None:
        number = int(body.get("n", 0))
        if number <= part.batches:
            return  # already replayed (cannot happen on a stream; kept exact regardless)
        part.missing += number - part.batches - 1
        part.batches = number
        part.state = "running"
        part.stats = dict(body.get("stats") or {}, phase=body.get("phase"))
        try:
            replay(self.accounting, body.get("records") or [], self.clock)
        except JournalError as exc:
            part.missing += 1
            part.problem = str(exc)

    async def _drive(self, now: float) -> None:
        """The phases of the whole swarm: `go` once every part is up (and, with wait_joined,
        every client joined), `stop` after the duration (or on SIGINT), `settled` once the
        merged accounting has every ack and every owed delivery."""
        cfg = self.config
        if self._ready_at is None and (all(p.state != "starting" for p in self.parts)
                                       or now - self._began > START_TIMEOUT):
            self._ready_at = now
            # the swarm starts when its clients do, as a one-process swarm's (t, connect times)
            self.accounting.started_at = self.accounting.book.started_at = now
            self.ready.set()
        if self._load_from is None and self._ready_at is not None and (
                cfg.wait_joined is None or len(self.accounting.subs) >= cfg.clients
                or now - self._ready_at >= cfg.wait_joined):
            self._load_from = now
            await self._quietly("go")
        if (self._load_from is not None and cfg.duration is not None and not self._stops
                and now - self._load_from >= cfg.duration):
            self._stops = 1
        while self._stop_sent < min(self._stops, 2):
            self._stop_sent += 1
            await self._quietly("stop", abort=self._stop_sent > 1)
            self._stop_at = self._stop_at or now
        if self._stop_sent and not self._settled_sent and self._all_publishes_in() and \
                self.accounting.settled():
            self._settled_sent = True
            await self._quietly("settled")

    def _check_liveness(self, now: float) -> None:
        for part in self.parts:
            if part.state in FINISHED:
                continue
            why = self.launcher.gone(part.index)
            if why is not None:
                part.gone_since = part.gone_since or now
                if now - part.gone_since > EXIT_GRACE:  # its last entries were read by now
                    part.state, part.problem = "lost", why
            elif now - part.heard > (LOST_AFTER if part.state == "running" else START_TIMEOUT):
                part.state = "lost"
                context = self.launcher.context(part.index)
                part.problem = f"no word from it for {now - part.heard:.0f} s" + (
                    f" ({context})" if context else "")
            elif self._stop_at is not None and now - self._stop_at > self.config.settle + \
                    STOP_GRACE:
                part.state = "lost"
                part.problem = f"still running {STOP_GRACE:.0f} s after the stop"

    def _all_publishes_in(self) -> bool:
        """Every part still running ended its load and sent its journal since: its last batch
        was taken in its settle phase (or later), so every publish it made is merged."""
        return all(p.stats.get("phase") in LOAD_OVER for p in self.parts
                   if p.state not in FINISHED)

    async def _quietly(self, kind: str, **body: Any) -> None:
        try:
            await self.wire.send(kind, body)
        except (RedisError, OSError):
            pass  # the workers stop on their own without beats

    async def _delete_streams(self) -> None:
        try:
            await self.wire.delete()
        except (RedisError, OSError):
            pass  # capped, and the broker is gone anyway

    # ---- figures ---------------------------------------------------------------------------

    @property
    def phase(self) -> str:
        """The parts' phases as their last batches said ("load", "load/settle", ...)."""
        if all(p.state in FINISHED for p in self.parts):
            return "done"
        phases = {str(p.stats.get("phase")) for p in self.parts if p.stats.get("phase")}
        return "/".join(sorted(phases)) or "starting"

    def _emit_stats(self) -> None:
        self.accounting.compact(time.monotonic())
        snapshot = self.accounting.snapshot(time.monotonic())
        snapshot["phase"] = self.phase
        snapshot["workers"] = [p.row() for p in self.parts]
        if self.on_stats is not None:
            self.on_stats(snapshot)

    def summary(self) -> Stats:
        """The merged figures, the heartbeat lab's over every part, the workers table, and
        which parts are incomplete (not done, or with batches missing)."""
        summary = self.accounting.summary(time.monotonic())
        summary.update(lab_figures([p.summary for p in self.parts if p.summary]))
        summary["workers"] = [p.row() for p in self.parts]
        summary["incomplete"] = [p.name for p in self.parts if not p.complete]
        summary["refused_entries"] = dict(self.wire.refused)
        return summary


def lab_figures(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The heartbeat lab's figures (fleet.py) over several parts: every drop counted, the
    median over all of them, the longest kept over every part."""
    drops = [d for s in summaries for d in s.get("drops_s", [])]
    kept = [s["dead_kept_max_ms"] for s in summaries if s.get("dead_kept_max_ms") is not None]
    return {
        "pongs_off_clients": sum(s.get("pongs_off_clients", 0) for s in summaries),
        "dead_drops": len(drops),
        "dead_drop_p50_ms": ms(percentile(drops, 50)),
        "dead_drop_max_ms": ms(max(drops) if drops else None),
        "dead_kept_max_ms": max(kept) if kept else None,
    }
