"""The security audit: a deliberately lax `websockets` server is flagged on every check, a
strict one (origins=, max_size, a token check and a per-user cap in process_request, a rate
limit in its handler, TLS) passes every check."""

from __future__ import annotations

import http
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support import MS
from wsconsole.faults.audit import CHECKS, AuditConfig, Status, run_audit
from wsconsole.faults.probe import ProbeConfig, Target

CONFIG = ProbeConfig(timeout=5000 * MS)
AUDIT = AuditConfig(settle=500 * MS, burst_seconds=0.5)
TOKEN = "s3cret-user-1"
MIB = 1024 * 1024


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


class Strict:
    """A careful server: Origin allow-list, token, 5 connections per user, 100 msg/s, 1 MiB."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()

    def process_request(self, conn: ServerConnection, request):  # type: ignore[no-untyped-def]
        token = parse_qs(urlsplit(request.path).query).get("token", [None])[0]
        if token != TOKEN:
            return conn.respond(http.HTTPStatus.UNAUTHORIZED, "token required\n")
        if self.open[token] >= 5:
            return conn.respond(http.HTTPStatus.TOO_MANY_REQUESTS, "5 connections per user\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self.open[TOKEN] += 1
        stamps: list[float] = []
        try:
            async for message in ws:
                now = time.monotonic()
                stamps = [t for t in stamps if t > now - 1.0] + [now]
                if len(stamps) > 100:
                    await ws.close(1008, "rate limit")
                    return
                await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.open[TOKEN] -= 1


@pytest.fixture
async def lax_url() -> AsyncIterator[str]:
    # No origins=, no size limit, no authentication, no limits at all.
    async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


@pytest.fixture
async def strict_wss(tmp_path) -> AsyncIterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    strict = Strict()
    async with serve(strict.handler, "127.0.0.1", 0, ssl=context, max_size=MIB,
                     origins=[None, "http://localhost"],
                     process_request=strict.process_request) as server:
        yield f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}/", str(ca_file)


async def test_lax_server_is_flagged_on_every_check(lax_url: str) -> None:
    findings = await run_audit(Target(lax_url, token="anyone"), CONFIG,
                               AuditConfig(settle=AUDIT.settle, burst_seconds=0.5,
                                           expect_tls=True))
    assert [f.check for f in findings] == [c.id for c in CHECKS]
    by_id = {f.check: f for f in findings}
    assert all(f.status is Status.FAIL for f in findings), [f.as_dict() for f in findings]
    assert "cross-site WebSocket hijacking" in by_id["foreign-origin"].detail
    assert "without any credentials" in by_id["no-credentials"].detail
    assert "1048577-byte message" in by_id["message-size"].detail
    assert "no limiting" in by_id["rate-limit"].detail
    assert "6 concurrent connections" in by_id["user-connections"].detail
    assert "plain ws://" in by_id["plain-ws"].detail


async def test_strict_server_passes_every_check(strict_wss: tuple[str, str]) -> None:
    url, ca_file = strict_wss
    findings = await run_audit(Target(url, token=TOKEN, ca_file=ca_file), CONFIG, AUDIT)
    by_id = {f.check: f for f in findings}
    assert all(f.status is Status.PASS for f in findings), [f.as_dict() for f in findings]
    assert "HTTP 403" in by_id["foreign-origin"].detail
    assert "HTTP 401" in by_id["no-credentials"].detail
    assert "1009" in by_id["message-size"].detail
    assert "1008" in by_id["rate-limit"].detail
    assert "connection 6" in by_id["user-connections"].detail and "429" in by_id[
        "user-connections"].detail
    assert "refused" in by_id["plain-ws"].detail


async def test_safe_only_skips_the_flood_and_names_are_checked(lax_url: str) -> None:
    target = Target(lax_url)
    findings = await run_audit(target, CONFIG, AUDIT, safe_only=True,
                               checks=["rate-limit", "plain-ws", "user-connections"])
    by_id = {f.check: f for f in findings}
    assert by_id["rate-limit"].status is Status.NOT_APPLICABLE
    assert "floods" in by_id["rate-limit"].detail and not by_id["rate-limit"].safe_for_production
    assert by_id["plain-ws"].status is Status.NOT_APPLICABLE  # loopback: TLS not expected
    assert by_id["user-connections"].status is Status.NOT_APPLICABLE  # no credentials given
    with pytest.raises(KeyError, match="nope"):
        await run_audit(target, CONFIG, AUDIT, checks=["nope"])
