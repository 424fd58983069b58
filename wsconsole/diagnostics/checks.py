"""Diagnose a WebSocket endpoint step by step, in words a support engineer can read out.

`diagnose(options)` runs, in order and each bounded by `options.timeout`:

    dns        the host name resolves (addresses listed)
    tcp        a TCP connection opens to one of them (connect time)
    tls        wss:// only: certificate chain verified, expiry, protocol version, cipher
    handshake  the HTTP upgrade: status, response headers, subprotocol
    latency    round trip of N pings on a ReconnectingClient connection
    reconnect  the connection is dropped under the client; it must come back by itself
    audit      the production-safe subset of the security audit (faults.audit, no floods)

Each step gives a `StepResult`: verdict ok / warn / fail / skip, a plain-language summary,
and the technical detail as a JSON-ready dict. A step that cannot run because an earlier one
failed is "skip" with the reason. Nothing here raises for a bad endpoint: unreachable hosts,
refused ports, expired certificates and servers refusing the upgrade are findings.
The client's frames, state transitions, heartbeats and errors are captured (`Capture`) for
the support bundle.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import socket
import ssl
import statistics
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI

from wsconsole import __version__
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ClientOptionsError, ReconnectingClient
from wsconsole.core.events import ErrorEvent, FrameRecord, HeartbeatEvent
from wsconsole.core.lifecycle import State, Transition
from wsconsole.core.tls import client_context
from wsconsole.faults.audit import Status, run_audit
from wsconsole.faults.probe import ProbeConfig, Target, TargetError

TokenMode = Literal["query", "header", "message"]
EXPIRY_WARN_DAYS = 14
SLOW_RTT = 0.3  # seconds: above this average round trip, users notice


class Verdict(enum.StrEnum):
    """One step's outcome."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


class DiagnoseError(ValueError):
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
        return client_context(self.ca_file, self.insecure) if self.secure else None

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


# ---------------------------------------------------------------- the steps


async def check_dns(opts: DiagnoseOptions) -> StepResult:
    """Resolve the host name."""
    title = "Name lookup (DNS)"
    host = opts.host
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, opts.port, type=socket.SOCK_STREAM),
            opts.timeout)
    except TimeoutError:
        return StepResult("dns", title, Verdict.FAIL,
                          f"Looking up '{host}' took longer than {opts.timeout:g} s: the DNS "
                          "server of this network is slow or unreachable.", {"host": host})
    except (socket.gaierror, UnicodeError) as exc:
        return StepResult("dns", title, Verdict.FAIL,
                          f"The name '{host}' could not be found: check its spelling, or this "
                          "network cannot resolve it (a VPN or internal DNS may be needed).",
                          {"host": host, "error": str(exc)})
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    return StepResult("dns", title, Verdict.OK,
                      f"'{host}' resolves to {', '.join(addresses[:4])}"
                      + (" ..." if len(addresses) > 4 else "") + ".",
                      {"host": host, "addresses": addresses})


async def check_tcp(opts: DiagnoseOptions, addresses: list[str]) -> StepResult:
    """Open a TCP connection to the first address that accepts one."""
    title = "Network connection (TCP)"
    errors: dict[str, str] = {}
    kinds: set[str] = set()
    for address in addresses:
        began = time.monotonic()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(address, opts.port),
                                               opts.timeout)
        except TimeoutError:
            errors[address], _ = f"no answer within {opts.timeout:g} s", kinds.add("timeout")
            continue
        except ConnectionRefusedError:
            errors[address], _ = "connection refused", kinds.add("refused")
            continue
        except OSError as exc:
            errors[address], _ = exc.strerror or str(exc), kinds.add("other")
            continue
        took = time.monotonic() - began
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, TimeoutError):
            pass
        return StepResult("tcp", title, Verdict.OK,
                          f"Port {opts.port} on {address} accepts connections "
                          f"(connected in {took * 1000:.0f} ms).",
                          {"address": address, "port": opts.port,
                           "connect_ms": round(took * 1000, 1), "failed": errors})
    where = f"{opts.host} port {opts.port}"
    if kinds == {"refused"}:
        summary = (f"The host answers, but nothing accepts connections on {where} "
                   "(connection refused): the port is wrong or the service is not running.")
    elif "timeout" in kinds:
        summary = (f"No answer from {where} within {opts.timeout:g} s: a firewall is dropping "
                   "the traffic, or the host is down.")
    else:
        summary = (f"The network cannot reach {where} "
                   f"({'; '.join(sorted(set(errors.values())))}).")
    return StepResult("tcp", title, Verdict.FAIL, summary,
                      {"port": opts.port, "errors": errors})


