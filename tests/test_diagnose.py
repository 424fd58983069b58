"""`wsconsole diagnose` against the real harness and against broken endpoints.

The harness run goes through the CLI in its own process and writes a support bundle; the test
plants secrets in the URL query, the handshake headers, the settings file and the log, then
reads every member of the zip and fails if any secret survived. The broken endpoints are
real: an unresolvable name, a port nobody listens on, a TLS server with an expired
certificate, an HTTP server refusing the upgrade; each must be a plain-language finding,
never a traceback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme

from tests.support import MS, SCALE, free_port, pid_alive
from wsconsole.diagnostics.bundle import read_bundle, write_bundle
from wsconsole.diagnostics.checks import diagnose
from wsconsole.diagnostics.model import DiagnoseOptions, Verdict
from wsconsole.harness.cluster import Cluster, ClusterConfig

EXPECTED = {"report.html", "report.json", "frames.jsonl", "timeline.jsonl", "versions.json",
            "settings.json", "README.txt", "logs/wsconsole.log", "settings/wsconsole.conf"}
API_KEY = "k3y-PLANTED-abcdef0123456789"
PASSWORD = "pw-PLANTED-9876543210"
COOKIE = "sess-PLANTED-5555aaaa"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Two nodes behind the balancer, demo timings; nothing may outlive it."""
    harness = Cluster(ClusterConfig.demo(nodes=2, health_interval=0.25,
                                         log_dir=str(tmp_path / "harness")))
    await harness.start()
    pids = set(harness.pids())
    try:
        yield harness
    finally:
        pids |= set(harness.pids())
        await harness.stop()
        assert not [pid for pid in pids if pid_alive(pid)]


async def run_cli(*args: str, env: dict[str, str] | None = None,
                  timeout: float = 90 * SCALE) -> tuple[int, str, str]:
    """`python -m wsconsole ARGS` as a child process; (exit code, stdout, stderr)."""
    private = tempfile.mkdtemp(prefix="wsconsole-test-logs-")  # never the user's log folder
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsconsole", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "WSCONSOLE_LOG_DIR": private, "XDG_CONFIG_HOME": private,
             **(env or {})})
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(private, ignore_errors=True)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_diagnose_the_harness_writes_a_bundle_without_any_secret(
    cluster: Cluster, tmp_path: Path
) -> None:
    token = cluster.token("support-user")
    settings = tmp_path / "wsconsole.conf"
    profiles = orjson.dumps([{"name": "prod", "url": "wss://example.test/ws", "token": token,
                              "password": PASSWORD}]).decode().replace('"', '\\"')
    settings.write_text(f'[connections]\nprofiles="{profiles}"\napi_key={API_KEY}\n'
                        "[General]\nversion=1\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "wsconsole.log").write_text(
        f"2026-01-01 INFO connecting to {cluster.url}/?token={token}\n"
        f"2026-01-01 INFO header Authorization: Bearer {token}\n")
    out = tmp_path / "bundle.zip"
    code, stdout, stderr = await run_cli(
        "diagnose", f"{cluster.url}/?room=lobby&token={token}&api_key={API_KEY}",
        "-H", f"Authorization: Bearer {token}", "-H", f"Cookie: session={COOKIE}",
        "--settings", str(settings), "--out", str(out), "--json", "--timeout", "5",
        env={"WSCONSOLE_LOG_DIR": str(logs)})
    assert code == 0, stdout + stderr
    assert "Traceback" not in stderr
    lines = json_lines(stdout)
    steps = {line["id"]: line for line in lines if line["event"] == "step"}
    assert list(steps) == ["dns", "tcp", "handshake", "latency", "reconnect", "audit"]
    for step_id in ("dns", "tcp", "handshake", "latency", "reconnect", "audit"):
        assert steps[step_id]["verdict"] == "ok", steps[step_id]
    findings = {f["check"]: f["status"] for f in steps["audit"]["detail"]["findings"]}
    # the token was only in the URL: the audit still left it out to test "no credentials"
    assert findings["no-credentials"] == "pass" and findings["rate-limit"] == "n/a"
    assert steps["handshake"]["detail"]["status"] == 101
    assert len(steps["latency"]["detail"]["rtt_ms"]) == 5
    assert "RECONNECTING" in steps["reconnect"]["detail"]["states"]
    assert lines[-1]["event"] == "result" and lines[-1]["bundle"] == str(out)

    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert EXPECTED <= names, names
        contents = {name: zf.read(name) for name in names}
    secrets = [token, *token.split("."), API_KEY, PASSWORD, COOKIE]
    for name, data in contents.items():
        for secret in secrets:
            assert secret.encode() not in data, f"{secret[:12]}... leaked into {name}"
    assert b"[REDACTED]" in contents["settings.json"]
    assert b"[REDACTED]" in contents["settings/wsconsole.conf"]
    assert b"[REDACTED]" in contents["logs/wsconsole.log"]
    report = orjson.loads(contents["report.json"])
    assert "token=[REDACTED]" in report["url"] and "room=lobby" in report["url"]
    assert b"Round-trip latency" in contents["report.html"]

    bundle = read_bundle(out)
    kinds = {frame["opcode"] for frame in bundle.frames}
    assert {"ping", "pong"} <= kinds
    states = [e["state"] for e in bundle.timeline if e["type"] == "transition"]
    assert states[:2] == ["CONNECTING", "OPEN"] and "RECONNECTING" in states
    assert bundle.versions["app"] and bundle.versions["libraries"]["websockets"]
    assert "valkey" in bundle.versions["broker"].lower() or "redis" in \
        bundle.versions["broker"].lower()


