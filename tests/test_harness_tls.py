"""`--tls`: the harness serves wss:// with certificates of wsconsole's local CA, with real
TLS handshakes at every hop; the console's client, the swarm and the probe trust it by
themselves (loopback only), and the client refuses an expired or wrong-host certificate
with a plain reason. The CA lives in a temporary WSCONSOLE_DATA_DIR, never the user's.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from tests.support import MS
from wsconsole.core.backoff import BackoffPolicy
from wsconsole.core.client import ClientOptions, ReconnectingClient
from wsconsole.core.events import ErrorEvent, Event
from wsconsole.core.lifecycle import State
from wsconsole.core.localca import DATA_DIR_ENV, LocalCA
from wsconsole.faults.audit import AuditConfig, Status, run_audit
from wsconsole.faults.catalogue import get_case
from wsconsole.faults.probe import ProbeConfig, Target, Verdict, run_cases
from wsconsole.harness.cluster import Cluster, ClusterConfig

TIMEOUT = 15_000 * MS
PROBE = ProbeConfig(timeout=TIMEOUT / 3, silence=0.5)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user data folder (children inherit it): the local CA is made there."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    return tmp_path


def harness_client(url: str, token: str, **options: object) -> ReconnectingClient:
    """The console's client on the harness protocol, giving up after one failed attempt."""
    return ReconnectingClient(ClientOptions(url=url, token=token, harness=True,
                                            backoff=BackoffPolicy(max_attempts=0),
                                            **options))  # type: ignore[arg-type]


@pytest.mark.timeout(180)
async def test_a_tls_harness_end_to_end(data_dir: Path) -> None:
    async with Cluster(ClusterConfig.demo(nodes=2, tls=True)) as cluster:
        assert cluster.url.startswith("wss://127.0.0.1:")
        assert cluster.ca_file == data_dir / "local-ca" / "ca-cert.pem"  # made on first use
        await _console_client_trusts_it(cluster)
        await _every_hop_is_tls(cluster)
        await _swarm_over_wss(cluster)
        await _probe_over_wss(cluster)
        await _audit_wants_tls(cluster)


async def _console_client_trusts_it(cluster: Cluster) -> None:
    client = harness_client(cluster.url, cluster.token("tls-user"))
    await client.start()
    try:
        await client.wait_state(State.OPEN, TIMEOUT)
        reply = await client.rpc("echo", {"over": "tls"})
        assert reply["data"] == {"over": "tls"}
    finally:
        await client.stop()
    # a client that trusts only the system's CAs refuses it: the TLS is real
    with pytest.raises(ssl.SSLCertVerificationError):
        async with connect(cluster.url, open_timeout=TIMEOUT):
            pass


async def _every_hop_is_tls(cluster: Cluster) -> None:
    """The nodes serve TLS too (the balancer talks TLS to them and checks their health
    over it): plaintext gets no HTTP answer, TLS trusting the local CA does."""
    node = next(iter(cluster.nodes.values()))
    assert node.metrics_url is not None and node.metrics_url.startswith("https://")
    with socket.create_connection(("127.0.0.1", node.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert not sock.recv(64).startswith(b"HTTP/1.1 200")
    assert cluster.ca_file is not None
    trusting = ssl.create_default_context(cafile=str(cluster.ca_file))
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port, ssl=trusting)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), TIMEOUT)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def _swarm_over_wss(cluster: Cluster) -> None:
    env = {**os.environ, "WSCONSOLE_JWT_SECRET": cluster.secret}
    swarm = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsconsole", "swarm", cluster.url, "--clients", "4",
        "--rate", "20", "--duration", "2", "--wait-joined", "20",
        "--secret-env", "WSCONSOLE_JWT_SECRET", "--json",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(swarm.communicate(), 4 * TIMEOUT)
    finally:
        if swarm.returncode is None:
            swarm.kill()
    assert swarm.returncode == 0, err.decode()[-2000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["never_connected"] == 0 and summary["lost"] == 0, summary
    assert summary["delivered"] > 0, summary


async def _probe_over_wss(cluster: Cluster) -> None:
    cases = [get_case(i) for i in ("ping-echo", "utf8-invalid-first-fragment",
                                   "hs-no-host", "hs-version-wrong", "app-bad-json")]
    results = await run_cases(cases, Target(cluster.url, token=cluster.token("probe")), PROBE)
    assert [r.verdict for r in results] == [Verdict.PASS] * len(cases), [
        (r.case.id, r.observed, r.reason) for r in results]


async def _audit_wants_tls(cluster: Cluster) -> None:
    """The audit's plain-ws check passes on the TLS harness (plain ws:// refused on its
    port) and fails on plain ws:// where TLS is expected, saying why."""
    secure = Target(cluster.url, token=cluster.token("audit"))
    [finding] = await run_audit(secure, PROBE, checks=["plain-ws"])
    assert finding.status is Status.PASS, finding.detail
    plain = Target(cluster.url.replace("wss://", "ws://"), token=cluster.token("audit"))
    [finding] = await run_audit(plain, PROBE, AuditConfig(expect_tls=True), checks=["plain-ws"])
    assert finding.status is Status.FAIL
    assert "plain ws://" in finding.detail and "clear" in finding.detail


# ---------------------------------------------------------------- certificates refused


@pytest.fixture
def local_ca(data_dir: Path) -> trustme.CA:
    """The local CA itself (so the client trusts it), as a trustme CA to issue odd leaves."""
    ca = LocalCA()
    return trustme.CA.from_pem(ca.cert_path.read_bytes(), ca.key_path.read_bytes())


async def _refusal(leaf: trustme.LeafCert) -> list[str]:
    """Serve `leaf` on 127.0.0.1 and let the console's client try once: its error details."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)

    async def hello(ws: ServerConnection) -> None:
        await ws.send("should never be read")

    errors: list[str] = []

    def observe(event: Event) -> None:
        if isinstance(event, ErrorEvent) and event.kind == "tls":
            errors.append(event.detail)

    async with serve(hello, "127.0.0.1", 0, ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        client = ReconnectingClient(
            ClientOptions(url=f"wss://127.0.0.1:{port}/", backoff=BackoffPolicy(max_attempts=0)),
            observers=[observe],
        )
        await client.start()
        await client.wait_closed()
        assert client.state is State.CLOSED and client.stats.received == 0
    return errors


async def test_an_expired_certificate_is_refused_with_its_reason(local_ca: trustme.CA) -> None:
    now = datetime.datetime.now(datetime.UTC)
    expired = local_ca.issue_cert("127.0.0.1", "localhost",
                                  not_before=now - datetime.timedelta(days=30),
                                  not_after=now - datetime.timedelta(days=1))
    assert await _refusal(expired) == ["certificate refused: certificate has expired"]


async def test_a_certificate_for_another_host_is_refused_with_its_reason(
    local_ca: trustme.CA,
) -> None:
    elsewhere = local_ca.issue_cert("wsconsole.example")
    [detail] = await _refusal(elsewhere)
    assert detail.startswith("certificate refused: IP address mismatch"), detail
    assert "127.0.0.1" in detail
