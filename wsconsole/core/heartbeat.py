"""The heartbeat lab's plain parts: how a client answers the server's pings, and what it
learns of the server's own heartbeat. No I/O here (the frame tap in wsconn.py applies them).

`PongPolicy` says how the automatic pong to a server's ping goes out: "auto" (at once, as
RFC 6455 wants), "off" (withheld: the client plays dead), "delay" (after `delay` seconds) or
"wrong" (at once, with another payload). Its text form ("auto", "off", "delay:1500",
"wrong:xyz", delay in milliseconds) is what `connect --pongs`, the swarm, scenario steps and
the window share.

`ServerHeartbeat` is fed the server's pings (answered or not) and the end of each
connection. It estimates the server's ping interval, notes how long the server kept a
client that stopped answering before it closed it (or that it kept it), and says in plain
words when the server has no heartbeat at all or one slower than the idle timeouts of
common proxies and load balancers (60 s: nginx's proxy_read_timeout, AWS ALB), which would
then cut quiet connections the server believes alive.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

from wsconsole.core.errors import ClientOptionsError

PONG_MODES = ("auto", "off", "delay", "wrong")
WRONG_PAYLOAD = b"wsconsole-wrong-pong"
MAX_CONTROL_PAYLOAD = 125  # RFC 6455 5.5: control frames carry at most 125 bytes
MAX_PONG_DELAY = 3600.0
PROXY_IDLE_TIMEOUT = 60.0  # seconds; nginx proxy_read_timeout, AWS ALB idle timeout


@dataclass(frozen=True, slots=True)
class PongPolicy:
    """How the client answers the server's pings (see the module docstring)."""

    mode: str = "auto"
    delay: float = 0.0  # seconds, mode "delay"
    payload: bytes = WRONG_PAYLOAD  # mode "wrong"

    def __post_init__(self) -> None:
        if self.mode not in PONG_MODES:
            raise ClientOptionsError(
                f"pongs must be one of {', '.join(PONG_MODES)}, got {self.mode!r}")
        if not (isinstance(self.delay, int | float) and math.isfinite(self.delay)
                and 0 <= self.delay <= MAX_PONG_DELAY):
            raise ClientOptionsError(
                f"a pong delay must be 0 to {MAX_PONG_DELAY * 1000:.0f} ms, got {self.delay!r} s")
        if len(self.payload) > MAX_CONTROL_PAYLOAD:
            raise ClientOptionsError(f"a pong payload holds at most {MAX_CONTROL_PAYLOAD} "
                                     f"bytes, got {len(self.payload)}")

    @classmethod
    def parse(cls, text: str) -> PongPolicy:
        """"auto", "off", "delay:MS" or "wrong[:TEXT]" (ClientOptionsError otherwise)."""
        mode, sep, arg = text.strip().partition(":")
        mode = mode.strip().lower()
        if mode == "delay":
            try:
                millis = float(arg)
            except ValueError:
                raise ClientOptionsError(
                    f"pongs delay needs milliseconds, e.g. delay:1500, got {text!r}") from None
            return cls("delay", delay=millis / 1000.0)
        if mode == "wrong":
            return cls("wrong", payload=arg.encode() if sep else WRONG_PAYLOAD)
        if sep:
            raise ClientOptionsError(f"pongs {mode} takes no value, got {text!r}")
        return cls(mode)

    def text(self) -> str:
        """The text form `parse` reads back."""
        if self.mode == "delay":
            return f"delay:{self.delay * 1000:g}"
        if self.mode == "wrong" and self.payload != WRONG_PAYLOAD:
            return f"wrong:{self.payload.decode('utf-8', 'replace')}"
        return self.mode

    def describe(self) -> str:
        """In plain words, for views and logs."""
        if self.mode == "off":
            return "pongs withheld (the client plays dead)"
        if self.mode == "delay":
            return f"pongs {self.delay * 1000:g} ms late"
        if self.mode == "wrong":
            return f"pongs with a wrong payload {self.payload[:20]!r}"
        return "pongs answered at once"

    @property
    def answers(self) -> bool:
        """True when a server's ping is acknowledged at once (a late pong acknowledges it
        only when it goes out, a wrong payload never does)."""
        return self.mode == "auto"


def pong_share(index: int, share: float) -> bool:
    """Whether client `index` (0-based) is among the `share` (0..1) of a swarm running a
    pong policy: spread evenly (share 0.25 picks clients 3, 7, 11, ...), the same every run."""
    if share <= 0:
        return False
    return math.floor((index + 1) * share) > math.floor(index * share)


