"""The heartbeat lab in the window against a real websockets server that pings: withheld
pongs get the client dropped (seen on the Timeline and in the panel), bursts and unsolicited
pongs, the server's heartbeat measured and a warning when there is none."""

from __future__ import annotations

import time

from tests.servers import server_port, start
from tests.support import until
from wsconsole.core.heartbeat import PROXY_IDLE_TIMEOUT, PongPolicy
from wsconsole.core.lifecycle import State
from wsconsole.gui.app import ConsoleApp, GuiOptions

from .conftest import run


def test_the_lab_plays_dead_and_the_server_reacts(qloop, settings_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> None:
        pinging, _ = await start("echo", ping_interval=0.1, ping_timeout=0.3)
        silent, _ = await start("echo")  # no heartbeat of its own
        app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
        app.start()
        w = app.window
        console = app.console
        lab = w.heartbeat
        try:
            form = w.connection
            for name, server in (("lab", pinging), ("quiet", silent)):
                form.name_edit.setText(name)
                form.url_edit.setText(f"ws://127.0.0.1:{server_port(server)}/")
                form.ping_interval.setValue(0)  # only the server pings
                form.backoff_initial.setValue(0.05)
                form.list.setCurrentRow(-1)
                assert form.connect_selected(), form.message.text()
            for name in ("lab", "quiet"):
                await until(lambda n=name: console.sessions[n].state is State.OPEN,
                            f"{name} to open", 10)
            lab.sync_connections()
            lab.conn_box.setCurrentText("lab")
            await until(lambda: (lab.refresh(), "the server pings every 0.1 s" in
                                 lab.server_label.text())[1], "the server's interval", 10,
                        detail=lab.server_label.text)
            assert not lab.warning_label.isVisibleTo(lab)

            # play dead: the server drops the client, the Timeline shows both sides
            lab.mode_box.setCurrentIndex(lab.mode_box.findData("off"))
            assert not lab.delay_box.isEnabled()
            assert lab.apply_pongs() and "withheld" in lab.message.text()
            assert console.sessions["lab"].profile.pongs.mode == "off"
            lane = console.timeline.lanes["lab"]
            await until(lambda: any(m.kind == "dropped" for m in lane.markers),
                        "the server's drop on the Timeline", 10)
            assert any(m.kind == "withheld" for m in lane.markers)
            assert any(s.state is State.RECONNECTING and "1011" in (s.detail or "")
                       for s in lane.spans)
            lab.refresh()
            assert "closed a client that stopped answering after" in lab.server_label.text()
            assert "pongs withheld" in lab.server_label.text()

            # answer again; a burst of pings with a payload, an unsolicited pong
            lab.mode_box.setCurrentIndex(lab.mode_box.findData("auto"))
            assert lab.apply_pongs()
            await until(lambda: console.sessions["lab"].state is State.OPEN, "lab again", 10)
            lab.ping_payload.setText("probe")
            lab.ping_count.setValue(3)
            assert lab.send_ping()
            await until(lambda: "3 ping(s), round trips (ms)" in lab.message.text(),
                        "the burst's round trips", 10, detail=lab.message.text)
            assert "lost" not in lab.message.text()
            lab.pong_payload.setText("hello")
            assert lab.send_pong()
            await until(lambda: "unsolicited pong sent (5 bytes)" in lab.message.text(),
                        "the pong", 10, detail=lab.message.text)
            assert any(m.kind == "unsolicited" for m in lane.markers)  # on the Timeline too

            # a policy set outside the panel shows in its controls at the next refresh
            console.set_pongs("lab", PongPolicy("delay", delay=0.25))
            lab.refresh()
            assert lab.mode_box.currentData() == "delay" and lab.delay_box.value() == 250
            assert "pongs 250 ms late" in lab.server_label.text(), lab.server_label.text()

            # a server with no heartbeat at all is worth a warning once it has been quiet
            lab.conn_box.setCurrentText("quiet")
            quiet = console.lab_client("quiet")
            quiet.server_heartbeat.opened_at = time.monotonic() - PROXY_IDLE_TIMEOUT - 5
            lab.refresh()
            assert lab.warning_label.isVisibleTo(lab)
            assert "no heartbeat of its own" in lab.warning_label.text()

            # no swarm here: said, not raised
            assert not lab.apply_swarm() and "no swarm" in lab.message.text()
            assert lab.swarm_reaction() == "no swarm"
            assert not lab.grab().isNull()
        finally:
            await app.shutdown()
            pinging.close()
            silent.close()

    run(qloop, scenario(), 60)


def test_the_connection_form_keeps_the_pong_policy(qloop, settings_path) -> None:  # type: ignore[no-untyped-def]
    from wsconsole.app.profiles import Profile

    async def scenario() -> None:
        app = ConsoleApp(GuiOptions(harness=False, settings_path=settings_path))
        app.start()
        try:
            form = app.window.connection
            form.load_profile(Profile(name="p", pongs="delay:250"))
            assert form.pongs_edit.text() == "delay:250"
            form.pongs_edit.setText("sometimes")
            assert not form.connect_selected()
            assert "pongs must be one of" in form.message.text()
            form.pongs_edit.setText("wrong:xyz")
            assert form.profile_from_form().pongs.payload == b"xyz"
        finally:
            await app.shutdown()

    run(qloop, scenario(), 30)
