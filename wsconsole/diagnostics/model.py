"""What a diagnosis is made of: the options, each step's result, the run (no I/O here).

`DiagnoseOptions` says what to check and how hard; a step returns a `StepResult` (verdict,
plain-language summary, technical detail); `Diagnosis` is the whole run with the traffic
`Capture`d from the client for the support bundle. The steps are in network.py (DNS, TCP,
TLS) and websocket.py (handshake, latency, reconnect, audit); checks.py runs them in order.
"""

from __future__ import annotations

import enum
import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ClientOptionsError
from wsconsole.core.events import ErrorEvent, FrameRecord, HeartbeatEvent
from wsconsole.core.lifecycle import Transition
from wsconsole.core.tls import client_context
from wsconsole.errors import WsconsoleError
from wsconsole.faults.probe import Target

TokenMode = Literal["query", "header", "message"]


class Verdict(enum.StrEnum):
    """One step's outcome."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


class DiagnoseError(WsconsoleError, ValueError):
    """Options that cannot name an endpoint to diagnose (bad usage: exit 2)."""


@dataclass
class DiagnoseOptions:
    """What to diagnose and how hard; every wait is bounded by `timeout` seconds."""

    url: str
    token: str | None = None
    token_mode: TokenMode = "query"
    headers: list[tuple[str, str]] = field(default_factory=list)
    subprotocols: list[str] = field(default_factory=list)
    origin: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    timeout: float = 5.0
    pings: int = 5
    ping_gap: float = 0.2
    reconnect: bool = True
    audit: bool = True

    def validate(self) -> None:
        """Raise DiagnoseError with a plain message for options that cannot work (the
        connection's own options are checked by the client's, `client_options()`)."""
        if not self.timeout > 0:
            raise DiagnoseError("timeout must be > 0")
        if not 1 <= self.pings <= 1000:
            raise DiagnoseError("pings must be between 1 and 1000")
        try:
            self.client_options().validate()
        except ClientOptionsError as exc:
            raise DiagnoseError(str(exc)) from None

    @property
    def host(self) -> str:
        """Host name or address."""
        return urllib.parse.urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """Port, defaulting to 80 / 443."""
        parts = urllib.parse.urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "wss" else 80)

    @property
    def secure(self) -> bool:
        """True for wss://."""
        return self.url.lower().startswith("wss:")

    def handshake_url_and_headers(self) -> tuple[str, list[tuple[str, str]]]:
        """The URL and headers of the upgrade request, with the token where it goes."""
        url, headers = self.url, list(self.headers)
        if self.token and self.token_mode == "query":
            parts = urllib.parse.urlsplit(url)
            query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "token"]
            query.append(("token", self.token))
            url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        elif self.token and self.token_mode == "header":
            headers.append(("Authorization", f"Bearer {self.token}"))
        return url, headers

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context the client uses (None for ws://)."""
        return client_context(self.ca_file, self.insecure, self.host) if self.secure else None

    def client_options(self) -> ClientOptions:
        """ReconnectingClient options: quick retries, no automatic pings (we send our own)."""
        token = self.token
        return ClientOptions(
            url=self.url, headers=list(self.headers), subprotocols=list(self.subprotocols),
            origin=self.origin, ca_file=self.ca_file, insecure=self.insecure,
            connect_timeout=self.timeout, token=(lambda: token) if token else None,
            token_mode=self.token_mode,
            backoff=BackoffPolicy(initial=0.2, cap=1.0, jitter=0.1, max_attempts=5),
            ping_interval=None, ping_timeout=self.timeout, close_timeout=1.0,
            compression=False,
        )

    def target(self) -> Target:
        """The probe's target for the audit; a `token` already in the URL's query becomes
        the target's token, so the "without credentials" check can really leave it out."""
        url, token, via = self.url, self.token, self.token_mode
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        in_url = [v for k, v in query if k == "token"]
        if in_url and token is None:
            token, via = in_url[-1], "query"
            kept = urllib.parse.urlencode([(k, v) for k, v in query if k != "token"])
            url = urllib.parse.urlunsplit(parts._replace(query=kept))
        return Target(url=url, headers=tuple(self.headers),
                      subprotocols=tuple(self.subprotocols), token=token,
                      token_via=via, origin=self.origin, ca_file=self.ca_file,
                      insecure=self.insecure)


@dataclass
class StepResult:
    """One step: verdict, what it means in plain words, and the technical detail."""

    id: str
    title: str
    verdict: Verdict
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"id": self.id, "title": self.title, "verdict": self.verdict.value,
                "summary": self.summary, "detail": self.detail,
                "seconds": round(self.seconds, 3)}


class Capture:
    """Observer keeping the client's frames and its state/heartbeat/error events, bounded."""

    def __init__(self, limit: int = 100_000) -> None:
        self.frames: deque[FrameRecord] = deque(maxlen=limit)
        self.events: deque[Transition | HeartbeatEvent | ErrorEvent] = deque(maxlen=limit)

    def __call__(self, event: object) -> None:
        """Keep frames and timeline events; ignore delivery bookkeeping."""
        if isinstance(event, FrameRecord):
            self.frames.append(event)
        elif isinstance(event, Transition | HeartbeatEvent | ErrorEvent):
            self.events.append(event)


@dataclass
class Diagnosis:
    """The whole run: options (as given), steps, timing and the captured traffic."""

    options: DiagnoseOptions
    steps: list[StepResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    capture: Capture = field(default_factory=Capture)

    @property
    def verdict(self) -> Verdict:
        """fail if any step failed, else warn if any warned, else ok."""
        verdicts = {step.verdict for step in self.steps}
        if Verdict.FAIL in verdicts:
            return Verdict.FAIL
        if Verdict.WARN in verdicts:
            return Verdict.WARN
        return Verdict.OK

    def headline(self) -> str:
        """One sentence for the top of the report."""
        failed = [s for s in self.steps if s.verdict is Verdict.FAIL]
        if failed:
            return f"Problem found at step '{failed[0].title}': {failed[0].summary}"
        warned = [s for s in self.steps if s.verdict is Verdict.WARN]
        if warned:
            return (f"The endpoint works, with {len(warned)} warning(s): "
                    + "; ".join(s.title for s in warned) + ".")
        return "The endpoint works: every check passed."

    def step(self, step_id: str) -> StepResult | None:
        """The result of one step, if it ran."""
        return next((s for s in self.steps if s.id == step_id), None)


Progress = Callable[[StepResult], None]
