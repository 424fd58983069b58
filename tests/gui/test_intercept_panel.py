"""The Intercept panel in the window, offscreen, with a real websockets echo server upstream
and a real client through the proxy: the proxy started from the panel, a rule added, a held
frame shown, edited and forwarded; inject and close from the connection tab; the proxied
connection in the Frames view, a lane with action markers on the Timeline, series in the
plots; a bad rule refused with its line; and a screenshot of what the panel displays."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support import until
from wsconsole.core.events import Direction
from wsconsole.core.lifecycle import State
from wsconsole.gui.app import ConsoleApp, GuiOptions

from .conftest import run


def test_intercept_panel_holds_edits_injects_and_closes(  # type: ignore[no-untyped-def]
        qloop, echo_port, settings_path, tmp_path: Path) -> None:
    async def scenario() -> None:
        app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
        app.start()
        window = app.window
        panel = window.intercept
        console = app.console
        try:
            window.docks["Intercept"].raise_()
            panel.listen_edit.setText("127.0.0.1:0")
            panel.upstream_edit.setText(f"ws://127.0.0.1:{echo_port}")
            assert panel.toggle_proxy(), panel.status.text()
            await until(lambda: console.proxy.running, "the proxy to listen", 10)
            await until(lambda: panel.status.text().startswith("listening on ws://"),
                        "the status line", 5)
            assert panel.start_button.text() == "Stop" and not panel.listen_edit.isEnabled()

            panel.quick_direction.setCurrentText("out")
            panel.quick_contains.setText("order")
            panel.quick_action.setCurrentText("hold")
            assert panel.add_quick_rule(), panel.rules_message.text()
            assert panel.rules_message.text() == "1 rule(s) and 0 fault(s) applied"

            async with connect(console.proxy.url + "/shop",
                               additional_headers={"Origin": "http://shop.test"}) as ws:
                await ws.send("order 7")
                await ws.send("right behind it")
                await until(lambda: panel.table.rowCount() == 1, "the held frame in the table")
                cells = [panel.table.item(0, c).text() for c in range(panel.table.columnCount())]
                assert cells[1:] == ["proxy-1", "→ server", "text", "rule 1", "order 7"]
                assert panel.editor.toPlainText() == "order 7"  # selected, shown for editing
                shot = tmp_path / "intercept.png"
                assert window.grab().save(str(shot)) and shot.stat().st_size > 10_000
                panel.editor.setPlainText("order 7 (edited in the window)")
                assert panel.decide(forward=True, edited=True)
                assert await ws.recv() == "order 7 (edited in the window)"
                assert await ws.recv() == "right behind it"
                assert panel.table.rowCount() == 0

                controls = panel.controls
                controls.refresh()
                assert controls.conn == "proxy-1" and "Origin http://shop.test" in \
                    controls.info.text()
                shown = controls.headers.toPlainText()  # the whole handshake, both ways
                assert "  Origin: http://shop.test" in shown and "< 101" in shown
                controls.side_box.setCurrentText("client")
                controls.kind_box.setCurrentText("json")
                controls.payload_edit.setText('{"from": "the window"}')
                assert controls.inject(), controls.message.text()
                assert await ws.recv() == '{"from":"the window"}'
                controls.kind_box.setCurrentText("json")
                controls.payload_edit.setText("{not json")
                assert not controls.inject() and controls.message.text().startswith("! ")
                controls.close_side.setCurrentText("client")
                controls.code_box.setValue(4321)
                controls.reason_edit.setText("closed from the window")
                assert controls.close_side_now(), controls.message.text()
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 4321

            await until(lambda: "proxy-1 ended" in panel.log.toPlainText(),
                        "the end in the action log")
            log = panel.log.toPlainText()
            for kind in ("held", "edited", "injected", "closed"):
                assert f"proxy-1 {kind}" in log
            # the proxied connection in the other views
            store = console.frames
            rows = [r for r in store.rows(range(store.first_id, store.next_id))
                    if r.conn == "proxy-1"]
            assert [r.payload for r in rows if r.direction is Direction.OUT][:2] == [
                b"order 7 (edited in the window)", b"right behind it"]
            lane = console.timeline.lanes["proxy-1"]
            assert [span.state for span in lane.spans] == [
                State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED]
            assert {m.label.split()[0] for m in lane.markers if m.kind == "action"} >= {
                "held", "edited", "injected", "closed"}
            console.sample_clients()
            assert "conns.proxied" in console.series.names()
            assert panel.controls.export_scenario(str(tmp_path / "replay.toml"))
            assert 'text = "order 7 (edited in the window)"' in (
                tmp_path / "replay.toml").read_text()

            panel.rules_edit.setPlainText('[[rule]]\naction = "hodl"\n')
            assert not panel.apply_rules()
            assert panel.rules_message.text().startswith("! line 2: action must be one of")
            assert len(console.proxy.hub.rules) == 1  # the last good rules stay
            assert panel.toggle_proxy()
            await until(lambda: not console.proxy.running, "the proxy to stop", 10)
        finally:
            await app.shutdown()

    run(qloop, scenario(), timeout=90)
