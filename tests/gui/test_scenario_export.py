"""File > Export connection as replay scenario: the console's own connection, recorded in the
Frames view, becomes a scenario file that replays against the same server and passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import until
from wsconsole.core.lifecycle import State
from wsconsole.gui.app import ConsoleApp, GuiOptions
from wsconsole.scenarios.model import load_scenario
from wsconsole.scenarios.runner import ScenarioRunner

from .conftest import run


def test_an_own_connection_exports_as_a_scenario_that_replays(
        qloop, echo_port, settings_path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "mine.toml"

    async def scenario() -> None:
        app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
        app.start()
        w = app.window
        try:
            form = w.connection
            form.name_edit.setText("mine")
            form.url_edit.setText(f"ws://127.0.0.1:{echo_port}/chat")
            form.headers_edit.setPlainText("X-App: demo")
            form.list.setCurrentRow(-1)
            assert form.connect_selected(), form.message.text()
            session = app.console.sessions["mine"]
            await until(lambda: session.state is State.OPEN, "the session to open", 10)
            for count, text in enumerate(('{"n": 1}', '{"n": 2}', "plain"), start=1):
                await session.client.send(text)  # each after the previous one's echo
                await until(lambda c=count: session.frames_in >= c, "the echo", 10)
            assert "mine" in w.har.exportable()
            assert w.har.export_scenario("mine", str(target)) == 3
            with pytest.raises(ValueError, match="no connection named"):
                w.har.export_scenario("nobody", str(target))
        finally:
            await app.shutdown()

    run(qloop, scenario(), 40)
    text = target.read_text()
    assert '["X-App", "demo"]' in text and "/chat" in text
    assert "after = 1" in text and "after = 2" in text
    exported = load_scenario(target)
    assert exported.replay is not None and len(exported.replay.expects) == 3
    result = run(qloop, ScenarioRunner(exported, scale=0.2).run(), 40)
    assert result.passed, result.as_dict()
    assert result.summary["matched"] == 3
