"""The shipped stack examples, run as a user would run them, with an independent count.

Each kills a node of the user's app under load (a scenario naming the example's stack) and
checks that the report shows the losses the app really has: their number equals what the
test's own count makes of the frames the swarm's clients wrote and read (tests/stackkit.py),
and the test's own small client, a plain subscriber written from the app's protocol on the
node that is killed, misses messages too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
import socketio
from websockets.asyncio.client import connect

from tests.stackkit import WireRecorder, install_example
from wsconsole.scenarios.model import ScenarioError, load_scenario
from wsconsole.scenarios.runner import ScenarioRunner

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


IN_FLIGHT = 2.0  # seconds a message may still be on its way when its node dies (loaded box)


def assert_lost_around(summary: dict, fault: str) -> None:
    """Losses are the fault's: in its window, or sent just before it and still on their way
    through the node that died; nothing lost earlier; the windows add up."""
    windows = {w["label"]: w for w in summary["per_window"]}
    assert windows[fault]["lost"] > 0, windows
    assert sum(w["lost"] for w in windows.values()) == summary["lost"]
    start = windows[fault]["from_s"]
    earliest = min(int(second) for second in summary["lost_by_second"])
    assert earliest >= int(start - IN_FLIGHT), (start, summary["lost_by_second"])


class BroadcastSubscriber:
    """The test's own client of the Python broadcast app (examples/python-broadcast/server.py
    protocol): join a room, keep every chat id, reconnect through the balancer when dropped."""

    def __init__(self, first_url: str, url: str, room: str) -> None:
        self.first_url, self.url, self.room = first_url, url, room
        self.received: set[str] = set()
        self.joined = asyncio.Event()
        self.drops = 0

    async def run(self) -> None:
        url = self.first_url  # straight to the node that will be killed
        while True:
            try:
                async with connect(url, open_timeout=5) as ws:
                    await ws.send(json.dumps({"type": "join", "room": self.room}))
                    self.joined.set()
                    async for text in ws:
                        message = json.loads(text)
                        if message.get("type") == "chat":
                            self.received.add(message["id"])
            except (OSError, TimeoutError, Exception):
                pass
            self.drops += 1
            url = self.url
            await asyncio.sleep(0.2)


async def test_python_broadcast_loses_messages_on_a_node_kill_and_the_count_agrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = WireRecorder()
    recorder.attach(monkeypatch)
    scenario = load_scenario(EXAMPLES / "python-broadcast" / "node-kill.toml")
    runner = ScenarioRunner(scenario)
    own: BroadcastSubscriber | None = None
    own_task: asyncio.Task[None] | None = None

    def started(event: dict[str, object]) -> None:
        nonlocal own, own_task
        if event.get("event") == "phase" and event.get("phase") == "cluster_ready":
            cluster = runner.cluster
            n1 = cluster.nodes["n1"].port
            own = BroadcastSubscriber(f"ws://127.0.0.1:{n1}/", cluster.app_url, "swarm-0")
            own_task = asyncio.ensure_future(own.run())

    runner.on_event = started
    try:
        result = await runner.run()
    finally:
        if own_task is not None:
            own_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await own_task
    summary = result.summary
    assert result.error is None and not result.failed_steps
    assert not result.passed  # the app has no recovery: the scenario finds the defect
    assert summary["lost"] > 0, summary
    assert summary["lost"] == recorder.lost(), "the swarm's count and the test's own agree"
    assert_lost_around(summary, "kill n1")
    assert summary["per_node"]["n1"]["lost"] > 0
    # every publish went into the node its publisher was on
    assert sum(n["sent"] for n in summary["per_node"].values()) == summary["sent"]
    assert summary["per_node"]["n1"]["sent"] > 0 and summary["per_node"]["n2"]["sent"] > 0
    assert sum(c["lost"] for c in summary["per_client"].values()) == summary["lost"]
    assert own is not None and own.drops >= 1 and own.joined.is_set()
    sent_after_join = {ident for _, room, ident in recorder.sent if room == "swarm-0"}
    assert sent_after_join - own.received, "the test's own client on n1 missed messages too"


@pytest.fixture(scope="module")
def chat_modules() -> str:
    """The Socket.IO chat example's npm packages (installed once; skipped without npm)."""
    return install_example(EXAMPLES / "socketio-chat")


class ChatSubscriber:
    """The test's own client of the Socket.IO chat (examples/socketio-chat/server.js protocol),
    on python-socketio directly: join a room, keep every chat id; python-socketio reconnects."""

    def __init__(self, first_url: str, room: str) -> None:
        self.first_url, self.room = first_url, room
        self.received: set[str] = set()
        self.connects = 0
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("connect", self._connected)
        self.sio.on("chat", lambda message, *_: self.received.add(message["id"]))

    async def _connected(self) -> None:
        self.connects += 1
        await self.sio.emit("join", self.room)

    async def run(self, url: str) -> None:
        target = self.first_url  # straight to the node that will be killed
        while True:
            with contextlib.suppress(Exception):
                await self.sio.connect(target, transports=["websocket"], wait_timeout=5)
                await self.sio.wait()
            target = url
            await asyncio.sleep(0.2)


