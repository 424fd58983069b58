"""Security audit of a WebSocket endpoint, after the usual checklist.

Each check answers one question in plain words and gives `pass`, `fail` or `n/a`:
foreign Origin accepted (cross-site WebSocket hijacking), connection without credentials,
a message over 1 MiB, a burst over 100 msg/s, a 6th connection for one user, plain ws://
where wss:// is expected. `Check.safe_for_production` marks the checks that send no flood
(the diagnostics run only those against a customer endpoint: `run_audit(..., safe_only=True)`).
Every network step reuses the probe's raw connection and is bounded in time.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from wsconsole.core.frames import Opcode, encode_frame
from wsconsole.faults.observe import Observation, Watcher
from wsconsole.faults.target import ProbeConfig, Target
from wsconsole.faults.wire import HandshakeError, RawConnection, open_connection

MIB = 1024 * 1024
FOREIGN_ORIGIN = "https://wsconsole-audit.example"
LIMIT_CODES = frozenset({1008, 1009, 1013})  # policy, too big, try again later


class Status(enum.StrEnum):
    """A finding's outcome."""

    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class AuditConfig:
    """What the endpoint is expected to enforce (DESIGN.md defaults)."""

    message_limit: int = MIB  # a message over this must be refused (close 1009)
    rate_limit: int = 100  # messages per second per connection
    burst_rate: int = 300  # the burst check sends at this rate ...
    burst_seconds: float = 1.0  # ... for this long
    user_connections: int = 5  # the connection after this many for one user must be refused
    settle: float = 1.0  # how long to wait for a limit to show after provoking it
    foreign_origin: str = FOREIGN_ORIGIN
    expect_tls: bool | None = None  # None: expected unless the host is loopback


@dataclass(frozen=True)
class Finding:
    """One check's result, in plain words."""

    check: str
    title: str
    status: Status
    detail: str
    safe_for_production: bool

    def as_dict(self) -> dict[str, object]:
        """The --json record of the finding."""
        return {
            "check": self.check,
            "title": self.title,
            "status": self.status.value,
            "detail": self.detail,
            "safe_for_production": self.safe_for_production,
        }


Runner = Callable[[Target, ProbeConfig, AuditConfig], Awaitable[tuple[Status, str]]]


@dataclass(frozen=True)
class Check:
    """One audit question and the coroutine that answers it."""

    id: str
    title: str
    safe_for_production: bool
    run: Runner


def _closed_how(seen: Observation) -> str:
    if seen.closed:
        return f"closed with {seen.close_code}" + (
            f" {seen.close_reason!r}" if seen.close_reason else ""
        )
    return "dropped the connection"


async def _settle(conn: RawConnection, seen: Observation, seconds: float, timeout: float) -> None:
    """Read for `seconds`, then check the connection still answers a ping."""
    watcher = Watcher(conn, seen)
    await watcher.until(lambda: seen.closed or seen.ended is not None, conn.loop_time + seconds)
    if not (seen.closed or seen.ended):
        await watcher.ping_alive(timeout)


def _refused(exc: HandshakeError) -> bool:
    """True when the handshake was answered with an HTTP refusal (not a network problem)."""
    return exc.kind == "http-status"


async def check_origin(
    target: Target, config: ProbeConfig, audit: AuditConfig
) -> tuple[Status, str]:
    """A foreign Origin must be refused, or cross-site pages can use the user's cookies."""
    try:
        conn = await open_connection(target.with_origin(audit.foreign_origin), config)
    except HandshakeError as exc:
        if _refused(exc):
            return Status.PASS, f"refused Origin {audit.foreign_origin} (HTTP {exc.status})"
        return Status.NOT_APPLICABLE, f"could not test: {exc.detail}"
    seen = Observation()
    try:
        await _settle(conn, seen, min(audit.settle, 0.3), config.timeout)
    finally:
        await conn.close()
    if seen.closed and seen.close_code == 1008:
        return Status.PASS, f"accepted the upgrade from {audit.foreign_origin}, then closed 1008"
    return Status.FAIL, (
        f"accepted a connection with Origin {audit.foreign_origin}: a page on any site can open"
        " it with the user's cookies (cross-site WebSocket hijacking); check Origin"
    )