async def test_token_in_a_first_message_is_redacted_from_the_frames(
    cluster: Cluster, tmp_path: Path
) -> None:
    token = cluster.token("support-user")
    options = DiagnoseOptions(cluster.url, token=token, token_mode="message",
                              timeout=5000 * MS, pings=2, audit=False)
    diagnosis = await diagnose(options)
    assert diagnosis.verdict is not Verdict.FAIL, diagnosis.headline()
    sent = b"".join(f.payload for f in diagnosis.capture.frames)
    assert token.encode() in sent  # the auth message really carried it on the wire ...
    path = write_bundle(diagnosis, tmp_path / "b.zip")
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            assert token.encode() not in zf.read(name), name  # ... and the bundle does not


async def test_an_unresolvable_host_is_a_plain_finding() -> None:
    diagnosis = await diagnose(DiagnoseOptions("ws://wsconsole-nowhere.invalid:8080/",
                                               timeout=5 * SCALE))
    dns = diagnosis.step("dns")
    assert dns is not None and dns.verdict is Verdict.FAIL
    assert "could not be found" in dns.summary or "took longer" in dns.summary
    assert all(s.verdict is Verdict.SKIP for s in diagnosis.steps[1:])
    assert diagnosis.verdict is Verdict.FAIL


async def test_a_wrong_port_through_the_cli_exits_1_with_words_not_a_traceback(
    tmp_path: Path,
) -> None:
    port = free_port()
    out = tmp_path / "refused.zip"
    code, stdout, stderr = await run_cli("diagnose", f"ws://127.0.0.1:{port}/",
                                         "--out", str(out), "--timeout", "3")
    assert code == 1, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert "nothing accepts connections" in stdout and f"port {port}" in stdout
    assert "Problem found at step 'Network connection (TCP)'" in stdout
    bundle = read_bundle(out)  # a failed diagnosis still gives a complete bundle
    assert bundle.report["verdict"] == "fail" and bundle.frames == []


@pytest.fixture
async def expired_tls_server(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """A TLS server on 127.0.0.1 whose certificate expired yesterday (CA file returned)."""
    ca = trustme.CA()
    now = dt.datetime.now(dt.UTC)
    cert = ca.issue_cert("127.0.0.1", "localhost", not_before=now - dt.timedelta(days=30),
                         not_after=now - dt.timedelta(days=1))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], ca_file
    finally:
        server.close()
        await server.wait_closed()


async def test_an_expired_certificate_is_named_with_its_date(
    expired_tls_server: tuple[int, Path],
) -> None:
    port, ca_file = expired_tls_server
    diagnosis = await diagnose(DiagnoseOptions(f"wss://127.0.0.1:{port}/", ca_file=str(ca_file),
                                               timeout=5 * SCALE))
    tls = diagnosis.step("tls")
    assert tls is not None and tls.verdict is Verdict.FAIL, diagnosis.steps
    assert "certificate has expired" in tls.summary and "day(s) ago" in tls.summary
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    assert tls.detail["certificate"]["not_after"].startswith(yesterday)
    assert tls.detail["verify_code"] == 10
    handshake = diagnosis.step("handshake")
    assert handshake is not None and handshake.verdict is Verdict.SKIP