@dataclass(frozen=True, slots=True)
class Drop:
    """The server closed a connection whose pongs stopped: how long after the first
    unanswered ping (or after the pongs stopped, when the server sent no ping)."""

    after: float
    code: int | None
    unanswered: int


class ServerHeartbeat:
    """What a client learns of the server's heartbeat, across its connections."""

    def __init__(self, history: int = 32) -> None:
        self.pings = 0  # every server ping seen
        self.gaps: deque[float] = deque(maxlen=history)  # seconds between consecutive pings
        self.drops: deque[Drop] = deque(maxlen=history)
        self.kept: float | None = None  # longest a silent connection was kept open, seconds
        self.opened_at: float | None = None
        self._last_ping: float | None = None
        self._silent_since: float | None = None  # our pongs stopped (this connection)
        self._unanswered = 0

    def opened(self, at: float, answering: bool = True) -> None:
        """A connection opened (a ping gap never spans two connections)."""
        self.opened_at = at
        self._last_ping = None
        self._unanswered = 0
        self._silent_since = None if answering else at

    def policy_changed(self, at: float, answering: bool) -> None:
        """The pong policy changed on the open connection: silence starts or ends now."""
        if answering:
            self._silent_since = None
            self._unanswered = 0
        elif self._silent_since is None and self.opened_at is not None:
            self._silent_since = at

    def answered(self, at: float) -> None:
        """A late pong went out: the connection answers again."""
        self.policy_changed(at, answering=True)

    def ping(self, at: float, answered: bool) -> None:
        """The server pinged; `answered` is False unless the pong went out at once with the
        ping's payload."""
        self.pings += 1
        if self._last_ping is not None:
            self.gaps.append(at - self._last_ping)
        self._last_ping = at
        if not answered:
            if self._unanswered == 0:
                self._silent_since = at  # the server's timeout runs from its first ping
            self._unanswered += 1

    def closed(self, at: float, by_server: bool, code: int | None) -> Drop | None:
        """The connection ended; a server close of a silent connection is a Drop."""
        drop = None
        if self._silent_since is not None:
            silent = at - self._silent_since
            if by_server:
                drop = Drop(silent, code, self._unanswered)
                self.drops.append(drop)
            self.kept = silent if self.kept is None else max(self.kept, silent)
        self.opened_at = None
        self._silent_since = None
        self._unanswered = 0
        return drop

    @property
    def interval(self) -> float | None:
        """The server's ping interval (the median gap), None before two pings."""
        return statistics.median(self.gaps) if self.gaps else None

    def silent_for(self, now: float) -> float | None:
        """How long the open connection has not answered, None while it answers."""
        return None if self._silent_since is None else now - self._silent_since

    @property
    def unanswered(self) -> int:
        """Server pings left without a pong on the open connection."""
        return self._unanswered

    def verdict(self, now: float) -> tuple[str, str | None]:
        """(what was measured, a warning or None), in plain words."""
        interval = self.interval
        parts = []
        warning = None
        if interval is not None:
            parts.append(f"the server pings every {interval:.1f} s")
            if interval > PROXY_IDLE_TIMEOUT:
                warning = (f"the server's ping interval ({interval:.0f} s) is longer than "
                           f"typical proxy idle timeouts ({PROXY_IDLE_TIMEOUT:.0f} s): a proxy "
                           "may cut quiet connections the server believes alive")
        elif self.pings:
            parts.append("the server pinged once so far")
        elif self.opened_at is not None:
            quiet = now - self.opened_at
            parts.append(f"no ping from the server in {quiet:.0f} s")
            if quiet > PROXY_IDLE_TIMEOUT:
                warning = (f"the server sent no ping in {quiet:.0f} s: it has no heartbeat of "
                           f"its own, so a proxy with a {PROXY_IDLE_TIMEOUT:.0f} s idle timeout "
                           "will cut quiet connections (and the server cannot find dead ones)")
        else:
            parts.append("no connection yet")
        if self.drops:
            last = self.drops[-1]
            code = f" (close {last.code})" if last.code is not None else ""
            parts.append(f"it closed a client that stopped answering after {last.after:.1f} s"
                         f"{code}")
        silent = self.silent_for(now)
        if silent is not None and self._unanswered:
            parts.append(f"{self._unanswered} ping(s) unanswered for {silent:.1f} s, still open")
        return "; ".join(parts), warning


__all__ = ["MAX_CONTROL_PAYLOAD", "PONG_MODES", "PROXY_IDLE_TIMEOUT", "Drop", "PongPolicy",
           "ServerHeartbeat", "pong_share"]