async def check_credentials(
    target: Target, config: ProbeConfig, audit: AuditConfig
) -> tuple[Status, str]:
    """A connection without a token must be refused or asked to authenticate."""
    bare = target.without_credentials()
    try:
        conn = await open_connection(bare, config)
    except HandshakeError as exc:
        if _refused(exc):
            return Status.PASS, f"refused a connection without credentials (HTTP {exc.status})"
        return Status.NOT_APPLICABLE, f"could not test: {exc.detail}"
    seen = Observation()
    try:
        # A harness-protocol request any server may answer; a strict one says "authenticate".
        conn.send_frame(Opcode.TEXT, b'{"type": "join", "room": "wsconsole-audit"}')
        await _settle(conn, seen, min(audit.settle, 0.5), config.timeout)
    finally:
        await conn.close()
    if seen.closed or seen.ended:
        return Status.PASS, f"accepted the upgrade without credentials, then {_closed_how(seen)}"
    auth_errors = [c for c in seen.app_errors if "auth" in c.lower()]
    if auth_errors:
        return Status.PASS, f"accepted the upgrade, then asked for credentials ({auth_errors[0]})"
    return Status.FAIL, (
        "accepted and served a connection without any credentials (no token, no"
        " Authorization, no cookie)"
    )


async def check_message_size(
    target: Target, config: ProbeConfig, audit: AuditConfig
) -> tuple[Status, str]:
    """A message over the limit must be refused (1009), or one client can exhaust memory."""
    try:
        conn = await open_connection(target, config)
    except HandshakeError as exc:
        return Status.NOT_APPLICABLE, f"could not connect: {exc.detail}"
    seen = Observation()
    size = audit.message_limit + 1
    try:
        conn.send(encode_frame(Opcode.TEXT, b"a" * size, mask_key=os.urandom(4)))
        # The ping queues behind the big message: its pong means the message was taken.
        await Watcher(conn, seen).ping_alive(config.timeout)
    finally:
        await conn.close()
    if seen.closed or seen.ended:
        return Status.PASS, f"refused a {size}-byte message: {_closed_how(seen)}"
    return Status.FAIL, (
        f"accepted a {size}-byte message (over {audit.message_limit}) and stayed open"
    )


