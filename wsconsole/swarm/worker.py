"""One worker of a swarm split over processes and hosts (`wsconsole swarm-worker`).

It reads its config from the run's control stream (the coordinator's signed `config`: the
SwarmConfig and every part's slice of clients), runs its part (swarm.py, with a
`JournalingAccounting`), and streams the journal to the coordinator in signed batches every
`FLUSH` seconds or `BATCH` records (runwire.py), each with its live figures for the per-worker
table. At the end it sends `done` with its own part summary (the coordinator checks merged
counts against the sum of the parts) and exits.

The coordinator drives the phases (`go`, `stop`, `settled`: see WorkerSwarm), so the parts
start and end their load together. It stops when the coordinator says `stop` (`abort`: no
settle phase), and on its own when the coordinator is gone: no `beat` for `ORPHAN_AFTER` seconds, or
the broker unreachable that long. It never runs on as an orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from redis.exceptions import RedisError

from wsconsole.core.tasks import spawn
from wsconsole.swarm.config import SwarmConfig, SwarmConfigError
from wsconsole.swarm.journal import JournalingAccounting
from wsconsole.swarm.parts import config_from_wire
from wsconsole.swarm.runwire import RunWire
from wsconsole.swarm.swarm import Stats, Swarm

log = logging.getLogger(__name__)

FLUSH = 0.2  # seconds between two journal batches
BATCH = 1_000  # records per batch at most
ORPHAN_AFTER = 10.0  # seconds without a beat from the coordinator: stop
CONFIG_TIMEOUT = 30.0  # seconds to wait for the config


class WorkerSwarm(Swarm):
    """The part of a swarm one worker runs: its accounting records every event it is fed,
    and the coordinator drives its phases, so every part loads and settles together as one
    swarm would: the load starts on `go` (with wait_joined: once every part's clients
    joined), ends on `stop`, and the settle phase ends on `settled` (the merged accounting
    has every ack and every owed delivery; a part alone cannot know) or its deadline."""

    accounting: JournalingAccounting

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.go = asyncio.Event()
        self.all_settled = False

    async def _wait_all_joined(self, limit: float) -> None:
        waits = [spawn(self.go.wait(), "worker-go"), spawn(self._stop.wait(), "worker-stop")]
        try:
            await asyncio.wait(waits, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _wait_load_end(self, started: float) -> None:
        await self._stop.wait()

    def _settled(self) -> bool:
        return self.all_settled

    def _new_accounting(self, started: float) -> JournalingAccounting:
        accounting = JournalingAccounting(started)
        # the other parts' publish ids delivered here are the swarm's, not foreign
        others = (i for i in range(self.config.clients) if i not in self.part)
        accounting.add_peers(self.config.client_name(i) for i in others)
        return accounting


class Worker:
    """The worker process's loop (see the module docstring); `await run()` -> exit code."""

    def __init__(self, wire: RunWire, part: int, *, orphan_after: float = ORPHAN_AFTER) -> None:
        self.wire = wire
        self.part = part
        self.orphan_after = orphan_after
        self.swarm: WorkerSwarm | None = None
        self._stats: Stats = {}
        self._batches = 0
        self._last_beat = time.monotonic()
        self._stops = 0

    async def run(self) -> int:
        """Get the config, run the part, stream the journal; 0 done, 1 stopped as an orphan
        or failed, 2 for a config this host cannot run."""
        try:
            config, part = await self._config()
            self.swarm = WorkerSwarm(config, on_stats=self._on_stats, part=part)
        except SwarmConfigError as exc:
            await self._send_quietly("failed", {"part": self.part, "error": str(exc)})
            log.error("worker %d: %s", self.part, exc)
            return 2
        await self.wire.send("hello", {"part": self.part, "host": socket.gethostname(),
                                       "pid": os.getpid(), "first": part.start,
                                       "count": len(part)})
        running = spawn(self.swarm.run(), f"swarm-part-{self.part}")
        orphaned = False
        while not running.done():
            orphaned = await self._pump(running) or orphaned
        summary = running.result()
        summary["drops_s"] = list(self.swarm.fleet.drops)
        try:
            await self._flush()
            await self.wire.send("done", {"part": self.part, "batches": self._batches,
                                          "summary": summary, "orphaned": orphaned})
        except (RedisError, OSError) as exc:
            log.error("worker %d: the last batch and the summary were not sent: %s",
                      self.part, exc)
            return 1
        return 1 if orphaned else 0

    def stop(self) -> None:
        """End the part now (SIGTERM, SIGINT): no settle phase, the journal still goes out."""
        if self.swarm is not None:
            self.swarm.stop()
            self.swarm.stop()

    async def _config(self) -> tuple[SwarmConfig, range]:
        async with asyncio.timeout(CONFIG_TIMEOUT):
            while True:
                for message in await self.wire.read(block_ms=500):
                    if message.kind == "config":
                        parts = message.body["parts"]
                        if not 0 <= self.part < len(parts):
                            raise SwarmConfigError(f"part {self.part} is not one of the "
                                                   f"{len(parts)} parts of this run")
                        first, count = parts[self.part]
                        return config_from_wire(message.body["config"]), \
                            range(first, first + count)

    async def _pump(self, running: asyncio.Task[Stats]) -> bool:
        """One round: read the coordinator's messages (at most FLUSH seconds), send a batch;
        True when the coordinator is gone and the part was told to stop."""
        try:
            for message in await self.wire.read(block_ms=int(FLUSH * 1000)):
                self._heard(message.kind, message.body)
            await self._flush()
        except (RedisError, OSError) as exc:
            log.warning("worker %d: broker: %s", self.part, exc)
            await asyncio.sleep(FLUSH)
        if time.monotonic() - self._last_beat > self.orphan_after:
            log.error("worker %d: no word from the coordinator for %.0f s: stopping",
                      self.part, self.orphan_after)
            assert self.swarm is not None
            self.swarm.stop()
            self.swarm.stop()  # no settle: nobody is waiting for the figures
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({running}, timeout=30)
            return True
        return False

    def _heard(self, kind: str, body: dict[str, Any]) -> None:
        self._last_beat = time.monotonic()
        assert self.swarm is not None
        if kind == "go":
            self.swarm.go.set()
        elif kind == "settled":
            self.swarm.all_settled = True
        elif kind == "stop":
            self.swarm.stop()
            if body.get("abort"):
                self.swarm.stop()

    def _on_stats(self, stats: Stats) -> None:
        self._stats = stats

    async def _flush(self) -> None:
        """Send what the journal holds, in batches of at most BATCH records."""
        assert self.swarm is not None
        records = self.swarm.accounting.take()
        phase = self.swarm.phase  # as of the take: "settle" means every publish is in
        stats = {key: self._stats.get(key) for key in ("connected", "sent", "acknowledged",
                                                       "delivered", "reconnects")}
        for start in range(0, max(len(records), 1), BATCH):
            self._batches += 1
            await self.wire.send("journal", {"part": self.part, "n": self._batches,
                                             "records": records[start:start + BATCH],
                                             "phase": phase, "stats": stats})

    async def _send_quietly(self, kind: str, body: dict[str, Any]) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.wire.send(kind, body)
