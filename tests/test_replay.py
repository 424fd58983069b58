"""Replay scenarios that wait for the replies a send waited for, compare JSON replies without
the fields that change every run, run against the demo harness, and show in their report
where the replay diverged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from wsconsole.core.events import Direction, Opcode
from wsconsole.core.tasks import spawn
from wsconsole.har import HarConnection, HarMessage
from wsconsole.scenarios.model import parse_scenario
from wsconsole.scenarios.replay import scenario_text, volatile_fields
from wsconsole.scenarios.report import html_report
from wsconsole.scenarios.runner import ScenarioRunner

SLOW = 0.3  # the server takes this long to log a client in


async def stateful(ws: ServerConnection) -> None:
    """Handles each request as it comes (concurrently, as real servers do): "get" is answered
    only once a "login" was answered; every reply carries a fresh `ts`."""
    logged_in = asyncio.Event()

    async def handle(request: dict) -> None:
        if request["op"] == "login":
            await asyncio.sleep(SLOW)
            logged_in.set()
            reply = {"op": "welcome", "user": request["user"]}
        elif request["op"] == "get":
            reply = {"op": "item", "value": 42} if logged_in.is_set() else {
                "op": "error", "why": "not logged in"}
        else:
            reply = {"op": "error", "why": "unknown"}
        reply["ts"] = asyncio.get_running_loop().time()
        await ws.send(orjson.dumps(reply).decode())

    async for message in ws:
        spawn(handle(orjson.loads(message)), "replay-test-request")


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async with serve(stateful, "127.0.0.1", 0) as running:
        yield f"ws://127.0.0.1:{running.sockets[0].getsockname()[1]}/"


def recording(url: str) -> HarConnection:
    """What a client saw: login, the welcome 0.3 s later, then get and its item."""
    def msg(direction: Direction, t: float, value: dict) -> HarMessage:
        return HarMessage(direction, 1000.0 + t, Opcode.TEXT, orjson.dumps(value))

    return HarConnection(url=url, started=1000.0, messages=[
        msg(Direction.OUT, 0.0, {"op": "login", "user": "ann"}),
        msg(Direction.IN, 0.31, {"op": "welcome", "user": "ann", "ts": 5.0}),
        msg(Direction.OUT, 0.32, {"op": "get"}),
        msg(Direction.IN, 0.33, {"op": "item", "value": 42, "ts": 5.02}),
    ])


async def test_a_send_waits_for_the_replies_it_waited_for(server: str) -> None:
    text = scenario_text(recording(server), timing="fast")
    assert "after = 1" in text and 'ignore = ["ts"]' in text
    scenario = parse_scenario(text)
    assert scenario.replay is not None
    assert [m.after for m in scenario.replay.sends] == [0, 1]
    result = await ScenarioRunner(scenario).run()
    assert result.passed, result.as_dict()
    summary = result.summary
    assert (summary["matched"], summary["diverged"], summary["reply_timeouts"]) == (2, 0, 0)
    # the same sends without waiting: "get" overtakes the slow login and the server refuses
    hasty = parse_scenario(text.replace("after = 1", "after = 0"))
    result = await ScenarioRunner(hasty).run()
    assert not result.passed and result.summary["first_divergence"] == 0
    statuses = [row.status for row in result.conversation if row.kind == "reply"]
    assert statuses == ["diverged", "diverged"]  # the error came first, then the welcome
    report = html_report(result)
    assert "first divergence at reply 0" in report and "not logged in" in report
    assert "<h2>Plots</h2>" not in report  # a replay has no swarm to plot


async def test_json_replies_are_compared_without_the_volatile_fields(server: str) -> None:
    conn = recording(server)
    assert volatile_fields(m for m in conn.messages if m.direction is Direction.IN) == ["ts"]
    strict = scenario_text(conn, timing="fast").replace('ignore = ["ts"]', "ignore = []")
    result = await ScenarioRunner(parse_scenario(strict)).run()
    assert result.summary["matched"] == 0 and result.summary["diverged"] == 2  # ts differs
    exact = scenario_text(conn, timing="fast").replace('compare = "json"', 'compare = "exact"')
    assert (await ScenarioRunner(parse_scenario(exact)).run()).summary["matched"] == 0


async def test_a_waited_reply_that_never_comes_is_counted(server: str) -> None:
    conn = recording(server)
    conn.messages[0] = HarMessage(Direction.OUT, 1000.0, Opcode.TEXT, b'{"op": "nothing"}')
    text = scenario_text(conn, timing="fast").replace("reply_timeout = 5.0",
                                                      "reply_timeout = 0.2")
    result = await ScenarioRunner(parse_scenario(text)).run()
    assert result.summary["reply_timeouts"] == 0  # the error reply counts as the one awaited
    lonely = text.replace("after = 1", "after = 2")
    result = await ScenarioRunner(parse_scenario(lonely)).run()
    assert result.summary["reply_timeouts"] == 1 and result.summary["sent"] == 2


async def test_a_replay_against_the_demo_harness(tmp_path: Path) -> None:
    echo = {"type": "rpc", "id": "1", "method": "echo", "params": {"x": 1}}
    again = {"type": "rpc", "id": "2", "method": "echo", "params": {"x": 2}}
    conn = HarConnection(url="ws://recorded.example/", started=10.0, messages=[
        HarMessage(Direction.OUT, 10.0, Opcode.TEXT, orjson.dumps(echo)),
        HarMessage(Direction.IN, 10.1, Opcode.TEXT,
                   orjson.dumps({"type": "result", "id": "1", "data": {"x": 1}})),
        HarMessage(Direction.OUT, 10.2, Opcode.TEXT, orjson.dumps(again)),
        HarMessage(Direction.IN, 10.3, Opcode.TEXT,
                   orjson.dumps({"type": "result", "id": "2", "data": {"x": 2}})),
    ])
    text = scenario_text(conn, cluster=True).replace('ignore = ["id"]', "ignore = []")
    assert "[cluster]" in text and "url =" not in text
    scenario = parse_scenario(text)
    assert scenario.load_text() == "replay of 2 message(s) to the harness"
    result = await ScenarioRunner(scenario, scale=0.5).run()
    assert result.passed, result.as_dict()
    assert result.summary["matched"] == 2


@pytest.mark.parametrize(("change", "reason"), [
    (("after = 1", "after = 3"), "waits for 3 replies but only 2 were recorded"),
    (('compare = "json"', 'compare = "fuzzy"'), "compare must be one of"),
    (('ignore = ["ts"]', "ignore = [1]"), "ignore must be a list of field names"),
])
def test_replay_mistakes_are_named(change: tuple[str, str], reason: str) -> None:
    from wsconsole.scenarios.model import ScenarioError

    text = scenario_text(recording("ws://h/"), timing="fast")
    with pytest.raises(ScenarioError, match=reason):
        parse_scenario(text.replace(*change))
