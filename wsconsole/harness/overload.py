"""Whether a node's deliveries are running behind: the signal that refuses publishes.

A node that takes publishes faster than they can be delivered does not fail: the backlog
queues (in the broker's output buffer, in the node's loop, in the kernel's socket buffers,
in the clients) and deliveries come later and later while every publish is still
acknowledged. `DeliveryDelay` keeps two measures of how late deliveries are:

- *inbound*: the age of a room message when the node fans it out (now minus the `ts` its
  publishing node stamped on it), sampled at most every `sample_every` seconds: the broker
  and the node itself being behind. `ts` is the publishing node's wall clock: between hosts
  their clock skew adds to it (NTP keeps that to milliseconds);
- *downstream*: every `probe_every` seconds, `probe` pings `PROBES` connections picked at
  random among the latest fan-out's recipients; a pong comes back only once the client has
  read everything sent before its ping, so the time to it, less the connection's quickest
  pong (its network round trip), is that client's backlog, in the kernel's socket buffers
  and in the client itself (which the node cannot see otherwise). The lower median of the
  round is the sample (a pong not back after 1.5 `high` counts as the time waited; a
  connection whose round trip is not known yet does not count), so one stuck reader (the
  `lagging` case, handled per connection) does not make the node refuse publishes for
  everyone.

The delay is the larger of the two latest samples (each counts for `fresh` seconds, longer
than a probe round). With hysteresis, so one late sample (the process was not scheduled for
a moment) refuses nothing: the node becomes *busy* when the delay stayed over `high` for
`hold` seconds, and stops being busy once it is under `low`, or when no sample is fresh (no
traffic: nothing to be behind on). While busy, the node refuses publishes with `error broker_busy`
before taking them (never half-done, never acknowledged), so publishers back off and the
backlog drains instead of growing. The measure is the node's own: a publish on another node
is refused only when that node is behind too.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable, Sequence
from functools import partial
from weakref import WeakKeyDictionary

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

PROBES = 5  # connections pinged per probe round
_TS = b',"ts":'


def ping_now(ws: ServerConnection) -> asyncio.Future[float]:
    """Ping `ws` now, behind whatever its transport holds, without waiting for the buffer to
    drain (`ServerConnection.ping` waits: a probe must not stall on a slow reader); the
    future gets the latency when the pong comes, as `ping()`'s does (websockets settles
    every ping in `pending_pings`, and fails them if the connection ends)."""
    pong: asyncio.Future[float] = ws.loop.create_future()
    data = struct.pack("!I", random.getrandbits(32))
    while data in ws.pending_pings:
        data = struct.pack("!I", random.getrandbits(32))
    ws.pending_pings[data] = (pong, ws.loop.time())
    ws.protocol.send_ping(data)
    ws.send_data()
    return pong


def stamp_of(frame: bytes) -> float | None:
    """The `ts` a room message's frame carries (wall clock at its publish), if readable.

    The node builds the frame with `ts` after `id` and `pub_node` and before `data`; a `"`
    inside those JSON strings is escaped, so the first `,"ts":` is the field itself."""
    at = frame.find(_TS)
    if at < 0:
        return None
    start = at + len(_TS)
    try:
        return float(frame[start : frame.find(b",", start)])
    except ValueError:
        return None


class DeliveryDelay:
    """How far behind a node's deliveries are, and whether that is overload; see the module
    docstring. `high` None: never busy, nothing measured."""

    def __init__(self, high: float | None, *, low: float | None = None, hold: float = 0.05,
                 sample_every: float = 0.01, probe_every: float = 0.02) -> None:  # fmt: skip
        self.high = high
        self.low = high / 2 if low is None and high is not None else low
        self.hold = hold
        self.sample_every = sample_every
        self.probe_every = probe_every
        # how long a sample counts: longer than a probe round (its wait and its pause)
        self.fresh = max(hold, 2 * (probe_every + 1.5 * (high or 0.0)))
        self.delay = 0.0  # the current measure, seconds
        self.episodes = 0  # how many times the node became busy
        self._latest: dict[str, tuple[float, float]] = {}  # source -> (delay, when)
        self._busy = False
        self._over_since: float | None = None  # since when the delay is over `high`
        self._sampled = -1.0  # monotonic time of the latest inbound sample
        self._rtt: WeakKeyDictionary[ServerConnection, float] = WeakKeyDictionary()

    @property
    def retry_after(self) -> float:
        """Seconds a refused publisher should wait: about the backlog's depth."""
        return round(max(self.hold, self.delay), 3)

    def observe(self, frame: bytes) -> None:
        """A room message is being fanned out now (sampled, see `sample_every`)."""
        if self.high is None:
            return
        now = time.monotonic()
        if now - self._sampled < self.sample_every:
            return
        self._sampled = now
        stamp = stamp_of(frame)
        if stamp is not None:
            self.record("inbound", max(0.0, time.time() - stamp), now)

    def record(self, source: str, delay: float, now: float) -> None:
        """One sample of `source`: deliveries `delay` seconds late at (monotonic) `now`."""
        if all(now - at > self.fresh for _, at in self._latest.values()):
            self._over_since = None  # after a pause in the traffic, a new run of samples
        self._latest[source] = (delay, now)
        current = max(d for d, at in self._latest.values() if now - at <= self.fresh)
        self.delay = current
        if self._busy:
            if current < (self.low or 0.0):
                self._busy = False
                self._over_since = None
            return
        if self.high is None or current <= self.high:
            self._over_since = None
        elif self._over_since is None:
            self._over_since = now
        elif now - self._over_since >= self.hold:
            self._busy = True
            self.episodes += 1

    def busy(self, now: float | None = None) -> bool:
        """Whether publishes are to be refused now (monotonic `now`, default the clock's)."""
        if not self._busy:
            return False
        now = time.monotonic() if now is None else now
        if all(now - at > self.fresh for _, at in self._latest.values()):
            self._busy = False  # nothing measured for a while: nothing to be behind on
            self._over_since = None
        return self._busy

    async def probe(self, recipients: Callable[[], Sequence[ServerConnection]]) -> None:
        """Forever (cancel to stop): ping `PROBES` of `recipients()` (the latest fan-out's)
        every `probe_every` seconds and record the median time to their pongs."""
        if self.high is None:
            return
        loop = asyncio.get_running_loop()
        patience = 1.5 * self.high  # a pong not back by then is clearly over `high`
        while True:
            await asyncio.sleep(self.probe_every)
            pool = [ws for ws in recipients() if ws.protocol.state is State.OPEN]
            if not pool:
                continue
            began = loop.time()
            picked = random.sample(pool, min(PROBES, len(pool)))
            pongs = []
            for ws in picked:
                pong = ping_now(ws)
                pong.add_done_callback(partial(self._learn, ws))
                pongs.append(pong)
            await asyncio.wait(pongs, timeout=patience)
            waited = loop.time() - began
            delays = []
            for ws, pong in zip(picked, pongs, strict=True):
                base = self._rtt.get(ws)
                if base is None or (pong.done() and (pong.cancelled() or pong.exception())):
                    continue  # no round trip known yet, or the connection ended
                delays.append((pong.result() if pong.done() else waited) - base)
            if delays:
                delays.sort()
                self.record("downstream", delays[(len(delays) - 1) // 2], time.monotonic())

    def _learn(self, ws: ServerConnection, pong: asyncio.Future[float]) -> None:
        """Keep the quickest pong of a connection: its network round trip, which is not
        backlog (a client 150 ms away is not behind by 150 ms)."""
        if pong.cancelled() or pong.exception() is not None:
            return
        base = self._rtt.get(ws)
        if base is None or pong.result() < base:
            self._rtt[ws] = pong.result()
