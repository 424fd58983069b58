"""A Server-Sent Events target on httpx (+ httpx-sse's line splitting), with the core events.

Each event is reported as an inbound TEXT FrameRecord whose payload is a JSON object
`{"id", "event", "data", "retry"}` (fields the server did not send left out; `event`
defaults to "message" as in browsers), so the Frames view and `connect --json` show all
four. Reconnection (a dropped stream, an error, a clean end of stream) follows the
server's `retry` when it sent one, else our BackoffPolicy; every reconnect sends
`Last-Event-ID`. Where ids are integers, a jump is a DeliveryEvent "gap" (missing ids in
the detail), an id seen again is "duplicate", a lower one "out_of_order". HTTP 204 means
"stop reconnecting" (the SSE spec); a response that is not `text/event-stream` is
sniffed and reported as a protocol mismatch when another protocol answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import httpx
import orjson
from httpx_sse._decoders import SSELineDecoder

from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.driver import ConnectionDriver
from wsconsole.core.errors import ClientOptionsError, NotConnected, TokenError
from wsconsole.core.events import (
    DeliveryEvent,
    Direction,
    FrameRecord,
    Observer,
    Opcode,
)
from wsconsole.core.options import check_header, check_stable_after
from wsconsole.core.reconnect import Failure, parse_retry_after
from wsconsole.core.targets.detect import mismatch_text, sniff
from wsconsole.core.tls import url_context
from wsconsole.core.tokens import (
    TokenProvider,
    can_refresh,
    check_provider,
    fetch_token,
    place_token,
)
from wsconsole.errors import WsconsoleError

log = logging.getLogger(__name__)


@dataclass
class SSEOptions:
    """Where and how to connect; validated on creation (ClientOptionsError).

    `token` (a string or a provider, see core/tokens.py) goes in the `token` query
    parameter or, with token_mode "header", as `Authorization: Bearer`; `stable_after` as
    for the WebSocket client (seconds open before the backoff starts over).
    """

    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    stable_after: float = 5.0
    token: TokenProvider | None = None
    token_mode: Literal["query", "header"] = "query"
    connect_timeout: float = 10.0
    read_timeout: float | None = None  # None: a quiet stream is fine
    insecure: bool = False
    last_event_id: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ClientOptionsError naming the first option that cannot work."""
        try:
            parts = urllib.parse.urlsplit(self.url)
            port = parts.port
        except (ValueError, AttributeError) as exc:
            raise ClientOptionsError(f"malformed URL {self.url!r}: {exc}") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise ClientOptionsError(f"an event stream URL is http(s)://, got {self.url!r}")
        if not parts.hostname:
            raise ClientOptionsError(f"no host in {self.url!r}")
        if port == 0:
            raise ClientOptionsError("port 0 is not a port to connect to")
        self.headers = [check_header(str(k), str(v)) for k, v in self.headers]
        if not isinstance(self.connect_timeout, int | float) or self.connect_timeout <= 0:
            raise ClientOptionsError(f"connect timeout must be > 0, got {self.connect_timeout}")
        if self.read_timeout is not None and self.read_timeout <= 0:
            raise ClientOptionsError(f"read timeout must be > 0 or None, got {self.read_timeout}")
        if self.token_mode not in ("query", "header"):
            raise ClientOptionsError(
                f"an event stream takes its token as query or header, got {self.token_mode!r}")
        check_provider(self.token)
        check_stable_after(self.stable_after)

    @property
    def harness(self) -> bool:
        """Never the harness protocol (views ask ClientOptions-like objects this)."""
        return False


@dataclass
class SSEEvent:
    """One dispatched event; id_set says whether this event carried its own `id:` line."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    id_set: bool = False

    def as_json(self) -> bytes:
        """The record payload the views show."""
        fields: dict[str, object] = {"event": self.event, "data": self.data}
        if self.id is not None:
            fields["id"] = self.id
        if self.retry is not None:
            fields["retry"] = self.retry
        return orjson.dumps(fields)


class SSEParser:
    """The SSE field grammar (WHATWG HTML, "event stream interpretation"); pure."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_id = last_event_id
        self._event = ""
        self._data: list[str] = []
        self._retry: int | None = None
        self._id_set = False
        self._lines = SSELineDecoder()

    def feed(self, text: str) -> list[SSEEvent]:
        """Decode a chunk of the stream; returns the events it completed."""
        out = []
        for line in self._lines.decode(text):
            event = self.line(line)
            if event is not None:
                out.append(event)
        return out

    def line(self, line: str) -> SSEEvent | None:
        """Process one line; a blank line dispatches the event being built."""
        if not line:
            if not self._data and self._retry is None and not self._id_set and not self._event:
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data), self.last_id,
                             self._retry, self._id_set)
            self._event, self._data, self._retry, self._id_set = "", [], None, False
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value
            self._id_set = True
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None


