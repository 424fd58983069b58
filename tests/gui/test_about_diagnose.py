"""Help menu: About shows the versions, Diagnose endpoint runs against the real harness and
saves a bundle, and that bundle opens in the console with its frames and timeline; a damaged
bundle gives a clear error in the Log dock."""

from __future__ import annotations

import importlib.metadata
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import qVersion

from tests.support import pid_alive, until
from wsconsole.core.lifecycle import State
from wsconsole.gui.app import ConsoleApp, GuiOptions
from wsconsole.harness.cluster import Cluster, ClusterConfig

from .conftest import run


@pytest.fixture(autouse=True)
def private_log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the test's logs (and the bundle's log collection) out of the user's folder."""
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "wsconsole.log").write_text("12:00 INFO started\n")
    monkeypatch.setenv("WSCONSOLE_LOG_DIR", str(folder))
    return folder


def _app(settings_path: str) -> ConsoleApp:
    app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
    app.start()
    return app


def test_about_lists_the_versions_and_the_help_menu_is_there(  # type: ignore[no-untyped-def]
    qloop, settings_path, private_log_dir
) -> None:
    async def scenario() -> None:
        app = _app(settings_path)
        try:
            menu = app.window.help_menu
            titles = [a.text() for a in app.window.menuBar().actions()]
            assert "&Help" in titles
            assert set(menu.actions) == {"about", "diagnose", "open_bundle", "log_folder"}
            dialog = menu.about()
            rows = dict(dialog.rows)
            assert rows["Qt"] == qVersion()
            assert rows["websockets"] == importlib.metadata.version("websockets")
            assert rows["Python"].count(".") == 2
            assert "valkey" in rows["broker"].lower() or "redis" in rows["broker"].lower()
            assert rows["log folder"] == str(private_log_dir)
            dialog.copy()
            from PySide6.QtGui import QGuiApplication

            assert f"Qt: {qVersion()}" in QGuiApplication.clipboard().text()
            assert menu.log_folder_url().toLocalFile() == str(private_log_dir)
            dialog.close()
        finally:
            app.window.close()
            await app.shutdown()

    run(qloop, scenario(), 30)


def test_diagnose_dialog_bundle_opens_with_its_frames(  # type: ignore[no-untyped-def]
    qloop, settings_path, tmp_path
) -> None:
    out = tmp_path / "support.zip"
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        cluster = Cluster(ClusterConfig.demo(nodes=2, health_interval=0.25,
                                             log_dir=str(tmp_path / "harness")))
        await cluster.start()
        pids = set(cluster.pids())
        app = _app(settings_path)
        try:
            token = cluster.token("support")
            seen["token"] = token
            dialog = app.window.help_menu.diagnose()
            dialog.url_edit.setText("http://not-websocket.example/")
            assert not dialog.start()
            assert "not a ws:// or wss:// URL" in dialog.message.text()

            dialog.url_edit.setText(cluster.url + "/?room=lobby")
            dialog.token_edit.setText(token)
            dialog.headers_edit.setPlainText(f"Authorization: Bearer {token}")
            dialog.pings.setValue(3)
            assert dialog.start()
            await until(lambda: dialog.diagnosis is not None,
                        "the diagnosis", 60, detail=lambda: dialog.message.text())
            ids = [step.id for step in dialog.steps]
            assert ids == ["dns", "tcp", "handshake", "latency", "reconnect", "audit"]
            assert dialog.table.rowCount() == 6
            assert dialog.table.item(2, 1).text() == "OK"
            dialog.table.setCurrentCell(3, 0)
            assert '"rtt_ms"' in dialog.detail.toPlainText()
            assert dialog.save_button.isEnabled()
            assert dialog.save_bundle(out) == out

            view = app.window.help_menu.open_bundle(str(out))
            assert view is not None and view.isVisible()
            frames = len(view.store)
            assert frames >= 6  # 3 pings, 3 pongs, then the reconnect's close
            await until(lambda: view.frames.model.rowCount() == frames,
                        "every bundled frame in the view's table", 10)
            states = view.timeline.states("diagnose")
            assert states[:2] == [State.CONNECTING, State.OPEN] and State.RECONNECTING in states
            assert view.tabs.tabText(1) == f"Frames ({frames})"
            view.close()
        finally:
            app.window.close()
            await app.shutdown()
            await cluster.stop()
        assert not [pid for pid in pids if pid_alive(pid)]

    run(qloop, scenario(), 90)
    with zipfile.ZipFile(out) as zf:
        for name in zf.namelist():
            assert seen["token"].encode() not in zf.read(name), name


def test_a_damaged_bundle_is_a_clear_error_in_the_log_dock(  # type: ignore[no-untyped-def]
    qloop, settings_path, tmp_path
) -> None:
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 definitely not a whole zip")

    async def scenario() -> None:
        app = _app(settings_path)
        try:
            assert app.window.help_menu.open_bundle(str(broken)) is None
            await until(lambda: "broken.zip" in app.window.log_view.toPlainText(),
                        "the bad bundle's error in the log dock", 5)
            text = app.window.log_view.toPlainText()
            assert "Cannot open support bundle broken.zip" in text and "not a zip file" in text
            assert "Traceback" not in text
            assert app.window.help_menu.bundle_views == []
        finally:
            app.window.close()
            await app.shutdown()

    run(qloop, scenario(), 30)