_VERIFY_WORDS = {
    10: "The server's certificate has expired",
    9: "The server's certificate is not valid yet (check this machine's clock)",
    18: "The server uses a self-signed certificate that this machine does not trust",
    19: "The certificate chain ends in a self-signed authority this machine does not trust",
    20: "The certificate was issued by an authority this machine does not know "
        "(a missing intermediate certificate, or a private CA)",
    21: "The certificate chain is incomplete (the server does not send its intermediate "
        "certificate)",
    62: "The certificate does not cover this host name",
}


def _name(name: Any) -> str:
    """A readable X.509 name (from cryptography's Name)."""
    try:
        return str(name.rfc4514_string())
    except Exception:
        return str(name)


def _certificate_facts(der: bytes | None) -> dict[str, Any]:
    """Subject, issuer, validity and names of a DER certificate (cryptography parses it)."""
    if not der:
        return {}
    try:
        from cryptography import x509
    except ImportError:  # a declared dependency; say so rather than fail the step
        return {"error": "the cryptography package is not installed: no certificate details"}

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return {"error": f"unreadable certificate: {exc}"}
    not_after = cert.not_valid_after_utc
    now = dt.datetime.now(dt.UTC)
    facts: dict[str, Any] = {
        "subject": _name(cert.subject),
        "issuer": _name(cert.issuer),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": not_after.isoformat(),
        "days_left": (not_after - now).days,
        "self_signed": cert.subject == cert.issuer,
        "serial": format(cert.serial_number, "x"),
    }
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        facts["names"] = [str(v) for v in san.value.get_values_for_type(x509.DNSName)] + [
            str(v) for v in san.value.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        facts["names"] = []
    return facts


async def _tls_connect(opts: DiagnoseOptions, address: str,
                       context: ssl.SSLContext) -> ssl.SSLObject:
    """TLS handshake to address:port with SNI = host; returns the SSL object (closed after)."""
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(address, opts.port, ssl=context, server_hostname=opts.host,
                                ssl_handshake_timeout=opts.timeout), opts.timeout)
    ssl_object = writer.get_extra_info("ssl_object")
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (OSError, TimeoutError, ssl.SSLError):
        pass
    assert isinstance(ssl_object, ssl.SSLObject)
    return ssl_object


async def check_tls(opts: DiagnoseOptions, address: str) -> StepResult:
    """Verify the chain against the trust store (or --ca-file) and read the certificate."""
    title = "Secure connection (TLS)"
    context = ssl.create_default_context(cafile=opts.ca_file)
    detail: dict[str, Any] = {"address": address, "sni": opts.host}
    try:
        sslobj = await _tls_connect(opts, address, context)
    except ssl.SSLCertVerificationError as exc:
        detail["verify_code"] = exc.verify_code
        detail["error"] = exc.verify_message or str(exc)
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        try:
            unverified = await _tls_connect(opts, address, insecure)
            detail["protocol"] = unverified.version()
            detail["certificate"] = _certificate_facts(unverified.getpeercert(binary_form=True))
        except (OSError, TimeoutError, ssl.SSLError) as second:
            detail["certificate_error"] = str(second)
        words = _VERIFY_WORDS.get(exc.verify_code or 0, "The server's certificate is not "
                                  "trusted by this machine")
        cert = detail.get("certificate") or {}
        if exc.verify_code == 10 and cert.get("not_after"):
            words += f" (on {cert['not_after'][:10]}, {-cert['days_left']} day(s) ago)"
        verdict = Verdict.WARN if opts.insecure else Verdict.FAIL
        suffix = (": browsers and clients will refuse to connect." if not opts.insecure else
                  "; continuing because --insecure was given.")
        return StepResult("tls", title, verdict, words + suffix, detail)
    except ssl.SSLError as exc:
        detail["error"] = str(exc)
        return StepResult("tls", title, Verdict.FAIL,
                          "The secure connection could not be set up (TLS "
                          f"{exc.reason or 'error'}): the port may not speak TLS, or it only "
                          "offers outdated protocols.", detail)
    except TimeoutError:
        return StepResult("tls", title, Verdict.FAIL,
                          f"The TLS handshake did not finish within {opts.timeout:g} s.", detail)
    except OSError as exc:
        detail["error"] = str(exc)
        return StepResult("tls", title, Verdict.FAIL,
                          f"The connection dropped during the TLS handshake ({exc}).", detail)
    version = sslobj.version() or "?"
    cipher = sslobj.cipher()
    cert = _certificate_facts(sslobj.getpeercert(binary_form=True))
    chain_fn = getattr(sslobj, "get_verified_chain", None)  # Python 3.13+
    detail.update({"protocol": version, "cipher": cipher[0] if cipher else None,
                   "verified": True, "certificate": cert})
    if chain_fn is not None:
        try:
            detail["chain"] = [_certificate_facts(c.public_bytes(ssl.Encoding.DER)).get("subject")
                               for c in chain_fn()]
        except Exception:  # the chain is a bonus on newer Pythons
            pass
    days = cert.get("days_left")
    summary = (f"The certificate for {opts.host} is trusted (issued by "
               f"{cert.get('issuer', '?')}), valid until {str(cert.get('not_after', '?'))[:10]}"
               f"; protocol {version}.")
    verdict = Verdict.OK
    if isinstance(days, int) and days < EXPIRY_WARN_DAYS:
        verdict = Verdict.WARN
        summary += f" It expires in {days} day(s): renew it soon."
    if version in ("TLSv1", "TLSv1.1", "SSLv3"):
        verdict = Verdict.WARN
        summary += f" {version} is outdated: enable TLS 1.2 or 1.3."
    return StepResult("tls", title, verdict, summary, detail)


