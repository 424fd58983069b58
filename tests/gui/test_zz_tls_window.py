"""The window's TLS switch: ticking "TLS (wss://)" in the Cluster panel restarts the demo
cluster serving wss://; the console's own client and the swarm reconnect to it by
themselves (they trust the local CA), the panel names the CA to trust, and unticking
brings ws:// back. Closing stops every process, the first cluster's included.

(Named test_zz_* so it runs with the other slow window test, at the end.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import SCALE, pid_alive, until
from wsconsole.app.console import CONSOLE_CONN
from wsconsole.core.lifecycle import State
from wsconsole.core.localca import DATA_DIR_ENV
from wsconsole.gui.app import ConsoleApp, GuiOptions

from .conftest import run


def test_tls_box_restarts_the_demo_on_wss(qloop, settings_path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))  # the CA is made here

    async def scenario() -> set[int]:
        app = ConsoleApp(GuiOptions(harness=True, swarm_clients=3, settings_path=settings_path))
        app.start()
        console, panel = app.console, app.window.cluster
        try:
            assert await app.wait_ready(90 * SCALE), [r.summary for r in console.errors.reports]
            assert console.cluster is not None and console.cluster.url.startswith("ws://")
            assert not panel.tls_box.isChecked() and not panel.tls_label.isVisible()
            first = console.started_pids()

            panel.tls_box.setChecked(True)  # what a click does

            def on_wss() -> bool:
                cluster = console.cluster
                return (cluster is not None and console.cluster_state == "ready"
                        and cluster.url.startswith("wss://"))

            await until(on_wss, "the demo cluster back on wss://", 60,
                        detail=lambda: console.cluster_state)
            session = console.sessions[CONSOLE_CONN]
            await until(lambda: session.state is State.OPEN, "the console's client on wss://",
                        30, detail=lambda: session.state)
            assert session.profile.url.startswith("wss://")
            await until(lambda: "3/3 connected" in panel.swarm_label.text(),
                        "the swarm connected over wss://", 30,
                        detail=panel.swarm_label.text)
            panel.refresh()
            assert panel.tls_box.isChecked() and panel.tls_box.isEnabled()
            ca_file = str(tmp_path / "data" / "local-ca" / "ca-cert.pem")
            assert ca_file in panel.tls_label.text() and not panel.tls_label.isHidden()
            assert "wss://127.0.0.1:" in panel.state_label.text()
            assert not any(pid_alive(pid) for pid in first), "the ws:// cluster is gone"

            panel.tls_box.setChecked(False)
            await until(lambda: console.cluster_state == "ready" and console.cluster is not None
                        and console.cluster.url.startswith("ws://"),
                        "the demo cluster back on ws://", 60)
            await until(lambda: session.state is State.OPEN, "the console's client on ws://", 30)
            panel.refresh()
            assert panel.tls_label.isHidden()
            pids = console.started_pids()
            app.window.close()
            await app.shutdown()
            return pids
        except BaseException:
            await app.shutdown()
            raise

    pids = run(qloop, scenario(), 200)
    alive = [pid for pid in pids if pid_alive(pid)]
    assert not alive, f"still running after close: {alive}"
