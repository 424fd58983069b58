"""The window's swarm: `wsconsole swarm URL --json --fleet --control` as a child process.

The swarm runs its clients in its own process (a thousand clients must not compete with the
window's event loop); `SwarmLink` reads what it prints and talks back on its stdin:

- `stats` lines: the latest one is kept for the plots and the Cluster panel;
- `fleet` lines (swarm/fleet.py): applied to the Timeline, one batch per line, however many
  thousand state changes it carries;
- `control` lines answer the commands sent with `control()`, matched by their `id`:
  `set_pongs()` (the heartbeat lab on a share of the swarm) and `fetch_frames()` (a swarm
  client's kept frames in a time range, added to the Frames view as `swarm/<client>`).

No Qt here; the panels call these from their slots, in tasks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from wsconsole.app.timelinemodel import SWARM_PREFIX
from wsconsole.core.heartbeat import PongPolicy
from wsconsole.core.tasks import Tasks
from wsconsole.errors import WsconsoleError
from wsconsole.swarm.fleet import FleetBatch, frame_records

if TYPE_CHECKING:
    from wsconsole.app.framestore import FrameStore
    from wsconsole.app.timelinemodel import TimelineModel
    from wsconsole.harness.procs import Child

log = logging.getLogger(__name__)


class SwarmControlError(WsconsoleError):
    """The swarm refused a command, did not answer in time, or is gone."""


class SwarmLink:
    """One running swarm child and what the window reads from it (see the module doc)."""

    def __init__(self, child: Child, timeline: TimelineModel, frames: FrameStore,
                 tasks: Tasks, on_exit: Callable[[int | None], None] | None = None,
                 fetched_limit: int = 200_000) -> None:
        self.child = child
        self.timeline = timeline
        self.frames = frames
        self.latest: dict[str, Any] = {}
        self.pongs = (0.0, PongPolicy("off"))  # the share and policy the swarm runs now
        self.on_exit = on_exit
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._fetched: set[int] = set()  # frame numbers already added to the Frames view
        self._fetched_order: deque[int] = deque()
        self._fetched_limit = fetched_limit
        self.reader = tasks.spawn(self._read(), "swarm-reader")

    async def _read(self) -> None:
        async for line in self.child.lines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                self.route(record)
        await self.child.wait()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(SwarmControlError("the swarm exited"))
        if self.on_exit is not None:
            self.on_exit(self.child.returncode)

    def route(self, record: dict[str, Any]) -> None:
        """One line from the swarm."""
        kind = record.get("event")
        if kind == "fleet":
            self.timeline.apply_swarm(FleetBatch.parse(record))
        elif kind == "control":
            future = self._waiting.pop(record.get("id"), None)  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(record)
        elif kind == "stats":
            self.latest = record

    async def control(self, command: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send one command and wait for its answer (SwarmControlError if refused)."""
        if self.child.returncode is not None:
            raise SwarmControlError(f"the swarm exited with code {self.child.returncode}")
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            await self.child.send_line(orjson.dumps({**command, "id": ident}))
            async with asyncio.timeout(timeout):
                reply = await future
        except (ConnectionError, TimeoutError) as exc:
            raise SwarmControlError(f"the swarm did not answer: {exc or 'timeout'}") from None
        finally:
            self._waiting.pop(ident, None)
        if not reply.get("ok"):
            raise SwarmControlError(str(reply.get("error") or "refused"))
        return reply

    async def set_pongs(self, share: float, policy: PongPolicy) -> int:
        """Run `share` of the swarm's clients with `policy`; how many got it."""
        reply = await self.control({"cmd": "pongs", "share": share, "pongs": policy.text()})
        self.pongs = (share, policy)
        return int(reply.get("clients", 0))

    async def fetch_frames(self, lanes: list[str], since: float, until: float,
                           pages: int = 20) -> int:
        """Add the kept frames of the swarm lanes `lanes` with since <= wall <= until to the
        Frames view (each frame once, at most `pages` replies of them); how many were added."""
        clients = [lane.removeprefix(SWARM_PREFIX) for lane in lanes
                   if lane.startswith(SWARM_PREFIX)]
        added, after = 0, -1
        for _ in range(pages if clients else 0):
            reply = await self.control({"cmd": "frames", "clients": clients, "since": since,
                                        "until": until, "after": after})
            for number, frame in frame_records(reply.get("frames") or (), SWARM_PREFIX):
                after = max(after, number)
                if number not in self._fetched:
                    self._remember(number)
                    self.frames.append(frame)
                    added += 1
            if not reply.get("more"):
                break
        return added

    def _remember(self, number: int) -> None:
        self._fetched.add(number)
        self._fetched_order.append(number)
        while len(self._fetched_order) > self._fetched_limit:
            self._fetched.discard(self._fetched_order.popleft())

    def summary(self) -> str:
        """One line about the simulated clients."""
        latest = self.latest
        if self.child.returncode is not None:
            return f"swarm: exited with code {self.child.returncode}"
        if not latest:
            return "swarm: starting"
        parts = [f"swarm: {latest.get('connected', '?')}/{latest.get('clients', '?')} connected"]
        for key in ("sent", "acknowledged", "delivered", "duplicated", "out_of_order",
                    "reconnects", "dead_drops"):
            if key in latest and (key != "dead_drops" or latest[key]):
                parts.append(f"{key.replace('_', ' ')} {latest[key]}")
        return "  ".join(parts)


__all__ = ["SwarmControlError", "SwarmLink"]