_STATUS_WORDS = {
    400: "The server rejected the upgrade request as malformed (HTTP 400)",
    401: "The server refused the credentials (HTTP 401): the token is missing, wrong or "
         "expired",
    403: "The server refused the connection (HTTP 403): the token or the Origin is not "
         "allowed",
    404: "There is no WebSocket endpoint at this path (HTTP 404): check the URL's path",
    426: "The server wants a different protocol version (HTTP 426 Upgrade Required)",
    429: "The server is rate-limiting new connections (HTTP 429): try again later",
    502: "A proxy in front of the server could not reach it (HTTP 502)",
    503: "The server is unavailable or overloaded (HTTP 503)",
}


async def check_handshake(opts: DiagnoseOptions) -> StepResult:
    """The HTTP upgrade: status 101, response headers, the chosen subprotocol."""
    title = "WebSocket handshake"
    url, headers = opts.handshake_url_and_headers()
    began = time.monotonic()
    try:
        conn = await connect(
            url, additional_headers=headers or None, subprotocols=opts.subprotocols or None,  # type: ignore[arg-type]
            origin=opts.origin,  # type: ignore[arg-type]
            ssl=opts.ssl_context(), open_timeout=opts.timeout, ping_interval=None,
            close_timeout=1.0, compression=None, proxy=None,
            user_agent_header=f"wsconsole/{__version__} (diagnose)")
    except InvalidStatus as exc:
        response = exc.response
        status = response.status_code
        body = bytes(response.body or b"")[:500].decode("utf-8", "replace")
        words = _STATUS_WORDS.get(status)
        if words is None:
            words = (f"The server answered HTTP {status} {response.reason_phrase} instead of "
                     "switching to WebSocket: the URL points at an ordinary web page, or a "
                     "proxy in between does not pass WebSocket upgrades")
        return StepResult("handshake", title, Verdict.FAIL, words + ".", {
            "status": status, "reason": response.reason_phrase,
            "headers": list(response.headers.raw_items()), "body": body})
    except TimeoutError:
        return StepResult("handshake", title, Verdict.FAIL,
                          f"The server accepted the connection but did not answer the upgrade "
                          f"within {opts.timeout:g} s.", {"timeout": opts.timeout})
    except InvalidMessage as exc:
        cause = exc.__cause__
        return StepResult("handshake", title, Verdict.FAIL,
                          "The server did not answer with valid HTTP: this port may serve "
                          "another protocol.", {"error": str(exc), "cause": str(cause or "")})
    except (InvalidHandshake, InvalidURI) as exc:
        return StepResult("handshake", title, Verdict.FAIL,
                          f"The upgrade response broke the WebSocket rules: {exc}.",
                          {"error": str(exc)})
    except (OSError, ssl.SSLError) as exc:
        return StepResult("handshake", title, Verdict.FAIL,
                          f"The connection failed during the upgrade ({exc}).",
                          {"error": str(exc)})
    took = time.monotonic() - began
    response = conn.response
    detail = {"status": response.status_code if response else None,
              "headers": list(response.headers.raw_items()) if response else [],
              "subprotocol": conn.subprotocol, "handshake_ms": round(took * 1000, 1)}
    await conn.close()
    if opts.subprotocols and conn.subprotocol is None:
        return StepResult("handshake", title, Verdict.FAIL,
                          f"The server accepted the connection but none of the subprotocols "
                          f"{', '.join(opts.subprotocols)}.", detail)
    sub = f", subprotocol '{conn.subprotocol}'" if conn.subprotocol else ""
    return StepResult("handshake", title, Verdict.OK,
                      f"The server switched to WebSocket (HTTP 101{sub}) in "
                      f"{took * 1000:.0f} ms.", detail)


async def check_latency(opts: DiagnoseOptions, client: ReconnectingClient) -> StepResult:
    """N pings on an open connection; min / median / max round trip."""
    title = "Round-trip latency"
    if await _wait_open(client, opts.timeout) is None:
        return StepResult("latency", title, Verdict.FAIL,
                          "The client could not open a connection to measure latency "
                          f"({client.final_error or 'no detail'}).", {})
    rtts: list[float] = []
    lost = 0
    for n in range(opts.pings):
        try:
            rtts.append(await client.ping())
        except (TimeoutError, OSError, Exception) as exc:  # a closed connection raises too
            lost += 1
            if client.state is not State.OPEN:
                return StepResult("latency", title, Verdict.FAIL,
                                  f"The connection closed during the ping test ({exc}).",
                                  {"rtt_ms": [round(r * 1000, 2) for r in rtts], "lost": lost})
        if n + 1 < opts.pings:
            await asyncio.sleep(opts.ping_gap)
    detail: dict[str, Any] = {"pings": opts.pings, "lost": lost,
                              "rtt_ms": [round(r * 1000, 2) for r in rtts]}
    if not rtts:
        return StepResult("latency", title, Verdict.FAIL,
                          f"None of {opts.pings} pings was answered within {opts.timeout:g} s: "
                          "the server does not answer pings (its heartbeat will not work).",
                          detail)
    med = statistics.median(rtts)
    detail.update(min_ms=round(min(rtts) * 1000, 2), median_ms=round(med * 1000, 2),
                  max_ms=round(max(rtts) * 1000, 2))
    summary = (f"{len(rtts)} of {opts.pings} pings answered; round trip {med * 1000:.0f} ms "
               f"typical, {max(rtts) * 1000:.0f} ms worst.")
    verdict = Verdict.OK
    if lost:
        verdict = Verdict.WARN
        summary += f" {lost} ping(s) went unanswered: the connection is unreliable."
    elif med > SLOW_RTT:
        verdict = Verdict.WARN
        summary += " That is slow: users will notice delays."
    return StepResult("latency", title, verdict, summary, detail)


def _drop_connection(client: ReconnectingClient) -> bool:
    """Cut the client's TCP connection without a close handshake, as a network failure does."""
    conn = getattr(client, "_conn", None)  # the live websockets connection, if any
    transport = getattr(conn, "transport", None)
    if transport is None:
        return False
    transport.abort()
    return True


async def _wait_open(client: ReconnectingClient, timeout: float) -> Transition | None:
    try:
        return await client.wait_state(State.OPEN, timeout)
    except TimeoutError:
        return None


async def check_reconnect(opts: DiagnoseOptions, client: ReconnectingClient) -> StepResult:
    """Drop the connection under the client; it must reconnect by itself, promptly."""
    title = "Reconnect after a dropped connection"
    if client.state is not State.OPEN and await _wait_open(client, opts.timeout) is None:
        return StepResult("reconnect", title, Verdict.SKIP, "No open connection to drop.", {})
    began = time.monotonic()
    start_index = len(client.lifecycle.history)
    if not _drop_connection(client):
        return StepResult("reconnect", title, Verdict.SKIP,
                          "The connection could not be dropped from this side.", {})
    budget = opts.timeout * 2 + client.options.backoff.cap * 2
    try:
        await client.wait_state(State.RECONNECTING, budget)
        reopened = await client.wait_state(State.OPEN, budget)
    except TimeoutError:
        reopened = None
    history = list(client.lifecycle.history)[start_index:]
    states = [t.state.value for t in history]
    errors = [t.error for t in history if t.error]
    detail = {"states": states, "errors": errors, "attempts": max(
        (t.attempt for t in history), default=0)}
    if reopened is None:
        return StepResult("reconnect", title, Verdict.FAIL,
                          "After a dropped connection the client could not get back in"
                          + (f" ({errors[-1]})" if errors else "")
                          + ": reconnecting users will be locked out.", detail)
    took = time.monotonic() - began
    detail["reconnect_ms"] = round(took * 1000, 1)
    attempts = detail["attempts"]
    verdict = Verdict.OK if attempts <= 1 else Verdict.WARN
    summary = (f"After a dropped connection the client was back in {took:.1f} s "
               f"({attempts} attempt{'s' if attempts != 1 else ''}).")
    if verdict is Verdict.WARN:
        summary += " Some attempts were refused: the server may hold on to old sessions."
    return StepResult("reconnect", title, verdict, summary, detail)


async def check_audit(opts: DiagnoseOptions) -> StepResult:
    """The security checks that are safe against production (no floods)."""
    title = "Security checks (production-safe)"
    findings = await run_audit(opts.target(), ProbeConfig(timeout=opts.timeout),
                               safe_only=True)
    ran = [f for f in findings if f.safe_for_production and f.status is not Status.NOT_APPLICABLE]
    failed = [f for f in ran if f.status is Status.FAIL]
    detail = {"findings": [f.as_dict() for f in findings]}
    if not ran:
        return StepResult("audit", title, Verdict.SKIP, "No security check applied.", detail)
    if failed:
        return StepResult("audit", title, Verdict.WARN,
                          f"{len(failed)} of {len(ran)} security checks failed: "
                          + "; ".join(f"{f.title} - {f.detail}" for f in failed) + ".", detail)
    return StepResult("audit", title, Verdict.OK,
                      f"All {len(ran)} production-safe security checks passed.", detail)


# ---------------------------------------------------------------- the driver


async def _timed(step_id: str, title: str, timeout: float,
                 make: Callable[[], Awaitable[StepResult]]) -> StepResult:
    """Run one step with an overall bound; an unexpected exception becomes a finding."""
    began = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            result = await make()
    except TimeoutError:
        result = StepResult(step_id, title, Verdict.FAIL,
                            f"This check did not finish within {timeout:g} s.", {})
    except (OSError, ssl.SSLError, ValueError, TargetError) as exc:
        result = StepResult(step_id, title, Verdict.FAIL, f"This check failed: {exc}.",
                            {"error": f"{type(exc).__name__}: {exc}"})
    result.seconds = time.monotonic() - began
    return result


async def diagnose(options: DiagnoseOptions, progress: Progress | None = None) -> Diagnosis:
    """Run every step in order and return the Diagnosis (never raises for a bad endpoint)."""
    options.validate()
    result = Diagnosis(options)
    budget = options.timeout * 4 + 5

    def add(step: StepResult) -> StepResult:
        result.steps.append(step)
        if progress is not None:
            progress(step)
        return step

    def skip(step_id: str, title: str, reason: str) -> None:
        add(StepResult(step_id, title, Verdict.SKIP, f"Not checked: {reason}."))

    dns = add(await _timed("dns", "Name lookup (DNS)", budget, lambda: check_dns(options)))
    addresses = dns.detail.get("addresses", [])
    if dns.verdict is Verdict.FAIL:
        tcp = None
        skip("tcp", "Network connection (TCP)", "the name did not resolve")
    else:
        tcp = add(await _timed("tcp", "Network connection (TCP)", budget * len(addresses[:4]),
                               lambda: check_tcp(options, addresses[:4])))
    reachable = tcp is not None and tcp.verdict is Verdict.OK
    if options.secure:
        if reachable:
            assert tcp is not None
            tls = add(await _timed("tls", "Secure connection (TLS)", budget,
                                   lambda: check_tls(options, tcp.detail["address"])))
            reachable = tls.verdict is not Verdict.FAIL
        else:
            skip("tls", "Secure connection (TLS)", "no network connection")
    if reachable:
        handshake = add(await _timed("handshake", "WebSocket handshake", budget,
                                     lambda: check_handshake(options)))
        upgraded = handshake.verdict is Verdict.OK
    else:
        skip("handshake", "WebSocket handshake", "no network or secure connection")
        upgraded = False
    if upgraded:
        client = ReconnectingClient(options.client_options(), name="diagnose",
                                    observers=[result.capture])
        await client.start()
        try:
            latency = add(await _timed("latency", "Round-trip latency",
                                       budget + options.pings * (options.ping_gap + 1),
                                       lambda: check_latency(options, client)))
            if options.reconnect and latency.verdict is not Verdict.FAIL:
                add(await _timed("reconnect", "Reconnect after a dropped connection",
                                 budget * 3, lambda: check_reconnect(options, client)))
            elif options.reconnect:
                skip("reconnect", "Reconnect after a dropped connection",
                     "the connection did not work")
        finally:
            await client.stop()
        if options.audit:
            add(await _timed("audit", "Security checks (production-safe)", budget * 10,
                             lambda: check_audit(options)))
    else:
        for step_id, title in (("latency", "Round-trip latency"),
                               ("reconnect", "Reconnect after a dropped connection"),
                               ("audit", "Security checks (production-safe)")):
            skip(step_id, title, "the WebSocket handshake did not succeed")
    result.finished = time.time()
    return result
