"""The window with Socket.IO and SSE targets and HAR import/export/replay: the Connection
panel picks the kind, the Frames view and the Timeline show them like WebSocket frames, a
killed Socket.IO server shows as RECONNECTING then OPEN, a bad HAR reaches the Log dock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.socketiokit import python_argv, wait_listening
from tests.support import SCALE, ProcessRegistry, free_port, until
from tests.test_sse import Feed, serve
from wsconsole.core.events import Direction, Opcode
from wsconsole.core.lifecycle import State
from wsconsole.gui.app import ConsoleApp, GuiOptions
from wsconsole.har import HarError, load_har

from .conftest import run

FIXTURE = Path(__file__).parents[1] / "fixtures" / "chrome_websocket.har"


def _app(settings_path: str) -> ConsoleApp:
    app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
    app.start()
    return app


def _rows(app: ConsoleApp) -> list:  # type: ignore[type-arg]
    store = app.console.frames
    return list(store.rows(range(store.first_id, store.next_id)))


def test_socketio_target_frames_timeline_kill_restart(qloop, procs: ProcessRegistry,  # type: ignore[no-untyped-def]
                                                      settings_path) -> None:
    port = free_port()
    server = procs.start(python_argv(port))
    run(qloop, wait_listening(port))

    async def scenario() -> None:
        nonlocal server
        app = _app(settings_path)
        try:
            panel = app.window.connection
            panel.url_edit.setText(f"http://127.0.0.1:{port}")
            assert panel.sio_auth_edit.isHidden()  # Socket.IO settings only for that kind
            panel.kind_box.setCurrentIndex(panel.kind_box.findData("socketio"))
            assert not panel.sio_auth_edit.isHidden()
            panel.sio_auth_edit.setText("{nope")
            assert not panel.connect_selected()
            assert "auth payload is not JSON" in panel.message.text()
            panel.sio_auth_edit.setText('{"user": "gui"}')
            panel.sio_transport.setCurrentText("websocket")
            panel.backoff_initial.setValue(0.2)
            panel.backoff_jitter.setValue(0.0)
            assert panel.connect_selected(), panel.message.text()
            name = panel.selected_name()
            session = app.console.sessions[name]
            assert session.profile.kind == "socketio"
            await until(lambda: session.state is State.OPEN, "the Socket.IO session to open", 15)
            await until(lambda: panel.badge.text() == "OPEN", "the OPEN badge", 5)
            # the Composer's Send emits "message"; the connect packet and welcome are frames
            await session.client.emit("shout", "from the window")
            news = b'2["news","from the window"]'
            await until(lambda: any(r.payload == news for r in _rows(app)),
                        "the server's news event in the frames", 10)
            assert any(r.direction is Direction.OUT and r.payload == b'0{"user":"gui"}'
                       for r in _rows(app))
            # the client's frames are Socket.IO packets (no Engine.IO digit): an EVENT, not
            # the Engine.IO ping its leading 2 would be on the wire
            decoded = app.console.frames.decoding.decode_message(
                name, Direction.IN, Opcode.TEXT, news)
            assert decoded.decoder == "socketio" and decoded.tree == {
                "socketio": "EVENT", "data": ["news", "from the window"]}, decoded
            server.kill()
            server.wait(timeout=10 * SCALE)
            await until(lambda: session.state is State.RECONNECTING,
                        "a reconnect after the server died", 15)
            await until(lambda: panel.countdown.text() != "", "the reconnect countdown", 5)
            server = procs.start(python_argv(port))
            await wait_listening(port)
            await until(lambda: session.state is State.OPEN, "the session to open again", 15)
            states = app.console.timeline.states(name)
            assert State.RECONNECTING in states and states[-1] is State.OPEN
            assert session.reconnects >= 1
        finally:
            await app.shutdown()

    run(qloop, scenario(), 90)


def test_sse_target_in_the_window(qloop, settings_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        async with serve(Feed(per_connection=3)) as base:
            app = _app(settings_path)
            try:
                panel = app.window.connection
                panel.kind_box.setCurrentIndex(panel.kind_box.findData("sse"))
                panel.url_edit.setText("ws://127.0.0.1:1/")
                assert not panel.connect_selected()
                assert "http" in panel.message.text()
                panel.url_edit.setText(base + "/events")
                assert panel.connect_selected(), panel.message.text()
                session = app.console.sessions[panel.selected_name()]
                await until(lambda: sum(b'"event":"tick"' in r.payload for r in _rows(app)) >= 3,
                            "three SSE ticks in the frames", 15)
                assert session.frames_in >= 3
            finally:
                await app.shutdown()

    run(qloop, scenario(), 60)


def test_har_import_export_replay_and_bad_file(qloop, echo_port, settings_path,  # type: ignore[no-untyped-def]
                                               tmp_path) -> None:
    async def scenario() -> None:
        app = _app(settings_path)
        try:
            har = app.window.har
            labels = har.import_file(str(FIXTURE))
            assert labels == ["har1:localhost:8080/chat", "har3:localhost:8080/socket.io/"]
            rows = _rows(app)
            assert len(rows) == 13
            assert [r.direction.value for r in rows if r.conn == labels[0]] == [
                "out", "in", "out", "in", "in", "out", "in", "out"]
            await until(lambda: app.window.frames.model.rowCount() >= 13,
                        "the imported HAR frames in the table", 10)

            bad = tmp_path / "bad.har"
            bad.write_text('{"log": {"entries": []}}')
            with pytest.raises(HarError):
                har.import_file(str(bad))
            await until(lambda: "no WebSocket entries" in app.window.log_view.toPlainText(),
                        "the empty HAR's error in the log dock", 5)

            panel = app.window.connection
            panel.url_edit.setText(f"ws://127.0.0.1:{echo_port}/")
            assert panel.connect_selected(), panel.message.text()
            name = panel.selected_name()
            session = app.console.sessions[name]
            with pytest.raises(ValueError, match="not open"):
                har.replay(labels[0], "nobody")
            await until(lambda: session.state is State.OPEN, "the echo session to open", 10)
            task = har.replay(labels[0], name, "original", speed=8.0)
            assert await task == 4
            await until(lambda: sum(1 for r in _rows(app) if r.conn == name
                                    and r.direction is Direction.IN
                                    and r.opcode.name in ("TEXT", "BINARY")) >= 4,
                        "the replayed messages echoed back", 10)

            out = tmp_path / "session.har"
            count = har.export_file(str(out))
            back = {c.url: c for c in load_har(out)}
            assert count == sum(len(c.messages) for c in back.values())
            assert len(back["ws://localhost:8080/chat?room=lobby"].messages) == 8
            live = back[f"ws://127.0.0.1:{echo_port}/"]
            assert [m.data for m in live.sent][-4:] == [m.data for m in load_har(FIXTURE)[0].sent]
            await asyncio.sleep(0)
        finally:
            await app.shutdown()

    run(qloop, scenario(), 60)
