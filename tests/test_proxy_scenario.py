"""Record to scenario: a connection recorded through the proxy, exported as a replay scenario
(`wsconsole scenario export`), run again against its server and compared with the recording."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from tests.support import until
from wsconsole.cli import main
from wsconsole.proxy.hub import ProxyHub
from wsconsole.proxy.record import Recorder
from wsconsole.proxy.server import ProxyConfig, ProxyServer
from wsconsole.scenarios.model import ScenarioError, load_scenario, parse_scenario
from wsconsole.scenarios.runner import ScenarioRunner

ANSWERS = {"version": "1"}  # what the upstream says to "version"; a test changes it


async def answer(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(f"{message}={ANSWERS.get(str(message), '?')}")


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    ANSWERS["version"] = "1"
    async with serve(answer, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def record(upstream: str, har: Path) -> None:
    hub = ProxyHub()
    recorder = Recorder(hub)
    proxy = ProxyServer(ProxyConfig(port=0, upstream=upstream), hub)
    await proxy.start()
    try:
        headers = {"Origin": "http://app.test", "Cookie": "session=secret"}
        async with connect(proxy.url + "/api", additional_headers=headers) as ws:
            for text in ("hello", "version"):
                await ws.send(text)
                await ws.recv()
        await until(lambda: not hub.connections, "the recorded connection to end")
    finally:
        await proxy.stop()
    recorder.write_har(har)


async def test_a_recorded_connection_exports_and_replays_identically_then_diverges(
        upstream: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    har, toml = tmp_path / "session.har", tmp_path / "replay.toml"
    await record(upstream, har)
    assert main(["scenario", "export", str(har), "-o", str(toml)]) == 0
    assert "2 recorded replies" in capsys.readouterr().out
    text = toml.read_text()
    assert f'url = "{upstream}/api"' in text and '["Origin", "http://app.test"]' in text
    assert "session=secret" not in text  # credentials stay out unless asked for
    scenario = load_scenario(toml)
    assert scenario.replay is not None
    assert [m.data for m in scenario.replay.sends] == [b"hello", b"version"]
    assert [m.data for m in scenario.replay.expects] == [b"hello=?", b"version=1"]

    result = await ScenarioRunner(scenario, scale=0.5).run()
    assert result.passed, result.as_dict()
    summary = result.summary
    assert (summary["sent"], summary["received"], summary["matched"], summary["diverged"]) == (
        2, 2, 2, 0)
    assert summary["first_divergence"] is None and summary["reply_p50_ms"] >= 0

    ANSWERS["version"] = "2"  # the server changed: the replay must say where it diverged
    result = await ScenarioRunner(load_scenario(toml), scale=0.5).run()
    assert not result.passed
    assert (result.summary["matched"], result.summary["diverged"],
            result.summary["first_divergence"]) == (1, 1, 1)
    [diverged, connected] = result.assertions
    assert not diverged.passed and diverged.measured == 1 and connected.passed


async def test_a_replay_against_a_dead_server_fails_its_assertions(upstream: str,
                                                                   tmp_path: Path) -> None:
    har, toml = tmp_path / "session.har", tmp_path / "replay.toml"
    await record(upstream, har)
    assert main(["scenario", "export", str(har), "--url", "ws://127.0.0.1:9/api",
                 "-o", str(toml)]) == 0
    result = await ScenarioRunner(load_scenario(toml)).run()
    assert not result.passed
    assert result.summary["connected"] == 0 and "refused" in result.summary["error"].lower()


@pytest.mark.parametrize(("text", "line", "reason"), [
    ('name = "x"\n[replay]\n[[replay.send]]\ntext = "a"\n', 2, "needs url"),
    ('url = "ws://h"\n[swarm]\nduration = 1\n[replay]\n[[replay.send]]\ntext = "a"\n', 2,
     "no [swarm]"),
    ('url = "ws://h"\n[replay]\ntiming = "slow"\n[[replay.send]]\ntext = "a"\n', 3,
     "timing must be one of"),
    ('url = "ws://h"\n[replay]\n[[replay.send]]\nbase64 = "!!"\n', 4, "not valid base64"),
    ('url = "ws://h"\n[replay]\n[[replay.send]]\nat = 1\ntext = "a"\n[[replay.send]]\n'
     'at = 0.5\ntext = "b"\n', 2, "in time order"),
])
def test_a_bad_replay_scenario_names_the_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "replay.toml")
    assert caught.value.line == line, str(caught.value)
    assert reason in caught.value.reason
