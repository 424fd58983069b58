"""The window's intercepting proxy: one ProxyServer whose connections are console connections.

Every proxied connection feeds the console's stores as the console's own connections do:
its frames go to the Frames view (the FrameStore observes the hub), its state changes and
heartbeats to the Timeline (a lane per proxied connection), each action of the proxy (held,
dropped, edited, injected, closed, fault ...) becomes a marker on that lane, and its counts
and round trips reach the plots through `Console.sample_clients` (`counts()`, `rtts()`, `open`).
When a connection opens, the decoders learn its upstream URL and subprotocol.

The Intercept panel reads held frames, connections, counters and the recent actions from
here and calls the hub's and the connections' own controls; nothing here knows Qt.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from wsconsole.core.events import Direction, FrameRecord, HeartbeatEvent
from wsconsole.core.lifecycle import State, Transition
from wsconsole.har import FrameLike, HarConnection
from wsconsole.proxy.hub import ConnectionInfo, ProxyEvent, ProxyHub
from wsconsole.proxy.record import as_har_connection
from wsconsole.proxy.rulesfile import RulesFile, parse_rules
from wsconsole.proxy.server import ProxyConfig, ProxyServer

if TYPE_CHECKING:
    from wsconsole.app.framestore import FrameStore
    from wsconsole.app.timelinemodel import TimelineModel

# ProxyEvent kinds that are actions worth a Timeline marker (not the connection's own life).
MARKED = frozenset({"held", "released", "edited", "dropped", "delayed", "rewritten",
                    "duplicated", "injected", "closed", "fault", "fault_cleared", "error"})


class ConsoleProxy:
    """The proxy the window runs: its hub, its server while started, and what the views read."""

    def __init__(self, frames: FrameStore, timeline: TimelineModel, history: int = 1000,
                 remembered: int = 1000) -> None:
        self.frames = frames
        self.timeline = timeline
        self.hub = ProxyHub()
        self.server: ProxyServer | None = None
        self.actions: deque[ProxyEvent] = deque(maxlen=history)  # newest last
        self.action_count = 0  # every action ever seen (the log shows the new ones)
        self.infos: OrderedDict[str, ConnectionInfo] = OrderedDict()  # ended ones too
        self.remembered = remembered
        self.rules_text = ""
        self.frames_in = 0
        self.frames_out = 0
        self._rtts: dict[str, float] = {}
        for observer in (frames, timeline.observer("proxy"), self._observe):
            self.hub.subscribe(observer)

    # -- life ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the proxy listens."""
        return self.server is not None

    @property
    def url(self) -> str | None:
        """Where clients connect while it runs."""
        return self.server.url if self.server is not None else None

    async def start(self, config: ProxyConfig) -> str:
        """Listen with `config` (stopping a running proxy first); returns the URL.

        ValueError for settings that cannot work, OSError when the address is taken."""
        await self.stop()
        server = ProxyServer(config, self.hub)
        await server.start()
        self.server = server
        return server.url

    async def stop(self) -> None:
        """Stop listening and end every proxied connection (held frames are dropped)."""
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    def apply_rules(self, text: str) -> RulesFile:
        """Use the rules (and faults for every connection) written in `text` (the rules-file
        format); RulesFileError with the line when it is invalid, and nothing changes."""
        loaded = parse_rules(text, "rules")
        self.hub.rules.replace(loaded.rules)
        self.hub.clear_fault("all")
        for fault in loaded.faults:
            self.hub.set_fault("all", fault)
        self.rules_text = text
        return loaded

    # -- what the views read --------------------------------------------------------------------

    @property
    def open(self) -> int:
        """Proxied connections open now."""
        return sum(1 for c in self.hub.connections.values() if c.lifecycle.state is State.OPEN)

    def counts(self) -> tuple[int, int]:
        """Frames delivered so far, (to the clients, to the servers)."""
        return self.frames_in, self.frames_out

    def rtts(self) -> dict[str, float]:
        """The last ping round trip through the server, in seconds, per open connection."""
        return dict(self._rtts)

    def new_actions(self, seen: int) -> tuple[list[ProxyEvent], int]:
        """The actions after the first `seen` (those still kept), and the new count."""
        fresh = min(self.action_count - seen, len(self.actions))
        return list(self.actions)[len(self.actions) - fresh:], self.action_count

    def har_connection(self, conn: str, frames: Iterable[FrameLike]) -> HarConnection:
        """Connection `conn` (open or ended) with `frames` as a HAR connection (for export)."""
        info = self.infos.get(conn)
        if info is None:
            raise KeyError(f"no proxied connection {conn!r}")
        return as_har_connection(info, (f for f in frames if f.conn == conn))

    # -- the hub's events -----------------------------------------------------------------------

    def _observe(self, event: object) -> None:
        if isinstance(event, FrameRecord):
            if event.direction is Direction.IN:
                self.frames_in += 1
            else:
                self.frames_out += 1
        elif isinstance(event, HeartbeatEvent):
            if event.rtt is not None:
                self._rtts[event.conn] = event.rtt
        elif isinstance(event, ProxyEvent):
            self.actions.append(event)
            self.action_count += 1
            if event.kind in MARKED:
                rule = f" [{event.rule}]" if event.rule else ""
                self.timeline.action(event.conn, f"{event.kind}{rule} {event.detail}".strip(),
                                     event.at)
        elif isinstance(event, Transition):
            self._transition(event)

    def _transition(self, change: Transition) -> None:
        live = self.hub.connections.get(change.conn)
        if change.state is State.CONNECTING and live is not None:
            self.infos[change.conn] = live.info
            while len(self.infos) > self.remembered:
                self.infos.popitem(last=False)
        elif change.state is State.OPEN and live is not None:
            self.frames.decoding.set_context(change.conn, url=live.info.url,
                                             subprotocol=live.info.subprotocol)
        elif change.state is State.CLOSED:
            self._rtts.pop(change.conn, None)
