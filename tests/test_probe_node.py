"""Every catalogue case against a real harness node (a subprocess on a real Valkey broker):
the expected reaction each time, and the node goes on serving a client that was connected
all along; the audit passes a node with its default security checklist."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from tests.support import MS, ProcessRegistry, pid_alive
from wsconsole.faults.audit import Status, run_audit
from wsconsole.faults.catalogue import CATALOGUE, Direction, Layer, get_case
from wsconsole.faults.probe import ProbeConfig, Target, Verdict, run_case, run_cases
from wsconsole.harness.auth import SECRET_ENV, issue_token, new_secret
from wsconsole.harness.broker import Broker

CONFIG = ProbeConfig(timeout=5000 * MS, silence=300 * MS)
START_TIMEOUT = 20.0  # a node's first line; generous on a shared 2-core machine


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """A real Redis-protocol server (bundled valkey or redis-server), owned by this module."""
    broker = Broker()
    try:
        yield broker.start()
    finally:
        broker.stop()


def start_node(procs: ProcessRegistry, broker_url: str, *extra: str,
               env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m wsconsole.harness.node --redis URL ...`; returns the process and its port."""
    proc = procs.python("-m", "wsconsole.harness.node", "--redis", broker_url, *extra,
                        stdout=subprocess.PIPE, env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    assert ready, "the node printed nothing"
    line = proc.stdout.readline()
    assert line, f"the node exited with {proc.wait(5)}"
    event = json.loads(line)
    assert event["event"] == "listening", event
    return proc, int(event["port"])


async def test_every_case_against_a_node(procs: ProcessRegistry, broker_url: str) -> None:
    proc, port = start_node(procs, broker_url, "--no-auth", "--id", "probe-n1")
    url = f"ws://127.0.0.1:{port}/"
    async with connect(url, open_timeout=CONFIG.timeout) as bystander:
        await bystander.send('{"type": "join", "room": "lobby"}')
        joined = json.loads(await asyncio.wait_for(bystander.recv(), CONFIG.timeout))
        assert joined["type"] == "joined" and joined["room"] == "lobby"

        results = await run_cases(CATALOGUE, Target(url), CONFIG)

        assert len(results) == len(CATALOGUE)
        for result in results:
            case = result.case
            if case.id in NODE_STRICTNESS:
                continue  # test_node_handshake_strictness below
            if not case.applies_to(Direction.CLIENT_TO_SERVER):
                assert result.verdict is Verdict.NOT_APPLICABLE
            elif case.extension is not None:
                # permessage-deflate is off on nodes by default (DESIGN.md): not applicable
                assert result.verdict is Verdict.NOT_APPLICABLE, (case.id, result.reason)
            elif case.id in NODE_LENIENT:
                assert result.verdict is Verdict.LENIENT, (case.id, result.observed)
                assert NODE_LENIENT[case.id] in result.observed
            else:
                assert result.verdict is Verdict.PASS, (case.id, result.observed, result.reason)
        harness = [r for r in results if r.case.layer is Layer.HARNESS]
        assert harness and all(r.verdict is Verdict.PASS for r in harness)  # detected
        assert pid_alive(proc.pid)

        # The bystander, connected through all of it, still gets what another client publishes.
        async with connect(url, open_timeout=CONFIG.timeout) as publisher:
            await publisher.send(
                '{"type": "publish", "room": "lobby", "id": "after-faults", "data": "still here"}'
            )
            ack = json.loads(await asyncio.wait_for(publisher.recv(), CONFIG.timeout))
            assert ack["type"] == "ack" and ack["id"] == "after-faults"
        message = json.loads(await asyncio.wait_for(bystander.recv(), CONFIG.timeout))
        assert message["type"] == "message" and message["data"] == "still here"


# What the node does as websockets does, short of the best reaction: a 64-bit length with
# its top bit read as unsigned (1009). (UTF-8 in a first fragment fails fast: a strict pass,
# core/framecheck.py.)
NODE_LENIENT = {"length-64bit-msb": "close 1009"}
# Where websockets 17 is lenient and RFC 6455 is not, the node is strict (issue 16, "A
# handshake stricter than the library"; harness/admission.py): a wrong version gets 426 with
# Sec-WebSocket-Version: 13, a request without Host gets 400.
NODE_STRICTNESS = ("hs-version-wrong", "hs-no-host")


@pytest.mark.parametrize("case_id", NODE_STRICTNESS)
async def test_node_handshake_strictness(procs: ProcessRegistry, broker_url: str,
                                         case_id: str) -> None:
    _, port = start_node(procs, broker_url, "--no-auth", "--id", f"strict-{case_id}")
    result = await run_case(get_case(case_id), Target(f"ws://127.0.0.1:{port}/"), CONFIG)
    assert result.verdict is Verdict.PASS, (result.observed, result.reason)


async def test_audit_passes_a_node_with_its_checklist(procs: ProcessRegistry,
                                                      broker_url: str) -> None:
    secret = new_secret()
    proc, port = start_node(procs, broker_url, "--id", "probe-n2", env={SECRET_ENV: secret})
    token = issue_token(secret, "audit-user")
    findings = await run_audit(Target(f"ws://127.0.0.1:{port}/", token=token), CONFIG)
    by_id = {f.check: f for f in findings}
    statuses = {f.check: f.status for f in findings}
    assert statuses == {
        "foreign-origin": Status.PASS,
        "no-credentials": Status.PASS,
        "message-size": Status.PASS,
        "rate-limit": Status.PASS,
        "user-connections": Status.PASS,
        "plain-ws": Status.NOT_APPLICABLE,  # loopback ws:// in the local harness
    }, [f.as_dict() for f in findings]
    assert "403" in by_id["foreign-origin"].detail
    assert "1009" in by_id["message-size"].detail
    assert pid_alive(proc.pid)


