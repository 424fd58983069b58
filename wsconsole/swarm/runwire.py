"""The wire of one swarm run split over workers: two signed Redis Streams on the shared broker.

A run has an id (12 hex digits) and two streams under the agents' hash tag (so on a Redis
Cluster both live in one slot, next to the agents' own): `journal_stream(run)` carries the
workers' messages to the coordinator (`hello`, `journal` batches, `done`, `failed`),
`control_stream(run)` the coordinator's to every worker (`config`, `beat`, `stop`). Every
entry is sealed with the agents' shared secret (harness/agentwire.py: HMAC, timestamp window,
nonces), so no one without the secret can feed a run's accounting or stop its workers; a
refused entry is logged and counted, never acted on. Both streams are capped and deleted
at the end of the run.

Journal batches are numbered per worker from 1: a gap (entries trimmed off a stream the
coordinator read too slowly, or refused) is seen, and the part is reported incomplete.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from wsconsole.harness.agentwire import DEFAULT_WINDOW, KEY_TAG, Message, Refused, Signer

log = logging.getLogger(__name__)

JOURNAL_MAXLEN = 50_000  # entries kept on a run's journal stream (batches, not records)
CONTROL_MAXLEN = 1_000
READ_COUNT = 200
JOURNAL_WINDOW = 600.0  # seconds a journal entry stays valid (agentwire's `stale`)


def new_run_id() -> str:
    """A fresh run id."""
    return secrets.token_hex(6)


def journal_stream(run: str) -> str:
    """The stream of the workers' messages to the coordinator of `run`."""
    return f"wsconsole:{KEY_TAG}:run:{run}"


def control_stream(run: str) -> str:
    """The stream of the coordinator's messages to the workers of `run`."""
    return f"wsconsole:{KEY_TAG}:run:{run}:control"


def coordinator_name(run: str) -> str:
    """The name the coordinator of `run` signs as and reads messages addressed to."""
    return f"swarm-{run}"


def workers_name(run: str) -> str:
    """The name every worker of `run` reads messages addressed to."""
    return f"swarm-{run}-workers"


class RunWire:
    """One end of a run's wire: sends sealed messages on one stream, reads another.

    `coordinator=True` is the coordinator's end (reads the journal stream, writes control);
    otherwise a worker's (reads control, writes journal)."""

    def __init__(self, client: Redis | RedisCluster, secret: str, run: str, *,
                 coordinator: bool) -> None:
        self.client = client
        self.run = run
        me, self.peer = coordinator_name(run), workers_name(run)
        if not coordinator:
            me, self.peer = self.peer, me
        # a coordinator busy replaying may read a batch late: the batch numbers already
        # refuse a copy, so the journal's entries stay valid longer than a command
        self.signer = Signer(me, secret, window=JOURNAL_WINDOW if coordinator else DEFAULT_WINDOW)
        self._read = journal_stream(run) if coordinator else control_stream(run)
        self._write = control_stream(run) if coordinator else journal_stream(run)
        self._maxlen = CONTROL_MAXLEN if coordinator else JOURNAL_MAXLEN
        self._last_id: bytes | str = "0"
        self.refused: Counter[str] = Counter()

    async def send(self, kind: str, body: Mapping[str, Any] | None = None) -> None:
        """Seal one message to the other end and add it to the stream (RedisError/OSError
        when the broker cannot take it)."""
        fields = self.signer.seal(self.peer, kind, body)
        await self.client.xadd(self._write, fields,  # type: ignore[arg-type]
                               maxlen=self._maxlen, approximate=True)

    async def read(self, block_ms: int) -> list[Message]:
        """The messages added since the last read (waiting up to `block_ms` for one), opened
        and verified; refused entries are logged, counted in `refused` and skipped."""
        reply = await self.client.xread({self._read: self._last_id}, count=READ_COUNT,
                                        block=block_ms)
        messages: list[Message] = []
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                self._last_id = entry_id
                try:
                    messages.append(self.signer.open(fields))
                except Refused as exc:
                    self.refused[exc.reason] += 1
                    log.warning("run %s: entry %s refused: %s", self.run, entry_id, exc)
        return messages

    async def delete(self) -> None:
        """Remove both streams of the run (the coordinator, at the end)."""
        await self.client.delete(self._read)
        await self.client.delete(self._write)