@pytest.fixture
async def http_only_server() -> AsyncIterator[int]:
    """A plain HTTP server answering every request 200 with a web page (no upgrade)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = b"<html>hello</html>"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_an_http_server_refusing_the_upgrade_is_a_plain_finding(
    http_only_server: int,
) -> None:
    diagnosis = await diagnose(DiagnoseOptions(f"ws://127.0.0.1:{http_only_server}/chat",
                                               timeout=5 * SCALE))
    handshake = diagnosis.step("handshake")
    assert handshake is not None and handshake.verdict is Verdict.FAIL
    assert "HTTP 200" in handshake.summary and "instead of switching to WebSocket" in \
        handshake.summary
    assert handshake.detail["status"] == 200
    assert [s.verdict for s in diagnosis.steps[-3:]] == [Verdict.SKIP] * 3


@pytest.mark.parametrize("args, words", [
    (["diagnose", "http://example.test/"], "not a ws:// or wss:// URL"),
    (["diagnose", "ws://127.0.0.1:1/", "--out", "x.txt"], "--out must name a .zip"),
    (["diagnose", "ws://127.0.0.1:1/", "-H", "no colon"], "header"),
    (["diagnose", "ws://127.0.0.1:1/", "--pings", "0"], "between 1 and 1000"),
    (["diagnose", "ws://127.0.0.1:1/", "--token-command", "exit 3"], "token"),
    (["diagnose", "ws://127.0.0.1:1/", "--token", "t", "--token-url", "http://127.0.0.1:1/"],
     "cannot be combined"),
])
def test_bad_usage_exits_2_with_one_line(args: list[str], words: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "wsconsole", *args], capture_output=True,
                            text=True, timeout=60 * SCALE,
                            env={**os.environ, "WSCONSOLE_LOG_DIR": str(tmp_path)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
async def tls_echo(tmp_path: Path) -> AsyncIterator[Any]:
    """Factory: a wss:// echo server (websockets) whose certificate ends `days` from now."""
    from websockets.asyncio.server import serve

    servers: list[Any] = []

    async def start(days: int) -> tuple[str, Path]:
        ca = trustme.CA()
        now = dt.datetime.now(dt.UTC)
        cert = ca.issue_cert("127.0.0.1", not_before=now - dt.timedelta(days=1),
                             not_after=now + dt.timedelta(days=days))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        ca_file = tmp_path / f"ca-{days}.pem"
        ca.cert_pem.write_to_path(str(ca_file))

        async def echo(ws: Any) -> None:
            async for message in ws:
                await ws.send(message)

        server = await serve(echo, "127.0.0.1", 0, ssl=context)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"wss://127.0.0.1:{port}/", ca_file

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_healthy_wss_endpoint_passes_tls_and_the_connection_steps(tls_echo: Any) -> None:
    url, ca_file = await tls_echo(365)
    diagnosis = await diagnose(DiagnoseOptions(url, ca_file=str(ca_file), timeout=5 * SCALE,
                                               pings=3))
    verdicts = {s.id: s.verdict for s in diagnosis.steps}
    for step_id in ("dns", "tcp", "tls", "handshake", "latency", "reconnect"):
        assert verdicts[step_id] is Verdict.OK, diagnosis.step(step_id)
    tls = diagnosis.step("tls")
    assert tls is not None and tls.detail["verified"] is True
    assert tls.detail["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert 360 <= tls.detail["certificate"]["days_left"] <= 365
    assert "127.0.0.1" in tls.detail["certificate"]["names"]
    # the echo server asks for no credentials: the audit says so, as a warning
    assert verdicts["audit"] is Verdict.WARN and diagnosis.verdict is Verdict.WARN


async def test_a_certificate_about_to_expire_is_a_warning(tls_echo: Any) -> None:
    url, ca_file = await tls_echo(5)
    diagnosis = await diagnose(DiagnoseOptions(url, ca_file=str(ca_file), timeout=5 * SCALE,
                                               pings=1, reconnect=False, audit=False))
    tls = diagnosis.step("tls")
    assert tls is not None and tls.verdict is Verdict.WARN
    assert "renew it soon" in tls.summary
    assert diagnosis.step("handshake").verdict is Verdict.OK  # type: ignore[union-attr]


def test_the_token_of_a_command_is_asked_once_and_sent_as_a_given_one() -> None:
    from wsconsole.cli import build_parser
    from wsconsole.commands.diagnose import build_options

    parser, _ = build_parser()
    args = parser.parse_args(["diagnose", "ws://127.0.0.1:1/", "--token-command",
                              "echo from-the-vault", "--token-mode", "header"])
    wanted = build_options(args)
    assert wanted.token == "from-the-vault"
    assert ("Authorization", "Bearer from-the-vault") in wanted.handshake_url_and_headers()[1]
