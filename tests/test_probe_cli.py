"""`wsconsole probe` as a user runs it: a real subprocess against real servers on 127.0.0.1,
its --json lines, its JUnit XML, and exit codes 0 / 1 / 2 with one-line messages."""

from __future__ import annotations

import asyncio
import http
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from tests.probe_support import echo, rfc_strict
from wsconsole.faults.catalogue import CATALOGUE, Group, select

RUN_TIMEOUT = 60.0  # generous: a shared 2-core machine


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    async with serve(echo, "127.0.0.1", 0, max_size=1024 * 1024) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def probe(*args: str) -> tuple[int, list[dict], str]:
    """Run `python -m wsconsole probe ARGS`; returns exit code, JSON lines, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsconsole", "probe", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [orjson.loads(line) for line in out.splitlines() if line.startswith(b"{")]
    assert proc.returncode is not None
    return proc.returncode, lines, err.decode()


@pytest.fixture
async def strict_url() -> AsyncIterator[str]:
    """websockets made to follow RFC 6455 where it is lenient (tests/probe_support.py)."""
    async with serve(echo, "127.0.0.1", 0, max_size=1024 * 1024,
                     process_request=rfc_strict) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def test_a_conforming_server_exits_0_with_json_and_junit(strict_url: str,
                                                              tmp_path: Path) -> None:
    """Every case, the default: what applies passes, the harness cases are n/a."""
    report = tmp_path / "probe.xml"
    code, lines, err = await probe(strict_url, "--json", "--silence", "0.3",
                                   "--junit", str(report))
    assert code == 0, err
    cases = [line for line in lines if line["event"] == "case"]
    assert [c["id"] for c in cases] == [c.id for c in CATALOGUE]
    for line in cases:
        assert {"id", "group", "rfc", "expected", "observed", "verdict"} <= line.keys()
    by_id = {c["id"]: c for c in cases}
    assert by_id["rsv1-set"]["verdict"] == "pass"
    assert by_id["rsv1-set"]["observed"].startswith("close 1002")
    assert by_id["length-64bit-msb"]["verdict"] == "pass (lenient)"
    assert by_id["masked-server-frame"]["verdict"] == "n/a"
    assert by_id["hs-version-wrong"]["verdict"] == "pass"
    assert by_id["deflate-corrupt-data"]["rfc"] == "RFC 7692 7.2.2"
    harness = [c for c in cases if c["group"] == "harness"]
    assert harness and {c["verdict"] for c in harness} == {"n/a"}
    skipped = 1 + len(harness)
    summary = lines[-1]
    assert summary["event"] == "summary" and summary["verdict"] == "pass"
    assert summary["total"] == len(CATALOGUE) and summary["failed"] == 0
    assert summary["skipped"] == skipped
    # JUnit: well-formed XML whose counts match the run.
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert int(suite.get("tests", "-1")) == len(CATALOGUE) == len(suite.findall("testcase"))
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert suite.get("skipped") == str(skipped) == str(len(suite.findall("testcase/skipped")))


async def test_plain_websockets_is_reported_as_it_is(echo_url: str) -> None:
    """websockets 17 upgrades a request without Host and refuses a wrong version without
    naming the right one: two handshake failures, exit 1."""
    code, lines, _ = await probe(echo_url, "--suite", "handshake", "--json")
    assert code == 1
    failed = sorted(line["id"] for line in lines
                    if line["event"] == "case" and line["verdict"] == "fail")
    assert failed == ["hs-no-host", "hs-version-wrong"]
    assert lines[-1]["failed"] == 2 and lines[-1]["total"] == len(select(groups=[Group.HANDSHAKE]))


async def test_failures_exit_1_and_show_in_junit(echo_url: str, tmp_path: Path) -> None:
    report = tmp_path / "fail.xml"
    code, lines, _ = await probe(echo_url, "--case", "app-bad-json", "--case", "ping-echo",
                                 "--json", "--junit", str(report), "--audit-safe", "--harness")
    assert code == 1
    verdicts = {line["id"]: line["verdict"] for line in lines if line["event"] == "case"}
    assert verdicts == {"app-bad-json": "fail", "ping-echo": "pass"}
    findings = {line["check"]: line["status"] for line in lines if line["event"] == "finding"}
    assert findings["foreign-origin"] == "fail" and findings["rate-limit"] == "n/a"
    root = ET.parse(report).getroot()
    assert int(root.get("tests", "0")) == 2 + len(findings)
    suites = root.findall("testsuite")
    assert [s.get("failures") for s in suites] == ["1", str(list(findings.values()).count("fail"))]
    failure = root.find(".//testcase[@name='app-bad-json']/failure")
    assert failure is not None and "echoed" in failure.get("message", "")


async def test_human_output(echo_url: str) -> None:
    code, _, _ = await probe(echo_url, "--case", "close-code-1005")
    assert code == 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsconsole", "probe", echo_url, "--case", "ping-125",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    text = out.decode()
    assert "PASS" in text and "ping-125" in text and "1 cases: 1 passed" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ws://127.0.0.1:9/", "--case", "no-such-case"], "unknown case id 'no-such-case'"),
        (["http://127.0.0.1:9/"], "not a ws:// or wss:// URL"),
        (["ws://127.0.0.1:99999/"], "invalid port"),
        (["ws://127.0.0.1:9/", "--timeout", "-1"], "--timeout"),
        (["ws://127.0.0.1:9/", "-H", "no colon"], "Name: value"),
        ([], "needs a URL"),
    ],
)
async def test_bad_usage_exits_2(args: list[str], message: str) -> None:
    code, lines, err = await probe(*args)
    assert code == 2 and lines == []
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


async def test_targets_that_cannot_be_probed_exit_2() -> None:
    async def http_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    http_srv = await asyncio.start_server(http_server, "127.0.0.1", 0)
    silent_srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    gone = await asyncio.start_server(silent, "127.0.0.1", 0)
    gone_port = gone.sockets[0].getsockname()[1]
    gone.close()
    await gone.wait_closed()
    async with http_srv, silent_srv:
        http_port = http_srv.sockets[0].getsockname()[1]
        silent_port = silent_srv.sockets[0].getsockname()[1]
        code, _, err = await probe(f"ws://127.0.0.1:{http_port}/")
        assert code == 2 and "HTTP 404" in err
        code, lines, err = await probe(f"ws://127.0.0.1:{silent_port}/", "--timeout", "0.5",
                                       "--json")
        assert code == 2 and "no handshake response within 0.5 s" in err
        assert lines == [{"event": "target-error", "url": f"ws://127.0.0.1:{silent_port}/",
                          "error": "no handshake response within 0.5 s"}]
        code, _, err = await probe(f"ws://127.0.0.1:{gone_port}/")
        assert code == 2 and "connection refused" in err


async def test_the_token_from_a_command_is_asked_once_before_the_cases() -> None:
    """A server refusing the handshake without its token: --token-command runs once and
    every case connects with what it printed; a command that fails is bad input (exit 2)."""

    def needs_token(connection: ServerConnection, request: Request) -> Response | None:
        if "token=s3cret" not in request.path:
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "token needed\n")
        return None

    async with serve(echo, "127.0.0.1", 0, process_request=needs_token) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        code, _, err = await probe(url, "--case", "ping-125", "--case", "close-code-1005")
        assert code == 2 and "HTTP 401" in err  # without the token nothing can be probed
        code, lines, err = await probe(url, "--case", "ping-125", "--case", "close-code-1005",
                                       "--token-command", "echo s3cret", "--json")
        assert code == 0, err
        assert [line["verdict"] for line in lines if line["event"] == "case"] == ["pass"] * 2
        code, lines, err = await probe(url, "--token-command", "exit 3")
        assert code == 2 and lines == [] and "token" in err and "Traceback" not in err


async def test_list() -> None:
    code, lines, _ = await probe("--list", "--json")
    assert code == 0 and len(lines) >= 30
    assert {"id", "rfc", "directions", "expected", "construction"} <= lines[0].keys()


def test_junit_escapes_what_xml_cannot_carry() -> None:
    from wsconsole.faults.audit import Finding, Status
    from wsconsole.faults.catalogue import get_case
    from wsconsole.faults.junit import to_xml
    from wsconsole.faults.probe import CaseResult, Verdict

    results = [
        CaseResult(get_case("rsv1-set"), Verdict.FAIL, "close 1000 'a\x00b <&>'", "wrong", 0.01),
        CaseResult(get_case("ping-echo"), Verdict.LENIENT, "x", "alt", 0.02),
        CaseResult(get_case("masked-server-frame"), Verdict.NOT_APPLICABLE, "not run", "s2c", 0),
        CaseResult(get_case("opcode-3"), Verdict.ERROR, "handshake failed: refused", "", 0.0),
    ]
    findings = [Finding("plain-ws", "TLS", Status.FAIL, "clear\x1btext", True)]
    root = ET.fromstring(to_xml(results, findings))
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "5", "2", "1", "1",
    )
    failure = root.find(".//testcase[@name='rsv1-set']/failure")
    assert failure is not None and "a\\x00b <&>" in failure.get("message", "")
    assert root.find(".//testcase[@name='ping-echo']/failure") is None  # lenient passes
    assert root.find(".//testcase[@name='plain-ws']/failure").get("message") == "clear\\x1btext"  # type: ignore[union-attr]
