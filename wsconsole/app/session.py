"""One named connection of the console: its profile, its running client and what the
views show of it (frame counts, reconnects, the last error, delivery latencies, the
countdown to the next attempt). The Console (console.py) owns the sessions and runs them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from wsconsole.app.ports import SessionClient
from wsconsole.app.profiles import Profile
from wsconsole.core.events import Direction, ErrorEvent, FrameBatch, FrameRecord, Opcode
from wsconsole.core.lifecycle import State, Transition
from wsconsole.core.metrics import LatencyHistogram
from wsconsole.core.tokens import TokenProvider

if TYPE_CHECKING:
    from wsconsole.app.console import Console

LATENCY_BATCH = 8192  # delivery latencies buffered per session before a histogram update


class Session:
    """One named connection: its profile, its running client and what the views show of it."""

    def __init__(self, profile: Profile, console: Console) -> None:
        self.profile = profile
        self.console = console
        self.client: SessionClient | None = None  # set by Console.connect
        # Asked for a token before every connect when the profile names no token source:
        # the demo cluster signs the console's own, so a reconnect after one expired
        # re-authenticates instead of being refused (app/targets.py: token_provider).
        self.token_source: TokenProvider | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.reconnects = 0
        self.last_error: str | None = None
        self.latencies = LatencyHistogram()
        # node-to-client delays (s) not yet in `latencies`: a list append per frame, folded
        # in vectorised (take_latencies) instead of a histogram update per frame
        self._latency_samples: list[float] = []
        self.greeting: list[str] = []  # sent after every open (a stack's auth and join)
        self._decoding_context = False  # set for the current connection attempt

    @property
    def name(self) -> str:
        """The connection's name (its lane in the Timeline, its `conn` in the Frames)."""
        return self.profile.name

    @property
    def state(self) -> State:
        """CLOSED until started, then the client's state."""
        return State.CLOSED if self.client is None else self.client.state

    async def token(self) -> str | None:
        """The token this connection presents now (for a one-off connection made as it,
        such as the Inject panel's probe); TokenError when its provider fails."""
        from wsconsole.app.targets import current_token

        return await current_token(self.profile, self.token_source)

    @property
    def rtt(self) -> float | None:
        """Last heartbeat round-trip time in seconds."""
        return None if self.client is None else self.client.latency

    def countdown(self, now: float | None = None) -> str | None:
        """"attempt 3 in 3.7 s" while waiting out a backoff delay, else None."""
        client = self.client
        if client is None or client.state is not State.RECONNECTING or not client.next_attempt:
            return None
        due, _delay = client.next_attempt
        left = max(0.0, due - (time.monotonic() if now is None else now))
        attempt = client.lifecycle.history[-1].attempt if client.lifecycle.history else 0
        return f"attempt {attempt} in {left:.1f} s"

    def _set_decoding_context(self, opened: bool = False) -> None:
        """What the decoders go by: the URL and the subprotocol the server chose. Set fresh
        before an attempt's first frame is stored (a server may send in the same read as its
        101, before OPEN is told), and completed at OPEN, when the client knows the
        subprotocol, keeping what the decoders learned meanwhile."""
        if self._decoding_context and not opened:
            return
        self.console.frames.decoding.set_context(
            self.name, url=self.profile.url,
            subprotocol=getattr(self.client, "subprotocol", None),
            target=None if self.profile.kind == "ws" else self.profile.kind,
            fresh=not self._decoding_context)
        self._decoding_context = True

    def take_frames(self, batch: FrameBatch) -> None:
        """Batch observer form of `__call__` for a read's received frames (FrameBatch):
        counted, and the delivery latency of each harness message in it."""
        if not self._decoding_context:
            self._set_decoding_context()
        self.frames_in += len(batch.payloads)
        self._delivery_latencies(batch.values, batch.wall)

    def __call__(self, event: object) -> None:
        """Client observer (the first one): count, keep the last error, and set the frames'
        decoding context; the stores observe after it."""
        if isinstance(event, FrameRecord):
            if not self._decoding_context:
                self._set_decoding_context()
            if event.direction is Direction.IN:
                self.frames_in += 1
                if event.opcode is Opcode.TEXT and b'"ts"' in event.payload[:4096]:
                    # parsed once, shared with the other observers
                    self._delivery_latencies((event.json(),), event.wall)
            else:
                self.frames_out += 1
        elif isinstance(event, Transition):
            if event.state in (State.CONNECTING, State.RECONNECTING):
                self._decoding_context = False
            elif event.state is State.OPEN:
                self._set_decoding_context(opened=True)
                if self.greeting and self.client is not None:
                    self.console.spawn(self._greet(self.client), f"greet {self.name}")
            if event.state is State.RECONNECTING:
                self.reconnects += 1
            if event.error:
                self.last_error = event.error
        elif isinstance(event, ErrorEvent):
            self.last_error = f"{event.kind}: {event.detail}"

    async def _greet(self, client: SessionClient) -> None:
        """A stack's auth and join messages, sent on every open (the app forgets them with
        the connection); a connection that closes meanwhile gets them on its next open."""
        for message in self.greeting:
            if client.state is not State.OPEN:
                return
            await client.send(message)

    def _delivery_latencies(self, values: Iterable[dict[str, Any] | None],
                            received: float) -> None:  # fmt: skip
        """The node-to-client delay of each harness message received at `received` (wall
        clock): from its `ts` (JSON objects without a numeric one are skipped)."""
        samples = self._latency_samples
        append = samples.append
        for value in values:
            ts = value.get("ts") if value is not None else None
            if ts is None or ts.__class__ is bool or not isinstance(ts, (int, float)):
                continue
            # node timestamps are wall-clock seconds; tolerate milliseconds too
            append(received - (ts / 1000.0 if ts > 1e11 else ts))
        if len(samples) >= LATENCY_BATCH:
            self.take_latencies()

    def take_latencies(self) -> LatencyHistogram:
        """The delivery latencies recorded so far (the samples not yet in the histogram are
        folded in at once); the caller may reset it."""
        samples, self._latency_samples = self._latency_samples, []
        if samples:
            self.latencies.record_many(np.maximum(np.asarray(samples, np.float64), 0.0))
        return self.latencies