async def _run_chat(scenario_file: str, victim: str, monkeypatch: pytest.MonkeyPatch,
                    modules: str) -> tuple[dict, WireRecorder, ChatSubscriber]:
    monkeypatch.setenv("NODE_PATH", modules)
    recorder = WireRecorder(event="chat")
    recorder.attach(monkeypatch)
    runner = ScenarioRunner(load_scenario(EXAMPLES / "socketio-chat" / scenario_file))
    holder: dict[str, object] = {}

    def started(event: dict[str, object]) -> None:
        if event.get("event") == "phase" and event.get("phase") == "cluster_ready":
            cluster = runner.cluster
            own = ChatSubscriber(f"http://127.0.0.1:{cluster.nodes[victim].port}", "swarm-0")
            holder["own"] = own
            holder["task"] = asyncio.ensure_future(own.run(cluster.app_url))

    runner.on_event = started
    try:
        result = await runner.run()
    finally:
        task = holder.get("task")
        if isinstance(task, asyncio.Task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        own = holder.get("own")
        if isinstance(own, ChatSubscriber):
            with contextlib.suppress(Exception):
                await own.sio.disconnect()
    assert result.error is None and not result.failed_steps, result.as_dict()
    assert isinstance(holder.get("own"), ChatSubscriber)
    return result.summary, recorder, holder["own"]  # type: ignore[return-value]


async def test_socketio_chat_loses_messages_on_a_node_kill_and_the_count_agrees(
    monkeypatch: pytest.MonkeyPatch, chat_modules: str,
) -> None:
    summary, recorder, own = await _run_chat("node-kill.toml", "n1", monkeypatch,
                                             chat_modules)
    assert summary["lost"] > 0, summary
    assert summary["lost"] == recorder.lost(), "the swarm's count and the test's own agree"
    assert_lost_around(summary, "kill n1")
    assert own.connects >= 2  # the test's own client on n1 had to reconnect...
    sent = {ident for _, room, ident in recorder.sent if room == "swarm-0"}
    assert sent - own.received, "...and it missed messages too"


async def test_socketio_recovery_recovers_a_clean_stop_not_a_kill(
    monkeypatch: pytest.MonkeyPatch, chat_modules: str,
) -> None:
    summary, recorder, _ = await _run_chat("recovery.toml", "n1", monkeypatch, chat_modules)
    assert summary["lost"] == recorder.lost(), "the swarm's count and the test's own agree"
    windows = {w["label"]: w for w in summary["per_window"]}
    drained, killed = windows["drain n1"], windows["kill n2"]
    assert summary["recovered_sessions"] > 0, "the clients of the drained node resumed"
    # Recovery is about what the server sends: the clients of the drained node get what they
    # missed; of the SIGKILLed node's, none. (A message a client publishes into its node as
    # it goes down reaches nobody in both cases: that is `undelivered`, not `missed`.)
    assert killed["missed"] > 0, windows
    assert drained["missed"] * 10 < killed["missed"], windows


async def test_a_recorded_conversation_replays_against_the_stacks_nodes(tmp_path: Path) -> None:
    """A replay scenario naming a stack: the example's nodes start, the recorded join and
    chat go through the balancer, and the replies match the recording (the delivering node
    ignored); the same file with a reply that never comes is marked where it diverged."""
    stack = EXAMPLES / "python-broadcast" / "stack.toml"
    text = f"""\
name = "replay on a stack"
stack = "{stack}"
[replay]
timing = "fast"
wait = 1.0
reply_timeout = 5.0
ignore = ["node"]
[[replay.send]]
at = 0.0
text = '{{"type": "join", "room": "r"}}'
[[replay.expect]]
at = 0.01
text = '{{"type": "joined", "room": "r"}}'
[[replay.send]]
at = 0.1
after = 1
text = '{{"type": "chat", "room": "r", "id": "m1"}}'
[[replay.expect]]
at = 0.12
text = '{{"type": "chat", "room": "r", "id": "m1", "node": "n1"}}'
[[assertions]]
expect = "diverged == 0"
"""
    path = tmp_path / "replay.toml"
    path.write_text(text)
    result = await ScenarioRunner(load_scenario(path)).run()
    assert result.error is None, result.error
    assert result.passed, [a.as_dict() for a in result.assertions]
    assert result.summary["matched"] == 2 and result.summary["connected"] == 1
    path.write_text(text.replace('"id": "m1", "node"', '"id": "other", "node"'))
    wrong = await ScenarioRunner(load_scenario(path)).run()
    assert not wrong.passed and wrong.summary["first_divergence"] == 1
    # a Socket.IO stack cannot replay WebSocket messages: said where it is written
    path.write_text(text.replace(str(stack), str(EXAMPLES / "socketio-chat" / "stack.toml")))
    with pytest.raises(ScenarioError, match="the stack socketio-chat speaks socketio"):
        load_scenario(path)