class IdTracker:
    """Numeric-id bookkeeping: (kind, detail) pairs for gaps, duplicates, out-of-order."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.gaps = 0
        self.missing = 0

    def seen(self, ident: str | None) -> list[tuple[str, str]]:
        """Account for one event id; non-numeric ids are not checked."""
        if ident is None or not ident.strip().lstrip("-").isdigit():
            return []
        value = int(ident)
        last, found = self.last, []
        if last is not None:
            if value == last:
                found.append(("duplicate", f"id {value} again"))
            elif value < last:
                found.append(("out_of_order", f"id {value} after {last}"))
            elif value > last + 1:
                missing = value - last - 1
                self.gaps += 1
                self.missing += missing
                span = str(last + 1) if missing == 1 else f"{last + 1}..{value - 1}"
                found.append(("gap", f"missing {span} ({missing})"))
        if last is None or value > last:
            self.last = value
        return found


class SSEClient(ConnectionDriver):
    """An EventSource that reconnects with Last-Event-ID and reports every event."""

    label = "sse"
    closing_reason = "client closed the stream"

    def __init__(self, options: SSEOptions, name: str = "sse",
                 observers: Iterable[Observer] = ()) -> None:
        super().__init__(name, options.backoff, observers, grace=options.connect_timeout + 1,
                         stable_after=options.stable_after,
                         refreshable=can_refresh(options.token))
        self.options = options
        self.last_event_id: str | None = options.last_event_id
        self.ids = IdTracker()
        self._http: httpx.AsyncClient | None = None

    async def send(self, data: str | bytes) -> None:
        """An event stream only receives: always NotConnected, with the reason."""
        raise NotConnected("an SSE stream only receives; nothing can be sent on it")

    async def _release(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def _attempt(self) -> Failure:
        if self._http is None:
            self._http = httpx.AsyncClient(
                verify=url_context(self.options.url, insecure=self.options.insecure))
        ended = await self._session(self._http)
        return Failure("closed", ended, reason=ended)

    async def _session(self, http: httpx.AsyncClient) -> str:
        """One stream: open, read events until it ends; returns why it ended."""
        opts = self.options
        async with asyncio.timeout(opts.connect_timeout):
            token = await fetch_token(opts.token)
        url, extra = place_token(opts.url, list(opts.headers), token, opts.token_mode)
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        headers.update(dict(extra))
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        timeout = httpx.Timeout(opts.read_timeout, connect=opts.connect_timeout)
        async with http.stream("GET", url, headers=headers, timeout=timeout) as response:
            status = response.status_code
            if status == 204:
                raise _Final("stopped", "HTTP 204: the server asked not to reconnect")
            ctype = response.headers.get("content-type", "")
            if status != 200 or "text/event-stream" not in ctype:
                raise _NotAStream(
                    f"HTTP {status} {ctype}".rstrip() if status == 200 else
                    f"HTTP {status} {response.reason_phrase}".rstrip(), status,
                    parse_retry_after(response.headers.get("retry-after")))
            self._opened(attempt=self.policy.attempt,
                         reason=f"HTTP 200, Last-Event-ID {self.last_event_id or '-'}")
            parser = SSEParser(self.last_event_id)
            async for text in response.aiter_text():
                for event in parser.feed(text):
                    self._dispatch(event)
        return "the server ended the stream"

    def _dispatch(self, event: SSEEvent) -> None:
        payload = event.as_json()
        self.stats.received += 1
        self.stats.bytes_in += len(payload)
        if event.retry is not None:
            self.server_retry = event.retry / 1000.0
        self._emit(FrameRecord(self.name, Direction.IN, Opcode.TEXT, payload))
        if event.id is not None:
            self.last_event_id = event.id
        if event.id_set:
            for kind, detail in self.ids.seen(event.id):
                if kind == "gap":
                    self.stats.gaps += 1
                    self.stats.missing = self.ids.missing
                elif kind == "duplicate":
                    self.stats.duplicates += 1
                else:
                    self.stats.out_of_order += 1
                self._emit(DeliveryEvent(self.name, kind, id=event.id, detail=detail))

    async def _classify(self, exc: BaseException) -> Failure:
        """A failed or broken stream as a Failure (sniffing for a protocol mismatch)."""
        if isinstance(exc, _Final):
            return Failure(exc.kind, str(exc), final=True)
        if isinstance(exc, TokenError):
            return Failure("auth", str(exc))
        kind, detail = await self._kind_of(exc)
        if isinstance(exc, _NotAStream) and exc.status != 200:
            return Failure(kind, detail, status=exc.status, retry_after=exc.retry_after)
        return Failure(kind, detail)

    async def _kind_of(self, exc: BaseException) -> tuple[str, str]:
        if isinstance(exc, _NotAStream) and exc.status in (401, 403, 429, 503):
            return "handshake_rejected", str(exc)  # the status is the answer: no sniffing
        if isinstance(exc, _NotAStream):
            with contextlib.suppress(Exception):
                seen = await sniff(self.options.url, timeout=min(3.0, self.options.connect_timeout),
                                   verify=url_context(self.options.url,
                                                      insecure=self.options.insecure))
                mismatch = mismatch_text("sse", seen)
                if mismatch:
                    return "protocol_mismatch", mismatch
            if exc.status != 200:
                return "handshake_rejected", str(exc)
            return "handshake_rejected", f"not an event stream: {exc}"
        if isinstance(exc, httpx.ConnectTimeout):
            return "timeout", "timed out opening the connection"
        if isinstance(exc, TimeoutError):
            return "timeout", "timed out waiting for the token provider"
        if isinstance(exc, httpx.ReadTimeout):
            return "liveness", f"nothing heard for {self.options.read_timeout} s"
        if isinstance(exc, httpx.ConnectError):
            text = str(exc)
            if "Name or service" in text or "nodename" in text:
                return "dns", text
            return "refused", text or "connection refused"
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return "network", str(exc) or type(exc).__name__
        return "protocol", f"{type(exc).__name__}: {exc}"


class _NotAStream(WsconsoleError):
    """The response is not a 200 text/event-stream (its status and Retry-After kept)."""

    def __init__(self, text: str, status: int, retry_after: float | None) -> None:
        super().__init__(text)
        self.status = status
        self.retry_after = retry_after


class _Final(WsconsoleError):
    """An answer meaning "do not reconnect" (HTTP 204)."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind
