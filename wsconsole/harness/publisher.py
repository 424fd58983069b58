"""A node's publishes to the broker: queued, batched into pipelines, acknowledged when safe.

Publishes wait in one queue (bounded: beyond `max_backlog` they get `BrokerBusy` at once) and
go out in batches of up to `batch` script calls per pipeline (DESIGN.md "Performance notes":
the Python client, not the broker, is the ceiling, and pipelines lift it tenfold). One connection's
publishes keep their order: they are queued in order and a batch runs after the one before.

One server: the whole batch is one pipeline of publish scripts, each of which fans its frame
out; a publish is acknowledged when its script answered.

A cluster: the batch is split by the primary serving each room's slot, and each part runs as
one pipeline on one connection of that node, followed by `WAIT wait_replicas timeout`, which
answers how many replicas have every write made on that connection. Only when enough do, the
frames are released (roomscripts.RELEASE fans out every frame of the room up to the seq
confirmed) and the publishes acknowledged; otherwise the publisher gets `BrokerUnavailable`
("not replicated") and re-sends with the same id, which returns the original seq and is
released then. A connection error fails that shard's part at once (its primary may be dying:
the slot map is read again for the next batch) while the other shards' parts go through. A
MOVED reply re-reads the slot map and retries; ASK, TRYAGAIN and CLUSTERDOWN (a slot moving,
a failover under way) retry after a short pause, for at most `retry_for` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

from redis.exceptions import AskError, ClusterDownError, MovedError, NoScriptError, TryAgainError

from wsconsole.harness.brokerclient import Owner
from wsconsole.harness.brokerlink import (
    CALL_FAILURES,
    UP,
    BrokerBusy,
    BrokerLink,
    BrokerUnavailable,
)
from wsconsole.harness.roomscripts import RoomKeys, new_epoch

log = logging.getLogger(__name__)

RETRY_PAUSE = 0.05  # between two tries of a publish whose slot is moving
PUBLISH_KEYS = 4  # seq, history, publish id, epoch
RELEASE_KEYS = 4  # seq, history, epoch, released


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The (epoch, seq) a publish got; `duplicate` if its id was seen before (no second
    delivery)."""

    seq: int
    duplicate: bool
    epoch: str = ""


@dataclass(slots=True)
class PublishCall:
    """One queued publish: its room's keys, the script's keys and arguments, its future."""

    keys: RoomKeys
    args: tuple[bytes | str, ...]
    future: asyncio.Future[PublishResult]
    result: PublishResult | None = None
    retry: str = ""  # why it must be tried again ("" once settled)


@dataclass(slots=True)
class _Part:
    """The calls of one batch for one shard primary, and what became of them."""

    owner: Owner
    calls: list[PublishCall]
    done: list[PublishCall] = field(default_factory=list)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fail(calls: list[PublishCall], detail: str) -> None:
    for call in calls:
        if not call.future.done():
            call.future.set_exception(BrokerUnavailable(detail))


class Publisher:
    """The publish queue and its batches; see the module docstring."""

    def __init__(
        self,
        link: BrokerLink,
        *,
        batch: int,
        max_backlog: int,
        wait_replicas: int,
        wait_timeout: float,
        retry_for: float = 1.0,
    ) -> None:
        self.link = link
        self.batch = batch
        self.max_backlog = max_backlog
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self.retry_for = retry_for
        self.not_replicated = 0  # batches refused because too few replicas confirmed
        self._queue: deque[PublishCall] = deque()
        self._wake = asyncio.Event()

    @property
    def deferred(self) -> bool:
        """Frames are released after WAIT (a cluster with replicas to wait for)."""
        return self.link.clustered and self.wait_replicas > 0

    def submit(self, keys: RoomKeys, pub_id: str, frame: tuple[bytes, bytes, bytes],
               history: int, dedupe_ms: int) -> asyncio.Future[PublishResult]:
        """Queue a publish of `frame` (before the epoch, between epoch and seq, after the
        seq) to the room of `keys`; the future gets its PublishResult or BrokerUnavailable."""
        future: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        if self.link.state != UP:
            future.set_exception(BrokerUnavailable("broker unavailable"))
            return future
        if len(self._queue) >= self.max_backlog:
            future.set_exception(BrokerBusy(f"over {self.max_backlog} publishes queued"))
            return future
        args = (
            keys.seq, keys.hist, keys.publish_id(pub_id), keys.epoch, keys.channel, *frame,
            str(history), str(dedupe_ms), new_epoch(),
        )  # fmt: skip
        self._queue.append(PublishCall(keys, args, future))
        self._wake.set()
        return future

    def fail_all(self, detail: str) -> None:
        """Refuse every queued publish (the broker went away, the node is stopping)."""
        calls = list(self._queue)
        self._queue.clear()
        _fail(calls, detail)

    async def run(self) -> None:
        """Forever: send what is queued, batch after batch."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                count = min(self.batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
                live = [call for call in batch if not call.future.done()]
                if self.link.state != UP:
                    _fail(live, "broker unavailable")
                elif self.link.clustered:
                    await self._run_cluster(live)
                else:
                    await self._run_server(live)

    # -- one server ---------------------------------------------------------------------
    async def _run_server(self, calls: list[PublishCall]) -> None:
        for attempt in range(2):
            pipe = self.link.redis.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command("EVALSHA", self.link.sha["publish"], PUBLISH_KEYS,
                                     *call.args)
            try:
                results = await pipe.execute(raise_on_error=False)
            except CALL_FAILURES as exc:
                self.link.mark_down(exc)
                _fail(calls, "broker unavailable")
                return
            retry = []
            for call, result in zip(calls, results, strict=True):
                if isinstance(result, NoScriptError) and attempt == 0:
                    retry.append(call)
                else:
                    self._settle(call, result)
            if not retry:
                return
            try:
                await self.link.load_scripts()
            except CALL_FAILURES as exc:
                self.link.mark_down(exc)
            calls = retry

    def _settle(self, call: PublishCall, result: object) -> None:
        """Resolve one call's future from its script's reply."""
        if call.future.done():
            return
        if isinstance(result, Exception):
            call.future.set_exception(BrokerUnavailable(f"broker refused the publish: {result}"))
        else:
            seq, duplicate, epoch = result  # type: ignore[misc]
            call.future.set_result(PublishResult(int(seq), bool(duplicate), _text(epoch)))

    # -- a cluster ----------------------------------------------------------------------
    async def _run_cluster(self, calls: list[PublishCall]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        while calls:
            parts: dict[str, _Part] = {}
            for call in calls:
                try:
                    owner = self.link.client.owner(call.keys.seq)
                except Exception as exc:  # no owner in the slot map (SlotNotCoveredError)
                    _fail([call], f"broker unavailable: {exc}")
                    continue
                parts.setdefault(owner.name, _Part(owner, [])).calls.append(call)
            await asyncio.gather(*(self._run_part(part) for part in parts.values()))
            calls = [c for part in parts.values() for c in part.calls if c.retry]
            if not calls:
                return
            reasons = sorted({c.retry for c in calls})
            if loop.time() > deadline:
                _fail(calls, f"broker unavailable: {', '.join(reasons)}")
                return
            if "moved" in reasons:
                try:
                    await self.link.client.refresh()
                except CALL_FAILURES as exc:
                    self.link.trouble(exc)
            await asyncio.sleep(RETRY_PAUSE)

    async def _run_part(self, part: _Part) -> None:
        """Run one shard's calls on one connection (+ WAIT), then release what it confirmed."""
        client = self.link.client.node_client(part.owner)
        pipe = client.pipeline(transaction=False)
        for call in part.calls:
            call.retry = ""
            pipe.execute_command("EVALSHA", self.link.sha["publish"], PUBLISH_KEYS, *call.args)
        if self.deferred:
            pipe.execute_command("WAIT", self.wait_replicas, int(self.wait_timeout * 1000))
        try:
            results = await pipe.execute(raise_on_error=False)
        except CALL_FAILURES as exc:
            self.link.trouble(exc)
            _fail(part.calls, f"broker unavailable: shard {part.owner.name}: {exc!r}")
            return
        accepted: list[tuple[PublishCall, object]] = []
        for call, result in zip(part.calls, results, strict=False):
            if isinstance(result, NoScriptError):
                call.retry = "noscript"
            elif isinstance(result, MovedError):
                call.retry = "moved"
            elif isinstance(result, AskError | TryAgainError | ClusterDownError):
                call.retry = "slot moving"
            else:
                accepted.append((call, result))
        if any(call.retry == "noscript" for call in part.calls):
            await self._load_on(client)
        if self.deferred:
            confirmed = results[-1]
            if not isinstance(confirmed, int) or confirmed < self.wait_replicas:
                self.not_replicated += 1
                _fail([c for c, _ in accepted], f"broker unavailable: not replicated in time "
                      f"({confirmed} of {self.wait_replicas} replicas within "
                      f"{self.wait_timeout * 1000:.0f} ms on {part.owner.name})")
                return
            await self._release(client, part, accepted)
        for call, result in accepted:
            self._settle(call, result)

    async def _release(self, client: object, part: _Part,
                       accepted: list[tuple[PublishCall, object]]) -> None:
        """Fan out each room's frames up to the highest seq confirmed in it; a room whose
        release fails gets its publishes refused (their re-sends release them)."""
        upto: dict[tuple[bytes, str], tuple[RoomKeys, int]] = {}
        for call, result in accepted:
            if isinstance(result, Exception):
                continue
            seq, _, epoch = result  # type: ignore[misc]
            key = (call.keys.channel, _text(epoch))
            best = upto.get(key)
            if best is None or int(seq) > best[1]:
                upto[key] = (call.keys, int(seq))
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)  # type: ignore[attr-defined]
            for (_, epoch), (keys, seq) in upto.items():
                pipe.execute_command(
                    "EVALSHA", self.link.sha["release"], RELEASE_KEYS, keys.seq, keys.hist,
                    keys.epoch, keys.released, seq, keys.channel, new_epoch(), epoch,
                )  # fmt: skip
            try:
                results = await pipe.execute(raise_on_error=False)
            except CALL_FAILURES as exc:
                self.link.trouble(exc)
                results = [exc] * len(upto)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                await self._load_on(client)
                continue
            break
        failed = {room for room, r in zip(upto, results, strict=True) if isinstance(r, Exception)}
        for call, result in accepted:
            if not isinstance(result, Exception) and (call.keys.channel,
                                                      _text(result[2])) in failed:  # type: ignore[index]
                _fail([call], f"broker unavailable: release failed on {part.owner.name}")

    async def _load_on(self, client: object) -> None:
        """Load every script on one node (a promoted replica may not know them)."""
        for body in self.link.scripts.values():
            try:
                await client.script_load(body)  # type: ignore[attr-defined]
            except CALL_FAILURES as exc:
                self.link.trouble(exc)
                return