async def check_rate(target: Target, config: ProbeConfig, audit: AuditConfig) -> tuple[Status, str]:
    """A burst above the rate limit must be limited (error replies, or a close)."""
    try:
        conn = await open_connection(target, config)
    except HandshakeError as exc:
        return Status.NOT_APPLICABLE, f"could not connect: {exc.detail}"
    seen = Observation()
    watcher = Watcher(conn, seen)
    total = int(audit.burst_rate * audit.burst_seconds)
    batches = max(1, int(audit.burst_seconds * 20))
    per_batch = -(-total // batches)
    sent = 0
    try:
        start = conn.loop_time
        for batch in range(batches):
            count = min(per_batch, total - sent)
            if count <= 0:
                break
            data = b"".join(
                encode_frame(
                    Opcode.TEXT,
                    b'{"type": "rpc", "id": "audit-%d", "method": "wsconsole.audit"}' % (sent + i),
                    mask_key=os.urandom(4),
                )
                for i in range(count)
            )
            if not conn.send(data):
                break
            sent += count
            # Pace the batches (and read replies meanwhile) so the rate is sustained.
            await watcher.until(lambda: seen.closed or seen.ended is not None,
                                start + (batch + 1) * audit.burst_seconds / batches)
            seen.timed_out = False
            if seen.closed or seen.ended:
                break
        elapsed = max(conn.loop_time - start, 1e-3)
        if not (seen.closed or seen.ended):
            await _settle(conn, seen, audit.settle, config.timeout)
    finally:
        await conn.close()
    rate = sent / elapsed
    limited = [c for c in seen.app_errors if any(w in c.lower() for w in ("rate", "limit", "slow"))]
    if seen.closed or seen.ended:
        return Status.PASS, f"limited a burst of {rate:.0f} msg/s: {_closed_how(seen)} after {sent}"
    if limited:
        return Status.PASS, f"limited a burst of {rate:.0f} msg/s with error replies ({limited[0]})"
    return Status.FAIL, (
        f"took {sent} messages at {rate:.0f} msg/s (limit {audit.rate_limit}/s) with no limiting"
    )


async def check_user_connections(
    target: Target, config: ProbeConfig, audit: AuditConfig
) -> tuple[Status, str]:
    """One user must not hold more than the allowed connections at once."""
    if not target.has_credentials:
        return Status.NOT_APPLICABLE, "needs credentials (--token or an auth header) to be one user"
    conns: list[RawConnection] = []
    try:
        for index in range(audit.user_connections + 1):
            try:
                conns.append(await open_connection(target, config))
            except HandshakeError as exc:
                if _refused(exc):
                    return Status.PASS, (
                        f"refused connection {index + 1} for one user (HTTP {exc.status})"
                    )
                return Status.NOT_APPLICABLE, f"could not connect: {exc.detail}"
        last = Observation()
        await _settle(conns[-1], last, min(audit.settle, 0.5), config.timeout)
        if last.closed or last.ended:
            return Status.PASS, (
                f"accepted connection {len(conns)} for one user, then {_closed_how(last)}"
            )
        for index, conn in enumerate(conns[:-1]):
            seen = Observation()
            await Watcher(conn, seen).until(lambda s=seen: s.closed or s.ended is not None,
                                            conn.loop_time + 0.05)
            if seen.closed or seen.ended:
                return Status.PASS, (
                    f"closed an older connection ({index + 1}) when a new one came: "
                    + _closed_how(seen)
                )
        return Status.FAIL, (
            f"accepted {len(conns)} concurrent connections for one user"
            f" (limit {audit.user_connections})"
        )
    finally:
        await asyncio.gather(*(conn.close() for conn in conns))


async def check_tls(target: Target, config: ProbeConfig, audit: AuditConfig) -> tuple[Status, str]:
    """Tokens and data must not travel in clear text where TLS is expected."""
    expect = audit.expect_tls if audit.expect_tls is not None else not target.is_loopback
    if not target.secure:
        if not expect:
            return Status.NOT_APPLICABLE, "loopback target over ws://: TLS not expected locally"
        return Status.FAIL, "the endpoint is used over plain ws://: tokens and data travel in clear"
    ports = [target.port] + ([80] if target.port == 443 else [])
    for port in ports:
        plain = target.with_scheme("ws", port)
        try:
            conn = await open_connection(plain, config)
        except HandshakeError:
            continue
        await conn.close()
        return Status.FAIL, f"also answers plain ws:// on port {port}"
    return Status.PASS, "plain ws:// is refused on " + ", ".join(f"port {p}" for p in ports)


CHECKS: tuple[Check, ...] = (
    Check("foreign-origin", "Refuses a foreign Origin (CSWSH)", True, check_origin),
    Check("no-credentials", "Refuses a connection without credentials", True, check_credentials),
    Check("message-size", "Refuses a message over 1 MiB", True, check_message_size),
    Check("rate-limit", "Limits a burst over 100 msg/s", False, check_rate),
    Check("user-connections", "Refuses a 6th connection for one user", True,
          check_user_connections),
    Check("plain-ws", "No plain ws:// where wss:// is expected", True, check_tls),
)


async def run_audit(
    target: Target,
    config: ProbeConfig | None = None,
    audit: AuditConfig | None = None,
    *,
    checks: Iterable[str] | None = None,
    safe_only: bool = False,
) -> list[Finding]:
    """Run the checks (all, the named ones, or only the production-safe ones) in order."""
    config = config or ProbeConfig()
    audit = audit or AuditConfig()
    wanted = set(checks) if checks is not None else None
    unknown = (wanted or set()) - {c.id for c in CHECKS}
    if unknown:
        raise KeyError(f"unknown audit check(s): {', '.join(sorted(unknown))}")
    findings = []
    for check in CHECKS:
        if wanted is not None and check.id not in wanted:
            continue
        if safe_only and not check.safe_for_production:
            findings.append(Finding(check.id, check.title, Status.NOT_APPLICABLE,
                                    "skipped: floods the endpoint", False))
            continue
        status, detail = await check.run(target, config, audit)
        findings.append(Finding(check.id, check.title, status, detail, check.safe_for_production))
    return findings
