"""The window against a real websockets echo server: frames show, filters narrow, export is
valid JSONL, bad input is refused in place, errors reach the Log dock, settings persist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import SCALE, until
from wsconsole.core.events import Direction, Opcode
from wsconsole.core.lifecycle import State
from wsconsole.gui.app import ConsoleApp, GuiOptions

from .conftest import run


def _app(settings_path: str) -> ConsoleApp:
    app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
    app.start()
    return app


def test_echo_frames_filters_export(qloop, echo_port, settings_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        app = _app(settings_path)
        w = app.window
        try:
            panel = w.connection
            panel.url_edit.setText(f"ws://127.0.0.1:{echo_port}/")
            panel.ping_interval.setValue(1.0)
            assert panel.connect_selected(), panel.message.text()
            session = app.console.sessions[panel.selected_name()]
            await until(lambda: session.state is State.OPEN, "the echo session to open", 10)
            await until(lambda: panel.badge.text() == "OPEN", "the OPEN badge", 5)

            composer = w.composer
            composer.target.setCurrentText(session.name)
            for i in range(10):
                composer.format.setCurrentText("JSON")
                composer.editor.setPlainText(json.dumps({"n": i, "kind": "even" if i % 2 == 0
                                                         else "odd"}))
                assert composer.send(), composer.message.text()
            composer.format.setCurrentText("Hex")
            composer.editor.setPlainText("00 ff 10")
            assert composer.send()
            frames = w.frames
            # 11 out + 11 echoed in, pulled by the view's timer
            await until(lambda: frames.model.rowCount() >= 22,
                        "the exchanged frames in the table", 10)
            total = frames.model.rowCount()

            frames.filter_edit.setText('"kind":"odd"')
            frames.apply_filter()
            rows = [frames.model.row_at(r) for r in range(frames.model.rowCount())]
            assert len(rows) == 10  # 5 odd out + 5 echoed in
            assert all(b'"kind":"odd"' in r.payload for r in rows if r)

            frames.dir_boxes[Direction.OUT].setChecked(False)
            frames.apply_filter()
            assert frames.model.rowCount() == 5
            assert all(frames.model.row_at(r).direction is Direction.IN for r in range(5))

            frames.filter_edit.setText("[unclosed")
            frames.regex_box.setChecked(True)
            frames.apply_filter()
            assert "invalid regular expression" in frames.filter_error.text()
            assert frames.model.rowCount() == 5  # the last good filter stays

            frames.filter_edit.setText("")
            frames.regex_box.setChecked(False)
            frames.dir_boxes[Direction.OUT].setChecked(True)
            for op, box in frames.op_boxes.items():
                box.setChecked(op is Opcode.BINARY)
            frames.apply_filter()
            assert frames.model.rowCount() == 2  # hex out + echo in
            assert frames.model.row_at(0).payload == b"\x00\xff\x10"

            for box in frames.op_boxes.values():
                box.setChecked(True)
            frames.apply_filter()
            assert frames.model.rowCount() >= total
            out = tmp_path / "frames.jsonl"
            count = frames.export(str(out))
            lines = out.read_text().splitlines()
            assert count == len(lines) == frames.model.rowCount()
            records = [json.loads(line) for line in lines]
            assert {"wall", "conn", "direction", "opcode", "size"} <= set(records[0])
            assert any(r.get("base64") == "AP8Q" for r in records)

            # the detail pane shows JSON as a decoded tree
            frames.table.selectRow(0)
            detail = frames.detail
            assert detail.decoded is not None and detail.decoded.decoder == "json"
            top = detail.tree.topLevelItem(0)
            assert top is not None
            assert ("n", "0") in [(top.child(i).text(0), top.child(i).text(1))
                                  for i in range(top.childCount())]
        finally:
            w.close()
            await app.shutdown()

    run(qloop, scenario(), 60)


def test_bad_input_is_refused_in_place(qloop, settings_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        app = _app(settings_path)
        w = app.window
        try:
            panel = w.connection
            cases = [
                ({"url": "http://example.com/"}, "url", "ws://"),
                ({"url": "ws://host:99999/"}, "url", "Port out of range"),
                ({"url": "ws://"}, "url", "host"),
                ({"headers": "no colon here"}, "headers", "no ':'"),
                ({"headers": "Bad Name: x"}, "headers", "invalid header name"),
                ({"ca_file": str(tmp_path / "missing.pem")}, "ca_file", "does not exist"),
                ({"origin": "not an origin"}, "origin", "Origin"),
            ]
            not_pem = tmp_path / "not.pem"
            not_pem.write_text("hello")
            cases.append(({"ca_file": str(not_pem)}, "ca_file", "PEM"))
            for change, field, words in cases:
                panel.url_edit.setText("ws://127.0.0.1:9/")
                panel.headers_edit.setPlainText("")
                panel.ca_edit.setText("")
                panel.origin_edit.setText("")
                widget = {"url": panel.url_edit, "ca_file": panel.ca_edit,
                          "origin": panel.origin_edit}.get(field)
                if field == "headers":
                    panel.headers_edit.setPlainText(change["headers"])
                else:
                    widget.setText(change[field])
                assert not panel.connect_selected()
                assert words in panel.message.text(), (change, panel.message.text())
                assert "c0392b" in panel.fields[field].styleSheet()
            assert not app.console.sessions  # nothing was added or started

            composer = w.composer
            composer.format.setCurrentText("JSON")
            composer.editor.setPlainText("{not json")
            assert not composer.send()
            assert "invalid JSON" in composer.message.text()
            composer.format.setCurrentText("Hex")
            composer.editor.setPlainText("zz")
            assert not composer.send()
            assert "invalid hex" in composer.message.text()
            composer.format.setCurrentText("Base64")
            composer.editor.setPlainText("@@@")
            assert not composer.send()
            assert "invalid base64" in composer.message.text()
            composer.format.setCurrentText("Text")
            composer.editor.setPlainText("hi")
            assert not composer.send()  # no connection to send on
            assert "connect" in composer.message.text()

            # a failing task is shown in the Log dock, not lost
            async def broken() -> None:
                raise RuntimeError("boom from a slot")

            app.console.spawn(broken(), "broken slot")
            await until(lambda: "boom from a slot" in w.log_view.toPlainText(),
                        "the slot's error in the log dock", 5)
            assert "boom from a slot" in w.statusBar().currentMessage()

            # an unreachable server shows in the badge and the Timeline, not as a crash
            panel.url_edit.setText("ws://127.0.0.1:9/")
            panel.ca_edit.setText("")
            panel.backoff_initial.setValue(0.2)
            panel.backoff_cap.setValue(0.5)
            panel.backoff_jitter.setValue(0.0)
            assert panel.connect_selected()
            name = panel.selected_name()
            await until(lambda: State.RECONNECTING in app.console.timeline.states(name),
                        "a reconnect to the refusing port", 10)
            await until(lambda: panel.badge.text() in ("RECONNECTING", "CONNECTING"),
                        "the reconnecting badge", 5)
            await until(lambda: "attempt" in panel.countdown.text()
                        or "refused" in panel.countdown.text(),
                        "the countdown's attempt or refusal", 5)
        finally:
            w.close()
            await app.shutdown()

    run(qloop, scenario(), 60)


def test_settings_persist_layout_profiles_templates(qloop, settings_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        app = _app(settings_path)
        w = app.window
        w.connection.url_edit.setText("ws://127.0.0.1:1234/saved")
        w.connection.token_edit.setText("s3cr3t-token")
        w.connection.new_connection()
        assert app.console.sessions["conn1"].profile.token == "s3cr3t-token"
        w.composer.format.setCurrentText("JSON")
        w.composer.editor.setPlainText('{"saved": true}')
        w.composer.save_template("greeting")
        w.docks["Timeline"].hide()
        w.close()  # saves, asks for shutdown
        assert app.closed.is_set()
        await app.shutdown()
        assert not w.isVisible()

        again = _app(settings_path)
        try:
            assert "conn1" in again.console.sessions
            assert again.console.sessions["conn1"].profile.url == "ws://127.0.0.1:1234/saved"
            assert again.console.sessions["conn1"].profile.token is None
            assert again.window.composer.templates["greeting"]["text"] == '{"saved": true}'
            assert not again.window.docks["Timeline"].isVisible()
        finally:
            again.window.close()
            await again.shutdown()

    run(qloop, scenario(), 30)
    assert "s3cr3t-token" not in Path(settings_path).read_text()


def test_profile_validation_is_headless() -> None:
    from wsconsole.app.options import OptionsError
    from wsconsole.app.profiles import Profile

    assert Profile(url="wss://example.com/x").url == "wss://example.com/x"
    with pytest.raises(OptionsError) as refused:
        Profile(url="example.com")
    assert "url" in refused.value.problems
    assert Profile(headers="A: 1\n\nB-c: two words").headers == [("A", "1"), ("B-c", "two words")]
    restored = Profile.from_dict({"name": "x", "url": 5, "backoff_cap": 7, "junk": 1})
    assert restored.name == "x" and restored.url == Profile().url and restored.backoff_cap == 7.0


def test_url_option_connects_and_slot_errors_are_shown(qloop, echo_port, settings_path) -> None:  # type: ignore[no-untyped-def]
    """`--url` debugs an external server at start-up; an asyncSlot failure lands in the Log."""
    import sys

    import qasync
    from PySide6.QtCore import QObject

    from wsconsole.gui.app import TARGET_CONN, install_hooks

    class Broken(QObject):
        @qasync.asyncSlot()
        async def clicked(self) -> None:
            raise ValueError("slot went wrong")

    async def scenario() -> None:
        app = ConsoleApp(GuiOptions(url=f"ws://127.0.0.1:{echo_port}/",
                                    settings_path=settings_path))
        app.start()
        saved = sys.excepthook
        install_hooks(app.errors, qloop)
        try:
            assert app.console.cluster is None
            assert await app.wait_ready(10 * SCALE)
            session = app.console.sessions[TARGET_CONN]
            await until(lambda: session.state is State.OPEN, "the session to open", 10)
            await until(lambda: app.window.connection.badge.text() == "OPEN", "the OPEN badge", 5)
            Broken().clicked()
            await until(lambda: "slot went wrong" in app.window.log_view.toPlainText(),
                        "the slot's error in the log dock", 5)
        finally:
            sys.excepthook = saved
            app.window.close()
            await app.shutdown()

    run(qloop, scenario(), 30)


def test_close_frames_show_code_and_reason(qloop, procs, settings_path) -> None:  # type: ignore[no-untyped-def]
    """A server that closes with 1001 shows a close frame (code + reason) and a reconnect."""
    from tests.support import free_port
    from wsconsole.app.profiles import Profile
    from wsconsole.gui.panels.frames import preview

    from .conftest import start_server

    port = start_server(procs, ["-m", "tests.servers", "close", "--port", str(free_port()),
                                "--code", "1001", "--reason", "going away"])

    async def scenario() -> None:
        app = _app(settings_path)
        try:
            app.console.add_session(Profile(name="closer", url=f"ws://127.0.0.1:{port}/",
                                            backoff_initial=0.2, backoff_cap=0.5,
                                            backoff_jitter=0.0))
            await app.console.connect("closer")
            model = app.window.frames.model

            def close_rows() -> list:
                rows = [model.row_at(r) for r in range(model.rowCount())]
                return [r for r in rows if r is not None and r.opcode is Opcode.CLOSE
                        and r.direction is Direction.IN]

            await until(close_rows, "the server's close frame", 10)
            row = close_rows()[0]
            assert (row.close_code, row.close_reason) == (1001, "going away")
            assert preview(row) == "close 1001 going away"
            await until(lambda: State.RECONNECTING in app.console.timeline.states("closer"),
                        "a reconnect after the close", 10,
                        detail=lambda: app.console.timeline.states("closer"))
            spans = app.console.timeline.lanes["closer"].spans
            assert any(s.detail and "1001" in s.detail for s in spans)
        finally:
            app.window.close()
            await app.shutdown()

    run(qloop, scenario(), 30)
